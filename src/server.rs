//! `sluis serve`: builds the engine from a config and runs the listeners until shutdown.
//!
//! [`run`] takes bound listeners and a shutdown future, so tests start a real server on
//! port 0 and stop it when they like.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use futures_util::FutureExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

use crate::admin::{AdminAuth, AdminOptions};
use crate::doors::envoy::{EnvoyDoor, EnvoyService};
use crate::doors::ext_proc::ExtProcDoor;
use crate::reload::Reloader;
use sluis_config::{Config, ListenerLimits};
use sluis_core::audit::DecisionLog;
use sluis_core::engine::Engine;
use sluis_store::{Flows, Store};

/// Opens the flow store, if one is configured, and starts keeping the engine's index
/// current from it.
async fn start_flows(config: &Config, engine: &Arc<Engine>) -> Result<Option<Flows>, String> {
    let Some(store_config) = &config.store else {
        let reads_flows = engine.policies().policies.iter().any(|p| p.reads_flows());
        if reads_flows {
            tracing::warn!("policies read flows but no `store` is configured: they see none");
        }
        return Ok(None);
    };
    let store = Arc::new(
        Store::connect(store_config, &config.base_dir)
            .await
            .map_err(|e| format!("flow store: {e}"))?,
    );
    let index = engine.flows();
    tokio::spawn(
        store
            .clone()
            .sync(index.clone(), store_config.poll_interval),
    );
    tracing::info!(store = %store.location, "flow store opened");
    Ok(Some(Flows::new(store, index)))
}

fn admin_auth(config: &Config) -> Result<AdminAuth, String> {
    if config.admin.allow_anonymous {
        tracing::warn!("admin.allow_anonymous: the flows API accepts anyone; for development only");
        return Ok(AdminAuth::Anonymous);
    }
    match &config.admin.token {
        Some(secret) => {
            let token = secret
                .resolve(&config.base_dir)
                .map_err(|e| format!("admin.token: {e}"))?;
            if token.len() < 16 {
                return Err("admin.token: use at least 16 characters".into());
            }
            Ok(AdminAuth::token(&token))
        }
        None => {
            if config.store.is_some() {
                tracing::warn!("no `admin.token`: the flows API refuses every call");
            }
            Ok(AdminAuth::Closed)
        }
    }
}

/// The listeners a server answers on, already bound (tests bind port 0).
pub struct Bound {
    pub grpc: TcpListener,
    pub admin: TcpListener,
    /// The HTTP front doors ([`crate::doors::http`]), when configured.
    pub http: Option<TcpListener>,
}

impl Bound {
    /// Binds the addresses of `listeners`.
    pub async fn bind(listeners: &sluis_config::Listeners) -> Result<Bound, String> {
        let bind = |address: std::net::SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address}: {e}"))
        };
        Ok(Bound {
            grpc: bind(listeners.grpc).await?,
            admin: bind(listeners.admin).await?,
            http: match listeners.http {
                Some(address) => Some(bind(address).await?),
                None => None,
            },
        })
    }
}

/// Runs the listeners until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    config: Config,
    listeners: Bound,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let Bound { grpc, admin, http } = listeners;
    let tls = crate::tls::ListenerTls::load(&config)?;
    // One registry for this server: the engine, the authenticator and the listeners count
    // in it, and the admin listener serves it.
    let metrics = Arc::new(sluis_core::metrics::Metrics::new());
    let mut engine = config
        .build_engine(metrics.clone())
        .map_err(|e| e.join("\n"))?
        .with_trace_context(Arc::new(crate::telemetry::W3cTraceContext));
    if let Some(log) = &config.decision_log {
        engine = engine.with_decision_log(DecisionLog::start(log, &config.base_dir)?);
    }
    if let Some(candidate) = &config.candidate {
        engine = engine.with_candidate(candidate.queue);
    }
    let engine = Arc::new(engine);
    for warning in crate::reload::load_warnings(&config, &engine.policies()) {
        tracing::warn!("{warning}");
    }
    let replay = &config.dpop.replay_cache;
    if let Some(url) = &replay.redis_url {
        // Redis need not be up: the cache connects in the background, and until it does
        // DPoP-bound requests fail closed while everything else is decided as usual.
        let cache = sluis_store::RedisReplay::connect(url, &replay.prefix, metrics.clone())
            .await
            .map_err(|e| format!("dpop replay cache: {e}"))?;
        engine.authenticator().use_replay_cache(cache);
    }
    engine.authenticator().start_refreshers();
    let admin_options = AdminOptions {
        explain: config.admin.explain,
        flows: start_flows(&config, &engine).await?,
        auth: admin_auth(&config)?,
    };
    let doors = crate::doors::http::router(engine.clone(), &config)?;
    let limits = config.listeners.limits.clone();
    let max_body = config.request_body.max_bytes;
    let ext_proc_body = config.ext_proc.max_body_bytes;
    let reloader = Arc::new(Reloader::new(config, engine.clone()));
    // A candidate set that does not load is reported and counted, and Sluis serves
    // without one until a reload fixes it: it never stands in the enforced set's way.
    let _ = reloader.reload_candidate();
    reloader.clone().spawn(Duration::from_millis(200))?;

    tracing::info!(
        policies = engine.policies().policies.len(),
        version = %engine.policies().version,
        "sluis serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tls.spawn_watches(&stop_rx);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EnvoyService>().await;
    let door = EnvoyService::new(
        EnvoyDoor::new(engine.clone(), max_body),
        crate::doors::envoy::max_message_bytes(max_body),
    );
    health
        .set_serving::<ExternalProcessorServer<ExtProcDoor>>()
        .await;
    let ext_proc = ExternalProcessorServer::new(ExtProcDoor::new(engine.clone(), ext_proc_body))
        .max_decoding_message_size(crate::doors::ext_proc::max_message_bytes(ext_proc_body));
    let mut grpc_stop = stop_rx.clone();
    let grpc_router = tonic::transport::Server::builder()
        // A gateway keeps its connection for long: dead peers are found by HTTP/2 pings
        // and TCP keep-alive, and no Check or connection holds more than its share.
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .tcp_keepalive(Some(limits.grpc_tcp_keepalive))
        .timeout(limits.grpc_request_timeout)
        .add_service(health_service)
        .add_service(door)
        .add_service(ext_proc);
    let grpc_signal = async move {
        let _ = grpc_stop.wait_for(|stop| *stop).await;
    };
    let grpc_server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &tls.grpc {
        // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold ~2.5% of Check
        // answers for 40 ms (measured: p99 46 ms instead of 18 ms).
        None => Box::pin(grpc_router.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            grpc_signal,
        )),
        // tonic's own TLS cannot swap its certificate: the handshakes are ours.
        Some(grpc_tls) => Box::pin(grpc_router.serve_with_incoming_shutdown(
            crate::tls::grpc_incoming(
                grpc,
                grpc_tls.clone(),
                limits.header_read_timeout,
                limits.grpc_tcp_keepalive,
                limits.max_connections,
                stop_rx.clone(),
            ),
            grpc_signal,
        )),
    };

    // Kept to flush the last lines after the listeners have drained.
    let log = engine.decision_log().cloned();
    let flushing = engine.clone();
    let admin_server = serve_http(
        "admin",
        admin,
        tls.admin.clone(),
        crate::admin::router(engine, reloader, admin_options),
        limits.clone(),
        stop_rx.clone(),
        metrics.clone(),
    );
    let http_metrics = metrics;

    let http_server = async move {
        let Some(http) = http else {
            return Ok(());
        };
        serve_http("http", http, tls.http, doors, limits, stop_rx, http_metrics).await
    };

    let (grpc_result, admin_result, http_result) =
        tokio::join!(grpc_server, admin_server, http_server);
    // Decisions still waiting for the candidate set carry their log records.
    flushing.flush_candidate().await;
    drop(flushing);
    if let Some(log) = log {
        log.flush().await;
    }
    grpc_result.map_err(|e| format!("grpc listener failed: {e}"))?;
    admin_result.map_err(|e| format!("admin listener failed: {e}"))?;
    http_result.map_err(|e| format!("http listener failed: {e}"))?;
    Ok(())
}

/// Serves `router` on `listener` until `stop`, then waits for open connections to finish.
///
/// Not `axum::serve`: it has no header-read timeout, so a client sending a request one
/// byte at a time, or none, kept its connection (and a file descriptor) for ever; 1,000
/// such clients could starve the process. Here every connection has `limits`: headers
/// within `header_read_timeout` (which also closes idle HTTP/1 keep-alive connections),
/// the whole request within `request_timeout`, HTTP/2 pings, and at most
/// `max_connections` open: one more is accepted and closed at once.
#[allow(clippy::too_many_arguments)] // reason: one listener's whole setting, used twice
async fn serve_http(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::TlsListener>>,
    router: axum::Router,
    limits: ListenerLimits,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<sluis_core::metrics::Metrics>,
) -> Result<(), std::io::Error> {
    let router = router.layer(TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // pause rather than spin, and keep serving those already open.
                tracing::warn!(listener = name, "cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connection_refused(name);
            drop(stream);
            continue;
        };
        // Small answers go out at once (see the gRPC listener's note on Nagle).
        let _ = stream.set_nodelay(true);
        let open = metrics.connection_opened(name);
        // The peer, for doors that answer only some (`axum::extract::ConnectInfo`).
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection_builder = builder.clone();
        let watcher = graceful.watcher();
        let header_read_timeout = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let connection = match tls {
                None => version_known_in_time(&stream, header_read_timeout)
                    .await
                    .then(|| {
                        connection_builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned()
                    })
                    .map(|c| watcher.watch(c).boxed()),
                Some(tls) => match tls.accept(stream, header_read_timeout).await {
                    None => None,
                    Some(stream) => crate::tls::version_known_in_time(stream, header_read_timeout)
                        .await
                        .map(|stream| {
                            let c = connection_builder
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned();
                            watcher.watch(c).boxed()
                        }),
                },
            };
            if let Some(connection) = connection {
                // An error here is the client's (a timeout, a reset): nothing to report.
                let _ = connection.await;
            }
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Whether the client sent enough for hyper to tell HTTP/1 from HTTP/2 within `within`.
/// hyper's header-read timeout only starts once it has chosen, so a client that sends
/// nothing, or stops inside the HTTP/2 preface, would otherwise hold its connection.
async fn version_known_in_time(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let known = async {
        let mut buffer = [0u8; PREFACE.len()];
        loop {
            match stream.peek(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buffer.get(..n) != PREFACE.get(..n) => return true,
                // A part of the preface: peek would return at once with the same bytes.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(within, known).await.unwrap_or(false)
}
