//! Keys from a real HTTP server on loopback standing in for an identity provider: JWKS
//! fetched at start, rotated without a restart, unknown `kid`s refreshing at a bounded
//! rate, and an unreachable provider making Sluis unready and answering UNAVAILABLE
//! (never allow, never a made-up 401).

use sluis_test_kit as kit;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use jsonwebtoken::Algorithm;
use kit::*;

/// Serves whatever JWKS document is current, counting fetches.
struct Provider {
    address: std::net::SocketAddr,
    jwks: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn provider(initial: &str) -> Provider {
    let jwks = Arc::new(Mutex::new(initial.to_owned()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (served, counted) = (jwks.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (served, counted) = (served.clone(), counted.clone());
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider {
        address,
        jwks,
        fetches,
    }
}

fn config(jwks_url: &str, min_refresh: &str) -> String {
    format!(
        r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks:
      url: {jwks_url}
      allow_insecure_http: true
      min_refresh_interval: {min_refresh}
      refresh_interval: 1h
      timeout: 1s
policies: [policies]
"#
    )
}

fn jwks_file(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("keys/{name}"))).unwrap()
}

#[tokio::test]
async fn keys_rotate_without_a_restart() {
    let provider = provider(&jwks_file("jwks.json")).await;
    let setup = Setup::new(
        &config(&format!("http://{}/jwks", provider.address), "1s"),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let old = token(&claims());
    assert_eq!(
        server.check(Req::get("/api/x").bearer(&old)).await.status,
        200
    );

    // The provider rotates: rsa-1 and friends are gone, rsa-2 is new.
    *provider.jwks.lock().unwrap() = jwks_file("jwks-other.json");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = sign("rsa-other", Algorithm::RS256, Some("rsa-2"), &claims());
    let answer = server.check(Req::get("/api/x").bearer(&new)).await;
    assert_eq!(
        answer.status, 200,
        "a new kid triggers a refresh: {answer:?}"
    );

    // A token never seen before, signed by a removed key, is refused.
    let mut fresh = claims();
    fresh["jti"] = serde_json::json!("never-seen");
    let answer = server
        .check(Req::get("/api/x").bearer(&sign("rsa", Algorithm::RS256, Some("rsa-1"), &fresh)))
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body_json()["message"], "unknown key id `rsa-1`");
    server.stop().await;
}

#[tokio::test]
async fn unknown_kids_cannot_hammer_the_provider() {
    let provider = provider(&jwks_file("jwks.json")).await;
    let setup = Setup::new(
        &config(&format!("http://{}/jwks", provider.address), "1h"),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let at_start = provider.fetches.load(Ordering::SeqCst);
    for i in 0..50 {
        let forged = sign(
            "rsa",
            Algorithm::RS256,
            Some(&format!("kid-{i}")),
            &claims(),
        );
        let answer = server.check(Req::get("/api/x").bearer(&forged)).await;
        assert_eq!(answer.status, 401);
    }
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        at_start,
        "fetches within min_refresh_interval of the last one are refused"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_provider_means_unready_and_unavailable() {
    // A port nothing listens on.
    let closed = kit::free_addr();
    let setup = Setup::new(
        &config(&format!("http://{closed}/jwks"), "0s"),
        &[("api.yaml", POLICY)],
    );
    let config = sluis_config::Config::load(&setup.config_path()).unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = sluis::server::Bound {
        grpc,
        admin,
        http: None,
    };
    let task = tokio::spawn(sluis::server::run(config, listeners, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let readyz = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let detail: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(detail["issuer_keys_loaded"]["test"], false);

    let mut client = AuthorizationClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let status = client
        .check(Req::get("/api/x").bearer(&token(&claims())).into_check())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // A missing token is still a plain 401: no keys are needed to say so.
    let answer: Answer = client
        .check(Req::get("/api/x").into_check())
        .await
        .unwrap()
        .into_inner()
        .into();
    assert_eq!(answer.status, 401);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}

#[tokio::test]
async fn hmac_tokens_need_the_issuers_shared_secret() {
    let setup = Setup::new(
        &format!(
            r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [HS256]
    shared_secret: {{ file: secret.txt }}
policies: [policies]
"#
        ),
        &[("api.yaml", POLICY)],
    );
    std::fs::write(
        setup.dir.path().join("secret.txt"),
        "a-long-shared-secret-for-tests\n",
    )
    .unwrap();
    let server = Server::start(&setup.config_path()).await;
    let sign_with = |secret: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let good = sign_with(b"a-long-shared-secret-for-tests");
    assert_eq!(
        server.check(Req::get("/api/x").bearer(&good)).await.status,
        200
    );
    let bad = sign_with(b"another-secret");
    let answer = server.check(Req::get("/api/x").bearer(&bad)).await;
    assert_eq!(answer.body_json()["message"], "signature is invalid");
    // RS256 is not on this issuer's list.
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&claims())))
        .await;
    assert_eq!(
        answer.body_json()["message"],
        "algorithm `RS256` is not accepted"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_token_cache_is_bounded() {
    let setup = Setup::new(
        &format!(
            "{}token_cache: {{max_entries: 3}}\n",
            config_yaml("127.0.0.1:0", "127.0.0.1:0")
        ),
        &[("api.yaml", POLICY)],
    );
    let config = sluis_config::Config::load(&setup.config_path()).unwrap();
    let engine = config.build_engine(std::sync::Arc::default()).unwrap();
    for issuer in engine.authenticator().issuers() {
        issuer.refresh().await.unwrap();
    }
    for i in 0..50 {
        let mut unique = claims();
        unique["jti"] = serde_json::json!(format!("t-{i}"));
        let request = {
            let check = Req::get("/api/x").bearer(&token(&unique)).into_check();
            sluis::doors::envoy::access_request(check)
        };
        assert!(engine.decide(&request).await.unwrap().is_allow());
    }
    assert!(engine.authenticator().cached_tokens() <= 3);
}
