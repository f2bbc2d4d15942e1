//! Sender-constrained tokens through the real gRPC door: certificate-bound tokens
//! (RFC 8705 `cnf.x5t#S256`) against the client certificate Envoy forwards or a configured
//! header, and DPoP-bound tokens (RFC 9449 `cnf.jkt`) with proofs: valid, wrong `htm`/`htu`,
//! stale, replayed (also across two replicas sharing Redis), wrong `ath`, another key;
//! server nonces (RFC 9449 §9) at both doors and through real NGINX and Envoy.
//! Every case asserts status, `WWW-Authenticate` and body.

use sluis_test_kit as kit;

use base64::Engine as _;
use kit::dpop::{jkt, proof};
use kit::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

// --- certificates (RFC 8705) ---

struct TestCert {
    pem: String,
    thumbprint: String,
}

fn certificate(common_name: &str) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec![format!("{common_name}.example.nl")]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Zorginstelling");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let thumbprint =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(cert.der()));
    TestCert {
        pem: cert.pem(),
        thumbprint,
    }
}

fn url_encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const CERT_POLICY: &str = r#"
policies:
  - id: api
    match: {paths: ["/api/**"]}
    issuers: [test]
    rules:
      - id: organisation-certificate
        allow: source.certificate != null && source.certificate.subject_attributes.O[0] == "Zorginstelling"
    response:
      set_headers:
        x-client-cn: source.certificate.subject_attributes.CN[0]
"#;

fn bound_to(thumbprint: &str) -> Value {
    let mut claims = claims();
    claims["cnf"] = json!({"x5t#S256": thumbprint});
    claims
}

/// A CheckRequest with the client certificate as Envoy sends it (URL-encoded PEM).
fn with_certificate(
    req: Req,
    pem: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let mut check = req.into_check();
    let attributes = check.attributes.as_mut().unwrap();
    attributes.source = Some(
        envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer {
            certificate: url_encoded(pem),
            ..Default::default()
        },
    );
    check
}

async fn check_raw(
    server: &Server,
    check: envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> Answer {
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", server.grpc),
    )
    .await
    .unwrap();
    client.check(check).await.unwrap().into_inner().into()
}

fn assert_401(answer: &Answer, scheme: &str, error: &str, description: &str) {
    assert_eq!(answer.status, 401, "{answer:?}");
    let challenge = if scheme == "DPoP" {
        format!(
            "DPoP realm=\"sluis\", algs=\"RS256 PS256 ES256 EdDSA\", error=\"{error}\", error_description=\"{description}\""
        )
    } else {
        format!("Bearer realm=\"sluis\", error=\"{error}\", error_description=\"{description}\"")
    };
    assert_eq!(
        answer.header("www-authenticate"),
        Some(challenge.as_str()),
        "{answer:?}"
    );
    assert_eq!(
        answer.body_json(),
        json!({"error": error, "message": description})
    );
}

#[tokio::test]
async fn certificate_bound_tokens_need_their_certificate() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", CERT_POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let mine = certificate("client-a");
    let other = certificate("client-b");
    let token = token(&bound_to(&mine.thumbprint));

    let answer = check_raw(
        &server,
        with_certificate(Req::get("/api/x").bearer(&token), &mine.pem),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("x-client-cn"),
        Some("client-a"),
        "certificate fields reach CEL"
    );

    let answer = check_raw(
        &server,
        with_certificate(Req::get("/api/x").bearer(&token), &other.pem),
    )
    .await;
    assert_401(
        &answer,
        "Bearer",
        "invalid_token",
        "client certificate does not match the token",
    );

    let answer = server.check(Req::get("/api/x").bearer(&token)).await;
    assert_401(
        &answer,
        "Bearer",
        "invalid_token",
        "token is bound to a client certificate, but none was presented",
    );

    let answer = check_raw(
        &server,
        with_certificate(
            Req::get("/api/x").bearer(&token),
            "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        ),
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.body_json()["error"], "invalid_token");

    // An unbound token with a certificate: fine, and the policy sees the certificate.
    let answer = check_raw(
        &server,
        with_certificate(
            Req::get("/api/x").bearer(&kit::token(&claims())),
            &other.pem,
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-client-cn"), Some("client-b"));
    server.stop().await;
}

#[tokio::test]
async fn the_certificate_can_come_from_a_configured_header() {
    let config = format!(
        "{}client_certificate: {{header: x-forwarded-client-cert, format: xfcc}}\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", CERT_POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let mine = certificate("client-a");
    let token = token(&bound_to(&mine.thumbprint));
    let xfcc = format!(
        "By=spiffe://proxy;Hash=abc;Cert=\"{}\";Subject=\"CN=client-a\"",
        url_encoded(&mine.pem)
    );
    let answer = server
        .check(
            Req::get("/api/x")
                .bearer(&token)
                .header("x-forwarded-client-cert", &xfcc),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    server.stop().await;
}

// --- DPoP (RFC 9449) ---

fn dpop_token(jkt: &str) -> String {
    let mut claims = claims();
    claims["cnf"] = json!({"jkt": jkt});
    token(&claims)
}

fn dpop_request(method: &str, token: &str, proof: &str) -> Req {
    Req::get("/api/things")
        .method(method)
        .header("authorization", &format!("DPoP {token}"))
        .header("dpop", proof)
}

/// `Req` describes requests to `https://api.test/api/things`.
const URL: &str = "https://api.test/api/things";

#[tokio::test]
async fn dpop_proofs() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let token = dpop_token(&jkt());
    // Proofs that could have been used before this server started are refused (it may
    // have forgotten them): wait until a fresh one is accepted.
    assert_eq!(until_accepted(&server, &token, "warm-up").await, Ok(200));

    let answer = server
        .check(dpop_request(
            "GET",
            &token,
            &proof("GET", URL, &token, 0, "p-1"),
        ))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // The same proof again: replay.
    let answer = server
        .check(dpop_request(
            "GET",
            &token,
            &proof("GET", URL, &token, 0, "p-1"),
        ))
        .await;
    assert_401(
        &answer,
        "DPoP",
        "invalid_dpop_proof",
        "DPoP proof was already used",
    );

    let cases = [
        (
            proof("POST", URL, &token, 0, "p-2"),
            "DPoP proof htm does not match the request method",
        ),
        (
            proof("GET", "https://api.test/other", &token, 0, "p-3"),
            "DPoP proof htu does not match the request URL",
        ),
        (
            proof("GET", URL, &token, 600, "p-4"),
            "DPoP proof is too old",
        ),
        (
            proof("GET", URL, "another-token", 0, "p-5"),
            "DPoP proof ath does not match the access token",
        ),
    ];
    for (proof, description) in cases {
        let answer = server.check(dpop_request("GET", &token, &proof)).await;
        assert_401(&answer, "DPoP", "invalid_dpop_proof", description);
    }

    let answer = server
        .check(Req::get("/api/things").header("authorization", &format!("DPoP {token}")))
        .await;
    assert_401(&answer, "DPoP", "invalid_dpop_proof", "DPoP proof missing");

    // Bound to another key.
    let other = dpop_token("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    let answer = server
        .check(dpop_request(
            "GET",
            &other,
            &proof("GET", URL, &other, 0, "p-6"),
        ))
        .await;
    assert_401(
        &answer,
        "DPoP",
        "invalid_token",
        "token is bound to another DPoP key",
    );

    // A DPoP-bound token presented as Bearer.
    let answer = server.check(Req::get("/api/things").bearer(&token)).await;
    assert_401(
        &answer,
        "Bearer",
        "invalid_token",
        "token is bound to a DPoP key: present it with the DPoP scheme and a proof",
    );

    // An unbound token presented as DPoP.
    let plain = kit::token(&claims());
    let answer = server
        .check(dpop_request(
            "GET",
            &plain,
            &proof("GET", URL, &plain, 0, "p-7"),
        ))
        .await;
    assert_401(
        &answer,
        "DPoP",
        "invalid_token",
        "token is not DPoP-bound: present it as a Bearer token",
    );
    server.stop().await;
}

async fn redis_available() -> bool {
    let up = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok();
    if !up {
        if std::env::var("SLUIS_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("Redis is required but not reachable at 127.0.0.1:6379");
        }
        eprintln!("SKIPPED: no Redis at 127.0.0.1:6379");
    }
    up
}

#[tokio::test]
async fn a_proof_used_at_one_replica_is_refused_at_another() {
    if !redis_available().await {
        return;
    }
    let prefix = format!("sluis-test:{}:{}:", std::process::id(), now());
    let config = format!(
        "{}dpop: {{replay_cache: {{redis_url: 'redis://127.0.0.1:6379', prefix: '{prefix}'}}}}\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let replica_a = Server::start(&setup.config_path()).await;
    let replica_b = Server::start(&setup.config_path()).await;
    let token = dpop_token(&jkt());
    // A Redis first seen without this prefix's epoch key may have lost proofs: proofs
    // from before that moment (and the leeway) are refused, so wait it out.
    assert_eq!(until_accepted(&replica_a, &token, "warm-up").await, Ok(200));
    let used = proof("GET", URL, &token, 0, "shared-1");
    assert_eq!(
        replica_a
            .check(dpop_request("GET", &token, &used))
            .await
            .status,
        200
    );
    let answer = replica_b.check(dpop_request("GET", &token, &used)).await;
    assert_401(
        &answer,
        "DPoP",
        "invalid_dpop_proof",
        "DPoP proof was already used",
    );
    let fresh = proof("GET", URL, &token, 0, "shared-2");
    assert_eq!(
        replica_b
            .check(dpop_request("GET", &token, &fresh))
            .await
            .status,
        200
    );
    replica_a.stop().await;
    replica_b.stop().await;
}

/// The gRPC status of a Check, or its HTTP status when it was answered.
async fn check_status(server: &Server, request: Req) -> Result<u16, tonic::Code> {
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(format!(
        "http://{}",
        server.grpc
    ))
    .await
    .unwrap();
    match client.check(request.into_check()).await {
        Ok(response) => Ok(Answer::from(response.into_inner()).status),
        Err(status) => Err(status.code()),
    }
}

/// A replica whose Redis is down starts and decides everything that needs no replay
/// cache; DPoP requests fail closed until Redis comes, then work without a restart.
#[tokio::test]
async fn a_replica_starts_and_serves_while_redis_is_down() {
    if !kit::redis_server::available() {
        return;
    }
    let port = kit::redis_server::free_port();
    let config = format!(
        "{}dpop: {{replay_cache: {{redis_url: 'redis://127.0.0.1:{port}', prefix: 'down:'}}}}\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;

    let plain = kit::token(&claims());
    assert_eq!(
        check_status(&server, Req::get("/api/things").bearer(&plain)).await,
        Ok(200)
    );
    let token = dpop_token(&jkt());
    let answer = check_status(
        &server,
        dpop_request("GET", &token, &proof("GET", URL, &token, 0, "down-1")),
    )
    .await;
    assert_eq!(answer, Err(tonic::Code::Unavailable), "fails closed");
    let admin = format!("http://{}/readyz", server.admin);
    let ready = reqwest::get(&admin).await.unwrap();
    assert_eq!(ready.status(), 200, "ready for what needs no replay cache");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["dpop_replay_cache"]["connected"], false, "{ready}");

    let _redis = kit::redis_server::RedisServer::start(port);
    assert_eq!(
        until_accepted(&server, &token, "up").await,
        Ok(200),
        "DPoP works once Redis is up"
    );
    let admin = format!("http://{}/readyz", server.admin);
    let ready: Value = reqwest::get(&admin).await.unwrap().json().await.unwrap();
    assert_eq!(ready["dpop_replay_cache"]["connected"], true, "{ready}");
    server.stop().await;
}

/// Sends DPoP requests, each with a new proof, until one is accepted or 15 s have passed:
/// the replay cache is connecting, or refusing proofs from before it was found empty.
async fn until_accepted(server: &Server, token: &str, jti: &str) -> Result<u16, tonic::Code> {
    until_accepted_with_nonce(server, token, jti, None).await
}

/// [`until_accepted`] with proofs that carry `nonce`.
async fn until_accepted_with_nonce(
    server: &Server,
    token: &str,
    jti: &str,
    nonce: Option<&str>,
) -> Result<u16, tonic::Code> {
    let mut answer = Err(tonic::Code::Unknown);
    for attempt in 0..150 {
        let jti = format!("{jti}-{attempt}");
        let proof = kit::dpop::proof_with_nonce("GET", URL, token, 0, &jti, nonce);
        answer = check_status(server, dpop_request("GET", token, &proof)).await;
        if answer == Ok(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answer
}

/// A restarted Sluis with the in-memory replay cache has forgotten the proofs it accepted:
/// one used before the restart is refused, as after a Redis loss, and a fresh one is not.
#[tokio::test]
async fn a_proof_used_before_a_restart_is_refused_after_it() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY)],
    );
    let token = dpop_token(&jkt());
    let before = Server::start(&setup.config_path()).await;
    assert_eq!(until_accepted(&before, &token, "warm-up").await, Ok(200));
    let used = proof("GET", URL, &token, 0, "before-restart");
    let answer = before.check(dpop_request("GET", &token, &used)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    before.stop().await;

    let after = Server::start(&setup.config_path()).await;
    let answer = after.check(dpop_request("GET", &token, &used)).await;
    assert_401(
        &answer,
        "DPoP",
        "invalid_dpop_proof",
        "DPoP proof predates the replay cache's last restart: send a new proof",
    );
    // A new proof is accepted once its `iat` less the leeway is after the restart.
    assert_eq!(
        until_accepted(&after, &token, "after-restart").await,
        Ok(200)
    );
    after.stop().await;
}

/// DPoP server nonces (RFC 9449 §8, §9) at the Envoy door and the forward-auth door, and
/// through NGINX and Envoy when installed: a
/// proof without a current nonce is answered 401 `use_dpop_nonce` with a fresh
/// `DPoP-Nonce`; with it, the request is decided; a forged nonce or one of a replica with
/// another key is not current; replicas sharing `dpop.nonce.key` accept each other's.
#[tokio::test]
async fn dpop_server_nonces_are_required_when_configured() {
    let key = "a nonce key of thirty-two bytes or more, shared";
    let config = |key_line: &str| {
        format!(
            "{}dpop:\n  nonce: {{required: true, lifetime: 5m{key_line}}}\n",
            config_yaml("127.0.0.1:0", "127.0.0.1:0")
        )
    };
    let shared = config(", key: {file: nonce.key}");
    let setup = Setup::new(&shared, &[("api.yaml", POLICY)]);
    std::fs::write(setup.dir.path().join("nonce.key"), format!("{key}\n")).unwrap();
    let server = Server::start(&setup.config_path()).await;
    let replica = Server::start(&setup.config_path()).await;
    let other_setup = Setup::new(&config(""), &[("api.yaml", POLICY)]);
    let other = Server::start(&other_setup.config_path()).await;
    let token = dpop_token(&jkt());
    let use_nonce = |answer: &Answer| {
        assert_eq!(answer.status, 401, "{answer:?}");
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("DPoP ") && challenge.contains("error=\"use_dpop_nonce\""),
            "{answer:?}"
        );
        assert_eq!(answer.body_json()["error"], "use_dpop_nonce");
        answer
            .header("dpop-nonce")
            .expect("a fresh nonce")
            .to_owned()
    };

    // No nonce: the nonce to use.
    let answer = server
        .check(dpop_request(
            "GET",
            &token,
            &proof("GET", URL, &token, 0, "n-0"),
        ))
        .await;
    let nonce = use_nonce(&answer);
    let with = |jti: &str, nonce: &str| {
        kit::dpop::proof_with_nonce("GET", URL, &token, 0, jti, Some(nonce))
    };
    // With it: decided (the replay cache may refuse proofs from just after its start;
    // a new jti each time until it does not).
    assert_eq!(
        until_accepted_with_nonce(&server, &token, "n-1", Some(&nonce)).await,
        Ok(200)
    );
    // A replica with the same key takes it; another key, a forged or a stale-looking
    // nonce is not current: the answer is a new nonce, not an allow.
    assert_eq!(
        until_accepted_with_nonce(&replica, &token, "n-2", Some(&nonce)).await,
        Ok(200),
        "a replica sharing the key"
    );
    let fresh = use_nonce(
        &other
            .check(dpop_request("GET", &token, &with("n-3", &nonce)))
            .await,
    );
    assert_ne!(fresh, nonce);
    for forged in ["AAAAAAAAAAA", "x", &nonce[..nonce.len() - 2]] {
        use_nonce(
            &server
                .check(dpop_request(
                    "GET",
                    &token,
                    &with(&format!("n-4-{forged}"), forged),
                ))
                .await,
        );
    }
    // A proof that is wrong in another way is invalid, whatever its nonce.
    let wrong_method = kit::dpop::proof_with_nonce("PUT", URL, &token, 0, "n-5", Some(&nonce));
    let answer = server
        .check(dpop_request("GET", &token, &wrong_method))
        .await;
    assert_eq!(
        answer.body_json()["error"],
        "invalid_dpop_proof",
        "{answer:?}"
    );
    assert!(answer.header("dpop-nonce").is_none());

    // The forward-auth door: the same challenge and the nonce as a response header.
    let client = reqwest::Client::new();
    let forward = |proof: String| {
        client
            .get(format!("http://{}/decisions", server.http))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.test")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/api/things")
            .send()
    };
    let response = forward(proof("GET", URL, &token, 0, "f-0")).await.unwrap();
    assert_eq!(response.status(), 401);
    let www = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(www.contains("error=\"use_dpop_nonce\""), "{www}");
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    let response = forward(with("f-1", &nonce)).await.unwrap();
    assert_eq!(response.status(), 200);

    // Through NGINX (examples/nginx/sluis.conf): the nonce reaches the client on the 401,
    // and the retry with it reaches the upstream. (That example sends Sluis the host
    // without its port: the proof names that URL.)
    if let Some(nginx) = kit::gateway::system_binary("nginx") {
        let (upstream_port, seen) = kit::gateway::upstream().await;
        let listen = free_port();
        let _nginx =
            kit::gateway::start_nginx(&nginx, setup.dir.path(), listen, server.http, upstream_port);
        kit::gateway::wait_for_port("nginx", listen).await;
        let seen_by_sluis = "http://127.0.0.1/api/things";
        let through = |proof: String| {
            client
                .get(format!("http://127.0.0.1:{listen}/api/things"))
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .send()
        };
        let response = through(proof("GET", seen_by_sluis, &token, 0, "g-0"))
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let www = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(www.contains("error=\"use_dpop_nonce\""), "{www}");
        let nonce = response.headers()["dpop-nonce"]
            .to_str()
            .unwrap()
            .to_owned();
        let retry =
            kit::dpop::proof_with_nonce("GET", seen_by_sluis, &token, 0, "g-1", Some(&nonce));
        assert_eq!(through(retry).await.unwrap().status(), 200);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
    // Through a real Envoy (the denial's headers reach the client).
    if let Some(envoy) = kit::gateway::envoy_binary() {
        let (upstream_port, seen) = kit::gateway::upstream().await;
        let (listen, envoy_admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let _envoy = kit::gateway::start_envoy(
            &envoy,
            dir.path(),
            listen,
            server.grpc.port(),
            upstream_port,
            envoy_admin,
        );
        let envoy_admin = format!("127.0.0.1:{envoy_admin}");
        kit::gateway::wait_until("envoy", || kit::gateway::http_ok(&envoy_admin, "/ready")).await;
        let url = format!("http://127.0.0.1:{listen}/api/things");
        let through = |proof: String| {
            client
                .get(&url)
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .send()
        };
        let response = through(proof("GET", &url, &token, 0, "e-0")).await.unwrap();
        assert_eq!(response.status(), 401);
        let www = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(www.contains("error=\"use_dpop_nonce\""), "{www}");
        let nonce = response.headers()["dpop-nonce"]
            .to_str()
            .unwrap()
            .to_owned();
        let retry = kit::dpop::proof_with_nonce("GET", &url, &token, 0, "e-1", Some(&nonce));
        assert_eq!(through(retry).await.unwrap().status(), 200);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
    for server in [server, replica, other] {
        server.stop().await;
    }
}
