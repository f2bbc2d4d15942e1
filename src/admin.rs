//! The admin HTTP listener: liveness (`/healthz`), readiness (`/readyz`), the opt-in
//! `/explain`, and the flows API behind the admin token, over HTTP/JSON ([`flows`]) and
//! gRPC ([`grpc`]) on the same port (HTTP/1.1, and HTTP/2 with prior knowledge).

pub mod flows;
pub mod grpc;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};

use sha2::{Digest, Sha256};

use crate::reload::Reloader;
use sluis_core::engine::Engine;

#[derive(Clone)]
struct Admin {
    engine: Arc<Engine>,
    reloader: Arc<Reloader>,
    store_configured: bool,
    /// When the admin listener started: the policies' first load, for metrics.
    started: std::time::SystemTime,
}

/// Who may use the flows API.
#[derive(Clone)]
pub enum AdminAuth {
    /// Callers present this bearer token (compared by SHA-256 digest).
    Token([u8; 32]),
    /// Anyone: development only.
    Anonymous,
    /// Nobody: no token is configured.
    Closed,
}

impl AdminAuth {
    pub fn token(token: &[u8]) -> AdminAuth {
        AdminAuth::Token(Sha256::digest(token).into())
    }

    /// Whether a request with these headers may call the API.
    pub fn permits(&self, authorization: Option<&str>) -> bool {
        match self {
            AdminAuth::Anonymous => true,
            AdminAuth::Closed => false,
            AdminAuth::Token(expected) => authorization
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .is_some_and(|(_, token)| {
                    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                    presented == *expected
                }),
        }
    }

    /// Why a call was refused.
    pub fn refusal(&self) -> &'static str {
        match self {
            AdminAuth::Closed => "the flows API is closed: configure `admin.token`",
            _ => "a valid admin bearer token is required",
        }
    }
}

/// What the admin listener serves besides health and readiness.
pub struct AdminOptions {
    pub explain: bool,
    /// The flows API, when a store is configured.
    pub flows: Option<sluis_store::Flows>,
    pub auth: AdminAuth,
}

pub fn router(engine: Arc<Engine>, reloader: Arc<Reloader>, options: AdminOptions) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if options.explain {
        router = router.route("/explain", post(explain));
    }
    let router = router.with_state(Admin {
        engine,
        reloader,
        store_configured: options.flows.is_some(),
        started: std::time::SystemTime::now(),
    });
    match options.flows {
        Some(flows) => {
            let auth = options.auth;
            let grpc = grpc::router(flows.clone(), auth.clone());
            router
                .merge(flows::router(flows).layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        let auth = auth.clone();
                        async move { authorize(&auth, request, next).await }
                    },
                )))
                .merge(grpc)
        }
        None => {
            let no_store = || async {
                flows::error_response(sluis_store::FlowError::Unavailable(
                    "no flow store is configured (`store` in the config)".into(),
                ))
            };
            router
                .route("/v1/flows", axum::routing::any(no_store))
                .route("/v1/flows/{*rest}", axum::routing::any(no_store))
                .merge(grpc::router_without_store())
        }
    }
}

async fn authorize(
    auth: &AdminAuth,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.permits(authorization) {
        return next.run(request).await;
    }
    let message = auth.refusal();
    (
        StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::WWW_AUTHENTICATE,
            "Bearer realm=\"sluis-admin\"",
        )],
        Json(serde_json::json!({"error": "unauthorized", "message": message})),
    )
        .into_response()
}

/// `POST /explain` with a case (`{"request": ..., "token": ...}`, as in a test suite):
/// the decision and how it was reached. A case that is not valid JSON, or not a case,
/// is a 400 saying why.
async fn explain(State(admin): State<Admin>, body: axum::body::Bytes) -> impl IntoResponse {
    let case: sluis_policy_tools::Case = match serde_json::from_slice(&body) {
        Ok(case) => case,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "bad_request", "message": e.to_string()})),
            );
        }
    };
    let mut trace = sluis_core::engine::Trace::default();
    let decision = case.decide(&admin.engine, Some(&mut trace)).await;
    (
        StatusCode::OK,
        Json(sluis_policy_tools::explanation_json(&decision, &trace)),
    )
}

/// Ready when policies are loaded and every issuer has keys. The body says what is
/// missing, and whether the last policy reload failed (the previous set is still in force
/// then, so that alone does not make Sluis unready).
/// Prometheus text exposition (OpenMetrics) of [`sluis_core::metrics`].
async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let authn = admin.engine.authenticator();
    let index = admin.engine.flows();
    let reload = admin.reloader.status();
    let introspection = authn
        .issuers()
        .filter_map(|issuer| {
            let stats = &issuer.introspection.as_ref()?.stats;
            let get = |counter: &std::sync::atomic::AtomicU64| {
                counter.load(std::sync::atomic::Ordering::Relaxed)
            };
            Some((
                issuer.name().to_string(),
                [
                    get(&stats.upstream_calls),
                    get(&stats.cache_hits),
                    get(&stats.cache_misses),
                    get(&stats.stale_served),
                ],
            ))
        })
        .collect();
    let text = admin
        .engine
        .metrics()
        .render(&sluis_core::metrics::Snapshot {
            token_cache_entries: authn.cached_tokens(),
            // The start-up load counts as a success.
            reload_successes: reload.successes + 1,
            reload_failures: reload.failures,
            last_reload_success: reload.last_success.or(Some(admin.started)),
            flows_indexed: index.len(),
            flows_version: index.version(),
            introspection,
            decision_log: admin.engine.decision_log().map(|log| {
                let stats = log.stats();
                let get = |counter: &std::sync::atomic::AtomicU64| {
                    counter.load(std::sync::atomic::Ordering::Relaxed)
                };
                (
                    log.queued(),
                    [get(&stats.written), get(&stats.dropped), get(&stats.failed)],
                )
            }),
            candidate_reloads: admin
                .reloader
                .candidate_status()
                .map(|status| (status.successes, status.failures)),
        });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

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
    let index = admin.engine.flows();
    let flows = admin.store_configured.then(|| {
        serde_json::json!({
            "loaded": index.is_loaded(),
            "count": index.len(),
            "version": index.version(),
        })
    });
    let ready = admin.engine.ready() && (!admin.store_configured || index.is_loaded());
    let reload = admin.reloader.status();
    let replay = authn.dpop.replay.load();
    // The candidate set never makes Sluis unready; it is shown so a rollout can be
    // followed.
    let candidate = admin.reloader.candidate_status().map(|status| {
        let set = admin.engine.candidate_policies();
        serde_json::json!({
            "policy_set": set.as_ref().map(|s| s.version.clone()),
            "policies": set.as_ref().map(|s| s.policies.len()),
            "last_reload_error": status.last_error,
            "reload_failures": status.failures,
            "reloads": status.successes,
        })
    });
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
        "flows": flows,
        "candidate": candidate,
        // A Redis replay cache that is down does not make Sluis unready: only DPoP-bound
        // requests need it, and they fail closed (UNAVAILABLE, 503) until it is back.
        "dpop_replay_cache": {
            "backend": replay.backend(),
            "connected": replay.connected(),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
