//! RFC 7662 introspection against a real HTTP server on loopback standing in for the
//! authorization server: active and inactive tokens, caching bounded by `exp`, request
//! coalescing, outages (down, slow, 5xx, garbage) that never allow, the opt-in stale
//! mode, client authentication, and OIDC discovery with an issuer mismatch.

use sluis_test_kit as kit;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use kit::*;
use serde_json::{Value, json};

/// How the stand-in answers.
#[derive(Clone)]
enum Mode {
    /// `active: true` with these claims for the token `good-*`, inactive otherwise.
    Normal,
    Status(u16),
    Garbage,
    Slow(Duration),
}

struct AuthServer {
    address: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    /// The form fields and Authorization header of the last call.
    last: Arc<Mutex<(String, Option<String>)>>,
}

async fn auth_server() -> AuthServer {
    let calls = Arc::new(AtomicUsize::new(0));
    let mode = Arc::new(Mutex::new(Mode::Normal));
    let last = Arc::new(Mutex::new((String::new(), None)));
    let (c, m, l) = (calls.clone(), mode.clone(), last.clone());
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (c, m, l) = (c.clone(), m.clone(), l.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                *l.lock().unwrap() = (body.clone(), auth);
                let mode = m.lock().unwrap().clone();
                match mode {
                    Mode::Status(code) => {
                        return (StatusCode::from_u16(code).unwrap(), "oops".to_string());
                    }
                    Mode::Garbage => return (StatusCode::OK, "<html>".to_string()),
                    Mode::Slow(delay) => tokio::time::sleep(delay).await,
                    Mode::Normal => {}
                }
                // Give concurrent callers time to pile up, so coalescing is visible.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let token = body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .unwrap_or("");
                let answer = if token.starts_with("good") {
                    json!({
                        "active": true,
                        "iss": ISSUER,
                        "client_id": "client-1",
                        "sub": "user-1",
                        "scope": "read write",
                        "exp": now() + 600,
                        "organization_ura": "12345678",
                    })
                } else if token.starts_with("soon") {
                    json!({"active": true, "scope": "read", "sub": "x", "organization_ura": "1", "exp": now() + 1})
                } else {
                    json!({"active": false})
                };
                (StatusCode::OK, answer.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    AuthServer {
        address,
        calls,
        mode,
        last,
    }
}

fn config(server: &AuthServer, extra: &str) -> String {
    format!(
        r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {ISSUER}
    introspection:
      endpoint: http://{}/introspect
      allow_insecure_http: true
      token_type_hint: access_token
      timeout: 300ms
      retries: 1
{extra}
policies: [policies]
"#,
        server.address
    )
}

const POLICY_WITH_CLAIM: &str = r#"
policies:
  - id: api
    match: {paths: ["/api/**"]}
    issuers: [test]
    scopes: [read]
    rules:
      - {id: get, allow: request.method == "GET"}
    response:
      set_headers:
        x-ura: token.claims.organization_ura
"#;

async fn start(extra: &str) -> (AuthServer, Setup, Server) {
    let auth = auth_server().await;
    let setup = Setup::new(&config(&auth, extra), &[("api.yaml", POLICY_WITH_CLAIM)]);
    let server = Server::start(&setup.config_path()).await;
    (auth, setup, server)
}

#[tokio::test]
async fn active_tokens_become_identities_and_are_cached() {
    let (auth, _setup, server) = start("").await;
    let answer = server
        .check(Req::get("/api/x").bearer("good-opaque-1"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("x-ura"),
        Some("12345678"),
        "extra fields reach CEL"
    );
    let (form, _) = auth.last.lock().unwrap().clone();
    assert!(form.contains("token=good-opaque-1") && form.contains("token_type_hint=access_token"));
    for _ in 0..5 {
        assert_eq!(status(&server, "good-opaque-1").await, 200);
    }
    assert_eq!(
        auth.calls.load(Ordering::SeqCst),
        1,
        "cached after the first call"
    );
    // Exported on /readyz: the identity cache answers repeats, so introspection saw one
    // call and holds one result.
    let status: Value = reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["introspection"]["test"]["upstream_calls"], 1,
        "{status}"
    );
    assert_eq!(status["introspection"]["test"]["cached"], 1, "{status}");
    assert_eq!(status["verified_tokens_cached"], 1, "{status}");
    server.stop().await;
}

#[tokio::test]
async fn inactive_tokens_are_401_and_briefly_remembered() {
    let (auth, _setup, server) = start("").await;
    for _ in 0..3 {
        let answer = server
            .check(Req::get("/api/x").bearer("revoked-token"))
            .await;
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.header("www-authenticate"),
            Some(
                "Bearer realm=\"sluis\", error=\"invalid_token\", error_description=\"token is not active\""
            )
        );
        assert_eq!(
            answer.body_json(),
            json!({"error": "invalid_token", "message": "token is not active"})
        );
    }
    assert_eq!(
        auth.calls.load(Ordering::SeqCst),
        1,
        "negative answers are cached"
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_checks_of_one_new_token_make_one_call() {
    let (auth, _setup, server) = start("").await;
    let mut checks = Vec::new();
    for _ in 0..20 {
        let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
        checks.push(tokio::spawn(async move {
            let request = Req::get("/api/x").bearer("good-coalesced").into_check();
            Answer::from(client.check(request).await.unwrap().into_inner()).status
        }));
    }
    for check in checks {
        assert_eq!(check.await.unwrap(), 200);
    }
    assert_eq!(auth.calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_cache_never_outlives_exp() {
    let (auth, _setup, server) = start("").await;
    let mut one = Req::get("/api/x").bearer("soon-expiring");
    one.headers.insert("x".into(), "1".into());
    assert_eq!(server.check(one.clone()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The cached answer is past `exp`: the endpoint is asked again (and vouches anew).
    let answer = server.check(one).await;
    assert_eq!(auth.calls.load(Ordering::SeqCst), 2);
    assert_eq!(answer.status, 200, "{answer:?}");
    server.stop().await;
}

/// The HTTP status Sluis answers for `GET /api/x` with this bearer token.
async fn status(server: &Server, token: &str) -> u16 {
    server.check(Req::get("/api/x").bearer(token)).await.status
}

async fn unavailable(server: &Server, token: &str) -> tonic::Status {
    let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    client
        .check(Req::get("/api/x").bearer(token).into_check())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn outages_never_allow() {
    let (auth, _setup, server) = start("").await;
    for (mode, token) in [
        (Mode::Status(503), "good-a"),
        (Mode::Garbage, "good-b"),
        (Mode::Slow(Duration::from_secs(2)), "good-c"),
    ] {
        *auth.mode.lock().unwrap() = mode;
        let status = unavailable(&server, token).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    // Retries are bounded: 503 twice (1 + retries), garbage once (not retried), slow twice.
    assert_eq!(auth.calls.load(Ordering::SeqCst), 5);
    server.stop().await;

    // Nothing listening at all.
    let closed = kit::free_addr();
    let setup = Setup::new(
        &config(&auth, "").replace(&auth.address.to_string(), &closed.to_string()),
        &[("api.yaml", POLICY_WITH_CLAIM)],
    );
    let server = Server::start(&setup.config_path()).await;
    assert_eq!(
        unavailable(&server, "good-d").await.code(),
        tonic::Code::Unavailable
    );
    server.stop().await;
}

#[tokio::test]
async fn stale_results_are_served_only_when_asked_and_never_past_exp() {
    let extra = "      cache_ttl: 1s\n      serve_stale_on_error: true";
    let (auth, _setup, server) = start(extra).await;
    assert_eq!(status(&server, "good-stale").await, 200);
    *auth.mode.lock().unwrap() = Mode::Status(500);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Past the TTL, endpoint down, token not expired: the cached answer carries on.
    assert_eq!(status(&server, "good-stale").await, 200);
    // A token never seen before cannot be vouched for.
    assert_eq!(
        unavailable(&server, "good-new").await.code(),
        tonic::Code::Unavailable
    );
    server.stop().await;

    // Off by default: the same situation is unavailable.
    let (auth, _setup, server) = start("      cache_ttl: 1s").await;
    assert_eq!(status(&server, "good-stale").await, 200);
    *auth.mode.lock().unwrap() = Mode::Status(500);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        unavailable(&server, "good-stale").await.code(),
        tonic::Code::Unavailable
    );
    server.stop().await;
}

#[tokio::test]
async fn client_authentication_is_sent() {
    let extra = "      client_auth: {method: client_secret_basic, client_id: sluis, client_secret: {file: secret.txt}}";
    let auth = auth_server().await;
    let setup = Setup::new(&config(&auth, extra), &[("api.yaml", POLICY_WITH_CLAIM)]);
    std::fs::write(setup.dir.path().join("secret.txt"), "s3cret\n").unwrap();
    let server = Server::start(&setup.config_path()).await;
    assert_eq!(status(&server, "good-auth").await, 200);
    let (_, authorization) = auth.last.lock().unwrap().clone();
    // base64("sluis:s3cret")
    assert_eq!(authorization.as_deref(), Some("Basic c2x1aXM6czNjcmV0"));
    server.stop().await;
}

#[tokio::test]
async fn jwt_issuers_can_introspect_everything() {
    let extra = "      always: true";
    let (auth, _setup, server) = start(extra).await;
    // A JWT-shaped token that the stand-in does not know: inactive, not verified locally.
    let jwt = token(&claims());
    let answer = server.check(Req::get("/api/x").bearer(&jwt)).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body_json()["message"], "token is not active");
    assert_eq!(auth.calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// Serves OIDC discovery metadata naming `issuer`, and the fixture JWKS.
async fn discovery_server(issuer_override: Option<String>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let issuer = issuer_override.unwrap_or_else(|| format!("http://{address}"));
    let jwks = std::fs::read_to_string(fixture("keys/jwks.json")).unwrap();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let issuer = issuer.clone();
                async move {
                    axum::Json(json!({
                        "issuer": issuer,
                        "jwks_uri": format!("http://{address}/keys"),
                    }))
                }
            }),
        )
        .route(
            "/keys",
            axum::routing::get(move || async move { jwks.clone() }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn discovery_config(issuer: &str) -> String {
    format!(
        r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {issuer}
    audiences: [{AUDIENCE}]
    jwks: {{discovery: auto, allow_insecure_http: true}}
policies: [policies]
"#
    )
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys() {
    let address = discovery_server(None).await;
    let issuer = format!("http://{address}");
    let setup = Setup::new(&discovery_config(&issuer), &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let mut claims = claims();
    claims["iss"] = Value::String(issuer);
    assert_eq!(
        server
            .check(Req::get("/api/x").bearer(&token(&claims)))
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn discovery_for_another_issuer_is_refused() {
    let address = discovery_server(Some("https://evil.example".into())).await;
    let setup = Setup::new(
        &discovery_config(&format!("http://{address}")),
        &[("api.yaml", POLICY)],
    );
    let config = sluis_config::Config::load(&setup.config_path()).unwrap();
    let engine = config.build_engine(std::sync::Arc::default()).unwrap();
    let issuer = engine.authenticator().issuer("test").unwrap();
    let error = issuer.refresh().await.unwrap_err();
    assert!(
        error.contains("is for issuer `https://evil.example`"),
        "{error}"
    );
    assert!(!engine.ready());
}

#[tokio::test]
async fn client_secret_post_and_private_key_jwt() {
    let auth = auth_server().await;
    let post = "      client_auth: {method: client_secret_post, client_id: sluis, client_secret: {file: secret.txt}}";
    let setup = Setup::new(&config(&auth, post), &[("api.yaml", POLICY_WITH_CLAIM)]);
    std::fs::write(setup.dir.path().join("secret.txt"), "from-file\n").unwrap();
    let server = Server::start(&setup.config_path()).await;
    assert_eq!(status(&server, "good-post").await, 200);
    let (form, authorization) = auth.last.lock().unwrap().clone();
    assert!(
        form.contains("client_id=sluis") && form.contains("client_secret=from-file"),
        "{form}"
    );
    assert_eq!(authorization, None);
    server.stop().await;

    let jwt = format!(
        "      client_auth: {{method: private_key_jwt, client_id: sluis, algorithm: ES256, key_id: ec-1, private_key: {{file: {}}}}}",
        fixture("keys/ec.pem").display()
    );
    let setup = Setup::new(&config(&auth, &jwt), &[("api.yaml", POLICY_WITH_CLAIM)]);
    let server = Server::start(&setup.config_path()).await;
    assert_eq!(status(&server, "good-jwt").await, 200);
    let (form, _) = auth.last.lock().unwrap().clone();
    let field = |name: &str| {
        form.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    };
    assert_eq!(
        field("client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    // The assertion verifies with the client's public key and names us and the endpoint.
    let assertion = field("client_assertion").unwrap();
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("keys/jwks.json")).unwrap()).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == "ec-1")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[format!("http://{}/introspect", auth.address)]);
    validation.set_issuer(&["sluis"]);
    let verified = jsonwebtoken::decode::<Value>(
        &assertion,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(verified.claims["sub"], "sluis");
    assert!(
        verified.claims["jti"]
            .as_str()
            .is_some_and(|j| !j.is_empty())
    );
    server.stop().await;
}

/// An https introspection endpoint that only talks to clients presenting a certificate
/// from `ca`, and answers `active: true` naming the client certificate's CN in
/// `client_id`.
async fn mtls_auth_server(
    server_cert: &rcgen::Certificate,
    server_key: &rcgen::KeyPair,
    ca: &rcgen::Certificate,
) -> std::net::SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
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
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let app = axum::Router::new().route(
                    "/introspect",
                    axum::routing::post(|| async {
                        axum::Json(json!({"active": true, "scope": "read", "sub": "user-1",
                            "organization_ura": "1", "exp": now() + 600}))
                    }),
                );
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn tls_client_auth_presents_the_client_certificate() {
    // A CA, the endpoint's certificate and Sluis's client certificate.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["sluis.example".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let address = mtls_auth_server(&server_cert, &server_key, &ca).await;

    let auth_config = |with_certificate: bool| {
        let client_auth = if with_certificate {
            "      client_auth: {method: tls_client_auth, client_id: sluis, certificate: client.pem, private_key: {file: client.key}}\n"
        } else {
            ""
        };
        format!(
            r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {ISSUER}
    introspection:
      endpoint: https://localhost:{port}/introspect
      ca_certificate: ca.pem
      timeout: 1s
      retries: 0
{client_auth}policies: [policies]
"#,
            port = address.port()
        )
    };
    for (with_certificate, expected) in [(true, Ok(200)), (false, Err(tonic::Code::Unavailable))] {
        let setup = Setup::new(
            &auth_config(with_certificate),
            &[("api.yaml", POLICY_WITH_CLAIM)],
        );
        std::fs::write(setup.dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(setup.dir.path().join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(
            setup.dir.path().join("client.key"),
            client_key.serialize_pem(),
        )
        .unwrap();
        let server = Server::start(&setup.config_path()).await;
        let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
        let result = client
            .check(Req::get("/api/x").bearer("opaque-mtls").into_check())
            .await;
        match expected {
            Ok(status) => assert_eq!(Answer::from(result.unwrap().into_inner()).status, status),
            // Without a client certificate the endpoint refuses the handshake: an outage
            // from Sluis's point of view, never an allow.
            Err(code) => assert_eq!(result.unwrap_err().code(), code),
        }
        server.stop().await;
    }
}
