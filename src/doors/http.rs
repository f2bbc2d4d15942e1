//! The HTTP front doors, served together on `listeners.http`.
//!
//! Each door is a router of its own module, translating one HTTP convention to an
//! [`sluis_core::request::AccessRequest`] and the [`sluis_core::decision::Decision`] back; this
//! module only puts them on one port ([`super::gateway`] says what the gateways behind them
//! cannot do).
//! Their paths do not overlap:
//!
//! | path | door |
//! |---|---|
//! | `/healthz` | liveness of the doors' listener |
//! | `/access/v1/evaluation`, `/access/v1/evaluations`, `/.well-known/authzen-configuration` | [`super::authzen`] |
//! | `/authorization/search-narrowing`, `/authorization/scopes` | [`super::care_services`]: the Care Services Proxy API |
//! | `/decisions`, `/decisions/{path}` | [`super::forward_auth`]: Envoy `http_service`, NGINX `auth_request`, Traefik ForwardAuth, Caddy `forward_auth` |
//! | `POST /v1/data/{path}` | [`super::opa`]: OPA REST Data API for Kong's and APISIX's `opa` plugins |
//! | `POST /v1/check` | [`super::check`]: the gRPC door's question and answer as JSON, for the Sluis Kong plugin |
//! | `POST /pdp`, `POST /pdp/v1/data/knooppunt/authz` | [`super::knooppunt`]: nuts-knooppunt's PDP protocol, only when `doors.knooppunt_pdp` is configured |

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use sluis_config::Config;
use sluis_core::engine::Engine;

/// Every HTTP door on one router. Fails when a door's configuration cannot be used.
pub fn router(engine: Arc<Engine>, config: &Config) -> Result<Router, String> {
    let knooppunt = match &config.doors.knooppunt_pdp {
        Some(pdp) => super::knooppunt::router(engine.clone(), pdp)?,
        None => Router::new(),
    };
    Ok(Router::new()
        .merge(knooppunt)
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(super::authzen::router(engine.clone(), config)?)
        .merge(super::care_services::router(engine.clone()))
        .merge(super::forward_auth::router(
            engine.clone(),
            config.request_body.max_bytes,
        ))
        .merge(super::check::router(
            engine.clone(),
            config.request_body.max_bytes,
        ))
        .merge(super::opa::router(engine)))
}
