//! The admin HTTP listener: liveness (`/healthz`) and readiness (`/readyz`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use crate::engine::Engine;
use crate::reload::Reloader;

#[derive(Clone)]
struct Admin {
    engine: Arc<Engine>,
    reloader: Arc<Reloader>,
}

pub fn router(engine: Arc<Engine>, reloader: Arc<Reloader>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin { engine, reloader })
}

/// Ready when policies are loaded and every issuer has keys. The body says what is
/// missing, and whether the last policy reload failed (the previous set is still in force
/// then, so that alone does not make Sluis unready).
async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let policies = admin.engine.policies();
    let issuers: serde_json::Map<String, serde_json::Value> = admin
        .engine
        .authenticator()
        .issuers()
        .map(|i| (i.name().to_string(), serde_json::Value::Bool(i.has_keys())))
        .collect();
    let ready = admin.engine.ready();
    let reload = admin.reloader.status();
    let body = serde_json::json!({
        "ready": ready,
        "policy_set": policies.version,
        "policies": policies.policies.len(),
        "issuer_keys_loaded": issuers,
        "last_reload_error": reload.last_error,
        "reload_failures": reload.failures,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
