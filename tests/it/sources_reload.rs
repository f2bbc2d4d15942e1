//! Information sources through a running server: a config reload rebuilds them together
//! with the policies that call them, and a failed look-up under `on_error: unavailable`
//! reaches the gateway as each door's "cannot decide" answer.

use sluis_test_kit as kit;

use kit::{Req, Server, Setup};

use super::sources::{Reply, StandIn, fhir_script};

/// The policy of these tests: `/patients/{id}` needs an active Patient from `holder`.
const POLICY: &str = r#"
policies:
  - id: read
    anonymous: true
    match: {paths: ["/patients/*"]}
    rules:
      - id: active-patient
        allow: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == true"
"#;

fn holder(url: &str, extra: &str) -> String {
    format!(
        "sources:\n  - name: holder\n    kind: fhir\n    base_url: {url}/fhir\n    allow_insecure_http: true\n    retries: 0\n{extra}"
    )
}

/// The test config (policies in `policies/`) with `sources`.
fn config(sources: &str) -> String {
    format!(
        "{}\n{sources}\n",
        kit::config_yaml("127.0.0.1:0", "127.0.0.1:0")
    )
}

/// Replaces the config file as an editor does: write aside, then rename.
fn write_config(setup: &Setup, text: &str) {
    let tmp = setup.dir.path().join(".sluis.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, setup.config_path()).unwrap();
}

async fn allowed(server: &Server, path: &str) -> bool {
    server.check(Req::get(path)).await.status == 200
}

async fn last_reload_error(server: &Server) -> Option<String> {
    let readyz: serde_json::Value = reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    readyz["last_reload_error"].as_str().map(str::to_owned)
}

/// A FHIR server where Patient/1 is inactive.
fn inactive_script(target: &str, body: &str, auth: Option<&str>) -> Reply {
    if target.starts_with("/fhir/Patient/1") {
        return Reply::json(
            serde_json::json!({"resourceType": "Patient", "id": "1", "active": false}),
        );
    }
    fhir_script(target, body, auth)
}

#[tokio::test]
async fn a_reload_rebuilds_sources_with_the_policies_that_call_them() {
    let first = StandIn::start(fhir_script).await;
    let second = StandIn::start(inactive_script).await;
    let setup = Setup::new(&config(&holder(&first.url(), "")), &[("p.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    assert!(allowed(&server, "/patients/1").await);
    assert_eq!(first.calls(), 1);

    // A changed URL takes effect without a restart.
    write_config(&setup, &config(&holder(&second.url(), "")));
    assert!(
        kit::eventually(|| async { !allowed(&server, "/patients/1").await }).await,
        "the new URL was never asked"
    );
    assert_eq!(first.calls(), 1);
    let asked = second.calls();
    assert!(asked >= 1);

    // Removing a source a policy calls is a load error: refused, and the set in force
    // (with its source and cache) keeps serving.
    write_config(&setup, &config(""));
    assert!(
        kit::eventually(|| async {
            last_reload_error(&server)
                .await
                .is_some_and(|e| e.contains("`sources.holder`, which is not declared"))
        })
        .await,
        "{:?}",
        last_reload_error(&server).await
    );
    assert!(!allowed(&server, "/patients/1").await);
    assert_eq!(
        second.calls(),
        asked,
        "still the cached answer of the set in force"
    );

    // A source that cannot be built refuses the reload too, naming it.
    write_config(
        &setup,
        &config(&holder(&second.url(), "    max_concurrent: 0\n")),
    );
    assert!(
        kit::eventually(|| async {
            last_reload_error(&server)
                .await
                .is_some_and(|e| e.contains("source `holder`: `max_concurrent` must be at least 1"))
        })
        .await,
        "{:?}",
        last_reload_error(&server).await
    );

    // Adding a source (and a policy calling it) keeps the unchanged one with its cache.
    let extra = format!(
        "  - name: extra\n    kind: fhir\n    base_url: {}/fhir\n    allow_insecure_http: true\n",
        first.url()
    );
    write_config(&setup, &config(&holder(&second.url(), &extra)));
    setup.write_policy(
        "extra.yaml",
        r#"
policies:
  - id: extra
    anonymous: true
    match: {paths: ["/extra/*"]}
    rules:
      - id: active-patient
        allow: "sources.extra({'read': 'Patient/' + request.segments[1]}).active == true"
"#,
    );
    assert!(
        kit::eventually(|| async { allowed(&server, "/extra/1").await }).await,
        "{:?}",
        last_reload_error(&server).await
    );
    assert_eq!(last_reload_error(&server).await, None);
    assert!(!allowed(&server, "/patients/1").await);
    assert_eq!(
        second.calls(),
        asked,
        "the unchanged source kept its cache across the reload"
    );

    // A changed TTL is a changed source: it starts with an empty cache.
    write_config(
        &setup,
        &config(&holder(
            &second.url(),
            &format!("    cache: {{ttl: 1h}}\n{extra}"),
        )),
    );
    assert!(
        kit::eventually(|| async {
            let _ = allowed(&server, "/patients/1").await;
            second.calls() > asked
        })
        .await
    );
    server.stop().await;
}

/// `/gone/{id}` needs an active Patient from source `gone`.
const GONE_POLICY: &str = r#"
policies:
  - id: gone
    anonymous: true
    match: {paths: ["/gone/*"]}
    rules:
      - id: active-patient
        allow: "sources.gone({'read': 'Patient/' + request.segments[1]}).active == true"
"#;

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `/metrics` lines of source `name`.
fn series_of(metrics: &str, name: &str) -> Vec<String> {
    let label = format!("source=\"{name}\"");
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(&label))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_source_a_reload_removes_leaves_the_metrics() {
    let upstream = StandIn::start(fhir_script).await;
    let failing = StandIn::start(|_: &str, _: &str, _: Option<&str>| Reply::status(503)).await;
    let gone = format!(
        "  - name: gone\n    kind: fhir\n    base_url: {}/fhir\n    allow_insecure_http: true\n    retries: 0\n    circuit: {{failures: 1}}\n",
        failing.url()
    );
    let setup = Setup::new(
        &config(&holder(&upstream.url(), &gone)),
        &[("p.yaml", POLICY), ("gone.yaml", GONE_POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    assert!(allowed(&server, "/patients/1").await);
    assert!(allowed(&server, "/patients/1").await, "the cached answer");
    assert!(!allowed(&server, "/gone/1").await);
    let before = metrics(&server).await;
    let gone_series = series_of(&before, "gone");
    for wanted in [
        "sluis_source_circuit_open{source=\"gone\"} 1",
        "sluis_source_calls_total{source=\"gone\"} 1",
    ] {
        assert!(
            gone_series.iter().any(|l| l == wanted),
            "{wanted}: {before}"
        );
    }
    assert!(
        gone_series
            .iter()
            .any(|l| l.starts_with("sluis_source_errors_total") && l.contains("kind=\"status\"")),
        "{before}"
    );
    let holder_series = series_of(&before, "holder");
    assert!(
        holder_series.iter().any(|l| l.contains("result=\"hit\"")),
        "{before}"
    );

    // The policy calling `gone`, then `gone` itself, go.
    std::fs::remove_file(setup.dir.path().join("policies/gone.yaml")).unwrap();
    write_config(&setup, &config(&holder(&upstream.url(), "")));
    assert!(
        kit::eventually(|| async { series_of(&metrics(&server).await, "gone").is_empty() }).await,
        "{:?}\n{}",
        last_reload_error(&server).await,
        metrics(&server).await
    );
    // The source kept keeps its series, with their values.
    let after = metrics(&server).await;
    assert_eq!(series_of(&after, "holder"), holder_series, "{after}");
    assert!(allowed(&server, "/patients/1").await);
    assert_eq!(upstream.calls(), 1, "still cached");
    server.stop().await;
}

/// Patient reads from a source that always fails, under `on_error: unavailable`.
const UNAVAILABLE_POLICY: &str = r#"
policies:
  - id: read
    anonymous: true
    on_error: unavailable
    match: {paths: ["/patients/*"]}
    rules:
      - id: active-patient
        allow: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == true"
"#;

#[tokio::test]
async fn on_error_unavailable_reaches_each_door_as_cannot_decide() {
    let broken = StandIn::start(|_, _, _| Reply::status(500)).await;
    let setup = Setup::new(
        &config(&holder(&broken.url(), "")),
        &[("p.yaml", UNAVAILABLE_POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;

    // Envoy's gRPC door: the Check itself fails UNAVAILABLE, which Envoy's
    // `failure_mode_allow` decides (denied with 403 unless it is set).
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", server.grpc),
    )
    .await
    .unwrap();
    let status = client
        .check(Req::get("/patients/1").into_check())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("source `holder`"), "{status:?}");
    assert!(!status.message().contains(&broken.url()), "{status:?}");

    // The forward-auth door: 503, which NGINX, Traefik, Caddy and Envoy's http_service
    // treat as an error, never an allow.
    let response = reqwest::get(format!("http://{}/decisions/patients/1", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert!(body.contains("temporarily_unavailable"), "{body}");
    assert!(broken.calls() >= 2);
    server.stop().await;
}

/// Through a real Envoy: the UNAVAILABLE of a failed source under `on_error: unavailable`
/// is handled by Envoy's failure mode, which the shipped config keeps closed
/// (`failure_mode_allow: false`, `status_on_error: 503`); the upstream is never reached.
#[tokio::test]
async fn envoy_fails_closed_on_a_source_that_is_unavailable() {
    use kit::gateway::{envoy_binary, free_port, http_ok, start_envoy, upstream, wait_until};
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let broken = StandIn::start(|_, _, _| Reply::status(500)).await;
    let setup = Setup::new(
        &config(&holder(&broken.url(), "")),
        &[("p.yaml", UNAVAILABLE_POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let (upstream_port, seen) = upstream().await;
    let (listen, envoy_admin) = (free_port(), free_port());
    let _envoy = start_envoy(
        &envoy,
        setup.dir.path(),
        listen,
        server.grpc.port(),
        upstream_port,
        envoy_admin,
    );
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;
    let response = reqwest::get(format!("http://127.0.0.1:{listen}/patients/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(broken.calls() >= 1, "the source was asked");
    assert!(seen.lock().unwrap().is_empty(), "the upstream was reached");
    server.stop().await;
}
