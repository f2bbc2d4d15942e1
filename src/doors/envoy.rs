//! Envoy's external authorization gRPC API (`envoy.service.auth.v3.Authorization/Check`).
//!
//! Translation only: `CheckRequest` → [`AccessRequest`](sluis_core::request::AccessRequest),
//! [`Decision`](sluis_core::decision::Decision) → `CheckResponse`.
//!
//! Request bodies (Envoy `with_request_body`) are bounded twice: a whole `CheckRequest`
//! may be at most [`max_message_bytes`] (tonic refuses larger ones with
//! `RESOURCE_EXHAUSTED`, which Envoy treats as an error: `status_on_error`, closed), and a
//! body over `request_body.max_bytes` is answered 413 without a decision.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use sluis_core::engine::Engine;

/// `CheckRequest` → `AccessRequest` and `Decision` → `CheckResponse`, in a file of its own
/// that names nothing of this crate: the fuzz target `envoy_check` includes it as it is.
mod translate;

pub use translate::{access_request, check_response};
use translate::{body_len, too_large};

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

#[tonic::async_trait]
impl Authorization for EnvoyDoor {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let check = request.into_inner();
        if body_len(&check) > self.max_body {
            tracing::info!(
                max = self.max_body,
                "refused a check with a request body over the limit"
            );
            return Ok(Response::new(too_large(self.max_body)));
        }
        let access = access_request(check);
        match self.engine.decide(&access).await {
            Ok(decision) => Ok(Response::new(check_response(decision))),
            // UNAVAILABLE, not a CheckResponse and not UNKNOWN: Envoy treats a failed call
            // as an error and applies the filter's `failure_mode_allow` (and
            // `status_on_error`), so the operator's choice decides what happens while we
            // cannot, instead of an answer we would have to make up. With
            // `failure_mode_allow: false` (our example config) that is a deny.
            Err(unavailable) => Err(Status::unavailable(unavailable.to_string())),
        }
    }
}
