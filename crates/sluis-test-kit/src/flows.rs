//! Helpers for the flow store tests: a config with the eOverdracht receiver policy and a
//! flow store, an admin API client, tokens of the example Nuts node, and decisions over
//! gRPC against any Sluis (in-process or a child process).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

use crate::{Answer, Req, Setup, SigningKey, now};

/// The admin bearer token the test configs require.
pub const ADMIN_TOKEN: &str = "flows-test-admin-token-0123456789";

/// The receiving organisation of the eOverdracht tests, as its tokens name it.
pub const RECEIVER: &str = "did:web:receiver.example.org";

/// The policy under test, as shipped.
pub const POLICY: &str = include_str!("../../../policy/eoverdracht-receiver.yaml");

/// A config for the example Nuts node issuer, the policies in `policies/`, the given
/// `store:` and `admin:` sections (YAML flow mappings) and free listeners.
pub fn config(store: &str, admin: &str) -> String {
    config_on("127.0.0.1:0", "127.0.0.1:0", store, admin)
}

/// [`config`] with fixed listener addresses, for `sluis serve` as a child process.
pub fn config_on(grpc: &str, admin_addr: &str, store: &str, admin: &str) -> String {
    let jwks = crate::root().join("examples/keys/dev-jwks.json");
    format!(
        r#"
listeners:
  grpc: {grpc}
  admin: {admin_addr}
issuers:
  - name: nuts-node
    issuer: https://nuts.example.org
    audiences: [https://fhir.example.org]
    jwks: {{ file: {jwks} }}
policies: [policies]
store: {store}
admin: {admin}
"#,
        jwks = jwks.display()
    )
}

/// `admin:` requiring [`ADMIN_TOKEN`] (from the file [`setup`] writes).
pub const TOKEN_ADMIN: &str = "{token: {file: admin-token}}";

/// A temp dir with `sluis.yaml`, the eOverdracht receiver policy and the admin token file.
pub fn setup(config: &str) -> Setup {
    let setup = Setup::new(config, &[("eoverdracht-receiver.yaml", POLICY)]);
    std::fs::write(setup.dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    setup
}

/// An access token of the example Nuts node for `client_id`, with the receiver scope.
pub fn nuts_token(client_id: &str) -> String {
    SigningKey::example().sign(&json!({
        "iss": "https://nuts.example.org",
        "aud": "https://fhir.example.org",
        "sub": client_id,
        "client_id": client_id,
        "scope": "eOverdracht-receiver",
        "iat": now() - 5,
        "exp": now() + 600,
    }))
}

/// `GET /eoverdracht/fhir/{resource}` by the receiver.
pub fn read(token: &str, resource: &str) -> Req {
    Req::get(&format!("/eoverdracht/fhir/{resource}")).bearer(token)
}

/// A flow of the receiver that allows reading `resource` (e.g. `Patient/1`).
pub fn flow(id: &str, resource: &str) -> Value {
    json!({
        "id": id,
        "purpose": "eOverdracht",
        "custodian": "did:web:sender.example.org",
        "actor": RECEIVER,
        "resources": [{"path": resource, "operations": ["read"]}],
        "scopes": ["eOverdracht-receiver"],
    })
}

/// Asks the Sluis whose gRPC listener is `grpc`, as Envoy does.
pub async fn decide(grpc: SocketAddr, request: Req) -> Answer {
    Decider::connect(grpc).await.decide(request).await
}

/// Decisions over one gRPC connection, for many in a row.
pub struct Decider(AuthorizationClient<tonic::transport::Channel>);

impl Decider {
    pub async fn connect(grpc: SocketAddr) -> Decider {
        Decider(
            AuthorizationClient::connect(format!("http://{grpc}"))
                .await
                .unwrap(),
        )
    }

    pub async fn decide(&mut self, request: Req) -> Answer {
        let response = self
            .0
            .check(request.into_check())
            .await
            .unwrap()
            .into_inner();
        Answer::from(response)
    }
}

/// How long it took until `check` held, polling every 10 ms; `None` when it still did not
/// hold at `limit`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The flows HTTP API of one Sluis, with or without a bearer token.
pub struct Admin {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

/// A response: status and JSON body (`Null` when the body is not JSON), and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Admin {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Admin {
        Admin {
            base: format!("http://{addr}"),
            token: token.map(str::to_owned),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        }
    }

    /// With [`ADMIN_TOKEN`].
    pub fn authorized(addr: SocketAddr) -> Admin {
        Admin::new(addr, Some(ADMIN_TOKEN))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn try_send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<Reply> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            body,
            text,
            headers,
        })
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.try_send(request).await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn create(&self, flow: &Value) -> Reply {
        self.post("/v1/flows", flow).await
    }

    pub async fn revoke(&self, id: &str) -> Reply {
        self.send(self.request(reqwest::Method::POST, &format!("/v1/flows/{id}/revoke")))
            .await
    }

    /// NDJSON import.
    pub async fn import_ndjson(&self, body: String) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, "/v1/flows/import")
                .header("content-type", "application/x-ndjson")
                .body(body),
        )
        .await
    }

    /// Every id a listing with `query` (without paging parameters) yields, following page
    /// tokens until there are none, each page at most `page_size`.
    pub async fn list_all(&self, query: &str, page_size: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!("/v1/flows?page_size={page_size}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(token) = &token {
                path.push_str(&format!("&page_token={}", encode(token)));
            }
            let reply = self.get(&path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            let flows = reply.body["flows"].as_array().unwrap();
            assert!(flows.len() <= page_size, "{path}: {} flows", flows.len());
            ids.extend(flows.iter().map(|f| f["id"].as_str().unwrap().to_owned()));
            match reply.body["next_page_token"].as_str() {
                Some(next) => {
                    assert!(!flows.is_empty(), "{path}: an empty page with a next token");
                    token = Some(next.to_owned());
                }
                None => return ids,
            }
        }
        panic!("listing `{query}` did not end");
    }
}

/// A query parameter value, percent-encoded.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Waits until `/readyz` of the Sluis at `admin` answers 200, for at most `limit`.
pub async fn wait_ready(admin: SocketAddr, limit: Duration) -> bool {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    within(limit, || {
        let request = http.get(format!("http://{admin}/readyz")).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await
    .is_some()
}
