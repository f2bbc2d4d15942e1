//! RFC 8705 certificate-bound tokens end to end: a real Envoy 1.40 terminates mutual TLS
//! (`scripts/install-envoy.sh` puts it in `.tools/bin/envoy`), its ext_authz filter sends
//! the client certificate (`include_peer_certificate: true`) to a real `sluis serve`
//! process, and a real upstream records what reaches it.
//!
//! The certificates are made here with rcgen: a CA, a server certificate for
//! `localhost`/127.0.0.1 and two client certificates (A and B), all signed by that CA.
//! Envoy has two listeners running the same filters: one terminating TLS and requiring a
//! client certificate from the CA, one plain HTTP (the only way to present no certificate
//! at all, since the TLS listener refuses such a handshake).
//!
//! Without the Envoy binary the test says so and passes, unless `SLUIS_REQUIRE_ENVOY=1`
//! (set by `.ci/run`), where a missing Envoy is a failure.

use sluis_test_kit as kit;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use kit::gateway::*;
use kit::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Waits (at most 10 s) for `ready`; fails early, with its log, if `process` exits.
async fn wait_until(what: &str, process: &mut Process, log: &Path, ready: impl Fn() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!(
                "{what} exited ({status}) before becoming ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what} did not become ready within 10 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

// --- certificates ---

/// A certificate with its key, as PEM, and its RFC 8705 `x5t#S256` thumbprint.
struct Pki {
    cert: String,
    key: String,
    thumbprint: String,
}

impl Pki {
    /// Certificate then key: what `reqwest::Identity::from_pem` reads.
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert, self.key).as_bytes()).unwrap()
    }
}

fn leaf_params(
    common_name: &str,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> rcgen::CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Zorginstelling");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params
}

fn issue(params: rcgen::CertificateParams, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>) -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Pki {
        cert: cert.pem(),
        key: key.serialize_pem(),
        thumbprint: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(cert.der())),
    }
}

/// A CA that signs certificates.
fn certificate_authority(name: &str) -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let pem = ca.pem();
    (ca, pem)
}

// --- configuration ---

/// Accepts any valid token of the test issuer on `/api/**` (the binding check runs before
/// the policy), and tells the upstream the certificate's CN when there is one.
const MTLS_POLICY: &str = r#"
policies:
  - id: api
    match: {paths: ["/api/**"]}
    issuers: [test]
    rules:
      - {id: any, allow: true}
    response:
      set_headers:
        x-user: token.sub
        x-client-cn: 'source.certificate != null ? source.certificate.subject_attributes.CN[0] : null'
"#;

/// One listener: the HTTP connection manager with the ext_authz filter of
/// `envoy/envoy-test.yaml.tmpl` (fail closed, peer certificate included), then the router;
/// with `tls`, a transport socket terminating TLS that requires a client certificate.
fn listener(name: &str, port: u16, tls: Option<&str>) -> String {
    format!(
        r#"
  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - {tls}filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          use_remote_address: true
          xff_num_trusted_hops: 0
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          common_http_protocol_options:
            headers_with_underscores_action: REJECT_REQUEST
          route_config:
            name: local_route
            virtual_hosts:
            - name: upstream
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc:
                  cluster_name: sluis
                timeout: 0.5s
              failure_mode_allow: false
              status_on_error:
                code: ServiceUnavailable
              include_peer_certificate: true
              validate_mutations: false
              clear_route_cache: false
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        tls = tls.unwrap_or("")
    )
}

fn envoy_yaml(
    tls_port: u16,
    plain_port: u16,
    sluis_port: u16,
    upstream_port: u16,
    admin_port: u16,
    dir: &Path,
) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    // Indented to sit under `- ` in `filter_chains`, before `filters:`.
    let tls = format!(
        r#"transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{server_cert}" }}
              private_key: {{ filename: "{server_key}" }}
            validation_context:
              trusted_ca: {{ filename: "{ca}" }}
      "#,
        server_cert = file("server.pem"),
        server_key = file("server-key.pem"),
        ca = file("ca.pem"),
    );
    format!(
        r#"
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}

static_resources:
  listeners:{tls_listener}{plain_listener}
  clusters:
  - name: sluis
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: sluis
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {sluis_port} }}

  - name: upstream
    type: STATIC
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
"#,
        tls_listener = listener("mtls", tls_port, Some(&tls)),
        plain_listener = listener("plain", plain_port, None),
    )
}

fn bound_to(thumbprint: &str) -> Value {
    let mut claims = claims();
    claims["cnf"] = json!({"x5t#S256": thumbprint});
    claims
}

/// A client trusting only the test CA, presenting `identity` if given.
fn client(ca: &str, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

/// Status, challenge and body of a 401 exactly as Sluis words them, through Envoy.
async fn assert_401(response: reqwest::Response, description: &str) {
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        format!(
            "Bearer realm=\"sluis\", error=\"invalid_token\", error_description=\"{description}\""
        )
        .as_str()
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.text().await.unwrap(),
        format!(r#"{{"error":"invalid_token","message":"{description}"}}"#)
    );
}

/// The request failed because the server ended the handshake with this TLS alert (not,
/// say, because nothing was listening).
fn assert_tls_alert(response: reqwest::Result<reqwest::Response>, alert: &str) {
    let error = response.expect_err("the TLS listener accepted the client");
    let mut chain = format!("{error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(" <- {cause:?}"));
        source = cause.source();
    }
    // With TLS 1.3 the client may finish its side of the handshake before the server's
    // verdict arrives; under load it then sees the connection close instead of the alert.
    // Either way the request failed at the TLS layer: what matters is that no other alert
    // (and no HTTP answer) came back.
    let closed = [
        "connection reset",
        "ConnectionReset",
        "broken pipe",
        "BrokenPipe",
        "connection closed",
        "UnexpectedEof",
        "IncompleteMessage",
        // hyper's pool saw the connection die before the request could go out.
        "connection was not ready",
    ];
    assert!(
        chain.contains(&format!("AlertReceived({alert})"))
            || (!chain.contains("AlertReceived") && closed.iter().any(|c| chain.contains(c))),
        "expected TLS alert {alert} (or the connection closed): {chain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_terminates_mtls_and_sluis_enforces_certificate_binding() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (grpc, admin, tls_port, plain_port, envoy_admin) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );

    let setup = Setup::new(
        &config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")),
        &[("api.yaml", MTLS_POLICY)],
    );
    let dir = setup.dir.path();

    // The PKI: a CA, Envoy's server certificate, clients A and B.
    let (ca, ca_pem) = certificate_authority("Sluis Test CA");
    let server = issue(
        leaf_params(
            "localhost",
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ),
        &ca,
    );
    let client_a = issue(
        leaf_params(
            "client-a",
            &["client-a.example.nl"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ),
        &ca,
    );
    let client_b = issue(
        leaf_params(
            "client-b",
            &["client-b.example.nl"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ),
        &ca,
    );
    assert_ne!(client_a.thumbprint, client_b.thumbprint);
    std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.join("server-key.pem"), &server.key).unwrap();
    std::fs::write(dir.join("client-a.pem"), &client_a.cert).unwrap();
    std::fs::write(dir.join("client-a-key.pem"), &client_a.key).unwrap();
    std::fs::write(dir.join("client-b.pem"), &client_b.cert).unwrap();
    std::fs::write(dir.join("client-b-key.pem"), &client_b.key).unwrap();

    let sluis_log = dir.join("sluis.log");
    let mut sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sluis_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let envoy_config = dir.join("envoy.yaml");
    std::fs::write(
        &envoy_config,
        envoy_yaml(tls_port, plain_port, grpc, upstream_port, envoy_admin, dir),
    )
    .unwrap();
    let envoy_log = dir.join("envoy.log");
    let mut envoy = Process(
        Command::new(envoy)
            .args([
                "-c",
                envoy_config.to_str().unwrap(),
                "--disable-hot-restart",
            ])
            .args(["--log-level", "warning", "--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&envoy_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let sluis_admin = format!("127.0.0.1:{admin}");
    wait_until("sluis", &mut sluis, &sluis_log, || {
        http_ok(&sluis_admin, "/readyz")
    })
    .await;
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", &mut envoy, &envoy_log, || {
        http_ok(&envoy_admin, "/ready")
    })
    .await;

    let tls_url = format!("https://127.0.0.1:{tls_port}/api/things");
    let plain_url = format!("http://127.0.0.1:{plain_port}/api/things");
    let as_a = client(&ca_pem, Some(client_a.identity()));
    let as_b = client(&ca_pem, Some(client_b.identity()));
    let bound = token(&bound_to(&client_a.thumbprint));
    let unbound = token(&claims());

    // 1. Bound to A, presented over TLS with A's certificate: through, and the policy saw
    //    the certificate Envoy verified (a client-sent copy of the header is replaced).
    let response = as_a
        .get(&tls_url)
        .bearer_auth(&bound)
        .header("x-client-cn", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    let headers = &echoed["headers"];
    assert_eq!(headers["x-client-cn"], "client-a", "{echoed}");
    assert_eq!(headers["x-user"], "user-1", "{echoed}");
    assert!(
        headers.get("authorization").is_none(),
        "token leaked upstream: {echoed}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // 2. The same token with B's certificate (equally trusted by Envoy): refused by Sluis.
    let response = as_b.get(&tls_url).bearer_auth(&bound).send().await.unwrap();
    assert_401(response, "client certificate does not match the token").await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a denied request went upstream"
    );

    // 3. The same token without any certificate (the plain listener): refused by Sluis.
    let plain = client(&ca_pem, None);
    let response = plain
        .get(&plain_url)
        .bearer_auth(&bound)
        .send()
        .await
        .unwrap();
    assert_401(
        response,
        "token is bound to a client certificate, but none was presented",
    )
    .await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a denied request went upstream"
    );

    // 4. An unbound token with B's certificate: through (binding only applies with `cnf`),
    //    and the policy sees B.
    let response = as_b
        .get(&tls_url)
        .bearer_auth(&unbound)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-client-cn"], "client-b", "{echoed}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    // An unbound token without a certificate: through, and a client-supplied
    // x-client-cn is removed rather than passed on.
    let response = plain
        .get(&plain_url)
        .bearer_auth(&unbound)
        .header("x-client-cn", "client-a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert!(
        echoed["headers"].get("x-client-cn").is_none(),
        "spoofed x-client-cn passed: {echoed}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);

    // The TLS listener itself refuses a client without a certificate, and one whose
    // certificate another CA signed: Envoy, not Sluis, vouches for the certificate.
    let response = plain.get(&tls_url).bearer_auth(&unbound).send().await;
    assert_tls_alert(response, "CertificateRequired");
    let (rogue_ca, _) = certificate_authority("Rogue CA");
    let rogue = issue(
        leaf_params(
            "client-a",
            &["client-a.example.nl"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ),
        &rogue_ca,
    );
    let response = client(&ca_pem, Some(rogue.identity()))
        .get(&tls_url)
        .bearer_auth(token(&bound_to(&rogue.thumbprint)))
        .send()
        .await;
    assert_tls_alert(response, "UnknownCA");
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "a refused client went upstream"
    );
}
