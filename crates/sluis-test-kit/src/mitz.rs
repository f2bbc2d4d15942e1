//! A loopback Mitz for tests: an HTTPS server on `127.0.0.1:0` that talks only to clients
//! presenting a certificate from its CA (mTLS), reads each closed question with
//! `sluis_core::sources::mitz::parse_request`, and answers a configurable decision, a SOAP
//! fault, garbage, or any of those slowly. It counts the questions it answered and keeps
//! the last one, so tests can check both the calls and what was asked.
//!
//! Certificates are made at start (rcgen): a CA that signs the server's certificate (for
//! `localhost` and `127.0.0.1`) and a client certificate, plus a second CA with its own
//! client certificate that the server must refuse. [`MitzCerts`] writes them as PEM files
//! in a temporary folder, for configs that name files.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sluis_core::sources::mitz::{MitzDecision, MitzRequest, parse_request};

/// The path Mitz answers closed questions on (the knooppunt's `consentCheckPath`).
pub const MITZ_PATH: &str = "/geslotenautorisatievraag/xacml3";

/// What the stand-in answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MitzReply {
    /// A SOAP 1.2 envelope with one XACML Result holding this decision.
    Decision(MitzDecision),
    /// A SOAP 1.2 `Receiver` fault, HTTP 500 (the SOAP 1.2 HTTP binding's status).
    Fault,
    /// HTTP 200 with an HTML body: not XML Mitz would send.
    Garbage,
    /// This HTTP status with an empty body.
    Status(u16),
}

impl From<MitzDecision> for MitzReply {
    fn from(decision: MitzDecision) -> Self {
        Self::Decision(decision)
    }
}

/// The certificates of a stand-in, as PEM text and as files in a temporary folder.
pub struct MitzCerts {
    /// The folder holding the files; removed when this is dropped.
    pub dir: tempfile::TempDir,
    /// The CA that signed the server's and the good client's certificates (`ca.pem`).
    pub ca: PathBuf,
    /// The client certificate the server accepts (`client.pem`).
    pub client_cert: PathBuf,
    /// Its private key, PKCS#8 (`client.key`).
    pub client_key: PathBuf,
    /// A client certificate from another CA, which the server refuses (`other-client.pem`).
    pub other_client_cert: PathBuf,
    /// Its private key (`other-client.key`).
    pub other_client_key: PathBuf,
    /// The other CA (`other-ca.pem`): a server certificate Sluis must not trust.
    pub other_ca: PathBuf,
}

impl MitzCerts {
    fn read(path: &PathBuf) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        Self::read(&self.ca)
    }

    /// The good client's certificate and key in one PEM, as `reqwest::Identity::from_pem`
    /// takes them.
    pub fn client_identity_pem(&self) -> Vec<u8> {
        let mut pem = Self::read(&self.client_cert);
        pem.push(b'\n');
        pem.extend(Self::read(&self.client_key));
        pem
    }

    /// The other CA's client certificate and key in one PEM.
    pub fn other_client_identity_pem(&self) -> Vec<u8> {
        let mut pem = Self::read(&self.other_client_cert);
        pem.push(b'\n');
        pem.extend(Self::read(&self.other_client_key));
        pem
    }
}

struct State {
    reply: Mutex<MitzReply>,
    by_bsn: Mutex<HashMap<String, MitzReply>>,
    delay: Mutex<Duration>,
    calls: AtomicUsize,
    last: Mutex<Option<(String, Option<MitzRequest>)>>,
}

/// A running stand-in. It stops when dropped (its tasks end with the test's runtime).
pub struct MitzStandIn {
    /// Where it listens.
    pub address: SocketAddr,
    /// `https://localhost:{port}/geslotenautorisatievraag/xacml3`.
    pub url: String,
    /// Its certificates, for the client side.
    pub certs: MitzCerts,
    state: Arc<State>,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

fn leaf(
    names: &[&str],
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, *first);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert, key)
}

impl MitzStandIn {
    /// Starts a stand-in answering `Permit` to every valid question, at once.
    pub async fn start() -> Self {
        let (ca_cert, issuer) = ca("Mitz stand-in CA");
        let (other_ca_cert, other_issuer) = ca("Another CA");
        let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], &issuer);
        let (client_cert, client_key) = leaf(&["sluis.example"], &issuer);
        let (other_cert, other_key) = leaf(&["intruder.example"], &other_issuer);

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let certs = MitzCerts {
            ca: write("ca.pem", ca_cert.pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            other_client_cert: write("other-client.pem", other_cert.pem()),
            other_client_key: write("other-client.key", other_key.serialize_pem()),
            other_ca: write("other-ca.pem", other_ca_cert.pem()),
            dir,
        };

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_cert.der().to_vec()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let state = Arc::new(State {
            reply: Mutex::new(MitzReply::Decision(MitzDecision::Permit)),
            by_bsn: Mutex::new(HashMap::new()),
            delay: Mutex::new(Duration::ZERO),
            calls: AtomicUsize::new(0),
            last: Mutex::new(None),
        });
        let app = axum::Router::new()
            .route(MITZ_PATH, axum::routing::post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    // A client without a certificate from the CA fails here: no request
                    // is read, nothing is counted.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            url: format!("https://localhost:{}{MITZ_PATH}", address.port()),
            address,
            certs,
            state,
        }
    }

    /// Answers `reply` to every question from now on (unless its BSN has its own).
    pub fn set_reply(&self, reply: impl Into<MitzReply>) {
        *self.state.reply.lock().unwrap() = reply.into();
    }

    /// Answers `reply` to questions about this BSN.
    pub fn set_reply_for(&self, bsn: &str, reply: impl Into<MitzReply>) {
        self.state
            .by_bsn
            .lock()
            .unwrap()
            .insert(bsn.to_string(), reply.into());
    }

    /// Waits this long before each answer (a slow Mitz).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// How many requests reached the HTTP layer (after a successful mTLS handshake).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The last request's body, as sent.
    pub fn last_body(&self) -> Option<String> {
        self.state
            .last
            .lock()
            .unwrap()
            .as_ref()
            .map(|(b, _)| b.clone())
    }

    /// The last request read as a closed question (`None` if it was not one).
    pub fn last_request(&self) -> Option<MitzRequest> {
        self.state
            .last
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|(_, r)| r.clone())
    }
}

/// A SOAP 1.2 envelope holding one XACML Result with `decision`, as Mitz answers.
pub fn answer_xml(decision: MitzDecision) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">
  <env:Header/>
  <env:Body>
    <Response xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17">
      <Result>
        <Decision>{decision}</Decision>
        <Status><StatusCode Value="urn:oasis:names:tc:xacml:1.0:status:ok"/></Status>
      </Result>
    </Response>
  </env:Body>
</env:Envelope>"#
    )
}

/// A SOAP 1.2 fault with this code (`Sender` or `Receiver`).
pub fn fault_xml(code: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">
  <env:Body>
    <env:Fault>
      <env:Code><env:Value>env:{code}</env:Value></env:Code>
      <env:Reason><env:Text xml:lang="en">the stand-in says no</env:Text></env:Reason>
    </env:Fault>
  </env:Body>
</env:Envelope>"#
    )
}

const SOAP: &str = "application/soap+xml; charset=utf-8";

async fn answer(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    body: String,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let request = parse_request(body.as_bytes()).ok();
    let reply = request.as_ref().map(|r| {
        state
            .by_bsn
            .lock()
            .unwrap()
            .get(&r.question.patient_bsn)
            .cloned()
            .unwrap_or_else(|| state.reply.lock().unwrap().clone())
    });
    *state.last.lock().unwrap() = Some((body, request));
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match reply {
        // Not a closed question: a SOAP Sender fault, 400 (SOAP 1.2 part 2, 7.5.1.2).
        None => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, SOAP)],
            fault_xml("Sender"),
        )
            .into_response(),
        Some(MitzReply::Decision(decision)) => {
            ([(header::CONTENT_TYPE, SOAP)], answer_xml(decision)).into_response()
        }
        Some(MitzReply::Fault) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, SOAP)],
            fault_xml("Receiver"),
        )
            .into_response(),
        Some(MitzReply::Garbage) => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        Some(MitzReply::Status(status)) => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    }
}
