//! GraphQL end to end through a real Envoy 1.40: a route that sends the request body to
//! Sluis (`with_request_body`), a real `sluis serve` judging it against QIR-0001-ZKi, and
//! a GraphQL upstream stand-in that records what reaches it. Allowed queries arrive
//! unchanged with the `claims` header; denied ones never arrive.
//!
//! Without the Envoy binary the test says so and passes, unless `SLUIS_REQUIRE_ENVOY=1`.

use sluis_test_kit as kit;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use kit::gateway::*;
use kit::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
policies:
  - id: register
    match: {paths: ["/graphql"]}
    issuers: [test]
    graphql:
      templates:
        - file: templates/QIR-0001-ZKi.graphql
          bind:
            initieelVerantwoordelijkZorgkantoor: 'has(token.claims.uzovi) ? token.claims.uzovi : null'
    rules:
      - id: zorgkantoor
        allow: graphql.template == "QIR-0001-ZKi"
    response:
      forward_claims: claims
"#;

const QIR: &str = include_str!("../../policy/iwlz/indicatie/QIR-0001-ZKi.graphql");

/// The route the test adds to the example Envoy config: GraphQL bodies go to Sluis.
const GRAPHQL_ROUTE: &str = r#"              - match: { prefix: "/graphql" }
                route: { cluster: upstream }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      with_request_body:
                        max_request_bytes: 65536
                        allow_partial_message: false
                        pack_as_bytes: true
"#;

/// A GraphQL server stand-in: answers `{"data": ...}` and records each request it got.
async fn graphql_upstream() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let headers: serde_json::Map<String, Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                .collect();
            record.lock().unwrap().push(json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }));
            axum::Json(json!({"data": {"wlzIndicatie": []}}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

fn start_envoy_with_graphql_route(
    envoy: &std::path::Path,
    dir: &std::path::Path,
    ports: (u16, u16, u16, u16),
) -> Process {
    let (listen, sluis, upstream, admin) = ports;
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy-test.yaml.tmpl"),
    )
    .unwrap();
    let catch_all = "              - match: { prefix: \"/\" }\n";
    assert!(template.contains(catch_all), "the test template changed");
    let config = template
        .replacen(catch_all, &format!("{GRAPHQL_ROUTE}{catch_all}"), 1)
        .replace("{{LISTEN_PORT}}", &listen.to_string())
        .replace("{{SLUIS_PORT}}", &sluis.to_string())
        .replace("{{UPSTREAM_PORT}}", &upstream.to_string())
        .replace("{{ADMIN_PORT}}", &admin.to_string());
    let path = dir.join("envoy-graphql.yaml");
    std::fs::write(&path, config).unwrap();
    Process(
        Command::new(envoy)
            .args(["-c", path.to_str().unwrap(), "--disable-hot-restart"])
            .args(["--log-level", "warning", "--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_passes_only_graphql_queries_that_fit_a_template() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, seen) = graphql_upstream().await;
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    let setup = Setup::new(
        &config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")),
        &[("register.yaml", POLICY)],
    );
    let templates = setup.dir.path().join("policies/templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("QIR-0001-ZKi.graphql"), QIR).unwrap();
    let _sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _envoy = start_envoy_with_graphql_route(
        &envoy,
        setup.dir.path(),
        (listen, grpc, upstream_port, envoy_admin),
    );
    let sluis_admin = format!("127.0.0.1:{admin}");
    wait_until("sluis", || http_ok(&sluis_admin, "/readyz")).await;
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;

    let mut claims = claims();
    claims["uzovi"] = json!("5000");
    let token = token(&claims);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{listen}/graphql");
    let send = |body: String| {
        client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let variables = json!({
        "wlzIndicatieID": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "initieelVerantwoordelijkZorgkantoor": "5000"
    });

    // The whole template: it reaches the register byte for byte, with the claims header
    // and without the token.
    let allowed = json!({"query": QIR, "variables": variables}).to_string();
    let response = send(allowed.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"data": {"wlzIndicatie": []}})
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let got = &seen[0];
        assert_eq!(got["method"], "POST");
        assert_eq!(got["body"], allowed, "the query was changed on its way");
        let forwarded: Value =
            serde_json::from_str(got["headers"]["claims"].as_str().unwrap()).unwrap();
        assert_eq!(forwarded, claims);
        assert!(got["headers"].get("authorization").is_none(), "{got}");
    }

    // Denied, each with its answer; none reaches the register.
    let extra = json!({
        "query": QIR.replace("        bsn\n", "        bsn\n        wachtwoord\n"),
        "variables": variables
    })
    .to_string();
    let response = send(extra).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "access_denied", "message": "the query does not fit an allowed query template"})
    );

    let mut other = variables.clone();
    other["initieelVerantwoordelijkZorgkantoor"] = json!("5501");
    let response = send(json!({"query": QIR, "variables": other}).to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let response = send(json!({"query": "query { wlzIndicatie("}).to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "RFC0014's body is JSON"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["ErrorCode"],
        "bad_request"
    );

    let response = send(json!({"query": "fragment F on W { bsn }"}).to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"ErrorCode": "bad_request", "Error": "No operation found to evaluate"}"#
    );

    // A body beyond Envoy's buffer: Envoy refuses it itself (413), never half-judged.
    let huge = json!({"query": format!("{{ a(x: \"{}\") }}", "x".repeat(70_000))}).to_string();
    let response = send(huge).await.unwrap();
    assert_eq!(response.status(), 413);

    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a denied query reached the register"
    );
}
