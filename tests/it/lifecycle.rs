//! SIGTERM under load, through the real `sluis serve`: every check in flight when the
//! signal comes is answered, new connections are refused meanwhile, and the process
//! exits 0. The checks are held in flight by an introspection endpoint standing in for
//! the authorization server, which answers only when the test lets it, so the order of
//! events is fixed, not a matter of timing.

use sluis_test_kit as kit;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use kit::process::{Listeners, SluisProcess};
use kit::{ISSUER, POLICY, Req, Setup, now};
use serde_json::json;

/// Checks in flight when SIGTERM comes, over this many connections.
const CHECKS: usize = 32;
const CONNECTIONS: usize = 4;

/// An introspection endpoint that counts the calls it holds and answers them (active,
/// scope `read`) once `open` is set.
struct Gate {
    address: std::net::SocketAddr,
    arrived: Arc<AtomicUsize>,
    open: tokio::sync::watch::Sender<bool>,
}

async fn gate() -> Gate {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (open, opened) = tokio::sync::watch::channel(false);
    let counter = arrived.clone();
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move || {
            let (counter, mut opened) = (counter.clone(), opened.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = opened.wait_for(|open| *open).await;
                axum::Json(json!({
                    "active": true,
                    "iss": ISSUER,
                    "sub": "user-1",
                    "client_id": "client-1",
                    "scope": "read",
                    "exp": now() + 600,
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gate {
        address,
        arrived,
        open,
    }
}

fn config(listeners: &Listeners, gate: &Gate) -> String {
    format!(
        r#"
listeners: {{grpc: "{}", admin: "{}", http: "{}"}}
issuers:
  - name: test
    issuer: {ISSUER}
    introspection:
      endpoint: http://{}/introspect
      allow_insecure_http: true
      timeout: 60s
      retries: 0
policies: [policies]
"#,
        listeners.grpc, listeners.admin, listeners.http, gate.address
    )
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_check_in_flight_then_exits_0() {
    let gate = gate().await;
    let listeners = Listeners::free();
    let setup = Setup::new(&config(&listeners, &gate), &[("api.yaml", POLICY)]);
    let mut process = SluisProcess::spawn(
        env!("CARGO_BIN_EXE_sluis"),
        &setup.config_path(),
        listeners,
        &[],
    );
    process.wait_ready().await;

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(
            AuthorizationClient::connect(format!("http://{}", listeners.grpc))
                .await
                .unwrap(),
        );
    }
    // Distinct opaque tokens: each check is a call of its own to the gate, none is
    // answered from the cache or by another check's call.
    let checks: Vec<_> = (0..CHECKS)
        .map(|i| {
            let mut client = clients[i % CONNECTIONS].clone();
            let request = Req::get(&format!("/api/item/{i}")).bearer(&format!("opaque-token-{i}"));
            tokio::spawn(async move { client.check(request.into_check()).await })
        })
        .collect();
    wait_for("every check to reach the introspection endpoint", || {
        gate.arrived.load(Ordering::SeqCst) == CHECKS
    })
    .await;

    process.terminate();
    // While the checks are still held: the listeners take no new connection.
    wait_for("new connections to be refused", || {
        std::net::TcpStream::connect(listeners.grpc).is_err()
            && std::net::TcpStream::connect(listeners.http).is_err()
    })
    .await;
    assert!(
        checks.iter().all(|check| !check.is_finished()),
        "a check was answered before the introspection endpoint answered"
    );

    gate.open.send(true).unwrap();
    for check in checks {
        let answer = kit::Answer::from(check.await.unwrap().unwrap().into_inner());
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("x-user"), Some("user-1"));
    }
    let status = process.exit_status().await;
    let log = process.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("shutting down: draining in-flight checks"),
        "{log}"
    );
    assert!(
        !log.contains("opaque-token-"),
        "a token leaked into the log"
    );
}

/// A broken policy edit is logged; when it is reverted, the log says the policies load
/// again (the set in place never changed, so "reloaded" alone would not be logged).
#[tokio::test]
async fn a_reverted_broken_edit_is_logged_as_over() {
    let listeners = Listeners::free();
    let setup = Setup::new(&listeners.config_yaml(), &[("api.yaml", POLICY)]);
    let mut process = SluisProcess::spawn(
        env!("CARGO_BIN_EXE_sluis"),
        &setup.config_path(),
        listeners,
        &[],
    );
    process.wait_ready().await;
    setup.write_policy("api.yaml", "policies:\n  - id: api\n    rulez: []\n");
    wait_for("the failed reload in the log", || {
        process.log().contains("policy reload failed")
    })
    .await;
    setup.write_policy("api.yaml", POLICY);
    wait_for("the recovery in the log", || {
        process
            .log()
            .contains("policies load again after a failed reload")
    })
    .await;
    let readyz: serde_json::Value = reqwest::get(format!("http://{}/readyz", listeners.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        readyz["last_reload_error"],
        serde_json::Value::Null,
        "{readyz}"
    );
}
