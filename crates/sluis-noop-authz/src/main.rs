//! `sluis-noop-authz`: a no-op Envoy ext_authz gRPC server.
//!
//! It implements `envoy.service.auth.v3.Authorization/Check` and allows every
//! request: gRPC status OK, `CheckResponse.status.code = 0` and an empty
//! `OkHttpResponse` (no header mutations). It does no parsing beyond what
//! tonic/prost must do to decode the request, so it measures the cost of the
//! ext_authz round trip itself (Envoy ↔ gRPC ↔ tonic) — the baseline the load
//! scripts (`scripts/load.sh`) compare Sluis against.
//!
//! Usage: `sluis-noop-authz [LISTEN_ADDR]` (default `127.0.0.1:9292`).

use std::net::SocketAddr;

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, OkHttpResponse,
};
use tonic::{Request, Response, Status};

const DEFAULT_ADDR: &str = "127.0.0.1:9292";

#[derive(Debug, Default)]
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr_arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    if addr_arg == "-h" || addr_arg == "--help" {
        println!("usage: sluis-noop-authz [LISTEN_ADDR]   (default {DEFAULT_ADDR})");
        return Ok(());
    }
    let addr: SocketAddr = addr_arg
        .parse()
        .map_err(|e| format!("invalid listen address {addr_arg:?}: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        eprintln!("sluis-noop-authz: listening on {local} (gRPC, h2c)");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));

        // Stop cleanly on Ctrl-C / SIGTERM so load scripts can tear us down.
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {},
                            _ = term.recv() => {},
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };

        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(NoopAuthz))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
