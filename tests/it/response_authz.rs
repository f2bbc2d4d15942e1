//! Response authorization end to end through a real Envoy 1.40: the ext_authz filter
//! decides the request and seals a grant, the ext_proc filter sends the upstream's
//! answer to Sluis's ext_proc door, and the client sees only what the policy's
//! `response_rules` keep. Envoy runs `envoy/envoy-response.yaml` itself, ports replaced.
//!
//! Without the Envoy binary the test says so and passes, unless `SLUIS_REQUIRE_ENVOY=1`.

use sluis_test_kit as common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::gateway::*;
use common::*;
use serde_json::{Value, json};

const MCSD_POLICY: &str = r#"
policies:
  - id: mcsd
    match: {paths: ["/fhir/**"]}
    issuers: [test]
    caller:
      ura: {prefix: "ura|", from: ["claim:organization_ura"]}
    rules:
      - {id: read, allow: "request.method == 'GET'"}
    response_rules:
      resource_types: [Organization, Patient]
      rules:
        - id: restricted
          withhold: has(entry.resource.meta) && entry.resource.meta.security.exists(s, s.code == 'R')
        - id: own-organization
          keep: entry.resource.identifier.exists(i, i.system == 'http://fhir.nl/fhir/NamingSystem/ura' && i.value == caller.ura)
        - id: no-patients
          deny: entry.resource.resourceType == 'Patient'
          status: 451
          message: patients are not in this directory
"#;

const URA: &str = "http://fhir.nl/fhir/NamingSystem/ura";

fn org(id: &str, ura: &str, restricted: bool) -> Value {
    let mut resource = json!({"resourceType": "Organization", "id": id,
        "identifier": [{"system": URA, "value": ura}]});
    if restricted {
        resource["meta"] = json!({"security": [{"code": "R"}]});
    }
    json!({"fullUrl": format!("http://fhir.test/fhir/Organization/{id}"),
        "resource": resource, "search": {"mode": "match"}})
}

fn bundle(entries: Vec<Value>, links: &[&str]) -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(),
        "link": links.iter().map(|r| json!({"relation": r, "url": format!("http://fhir.test/fhir/Organization?_page={r}")})).collect::<Vec<_>>(),
        "entry": entries})
}

/// The FHIR server: fixed answers per path; counts what it serves.
async fn fhir_server() -> (u16, Arc<AtomicUsize>) {
    use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE, ETAG, LAST_MODIFIED};
    use axum::response::IntoResponse;
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let fhir = [
                (CONTENT_TYPE, "application/fhir+json"),
                (ETAG, "W/\"7\""),
                (LAST_MODIFIED, "Wed, 02 Dec 2026 10:00:00 GMT"),
            ];
            let json = |value: Value| (fhir, value.to_string()).into_response();
            match uri.path() {
                "/fhir/Organization" => json(bundle(
                    vec![
                        org("own-1", "1234", false),
                        org("own-2", "1234", false),
                        org("foreign", "9999", false),
                        org("own-secret", "1234", true),
                    ],
                    &["self"],
                )),
                "/fhir/Organization/own-1" => json(org("own-1", "1234", false)["resource"].clone()),
                "/fhir/Organization/foreign" => {
                    json(org("foreign", "9999", false)["resource"].clone())
                }
                "/fhir/paged" => json(bundle(
                    vec![org("own-1", "1234", false), org("foreign", "9999", false)],
                    &["self", "next", "last"],
                )),
                "/fhir/Patient" => json(bundle(
                    vec![
                        org("own-1", "1234", false),
                        json!({"resource": {"resourceType": "Patient", "id": "p1"}}),
                    ],
                    &[],
                )),
                "/fhir/huge" => json(bundle(
                    (0..40_000)
                        .map(|i| org(&format!("own-{i}"), "1234", false))
                        .collect(),
                    &[],
                )),
                "/fhir/xml" => (
                    [(CONTENT_TYPE, "application/fhir+xml")],
                    "<Bundle xmlns=\"http://hl7.org/fhir\"/>",
                )
                    .into_response(),
                "/fhir/gzip" => (
                    [
                        (CONTENT_TYPE, "application/fhir+json"),
                        (CONTENT_ENCODING, "gzip"),
                    ],
                    vec![0x1f, 0x8b, 0, 0],
                )
                    .into_response(),
                _ => (axum::http::StatusCode::NOT_FOUND, "no").into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, served)
}

/// Envoy on the example config with these ports; `ext_proc_port` is where its ext_proc
/// filter looks for Sluis (the same port as ext_authz, unless a test says otherwise).
fn start_response_envoy(
    envoy: &std::path::Path,
    dir: &std::path::Path,
    ports: (u16, u16, u16, u16),
    ext_proc_port: u16,
) -> Process {
    let (listen, sluis, upstream, admin) = ports;
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy-response.yaml"),
    )
    .unwrap();
    let mut config = example
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 8080", &format!("port_value: {listen}"))
        .replace("port_value: 9191", &format!("port_value: {sluis}"))
        .replace("port_value: 8081", &format!("port_value: {upstream}"));
    if ext_proc_port != sluis {
        // A second cluster for ext_proc only, so ext_authz still reaches Sluis.
        config = config
            .replacen(
                "envoy_grpc: { cluster_name: sluis }\n                timeout: 2s",
                "envoy_grpc: { cluster_name: sluis_proc }\n                timeout: 2s",
                1,
            )
            .replace(
                "  - name: upstream\n",
                &format!(
                    "  - name: sluis_proc\n    type: STATIC\n    connect_timeout: 0.25s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config:\n          http2_protocol_options: {{}}\n    load_assignment:\n      cluster_name: sluis_proc\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {ext_proc_port} }}\n\n  - name: upstream\n"
                ),
            );
        assert!(
            config.contains("cluster_name: sluis_proc }"),
            "edit did not apply"
        );
    }
    let path = dir.join(format!("envoy-{listen}.yaml"));
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

fn ids(body: &Value) -> Vec<String> {
    body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_filters_answers_by_the_response_rules() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, served) = fhir_server().await;
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    // Two replicas sharing a grant key: one decides requests, the other may judge answers.
    let with_key = |grpc: u16, admin: u16| {
        config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}"))
            + "ext_proc:\n  grant_key: {file: grant.key}\n"
    };
    let setup = Setup::new(&with_key(grpc, admin), &[("mcsd.yaml", MCSD_POLICY)]);
    std::fs::write(setup.dir.path().join("grant.key"), "k".repeat(40)).unwrap();
    let (grpc_b, admin_b) = (free_port(), free_port());
    let config_b = setup.dir.path().join("sluis-b.yaml");
    std::fs::write(&config_b, with_key(grpc_b, admin_b)).unwrap();
    let serve = |config: &std::path::Path| {
        Process(
            Command::new(env!("CARGO_BIN_EXE_sluis"))
                .args(["serve", "--config", config.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _sluis = serve(&setup.config_path());
    let _sluis_b = serve(&config_b);
    let ports = (listen, grpc, upstream_port, envoy_admin);
    let _envoy = start_response_envoy(&envoy, setup.dir.path(), ports, grpc);
    // The same, but its ext_proc filter finds no Sluis (nothing listens there).
    let (listen_dead, admin_dead) = (free_port(), free_port());
    let _envoy_dead = start_response_envoy(
        &envoy,
        setup.dir.path(),
        (listen_dead, grpc, upstream_port, admin_dead),
        free_port(),
    );
    // And one whose ext_proc filter asks the other replica.
    let (listen_b, admin_envoy_b) = (free_port(), free_port());
    let _envoy_b = start_response_envoy(
        &envoy,
        setup.dir.path(),
        (listen_b, grpc, upstream_port, admin_envoy_b),
        grpc_b,
    );
    wait_until("sluis b", || {
        http_ok(&format!("127.0.0.1:{admin_b}"), "/readyz")
    })
    .await;
    wait_until("envoy b", || {
        http_ok(&format!("127.0.0.1:{admin_envoy_b}"), "/ready")
    })
    .await;
    wait_until("sluis", || {
        http_ok(&format!("127.0.0.1:{admin}"), "/readyz")
    })
    .await;
    wait_until("envoy", || {
        http_ok(&format!("127.0.0.1:{envoy_admin}"), "/ready")
    })
    .await;
    wait_until("envoy without ext_proc", || {
        http_ok(&format!("127.0.0.1:{admin_dead}"), "/ready")
    })
    .await;

    let client = reqwest::Client::new();
    let mut claims = claims();
    claims["organization_ura"] = json!("1234");
    let token = token(&claims);
    let get = |port: u16, path: &str| {
        client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .bearer_auth(&token)
            .send()
    };

    // A search: own organisations kept, the foreign one and the restricted one gone;
    // the Bundle stays valid and says nothing of what was withheld.
    let response = get(listen, "/fhir/Organization").await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    // Nothing that describes or dates the unfiltered Bundle: its ETag, its length, when
    // it (perhaps only a withheld entry of it) last changed.
    assert!(headers.get("etag").is_none(), "{headers:?}");
    assert!(headers.get("last-modified").is_none(), "{headers:?}");
    let text = response.text().await.unwrap();
    let length = headers
        .get("content-length")
        .expect("the filtered body's length");
    assert_eq!(length.to_str().unwrap(), text.len().to_string());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ids(&body), ["own-1", "own-2"], "{body}");
    assert_eq!(body["total"], 2);
    assert!(
        !text.contains("foreign") && !text.contains("own-secret"),
        "{text}"
    );

    // The other replica judges it the same: the grant key is shared.
    let body: Value = get(listen_b, "/fhir/Organization")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), ["own-1", "own-2"], "{body}");

    // A paged search: `total` and `last` would tell the unfiltered count.
    let body: Value = get(listen, "/fhir/paged")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), ["own-1"]);
    assert!(body.get("total").is_none(), "{body}");
    let relations: Vec<&str> = body["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["relation"].as_str().unwrap())
        .collect();
    assert_eq!(relations, ["self", "next"]);

    // A single resource: whole, with its ETag (the body is unchanged), or denied.
    let response = get(listen, "/fhir/Organization/own-1").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "W/\"7\"");
    assert_eq!(
        response.headers()["last-modified"],
        "Wed, 02 Dec 2026 10:00:00 GMT"
    );
    let length = response.headers()["content-length"].clone();
    assert_eq!(
        length.to_str().unwrap(),
        response.text().await.unwrap().len().to_string()
    );
    let response = get(listen, "/fhir/Organization/foreign").await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(!response.text().await.unwrap().contains("foreign"));

    // A deny rule hit: the policy's status and message, none of the upstream's bytes.
    let response = get(listen, "/fhir/Patient").await.unwrap();
    assert_eq!(response.status(), 451);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("patients are not in this directory"),
        "{text}"
    );
    assert!(!text.contains("own-1") && !text.contains("p1"), "{text}");

    // Answers Sluis cannot read are denied (the policy's default, 502).
    for path in ["/fhir/xml", "/fhir/gzip"] {
        let response = get(listen, path).await.unwrap();
        assert_eq!(response.status(), 502, "{path}");
        assert!(!response.text().await.unwrap().contains("Bundle"), "{path}");
    }

    // Larger than Envoy buffers for ext_proc (4 MiB): Envoy's own error, never the
    // answer unjudged.
    let response = get(listen, "/fhir/huge").await;
    let outcome = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            assert!(!text.contains("own-1"), "an unjudged answer got through");
            format!("{status}")
        }
        Err(e) => format!("connection error: {e}"),
    };
    assert_eq!(outcome, "500");

    // No token: ext_authz denies, the upstream is never asked.
    let before = served.load(Ordering::SeqCst);
    let response = client
        .get(format!("http://127.0.0.1:{listen}/fhir/Organization"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let h = response.headers().clone();
    assert_eq!(status, 401, "{h:?} {}", response.text().await.unwrap());
    assert_eq!(served.load(Ordering::SeqCst), before);

    // The ext_proc door unreachable: Envoy fails closed with 500, and none of the
    // upstream's answer reaches the client although the upstream did answer.
    let before = served.load(Ordering::SeqCst);
    let response = get(listen_dead, "/fhir/Organization").await.unwrap();
    assert_eq!(response.status(), 500);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("own-1") && !text.contains("foreign"),
        "{text}"
    );
    assert_eq!(served.load(Ordering::SeqCst), before + 1);

    // Counted: answers by outcome on the ext_proc door, resources kept and withheld.
    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"sluis_response_entries_total{policy="mcsd",verdict="kept"}"#,
        r#"sluis_response_entries_total{policy="mcsd",verdict="withheld"}"#,
        r#"sluis_decisions_total{policy="mcsd",rule="response",outcome="filter",door="envoy-ext-proc"}"#,
        r#"sluis_decisions_total{policy="mcsd",rule="no-patients",outcome="deny",door="envoy-ext-proc"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    // Straight to the gRPC port, with a grant of one's own making and a body of one's
    // choice: denied, so the filtering cannot be used to probe flows or data.
    let forged = forged_exchange(grpc).await;
    assert_eq!(forged, 500);
}

/// An ext_proc server that accepts every stream and never answers on it.
struct Stalled;

#[tonic::async_trait]
impl envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor
    for Stalled
{
    type ProcessStream = std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<
                        envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse,
                        tonic::Status,
                    >,
                > + Send,
        >,
    >;

    async fn process(
        &self,
        request: tonic::Request<
            tonic::Streaming<envoy_types::pb::envoy::service::ext_proc::v3::ProcessingRequest>,
        >,
    ) -> Result<tonic::Response<Self::ProcessStream>, tonic::Status> {
        // Read what Envoy sends (so its writes do not block), answer nothing.
        let mut inbound = request.into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Ok(tonic::Response::new(Box::pin(
            futures_util::stream::pending(),
        )))
    }
}

/// Sluis's ext_proc stream accepted but never answered: Envoy gives up after the
/// example config's `message_timeout` and fails closed; the client gets none of the
/// upstream's answer although the upstream did answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ext_proc_times_out_and_fails_closed() {
    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, served) = fhir_server().await;
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExternalProcessorServer::new(Stalled))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(stalled)),
    );
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    let setup = Setup::new(
        &config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")),
        &[("mcsd.yaml", MCSD_POLICY)],
    );
    let _sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _envoy = start_response_envoy(
        &envoy,
        setup.dir.path(),
        (listen, grpc, upstream_port, envoy_admin),
        stalled_port,
    );
    wait_until("sluis", || {
        http_ok(&format!("127.0.0.1:{admin}"), "/readyz")
    })
    .await;
    wait_until("envoy", || {
        http_ok(&format!("127.0.0.1:{envoy_admin}"), "/ready")
    })
    .await;
    let mut claims = claims();
    claims["organization_ura"] = json!("1234");
    let before = served.load(Ordering::SeqCst);
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{listen}/fhir/Organization"))
        .bearer_auth(token(&claims))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 504, "{text}");
    assert!(
        !text.contains("own-1") && !text.contains("foreign"),
        "{text}"
    );
    assert_eq!(served.load(Ordering::SeqCst), before + 1);
}

/// Sends an answer with a forged grant to the ext_proc door; the status it answers.
async fn forged_exchange(grpc: u16) -> i32 {
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
    let last = common::ext_proc::exchange(
        &format!("127.0.0.1:{grpc}"),
        "eyJwb2xpY3kiOiJtY3NkIn0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        bundle(vec![org("x", "1234", false)], &[])
            .to_string()
            .into_bytes(),
    )
    .await;
    match last {
        Some(Response::ImmediateResponse(immediate)) => immediate.status.unwrap().code,
        other => panic!("not denied: {other:?}"),
    }
}
