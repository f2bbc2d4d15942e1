//! One ext_proc stream's messages translated: what Envoy sends becomes [`ResponseParts`]
//! judged by [`Engine::judge_response`], and its [`ResponseVerdict`] the reply. Kept apart
//! from the gRPC service and naming nothing of the `sluis` crate, so the fuzz target
//! `ext_proc` runs exactly this file on any sequence of messages.

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse, body_mutation,
    processing_request::Request as Message, processing_response::Response as Reply,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use tonic::Status;

use sluis_core::decision::Deny;
use sluis_core::engine::Engine;
use sluis_core::response::{ResponseParts, ResponseVerdict};

/// The dynamic metadata namespace Envoy files ext_authz's `dynamic_metadata` under.
pub const GRANT_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// The key of the sealed grant in it.
pub const GRANT_KEY: &str = sluis_core::response::grant::GRANT_KEY;

/// The attribute (`response_attributes` in the filter config) saying who answered:
/// `via_upstream` for the upstream, anything else for Envoy itself.
pub const CODE_DETAILS: &str = "response.code_details";
pub const ATTRIBUTES_NAMESPACE: &str = "envoy.filters.http.ext_proc";

/// What one stream (one HTTP exchange) has seen so far.
#[derive(Default)]
pub struct Exchange {
    pub grant: Option<String>,
    /// Envoy's `response.code_details`, when it sent it.
    pub code_details: Option<String>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Answers one message of the stream: an error or an `ImmediateResponse` ends it.
pub async fn handle(
    engine: &Engine,
    max_body: usize,
    exchange: &mut Exchange,
    message: ProcessingRequest,
) -> Result<ProcessingResponse, Status> {
    if exchange.grant.is_none() {
        exchange.grant = grant(&message);
    }
    if exchange.code_details.is_none() {
        exchange.code_details = code_details(&message);
    }
    let reply = match message.request {
        // Not judged here (the example config skips them): let them through unchanged.
        Some(Message::RequestHeaders(_)) => Reply::RequestHeaders(HeadersResponse::default()),
        Some(Message::RequestBody(_)) => Reply::RequestBody(BodyResponse::default()),
        Some(Message::RequestTrailers(_)) => Reply::RequestTrailers(TrailersResponse::default()),
        Some(Message::ResponseHeaders(headers)) => {
            let end_of_stream = headers.end_of_stream;
            read_headers(exchange, headers)?;
            if end_of_stream {
                // No body follows (204, 304, HEAD): judged now.
                return Ok(answer(judge(engine, exchange).await, Phase::Headers));
            }
            Reply::ResponseHeaders(HeadersResponse::default())
        }
        Some(Message::ResponseBody(body)) => {
            if exchange.body.len().saturating_add(body.body.len()) > max_body {
                return Err(Status::resource_exhausted(format!(
                    "the answer body is larger than {max_body} bytes"
                )));
            }
            if exchange.body.is_empty() {
                // The whole body in one message (BUFFERED): taken, not copied.
                exchange.body = body.body;
            } else {
                exchange.body.extend_from_slice(&body.body);
            }
            if !body.end_of_stream {
                // Only with a body mode other than BUFFERED: we judge whole bodies only.
                return Err(Status::failed_precondition(
                    "response_body_mode must be BUFFERED",
                ));
            }
            return Ok(answer(judge(engine, exchange).await, Phase::Body));
        }
        Some(Message::ResponseTrailers(_)) => Reply::ResponseTrailers(TrailersResponse::default()),
        None => return Err(Status::invalid_argument("empty processing request")),
    };
    Ok(ProcessingResponse {
        response: Some(reply),
        ..Default::default()
    })
}

/// The sealed grant in the forwarded ext_authz metadata, if any.
pub fn grant(message: &ProcessingRequest) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let fields = &message
        .metadata_context
        .as_ref()?
        .filter_metadata
        .get(GRANT_NAMESPACE)?
        .fields;
    match fields.get(GRANT_KEY)?.kind.as_ref()? {
        Kind::StringValue(sealed) => Some(sealed.clone()),
        _ => None,
    }
}

/// `response.code_details` from the request's attributes, if Envoy sent it.
pub fn code_details(message: &ProcessingRequest) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match message
        .attributes
        .get(ATTRIBUTES_NAMESPACE)?
        .fields
        .get(CODE_DETAILS)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(details) => Some(details.clone()),
        _ => None,
    }
}

/// At most this many answer headers are read; more is an error.
pub const MAX_HEADERS: usize = 200;

pub fn read_headers(exchange: &mut Exchange, headers: HttpHeaders) -> Result<(), Status> {
    let list = headers.headers.map(|h| h.headers).unwrap_or_default();
    if list.len() > MAX_HEADERS {
        return Err(Status::resource_exhausted("too many answer headers"));
    }
    for header in list {
        // Taken from the message, not copied: Envoy sends the value as UTF-8 bytes and the
        // name in lower case, so neither needs a new string.
        let value = if header.raw_value.is_empty() {
            header.value
        } else {
            String::from_utf8(header.raw_value)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        };
        let mut name = header.key;
        name.make_ascii_lowercase();
        if name == ":status" {
            exchange.status = value
                .trim()
                .parse()
                .map_err(|_| Status::invalid_argument("the answer has no valid :status"))?;
        } else if !name.starts_with(':') {
            exchange.headers.push((name, value));
        }
    }
    Ok(())
}

pub async fn judge(engine: &Engine, exchange: &Exchange) -> ResponseVerdict {
    engine
        .judge_response(
            exchange.grant.as_deref(),
            &ResponseParts {
                status: exchange.status,
                headers: &exchange.headers,
                body: &exchange.body,
                // Without the attribute, the answer is taken to be the upstream's: judged.
                from_upstream: exchange
                    .code_details
                    .as_deref()
                    .is_none_or(|details| details == "via_upstream"),
            },
        )
        .await
        .verdict
}

/// Which message the verdict answers.
#[derive(Clone, Copy)]
pub enum Phase {
    Headers,
    Body,
}

pub fn answer(verdict: ResponseVerdict, phase: Phase) -> ProcessingResponse {
    let reply = match verdict {
        ResponseVerdict::Deny(deny) => Reply::ImmediateResponse(immediate(deny)),
        ResponseVerdict::Pass { remove_headers } => common(
            phase,
            CommonResponse {
                header_mutation: mutation(Vec::new(), &remove_headers),
                ..Default::default()
            },
        ),
        ResponseVerdict::Filter {
            body,
            mut set_headers,
            remove_headers,
            ..
        } => {
            // The new length, not none: a client (and Envoy's HTTP/1 codec) then need not
            // fall back to chunked encoding.
            set_headers.push(("content-length".into(), body.len().to_string()));
            let remove: Vec<&str> = remove_headers
                .into_iter()
                .filter(|h| *h != "content-length")
                .collect();
            common(
                phase,
                CommonResponse {
                    header_mutation: mutation(set_headers, &remove),
                    body_mutation: Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(body)),
                    }),
                    ..Default::default()
                },
            )
        }
    };
    ProcessingResponse {
        response: Some(reply),
        ..Default::default()
    }
}

pub fn common(phase: Phase, response: CommonResponse) -> Reply {
    match phase {
        Phase::Headers => Reply::ResponseHeaders(HeadersResponse {
            response: Some(response),
        }),
        Phase::Body => Reply::ResponseBody(BodyResponse {
            response: Some(response),
        }),
    }
}

pub fn header(name: String, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name,
            raw_value: value.into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn mutation(set: Vec<(String, String)>, remove: &[&str]) -> Option<HeaderMutation> {
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    Some(HeaderMutation {
        set_headers: set.into_iter().map(|(n, v)| header(n, v)).collect(),
        remove_headers: remove.iter().map(|h| h.to_string()).collect(),
    })
}

pub fn immediate(deny: Deny) -> ImmediateResponse {
    ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(deny.status),
        }),
        headers: mutation(deny.headers, &[]),
        body: deny.body.into_bytes(),
        details: "sluis_response_denied".into(),
        ..Default::default()
    }
}
