//! Information sources against loopback stand-ins: a FHIR server and a userinfo
//! endpoint, each counting its calls. Decisions go straight to the engine.

use sluis_test_kit as kit;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use sluis_core::decision::{Cause, Decision};
use sluis_core::engine::Engine;
use sluis_core::request::AccessRequest;

/// What a stand-in answers: status, content type, body and extra headers.
#[derive(Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(body: serde_json::Value) -> Reply {
        Reply {
            status: 200,
            content_type: "application/fhir+json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: "{}".into(),
            headers: Vec::new(),
        }
    }
}

type Script = dyn Fn(&str, &str, Option<&str>) -> Reply + Send + Sync;

/// A loopback HTTP server answering by a script of (path and query, body, authorization).
#[derive(Clone)]
pub(crate) struct StandIn {
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) delay_ms: Arc<AtomicU64>,
    script: Arc<Mutex<Arc<Script>>>,
    pub(crate) bodies: Arc<Mutex<Vec<String>>>,
    address: std::net::SocketAddr,
}

impl StandIn {
    pub(crate) async fn start(
        script: impl Fn(&str, &str, Option<&str>) -> Reply + Send + Sync + 'static,
    ) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stand_in = StandIn {
            calls: Arc::default(),
            delay_ms: Arc::default(),
            script: Arc::new(Mutex::new(Arc::new(script))),
            bodies: Arc::default(),
            address,
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(stand_in.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        stand_in
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn rescript(
        &self,
        script: impl Fn(&str, &str, Option<&str>) -> Reply + Send + Sync + 'static,
    ) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

async fn answer(State(stand_in): State<StandIn>, request: Request) -> Response {
    stand_in.calls.fetch_add(1, Ordering::SeqCst);
    let delay = stand_in.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    stand_in.bodies.lock().unwrap().push(body.clone());
    let script = stand_in.script.lock().unwrap().clone();
    let reply = script(&target, &body, authorization.as_deref());
    let mut response = (
        axum::http::StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", reply.content_type)],
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A FHIR server with Patient/1 (active) and Patient/2 (inactive), a Task referencing
/// Composition/c1, and Composition/c1; everything else 404.
pub(crate) fn fhir_script(target: &str, _body: &str, _auth: Option<&str>) -> Reply {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/fhir/Patient/1" => Reply::json(serde_json::json!({
            "resourceType": "Patient", "id": "1", "active": true,
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "900186021"}]
        })),
        "/fhir/Patient/2" => {
            Reply::json(serde_json::json!({"resourceType": "Patient", "id": "2", "active": false}))
        }
        "/fhir/Task/t1" => Reply::json(serde_json::json!({
            "resourceType": "Task", "id": "t1",
            "input": [{"valueReference": {"reference": "Composition/c1"}}]
        })),
        "/fhir/Composition/c1" => Reply::json(serde_json::json!({
            "resourceType": "Composition", "id": "c1",
            "section": [{"entry": [{"reference": "Observation/o1"}]}]
        })),
        "/fhir/Task/_search" => Reply::json(serde_json::json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": {"resourceType": "Task", "id": "t1"}}]
        })),
        _ => Reply {
            status: 404,
            content_type: "application/fhir+json",
            body: r#"{"resourceType":"OperationOutcome"}"#.into(),
            headers: Vec::new(),
        },
    }
}

/// A config with one anonymous policy per rule set, and the sources given.
pub(crate) fn engine(sources: &str, policies: &str) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), policies).unwrap();
    let config = format!(
        "{}\n{sources}\n",
        kit::config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    std::fs::write(dir.path().join("sluis.yaml"), &config).unwrap();
    let config = sluis_config::Config::load(&dir.path().join("sluis.yaml")).unwrap();
    let engine = config.build_engine(Arc::default()).unwrap();
    (dir, engine)
}

pub(crate) fn sources_yaml(url: &str, extra: &str) -> String {
    format!(
        "sources:\n  - name: holder\n    kind: fhir\n    base_url: {url}/fhir\n    allow_insecure_http: true\n    retries: 0\n{extra}"
    )
}

pub(crate) const READ_POLICY: &str = r#"
policies:
  - id: read
    anonymous: true
    match: {paths: ["/patients/*"]}
    rules:
      - id: active-patient
        allow: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == true"
  - id: plain
    anonymous: true
    match: {paths: ["/plain"]}
    rules:
      - id: always
        allow: "true"
"#;

pub(crate) fn get(path: &str) -> AccessRequest {
    let mut request = AccessRequest {
        method: "GET".into(),
        host: "api.test".into(),
        scheme: "https".into(),
        ..Default::default()
    };
    request.set_target(path);
    request
}

pub(crate) async fn decide(engine: &Engine, path: &str) -> Decision {
    engine.decide(&get(path)).await.unwrap()
}

#[tokio::test]
async fn a_cached_answer_is_not_asked_again_and_another_argument_is() {
    let fhir = StandIn::start(fhir_script).await;
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), READ_POLICY);
    assert!(decide(&engine, "/patients/1").await.is_allow());
    assert_eq!(fhir.calls(), 1);
    assert!(decide(&engine, "/patients/1").await.is_allow());
    assert_eq!(fhir.calls(), 1, "the second decision reads the cache");
    let inactive = decide(&engine, "/patients/2").await;
    assert!(!inactive.is_allow(), "{}", inactive.reason);
    assert_eq!(fhir.calls(), 2);
    // Not found is a negative answer: null, cached too.
    assert!(!decide(&engine, "/patients/3").await.is_allow());
    assert!(!decide(&engine, "/patients/3").await.is_allow());
    assert_eq!(fhir.calls(), 3);
}

#[tokio::test]
async fn fifty_concurrent_decisions_for_one_key_make_one_call() {
    let fhir = StandIn::start(fhir_script).await;
    fhir.delay_ms.store(100, Ordering::SeqCst);
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), READ_POLICY);
    let engine = Arc::new(engine);
    let decisions: Vec<_> = (0..50)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { decide(&engine, "/patients/1").await })
        })
        .collect();
    for decision in decisions {
        assert!(decision.await.unwrap().is_allow());
    }
    assert_eq!(fhir.calls(), 1);
}

#[tokio::test]
async fn answers_expire_and_cache_control_is_honoured() {
    let fhir = StandIn::start(fhir_script).await;
    let (_dir, engine) = engine(
        &sources_yaml(
            &fhir.url(),
            "    cache: {ttl: 200ms, negative_ttl: 100ms}\n",
        ),
        READ_POLICY,
    );
    assert!(decide(&engine, "/patients/1").await.is_allow());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(decide(&engine, "/patients/1").await.is_allow());
    assert_eq!(fhir.calls(), 2, "asked again after the TTL");
    fhir.rescript(|target, body, auth| {
        let mut reply = fhir_script(target, body, auth);
        reply.headers.push(("cache-control", "no-store".into()));
        reply
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(decide(&engine, "/patients/1").await.is_allow());
    assert!(decide(&engine, "/patients/1").await.is_allow());
    assert_eq!(fhir.calls(), 4, "no-store is never cached");
}

#[tokio::test]
async fn a_slow_source_times_out_closed_and_delays_no_one_else() {
    let fhir = StandIn::start(fhir_script).await;
    fhir.delay_ms.store(2000, Ordering::SeqCst);
    let (_dir, engine) = engine(
        &sources_yaml(&fhir.url(), "    timeout: 300ms\n"),
        READ_POLICY,
    );
    let engine = Arc::new(engine);
    let slow = {
        let engine = engine.clone();
        tokio::spawn(async move { decide(&engine, "/patients/1").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..20 {
        assert!(decide(&engine, "/plain").await.is_allow());
    }
    assert!(
        !slow.is_finished(),
        "decisions without the source finished while the slow one waited"
    );
    let slow = slow.await.unwrap();
    assert!(!slow.is_allow());
    assert!(slow.reason.contains("timed out"), "{}", slow.reason);
}

#[tokio::test]
async fn bad_answers_fail_closed_with_their_kind() {
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::status(500), "answered HTTP 500"),
        (Reply::status(503), "answered HTTP 503"),
        (
            Reply {
                status: 200,
                content_type: "application/fhir+json",
                body: "{not json".into(),
                headers: Vec::new(),
            },
            "not JSON",
        ),
        (
            Reply {
                status: 200,
                content_type: "text/html",
                body: "<html></html>".into(),
                headers: Vec::new(),
            },
            "content type",
        ),
        (
            Reply {
                status: 200,
                content_type: "application/json",
                body: format!(
                    "{{\"resourceType\":\"Patient\",\"x\":\"{}\"}}",
                    "a".repeat(2 << 20)
                ),
                headers: Vec::new(),
            },
            "larger than",
        ),
    ];
    for (reply, expected) in cases {
        let fhir = StandIn::start(move |_, _, _| reply.clone()).await;
        let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), READ_POLICY);
        let decision = decide(&engine, "/patients/1").await;
        assert!(!decision.is_allow());
        assert!(
            decision.reason.contains(expected),
            "{expected}: {}",
            decision.reason
        );
        assert!(
            decision.reason.contains("source `holder`"),
            "{}",
            decision.reason
        );
    }
}

#[tokio::test]
async fn a_search_with_more_pages_fails_closed() {
    let fhir = StandIn::start(|_, _, _| {
        Reply::json(serde_json::json!({
            "resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "next", "url": "http://x/next"}],
            "entry": [{"resource": {"resourceType": "Task", "id": "t1"}}]
        }))
    })
    .await;
    let policy = r#"
policies:
  - id: search
    anonymous: true
    match: {paths: ["/tasks"]}
    rules:
      - id: has-task
        allow: "sources.holder({'search': 'Task', 'params': {'code': 'x|y'}, 'elements': ['id']}).entry.size() > 0"
"#;
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), policy);
    let decision = decide(&engine, "/tasks").await;
    assert!(!decision.is_allow());
    assert!(
        decision.reason.contains("more than one page"),
        "{}",
        decision.reason
    );
    let body = fhir.bodies.lock().unwrap().last().cloned().unwrap();
    assert!(
        body.contains("code=x%7Cy") && body.contains("_elements=id") && body.contains("_count=100"),
        "{body}"
    );
}

#[tokio::test]
async fn the_circuit_opens_and_recovers_without_a_restart() {
    let fhir = StandIn::start(|_, _, _| Reply::status(503)).await;
    let (_dir, engine) = engine(
        &sources_yaml(&fhir.url(), "    circuit: {failures: 2, open_for: 300ms}\n"),
        READ_POLICY,
    );
    assert!(!decide(&engine, "/patients/1").await.is_allow());
    assert!(!decide(&engine, "/patients/1").await.is_allow());
    assert_eq!(fhir.calls(), 2);
    let open = decide(&engine, "/patients/1").await;
    assert!(open.reason.contains("circuit open"), "{}", open.reason);
    assert_eq!(fhir.calls(), 2, "an open circuit makes no call");
    fhir.rescript(fhir_script);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(decide(&engine, "/patients/1").await.is_allow());
    assert_eq!(fhir.calls(), 3);
}

#[tokio::test]
async fn deny_rules_fail_closed_and_on_error_unavailable_is_unavailable() {
    let fhir = StandIn::start(|_, _, _| Reply::status(500)).await;
    let policy = r#"
policies:
  - id: deny-rule
    anonymous: true
    match: {paths: ["/deny/*"]}
    rules:
      - id: inactive
        deny: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == false"
      - id: otherwise
        allow: "true"
  - id: unavailable
    anonymous: true
    on_error: unavailable
    match: {paths: ["/patients/*"]}
    rules:
      - id: active-patient
        allow: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == true"
"#;
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), policy);
    let denied = decide(&engine, "/deny/1").await;
    assert!(!denied.is_allow());
    assert!(
        denied.reason.contains("failing closed"),
        "{}",
        denied.reason
    );
    let unavailable = engine.decide(&get("/patients/1")).await.unwrap_err();
    assert_eq!(unavailable.cause, Cause::Source);
    assert!(
        unavailable.detail.contains("source `holder`"),
        "{}",
        unavailable.detail
    );
}

#[tokio::test]
async fn nested_look_ups_take_rounds_and_guards_skip_calls() {
    let fhir = StandIn::start(fhir_script).await;
    let policy = r#"
policies:
  - id: derived
    anonymous: true
    match: {paths: ["/derived/*"]}
    rules:
      - id: referenced-by-the-task
        allow: >-
          sources.holder({'read': sources.holder({'read': 'Task/t1'}).input[0].valueReference.reference})
            .section.exists(s, s.entry.exists(e, e.reference == 'Observation/' + request.segments[1]))
  - id: guarded
    anonymous: true
    match: {paths: ["/guarded"]}
    rules:
      - id: never-asks
        allow: "false && sources.holder({'read': 'Patient/1'}).active"
"#;
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), policy);
    assert!(
        decide(&engine, "/guarded")
            .await
            .reason
            .contains("no allow rule matched")
    );
    assert_eq!(fhir.calls(), 0);
    assert!(decide(&engine, "/derived/o1").await.is_allow());
    assert_eq!(fhir.calls(), 2, "the Task, then the Composition");
    assert!(!decide(&engine, "/derived/o2").await.is_allow());
    assert_eq!(fhir.calls(), 2, "both answers cached");
}

#[tokio::test]
async fn bad_arguments_make_no_call() {
    let fhir = StandIn::start(fhir_script).await;
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), READ_POLICY);
    for id in ["..", "a%2Fb", "a%3Fb", "x%20y", &"1".repeat(100)] {
        let decision = decide(&engine, &format!("/patients/{id}")).await;
        assert!(!decision.is_allow(), "{id}");
        assert!(
            decision.reason.contains("bad arguments"),
            "{id}: {}",
            decision.reason
        );
    }
    assert_eq!(fhir.calls(), 0);
}

#[tokio::test]
async fn userinfo_is_asked_with_the_callers_token() {
    let token = kit::token(&kit::claims());
    let expected = format!("Bearer {token}");
    let userinfo = StandIn::start(move |_, _, auth| {
        if auth == Some(expected.as_str()) {
            Reply {
                status: 200,
                content_type: "application/json",
                body: r#"{"sub":"user-1","email_verified":true}"#.into(),
                headers: Vec::new(),
            }
        } else {
            Reply::status(401)
        }
    })
    .await;
    let sources = format!(
        "sources:\n  - name: userinfo\n    kind: userinfo\n    endpoint: {}/userinfo\n    allow_insecure_http: true\n",
        userinfo.url()
    );
    let policy = r#"
policies:
  - id: verified
    issuers: [test]
    match: {paths: ["/me"]}
    rules:
      - id: verified-email
        allow: "sources.userinfo().email_verified == true"
"#;
    let (_dir, engine) = engine(&sources, policy);
    for issuer in engine.authenticator().issuers() {
        issuer.refresh().await.unwrap();
    }
    let mut request = get("/me");
    request
        .headers
        .insert("authorization".into(), format!("Bearer {token}"));
    let decision = engine.decide(&request).await.unwrap();
    assert!(decision.is_allow(), "{}", decision.reason);
    assert!(engine.decide(&request).await.unwrap().is_allow());
    assert_eq!(userinfo.calls(), 1);
}

#[test]
fn undeclared_sources_and_calls_outside_rules_fail_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        r#"
policies:
  - id: a
    anonymous: true
    rules:
      - id: unknown
        allow: "sources.nope({'read': 'Patient/1'}) != null"
      - id: keys
        allow: "sources.holder({'reed': 'Patient/1'}) != null"
    response:
      set_headers:
        x-active: "string(sources.holder({'read': 'Patient/1'}).active)"
"#,
    )
    .unwrap();
    let config = format!(
        "{}\nsources:\n  - {{name: holder, kind: fhir, base_url: https://fhir.example}}\n",
        kit::config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    std::fs::write(dir.path().join("sluis.yaml"), config).unwrap();
    let config = sluis_config::Config::load(&dir.path().join("sluis.yaml")).unwrap();
    let errors = sluis_core::policy::validate(&config.policy_settings())
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        errors.contains("`sources.nope`, which is not declared (declared: holder)"),
        "{errors}"
    );
    assert!(errors.contains("takes no key `reed`"), "{errors}");
    assert!(
        errors.contains("only be called in rule conditions"),
        "{errors}"
    );
}

#[tokio::test]
/// The process's log, spans and metrics at trace level: `sources_process`.
async fn no_bsn_reaches_a_reason_or_a_metric() {
    let fhir = StandIn::start(|target, body, auth| {
        if target.starts_with("/fhir/Patient/_search") {
            // The error answer echoes the BSN it was asked about.
            return Reply {
                status: 500,
                content_type: "application/json",
                body: format!("{{\"error\":\"no patient {body}\"}}"),
                headers: Vec::new(),
            };
        }
        fhir_script(target, body, auth)
    })
    .await;
    let policy = r#"
policies:
  - id: by-bsn
    anonymous: true
    match: {paths: ["/bsn"]}
    rules:
      - id: found
        allow: >-
          sources.holder({'search': 'Patient', 'params': {'identifier': 'http://fhir.nl/fhir/NamingSystem/bsn|' + request.headers['x-bsn']}}).entry.size() > 0
  - id: read
    anonymous: true
    match: {paths: ["/patients/*"]}
    rules:
      - id: bsn-of-patient
        allow: "sources.holder({'read': 'Patient/1'}).identifier[0].value == request.headers['x-bsn']"
"#;
    let (_dir, engine) = engine(&sources_yaml(&fhir.url(), ""), policy);
    let with_bsn = |path: &str| {
        let mut request = get(path);
        request.headers.insert("x-bsn".into(), "900186021".into());
        request
    };
    let denied = engine.decide(&with_bsn("/bsn")).await.unwrap();
    assert!(!denied.is_allow());
    assert!(
        denied.reason.contains("answered HTTP 500"),
        "{}",
        denied.reason
    );
    assert!(!denied.reason.contains("900186021"), "{}", denied.reason);
    assert!(
        engine
            .decide(&with_bsn("/patients/1"))
            .await
            .unwrap()
            .is_allow()
    );
    let rendered = engine.metrics().render(&sluis_core::metrics::Snapshot {
        token_cache_entries: 0,
        reload_successes: 0,
        reload_failures: 0,
        last_reload_success: None,
        flows_indexed: 0,
        flows_version: 0,
        introspection: Vec::new(),
        decision_log: None,
        candidate_reloads: None,
    });
    assert!(
        rendered.contains("sluis_source_calls_total{source=\"holder\"}"),
        "{rendered}"
    );
    assert!(!rendered.contains("900186021"));
}

/// A Mitz source against the test kit's stand-in (mTLS), with this client identity.
fn mitz_sources(
    mitz: &sluis_test_kit::mitz::MitzStandIn,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> String {
    format!(
        r#"sources:
  - name: holder
    kind: fhir
    base_url: {fhir}
    allow_insecure_http: true
  - name: mitz
    kind: mitz
    endpoint: {url}
    ca_certificate: {ca}
    client_auth: {{method: mtls, certificate: {cert}, private_key: {{file: {key}}}}}
    retries: 0
    defaults: {{author_ura: "00000659", author_facility_type: Z3, event_code: GGC002, purpose_of_use: TREAT}}
"#,
        fhir = "http://127.0.0.1:9/fhir",
        url = mitz.url,
        ca = mitz.certs.ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

const MITZ_POLICY: &str = r#"
policies:
  - id: consent
    anonymous: true
    match: {paths: ["/consent/*"]}
    rules:
      - id: permitted
        allow: >-
          sources.mitz({'bsn': request.segments[1], 'requester_ura': '00000666',
            'requester_facility_type': 'Z3', 'subject_role': '01.015'}).decision == 'Permit'
"#;

#[tokio::test]
async fn mitz_consent_over_mutual_tls() {
    use sluis_core::sources::mitz::MitzDecision;
    use sluis_test_kit::mitz::{MitzReply, MitzStandIn};
    let mitz = MitzStandIn::start().await;
    let (cert, key) = (
        mitz.certs.client_cert.clone(),
        mitz.certs.client_key.clone(),
    );
    let (_dir, engine) = engine(&mitz_sources(&mitz, &cert, &key), MITZ_POLICY);
    let permit = decide(&engine, "/consent/900186021").await;
    assert!(permit.is_allow(), "{}", permit.reason);
    let asked = mitz.last_request().unwrap();
    assert_eq!(asked.question.patient_bsn, "900186021");
    assert_eq!(asked.question.requesting_ura, "00000666");
    assert_eq!(asked.question.author_ura, "00000659", "from the defaults");
    assert!(decide(&engine, "/consent/900186021").await.is_allow());
    assert_eq!(mitz.calls(), 1, "a Permit is cached");

    mitz.set_reply(MitzDecision::Deny);
    let deny = decide(&engine, "/consent/999999990").await;
    assert!(!deny.is_allow());
    assert!(
        deny.reason.contains("no allow rule matched"),
        "{}",
        deny.reason
    );

    mitz.set_reply(MitzDecision::Indeterminate);
    for _ in 0..2 {
        assert!(!decide(&engine, "/consent/111222333").await.is_allow());
    }
    assert_eq!(mitz.calls(), 4, "Indeterminate is not cached");

    mitz.set_reply(MitzReply::Fault);
    let fault = decide(&engine, "/consent/123456782").await;
    assert!(
        fault.reason.contains("answered HTTP 500"),
        "{}",
        fault.reason
    );
    mitz.set_reply(MitzReply::Garbage);
    let garbage = decide(&engine, "/consent/100000009").await;
    assert!(!garbage.is_allow());
    assert!(
        garbage.reason.contains("source `mitz`"),
        "{}",
        garbage.reason
    );

    // A BSN failing the 11-check is refused before any call.
    let calls = mitz.calls();
    let bad = decide(&engine, "/consent/123456789").await;
    assert!(bad.reason.contains("bad arguments"), "{}", bad.reason);
    assert_eq!(mitz.calls(), calls);
    for log_text in [&permit.reason, &deny.reason, &bad.reason] {
        assert!(!log_text.contains("900186021"));
    }
}

#[tokio::test]
async fn mitz_with_a_certificate_of_another_ca_is_refused_closed() {
    use sluis_test_kit::mitz::MitzStandIn;
    let mitz = MitzStandIn::start().await;
    let (cert, key) = (
        mitz.certs.other_client_cert.clone(),
        mitz.certs.other_client_key.clone(),
    );
    let (_dir, engine) = engine(&mitz_sources(&mitz, &cert, &key), MITZ_POLICY);
    let decision = decide(&engine, "/consent/900186021").await;
    assert!(!decision.is_allow());
    assert!(
        decision.reason.contains("could not connect"),
        "{}",
        decision.reason
    );
}
