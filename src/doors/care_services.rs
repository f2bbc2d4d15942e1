//! The Care Services Proxy authorization API (Generic Functions, nl-generic-functions-ig
//! `care-services-proxy-openapi.json`): a FHIR proxy asks, before forwarding a request,
//! how to narrow it.
//!
//! - `POST /authorization/search-narrowing`: both request shapes. v1.0.0 sends
//!   `{use_case, query: "Organization?name=x", method, requester}` and gets
//!   `narrowed_scope` (the resource type and its narrowing, as the OpenAPI example; the
//!   proxy applies the client's parameters); v2.0.0 sends `{introspection_result, http_request: {method, path,
//!   query_params, headers}, use_case}` and gets `rewritten_query`.
//! - `POST /authorization/scopes` (v1.0.0): `{use_case, requester}` → the SMART scopes the
//!   narrowing amounts to, one per narrowed resource type (`system/Organization.rs?...`).
//!
//! Translation only: the engine decides. It picks the policy whose `narrowing` answers
//! for the `use_case` and puts the request below that narrowing's base path
//! ([`Engine::place_in_use_case`]), or answers 403; without a `use_case` (allowed in v2)
//! the policies' `match` decides as for any request. The scopes are the engine's too
//! ([`Engine::decide_scopes`]): one decision per narrowed type, merged. What the proxy says about the requester reaches policies
//! as `request.context`: `use_case`, `requester.organization_identifier` (v1), and
//! `introspection.<field>` for each top-level string, number or boolean of the v2
//! introspection result. The `Authorization` (and `DPoP`) header of the call, else the
//! one in v2's `http_request.headers`, is the token policies with `issuers` verify.
//! The engine's decision is the answer: an allow returns the query with the decision's
//! query parameters set (the narrowing), a deny its status and body. When the policy
//! also judges answers (`response_rules`), the allow carries the sealed grant in the
//! `Sluis-Response-Grant` header: the proxy sends it back with the answer's resources to
//! `/access/v1/evaluations` (phase 2, see the AuthZEN door).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use sluis_core::decision::{Allow, Decision, Outcome};
use sluis_core::engine::Engine;
use sluis_core::engine::scopes::Scopes;
use sluis_core::request::decoded_pairs;
use sluis_core::request::{AccessRequest, Door};

/// The header of a search-narrowing answer that carries the sealed grant under which the
/// answer's resources are judged, when the policy has `response_rules`.
pub const RESPONSE_GRANT_HEADER: &str = "sluis-response-grant";

/// Request bodies, at most: enforced while the body is read (413 past it), so no request
/// makes the door buffer more, whatever its `content-length` says. Stated here rather than
/// left to axum's default, which is the same 2 MiB today.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/authorization/search-narrowing", post(search_narrowing))
        .route("/authorization/scopes", post(scopes))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(engine)
}

/// v1.0.0 `/authorization/search-narrowing`.
#[derive(Deserialize)]
struct NarrowingV1 {
    use_case: String,
    /// `Organization?name=Example&_id=123`: relative to the FHIR base.
    query: String,
    method: String,
    #[serde(default)]
    requester: Option<Requester>,
}

#[derive(Deserialize, Default)]
struct Requester {
    organization_identifier: Option<String>,
}

/// v2.0.0 `/authorization/search-narrowing`.
#[derive(Deserialize)]
struct NarrowingV2 {
    introspection_result: serde_json::Map<String, Value>,
    http_request: HttpRequest,
    #[serde(default)]
    use_case: Option<String>,
}

#[derive(Deserialize)]
struct HttpRequest {
    method: String,
    /// `/Patient`: relative to the FHIR base, without the query.
    path: String,
    #[serde(default)]
    query_params: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// v1.0.0 `/authorization/scopes`.
#[derive(Deserialize)]
struct ScopesV1 {
    use_case: String,
    #[serde(default)]
    requester: Option<Requester>,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Characters a query component must not carry literally. `|`, `/`, `:` and `,` stay as
/// they are: FHIR gives them meaning and the IG's examples write them so.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// An answer given before the engine is asked: a bad request.
struct Refused {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        json_response(self.status, self.body)
    }
}

/// 400 with a JSON body naming the problem.
fn bad_request(message: String) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        body: json!({"error": "invalid_request", "message": message}),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The body as `T`, or the 400 that says why not.
fn parse<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(bad_request(format!(
            "content type must be `application/json`, not `{content_type}`"
        )));
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

/// What both request versions come down to.
struct Question {
    use_case: Option<String>,
    method: String,
    /// Relative to the FHIR base, as the proxy wrote it (`Organization`, `/Patient`).
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    context: Vec<(String, String)>,
}

async fn search_narrowing(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let document: Value = match parse(&headers, &body) {
        Ok(document) => document,
        Err(refused) => return refused.into_response(),
    };
    if !document.is_object() {
        return bad_request("the request body must be a JSON object".into()).into_response();
    }
    let v2 =
        document.get("http_request").is_some() || document.get("introspection_result").is_some();
    let question = if v2 {
        match serde_json::from_value::<NarrowingV2>(document) {
            Ok(request) => question_v2(request),
            Err(e) => {
                return bad_request(format!("invalid search-narrowing request (v2): {e}"))
                    .into_response();
            }
        }
    } else {
        match serde_json::from_value::<NarrowingV1>(document) {
            Ok(request) => question_v1(request),
            Err(e) => {
                return bad_request(format!("invalid search-narrowing request: {e}"))
                    .into_response();
            }
        }
    };
    if !METHODS.contains(&question.method.as_str()) {
        return bad_request(format!(
            "method `{}` is not one of {}",
            question.method,
            METHODS.join(", ")
        ))
        .into_response();
    }
    let access = match access_request(&engine, &question, &headers) {
        Ok(access) => access,
        Err(denied) => return deny_response(*denied),
    };
    let decision = match engine.decide(&access).await {
        Ok(decision) => decision,
        Err(_) => return unavailable_response(),
    };
    let policy = decision.policy.as_deref().unwrap_or("-").to_owned();
    match decision.outcome {
        Outcome::Allow(allow) => {
            let rewritten = rewritten(&question, &allow);
            let original = target(&question.path, &question.query);
            let body = if v2 {
                json!({
                    "allowed": true,
                    "rewritten_query": rewritten,
                    "original_query": original,
                    "applied_filters": allow.set_query.iter().map(|(parameter, value)| json!({
                        "parameter": parameter,
                        "value": value,
                        "reason": format!("search narrowing of policy `{policy}`"),
                    })).collect::<Vec<_>>(),
                    "audit_info": {"applied_policies": [policy]},
                })
            } else {
                // As the OpenAPI's example (request `Organization?name=Example&_id=123`):
                // the scope is the resource type and what narrows it; the proxy applies the
                // client's own parameters on top.
                json!({
                    "allowed": true,
                    "narrowed_scope": narrowed_scope(&question.path, &allow),
                    "original_scope": question.path,
                    "applied_filters": filters(&allow),
                })
            };
            let mut response = json_response(StatusCode::OK, body);
            // The policy judges the answer too: the grant the proxy hands back with the
            // answer's resources (AuthZEN response evaluations, docs/gateways.md).
            if let Some(grant) = allow
                .response_grant
                .as_deref()
                .and_then(|g| header::HeaderValue::from_str(g).ok())
            {
                response.headers_mut().insert(RESPONSE_GRANT_HEADER, grant);
            }
            response
        }
        Outcome::Deny(_) => deny_response(decision),
    }
}

fn question_v1(request: NarrowingV1) -> Question {
    let relative = request.query.trim_start_matches('/');
    let (path, query) = relative.split_once('?').unwrap_or((relative, ""));
    let mut context = vec![("use_case".to_string(), request.use_case.clone())];
    context.extend(requester_context(request.requester.unwrap_or_default()));
    Question {
        use_case: Some(request.use_case),
        method: request.method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers: BTreeMap::new(),
        context,
    }
}

fn question_v2(request: NarrowingV2) -> Question {
    let http = request.http_request;
    let mut query = Vec::new();
    for (name, values) in &http.query_params {
        let values = match values {
            OneOrMany::One(value) => std::slice::from_ref(value),
            OneOrMany::Many(values) => values.as_slice(),
        };
        for value in values {
            query.push(format!("{}={}", encode(name), encode(value)));
        }
    }
    let mut context: Vec<(String, String)> = request
        .introspection_result
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((format!("introspection.{name}"), text))
        })
        .collect();
    if let Some(use_case) = &request.use_case {
        context.push(("use_case".into(), use_case.clone()));
    }
    Question {
        use_case: request.use_case,
        method: http.method,
        path: http.path,
        query: query.join("&"),
        headers: http
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect(),
        context,
    }
}

fn requester_context(requester: Requester) -> Vec<(String, String)> {
    requester
        .organization_identifier
        .map(|id| ("requester.organization_identifier".to_string(), id))
        .into_iter()
        .collect()
}

/// The engine's question: below the use case's base path, with the policy named
/// ([`Engine::place_in_use_case`]); or the engine's denial when no policy answers for it.
fn access_request(
    engine: &Engine,
    question: &Question,
    headers: &HeaderMap,
) -> Result<AccessRequest, Box<Decision>> {
    let mut access = AccessRequest {
        method: question.method.clone(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        headers: question.headers.clone().into_iter().collect(),
        context: question.context.iter().cloned().collect(),
        query: question.query.clone(),
        door: Door("care-services"),
        ..Default::default()
    };
    for name in ["authorization", "dpop"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            access.headers.insert(name.into(), value.to_owned());
        }
    }
    super::gateway::adopt_trace_context(headers, &mut access);
    match &question.use_case {
        Some(use_case) => engine.place_in_use_case(use_case, &question.path, &mut access)?,
        None => access.path = format!("/{}", question.path.trim_start_matches('/')),
    }
    Ok(access)
}

/// The proxy's path and query with the decision's parameters set and removed: a
/// parameter Sluis sets replaces every client value of that name.
fn rewritten(question: &Question, allow: &Allow) -> String {
    let mut pairs: Vec<String> = question
        .query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = decoded_pairs(pair)
                .into_iter()
                .next()
                .map(|(name, _)| name)
                .unwrap_or_default();
            !allow.set_query.iter().any(|(set, _)| *set == name)
                && !allow.remove_query.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    pairs.extend(
        allow
            .set_query
            .iter()
            .map(|(name, value)| format!("{}={}", encode(name), encode(value))),
    );
    target(&question.path, &pairs.join("&"))
}

/// v1's `narrowed_scope`: the resource type with the narrowing's parameters only.
fn narrowed_scope(path: &str, allow: &Allow) -> String {
    let pairs: Vec<String> = allow
        .set_query
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    target(path, &pairs.join("&"))
}

fn target(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

fn filters(allow: &Allow) -> Vec<Value> {
    allow
        .set_query
        .iter()
        .map(|(parameter, value)| json!({"parameter": parameter, "value": value}))
        .collect()
}

fn deny_response(decision: Decision) -> Response {
    let Outcome::Deny(deny) = decision.outcome else {
        tracing::warn!("care services proxy: an allow was answered as a denial");
        return unavailable_response();
    };
    let status = StatusCode::from_u16(deny.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = (status, deny.body).into_response();
    for (name, value) in deny.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The engine could not decide (it logged why).
fn unavailable_response() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "temporarily_unavailable", "message": "cannot decide now"}),
    )
}

async fn scopes(State(engine): State<Arc<Engine>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: ScopesV1 = match parse(&headers, &body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let mut context = vec![("use_case".to_string(), request.use_case.clone())];
    context.extend(requester_context(request.requester.unwrap_or_default()));
    let question = Question {
        use_case: None,
        method: "GET".into(),
        path: String::new(),
        query: String::new(),
        headers: BTreeMap::new(),
        context,
    };
    let access = match access_request(&engine, &question, &headers) {
        Ok(access) => access,
        Err(denied) => return deny_response(*denied),
    };
    let scopes = match engine.decide_scopes(&request.use_case, &access).await {
        Ok(Scopes::Granted(granted)) => granted,
        Ok(Scopes::Denied(decision)) => return deny_response(decision),
        Err(_) => return unavailable_response(),
    };
    let granted: Vec<(String, &str, Vec<String>)> = scopes
        .iter()
        .map(|scope| {
            let constraints: Vec<String> = scope
                .narrowing
                .iter()
                .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                .collect();
            let resource_type = scope.resource_type.as_str();
            let text = if constraints.is_empty() {
                format!("system/{resource_type}.rs")
            } else {
                format!("system/{resource_type}.rs?{}", constraints.join("&"))
            };
            (text, resource_type, constraints)
        })
        .collect();
    // When the scopes end: the token's `exp` (the earliest, should the decisions differ),
    // as the OpenAPI's `date-time` (`2024-12-31T23:59:59Z`); absent without a token.
    let expiry = scopes
        .iter()
        .filter_map(|scope| scope.expires_at)
        .min()
        .and_then(|exp| chrono::DateTime::<chrono::Utc>::from_timestamp(exp, 0))
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let mut body = json!({
            "scopes": granted.iter().map(|(scope, _, _)| scope).collect::<Vec<_>>(),
            "scope_details": granted.iter().map(|(scope, resource_type, constraints)| json!({
                "scope": scope,
                "description": format!("Read and search access to {resource_type} resources"),
                "constraints": constraints,
            })).collect::<Vec<_>>(),
    });
    if let Some(expiry) = expiry {
        body["expiry"] = json!(expiry);
    }
    json_response(StatusCode::OK, body)
}
