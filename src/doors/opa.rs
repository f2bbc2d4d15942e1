//! The OPA REST Data API (`POST /v1/data/{path}` with `{"input": ...}` → `{"result": ...}`)
//! as Kong's and APISIX's `opa` plugins call it, so a gateway configured for OPA can point
//! at Sluis unchanged.
//!
//! The plugin is told apart by the input it sends, not by the path (the path is whatever
//! the operator configured: `opa_path` in Kong, `policy` in APISIX, and is not read):
//!
//! - Kong (<https://developer.konghq.com/plugins/opa/>): `input.request.http` with `host`,
//!   `port`, `tls`, `method`, `scheme`, `path`, `querystring`, `headers` (and `body` with
//!   `include_body_in_opa_input`), and `input.client_ip`. Answered with Kong's object
//!   result: `allow`, `headers` (set on the upstream request on allow, on the response on
//!   deny), `status` and `message` (the deny body: the JSON document itself when it is
//!   one, which Kong sends as JSON).
//! - APISIX (<https://apisix.apache.org/docs/apisix/plugins/opa/>): `input.type` `http`,
//!   `input.request` with `scheme`, `path`, `headers`, `method`, `query`, `port`, `host`,
//!   and `input.var` with `remote_addr` and `remote_port`. Answered with `allow`,
//!   `headers`, `status_code` and `reason` (the deny body, as for Kong's `message`).
//!
//! Neither plugin can remove a header or rewrite the query: an allow with a query rewrite
//! is denied ([`sluis_core::engine::DoorCapabilities`]), and header removal must be done in
//! the gateway's configuration (`gateways.http` warns at load).
//!
//! Errors use OPA's shape: 400 `{"code": "invalid_parameter", "message": ...}` for bad
//! JSON or input, 500 `internal_error` when the engine cannot decide, which both plugins
//! turn into an error for the client, never an allow.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use sluis_core::decision::{Decision, Outcome};
use sluis_core::engine::Engine;
use sluis_core::request::{AccessRequest, Source, encode_query_part};

/// Request bodies, at most: enforced while the body is read (413 past it), so no request
/// makes the door buffer more, whatever its `content-length` says. Stated here rather than
/// left to axum's default, which is the same 2 MiB today.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// The routes of the door.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/data/{*path}", post(decide))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(engine)
}

/// The plugin whose input and result shape a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Kong,
    Apisix,
}

async fn decide(State(engine): State<Arc<Engine>>, headers: HeaderMap, body: Bytes) -> Response {
    let (plugin, mut access) = match parse(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            return error(StatusCode::BAD_REQUEST, "invalid_parameter", &message);
        }
    };
    // The plugin's own call may carry the trace when the input's headers do not.
    super::gateway::adopt_trace_context(&headers, &mut access);
    match super::gateway::decide(&engine, &access).await {
        Ok(decision) => axum::Json(json!({ "result": result(plugin, decision) })).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the authorization service cannot decide now",
        ),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// The request document: `{"input": ...}`.
#[derive(Deserialize)]
struct DataRequest {
    input: Option<Value>,
}

/// Kong's `input`.
#[derive(Deserialize)]
struct KongInput {
    request: KongRequest,
    #[serde(default)]
    client_ip: Option<String>,
}

#[derive(Deserialize)]
struct KongRequest {
    http: PluginRequest,
}

/// The HTTP request as either plugin describes it: Kong's `input.request.http`, APISIX's
/// `input.request` (which calls the parsed query `query`, Kong `querystring`).
#[derive(Deserialize)]
struct PluginRequest {
    method: String,
    path: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    scheme: String,
    #[serde(default, alias = "querystring")]
    query: Map<String, Value>,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Option<String>,
}

/// APISIX's `input`.
#[derive(Deserialize)]
struct ApisixInput {
    request: PluginRequest,
    #[serde(default)]
    var: Map<String, Value>,
}

/// Reads a Data API request body: which plugin sent it, and the request it describes.
pub fn parse(body: &[u8]) -> Result<(Plugin, AccessRequest), String> {
    let request: DataRequest =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let Some(input) = request.input else {
        return Err("`input` is missing".into());
    };
    let is_kong = input.pointer("/request/http").is_some_and(Value::is_object);
    let is_apisix = input.get("type").is_some();
    if is_kong {
        let input: KongInput =
            serde_json::from_value(input).map_err(|e| format!("Kong `input`: {e}"))?;
        let access = input.request.http.access(
            input.client_ip.unwrap_or_default(),
            sluis_core::request::Door("opa-kong"),
        )?;
        return Ok((Plugin::Kong, access));
    }
    if is_apisix {
        match input.get("type").and_then(Value::as_str) {
            Some("http") => {}
            other => {
                return Err(format!(
                    "APISIX `input.type` must be `http`, not {}",
                    other.map_or_else(|| "a non-string".to_string(), |t| format!("`{t}`"))
                ));
            }
        }
        let input: ApisixInput =
            serde_json::from_value(input).map_err(|e| format!("APISIX `input`: {e}"))?;
        let request = input.request;
        let var = |name: &str| match input.var.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let address = match (var("remote_addr"), var("remote_port")) {
            (Some(ip), Some(port)) if ip.contains(':') => format!("[{ip}]:{port}"),
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (Some(ip), None) => ip,
            _ => String::new(),
        };
        let access = request.access(address, sluis_core::request::Door("opa-apisix"))?;
        return Ok((Plugin::Apisix, access));
    }
    Err("`input` is neither Kong's (`input.request.http`) nor APISIX's (`input.type`)".into())
}

impl PluginRequest {
    fn access(
        self,
        address: String,
        door: sluis_core::request::Door,
    ) -> Result<AccessRequest, String> {
        Ok(AccessRequest {
            method: method(&self.method)?,
            scheme: self.scheme.to_ascii_lowercase(),
            host: self.host,
            path: path(self.path)?,
            query: query_string(&self.query),
            headers: headers(&self.headers)?,
            source: Source {
                address,
                certificate: None,
            },
            body: self.body.unwrap_or_default(),
            door,
            ..AccessRequest::default()
        })
    }
}

fn method(method: &str) -> Result<String, String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("`{method}` is not an HTTP method"));
    }
    Ok(method.to_ascii_uppercase())
}

fn path(path: String) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` does not start with `/`"));
    }
    Ok(path)
}

/// Headers as the plugins send them (name → value, or → list of values for a repeated
/// header), lower-cased and joined with `,`.
fn headers(map: &Map<String, Value>) -> Result<sluis_core::request::Headers, String> {
    let mut headers = sluis_core::request::HeadersBuilder::default();
    for (name, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Array(values) => values
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(format!("header `{name}`: values must be strings")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => return Err(format!("header `{name}`: a string or a list of strings")),
        };
        // Two spellings of one name: the later one's value, as a map keeps it.
        headers.push_lowercased(name, &text);
    }
    Ok(headers.build(sluis_core::request::Repeats::Replace))
}

/// A query string from the plugins' decoded arguments (name → value, list of values, or
/// `true` for a name without a value), percent-encoded, names sorted.
fn query_string(arguments: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = arguments.iter().collect();
    let mut pairs: Vec<String> = Vec::new();
    let mut push = |name: &str, value: &Value| match value {
        Value::Bool(true) => pairs.push(encode_query_part(name)),
        Value::String(s) => pairs.push(format!(
            "{}={}",
            encode_query_part(name),
            encode_query_part(s)
        )),
        Value::Number(n) => pairs.push(format!("{}={n}", encode_query_part(name))),
        _ => {}
    };
    for (name, value) in sorted {
        match value {
            Value::Array(values) => values.iter().for_each(|v| push(name, v)),
            value => push(name, value),
        }
    }
    pairs.join("&")
}

/// The `result` document the plugin acts on.
pub fn result(plugin: Plugin, decision: Decision) -> Value {
    match decision.outcome {
        Outcome::Allow(allow) => json!({
            "allow": true,
            "headers": header_object(&allow.set_headers),
        }),
        Outcome::Deny(deny) => {
            // Kong sends an object `message` as JSON and a string one wrapped in
            // `{"message": ...}`; APISIX likewise for `reason`. Sluis's deny body is JSON
            // unless a policy's uniform deny says otherwise.
            let body = match serde_json::from_str::<Value>(&deny.body) {
                Ok(document @ Value::Object(_)) => document,
                _ => Value::String(deny.body),
            };
            let headers = header_object(&deny.headers);
            match plugin {
                Plugin::Kong => json!({
                    "allow": false,
                    "status": deny.status,
                    "headers": headers,
                    "message": body,
                }),
                Plugin::Apisix => json!({
                    "allow": false,
                    "status_code": deny.status,
                    "headers": headers,
                    "reason": body,
                }),
            }
        }
    }
}

fn header_object(headers: &[(String, String)]) -> Value {
    Value::Object(
        headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
