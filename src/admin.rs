//! The admin HTTP listener: liveness (`/healthz`) and readiness (`/readyz`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};

use crate::engine::Engine;
use crate::reload::Reloader;

#[derive(Clone)]
struct Admin {
    engine: Arc<Engine>,
    reloader: Arc<Reloader>,
}

pub fn router(engine: Arc<Engine>, reloader: Arc<Reloader>, explain_enabled: bool) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if explain_enabled {
        router = router.route("/explain", post(explain));
    }
    router.with_state(Admin { engine, reloader })
}

/// `POST /explain` with a case (`{"request": ..., "token": ...}`, as in a test suite):
/// the decision and how it was reached. A case that is not valid JSON, or not a case,
/// is a 400 saying why.
async fn explain(State(admin): State<Admin>, body: axum::body::Bytes) -> impl IntoResponse {
    let case: crate::testing::Case = match serde_json::from_slice(&body) {
        Ok(case) => case,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "bad_request", "message": e.to_string()})),
            );
        }
    };
    let mut trace = crate::engine::Trace::default();
    let decision = case.decide(&admin.engine, Some(&mut trace)).await;
    (
        StatusCode::OK,
        Json(crate::testing::explanation_json(&decision, &trace)),
    )
}

/// Ready when policies are loaded and every issuer has keys. The body says what is
/// missing, and whether the last policy reload failed (the previous set is still in force
/// then, so that alone does not make Sluis unready).
async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let policies = admin.engine.policies();
    let authn = admin.engine.authenticator();
    let issuers: serde_json::Map<String, serde_json::Value> = authn
        .issuers()
        .map(|i| (i.name().to_string(), serde_json::Value::Bool(i.has_keys())))
        .collect();
    let introspection: serde_json::Map<String, serde_json::Value> = authn
        .issuers()
        .filter_map(|i| {
            i.introspection
                .as_ref()
                .map(|x| (i.name().to_string(), x.report()))
        })
        .collect();
    let ready = admin.engine.ready();
    let reload = admin.reloader.status();
    let body = serde_json::json!({
        "ready": ready,
        "policy_set": policies.version,
        "policies": policies.policies.len(),
        "issuer_keys_loaded": issuers,
        "verified_tokens_cached": authn.cached_tokens(),
        "introspection": introspection,
        "last_reload_error": reload.last_error,
        "reload_failures": reload.failures,
        "reloads": reload.successes,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
