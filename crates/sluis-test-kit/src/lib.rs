//! What Sluis's integration tests (`tests/it/`) and benchmarks (`benches/`) share:
//! the repository's paths, tokens signed with the fixture and example keys, test configs,
//! a real Sluis on port 0 asked over gRPC like Envoy does, `eventually`, and (in the
//! modules) gateways, a Mitz stand-in behind mTLS, a Nuts node and a data holder's FHIR server, child processes, a private Redis, the
//! negative corpus and the flow store's admin API.
//!
//! Test code: a helper that cannot do its job panics with what went wrong, which fails
//! the test that called it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test helper that cannot do its job fails the test that called it"
)]

pub mod corpus;
pub mod dpop;
pub mod ext_proc;
pub mod flows;
pub mod gateway;
pub mod mitz;
pub mod nuts;
pub mod process;
pub mod redis_server;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The repository's root: the nearest folder above this crate holding `Cargo.lock`
/// (the workspace's), so `examples/`, `policy/` and `tests/fixtures/` are found wherever
/// the crate sits in the workspace.
pub fn root() -> &'static Path {
    static ROOT: LazyLock<PathBuf> = LazyLock::new(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .find(|dir| dir.join("Cargo.lock").is_file())
            .expect("the workspace root (a folder with Cargo.lock) above the test kit")
            .to_path_buf()
    });
    &ROOT
}

/// `path` under the repository's root, e.g. `examples/config.yaml`.
pub fn repo_path(path: &str) -> PathBuf {
    root().join(path)
}

/// `path` under `tests/fixtures`.
pub fn fixture(path: &str) -> PathBuf {
    root().join("tests/fixtures").join(path)
}

/// Seconds since the epoch, as tokens count time.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A private key that signs tokens, read once (benchmarks sign thousands with one key).
pub struct SigningKey {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl SigningKey {
    /// The PEM key at `path` (under the repository's root) for `alg`, naming `kid` in the
    /// tokens it signs.
    pub fn from_pem(path: &str, alg: Algorithm, kid: Option<&str>) -> SigningKey {
        let pem =
            std::fs::read(repo_path(path)).unwrap_or_else(|e| panic!("signing key `{path}`: {e}"));
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap_or_else(|e| panic!("signing key `{path}`: {e}"));
        SigningKey {
            key,
            alg,
            kid: kid.map(str::to_owned),
        }
    }

    /// A fixture key of `tests/fixtures/keys`: `rsa`, `rsa-other`, `ec`, `ed25519`.
    pub fn fixture(name: &str, alg: Algorithm, kid: Option<&str>) -> SigningKey {
        SigningKey::from_pem(&format!("tests/fixtures/keys/{name}.pem"), alg, kid)
    }

    /// The example Nuts node's key (`examples/keys/dev-rsa.pem`, kid `dev-1`), which the
    /// example configs trust for `https://nuts.example.org`.
    pub fn example() -> SigningKey {
        SigningKey::from_pem("examples/keys/dev-rsa.pem", Algorithm::RS256, Some("dev-1"))
    }

    /// A JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// A free loopback port for a child process (Envoy, NGINX, Caddy, Redis, `sluis serve`),
/// which cannot be handed a bound listener; a server in this process binds port 0 and
/// keeps the listener instead.
///
/// A port bound to 0 and released is a race: the kernel hands the same number to the next
/// port-0 bind or outgoing connection, often another test's, before the child binds it.
/// So these ports come from below the ephemeral range (32768 and up on Linux, 49152 on
/// others), where no port-0 bind or outgoing connection lands, never the same one twice in
/// this process (all integration tests share it), spread by process id over parallel test
/// runs, and checked free by binding it.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

/// [`free_port`] on 127.0.0.1: also an address nothing listens on, for an unreachable
/// provider.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls until `check` holds, every 100 ms for at most 10 s (file events, reloads and
/// queues are asynchronous); whether it did.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "https://api.test";

/// Claims of a valid token for the test issuer.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "client_id": "client-1",
        "scope": "read write",
        "iat": now() - 10,
        "exp": now() + 600,
    })
}

/// Signs `claims` with a fixture key: `rsa`, `rsa-other`, `ec`, `ed25519`.
pub fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    SigningKey::fixture(key, alg, kid).sign(claims)
}

/// A valid RS256 token with these claims.
pub fn token(claims: &Value) -> String {
    sign("rsa", Algorithm::RS256, Some("rsa-1"), claims)
}

/// The test config: one issuer with the fixture JWKS, policies in `dir/policies`.
pub fn config_yaml(grpc: &str, admin: &str) -> String {
    format!(
        r#"
listeners:
  grpc: {grpc}
  admin: {admin}
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks: {{ file: {jwks} }}
policies: [policies]
"#,
        jwks = fixture("keys/jwks.json").display()
    )
}

/// A policy for the test issuer: `/api/**` needs scope `read`; GET allowed; `x-user`
/// set from `sub`; `/api/admin/**` denied by a deny rule.
pub const POLICY: &str = r#"
policies:
  - id: api
    match:
      paths: ["/api/**"]
    issuers: [test]
    scopes: [read]
    rules:
      - id: no-admin
        deny: request.path.startsWith("/api/admin")
        message: admin is off limits
      - id: get
        allow: request.method == "GET"
    response:
      set_headers:
        x-user: token.sub
        x-client: token.client_id
"#;

/// A temp dir holding `sluis.yaml` and `policies/api.yaml`.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(config: &str, policies: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sluis.yaml"), config).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, text) in policies {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        Setup { dir }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluis.yaml")
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        // Write then rename, as editors and kubelet do, so a reader never sees half a file.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("policies").join(name)).unwrap();
    }
}

/// A Sluis server running in this process on ephemeral ports.
pub struct Server {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTP front doors.
    pub http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Server {
    pub async fn start(config_path: &Path) -> Server {
        let config = sluis_config::Config::load(config_path).unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let listeners = sluis::server::Bound {
            grpc,
            admin,
            http: Some(http),
        };
        let task = tokio::spawn(sluis::server::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        let server = Server {
            grpc: grpc_addr,
            admin: admin_addr,
            http: http_addr,
            stop: Some(stop),
            task,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(response) = reqwest::get(format!("http://{}/readyz", self.admin)).await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sluis did not become ready");
    }

    pub async fn check(&self, request: Req) -> Answer {
        let mut client = AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        let response = client
            .check(request.into_check())
            .await
            .unwrap()
            .into_inner();
        Answer::from(response)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// A request as Envoy would describe it.
#[derive(Clone, Default)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub context: HashMap<String, String>,
    /// The request body, as Envoy's `with_request_body` sends it (`raw_body`).
    pub body: Vec<u8>,
    /// The client certificate, PEM, as Envoy's `include_peer_certificate` sends it.
    pub certificate: Option<String>,
}

impl Req {
    pub fn get(path: &str) -> Req {
        Req {
            method: "GET".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    pub fn method(mut self, method: &str) -> Req {
        self.method = method.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn body(mut self, body: &[u8]) -> Req {
        self.body = body.to_vec();
        self
    }

    pub fn certificate(mut self, pem: &str) -> Req {
        self.certificate = Some(pem.into());
        self
    }

    pub fn bearer(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn into_check(self) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                context_extensions: self.context,
                source: self.certificate.map(|pem| attribute_context::Peer {
                    // URL-encoded, as Envoy sends it.
                    certificate: pem.bytes().map(|b| format!("%{b:02X}")).collect(),
                    ..Default::default()
                }),
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        method: self.method,
                        path: self.path,
                        host: "api.test".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/1.1".into(),
                        headers: self.headers,
                        raw_body: self.body,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

/// The parts of a CheckResponse tests look at.
#[derive(Debug, Default)]
pub struct Answer {
    pub grpc_code: i32,
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub headers_to_remove: Vec<String>,
    pub body: String,
    pub query_set: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn body_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

impl From<CheckResponse> for Answer {
    fn from(response: CheckResponse) -> Answer {
        let mut answer = Answer {
            grpc_code: response.status.map(|s| s.code).unwrap_or(-1),
            ..Default::default()
        };
        match response.http_response {
            Some(check_response::HttpResponse::OkResponse(ok)) => {
                answer.status = 200;
                for h in ok.headers {
                    let h = h.header.unwrap();
                    answer.headers.insert(h.key, h.value);
                }
                answer.headers_to_remove = ok.headers_to_remove;
                answer.query_set = ok
                    .query_parameters_to_set
                    .into_iter()
                    .map(|q| (q.key, q.value))
                    .collect();
            }
            Some(check_response::HttpResponse::DeniedResponse(denied)) => {
                answer.status = denied.status.map(|s| s.code as u16).unwrap_or(0);
                for h in denied.headers {
                    let h = h.header.unwrap();
                    answer.headers.insert(h.key, h.value);
                }
                answer.body = denied.body;
            }
            _ => {}
        }
        answer
    }
}

/// Runs the `sluis` binary at `binary` (an integration test's
/// `env!("CARGO_BIN_EXE_sluis")`) with `args`; returns exit code, stdout and stderr.
pub fn run(binary: &str, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(binary)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value of the Prometheus sample line starting with `prefix` (name and labels), if
/// any.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
