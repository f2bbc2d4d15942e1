//! The flows API over gRPC (`sluis.flows.v1.FlowService`, `proto/sluis/flows/v1/flows.proto`)
//! on the admin listener, next to the HTTP/JSON API. It only translates: messages to
//! [`Flow`]s and back, [`FlowError`]s to statuses. Checking flows is [`Flows`]'s job
//! ([`Flow::validate`]), as it is for the HTTP door.
//!
//! | error | status |
//! |---|---|
//! | [`FlowError::Invalid`] | `INVALID_ARGUMENT`, the bad fields in the message and as `google.rpc.BadRequest` details (the first 2 KiB of them) |
//! | [`FlowError::NotFound`] | `NOT_FOUND` |
//! | [`FlowError::Conflict`] | `ALREADY_EXISTS` |
//! | [`FlowError::Unavailable`] | `UNAVAILABLE` |
//! | no or a wrong admin token | `UNAUTHENTICATED` |
//! | a message over its limit ([`MAX_MESSAGE`], [`MAX_IMPORT_MESSAGE`]) | `RESOURCE_EXHAUSTED` |

use axum::Router;
use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::admin::AdminAuth;
use sluis_core::flows::{FieldError, FieldErrors, Flow, MAX_IMPORT_ERRORS, Resource};
use sluis_store::service::MAX_IMPORT;
use sluis_store::{Filter, FlowError, Flows};

/// The generated messages, client and server.
// Generated: lints are for the code we write.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("sluis.flows.v1");
    pub use super::ImportFlowsRequest;
}

use pb::flow_service_server::{FlowService, FlowServiceServer};

/// A request message of every call but the imports, at most: as much as the HTTP door
/// takes for a single-flow body.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// A message of `ImportFlows` or `ImportFlowsStream`, at most. 100,000 flows like the
/// README's example (with patient, two resources, validity and attributes) take 30 MB:
/// the largest valid import fits one message with a margin of 1.6. tonic buffers a
/// message whole before decoding it, so this bounds what a message costs before its
/// flows can be counted: at 128 MiB, 99 MB of small flows took the process to 919 MiB
/// before the count refused them (BENCHMARKS.md, "Bounded flows imports").
pub const MAX_IMPORT_MESSAGE: usize = 48 * 1024 * 1024;

/// `sluis.flows.v1.ImportFlowsRequest`, decoded by hand rather than generated: a message
/// may hold far more flows than an import may (a flow can be two bytes on the wire and a
/// few hundred in memory), so the flows are counted first, and a message of more than
/// [`MAX_IMPORT`] is not decoded: [`MAX_IMPORT`] + 1 empty flows stand for it, which is
/// what the count refuses. The fields are those of the generated type, so clients build
/// it the same way.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ImportFlowsRequest {
    /// Field errors name them as `flows[3].id`, ...
    pub flows: Vec<pb::Flow>,
}

impl prost::Message for ImportFlowsRequest {
    fn merge(&mut self, mut buf: impl prost::bytes::Buf) -> Result<(), prost::DecodeError> {
        use prost::bytes::Buf;
        // Zero-copy for the buffer tonic decodes from: a second look costs no memory.
        let mut message = buf.copy_to_bytes(buf.remaining());
        let ctx = prost::encoding::DecodeContext::default();
        let mut counting = message.clone();
        let mut flows = self.flows.len();
        while counting.has_remaining() {
            let (tag, wire_type) = prost::encoding::decode_key(&mut counting)?;
            flows += usize::from(tag == 1);
            prost::encoding::skip_field(wire_type, tag, &mut counting, ctx.clone())?;
        }
        if flows > MAX_IMPORT {
            self.flows = vec![pb::Flow::default(); MAX_IMPORT + 1];
            return Ok(());
        }
        while message.has_remaining() {
            let (tag, wire_type) = prost::encoding::decode_key(&mut message)?;
            self.merge_field(tag, wire_type, &mut message, ctx.clone())?;
        }
        Ok(())
    }

    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        prost::encoding::message::encode_repeated(1, &self.flows, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // `merge` has counted the flows; this keeps the bound when a caller merges field
        // by field (an `ImportFlowsRequest` nested in another message).
        if tag == 1 && self.flows.len() < MAX_IMPORT {
            prost::encoding::message::merge_repeated(wire_type, &mut self.flows, buf, ctx)
        } else {
            if tag == 1 && self.flows.len() == MAX_IMPORT {
                self.flows.push(pb::Flow::default());
            }
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::message::encoded_len_repeated(1, &self.flows)
    }

    fn clear(&mut self) {
        self.flows.clear();
    }
}

/// Bytes of field errors a status lists at most (at least one is listed). Statuses travel
/// in HTTP/2 trailers, with the list twice (message and details), and clients cap trailers
/// (grpc-java at 8 KiB by default): a bad import of 100,000 flows must still arrive as
/// INVALID_ARGUMENT naming the first problems, not as a protocol error.
const MAX_LISTED: usize = 2048;

/// The gRPC service on an axum router, behind the admin token, for merging into the admin
/// listener's router.
///
/// The route is added with `route_service` rather than `tonic::service::Routes`, whose
/// router brings a fallback that would answer unknown HTTP paths of the admin listener
/// with a gRPC `UNIMPLEMENTED` instead of a 404.
///
/// The imports are served by a second instance of the service with a larger message
/// limit: tonic sets one limit per service, and every other call takes one flow or less.
pub fn router(flows: Flows, auth: AdminAuth) -> Router {
    let admin = FlowAdmin { flows };
    let small = FlowServiceServer::new(admin.clone()).max_decoding_message_size(MAX_MESSAGE);
    let imports = FlowServiceServer::new(admin).max_decoding_message_size(MAX_IMPORT_MESSAGE);
    let authorized = |server| InterceptedService::new(server, Authorize { auth: auth.clone() });
    Router::new()
        .route_service(&method_path("ImportFlows"), authorized(imports.clone()))
        .route_service(&method_path("ImportFlowsStream"), authorized(imports))
        .route_service(&path(), authorized(small))
        .layer(axum::middleware::map_response(too_large))
}

/// tonic refuses a message over the limit with `OUT_OF_RANGE` and a message naming
/// neither the call nor what to do. The answer is `RESOURCE_EXHAUSTED`, as gRPC itself
/// answers a message over a limit, naming the limit and, for an import, the stream.
async fn too_large(
    uri: axum::http::Uri,
    response: axum::response::Response,
) -> axum::response::Response {
    let refused = Status::from_header_map(response.headers()).is_some_and(|status| {
        status.code() == Code::OutOfRange
            && status
                .message()
                .contains("decoded message length too large")
    });
    if !refused {
        return response;
    }
    let mib = |bytes: usize| bytes / (1024 * 1024);
    let message = match uri.path().rsplit('/').next() {
        Some("ImportFlows") => format!(
            "the message is larger than {} MiB; send a larger import as a stream of \
             smaller messages with `ImportFlowsStream`",
            mib(MAX_IMPORT_MESSAGE)
        ),
        Some("ImportFlowsStream") => format!(
            "a message of the stream is larger than {} MiB; send fewer flows per message",
            mib(MAX_IMPORT_MESSAGE)
        ),
        _ => format!("the message is larger than {} MiB", mib(MAX_MESSAGE)),
    };
    Status::resource_exhausted(message).into_http()
}

/// Without a store, every call is `UNAVAILABLE` saying so, as the HTTP door answers 503.
pub fn router_without_store() -> Router {
    Router::new().route(
        &path(),
        axum::routing::any(|| async {
            status(
                FlowError::Unavailable(
                    "no flow store is configured (`store` in the config)".into(),
                ),
                "",
            )
            .into_http::<axum::body::Body>()
        }),
    )
}

/// Every method of the service.
fn path() -> String {
    method_path("{*rest}")
}

/// The path of one method of the service.
fn method_path(method: &str) -> String {
    format!("/{}/{method}", FlowServiceServer::<FlowAdmin>::NAME)
}

/// Checks `authorization: Bearer <token>` metadata as the HTTP door checks the header.
/// It sees only the headers: a stranger's call is refused before its message is read.
#[derive(Clone)]
pub struct Authorize {
    auth: AdminAuth,
}

impl tonic::service::Interceptor for Authorize {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.auth.permits(authorization) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(self.auth.refusal()))
        }
    }
}

/// The service: [`Flows`] behind protobuf messages.
#[derive(Clone)]
pub struct FlowAdmin {
    flows: Flows,
}

#[tonic::async_trait]
impl FlowService for FlowAdmin {
    async fn create_flow(
        &self,
        request: Request<pb::CreateFlowRequest>,
    ) -> Result<Response<pb::CreateFlowResponse>, Status> {
        let Some(flow) = request.into_inner().flow else {
            return Err(status(
                FlowError::Invalid(vec![field_error("", "is required")]),
                "flow",
            ));
        };
        let flow = flow_from_pb(flow).map_err(|e| status(FlowError::Invalid(e), "flow"))?;
        let id = flow.id.clone();
        let created = self
            .flows
            .create(flow)
            .await
            .map_err(|e| status(e, "flow"))?;
        Ok(Response::new(pb::CreateFlowResponse {
            id,
            created: created.created,
        }))
    }

    async fn get_flow(
        &self,
        request: Request<pb::GetFlowRequest>,
    ) -> Result<Response<pb::GetFlowResponse>, Status> {
        let flow = self
            .flows
            .get(&request.into_inner().id)
            .await
            .map_err(|e| status(e, ""))?;
        Ok(Response::new(pb::GetFlowResponse {
            flow: Some(flow_to_pb(flow)),
        }))
    }

    async fn list_flows(
        &self,
        request: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        let request = request.into_inner();
        let given = |s: String| (!s.is_empty()).then_some(s);
        let filter = Filter {
            actor: given(request.actor),
            purpose: given(request.purpose),
            patient: given(request.patient),
        };
        // 0 is proto3's "not set": the default size. A negative size becomes 0, which
        // `Flows::list` refuses with the allowed range.
        let page_size =
            (request.page_size != 0).then(|| usize::try_from(request.page_size).unwrap_or(0));
        let page = self
            .flows
            .list(&filter, page_size, given(request.page_token).as_deref())
            .await
            .map_err(|e| status(e, ""))?;
        Ok(Response::new(pb::ListFlowsResponse {
            flows: page.flows.into_iter().map(flow_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn revoke_flow(
        &self,
        request: Request<pb::RevokeFlowRequest>,
    ) -> Result<Response<pb::RevokeFlowResponse>, Status> {
        let flow = self
            .flows
            .revoke(&request.into_inner().id)
            .await
            .map_err(|e| status(e, ""))?;
        Ok(Response::new(pb::RevokeFlowResponse {
            flow: Some(flow_to_pb(flow)),
        }))
    }

    type ExportFlowsStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::Flow, Status>> + Send + 'static>,
    >;

    async fn export_flows(
        &self,
        _request: Request<pb::ExportFlowsRequest>,
    ) -> Result<Response<Self::ExportFlowsStream>, Status> {
        use futures_util::StreamExt;
        let flows = self.flows.export().flat_map(|page| {
            let items: Vec<Result<pb::Flow, Status>> = match page {
                Ok(flows) => flows.into_iter().map(|f| Ok(flow_to_pb(f))).collect(),
                Err(e) => vec![Err(status(e, ""))],
            };
            futures_util::stream::iter(items)
        });
        Ok(Response::new(Box::pin(flows)))
    }

    async fn import_flows(
        &self,
        request: Request<pb::ImportFlowsRequest>,
    ) -> Result<Response<pb::ImportFlowsResponse>, Status> {
        let mut import = Import::default();
        import.take(request.into_inner().flows)?;
        import.commit(&self.flows).await
    }

    async fn import_flows_stream(
        &self,
        request: Request<tonic::Streaming<pb::ImportFlowsRequest>>,
    ) -> Result<Response<pb::ImportFlowsResponse>, Status> {
        let mut messages = request.into_inner();
        let mut import = Import::default();
        while let Some(message) = messages.message().await? {
            import.take(message.flows)?;
        }
        import.commit(&self.flows).await
    }
}

/// The flows of an import as they arrive, one message at a time: converted as they come,
/// so only one message is held as protobuf, and refused as soon as there are too many.
struct Import {
    flows: Vec<Flow>,
    /// Flows taken that could not be converted: only their errors are kept, at most
    /// [`MAX_IMPORT_ERRORS`] of them.
    invalid: usize,
    errors: FieldErrors,
}

impl Default for Import {
    fn default() -> Import {
        Import {
            flows: Vec::new(),
            invalid: 0,
            errors: FieldErrors::new(MAX_IMPORT_ERRORS),
        }
    }
}

impl Import {
    /// Takes the flows of one message, numbered after those taken before.
    fn take(&mut self, messages: Vec<pb::Flow>) -> Result<(), Status> {
        let taken = self.flows.len() + self.invalid;
        if taken + messages.len() > MAX_IMPORT {
            return Err(status(
                FlowError::Invalid(vec![field_error(
                    "",
                    format!("more than {MAX_IMPORT} flows in one import; split it"),
                )]),
                "flows",
            ));
        }
        self.flows.reserve(messages.len());
        for (i, message) in messages.into_iter().enumerate() {
            match flow_from_pb(message) {
                Ok(flow) => self.flows.push(flow),
                Err(e) => {
                    self.invalid += 1;
                    self.errors.add_flow(taken + i, e);
                }
            }
        }
        Ok(())
    }

    /// Writes every flow taken, in one transaction, or none when any is invalid.
    async fn commit(self, flows: &Flows) -> Result<Response<pb::ImportFlowsResponse>, Status> {
        if !self.errors.is_empty() {
            return Err(status(FlowError::Invalid(self.errors.into_vec()), "flows"));
        }
        let imported = flows
            .import(self.flows)
            .await
            .map_err(|e| status(e, "flows"))?;
        Ok(Response::new(pb::ImportFlowsResponse {
            created: imported.created as u64,
            unchanged: imported.unchanged as u64,
        }))
    }
}

/// The status for an error. Field errors are named from the request message, below
/// `prefix` (`flow.id`, `flows[2].resources[0].path`), as `google.rpc.BadRequest` expects.
fn status(error: FlowError, prefix: &str) -> Status {
    match &error {
        FlowError::Invalid(fields) => {
            let mut violations: Vec<FieldViolation> = Vec::new();
            let mut listed = Vec::new();
            let mut size = 0;
            for e in fields {
                let item = format!("{}: {}", field_path(prefix, &e.field), e.message);
                size += item.len();
                if size > MAX_LISTED && !listed.is_empty() {
                    break;
                }
                violations.push(FieldViolation::new(
                    field_path(prefix, &e.field),
                    &e.message,
                ));
                listed.push(item);
            }
            let mut message = format!("{error}: {}", listed.join("; "));
            if fields.len() > listed.len() {
                message.push_str(&format!(
                    "; and {} more ({} in all)",
                    fields.len() - listed.len(),
                    fields.len()
                ));
            }
            Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            )
        }
        FlowError::NotFound(_) => Status::not_found(error.to_string()),
        // ALREADY_EXISTS rather than FAILED_PRECONDITION: a conflict is always a create of
        // an id that is taken (an identical flow is not a conflict but `created: false`),
        // and the more specific code tells a client that no retry or change of state will
        // help, only another id.
        FlowError::Conflict(_) => Status::already_exists(error.to_string()),
        FlowError::Unavailable(e) => {
            tracing::warn!(error = %e, "flow store unavailable; write refused");
            Status::unavailable(error.to_string())
        }
    }
}

/// `field` (as [`FieldError`] names it) within the request field `prefix`.
fn field_path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else if field.is_empty() || field.starts_with('[') {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A message as a [`Flow`], not yet validated ([`Flows`] does that). When a timestamp or
/// attribute cannot be a flow's, the errors name those fields and every other field
/// [`Flow::validate`] finds wrong, so one answer lists every problem.
fn flow_from_pb(message: pb::Flow) -> Result<Flow, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut time = |field: &str, t: Option<prost_types::Timestamp>| {
        let t = t?;
        let time = u32::try_from(t.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .and_then(|n| DateTime::<Utc>::from_timestamp(t.seconds, n));
        if time.is_none() {
            errors.push(field_error(field, "is not a valid timestamp"));
        }
        time
    };
    let valid_from = time("valid_from", message.valid_from);
    let valid_until = time("valid_until", message.valid_until);
    let revoked_at = time("revoked_at", message.revoked_at);
    let attributes = message
        .attributes
        .map(|s| struct_to_json(s, "attributes", &mut errors))
        .unwrap_or_default();
    let flow = Flow {
        id: message.id,
        purpose: message.purpose,
        custodian: message.custodian,
        actor: message.actor,
        patient: message.patient,
        resources: message
            .resources
            .into_iter()
            .map(|r| Resource {
                path: r.path,
                operations: r.operations,
            })
            .collect(),
        scopes: message.scopes,
        valid_from,
        valid_until,
        revoked_at,
        attributes,
    };
    if errors.is_empty() {
        return Ok(flow);
    }
    if let Err(more) = flow.clone().validate() {
        errors.extend(more);
    }
    Err(errors)
}

fn flow_to_pb(flow: Flow) -> pb::Flow {
    let timestamp = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or_default(),
    };
    pb::Flow {
        id: flow.id,
        purpose: flow.purpose,
        custodian: flow.custodian,
        actor: flow.actor,
        patient: flow.patient,
        resources: flow
            .resources
            .into_iter()
            .map(|r| pb::Resource {
                path: r.path,
                operations: r.operations,
            })
            .collect(),
        scopes: flow.scopes,
        valid_from: flow.valid_from.map(timestamp),
        valid_until: flow.valid_until.map(timestamp),
        revoked_at: flow.revoked_at.map(timestamp),
        attributes: (!flow.attributes.is_empty()).then(|| json_to_struct(flow.attributes)),
    }
}

/// Numbers this far from zero, at most, are whole numbers exactly in an `f64`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn struct_to_json(
    s: prost_types::Struct,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(key, value)| {
            let value = value_to_json(value, &format!("{field}.{key}"), errors);
            (key, value)
        })
        .collect()
}

fn value_to_json(
    value: prost_types::Value,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        // A Struct has only doubles. Whole numbers become JSON integers, as they are when
        // the same flow comes as JSON: otherwise creating it over both doors would be a
        // conflict (`1.0` is not `1`), and CEL would see a double where it sees an int.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER => {
            serde_json::Value::from(n as i64)
        }
        Some(Kind::NumberValue(n)) => match serde_json::Number::from_f64(n) {
            Some(n) => serde_json::Value::Number(n),
            None => {
                errors.push(field_error(field, "is not a finite number"));
                serde_json::Value::Null
            }
        },
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]"), errors))
                .collect(),
        ),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s, field, errors)),
    }
}

fn json_to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(key, value)| (key, json_to_value(value)))
            .collect(),
    }
}

fn json_to_value(value: serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        // Integers beyond 2^53 lose precision: a Struct cannot carry them exactly.
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(values) => Kind::ListValue(prost_types::ListValue {
            values: values.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn attributes_survive_the_round_trip_as_json_has_them() {
        let attributes = serde_json::json!({
            "count": 3,
            "ratio": 0.5,
            "nested": {"list": [1, "two", null, true]},
        });
        let serde_json::Value::Object(map) = attributes.clone() else {
            unreachable!()
        };
        let mut errors = Vec::new();
        let back = struct_to_json(json_to_struct(map), "attributes", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(serde_json::Value::Object(back), attributes);
    }

    #[test]
    fn bad_timestamps_and_numbers_are_named_with_the_other_bad_fields() {
        let message = pb::Flow {
            id: "f".into(),
            purpose: "p".into(),
            actor: "a".into(),
            resources: Vec::new(),
            valid_from: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            attributes: Some(prost_types::Struct {
                fields: [(
                    "x".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(f64::NAN)),
                    },
                )]
                .into(),
            }),
            ..Default::default()
        };
        let errors = flow_from_pb(message).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["valid_from", "attributes.x", "resources"]);
    }

    /// The README's example flow, with an id as long as a UUID.
    fn example(i: usize) -> pb::Flow {
        let value = serde_json::json!({
            "id": format!("transfer-{i:036}"),
            "purpose": "eOverdracht",
            "custodian": "did:web:sender.example.org",
            "actor": "did:web:receiver.example.org",
            "patient": "urn:oid:2.16.840.1.113883.2.4.6.3:999999990",
            "resources": [
                {"path": format!("Task/transfer-{i}"), "operations": ["read", "update"]},
                {"path": "/Observation/*", "operations": ["GET"]}
            ],
            "scopes": ["eOverdracht-receiver"],
            "valid_from": "2026-11-22T10:00:00Z",
            "valid_until": "2026-12-22T10:00:00Z",
            "attributes": {"anything": "policies may read"}
        });
        let Ok(flow) = Flow::from_json(value) else {
            unreachable!()
        };
        flow_to_pb(flow)
    }

    #[test]
    fn the_largest_import_of_realistic_flows_fits_one_message_with_room() {
        use prost::Message;
        let import = ImportFlowsRequest {
            flows: (0..MAX_IMPORT).map(example).collect(),
        };
        let size = import.encoded_len();
        println!("{MAX_IMPORT} flows like the README's: {size} bytes");
        assert!(size < MAX_IMPORT_MESSAGE * 2 / 3, "{size}");
    }

    #[test]
    fn flows_past_the_import_limit_are_counted_not_decoded() {
        use prost::Message;
        let mut bytes = Vec::new();
        let flows = (0..MAX_IMPORT + 5).map(example).collect();
        ImportFlowsRequest { flows }.encode(&mut bytes).unwrap();
        let decoded = ImportFlowsRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.flows.len(), MAX_IMPORT + 1);
        assert!(decoded.flows.iter().all(|f| *f == pb::Flow::default()));
        // At the limit, every flow is decoded.
        let mut bytes = Vec::new();
        let flows: Vec<pb::Flow> = (0..MAX_IMPORT).map(example).collect();
        ImportFlowsRequest {
            flows: flows.clone(),
        }
        .encode(&mut bytes)
        .unwrap();
        let decoded = ImportFlowsRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.flows, flows);
    }

    #[test]
    fn fields_are_named_from_the_request() {
        assert_eq!(field_path("flow", "id"), "flow.id");
        assert_eq!(field_path("flow", ""), "flow");
        assert_eq!(field_path("flows", "[2].id"), "flows[2].id");
        assert_eq!(field_path("", "page_size"), "page_size");
    }
}
