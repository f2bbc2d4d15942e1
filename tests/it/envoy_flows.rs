//! The eOverdracht scenario end to end, through a real Envoy 1.40 and a real
//! `sluis serve` with its SQLite flow store: the sender registers a transfer over the
//! admin API, the receiver reads the transfer's resources through Envoy; another
//! organisation, another resource, a POST, a revoked and an expired transfer are denied.
//!
//! The example policy `policy/eoverdracht-receiver.yaml` is used as shipped.
//! Without the Envoy binary the test says so and passes, unless `SLUIS_REQUIRE_ENVOY=1`.

use sluis_test_kit as kit;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::gateway::*;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A token of the example `nuts-node` issuer for `client_id`.
fn receiver_token(client_id: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("dev-1".into());
    let key = std::fs::read(repo("examples/keys/dev-rsa.pem")).unwrap();
    jsonwebtoken::encode(
        &header,
        &json!({
            "iss": "https://nuts.example.org",
            "aud": "https://fhir.example.org",
            "sub": client_id,
            "client_id": client_id,
            "scope": "eOverdracht-receiver",
            "iat": now - 5,
            "exp": now + 600,
        }),
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

fn config(dir: &Path, grpc: u16, admin: u16) -> PathBuf {
    let path = dir.join("sluis.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
listeners: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}"}}
issuers:
  - name: nuts-node
    issuer: https://nuts.example.org
    audiences: [https://fhir.example.org]
    jwks: {{file: "{jwks}"}}
policies: ["{policy}"]
store: {{url: "sqlite:flows.db"}}
admin: {{token: {{env: SLUIS_TEST_ADMIN_TOKEN}}}}
"#,
            jwks = repo("examples/keys/dev-jwks.json").display(),
            policy = repo("policy/eoverdracht-receiver.yaml").display(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eoverdracht_through_envoy_with_registered_flows() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (upstream_port, seen) = upstream().await;
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    let config = config(dir.path(), grpc, admin);
    let _sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("SLUIS_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _envoy = start_envoy(&envoy, dir.path(), listen, grpc, upstream_port, envoy_admin);
    let sluis_admin = format!("127.0.0.1:{admin}");
    wait_until("sluis", || http_ok(&sluis_admin, "/readyz")).await;
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;

    let client = reqwest::Client::new();
    let register = |flow: Value| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://127.0.0.1:{admin}/v1/flows"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&flow)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{flow}");
        }
    };
    let receiver = "did:web:receiver.example.org";
    // The sender starts the transfer: registers what the receiver may read.
    register(json!({
        "id": "transfer-1",
        "purpose": "eOverdracht",
        "custodian": "did:web:sender.example.org",
        "actor": receiver,
        "resources": [
            {"path": "Task/transfer-1", "operations": ["read", "update"]},
            {"path": "Composition/abc", "operations": ["read", "document"]},
            {"path": "Patient/123", "operations": ["read"]},
        ],
        "scopes": ["eOverdracht-receiver"],
    }))
    .await;
    register(json!({
        "id": "transfer-expired",
        "purpose": "eOverdracht",
        "actor": receiver,
        "resources": [{"path": "Patient/old", "operations": ["read"]}],
        "valid_from": "2020-01-01T00:00:00Z",
        "valid_until": "2021-01-01T00:00:00Z",
    }))
    .await;

    let get = |path: &str, client_id: &str| {
        let request = client
            .get(format!("http://127.0.0.1:{listen}{path}"))
            .bearer_auth(receiver_token(client_id));
        async move { request.send().await.unwrap() }
    };

    // The receiver reads the transfer's resources; the upstream sees who asked.
    for path in [
        "/eoverdracht/fhir/Patient/123",
        "/eoverdracht/fhir/Task/transfer-1",
        "/eoverdracht/fhir/Composition/abc/$document",
    ] {
        let response = get(path, receiver).await;
        assert_eq!(response.status(), 200, "{path}");
        let echoed: Value = response.json().await.unwrap();
        assert_eq!(echoed["headers"]["x-sluis-client-id"], receiver, "{echoed}");
        assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    }
    let reached = seen.lock().unwrap().len();
    assert_eq!(reached, 3);

    // Denied, all with the same uniform answer: another organisation, another resource,
    // a write the transfer does not allow, an expired transfer.
    let uniform = json!({"error": "access_denied", "message": "access denied"});
    let denied = [
        get("/eoverdracht/fhir/Patient/123", "did:web:other.example.org").await,
        get("/eoverdracht/fhir/Patient/456", receiver).await,
        get("/eoverdracht/fhir/Patient/old", receiver).await,
        client
            .post(format!(
                "http://127.0.0.1:{listen}/eoverdracht/fhir/Patient"
            ))
            .bearer_auth(receiver_token(receiver))
            .body("{}")
            .send()
            .await
            .unwrap(),
        client
            .delete(format!(
                "http://127.0.0.1:{listen}/eoverdracht/fhir/Patient/123"
            ))
            .bearer_auth(receiver_token(receiver))
            .send()
            .await
            .unwrap(),
    ];
    for response in denied {
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, uniform);
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        reached,
        "a denied request reached the upstream"
    );

    // The sender ends the transfer: from the acknowledged revoke on, nothing passes.
    let response = client
        .post(format!(
            "http://127.0.0.1:{admin}/v1/flows/transfer-1/revoke"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = get("/eoverdracht/fhir/Patient/123", receiver).await;
    assert_eq!(response.status(), 403);
    assert_eq!(seen.lock().unwrap().len(), reached);
}
