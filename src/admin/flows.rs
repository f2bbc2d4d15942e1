//! The flows API over HTTP/JSON on the admin listener (`/v1/flows`). It translates
//! requests to [`sluis_store::Flows`] calls and errors to statuses:
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
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use sluis_core::flows::{FieldError, FieldErrors, Flow, MAX_IMPORT_ERRORS};
use sluis_store::service::MAX_IMPORT;
use sluis_store::{Filter, FlowError, Flows};

/// Bodies of single-flow requests, at most.
const MAX_BODY: usize = 1024 * 1024;
/// Bodies of imports, at most: enforced while reading.
const MAX_IMPORT_BODY: usize = 128 * 1024 * 1024;
/// One flow of an import as JSON, at most: a flow at every field limit is well under.
const MAX_FLOW_BYTES: usize = 1024 * 1024;

pub fn router(flows: Flows) -> Router {
    Router::new()
        .route("/v1/flows", post(create).get(list))
        .route("/v1/flows/export", get(export))
        // The import reads its body as a stream, with its own limits.
        .route("/v1/flows/import", post(import))
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

/// A JSON array, or one JSON document per line (NDJSON, as `export` writes), parsed as
/// it arrives: memory follows the flows read (at most [`MAX_IMPORT`], each at most
/// [`MAX_FLOW_BYTES`] as JSON), not the body. The flow past the limit is refused without
/// parsing further. All or nothing: flows are written only after the whole body parsed
/// and validated, in one transaction.
async fn import(State(flows): State<Flows>, headers: HeaderMap, body: Body) -> Response {
    use futures_util::StreamExt;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    // serde_json reads from `std::io::Read`: the parser runs on a blocking thread and
    // takes the body's chunks from a short channel, so a slow parser slows the reading
    // instead of piling chunks up.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let parser = tokio::task::spawn_blocking(move || parse_import(Chunks::new(receiver), ndjson));
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let mut parsing = true;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return bad_json(format!("reading the body failed: {e}")),
        };
        read += chunk.len();
        if read > MAX_IMPORT_BODY {
            return too_large();
        }
        // Once the parser has stopped (a refusal), the rest is read and dropped, so the
        // client gets the answer instead of a reset connection.
        if parsing && sender.send(chunk).await.is_err() {
            parsing = false;
        }
    }
    drop(sender);
    let parsed = match parser.await {
        Ok(parsed) => parsed,
        Err(e) => return bad_json(format!("parsing the import failed: {e}")),
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return bad_json(message),
    };
    if !parsed.errors.is_empty() {
        return error_response(FlowError::Invalid(parsed.errors.into_vec()));
    }
    match flows.import(parsed.flows).await {
        Ok(imported) => Json(imported).into_response(),
        Err(e) => error_response(e),
    }
}

fn too_large() -> Response {
    let message = format!(
        "the import body is larger than {} MiB; split it",
        MAX_IMPORT_BODY / (1024 * 1024)
    );
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(serde_json::json!({"error": "too_large", "message": message})),
    )
        .into_response()
}

/// What an import body held: the flows that are valid, and every bad field of the rest.
struct Parsed {
    flows: Vec<Flow>,
    errors: FieldErrors,
}

impl Default for Parsed {
    fn default() -> Parsed {
        Parsed {
            flows: Vec::new(),
            errors: FieldErrors::new(MAX_IMPORT_ERRORS),
        }
    }
}

impl Parsed {
    /// Takes the `index`th flow of the body. `Err` refuses the body.
    fn take(&mut self, index: usize, value: serde_json::Value) -> Result<(), String> {
        if index >= MAX_IMPORT {
            return Err(too_many());
        }
        match Flow::from_json(value) {
            Ok(flow) => self.flows.push(flow),
            Err(fields) => self.errors.add_flow(index, fields),
        }
        Ok(())
    }
}

fn too_many() -> String {
    format!("more than {MAX_IMPORT} flows in one import; split it")
}

fn flow_too_large(index: usize) -> String {
    format!(
        "flow [{index}] is larger than {} KiB as JSON",
        MAX_FLOW_BYTES / 1024
    )
}

/// Parses an import body from `chunks`: `Err` with the message that refuses it.
fn parse_import(chunks: Chunks, ndjson: bool) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    if ndjson {
        let mut chunks = chunks;
        let mut line = Vec::new();
        let mut index = 0;
        for number in 1.. {
            match next_line(&mut chunks, &mut line, MAX_FLOW_BYTES) {
                Ok(Line::End) => break,
                Ok(Line::TooLong) => return Err(flow_too_large(index)),
                Ok(Line::Read) => {}
                Err(e) => return Err(format!("reading the body failed: {e}")),
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value = serde_json::from_slice(&line)
                .map_err(|e| format!("line {number} is not JSON: {e}"))?;
            parsed.take(index, value)?;
            index += 1;
        }
        return Ok(parsed);
    }
    let meter = chunks.meter.clone();
    let mut deserializer = serde_json::Deserializer::from_reader(chunks);
    let visitor = ImportVisitor {
        parsed: &mut parsed,
        meter: &meter,
        refusal: None,
    };
    let mut refusal = None;
    let result =
        serde::Deserializer::deserialize_seq(&mut deserializer, RefusalOut(visitor, &mut refusal));
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    result.and_then(|()| deserializer.end()).map_err(|e| {
        format!("the body is not a JSON array of flows (send NDJSON as application/x-ndjson): {e}")
    })?;
    Ok(parsed)
}

/// Carries a refusal out of the visitor, which serde only lets end with its own error.
struct RefusalOut<'a, 'p>(ImportVisitor<'a, 'p>, &'a mut Option<String>);

impl<'de> serde::de::Visitor<'de> for RefusalOut<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of flows")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let RefusalOut(mut visitor, out) = self;
        let result = visitor.elements(seq);
        *out = visitor.refusal.take();
        result
    }
}

struct ImportVisitor<'a, 'p> {
    parsed: &'p mut Parsed,
    meter: &'a Meter,
    refusal: Option<String>,
}

impl ImportVisitor<'_, '_> {
    fn elements<'de, A: serde::de::SeqAccess<'de>>(&mut self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        for index in 0.. {
            self.meter.allow(MAX_FLOW_BYTES);
            let value = match seq.next_element::<serde_json::Value>() {
                Ok(Some(value)) => value,
                Ok(None) => return Ok(()),
                Err(e) if self.meter.exceeded() => {
                    self.refusal = Some(flow_too_large(index));
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if let Err(refusal) = self.parsed.take(index, value) {
                self.refusal = Some(refusal);
                return Err(A::Error::custom("refused"));
            }
        }
        Ok(())
    }
}

/// Bytes read from the body, and how far reading may go before the current flow is too
/// large: checked on every read, so a huge flow fails as it arrives.
#[derive(Default)]
struct Meter {
    read: std::sync::atomic::AtomicUsize,
    limit: std::sync::atomic::AtomicUsize,
}

impl Meter {
    fn allow(&self, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.limit
            .store(self.read.load(Relaxed).saturating_add(bytes), Relaxed);
    }

    fn exceeded(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.read.load(Relaxed) > self.limit.load(Relaxed)
    }
}

/// The body's chunks as a blocking reader.
struct Chunks {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
    meter: std::sync::Arc<Meter>,
}

impl Chunks {
    fn new(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Chunks {
        let meter = Meter::default();
        meter.allow(usize::MAX);
        Chunks {
            receiver,
            chunk: Bytes::new(),
            meter: std::sync::Arc::new(meter),
        }
    }
}

impl std::io::BufRead for Chunks {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunk.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => break,
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.chunk.len());
        self.chunk = self.chunk.slice(amount..);
        self.meter
            .read
            .fetch_add(amount, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::io::Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        if self.meter.exceeded() {
            return Err(std::io::Error::other("the flow is too large"));
        }
        let available = self.fill_buf()?;
        let amount = available.len().min(out.len());
        out[..amount].copy_from_slice(&available[..amount]);
        self.consume(amount);
        Ok(amount)
    }
}

enum Line {
    Read,
    TooLong,
    End,
}

/// The next line of `reader` into `line` (without the newline), refused past `max` bytes.
fn next_line(
    reader: &mut impl std::io::BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Read
            });
        }
        let (taken, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(if done { taken + 1 } else { taken });
        if line.len() > max {
            return Ok(Line::TooLong);
        }
        if done {
            return Ok(Line::Read);
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// `body` as the parser sees it, in chunks of `size` bytes.
    fn parse(body: &[u8], size: usize, ndjson: bool) -> Result<Parsed, String> {
        let chunks: Vec<Bytes> = body.chunks(size).map(Bytes::copy_from_slice).collect();
        let (sender, receiver) = tokio::sync::mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            sender.try_send(chunk).unwrap();
        }
        drop(sender);
        parse_import(Chunks::new(receiver), ndjson)
    }

    fn flow(id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id,
            "purpose": "eOverdracht",
            "custodian": "did:web:sender.example",
            "actor": "did:web:receiver.example",
            "resources": [{"path": "Patient/1", "operations": ["read"]}],
        })
    }

    #[test]
    fn flows_split_across_chunks_parse_with_every_bad_field_named() {
        let body = serde_json::json!([flow("a"), {"id": "b", "actor": 1}, flow("c")]).to_string();
        for size in [1, 7, body.len()] {
            let parsed = parse(body.as_bytes(), size, false).unwrap();
            assert_eq!(parsed.flows.len(), 2);
            let errors = parsed.errors.into_vec();
            // Every bad field of the second flow, not only the first.
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(
                fields,
                ["[1].actor", "[1].purpose", "[1].resources"],
                "{errors:?}"
            );
        }
        let ndjson = format!("{}\n\n{}\n", flow("a"), flow("b"));
        let parsed = parse(ndjson.as_bytes(), 5, true).unwrap();
        assert_eq!(parsed.flows.len(), 2);
    }

    #[test]
    fn malformed_bodies_keep_their_messages() {
        let error = parse(b"[{\"id\": ", 3, false).err().unwrap();
        assert!(
            error.starts_with("the body is not a JSON array of flows"),
            "{error}"
        );
        let error = parse(b"{}", 3, false).err().unwrap();
        assert!(error.starts_with("the body is not a JSON array"), "{error}");
        let ndjson = format!("{}\n\n{{nope\n", flow("a"));
        let error = parse(ndjson.as_bytes(), 4, true).err().unwrap();
        assert!(error.starts_with("line 3 is not JSON"), "{error}");
    }

    #[test]
    fn the_flow_past_the_limit_is_refused_before_it_is_parsed() {
        let mut body = String::from("[");
        for i in 0..MAX_IMPORT {
            body.push_str(&flow(&format!("f{i}")).to_string());
            body.push(',');
        }
        // Not even JSON after the flow past the limit: the refusal comes before it is read.
        body.push_str(&flow("one-too-many").to_string());
        body.push_str(", this is never parsed");
        let error = parse(body.as_bytes(), 64 * 1024, false).err().unwrap();
        assert_eq!(error, "more than 100000 flows in one import; split it");
    }

    #[test]
    fn one_flow_over_a_mebibyte_is_refused_as_it_arrives() {
        let huge = format!(
            "[{{\"id\": \"a\", \"actor\": \"{}\"}}]",
            "x".repeat(MAX_FLOW_BYTES)
        );
        let error = parse(huge.as_bytes(), 4096, false).err().unwrap();
        assert_eq!(error, "flow [0] is larger than 1024 KiB as JSON");
        let huge = format!(
            "{}\n{{\"id\": \"{}\"}}\n",
            flow("a"),
            "x".repeat(MAX_FLOW_BYTES)
        );
        let error = parse(huge.as_bytes(), 4096, true).err().unwrap();
        assert_eq!(error, "flow [1] is larger than 1024 KiB as JSON");
    }
}
