//! Information sources: facts a decision needs that the request does not carry.

pub mod mitz;
