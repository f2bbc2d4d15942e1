//! `sluis-noop-authz`: the leanest Envoy ext_authz gRPC server we can write on Sluis's
//! transport (tonic, the `envoy-types` service), the baseline of the load scripts.
//!
//! It implements `envoy.service.auth.v3.Authorization/Check` and allows every request:
//! gRPC status OK, `CheckResponse.status.code = 0` and an empty `OkHttpResponse`. tonic
//! and prost decode the request, as they must for any server on this transport; nothing
//! else is done per call: the answer is built once (cloning it allocates nothing), no
//! logging, mimalloc as Sluis uses, TCP_NODELAY, and a runtime chosen by instructions per
//! Check (`scripts/grpc-callgrind.sh`, BENCHMARKS.md).
//!
//! On the same port it answers Envoy's ext_proc (`ExternalProcessor/Process`) with
//! "continue, unchanged" to every message: the baseline of Envoy + Sluis's ext_proc door
//! judging answers (`scripts/load.sh`, scenario `ext_proc`).
//!
//! `--skip-decode` answers without decoding the `CheckRequest` at all (a codec that skips
//! the message's bytes): no authorization server can decide like that, but it is the
//! floor of the transport itself, what tonic, h2 and the gRPC framing cost per Check
//! (`scripts/grpc-ratio.sh` runs it as `noop-skip`).
//!
//! `sluis-noop-default` (same package) is the other baseline: what an off-the-shelf
//! tonic server looks like (`#[tokio::main]`, default settings, system allocator).
//!
//! `--answer FILE` answers every Check with the `CheckResponse` in FILE (a gRPC frame as
//! `curl` saves it, or the bare message) instead of the empty OK: with Sluis's own answer
//! it shows what the answer costs the gateway (headers set and removed), apart from what
//! the server costs.
//!
//! Usage: `sluis-noop-authz [--runtime multi|current] [--threads N] [--capture FILE]
//! [--answer FILE] [LISTEN_ADDR]` (default `127.0.0.1:9292`, `multi` with one worker per core).
//! `--capture FILE` writes the first Check's request body as received (the 5-byte gRPC
//! frame prefix and the protobuf bytes, untouched) to FILE, answers it, and exits: how
//! `benches/data/` holds a CheckRequest sent by a real Envoy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    ProcessingRequest, ProcessingResponse,
    external_processor_server::{ExternalProcessor, ExternalProcessorServer},
    processing_request::Request as Message,
    processing_response::Response as Reply,
};
use tonic::{Request, Response, Status};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_ADDR: &str = "127.0.0.1:9292";
const USAGE: &str = "usage: sluis-noop-authz [--runtime multi|current] [--threads N] \
                     [--capture FILE] [--answer FILE] [--sluis-transport] [--skip-decode] [LISTEN_ADDR]   (default 127.0.0.1:9292)";

/// Answers every Check with the same OK, built once.
struct NoopAuthz {
    ok: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for NoopAuthz {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.ok.clone()))
    }
}

/// Envoy's ext_proc on the same port: every message answered "continue, unchanged" in
/// the phase it came in. The baseline of the response-judging load scenario
/// (`scripts/load.sh`, `SCENARIOS=ext_proc`).
struct NoopExtProc;

type Replies =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for NoopExtProc {
    type ProcessStream = Replies;

    async fn process(
        &self,
        request: Request<tonic::Streaming<ProcessingRequest>>,
    ) -> Result<Response<Replies>, Status> {
        use futures_util::StreamExt;
        let replies = request.into_inner().map(|message| {
            let message = message?;
            let response = match message.request {
                Some(Message::RequestHeaders(_)) => Reply::RequestHeaders(Default::default()),
                Some(Message::RequestBody(_)) => Reply::RequestBody(Default::default()),
                Some(Message::RequestTrailers(_)) => Reply::RequestTrailers(Default::default()),
                Some(Message::ResponseHeaders(_)) => Reply::ResponseHeaders(Default::default()),
                Some(Message::ResponseBody(_)) => Reply::ResponseBody(Default::default()),
                Some(Message::ResponseTrailers(_)) => Reply::ResponseTrailers(Default::default()),
                None => return Err(Status::invalid_argument("empty processing request")),
            };
            Ok(ProcessingResponse {
                response: Some(response),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The `CheckResponse` in `file`: a gRPC frame (uncompressed, its 5-byte prefix giving
/// the message's length) or the bare message.
fn answer_from(file: &std::path::Path) -> Result<CheckResponse, String> {
    use prost::Message as _;
    let bytes = std::fs::read(file).map_err(|e| format!("--answer {}: {e}", file.display()))?;
    let message = match bytes.get(..5) {
        Some(&[0, a, b, c, d]) if u32::from_be_bytes([a, b, c, d]) as usize == bytes.len() - 5 => {
            &bytes[5..]
        }
        _ => &bytes[..],
    };
    CheckResponse::decode(message)
        .map_err(|e| format!("--answer {}: not a CheckResponse: {e}", file.display()))
}

fn ok_response() -> CheckResponse {
    let mut response = CheckResponse::with_status(Status::ok(""));
    response.set_http_response(OkHttpResponse::default());
    response
}

struct Options {
    addr: SocketAddr,
    current_thread: bool,
    threads: Option<usize>,
    capture: Option<std::path::PathBuf>,
    answer: Option<std::path::PathBuf>,
    sluis_transport: bool,
    skip_decode: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        addr: DEFAULT_ADDR.parse().map_err(|e| format!("{e}"))?,
        current_thread: false,
        threads: None,
        capture: None,
        answer: None,
        sluis_transport: false,
        skip_decode: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "--runtime" => match args.next().as_deref() {
                Some("multi") => options.current_thread = false,
                Some("current") => options.current_thread = true,
                other => return Err(format!("--runtime: multi or current, not {other:?}")),
            },
            "--threads" => {
                let n = args.next().unwrap_or_default();
                options.threads = Some(n.parse().map_err(|e| format!("--threads {n:?}: {e}"))?);
            }
            "--sluis-transport" => options.sluis_transport = true,
            "--skip-decode" => options.skip_decode = true,
            "--capture" => {
                options.capture = Some(args.next().ok_or("--capture: a file")?.into());
            }
            "--answer" => {
                options.answer = Some(args.next().ok_or("--answer: a file")?.into());
            }
            addr => {
                options.addr = addr
                    .parse()
                    .map_err(|e| format!("invalid listen address {addr:?}: {e}"))?;
            }
        }
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(if message == USAGE { 0 } else { 2 });
        }
    };
    let ok = match &options.answer {
        Some(file) => answer_from(file).unwrap_or_else(|message| {
            eprintln!("{message}");
            std::process::exit(2);
        }),
        None => ok_response(),
    };
    let runtime = if options.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = options.threads {
            builder.worker_threads(threads);
        }
        builder.enable_all().build()?
    };

    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.addr).await?;
        let local = listener.local_addr()?;
        eprintln!("sluis-noop-authz: listening on {local} (gRPC, h2c)");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                _ = terminated() => {},
                _ = stopped => {},
            }
        };
        let mut builder = tonic::transport::Server::builder();
        if options.sluis_transport {
            // `sluis serve`'s gRPC listener settings at their defaults (src/server.rs,
            // `ListenerLimits`): what the transport costs apart from deciding.
            builder = builder
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .max_concurrent_streams(1024)
                .tcp_keepalive(Some(Duration::from_secs(60)))
                .timeout(Duration::from_secs(30));
        }
        match options.capture {
            Some(file) => {
                let capture = capture::CaptureService {
                    file: Arc::new(file),
                    stop: Arc::new(std::sync::Mutex::new(Some(stop))),
                    ok: ok_response(),
                };
                builder
                    .add_service(capture)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
            None if options.skip_decode => {
                builder
                    .add_service(skip::SkipService { ok: ok.clone() })
                    .add_service(ExternalProcessorServer::new(NoopExtProc))
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
            None => {
                builder
                    .add_service(AuthorizationServer::new(NoopAuthz { ok }))
                    .add_service(ExternalProcessorServer::new(NoopExtProc))
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// Ctrl-C or SIGTERM, so the load scripts can tear the server down.
async fn terminated() {
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

/// `--capture`: the Check method with a codec that keeps the request's bytes as sent.
mod capture {
    use super::*;
    use bytes::Buf;
    use tonic::codec::{Codec, DecodeBuf, Decoder};
    use tonic::codegen::{Body, BoxFuture, Bytes, Service, http};

    #[derive(Clone)]
    pub struct CaptureService {
        pub file: Arc<std::path::PathBuf>,
        pub stop: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
        pub ok: CheckResponse,
    }

    impl tonic::server::NamedService for CaptureService {
        const NAME: &'static str = "envoy.service.auth.v3.Authorization";
    }

    struct RawCodec;
    struct RawDecoder;

    impl Decoder for RawDecoder {
        type Item = Bytes;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }

    impl Codec for RawCodec {
        type Encode = CheckResponse;
        type Decode = Bytes;
        type Encoder = <tonic_prost::ProstCodec<CheckResponse, CheckRequest> as Codec>::Encoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> Self::Encoder {
            tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default().encoder()
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    struct Check(CaptureService);

    impl tonic::server::UnaryService<Bytes> for Check {
        type Response = CheckResponse;
        type Future = BoxFuture<Response<CheckResponse>, Status>;
        fn call(&mut self, request: Request<Bytes>) -> Self::Future {
            let service = self.0.clone();
            Box::pin(async move {
                let message = request.into_inner();
                let length = u32::try_from(message.len())
                    .map_err(|_| Status::resource_exhausted("message too large"))?;
                let mut frame = Vec::with_capacity(message.len() + 5);
                frame.push(0);
                frame.extend_from_slice(&length.to_be_bytes());
                frame.extend_from_slice(&message);
                std::fs::write(service.file.as_ref(), &frame)
                    .map_err(|e| Status::internal(format!("cannot write the capture: {e}")))?;
                eprintln!(
                    "sluis-noop-authz: captured {} bytes into {}",
                    frame.len(),
                    service.file.display()
                );
                if let Some(stop) = service.stop.lock().ok().and_then(|mut s| s.take()) {
                    // Stop after this answer has gone out.
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        let _ = stop.send(());
                    });
                }
                Ok(Response::new(service.ok.clone()))
            })
        }
    }

    impl<B> Service<http::Request<B>> for CaptureService
    where
        B: Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            let service = self.clone();
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                Ok(grpc.unary(Check(service), request).await)
            })
        }
    }
}

/// `--skip-decode`: the Check method with a codec that skips the request's bytes.
mod skip {
    use super::*;
    use bytes::Buf;
    use tonic::codec::{Codec, DecodeBuf, Decoder};
    use tonic::codegen::{Body, BoxFuture, Service, http};

    #[derive(Clone)]
    pub struct SkipService {
        pub ok: CheckResponse,
    }

    impl tonic::server::NamedService for SkipService {
        const NAME: &'static str = "envoy.service.auth.v3.Authorization";
    }

    struct SkipCodec;
    struct SkipDecoder;

    impl Decoder for SkipDecoder {
        type Item = ();
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
            src.advance(src.remaining());
            Ok(Some(()))
        }
    }

    impl Codec for SkipCodec {
        type Encode = CheckResponse;
        type Decode = ();
        type Encoder = <tonic_prost::ProstCodec<CheckResponse, CheckRequest> as Codec>::Encoder;
        type Decoder = SkipDecoder;
        fn encoder(&mut self) -> Self::Encoder {
            tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default().encoder()
        }
        fn decoder(&mut self) -> SkipDecoder {
            SkipDecoder
        }
    }

    struct Check(CheckResponse);

    impl tonic::server::UnaryService<()> for Check {
        type Response = CheckResponse;
        type Future = std::future::Ready<Result<Response<CheckResponse>, Status>>;
        fn call(&mut self, _request: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(self.0.clone())))
        }
    }

    impl<B> Service<http::Request<B>> for SkipService
    where
        B: Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            let ok = self.ok.clone();
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(SkipCodec);
                Ok(grpc.unary(Check(ok), request).await)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// `--answer` takes the CheckResponse framed as curl saves a gRPC body, or bare; any
    /// other bytes are refused, never answered as something else.
    #[test]
    fn an_answer_is_read_framed_or_bare() {
        let dir = std::env::temp_dir().join(format!("noop-answer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut answer = ok_response();
        answer.dynamic_metadata = None;
        if let Some(envoy_types::ext_authz::v3::pb::HttpResponse::OkResponse(ok)) =
            &mut answer.http_response
        {
            ok.headers_to_remove.push("authorization".to_owned());
        }
        let bare = answer.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(bare.len() as u32).to_be_bytes());
        framed.extend_from_slice(&bare);
        for (name, bytes) in [("bare", &bare), ("framed", &framed)] {
            let file = dir.join(name);
            std::fs::write(&file, bytes).unwrap();
            assert_eq!(answer_from(&file).unwrap(), answer, "{name}");
        }
        let file = dir.join("garbage");
        std::fs::write(&file, b"\xff\xff\xff").unwrap();
        assert!(answer_from(&file).is_err());
        assert!(answer_from(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
