//! The HTTP front doors, served together on `listeners.http`.
//!
//! Each door is a router of its own module, translating one HTTP convention to an
//! [`crate::request::AccessRequest`] and the [`crate::decision::Decision`] back; this
//! module only puts them on one port. Their paths do not overlap:
//!
//! | path | door |
//! |---|---|
//! | `/healthz` | liveness of the doors' listener |
//! | `/access/v1/evaluation`, `/access/v1/evaluations`, `/.well-known/authzen-configuration` | [`super::authzen`] |
//! | `/authorization/search-narrowing`, `/authorization/scopes` | [`super::care_services`]: the Care Services Proxy API |

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::config::Config;
use crate::engine::Engine;

/// Every HTTP door on one router. Fails when a door's configuration cannot be used.
pub fn router(engine: Arc<Engine>, config: &Config) -> Result<Router, String> {
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(super::authzen::router(engine.clone(), config)?)
        .merge(super::care_services::router(engine)))
}
