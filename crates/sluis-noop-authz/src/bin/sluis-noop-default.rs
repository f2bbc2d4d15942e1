//! `sluis-noop-default`: a no-op Envoy ext_authz gRPC server as anyone would write it
//! with tonic out of the box: `#[tokio::main]`, `Server::builder()` with its defaults, the
//! system allocator, a fresh answer per call. The stretch baseline of issue #18: Sluis
//! deciding a policy for no more gateway cost than this server deciding nothing. The
//! lean baseline is `sluis-noop-authz`.
//!
//! Usage: `sluis-noop-default [LISTEN_ADDR]` (default `127.0.0.1:9292`).

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, OkHttpResponse,
};
use tonic::{Request, Response, Status};

struct NoopAuthz;

#[tonic::async_trait]
impl Authorization for NoopAuthz {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let mut response = CheckResponse::with_status(Status::ok(""));
        response.set_http_response(OkHttpResponse::default());
        Ok(Response::new(response))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9292".to_owned())
        .parse()?;
    eprintln!("sluis-noop-default: listening on {addr} (gRPC, h2c)");
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(NoopAuthz))
        .serve(addr)
        .await?;
    Ok(())
}
