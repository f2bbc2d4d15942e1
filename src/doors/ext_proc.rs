//! Envoy's external processing gRPC API (`envoy.service.ext_proc.v3.ExternalProcessor`):
//! the door through which upstream answers are judged by policies' response rules.
//!
//! Translation only: a stream's response headers and (buffered) body become
//! [`ResponseParts`](sluis_core::response::ResponseParts), the grant Envoy carries over
//! from the ext_authz filter's dynamic metadata is handed to [`Engine::judge_response`]
//! unopened, and the [`ResponseVerdict`](sluis_core::response::ResponseVerdict) becomes a
//! `BodyResponse` (continue, or the filtered body with its headers fixed) or an
//! `ImmediateResponse` (a denial).
//!
//! Failing closed: anything the door cannot handle ends the stream with a gRPC error,
//! which Envoy (with `failure_mode_allow: false`) answers with a 500. The stream is never
//! closed cleanly before the answer is judged, since Envoy then proceeds without us.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::{
    ProcessingRequest, ProcessingResponse, external_processor_server::ExternalProcessor,
    processing_response::Response as Reply,
};
use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use sluis_core::engine::Engine;

/// The translation of the stream's messages, in a file of its own that names nothing of
/// this crate: the fuzz target `ext_proc` includes it as it is.
mod exchange;

pub use exchange::{CODE_DETAILS, Exchange, GRANT_KEY, GRANT_NAMESPACE, handle};

/// The gRPC service Envoy's `ext_proc` filter calls.
pub struct ExtProcDoor {
    engine: Arc<Engine>,
    max_body: usize,
}

impl ExtProcDoor {
    pub fn new(engine: Arc<Engine>, max_body: usize) -> ExtProcDoor {
        ExtProcDoor { engine, max_body }
    }
}

/// The largest message accepted: the body plus room for headers and metadata.
pub fn max_message_bytes(max_body: usize) -> usize {
    max_body.saturating_add(64 * 1024)
}

type Replies = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcDoor {
    type ProcessStream = Replies;

    /// Each reply is made when tonic asks for it, on the stream's own task: no task of
    /// our own and no channel between it and the replies (a spawn, a channel and two
    /// wake-ups per answer judged, for a strictly one-question-one-answer exchange).
    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let stream = StreamState {
            engine: self.engine.clone(),
            max_body: self.max_body,
            inbound: request.into_inner(),
            exchange: Exchange::default(),
            ended: false,
        };
        let replies = futures_util::stream::unfold(stream, |mut stream| async move {
            let reply = stream.next_reply().await?;
            Some((reply, stream))
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// One ext_proc stream being answered.
struct StreamState {
    engine: Arc<Engine>,
    max_body: usize,
    inbound: Streaming<ProcessingRequest>,
    exchange: Exchange,
    /// An error or an `ImmediateResponse` was sent: the stream ends there.
    ended: bool,
}

impl StreamState {
    /// The reply to the next message; `None` once the stream is over.
    async fn next_reply(&mut self) -> Option<Result<ProcessingResponse, Status>> {
        if self.ended {
            return None;
        }
        let message = match self.inbound.message().await {
            Ok(Some(message)) => message,
            // Envoy is done with the stream, or it broke: nothing left to answer.
            Ok(None) | Err(_) => return None,
        };
        let reply = handle(&self.engine, self.max_body, &mut self.exchange, message).await;
        self.ended = matches!(
            &reply,
            Err(_)
                | Ok(ProcessingResponse {
                    response: Some(Reply::ImmediateResponse(_)),
                    ..
                })
        );
        Some(reply)
    }
}

#[cfg(test)]
mod tests;
