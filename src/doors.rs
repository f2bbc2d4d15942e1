//! Front doors: each speaks one gateway's protocol and translates it to an
//! [`sluis_core::request::AccessRequest`] for the [`sluis_core::engine::Engine`], and the
//! [`sluis_core::decision::Decision`] back. No door decides anything itself.

pub mod authzen;
pub mod care_services;
pub mod check;
pub mod envoy;
pub mod ext_proc;
pub mod forward_auth;
pub mod gateway;
pub mod http;
pub mod knooppunt;
pub mod opa;
