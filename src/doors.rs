//! Front doors: each speaks one gateway's protocol and translates it to an
//! [`crate::request::AccessRequest`] for the [`crate::engine::Engine`], and the
//! [`crate::decision::Decision`] back. No door decides anything itself.

pub mod authzen;
pub mod care_services;
pub mod envoy;
pub mod forward_auth;
pub mod http;
pub mod opa;
