//! Envoy's external authorization gRPC API (`envoy.service.auth.v3.Authorization/Check`).
//!
//! Translation only: `CheckRequest` → [`AccessRequest`],
//! [`Decision`](sluis_core::decision::Decision) → `CheckResponse`.
//!
//! The service Sluis serves is [`EnvoyService`]: the generated service's routing and
//! gRPC handling (tonic's [`Grpc`](tonic::server::Grpc)), with a codec whose decoder reads
//! the `CheckRequest`'s bytes straight into the `AccessRequest` ([`read_check`]) instead of
//! building prost's whole message first. [`access_request`] and [`body_len`] are the same
//! translation from prost's decoded message: the reference the reader is held to (the
//! property tests and the `envoy_check` fuzz entry), and what tests that build a
//! `CheckRequest` message use.
//!
//! Request bodies (Envoy `with_request_body`) are bounded twice: a whole `CheckRequest`
//! may be at most [`max_message_bytes`] (tonic refuses larger ones with
//! `RESOURCE_EXHAUSTED`, which Envoy treats as an error: `status_on_error`, closed), and a
//! body over `request_body.max_bytes` is answered 413 without a decision.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::CheckResponse;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Request, Response, Status};

use sluis_core::engine::Engine;
use sluis_core::request::AccessRequest;

/// `CheckRequest` → `AccessRequest` and `Decision` → `CheckResponse`, in a file of its own
/// that names nothing of this crate: the fuzz target `envoy_check` includes it as it is.
mod translate;

/// The `CheckRequest`'s bytes → `AccessRequest`, in a file of its own for the same reason.
mod read;

pub use read::{NotACheck, ReadCheck, read_check};
use translate::too_large;
pub use translate::{access_request, body_len, check_response};

/// The gRPC service Envoy's `ext_authz` filter calls.
pub struct EnvoyDoor {
    engine: Arc<Engine>,
    /// Largest request body decided on (`request_body.max_bytes`).
    max_body: usize,
}

impl EnvoyDoor {
    pub fn new(engine: Arc<Engine>, max_body: usize) -> EnvoyDoor {
        EnvoyDoor { engine, max_body }
    }
}

/// The largest `CheckRequest` accepted: room for the headers and attributes (Envoy
/// allows 60 KiB of request headers by default, at most 8 MiB) besides the body.
pub fn max_message_bytes(max_body: usize) -> usize {
    max_body.saturating_add(1024 * 1024)
}

impl EnvoyDoor {
    /// Decides a translated Check; `body_len` is the size of the body Envoy sent.
    async fn decide(
        &self,
        access: AccessRequest,
        body_len: usize,
    ) -> Result<CheckResponse, Status> {
        if body_len > self.max_body {
            tracing::info!(
                max = self.max_body,
                "refused a check with a request body over the limit"
            );
            return Ok(too_large(self.max_body));
        }
        match self.engine.decide(&access).await {
            Ok(decision) => Ok(check_response(decision)),
            // UNAVAILABLE, not a CheckResponse and not UNKNOWN: Envoy treats a failed call
            // as an error and applies the filter's `failure_mode_allow` (and
            // `status_on_error`), so the operator's choice decides what happens while we
            // cannot, instead of an answer we would have to make up. With
            // `failure_mode_allow: false` (our example config) that is a deny.
            Err(unavailable) => Err(Status::unavailable(unavailable.to_string())),
        }
    }
}

/// `envoy.service.auth.v3.Authorization` as Sluis serves it: the generated
/// `AuthorizationServer`'s routing and gRPC handling, with [`CheckCodec`].
#[derive(Clone)]
pub struct EnvoyService {
    door: Arc<EnvoyDoor>,
    max_message: usize,
}

impl EnvoyService {
    /// The door; a `CheckRequest` over `max_message` bytes is refused by tonic
    /// (`RESOURCE_EXHAUSTED`), see [`max_message_bytes`].
    pub fn new(door: EnvoyDoor, max_message: usize) -> EnvoyService {
        EnvoyService {
            door: Arc::new(door),
            max_message,
        }
    }
}

impl tonic::server::NamedService for EnvoyService {
    const NAME: &'static str =
        envoy_types::pb::envoy::service::auth::v3::authorization_server::SERVICE_NAME;
}

/// The one method's path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for EnvoyService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            // As the generated service: any other method of this service is UNIMPLEMENTED.
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let this = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(CheckCodec)
                .apply_max_message_size_config(Some(this.max_message), None);
            Ok(grpc.unary(CheckMethod(this.door), request).await)
        })
    }
}

struct CheckMethod(Arc<EnvoyDoor>);

impl tonic::server::UnaryService<ReadCheck> for CheckMethod {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<ReadCheck>) -> Self::Future {
        let door = self.0.clone();
        Box::pin(async move {
            let ReadCheck { access, body_len } = request.into_inner();
            door.decide(access, body_len).await.map(Response::new)
        })
    }
}

/// prost encodes the answer; the question is read by [`read_check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = ReadCheck;
    type Encoder = tonic_prost::ProstEncoder<CheckResponse>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder
    }
}

/// Reads a `CheckRequest` message with [`read_check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckDecoder;

impl Decoder for CheckDecoder {
    type Item = ReadCheck;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ReadCheck>, Status> {
        use prost::bytes::Buf as _;
        let len = buf.remaining();
        // tonic gathers the message in one buffer, so it is one chunk; were it ever not,
        // it is copied into one.
        let read = if buf.chunk().len() == len {
            read_check(buf.chunk())
        } else {
            read_check(&buf.copy_to_bytes(len))
        };
        buf.advance(buf.remaining());
        // As prost's decoder: a message that cannot be read is INTERNAL.
        read.map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}
