//! Tracing through the real `sluis serve`, exporting to a loopback OTLP receiver standing
//! in for a collector (gRPC: the collector's TraceService on tonic; HTTP: protobuf posted
//! to `/v1/traces` on axum). A decision's span joins the trace of the request's
//! `traceparent` at every door, follows its caller's sampling choice, carries door,
//! policy, rule, outcome and status but no token, subject or path, and names the same
//! trace as the decision log. Off means nothing is exported; a collector that is down
//! changes no decision and no exit.

use sluis_test_kit as kit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use kit::process::{Listeners, SluisProcess};
use kit::{POLICY, Req, Setup, claims, token};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, parent: &str, flags: &str) -> String {
    format!("00-{trace}-{parent}-{flags}")
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub(crate) struct Exported {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    pub(crate) name: String,
    kind: i32,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
    /// Every string in the span, events and resource included, to look for leaks in.
    pub(crate) text: String,
}

impl Exported {
    fn attribute(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no attribute `{key}` in {self:#?}"))
    }
}

fn value_text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn key_values(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
        .collect()
}

/// What the receiver got, as spans.
#[derive(Clone, Default)]
pub(crate) struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    pub(crate) fn spans(&self) -> Vec<Exported> {
        let mut spans = Vec::new();
        for request in self.0.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| key_values(&r.attributes))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        let attributes = key_values(&span.attributes);
                        let text = format!("{span:?} {resource:?}");
                        spans.push(Exported {
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: span.kind,
                            attributes,
                            resource: resource.clone(),
                            text,
                        });
                    }
                }
            }
        }
        spans
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A collector stand-in speaking OTLP/gRPC.
pub(crate) async fn grpc_receiver() -> (String, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (format!("http://{address}"), received)
}

/// A collector stand-in speaking OTLP/HTTP with protobuf bodies.
async fn http_receiver() -> (String, Received) {
    let received = Received::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    assert_eq!(
                        headers.get("content-type").unwrap(),
                        "application/x-protobuf"
                    );
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    store.0.lock().unwrap().push(request);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse {
                            partial_success: None,
                        }
                        .encode_to_vec(),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    // A bare endpoint: Sluis adds `/v1/traces`.
    (format!("http://{address}"), received)
}

fn tracing_block(endpoint: &str, protocol: &str, ratio: f64) -> String {
    format!(
        "tracing:\n  otlp: {{endpoint: '{endpoint}', protocol: {protocol}, timeout: 3s}}\n  sampling_ratio: {ratio}\n  service_name: sluis-test\n"
    )
}

/// A server with the test policy, the decision log in a file, and `extra` config.
fn start(extra: &str, env: &[(&str, &str)]) -> (Setup, SluisProcess) {
    let listeners = Listeners::free();
    let config = format!(
        "{}decision_log: {{sink: file, path: decisions.log}}\n{extra}",
        listeners.config_yaml()
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let process = SluisProcess::spawn(
        env!("CARGO_BIN_EXE_sluis"),
        &setup.config_path(),
        listeners,
        env,
    );
    (setup, process)
}

async fn check(process: &SluisProcess, request: Req) -> kit::Answer {
    let mut client = AuthorizationClient::connect(format!("http://{}", process.listeners.grpc))
        .await
        .unwrap();
    kit::Answer::from(
        client
            .check(request.into_check())
            .await
            .unwrap()
            .into_inner(),
    )
}

/// SIGTERM, a clean exit, and the decision log's lines.
async fn stop(setup: &Setup, mut process: SluisProcess) -> (String, Vec<Value>) {
    process.terminate();
    let status = process.exit_status().await;
    let output = process.log();
    assert!(status.success(), "{status:?}\n{output}");
    let lines = std::fs::read_to_string(setup.dir.path().join("decisions.log"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (output, lines)
}

#[tokio::test]
async fn a_decision_span_joins_the_callers_trace_over_grpc() {
    let (endpoint, received) = grpc_receiver().await;
    let (setup, mut process) = start(&tracing_block(&endpoint, "grpc", 1.0), &[]);
    process.wait_ready().await;

    let token = token(&claims());
    let joined = check(
        &process,
        Req::get("/api/Patient/999999990")
            .bearer(&token)
            .header("traceparent", &traceparent(TRACE_ID, PARENT_ID, "01"))
            .header("tracestate", "vendor=opaque"),
    )
    .await;
    assert_eq!(joined.status, 200);
    let root = check(&process, Req::get("/api/admin/x").bearer(&token)).await;
    assert_eq!(root.status, 403);
    let malformed = check(
        &process,
        Req::get("/api/x").header("traceparent", "00-not-a-trace-01"),
    )
    .await;
    assert_eq!(malformed.status, 401);

    // Stopped at once, well before the batch's 5 s delay: the spans that arrive were
    // sent by the shutdown, which finishes before the process exits.
    let (output, log) = stop(&setup, process).await;
    let spans = received.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}\n{output}");

    let span = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("no span in the caller's trace: {spans:#?}"));
    assert_eq!(span.parent_span_id, PARENT_ID);
    assert_ne!(span.span_id, PARENT_ID);
    assert_eq!(span.name, "sluis.decide");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.attribute("sluis.door"), "envoy-grpc");
    assert_eq!(span.attribute("sluis.policy"), "api");
    assert_eq!(span.attribute("sluis.rule"), "get");
    assert_eq!(span.attribute("sluis.outcome"), "allow");
    assert_eq!(span.attribute("sluis.status"), "200");
    assert_eq!(span.resource["service.name"], "sluis-test");
    for span in &spans {
        for secret in [token.as_str(), "user-1", "client-1", "999999990", "/api/"] {
            assert!(!span.text.contains(secret), "`{secret}` in {span:#?}");
        }
    }

    // Without a (valid) traceparent, a decision starts a trace of its own.
    let roots: Vec<&Exported> = spans.iter().filter(|s| s.trace_id != TRACE_ID).collect();
    assert_eq!(roots.len(), 2);
    for root in &roots {
        assert_eq!(root.parent_span_id, "", "{root:#?}");
        assert_eq!(root.trace_id.len(), 32);
    }
    assert_ne!(roots[0].trace_id, roots[1].trace_id);
    let denied = roots
        .iter()
        .find(|s| s.attribute("sluis.rule") == "no-admin")
        .unwrap();
    assert_eq!(denied.attribute("sluis.outcome"), "deny");
    assert_eq!(denied.attribute("sluis.status"), "403");

    // The decision log names the same traces as the spans.
    assert_eq!(log.len(), 3, "{log:#?}");
    let mut logged: Vec<&str> = log
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap())
        .collect();
    let mut exported: Vec<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    logged.sort();
    exported.sort();
    assert_eq!(logged, exported);
}

#[tokio::test]
async fn every_door_follows_the_callers_sampling_choice_over_http() {
    let (endpoint, received) = http_receiver().await;
    // Sluis samples no trace of its own: what is exported was sampled by the caller.
    let (setup, mut process) = start(&tracing_block(&endpoint, "http", 0.0), &[]);
    process.wait_ready().await;
    let http = process.listeners.http;
    let client = reqwest::Client::new();
    let token = token(&claims());
    let trace = |n: u8| format!("{TRACE_ID:.30}{n:02x}");

    // gRPC: sampled by the caller, not sampled, no trace at all.
    let sampled = traceparent(&trace(1), PARENT_ID, "01");
    let unsampled = traceparent(&trace(2), PARENT_ID, "00");
    for (header, status) in [(Some(&sampled), 200), (Some(&unsampled), 200), (None, 200)] {
        let mut request = Req::get("/api/x").bearer(&token);
        if let Some(header) = header {
            request = request.header("traceparent", header);
        }
        assert_eq!(check(&process, request).await.status, status);
    }
    // Forward-auth: the checked request's own headers.
    let forward = client
        .get(format!("http://{http}/decisions/api/x"))
        .bearer_auth(&token)
        .header("traceparent", traceparent(&trace(3), PARENT_ID, "01"))
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status(), 200);
    // OPA (Kong): the headers in the input.
    let kong = client
        .post(format!("http://{http}/v1/data/sluis/allow"))
        .json(&json!({"input": {"request": {"http": {
            "method": "GET", "path": "/api/x", "host": "api.test", "scheme": "https",
            "headers": {
                "authorization": format!("Bearer {token}"),
                "traceparent": traceparent(&trace(4), PARENT_ID, "01"),
            },
        }}}}))
        .send()
        .await
        .unwrap();
    let kong: Value = kong.json().await.unwrap();
    assert_eq!(kong["result"]["allow"], true, "{kong}");
    // AuthZEN: the call's own headers (an evaluation is not an HTTP request); no policy
    // matches evaluations here, so the span records a denial by `no-policy`.
    let authzen: Value = client
        .post(format!("http://{http}/access/v1/evaluation"))
        .header("traceparent", traceparent(&trace(5), PARENT_ID, "01"))
        .json(&json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "read"},
            "resource": {"type": "document", "id": "1"},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(authzen["decision"], false);
    // Care Services Proxy (v2, no use case): the question's headers, else the call's.
    let care: Value = client
        .post(format!("http://{http}/authorization/search-narrowing"))
        .bearer_auth(&token)
        .header("traceparent", traceparent(&trace(6), PARENT_ID, "01"))
        .json(&json!({
            "introspection_result": {"active": true},
            "http_request": {"method": "GET", "path": "/api/x", "headers": {}},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(care["allowed"], true, "{care}");

    let (output, _) = stop(&setup, process).await;
    let spans = received.spans();
    let doors: HashMap<String, String> = spans
        .iter()
        .map(|s| (s.trace_id.clone(), s.attribute("sluis.door").to_owned()))
        .collect();
    let expected = HashMap::from([
        (trace(1), "envoy-grpc".to_string()),
        (trace(3), "forward-auth".to_string()),
        (trace(4), "opa-kong".to_string()),
        (trace(5), "authzen".to_string()),
        (trace(6), "care-services".to_string()),
    ]);
    assert_eq!(doors, expected, "{spans:#?}\n{output}");
    for span in &spans {
        assert_eq!(span.parent_span_id, PARENT_ID);
    }
    let authzen = spans.iter().find(|s| s.trace_id == trace(5)).unwrap();
    assert_eq!(authzen.attribute("sluis.rule"), "no-policy");
    assert_eq!(authzen.attribute("sluis.status"), "403");
    assert!(!authzen.text.contains("alice"), "{authzen:#?}");
}

#[tokio::test]
async fn without_a_tracing_block_nothing_is_exported() {
    let (endpoint, received) = grpc_receiver().await;
    // Not even when the standard OpenTelemetry variables point at a collector.
    let (setup, mut process) = start(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ],
    );
    process.wait_ready().await;
    let answer = check(
        &process,
        Req::get("/api/x")
            .bearer(&token(&claims()))
            .header("traceparent", &traceparent(TRACE_ID, PARENT_ID, "01")),
    )
    .await;
    assert_eq!(answer.status, 200);
    let (_, log) = stop(&setup, process).await;
    assert!(received.spans().is_empty());
    // The decision log still names the caller's trace, from the header.
    assert_eq!(log[0]["trace_id"], TRACE_ID);
}

#[tokio::test]
async fn a_collector_that_is_down_changes_no_decision() {
    // A collector that is down: every connection is closed at once. The port stays bound
    // for the whole test: a port merely left closed could be taken by another test's
    // receiver meanwhile, which then received this test's spans.
    let refuser = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = refuser.local_addr().unwrap();
    let refusing = tokio::spawn(async move {
        loop {
            if let Ok((connection, _)) = refuser.accept().await {
                drop(connection);
            }
        }
    });
    let (setup, mut process) = start(
        &tracing_block(&format!("http://{closed}"), "grpc", 1.0),
        &[],
    );
    process.wait_ready().await;
    let token = token(&claims());
    for path in ["/api/x", "/api/admin/x"] {
        let answer = check(
            &process,
            Req::get(path)
                .bearer(&token)
                .header("traceparent", &traceparent(TRACE_ID, PARENT_ID, "01")),
        )
        .await;
        assert_eq!(answer.status, if path == "/api/x" { 200 } else { 403 });
    }
    let (output, log) = stop(&setup, process).await;
    assert_eq!(log.len(), 2);
    assert!(
        output.contains("tracing: cannot export spans"),
        "the failed export is not logged:\n{output}"
    );
    assert!(!output.contains(&token), "a token leaked into the log");
    refusing.abort();
}

#[test]
fn validate_names_a_bad_tracing_block() {
    let listeners = Listeners::free();
    let config = format!(
        "{}tracing:\n  otlp: {{endpoint: 'collector:4317'}}\n",
        listeners.config_yaml()
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let path = setup.config_path();
    let (code, _, stderr) = crate::sluis(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("sluis.yaml: tracing: `otlp.endpoint` `collector:4317`"),
        "{stderr}"
    );
}

/// A token sent where it does not belong (`?access_token=`, the path, a credential-named
/// parameter) is refused, and reaches neither the decision log, nor the service's log at
/// trace level, nor a span: the client chooses where to put it, so every logged path,
/// query and reason is masked.
#[tokio::test]
async fn a_token_in_the_query_or_path_reaches_no_log_and_no_span() {
    let (endpoint, received) = grpc_receiver().await;
    let (setup, mut process) = start(
        &tracing_block(&endpoint, "grpc", 1.0),
        &[("RUST_LOG", "trace")],
    );
    process.wait_ready().await;
    let http = process.listeners.http;
    let jwt = token(&claims());
    let signature = jwt.rsplit('.').next().unwrap().to_owned();
    let opaque = "opaque-secret-0123456789abcdef";

    let targets = [
        format!("/api/x?access_token={jwt}"),
        format!("/api/x?a=1&id_token={jwt}&b=2"),
        format!("/api/{jwt}/x"),
        format!("/api/x?q={jwt}"),
        format!("/api/x?client_secret={opaque}"),
    ];
    for target in &targets {
        let answer = check(
            &process,
            Req::get(target).header("traceparent", &traceparent(TRACE_ID, PARENT_ID, "01")),
        )
        .await;
        assert_eq!(answer.status, 401, "{target}");
        let forward = reqwest::Client::new()
            .get(format!("http://{http}/decisions{target}"))
            .header("traceparent", traceparent(TRACE_ID, PARENT_ID, "01"))
            .send()
            .await
            .unwrap();
        assert_eq!(forward.status(), 401, "{target}");
    }

    let (output, log) = stop(&setup, process).await;
    let spans = received.spans();
    assert_eq!(log.len(), 2 * targets.len(), "{log:#?}");
    assert_eq!(spans.len(), 2 * targets.len(), "{spans:#?}");
    // The test means something only if the service's log is talkative.
    assert!(
        output.contains("TRACE"),
        "RUST_LOG=trace logged no trace line"
    );
    let logged = log
        .iter()
        .map(|line| line.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(logged.contains("access_token=[credential]"), "{logged}");
    let exported = format!("{spans:#?}");
    for (name, text) in [
        ("decision log", &logged),
        ("service log", &output),
        ("spans", &exported),
    ] {
        for secret in [jwt.as_str(), signature.as_str(), opaque] {
            assert!(!text.contains(secret), "`{secret}` in the {name}:\n{text}");
        }
    }
}
