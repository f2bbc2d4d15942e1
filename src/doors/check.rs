//! The check door (`POST /v1/check`): the gRPC ext_authz door's question and answer as
//! JSON over HTTP, for a gateway plugin that makes its own call to Sluis and applies the
//! whole answer itself (the Kong plugin in `kong/`).
//!
//! Forward-auth (`/decisions`) cannot serve such a plugin: it cannot carry a query
//! rewrite, and it has no way to name a policy. Neither may be added there through a
//! request header, because the forward-auth gateways pass client headers on: a client
//! could claim its gateway applies rewrites, or pick its own policy. Here the request is
//! described in the body, which only the plugin writes, as Envoy describes it in a
//! `CheckRequest`; `context` is Envoy's `context_extensions` (`sluis_policy` names the
//! policy that must decide).
//!
//! # The answer
//!
//! - 200 with `{"decision": "allow", "set_headers": [[name, value], ...],
//!   "remove_headers": [...], "query": "new raw query" | null, ...}`: the plugin sets and
//!   removes those headers on the upstream request and, when `query` is not null, replaces
//!   the query string with it ([`sluis_core::request::rewrite_query`]).
//! - 200 with `{"decision": "deny", "status": 403, "headers": [[name, value], ...],
//!   "body": "..."}`: the plugin answers the client with exactly that. A described request
//!   that cannot be decided on (a header value that is not visible ASCII, a method that is
//!   not one, a body over `request_body.max_bytes`) is such a deny too, 400 or 413, so the
//!   client learns why.
//! - 400 `{"error": "invalid_request", ...}`: the plugin's JSON is not a check request (a
//!   plugin bug); 503 `{"error": "temporarily_unavailable", ...}`: the engine cannot decide.
//!   The plugin treats both as an error and fails closed (`status_on_error`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use sluis_core::decision::{Decision, DenyCode, Outcome, deny_body};
use sluis_core::engine::{DoorCapabilities, Engine};
use sluis_core::request::{AccessRequest, Door, Source, rewrite_query};

/// The path of the door.
pub const PATH: &str = "/v1/check";

/// Headers a described request may have: more is refused (a plugin caps what it sends).
pub const MAX_HEADERS: usize = 256;
/// Context entries a check may carry.
pub const MAX_CONTEXT: usize = 16;
/// The longest request target (path and query) described.
pub const MAX_TARGET: usize = 16 * 1024;

/// Room for the headers and the rest of the JSON besides a base64 body.
const ENVELOPE_BYTES: usize = 256 * 1024;

/// A request as the plugin describes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`; `http` when empty.
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub host: String,
    /// The raw path and query as the client sent them (origin form, not decoded).
    pub target: String,
    /// e.g. `HTTP/1.1`.
    #[serde(default)]
    pub protocol: String,
    /// Header names (any case; lower-cased here) with their values, repeats joined by `,`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub client_address: String,
    /// The request body, base64 (standard alphabet), when the plugin sends it.
    #[serde(default)]
    pub body_base64: Option<String>,
    /// Per-route settings: `sluis_policy` names the policy that must decide.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// What the plugin must do.
#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum CheckAnswer {
    Allow {
        /// Set on the upstream request, replacing client copies.
        set_headers: Vec<(String, String)>,
        /// Removed from the upstream request (lower-case names).
        remove_headers: Vec<String>,
        /// The new raw query string, when the decision changes it.
        query: Option<String>,
        policy: Option<String>,
        rule: String,
    },
    Deny {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        policy: Option<String>,
        rule: String,
    },
}

/// Why a check request cannot be decided on.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Not a check request at all: the plugin's fault.
    #[error("the check request is not valid: {0}")]
    Malformed(String),
    /// The described request cannot be decided on: denied with this status.
    #[error("{message}")]
    Undecidable { status: u16, message: String },
}

fn undecidable(status: u16, message: String) -> Refusal {
    Refusal::Undecidable { status, message }
}

/// The routes of the door. Described bodies over `max_body` bytes are denied (413).
pub fn router(engine: Arc<Engine>, max_body: usize) -> Router {
    Router::new()
        .route(PATH, post(decide))
        .layer(DefaultBodyLimit::max(
            max_body
                .saturating_mul(4)
                .div_ceil(3)
                .saturating_add(ENVELOPE_BYTES),
        ))
        .with_state(CheckDoor { engine, max_body })
}

#[derive(Clone)]
struct CheckDoor {
    engine: Arc<Engine>,
    max_body: usize,
}

async fn decide(
    State(CheckDoor { engine, max_body }): State<CheckDoor>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let access = match body
        .map_err(|rejection| Refusal::Malformed(rejection.body_text()))
        .and_then(|body| parse(&body))
        .and_then(|check| access_request(check, max_body))
    {
        Ok(access) => access,
        Err(Refusal::Malformed(message)) => {
            return error(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
        Err(Refusal::Undecidable { status, message }) => {
            return axum::Json(CheckAnswer::Deny {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: deny_body(DenyCode::InvalidRequest, &message),
                policy: None,
                rule: "invalid-request".into(),
            })
            .into_response();
        }
    };
    // The plugin applies headers, removals and query rewrites itself: nothing to refuse.
    match engine.decide_for_door(&access, DoorCapabilities::ALL).await {
        Ok(decision) => axum::Json(answer(decision, &access)).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the authorization service cannot decide now",
        ),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// Reads a check request from JSON.
pub fn parse(body: &[u8]) -> Result<CheckRequest, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// Translates a check request; a described request that cannot be decided on is
/// [`Refusal::Undecidable`].
pub fn access_request(check: CheckRequest, max_body: usize) -> Result<AccessRequest, Refusal> {
    if check.headers.len() > MAX_HEADERS {
        return Err(undecidable(
            431,
            format!("more than {MAX_HEADERS} request headers"),
        ));
    }
    if check.context.len() > MAX_CONTEXT {
        return Err(Refusal::Malformed(format!(
            "more than {MAX_CONTEXT} context entries"
        )));
    }
    if check.target.len() > MAX_TARGET {
        return Err(undecidable(
            414,
            format!("the request target is longer than {MAX_TARGET} bytes"),
        ));
    }
    if !check.target.starts_with('/') {
        return Err(Refusal::Malformed(
            "`target` must be a path in origin form, starting with `/`".into(),
        ));
    }
    let method = check.method.trim().to_ascii_uppercase();
    if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(undecidable(
            400,
            format!("`{}` is not an HTTP method", check.method.escape_debug()),
        ));
    }
    let mut headers = sluis_core::request::HeadersBuilder::default();
    for (name, value) in &check.headers {
        if !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return Err(undecidable(
                400,
                format!("header `{}` is not visible ASCII", name.escape_debug()),
            ));
        }
        // Two spellings of one name: joined as repeats are.
        headers.push_lowercased(name, value);
    }
    let headers = headers.build(sluis_core::request::Repeats::Join);
    let body = match check.body_base64 {
        None => String::new(),
        Some(encoded) => {
            let body = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| Refusal::Malformed(format!("`body_base64` is not base64: {e}")))?;
            if body.len() > max_body {
                return Err(undecidable(
                    413,
                    format!("the request body is larger than {max_body} bytes"),
                ));
            }
            String::from_utf8_lossy(&body).into_owned()
        }
    };
    let mut access = AccessRequest {
        method,
        scheme: match check.scheme.trim() {
            "" => "http".into(),
            scheme => scheme.to_ascii_lowercase(),
        },
        host: check.host,
        protocol: check.protocol,
        headers,
        source: Source {
            address: check.client_address,
            certificate: None,
        },
        body,
        context: check.context.into_iter().collect(),
        door: Door("http-check"),
        ..AccessRequest::default()
    };
    access.set_target(&check.target);
    Ok(access)
}

/// Encodes a decision for the plugin; `access` is the request it was made for (the query
/// a rewrite starts from).
pub fn answer(decision: Decision, access: &AccessRequest) -> CheckAnswer {
    let policy = decision.policy.as_deref().map(str::to_owned);
    let rule = decision.rule.to_string();
    match decision.outcome {
        Outcome::Allow(allow) => CheckAnswer::Allow {
            query: (!allow.set_query.is_empty() || !allow.remove_query.is_empty())
                .then(|| rewrite_query(&access.query, &allow.set_query, &allow.remove_query)),
            set_headers: allow.set_headers,
            remove_headers: allow.remove_headers,
            policy,
            rule,
        },
        Outcome::Deny(deny) => CheckAnswer::Deny {
            status: deny.status,
            headers: deny.headers,
            body: deny.body,
            policy,
            rule,
        },
    }
}

#[cfg(test)]
mod tests;
