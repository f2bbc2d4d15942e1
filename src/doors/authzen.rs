//! The OpenID AuthZEN Authorization API 1.0 door: an application (the PEP) asks whether a
//! subject may perform an action on a resource, and Sluis answers `{"decision": bool}`.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /access/v1/evaluation` | one evaluation |
//! | `POST /access/v1/evaluations` | several, with top-level defaults and an `options.evaluations_semantic` |
//! | `POST /access/v1/search/subject`, `/resource`, `/action` | who, what, which actions (paged) |
//! | `GET /.well-known/authzen-configuration` | PDP metadata |
//!
//! A batch item that cannot form an evaluation answers `{"decision": false, "context":
//! {"error": ...}}` in its place, the batch itself 200, as the certification scenario
//! asks (§c-3-4-1); a missing required part of an item falls back to the default's
//! (`type`, `id`, `name`: §c-3-2-7). A search asks the engine
//! ([`Engine::search`]), which decides each candidate the fitting policies list; a
//! policy that lists none for the searched kind is a 400 `unsupported_search`.
//!
//! Response evaluations (Care Services Proxy phase 2): a request whose top-level
//! `context.response_to.grant` holds the grant of the request decision (the
//! `Sluis-Response-Grant` header of the search-narrowing answer) asks which resources of
//! the upstream's answer the requester may see. Each evaluation's
//! `resource.properties.resource` is one FHIR resource of the answer; the engine judges
//! them with the policy's `response_rules` ([`Engine::judge_entries`]), as the ext_proc
//! door judges a Bundle of them. Shape and answers: `docs/gateways.md`.
//!
//! Translation only: each evaluation becomes an [`AccessRequest`] carrying an
//! [`Evaluation`] and no HTTP request, which only policies with `match.evaluation` decide;
//! an allow is `true`, anything else `false`. A payload that is not a valid request (not
//! JSON, not `application/json`, a missing `subject`, `action`, `resource` or one of their
//! `type`, `id`, `name`) is refused whole with 400 and a JSON body naming the field.
//! Fields the spec does not define are ignored here and passed on to policies as sent.
//! Every answer echoes the caller's `X-Request-ID`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use sluis_config::Config;
use sluis_core::engine::Engine;
use sluis_core::engine::response::AnswerShape;
use sluis_core::engine::search::{self, SearchFailure};
use sluis_core::policy::response::EntryVerdict;
use sluis_core::policy::search::{SearchError, SearchKind};
use sluis_core::request::{AccessRequest, Evaluation};

pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
pub const METADATA_PATH: &str = "/.well-known/authzen-configuration";
pub const SEARCH_SUBJECT_PATH: &str = "/access/v1/search/subject";
pub const SEARCH_RESOURCE_PATH: &str = "/access/v1/search/resource";
pub const SEARCH_ACTION_PATH: &str = "/access/v1/search/action";

/// Most evaluations in one request: each is a full decision, so a bound keeps one call
/// from holding a worker for long.
pub const MAX_EVALUATIONS: usize = 1000;

/// Request bodies, at most (room for [`MAX_EVALUATIONS`] evaluations): enforced while the body is read (413 past it), so no request
/// makes the door buffer more, whatever its `content-length` says. Stated here rather than
/// left to axum's default, which is the same 2 MiB today.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

#[derive(Clone)]
struct Door {
    engine: Arc<Engine>,
    /// SHA-256 of the token callers must present; `None`: no caller authentication.
    /// Digests are compared, so the comparison's timing says nothing about the token.
    caller_token: Option<[u8; 32]>,
    /// The configured issuer identifier, without a trailing `/`.
    issuer: Option<String>,
    /// Capability URNs for the metadata (omitted when empty).
    capabilities: Arc<[String]>,
}

/// The door's routes. Fails when the configured token cannot be read or the issuer is not
/// a URL the metadata may publish.
pub fn router(engine: Arc<Engine>, config: &Config) -> Result<Router, String> {
    let settings = &config.authzen;
    let caller_token = match &settings.token {
        Some(secret) => {
            let token = secret
                .resolve(&config.base_dir)
                .map_err(|e| format!("authzen.token: {e}"))?;
            if token.is_empty() {
                return Err("authzen.token: the token is empty".into());
            }
            Some(Sha256::digest(&token).into())
        }
        None => None,
    };
    let issuer = match &settings.issuer {
        Some(issuer) => Some(valid_issuer(issuer).map_err(|e| format!("authzen.issuer: {e}"))?),
        None => None,
    };
    let door = Door {
        engine,
        caller_token,
        issuer,
        capabilities: settings.capabilities.clone().into(),
    };
    let decisions = Router::new()
        .route(EVALUATION_PATH, post(evaluation))
        .route(EVALUATIONS_PATH, post(evaluations))
        .route(SEARCH_SUBJECT_PATH, post(search_subject))
        .route(SEARCH_RESOURCE_PATH, post(search_resource))
        .route(SEARCH_ACTION_PATH, post(search_action))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(axum::middleware::from_fn_with_state(
            door.clone(),
            authenticate,
        ));
    Ok(decisions
        .route(METADATA_PATH, get(metadata))
        .with_state(door)
        .layer(axum::middleware::from_fn(echo_request_id)))
}

/// An issuer identifier: an http(s) URL without query or fragment.
fn valid_issuer(issuer: &str) -> Result<String, String> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| format!("`{issuer}` is not an https (or http) URL"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#']) {
        return Err(format!(
            "`{issuer}` must be a URL with a host and no query or fragment"
        ));
    }
    Ok(issuer.trim_end_matches('/').to_owned())
}

/// The spec's HTTPS binding: the PDP returns the `X-Request-ID` it was sent.
async fn echo_request_id(request: Request, next: Next) -> Response {
    let id = request.headers().get("x-request-id").cloned();
    let mut response = next.run(request).await;
    if let Some(id) = id {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

/// Refuses callers without the configured bearer token.
async fn authenticate(State(door): State<Door>, request: Request, next: Next) -> Response {
    let Some(expected) = door.caller_token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| -> [u8; 32] { Sha256::digest(token.trim().as_bytes()).into() });
    if presented == Some(expected) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required to ask for decisions",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sluis-authzen\""),
    );
    response
}

/// A JSON error answer: `{"error": code, "message": message}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

/// A request the door refuses whole, with what is wrong in it.
#[derive(Debug, PartialEq)]
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, "invalid_request", &self.0)
    }
}

/// The body as a JSON object, when it is declared and is one.
fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(BadRequest(format!(
            "the content type must be `application/json`, not `{content_type}`"
        )));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(BadRequest(format!("the body is not valid JSON: {e}"))),
    }
}

/// One evaluation from its parts: an item's own, else the request's defaults. `at` is
/// where the item is in the body, for messages (`evaluations[2].`, or empty).
fn evaluation_of(
    item: &Map<String, Value>,
    defaults: &Map<String, Value>,
    at: &str,
) -> Result<Evaluation, BadRequest> {
    let part = |name: &str| {
        item.get(name)
            .filter(|v| !v.is_null())
            .or(defaults.get(name))
    };
    let entity = |name: &str, required: &[&str]| -> Result<Value, BadRequest> {
        let mut value = part(name)
            .filter(|v| !v.is_null())
            .ok_or_else(|| BadRequest(format!("missing `{at}{name}`")))?
            .clone();
        // An item's entity replaces the default whole, but a required identifier it
        // lacks is the default's (certification scenario §c-3-2-7).
        if let (Some(own), Some(Value::Object(default))) =
            (value.as_object_mut(), defaults.get(name))
        {
            for field in required {
                if own.get(*field).is_none_or(Value::is_null)
                    && let Some(fallback) = default.get(*field)
                {
                    own.insert((*field).to_owned(), fallback.clone());
                }
            }
        }
        let object = value
            .as_object()
            .ok_or_else(|| BadRequest(format!("`{at}{name}` must be an object")))?;
        for field in required {
            match object.get(*field) {
                None | Some(Value::Null) => {
                    return Err(BadRequest(format!("missing `{at}{name}.{field}`")));
                }
                Some(Value::String(text)) if text.is_empty() => {
                    return Err(BadRequest(format!("`{at}{name}.{field}` is empty")));
                }
                Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(BadRequest(format!("`{at}{name}.{field}` must be a string")));
                }
            }
        }
        if let Some(properties) = object.get("properties")
            && !(properties.is_object() || properties.is_null())
        {
            return Err(BadRequest(format!(
                "`{at}{name}.properties` must be an object"
            )));
        }
        Ok(value)
    };
    let context = match part("context") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(context @ Value::Object(_)) => context.clone(),
        Some(_) => return Err(BadRequest(format!("`{at}context` must be an object"))),
    };
    Ok(Evaluation {
        subject: entity("subject", &["type", "id"])?,
        action: entity("action", &["name"])?,
        resource: entity("resource", &["type", "id"])?,
        context,
    })
}

/// The engine's answer to one evaluation, as an AuthZEN decision object.
async fn decide(engine: &Engine, evaluation: Evaluation, headers: &HeaderMap) -> Value {
    let mut request = AccessRequest {
        evaluation: Some(evaluation),
        door: sluis_core::request::Door("authzen"),
        ..Default::default()
    };
    super::gateway::adopt_trace_context(headers, &mut request);
    match engine.decide(&request).await {
        Ok(decision) => json!({"decision": decision.is_allow()}),
        // Closed, with the error where the spec puts per-evaluation errors.
        Err(unavailable) => {
            json!({
                "decision": false,
                "context": {"error": {"status": 503, "message": unavailable.to_string()}},
            })
        }
    }
}

/// `POST /access/v1/evaluation`.
async fn evaluation(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match json_object(&headers, &body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    match response_to(&body) {
        Ok(Some(to)) => {
            let item = evaluation_of(&body, &Map::new(), "");
            let mut results = judge_resources(&door.engine, &to, vec![(item, String::new())]).await;
            return axum::Json(results.pop().unwrap_or(Value::Null)).into_response();
        }
        Ok(None) => {}
        Err(bad) => return bad.into_response(),
    }
    let parsed = evaluation_of(&body, &Map::new(), "");
    match parsed {
        Ok(evaluation) => {
            axum::Json(decide(&door.engine, evaluation, &headers).await).into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

/// How a batch stops early (`options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

fn semantic(body: &Map<String, Value>) -> Result<Semantic, BadRequest> {
    let options = match body.get("options") {
        None | Some(Value::Null) => return Ok(Semantic::ExecuteAll),
        Some(Value::Object(options)) => options,
        Some(_) => return Err(BadRequest("`options` must be an object".into())),
    };
    match options.get("evaluations_semantic") {
        None | Some(Value::Null) => Ok(Semantic::ExecuteAll),
        Some(Value::String(name)) => match name.as_str() {
            "execute_all" => Ok(Semantic::ExecuteAll),
            "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
            other => Err(BadRequest(format!(
                "unknown `options.evaluations_semantic` `{other}` (known: execute_all, deny_on_first_deny, permit_on_first_permit)"
            ))),
        },
        Some(_) => Err(BadRequest(
            "`options.evaluations_semantic` must be a string".into(),
        )),
    }
}

/// A parsed `evaluations` request: each item with the defaults applied, or one
/// evaluation when there is no (or an empty) `evaluations` array.
#[derive(Debug, PartialEq)]
enum Batch {
    Single(Evaluation),
    /// Each item, or what is wrong with it: answered in its place.
    Many(Vec<Result<Evaluation, BadRequest>>, Semantic),
}

fn batch(body: &Map<String, Value>) -> Result<Batch, BadRequest> {
    let items = match body.get("evaluations") {
        None | Some(Value::Null) => return evaluation_of(body, &Map::new(), "").map(Batch::Single),
        Some(Value::Array(items)) if items.is_empty() => {
            return evaluation_of(body, &Map::new(), "").map(Batch::Single);
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(BadRequest("`evaluations` must be an array".into())),
    };
    if items.len() > MAX_EVALUATIONS {
        return Err(BadRequest(format!(
            "{} evaluations in one request; at most {MAX_EVALUATIONS}",
            items.len()
        )));
    }
    let semantic = semantic(body)?;
    let evaluations = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("evaluations[{i}].");
            let item = item
                .as_object()
                .ok_or_else(|| BadRequest(format!("`evaluations[{i}]` must be an object")))?;
            evaluation_of(item, body, &at)
        })
        .collect();
    Ok(Batch::Many(evaluations, semantic))
}

/// `POST /access/v1/evaluations`: decisions in request order; with a short-circuiting
/// semantic, up to and including the first deny (or permit).
async fn evaluations(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match json_object(&headers, &body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    let to = match response_to(&body) {
        Ok(to) => to,
        Err(bad) => return bad.into_response(),
    };
    let (evaluations, semantic) = match batch(&body) {
        Ok(Batch::Single(evaluation)) => match &to {
            Some(to) => {
                let item = vec![(Ok(evaluation), String::new())];
                let mut results = judge_resources(&door.engine, to, item).await;
                return axum::Json(results.pop().unwrap_or(Value::Null)).into_response();
            }
            None => {
                return axum::Json(decide(&door.engine, evaluation, &headers).await)
                    .into_response();
            }
        },
        Ok(Batch::Many(evaluations, semantic)) => (evaluations, semantic),
        Err(bad) => return bad.into_response(),
    };
    if let Some(to) = &to {
        let items = evaluations
            .into_iter()
            .enumerate()
            .map(|(i, item)| (item, format!("evaluations[{i}].")))
            .collect();
        let results = judge_resources(&door.engine, to, items).await;
        return axum::Json(json!({"evaluations": short_circuit(results, semantic)}))
            .into_response();
    }
    let mut results = Vec::with_capacity(evaluations.len());
    for evaluation in evaluations {
        let result = match evaluation {
            Ok(evaluation) => decide(&door.engine, evaluation, &headers).await,
            // The item's error in its place, the batch answered (scenario §c-3-4-1; the
            // core spec would refuse the payload: see docs/gateways.md).
            Err(BadRequest(message)) => item_error(message),
        };
        let allowed = result.get("decision") == Some(&Value::Bool(true));
        results.push(result);
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !allowed,
            Semantic::PermitOnFirstPermit => allowed,
        };
        if stop {
            break;
        }
    }
    axum::Json(json!({"evaluations": results})).into_response()
}

/// `results` up to and including the first deny (or permit), as `semantic` asks.
fn short_circuit(results: Vec<Value>, semantic: Semantic) -> Vec<Value> {
    let mut kept = Vec::with_capacity(results.len());
    for result in results {
        let allowed = result.get("decision") == Some(&Value::Bool(true));
        kept.push(result);
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !allowed,
            Semantic::PermitOnFirstPermit => allowed,
        };
        if stop {
            break;
        }
    }
    kept
}

/// A request whose resources are an upstream answer's: the grant its request decision
/// sealed (`context.response_to.grant`, from the Care Services Proxy's search-narrowing
/// answer) and the answer's shape.
#[derive(Debug, PartialEq)]
struct ResponseTo {
    grant: String,
    shape: AnswerShape,
}

/// The request's top-level `context.response_to`, when it has one: then every evaluation
/// in it is a resource of that answer.
fn response_to(body: &Map<String, Value>) -> Result<Option<ResponseTo>, BadRequest> {
    let Some(to) = body
        .get("context")
        .and_then(Value::as_object)
        .and_then(|context| context.get("response_to"))
        .filter(|to| !to.is_null())
    else {
        return Ok(None);
    };
    let to = to
        .as_object()
        .ok_or_else(|| BadRequest("`context.response_to` must be an object".into()))?;
    let grant = match to.get("grant") {
        Some(Value::String(grant)) if !grant.is_empty() => grant.clone(),
        None | Some(Value::Null) => {
            return Err(BadRequest("missing `context.response_to.grant`".into()));
        }
        Some(_) => {
            return Err(BadRequest(
                "`context.response_to.grant` must be a non-empty string".into(),
            ));
        }
    };
    let mut shape = AnswerShape::default();
    match to.get("status") {
        None | Some(Value::Null) => {}
        Some(status) => {
            shape.status = status
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| {
                    BadRequest("`context.response_to.status` must be an HTTP status".into())
                })?;
        }
    }
    match to.get("bundle_type") {
        None => {}
        Some(Value::Null) => shape.bundle_type = None,
        Some(Value::String(kind)) if !kind.is_empty() => shape.bundle_type = Some(kind.clone()),
        Some(_) => {
            return Err(BadRequest(
                "`context.response_to.bundle_type` must be a string or null".into(),
            ));
        }
    }
    Ok(Some(ResponseTo { grant, shape }))
}

/// The Bundle entry an evaluation stands for: its `resource.properties.resource` is the
/// FHIR resource (of `resource.type`, with `resource.id` when it has an id), beside an
/// optional `fullUrl` and `search`; the action is `read`. Takes the evaluation to move its
/// resource out: a Bundle's worth of resources is not copied.
fn entry_of(mut evaluation: Evaluation, at: &str) -> Result<Value, BadRequest> {
    if evaluation.action_name() != "read" {
        return Err(BadRequest(format!(
            "`{at}action.name` must be `read` in a response evaluation"
        )));
    }
    let properties = evaluation
        .resource
        .get("properties")
        .and_then(Value::as_object);
    let resource = properties
        .and_then(|p| p.get("resource"))
        .filter(|r| !r.is_null())
        .ok_or_else(|| BadRequest(format!("missing `{at}resource.properties.resource`")))?;
    let fhir_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            BadRequest(format!(
                "`{at}resource.properties.resource` is not a FHIR resource (no `resourceType`)"
            ))
        })?;
    if fhir_type != evaluation.resource_type() {
        return Err(BadRequest(format!(
            "`{at}resource.type` `{}` is not the resource's `resourceType` `{fhir_type}`",
            evaluation.resource_type()
        )));
    }
    if let Some(id) = resource.get("id")
        && evaluation.resource.get("id") != Some(id)
    {
        return Err(BadRequest(format!(
            "`{at}resource.id` is not the resource's `id`"
        )));
    }
    let mut entry = Map::new();
    // Checked above: `properties` is an object holding a non-null `resource`.
    if let Some(Value::Object(properties)) = evaluation.resource.get_mut("properties") {
        for key in ["fullUrl", "search", "resource"] {
            if let Some(value) = properties.remove(key).filter(|v| !v.is_null()) {
                entry.insert(key.into(), value);
            }
        }
    }
    Ok(Value::Object(entry))
}

/// Response evaluations: the engine judges the items' resources under the grant, as the
/// ext_proc door judges a Bundle of them; an item that is not a resource gets its error
/// in its place. Decisions in item order.
async fn judge_resources(
    engine: &Engine,
    to: &ResponseTo,
    items: Vec<(Result<Evaluation, BadRequest>, String)>,
) -> Vec<Value> {
    let mut entries: Vec<Value> = Vec::with_capacity(items.len());
    let items: Vec<Result<(), BadRequest>> = items
        .into_iter()
        .map(|(item, at)| {
            let entry = item.and_then(|evaluation| entry_of(evaluation, &at))?;
            entries.push(entry);
            Ok(())
        })
        .collect();
    let decided = engine
        .judge_entries(&to.grant, &entries, &to.shape, "authzen")
        .await;
    let mut judged = 0;
    items
        .into_iter()
        .map(|item| {
            if let Err(BadRequest(message)) = item {
                return item_error(message);
            }
            let index = judged;
            judged += 1;
            if let Some(reason) = &decided.refused {
                return json!({
                    "decision": false,
                    "context": {"error": {"status": 403, "code": "access_denied", "message": reason}},
                });
            }
            if decided.shown(index) {
                return json!({"decision": true});
            }
            let verdict = decided.entries.get(index);
            if decided.denied {
                // The whole answer is denied: every item, with the status to answer.
                let (rule, status) = decided
                    .entries
                    .iter()
                    .find_map(|e| match e {
                        EntryVerdict::Deny { rule, status, .. } => Some((rule.clone(), *status)),
                        _ => None,
                    })
                    .unwrap_or_else(|| (Arc::from("response"), 403));
                let mut context = json!({"reason": "denied", "status": status});
                if matches!(verdict, Some(EntryVerdict::Deny { .. })) {
                    context["rule"] = json!(rule.as_ref());
                }
                return json!({"decision": false, "context": context});
            }
            let mut context = json!({"reason": "withheld"});
            if let Some(rule) = verdict.and_then(EntryVerdict::rule) {
                context["rule"] = json!(rule);
            }
            json!({"decision": false, "context": context})
        })
        .collect()
}

/// A batch item's error, in its place (certification scenario §c-3-4-1).
fn item_error(message: String) -> Value {
    json!({
        "decision": false,
        "context": {"error": {"status": 400, "code": "invalid_request", "message": message}},
    })
}

/// `GET /.well-known/authzen-configuration`: where the endpoints are. The issuer is the
/// configured one, else the scheme and host this request was sent to.
async fn metadata(State(door): State<Door>, headers: HeaderMap) -> Response {
    let issuer = match &door.issuer {
        Some(issuer) => issuer.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']));
            let Some(host) = host else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "no usable Host header; configure `authzen.issuer`",
                );
            };
            let scheme = match headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
            {
                Some("https") => "https",
                _ => "http",
            };
            format!("{scheme}://{host}")
        }
    };
    let mut metadata = json!({
        "issuer": issuer,
        "policy_decision_point": issuer,
        "access_evaluation_endpoint": format!("{issuer}{EVALUATION_PATH}"),
        "access_evaluations_endpoint": format!("{issuer}{EVALUATIONS_PATH}"),
        "search_subject_endpoint": format!("{issuer}{SEARCH_SUBJECT_PATH}"),
        "search_resource_endpoint": format!("{issuer}{SEARCH_RESOURCE_PATH}"),
        "search_action_endpoint": format!("{issuer}{SEARCH_ACTION_PATH}"),
    });
    if !door.capabilities.is_empty() {
        metadata["capabilities"] = json!(door.capabilities.as_ref());
    }
    axum::Json(metadata).into_response()
}

async fn search_subject(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    search(&door, SearchKind::Subject, &headers, &body).await
}

async fn search_resource(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    search(&door, SearchKind::Resource, &headers, &body).await
}

async fn search_action(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    search(&door, SearchKind::Action, &headers, &body).await
}

/// A Search API request: read it, ask the engine, answer one page.
async fn search(door: &Door, kind: SearchKind, headers: &HeaderMap, body: &[u8]) -> Response {
    let query = match json_object(headers, body)
        .and_then(|body| search::read_query(kind, &body).map_err(BadRequest))
    {
        Ok(query) => query,
        Err(bad) => return bad.into_response(),
    };
    let found = match door.engine.search(kind, &query.template).await {
        Ok(found) => found,
        Err(SearchFailure::Search(e @ SearchError::Unsupported { .. })) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_search",
                &e.to_string(),
            );
        }
        Err(SearchFailure::Search(e @ SearchError::TooLarge)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "search_too_large",
                &e.to_string(),
            );
        }
        Err(SearchFailure::Search(e @ SearchError::Candidates { .. })) => {
            tracing::warn!(door = "authzen", "{e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "search_failed",
                &e.to_string(),
            );
        }
        Err(SearchFailure::Unavailable(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &e.to_string(),
            );
        }
    };
    let (results, next_token) = search::page(&query, &found);
    let entity_type = |entity: &Value| entity.get("type").cloned().unwrap_or(Value::Null);
    let results: Vec<Value> = results
        .iter()
        .map(|candidate| match kind {
            SearchKind::Action => json!({"name": candidate.id}),
            SearchKind::Subject => {
                json!({"type": entity_type(&query.template.subject), "id": candidate.id})
            }
            SearchKind::Resource => {
                json!({"type": entity_type(&query.template.resource), "id": candidate.id})
            }
        })
        .collect();
    let mut answer = json!({"results": results});
    if query.paged || !next_token.is_empty() {
        answer["page"] = json!({
            "next_token": next_token,
            "count": results.len(),
            "total": found.len(),
        });
    }
    axum::Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn minimal() -> Value {
        json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "read"},
            "resource": {"type": "doc", "id": "1"},
        })
    }

    fn problem(body: Value) -> String {
        match batch(&object(body)) {
            Err(BadRequest(message)) => message,
            Ok(parsed) => panic!("accepted: {parsed:?}"),
        }
    }

    #[test]
    fn a_complete_evaluation_keeps_every_field_and_defaults_context() {
        let mut body = minimal();
        body["subject"]["properties"] = json!({"department": "x"});
        body["extra"] = json!("ignored");
        let Ok(Batch::Single(evaluation)) = batch(&object(body)) else {
            panic!("not single")
        };
        assert_eq!(evaluation.subject["properties"]["department"], "x");
        assert_eq!(evaluation.context, json!({}));
        assert_eq!(evaluation.action_name(), "read");
        assert_eq!(evaluation.resource_type(), "doc");
    }

    #[test]
    fn missing_and_mistyped_parts_are_named() {
        let mut body = minimal();
        body.as_object_mut().map(|b| b.remove("subject"));
        assert_eq!(problem(body), "missing `subject`");
        let mut body = minimal();
        body["resource"].as_object_mut().map(|r| r.remove("id"));
        assert_eq!(problem(body), "missing `resource.id`");
        let mut body = minimal();
        body["action"] = json!({"nom": "read"});
        assert_eq!(problem(body), "missing `action.name`");
        let mut body = minimal();
        body["subject"]["type"] = json!(7);
        assert_eq!(problem(body), "`subject.type` must be a string");
        let mut body = minimal();
        body["context"] = json!([1]);
        assert_eq!(problem(body), "`context` must be an object");
        let mut body = minimal();
        body["subject"]["id"] = json!("");
        assert_eq!(problem(body), "`subject.id` is empty");
    }

    #[test]
    fn items_take_defaults_and_override_them_whole() {
        let body = json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "read"},
            "context": {"time": "now"},
            "evaluations": [
                {"resource": {"type": "doc", "id": "1"}},
                {"action": {"name": "edit"}, "resource": {"type": "doc", "id": "2"}, "context": {"x": 1}},
            ],
            "options": {"evaluations_semantic": "deny_on_first_deny"},
        });
        let Ok(Batch::Many(items, semantic)) = batch(&object(body)) else {
            panic!("not many")
        };
        assert_eq!(semantic, Semantic::DenyOnFirstDeny);
        let items: Vec<Evaluation> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(items[0].action_name(), "read");
        assert_eq!(items[0].context, json!({"time": "now"}));
        assert_eq!(items[1].action_name(), "edit");
        assert_eq!(items[1].context, json!({"x": 1}));
        assert_eq!(items[1].subject["id"], "alice");
    }

    fn item_problems(body: Value) -> Vec<Option<String>> {
        match batch(&object(body)) {
            Ok(Batch::Many(items, _)) => items
                .into_iter()
                .map(|item| item.err().map(|BadRequest(message)| message))
                .collect(),
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn item_errors_say_which_item_and_stay_in_their_place() {
        let body = json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "read"},
            "evaluations": [{"resource": {"type": "doc", "id": "1"}}, {"resource": {"type": "doc"}}, {}],
        });
        assert_eq!(
            item_problems(body),
            [
                None,
                Some("missing `evaluations[1].resource.id`".into()),
                Some("missing `evaluations[2].resource`".into())
            ]
        );
        let body = json!({"evaluations": [7]});
        assert_eq!(
            item_problems(body),
            [Some("`evaluations[0]` must be an object".into())]
        );
        let mut body = minimal();
        body["evaluations"] = json!([{}]);
        body["options"] = json!({"evaluations_semantic": "first_wins"});
        assert!(problem(body).contains("unknown `options.evaluations_semantic` `first_wins`"));
    }

    #[test]
    fn an_item_lacking_an_identifier_takes_the_defaults() {
        // Certification scenario §c-3-2-7: the item's resource replaces the default's,
        // but its missing `type` is the default's.
        let body = json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "write"},
            "resource": {"type": "record"},
            "evaluations": [{"resource": {"id": "record-1", "properties": {"status": "active"}}}],
        });
        let Ok(Batch::Many(items, _)) = batch(&object(body)) else {
            panic!("not many")
        };
        let Some(Ok(item)) = items.first() else {
            panic!("item refused")
        };
        assert_eq!(
            item.resource,
            json!({"type": "record", "id": "record-1", "properties": {"status": "active"}})
        );
    }

    #[test]
    fn no_or_empty_evaluations_is_one_evaluation() {
        let mut body = minimal();
        body["evaluations"] = json!([]);
        assert!(matches!(batch(&object(body)), Ok(Batch::Single(_))));
    }

    #[test]
    fn content_type_and_json_are_checked() {
        let mut headers = HeaderMap::new();
        assert!(json_object(&headers, b"{}").is_err());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(json_object(&headers, b"{}").is_ok());
        assert!(json_object(&headers, b"[]").is_err());
        let Err(BadRequest(message)) = json_object(&headers, b"{\"a\":") else {
            panic!("accepted")
        };
        assert!(
            message.starts_with("the body is not valid JSON"),
            "{message}"
        );
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z]{0,12}".prop_map(Value::String),
            Just(json!("Organization")),
            Just(json!("read")),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("resourceType".to_string()),
                        Just("id".to_string()),
                        Just("resource".to_string()),
                        Just("grant".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever a PEP sends as a response evaluation's resource and `response_to`:
        /// refused with a message, or read into an entry whose resource is of the
        /// evaluation's type and id; never a panic.
        #[test]
        fn response_evaluation_parts_are_read_or_refused(
            properties in any_json(),
            kind in prop_oneof_types(),
            id in any_json(),
            to in any_json(),
        ) {
            let body = json!({
                "subject": {"type": "organization", "id": "ura|1"},
                "action": {"name": "read"},
                "resource": {"type": kind, "id": id, "properties": properties},
                "context": {"response_to": to},
            });
            let body = object(body);
            let _ = response_to(&body);
            if let Ok(evaluation) = evaluation_of(&body, &Map::new(), "")
                && let Ok(entry) = entry_of(evaluation.clone(), "")
            {
                proptest::prop_assert_eq!(
                    entry["resource"]["resourceType"].as_str(),
                    Some(evaluation.resource_type())
                );
                if let Some(id) = entry["resource"].get("id") {
                    proptest::prop_assert_eq!(Some(id), evaluation.resource.get("id"));
                }
            }
        }
    }

    fn prop_oneof_types() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(json!("Organization")),
            Just(json!("Location")),
            any_json()
        ]
    }

    #[test]
    fn issuers_are_urls_without_query() {
        assert_eq!(
            valid_issuer("https://pdp.example.org/"),
            Ok("https://pdp.example.org".to_string())
        );
        assert!(valid_issuer("pdp.example.org").is_err());
        assert!(valid_issuer("https://pdp.example.org/?x").is_err());
    }
}
