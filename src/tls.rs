//! TLS on Sluis's own listeners (`listeners.tls`): rustls with the aws-lc-rs provider,
//! optional client certificates (mTLS), and the files read again when they change.
//!
//! Each listener with TLS has a [`TlsListener`]: the current `rustls::ServerConfig`
//! behind an `ArcSwap`, so a reload swaps it for new connections while open ones keep the
//! one they started with. A reload is a poll of the files' content (not their mtime:
//! Kubernetes swaps a Secret's files by renaming a symlinked directory), every
//! `reload_interval`; one that does not load is logged and the old certificate stays.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use sluis_config::TlsFiles;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

/// Larger certificate, key or CA files are refused: a PEM chain is a few KiB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// ALPN of the gRPC listener: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP listeners: both versions.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// One listener's TLS: what it accepts connections with now.
pub struct TlsListener {
    name: &'static str,
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    current: ArcSwap<ServerConfig>,
    /// SHA-256 over the files as last loaded: a poll that reads the same bytes is no
    /// reload.
    digest: Mutex<[u8; 32]>,
}

impl TlsListener {
    /// Loads the files of listener `name`; an error names the listener, the file and
    /// what is wrong with it.
    pub fn load(
        name: &'static str,
        files: TlsFiles,
        alpn: &'static [&'static [u8]],
    ) -> Result<Arc<TlsListener>, String> {
        let (config, digest) = server_config(name, &files, alpn)?;
        Ok(Arc::new(TlsListener {
            name,
            files,
            alpn,
            current: ArcSwap::from_pointee(config),
            digest: Mutex::new(digest),
        }))
    }

    /// Reads the files again: `Ok(true)` when they changed and were taken, `Ok(false)`
    /// when unchanged, `Err` (and the old configuration stays) when they do not load.
    pub fn reload(&self) -> Result<bool, String> {
        let (config, digest) = server_config(self.name, &self.files, self.alpn)?;
        let mut last = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        if *last == digest {
            return Ok(false);
        }
        self.current.store(Arc::new(config));
        *last = digest;
        Ok(true)
    }

    /// Reloads every `interval` until `stop`.
    pub fn spawn_watch(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            // SIGHUP reloads at once, as it does the policies. Without a signal stream
            // (not Unix, or it cannot be had) the poll alone reloads.
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hung_up = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hung_up = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = ticks.tick() => {}
                    Some(()) = hung_up => {
                        tracing::info!(listener = self.name, "SIGHUP: reloading the TLS files");
                    }
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                let listener = self.clone();
                match tokio::task::spawn_blocking(move || listener.reload()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(listener = self.name, "TLS certificate reloaded")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(
                        listener = self.name,
                        "TLS files not reloaded, the previous certificate stays: {e}"
                    ),
                    Err(e) => tracing::warn!(listener = self.name, "TLS reload failed: {e}"),
                }
            }
        });
    }

    /// The TLS connection of `stream`, or `None` (the connection is closed) when the
    /// client spoke plaintext, did not finish the handshake within `within`, or failed it
    /// (no or a wrong client certificate with mTLS). A plaintext HTTP client gets a 400
    /// saying TLS is required, instead of a reset it cannot explain.
    pub async fn accept(
        &self,
        mut stream: TcpStream,
        within: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let mut first = [0u8; 1];
        match tokio::time::timeout(within, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return None,
        }
        // A TLS connection opens with a handshake record (content type 22); an HTTP
        // request line, or the HTTP/2 preface, with a letter.
        if first[0].is_ascii_alphabetic() {
            let _ = tokio::time::timeout(
                within,
                stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 27\r\nconnection: close\r\n\r\nthis listener requires TLS\n",
                ),
            )
            .await;
            let _ = stream.shutdown().await;
            return None;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        match tokio::time::timeout(within, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(listener = self.name, "TLS handshake failed: {e}");
                None
            }
            Err(_) => None,
        }
    }
}

/// The rustls configuration of `files`, and the digest of their content.
fn server_config(
    name: &str,
    files: &TlsFiles,
    alpn: &[&[u8]],
) -> Result<(ServerConfig, [u8; 32]), String> {
    let read = |what: &str, path: &Path| -> Result<Vec<u8>, String> {
        let fail = |e: String| format!("listeners.tls ({name}): {what} `{}`: {e}", path.display());
        let size = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        std::fs::read(path).map_err(|e| fail(e.to_string()))
    };
    let fail = |what: &str, path: &Path, e: String| {
        format!("listeners.tls ({name}): {what} `{}`: {e}", path.display())
    };
    let certificate = read("certificate", &files.certificate)?;
    let private_key = read("private_key", &files.private_key)?;
    let client_ca = match &files.client_ca {
        Some(path) => Some(read("client_ca", path)?),
        None => None,
    };
    let mut digest = Sha256::new();
    for bytes in [Some(&certificate), Some(&private_key), client_ca.as_ref()] {
        let bytes = bytes.map_or(&[][..], Vec::as_slice);
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    }

    let chain = CertificateDer::pem_slice_iter(&certificate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("certificate", &files.certificate, e.to_string()))?;
    if chain.is_empty() {
        return Err(fail(
            "certificate",
            &files.certificate,
            "no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&private_key)
        .map_err(|e| fail("private_key", &files.private_key, e.to_string()))?;
    // Explicitly aws-lc-rs: another provider is in the dependency tree too, so the
    // process default is not one to rely on.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("listeners.tls ({name}): {e}"))?;
    let builder = match (&files.client_ca, client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&pem) {
                let ca = ca.map_err(|e| fail("client_ca", path, e.to_string()))?;
                roots
                    .add(ca)
                    .map_err(|e| fail("client_ca", path, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(fail("client_ca", path, "no PEM certificate in it".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| fail("client_ca", path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    // Also refuses a key that does not belong to the leaf certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "listeners.tls ({name}): certificate `{}` with private_key `{}`: {e}",
            files.certificate.display(),
            files.private_key.display()
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((config, digest.finalize().into()))
}

/// The TLS listeners `config` asks for, by listener name, each with its watch started
/// when `stop` is given.
pub struct ListenerTls {
    pub grpc: Option<Arc<TlsListener>>,
    pub http: Option<Arc<TlsListener>>,
    pub admin: Option<Arc<TlsListener>>,
    pub reload_interval: Duration,
}

impl ListenerTls {
    /// Loads every listener's TLS files: all problems, one line each.
    pub fn load(config: &sluis_config::Config) -> Result<ListenerTls, String> {
        let Some(tls) = &config.listeners.tls else {
            return Ok(ListenerTls {
                grpc: None,
                http: None,
                admin: None,
                reload_interval: Duration::from_secs(10),
            });
        };
        let mut errors = Vec::new();
        let mut load = |name: &'static str, alpn| {
            let files = tls.for_listener(name, &config.base_dir)?;
            TlsListener::load(name, files, alpn)
                .map_err(|e| errors.push(e))
                .ok()
        };
        let loaded = ListenerTls {
            grpc: load("grpc", ALPN_GRPC),
            http: load("http", ALPN_HTTP),
            admin: load("admin", ALPN_HTTP),
            reload_interval: tls.reload_interval,
        };
        if errors.is_empty() {
            Ok(loaded)
        } else {
            Err(errors.join("\n"))
        }
    }

    pub fn spawn_watches(&self, stop: &watch::Receiver<bool>) {
        for listener in [&self.grpc, &self.http, &self.admin].into_iter().flatten() {
            listener
                .clone()
                .spawn_watch(self.reload_interval, stop.clone());
        }
    }
}

/// A TLS connection as the gRPC server takes it.
pub struct GrpcTlsConnection(pub TlsStream<TcpStream>);

impl tonic::transport::server::Connected for GrpcTlsConnection {
    // The Envoy door reads the client from the CheckRequest, not from the connection.
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for GrpcTlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcTlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The gRPC listener's connections over TLS: accepted and handshaken off the server's
/// task (a slow handshake holds up no other), at most `within` each, with TCP keep-alive
/// (`keepalive`) as tonic sets on the plaintext listener. At most `max_pending`
/// handshakes are in progress: a new connection beyond them ends the oldest unfinished
/// one, so clients that connect and never send a ClientHello hold bounded memory and
/// cannot keep a new client out.
pub fn grpc_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<TlsListener>,
    within: Duration,
    keepalive: Duration,
    max_pending: usize,
    mut stop: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<GrpcTlsConnection, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let max_pending = max_pending.max(1);
    tokio::spawn(async move {
        let mut pending: std::collections::VecDeque<tokio::task::AbortHandle> =
            std::collections::VecDeque::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(listener = "grpc", "cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // See the plaintext gRPC listener's note on Nagle.
            let _ = stream.set_nodelay(true);
            let _ = socket2::SockRef::from(&stream)
                .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(keepalive));
            if pending.len() >= max_pending {
                pending.retain(|handshake| !handshake.is_finished());
                if pending.len() >= max_pending
                    && let Some(oldest) = pending.pop_front()
                {
                    tracing::debug!(
                        listener = "grpc",
                        "{max_pending} TLS handshakes in progress: the oldest is ended"
                    );
                    oldest.abort();
                }
            }
            let (tx, tls) = (tx.clone(), tls.clone());
            let handshake = tokio::spawn(async move {
                if let Some(connection) = tls.accept(stream, within).await {
                    let _ = tx.send(Ok(GrpcTlsConnection(connection))).await;
                }
            });
            pending.push_back(handshake.abort_handle());
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|connection| (connection, rx))
    })
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

/// Reads from `stream` until hyper could tell HTTP/1 from HTTP/2, within `within`: the
/// TLS form of the plaintext listener's peek (a TLS stream cannot be peeked), for the
/// same reason: hyper's header-read timeout starts only once it has chosen.
pub async fn version_known_in_time<S: AsyncRead + Unpin>(
    mut stream: S,
    within: Duration,
) -> Option<Prefixed<S>> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut prefix = Vec::with_capacity(PREFACE.len());
    let read = async {
        let mut buffer = [0u8; PREFACE.len()];
        loop {
            let want = PREFACE.len() - prefix.len();
            let n = stream.read(buffer.get_mut(..want)?).await.ok()?;
            if n == 0 {
                return None;
            }
            prefix.extend_from_slice(buffer.get(..n)?);
            if prefix.len() == PREFACE.len()
                || PREFACE.get(..prefix.len()) != Some(prefix.as_slice())
            {
                return Some(());
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()?;
    Some(Prefixed {
        prefix,
        at: 0,
        inner: stream,
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(rest) = self.prefix.get(self.at..).filter(|rest| !rest.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
