//! The flows API over HTTP/JSON on the admin listener (`/v1/flows`). It translates
//! requests to [`crate::flows::Flows`] calls and errors to statuses:
//! invalid input 400 with every bad field, unknown id 404, a different flow under an
//! existing id 409, the store unreachable 503 (nothing written).
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/flows` | create (idempotent by id); a NutsAuthorizationCredential is accepted too |
//! | `GET /v1/flows/{id}` | one flow |
//! | `GET /v1/flows?actor=&purpose=&patient=&page_size=&page_token=` | list, ordered by id |
//! | `POST /v1/flows/{id}/revoke` | revoke |
//! | `POST /v1/flows/import` | many at once (JSON array or NDJSON): all or nothing |
//! | `GET /v1/flows/export` | every flow as NDJSON, in write order |

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::flows::{FieldError, Filter, Flow, FlowError, Flows, MAX_IMPORT};

/// Bodies of single-flow requests, at most.
const MAX_BODY: usize = 1024 * 1024;
/// Bodies of imports, at most.
const MAX_IMPORT_BODY: usize = 128 * 1024 * 1024;

pub fn router(flows: Flows) -> Router {
    Router::new()
        .route("/v1/flows", post(create).get(list))
        .route("/v1/flows/export", get(export))
        .route(
            "/v1/flows/import",
            post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY)),
        )
        .route("/v1/flows/{id}", get(fetch))
        .route("/v1/flows/{id}/revoke", post(revoke))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(flows)
}

/// An error as the API answers it.
pub fn error_response(error: FlowError) -> Response {
    let (status, code, fields) = match &error {
        FlowError::Invalid(fields) => (StatusCode::BAD_REQUEST, "invalid_flow", fields.clone()),
        FlowError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", Vec::new()),
        FlowError::Conflict(_) => (StatusCode::CONFLICT, "conflict", Vec::new()),
        FlowError::Unavailable(e) => {
            tracing::warn!(error = %e, "flow store unavailable; write refused");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Vec::new())
        }
    };
    let mut body = serde_json::json!({"error": code, "message": error.to_string()});
    if !fields.is_empty() {
        body["fields"] = serde_json::json!(fields);
    }
    (status, Json(body)).into_response()
}

fn bad_json(message: String) -> Response {
    error_response(FlowError::Invalid(vec![FieldError {
        field: String::new(),
        message,
    }]))
}

async fn create(State(flows): State<Flows>, body: Bytes) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return bad_json(format!("the body is not JSON: {e}")),
    };
    let flow = match Flow::from_json(value) {
        Ok(flow) => flow,
        Err(fields) => return error_response(FlowError::Invalid(fields)),
    };
    let id = flow.id.clone();
    match flows.create(flow).await {
        Ok(created) => {
            let status = if created.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let location = format!("/v1/flows/{}", encode(&id));
            (
                status,
                [(header::LOCATION, location)],
                Json(serde_json::json!({"id": id, "created": created.created})),
            )
                .into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn fetch(State(flows): State<Flows>, Path(id): Path<String>) -> Response {
    match flows.get(&id).await {
        Ok(flow) => Json(flow).into_response(),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    actor: Option<String>,
    purpose: Option<String>,
    patient: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

async fn list(
    State(flows): State<Flows>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(e) => return bad_json(format!("bad query: {}", e.body_text())),
    };
    let filter = Filter {
        actor: query.actor,
        purpose: query.purpose,
        patient: query.patient,
    };
    match flows
        .list(&filter, query.page_size, query.page_token.as_deref())
        .await
    {
        Ok(page) => Json(page).into_response(),
        Err(e) => error_response(e),
    }
}

async fn revoke(State(flows): State<Flows>, Path(id): Path<String>) -> Response {
    match flows.revoke(&id).await {
        Ok(flow) => Json(flow).into_response(),
        Err(e) => error_response(e),
    }
}

/// A JSON array, or one JSON document per line (NDJSON, as `export` writes).
async fn import(State(flows): State<Flows>, headers: HeaderMap, body: Bytes) -> Response {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    let values: Vec<serde_json::Value> = if ndjson {
        let mut values = Vec::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(value) => values.push(value),
                Err(e) => return bad_json(format!("line {} is not JSON: {e}", i + 1)),
            }
            if values.len() > MAX_IMPORT {
                break;
            }
        }
        values
    } else {
        match serde_json::from_slice(&body) {
            Ok(values) => values,
            Err(e) => {
                return bad_json(format!(
                    "the body is not a JSON array of flows (send NDJSON as application/x-ndjson): {e}"
                ));
            }
        }
    };
    let mut parsed = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        match Flow::from_json(value) {
            Ok(flow) => parsed.push(flow),
            Err(fields) => errors.extend(fields.into_iter().map(|e| e.at(i))),
        }
    }
    if !errors.is_empty() {
        return error_response(FlowError::Invalid(errors));
    }
    match flows.import(parsed).await {
        Ok(imported) => Json(imported).into_response(),
        Err(e) => error_response(e),
    }
}

/// Every flow, revoked ones included, one JSON document per line: what `import` takes.
async fn export(State(flows): State<Flows>) -> Response {
    use futures_util::StreamExt;
    let stream = flows.export().map(|page| {
        let mut chunk = Vec::new();
        for flow in &page? {
            if serde_json::to_writer(&mut chunk, flow).is_ok() {
                chunk.push(b'\n');
            }
        }
        Ok::<_, FlowError>(Bytes::from(chunk))
    });
    // The status is sent already: a failing page ends the body with an error, which cuts
    // the response short so the client cannot take a partial export for a whole one.
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Everything but RFC 3986 unreserved characters, which stay as they are so a
/// `Location` reads like the id (`/v1/flows/transfer-1`, not `transfer%2D1`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}
