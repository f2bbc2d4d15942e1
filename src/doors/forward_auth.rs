//! Forward-auth: the HTTP decision endpoint that Envoy (`http_service`), NGINX
//! (`auth_request`), Traefik (`ForwardAuth`) and Caddy (`forward_auth`) call, at
//! `/decisions` (named after Ory Oathkeeper's decision API).
//!
//! # How the original request is told
//!
//! Two conventions, told apart by the path, never mixed:
//!
//! - **Path**: `/decisions/{original path}?{original query}`, asked with the original
//!   method. Envoy's `http_service` with `path_prefix: /decisions` does this. The path and
//!   method come from the gateway itself, so headers a client could have sent
//!   (`X-Forwarded-Uri`, ...) are ignored.
//! - **Headers**: exactly `/decisions`, with the original method and request target in
//!   headers: `X-Original-Method` and `X-Original-URI` (set by the NGINX configuration)
//!   or `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik, Caddy). The gateways pass
//!   the client's own headers on too, so a client could send the convention its gateway
//!   does not set: when both conventions are present they must agree, or the request is
//!   a 400. Both a method and a target are required: a request that does not say them is
//!   a 400, never a guess.
//!
//! Either way the host is `X-Forwarded-Host`, else `Host`; the scheme `X-Forwarded-Proto`,
//! else `http`; the client address the last `X-Forwarded-For` entry (the one the gateway
//! itself appended), else `X-Real-IP`. The gateway must set these (Traefik and Caddy do;
//! the NGINX example does) or a client can choose them.
//!
//! # The answer
//!
//! - Allow: 200, the headers to set as response headers (for NGINX `auth_request_set`,
//!   Traefik `authResponseHeaders`, Caddy `copy_headers`, Envoy `allowed_upstream_headers`),
//!   and the headers to remove named in `x-sluis-remove-headers` and in
//!   `x-envoy-auth-headers-to-remove`, which Envoy acts on. A query rewrite cannot be
//!   carried: such an allow is denied ([`sluis_core::engine::DoorCapabilities`]).
//! - Deny: the decision's status, headers and body. NGINX drops the body of an
//!   `auth_request` answer; a request carrying `X-Sluis-Body-In-Header: true` also gets
//!   the body (when it is a valid header value) in `x-sluis-deny-body`, for NGINX to
//!   `return` from a named location.
//! - The engine cannot decide (an identity provider is down): 503, which every one of these
//!   gateways turns into an error, not an allow.
//!
//! # Request bodies
//!
//! A gateway that sends the request body along (Envoy `http_service` with
//! `with_request_body`, for GraphQL) sends it as this request's body; policies read it as
//! `request.body`. A body larger than `request_body.max_bytes` is refused with 413 before
//! anything is decided: a decision on part of a body could allow what the whole would not.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use sluis_core::decision::{Decision, DenyCode, Outcome, deny_body};
use sluis_core::engine::Engine;
use sluis_core::request::{AccessRequest, Source};

/// The path prefix of the door.
pub const PREFIX: &str = "/decisions";

/// Asked for by a request that wants the deny body in a header too (NGINX).
const BODY_IN_HEADER: &str = "x-sluis-body-in-header";

/// The routes of the door. Request bodies over `max_body` bytes are refused (413).
pub fn router(engine: Arc<Engine>, max_body: usize) -> Router {
    Router::new()
        .route(PREFIX, any(decide))
        .route(&format!("{PREFIX}/"), any(decide))
        .route(&format!("{PREFIX}/{{*path}}"), any(decide))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Door { engine, max_body })
}

#[derive(Clone)]
struct Door {
    engine: Arc<Engine>,
    max_body: usize,
}

async fn decide(
    State(Door { engine, max_body }): State<Door>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                deny_body(
                    DenyCode::InvalidRequest,
                    &format!("the request body is larger than {max_body} bytes"),
                ),
            );
        }
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                deny_body(
                    DenyCode::InvalidRequest,
                    "the request body could not be read",
                ),
            );
        }
    };
    let access = match access_request(&method, &uri, &headers, &body) {
        Ok(access) => access,
        Err(problem) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                deny_body(DenyCode::InvalidRequest, &problem),
            );
        }
    };
    match super::gateway::decide(&engine, &access).await {
        Ok(decision) => {
            let body_in_header = headers
                .get(BODY_IN_HEADER)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            response(decision, body_in_header)
        }
        Err(_) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "error": "temporarily_unavailable",
                "message": "the authorization service cannot decide now",
            })
            .to_string(),
        ),
    }
}

/// Translates a forward-auth request; the error says what is missing or wrong.
pub fn access_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<AccessRequest, String> {
    let joined = joined_headers(headers)?;
    let header = |name: &str| joined.get(name);
    let rest = uri.path().strip_prefix(PREFIX).unwrap_or("");
    let (original_method, target) = if rest.is_empty() {
        let method = one_of(header("x-original-method"), header("x-forwarded-method"), "method")?
            .ok_or("the original method is missing: send `X-Original-Method` or `X-Forwarded-Method`, or ask `/decisions/{path}` with the original method")?;
        let target = one_of(header("x-original-uri"), header("x-forwarded-uri"), "URI")?
            .ok_or("the original URI is missing: send `X-Original-URI` or `X-Forwarded-Uri`, or ask `/decisions/{path}`")?;
        (method.trim().to_ascii_uppercase(), origin_form(target)?)
    } else {
        let target = match uri.query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest.to_owned(),
        };
        (method.as_str().to_owned(), target)
    };
    if original_method.is_empty() || !original_method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("`{original_method}` is not an HTTP method"));
    }
    let host = header("x-forwarded-host").or_else(|| header("host"));
    let scheme = header("x-forwarded-proto").map(|p| p.trim().to_ascii_lowercase());
    let address = header("x-forwarded-for")
        .and_then(|chain| chain.rsplit(',').next())
        .or_else(|| header("x-real-ip"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let mut access = AccessRequest {
        method: original_method,
        host: host.unwrap_or("").to_owned(),
        scheme: scheme.unwrap_or_else(|| "http".into()),
        source: Source {
            address,
            certificate: None,
        },
        body: String::from_utf8_lossy(body).into_owned(),
        door: sluis_core::request::Door("forward-auth"),
        ..AccessRequest::default()
    };
    access.set_target(&target);
    access.headers = joined;
    Ok(access)
}

/// The one value of two conventions' headers. Each gateway sets its own convention's
/// header and passes the client's headers on, so a client could send the other one: two
/// that disagree are refused, never resolved by picking one.
fn one_of<'a>(
    original: Option<&'a str>,
    forwarded: Option<&'a str>,
    what: &str,
) -> Result<Option<&'a str>, String> {
    match (original, forwarded) {
        (Some(a), Some(b)) if a.trim() != b.trim() => Err(format!(
            "`X-Original-{}` and `X-Forwarded-{}` disagree about the original {what}",
            if what == "URI" { "URI" } else { "Method" },
            if what == "URI" { "Uri" } else { "Method" },
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// The path and query of a request target, which may come in absolute form.
fn origin_form(target: &str) -> Result<String, String> {
    let target = target.trim();
    if target.starts_with('/') {
        return Ok(target.to_owned());
    }
    let uri: Uri = target
        .parse()
        .map_err(|_| format!("`{target}` is not a request URI"))?;
    match (uri.scheme(), uri.path_and_query()) {
        (Some(_), Some(path)) => Ok(path.as_str().to_owned()),
        _ => Err(format!("`{target}` is not a request URI")),
    }
}

/// Header names lower-cased; repeated headers joined with `,` as Envoy joins them.
fn joined_headers(headers: &HeaderMap) -> Result<sluis_core::request::Headers, String> {
    let mut joined = sluis_core::request::HeadersBuilder::default();
    for (name, value) in headers {
        let value = value
            .to_str()
            .map_err(|_| format!("header `{name}` is not visible ASCII"))?;
        // `http` keeps names lower-case.
        joined.push(name.as_str(), value);
    }
    Ok(joined.build(sluis_core::request::Repeats::Join))
}

/// Encodes a decision for the gateway.
pub fn response(decision: Decision, body_in_header: bool) -> Response {
    match decision.outcome {
        Outcome::Allow(allow) => {
            let mut headers = HeaderMap::new();
            for (name, value) in allow.set_headers {
                if !insert(&mut headers, &name, &value) {
                    // Left out, a client-supplied copy could reach the upstream.
                    return json_response(
                        StatusCode::FORBIDDEN,
                        deny_body(DenyCode::AccessDenied, "access denied by policy"),
                    );
                }
            }
            if !allow.remove_headers.is_empty() {
                insert(
                    &mut headers,
                    "x-sluis-remove-headers",
                    &allow.remove_headers.join(", "),
                );
                insert(
                    &mut headers,
                    "x-envoy-auth-headers-to-remove",
                    &allow.remove_headers.join(","),
                );
            }
            (StatusCode::OK, headers).into_response()
        }
        Outcome::Deny(deny) => {
            let mut headers = HeaderMap::new();
            for (name, value) in &deny.headers {
                let _ = insert(&mut headers, name, value);
            }
            if body_in_header
                && deny.body.len() <= 4096
                && let Ok(value) = HeaderValue::from_str(&deny.body)
            {
                headers.insert(HeaderName::from_static("x-sluis-deny-body"), value);
            }
            let status = StatusCode::from_u16(deny.status).unwrap_or(StatusCode::FORBIDDEN);
            (status, headers, Body::from(deny.body)).into_response()
        }
    }
}

/// Sets a header whose name and value the policy loader already checked; `false` when
/// it still cannot be sent.
fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> bool {
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        (Ok(name), Ok(value)) => {
            headers.insert(name, value);
            true
        }
        _ => {
            tracing::error!(header = name, "a header Sluis cannot send");
            false
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
