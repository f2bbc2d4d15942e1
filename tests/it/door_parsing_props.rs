//! Property-based tests of every door's request parsing: arbitrary methods, paths,
//! queries, header names and values and bodies, sent to the forward-auth, OPA, AuthZEN
//! and Care Services doors over HTTP and translated from Envoy `CheckRequest`s, never
//! panic the server and never produce an allow without a valid token, under the example
//! policies (`examples/config.yaml`, which has no anonymous policy).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use sluis_core::engine::Engine;

struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    http: SocketAddr,
    client: reqwest::Client,
}

/// The example engine, its HTTP doors served on a loopback port, shared by every case.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = sluis_config::Config::load(Path::new("examples/config.yaml")).unwrap();
        let (engine, http) = runtime.block_on(async {
            let engine = Arc::new(config.build_engine(std::sync::Arc::default()).unwrap());
            for issuer in engine.authenticator().issuers() {
                issuer.refresh().await.unwrap();
            }
            let router = sluis::doors::http::router(engine.clone(), &config).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let http = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, router).await });
            (engine, http)
        });
        Harness {
            runtime,
            engine,
            http,
            client: reqwest::Client::new(),
        }
    })
}

/// Header names: arbitrary tokens, and the ones the doors read.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,16}",
        Just("authorization".to_owned()),
        Just("dpop".to_owned()),
        Just("x-forwarded-uri".to_owned()),
        Just("x-forwarded-method".to_owned()),
        Just("x-forwarded-host".to_owned()),
        Just("x-forwarded-prefix".to_owned()),
        Just("x-original-uri".to_owned()),
        Just("x-original-method".to_owned()),
        Just("x-http-method-override".to_owned()),
        Just("x-sluis-body-in-header".to_owned()),
        Just("content-type".to_owned()),
        Just("traceparent".to_owned()),
    ]
}

/// Header values, including credentials that are not valid tokens.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,64}",
        "Bearer [ -~]{0,64}",
        "(Bearer|DPoP|bearer|Basic) eyJ[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}",
        "Bearer eyJhbGciOiJub25lIn0\\.[A-Za-z0-9_-]{0,40}\\.",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((header_name(), header_value()), 0..8)
}

/// Paths and queries: arbitrary printable text under the example policies' prefixes.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[ -~]{0,64}",
        "/fhir/(Patient|Task|Observation|Organization)[ -~]{0,40}",
        "/iwlz/[ -~]{0,40}",
        "/[A-Za-z0-9/._%-]{0,40}\\?[ -~]{0,40}",
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        Just("DELETE".to_owned()),
        "[A-Za-z]{1,10}",
        any::<String>(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "[ -~]{0,128}".prop_map(String::into_bytes),
        Just(br#"{"query":"{ a }"}"#.to_vec()),
    ]
}

/// A JSON value of a few levels, for the JSON doors' inputs.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
        "[ -~]{0,32}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn header_object(headers: &[(String, String)]) -> Value {
    Value::Object(
        headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect(),
    )
}

/// Sends a request to an HTTP door; `None` when the client cannot even send it (a header
/// value no HTTP message can carry). Panics when the server dropped the connection,
/// which is what a panicking handler looks like from outside.
fn send(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Option<(u16, String)> {
    let harness = harness();
    let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
    let mut request = harness
        .client
        .request(method, format!("http://{}{path}", harness.http))
        .body(body);
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = reqwest::header::HeaderValue::from_bytes(value.as_bytes()).ok()?;
        request = request.header(name, value);
    }
    let request = request.build().ok()?;
    harness.runtime.block_on(async {
        let response = harness
            .client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("the door dropped the request: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        Some((status, text))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn forward_auth_never_allows_without_a_valid_token(
        method in method(),
        target in target(),
        headers in headers(),
        body in body(),
    ) {
        if let Some((status, text)) = send(&method, &format!("/decisions{target}"), &headers, body) {
            prop_assert_ne!(status, 200, "{}", text);
            prop_assert!(status < 500 || status == 503, "{} {}", status, text);
        }
    }

    #[test]
    fn the_opa_door_never_allows_without_a_valid_token(
        method in method(),
        target in target(),
        headers in headers(),
        extra in json_value(),
        raw in body(),
        kong in any::<bool>(),
        whole in any::<bool>(),
    ) {
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let http = json!({
            "method": method,
            "path": path,
            "host": "fhir.example.org",
            "scheme": "https",
            "querystring": {"q": query, "x": extra.clone()},
            "headers": header_object(&headers),
            "body": String::from_utf8_lossy(&raw),
        });
        let document = if !whole {
            raw
        } else if kong {
            serde_json::to_vec(&json!({"input": {"request": {"http": http}, "client_ip": extra}})).unwrap()
        } else {
            serde_json::to_vec(&json!({"input": {"type": "http", "request": http, "var": {"x": extra}}})).unwrap()
        };
        let json = [("content-type".to_owned(), "application/json".to_owned())];
        if let Some((status, text)) = send("POST", "/v1/data/sluis/allow", &json, document) {
            let answer: Value = serde_json::from_str(&text).unwrap_or_default();
            prop_assert_ne!(&answer["result"]["allow"], &Value::Bool(true), "{}", text);
            prop_assert!(status < 500, "{} {}", status, text);
        }
    }

    #[test]
    fn the_authzen_door_never_allows_without_a_valid_token(
        subject in json_value(),
        action in json_value(),
        resource in json_value(),
        context in json_value(),
        raw in body(),
        whole in any::<bool>(),
        batch in any::<bool>(),
        headers in headers(),
    ) {
        let evaluation = json!({"subject": subject, "action": action, "resource": resource, "context": context});
        let (path, document) = match (whole, batch) {
            (false, _) => ("/access/v1/evaluation", raw),
            (true, false) => ("/access/v1/evaluation", serde_json::to_vec(&evaluation).unwrap()),
            (true, true) => (
                "/access/v1/evaluations",
                serde_json::to_vec(&json!({"evaluations": [evaluation.clone(), evaluation]})).unwrap(),
            ),
        };
        let mut headers = headers;
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        if let Some((status, text)) = send("POST", path, &headers, document) {
            prop_assert!(!text.contains("\"decision\":true"), "{}", text);
            prop_assert!(status < 500, "{} {}", status, text);
        }
    }

    #[test]
    fn the_care_services_door_never_allows_without_a_valid_token(
        method in method(),
        target in target(),
        headers in headers(),
        introspection in json_value(),
        raw in body(),
        whole in any::<bool>(),
        v2 in any::<bool>(),
    ) {
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let document = match (whole, v2) {
            (false, _) => raw,
            (true, false) => serde_json::to_vec(&json!({
                "use_case": path, "query": target, "method": method,
                "requester": {"organization_identifier": query},
            })).unwrap(),
            (true, true) => serde_json::to_vec(&json!({
                "introspection_result": {"active": true, "x": introspection},
                "http_request": {
                    "method": method, "path": path,
                    "query_params": {"q": query, "r": [query, path]},
                    "headers": header_object(&headers),
                },
            })).unwrap(),
        };
        let json = [("content-type".to_owned(), "application/json".to_owned())];
        for endpoint in ["/authorization/search-narrowing", "/authorization/scopes"] {
            if let Some((status, text)) = send("POST", endpoint, &json, document.clone()) {
                prop_assert_ne!(status, 200, "{}: {}", endpoint, text);
                prop_assert!(status < 500 || status == 503, "{} {}", status, text);
            }
        }
    }

    #[test]
    fn an_envoy_check_never_allows_without_a_valid_token(
        method in method(),
        target in target(),
        headers in headers(),
        body in body(),
        host in "[ -~]{0,32}",
        context in prop::collection::hash_map("[a-z_]{1,12}", "[ -~]{0,16}", 0..3),
    ) {
        let check = CheckRequest {
            attributes: Some(AttributeContext {
                context_extensions: context,
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        method,
                        path: target,
                        host,
                        scheme: "https".into(),
                        protocol: "HTTP/1.1".into(),
                        headers: headers.into_iter().collect::<HashMap<_, _>>(),
                        raw_body: body,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let harness = harness();
        let access = sluis::doors::envoy::access_request(check);
        let decided = harness.runtime.block_on(harness.engine.decide(&access));
        if let Ok(decision) = decided {
            prop_assert!(!decision.is_allow(), "{:?}", decision);
        }
    }
}
