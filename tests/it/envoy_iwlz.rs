//! The iWlz GraphQL route of `envoy/envoy.yaml`, end to end through a real Envoy 1.40:
//! the request body reaches Sluis (and only on that route), a body over the limit is
//! Envoy's 413 without asking Sluis, an upstream that does not answer in time is a 504,
//! and, with `status_on_error: InternalServerError` as the example's comment shows for an
//! RFC0014 PEP, Sluis being unreachable is a 500. Allowed queries reach the upstream
//! unchanged; denied ones never do.
//!
//! Without the Envoy binary the test says so and passes, unless `SLUIS_REQUIRE_ENVOY=1`.

use sluis_test_kit as kit;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::gateway::*;
use kit::*;
use serde_json::{Value, json};

const GRAPHQL_POLICY: &str = r#"
policies:
  - id: graphql
    match: {paths: ["/iwlz/**"]}
    issuers: [test]
    caller:
      uzovi: {prefix: "uzovi:", from: [client_id]}
    rules:
      - id: query-in-body
        allow: request.body.startsWith('{"query"') && caller.uzovi != null
    response:
      forward_claims: claims
      set_headers: {x-sluis-uzovi: caller.uzovi}
  - id: other
    match: {paths: ["/other/**"]}
    issuers: [test]
    rules:
      - id: no-body-sent
        allow: request.body == ""
"#;

/// An upstream that records method, path, headers and body; `/iwlz/slow` takes 3 s.
async fn graphql_upstream() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let headers: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                    .collect();
                let seen = json!({
                    "method": method.as_str(),
                    "uri": uri.to_string(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                record.lock().unwrap().push(seen.clone());
                // Recorded before waiting, so later counts do not change under the test.
                if uri.path() == "/iwlz/slow" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                axum::Json(seen)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sends_graphql_bodies_and_answers_rfc0014_statuses() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, seen) = graphql_upstream().await;
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    let setup = Setup::new(
        &config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")),
        &[("graphql.yaml", GRAPHQL_POLICY)],
    );
    let sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let edit = |config: String| {
        let rfc0014 = config
            .replace("code: ServiceUnavailable", "code: InternalServerError")
            .replace("timeout: 15s", "timeout: 1s");
        assert_ne!(rfc0014, config, "the settings this test changes have moved");
        rfc0014
    };
    let _envoy = start_envoy_edited(
        &envoy,
        setup.dir.path(),
        listen,
        grpc,
        upstream_port,
        envoy_admin,
        edit,
    );
    let sluis_admin = format!("127.0.0.1:{admin}");
    wait_until("sluis", || http_ok(&sluis_admin, "/readyz")).await;
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;

    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{listen}{path}");
    let mut claims = claims();
    claims["client_id"] = json!("uzovi:5000");
    let token = token(&claims);
    let query = r#"{"query":"query { wlzindicatie(wlzindicatieID: \"1\") { id } }","variables":{"uzovi":"5000"}}"#;

    // Allowed: Sluis saw the body; the upstream gets it unchanged, with the claims header.
    let response = client
        .post(url("/iwlz/indicatieregister/v2/graphql"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(query)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["body"], query);
    assert_eq!(echoed["headers"]["x-sluis-uzovi"], "5000");
    let forwarded: Value =
        serde_json::from_str(echoed["headers"]["claims"].as_str().unwrap()).unwrap();
    assert_eq!(forwarded["client_id"], "uzovi:5000");
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");

    // Denied by the policy (no query in the body): never reaches the upstream.
    let before = seen.lock().unwrap().len();
    let response = client
        .post(url("/iwlz/indicatieregister/v2/graphql"))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // Over `max_request_bytes`: Envoy's own 413; neither Sluis nor the upstream sees it.
    let huge = format!(r#"{{"query":"{}"}}"#, "a".repeat(70_000));
    let response = client
        .post(url("/iwlz/indicatieregister/v2/graphql"))
        .bearer_auth(&token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(seen.lock().unwrap().len(), before);

    // Other routes send no body to Sluis; the upstream still gets it.
    let response = client
        .post(url("/other/upload"))
        .bearer_auth(&token)
        .body("not for sluis")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["body"], "not for sluis");

    // An upstream slower than the route timeout: 504 (RFC0014 [17]).
    let response = client
        .post(url("/iwlz/slow"))
        .bearer_auth(&token)
        .body(query)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);

    // Sluis gone: with `status_on_error: InternalServerError`, 500 (RFC0014 [15]).
    drop(sluis);
    let before = seen.lock().unwrap().len();
    let response = client
        .post(url("/iwlz/indicatieregister/v2/graphql"))
        .bearer_auth(&token)
        .body(query)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(seen.lock().unwrap().len(), before);
}
