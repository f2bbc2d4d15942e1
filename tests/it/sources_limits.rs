//! Information sources: the per-source concurrency limit, the bounds on one decision's
//! look-ups, the `http` kind with its client authentication, and sources called from a
//! policy chosen by scope. Decisions go straight to the engine.

use sluis_test_kit as kit;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluis_core::engine::Engine;

use super::sources::{READ_POLICY, Reply, StandIn, decide, engine, fhir_script, get};

/// A FHIR server that answers every read (`{"resourceType", "id", "active": true}`) only
/// once its gate is open, counting the reads that arrived.
struct Gated {
    arrived: Arc<AtomicUsize>,
    gate: tokio::sync::watch::Sender<bool>,
    url: String,
}

impl Gated {
    async fn start() -> Gated {
        let arrived = Arc::new(AtomicUsize::new(0));
        let (gate, opened) = tokio::sync::watch::channel(false);
        let counter = arrived.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (counter, mut opened) = (counter.clone(), opened.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = opened.wait_for(|open| *open).await;
                let mut parts = uri.path().trim_start_matches("/fhir/").split('/');
                let (kind, id) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                (
                    [("content-type", "application/fhir+json")],
                    serde_json::json!({"resourceType": kind, "id": id, "active": true}).to_string(),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Gated { arrived, gate, url }
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    fn open(&self, open: bool) {
        self.gate.send_replace(open);
    }
}

fn source(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: fhir\n    base_url: {url}/fhir\n    allow_insecure_http: true\n    retries: 0\n    timeout: 5s\n{extra}"
    )
}

fn spawn_decision(
    engine: &Arc<Engine>,
    path: &str,
) -> tokio::task::JoinHandle<sluis_core::decision::Decision> {
    let (engine, path) = (engine.clone(), path.to_owned());
    tokio::spawn(async move { decide(&engine, &path).await })
}

async fn until(what: &str, check: impl Fn() -> bool) {
    assert!(
        kit::eventually(|| {
            let held = check();
            async move { held }
        })
        .await,
        "{what}"
    );
}

/// `max_concurrent: 2`: with two slow look-ups in flight a third waits for a slot; one
/// that gets none before its decision's deadline fails `busy` without a call; another
/// source is not held up meanwhile. The order of events is set by gates, not by timing:
/// the look-up that must fail belongs to the decision that started first, so its deadline
/// comes before those holding the slots give them up.
#[tokio::test]
async fn a_busy_source_makes_later_look_ups_wait_then_fail_busy_and_holds_no_other() {
    let slow = Gated::start().await;
    let first = Gated::start().await;
    let sources = format!(
        "lookups: {{deadline: 2s}}\nsources:\n{}{}",
        source("slow", &slow.url, "    max_concurrent: 2\n"),
        source("first", &first.url, ""),
    );
    let policy = r#"
policies:
  - id: slow
    anonymous: true
    match: {paths: ["/slow/*"]}
    rules:
      - id: active
        allow: "sources.slow({'read': 'Patient/' + request.segments[1]}).active"
  - id: after-first
    anonymous: true
    match: {paths: ["/after-first/*"]}
    rules:
      - id: active
        allow: >-
          sources.slow({'read': 'Patient/' + sources.first({'read': 'Task/' + request.segments[1]}).id}).active
  - id: first
    anonymous: true
    match: {paths: ["/first/*"]}
    rules:
      - id: active
        allow: "sources.first({'read': 'Patient/' + request.segments[1]}).active"
"#;
    let (_dir, engine) = engine(&sources, policy);
    let engine = Arc::new(engine);

    // Starts first; its look-up of `slow` comes in a second round, after `first` answers.
    let late = spawn_decision(&engine, "/after-first/x");
    until("the first round reached `first`", || first.arrived() == 1).await;
    // Two look-ups take both slots of `slow`.
    let holders = [
        spawn_decision(&engine, "/slow/a"),
        spawn_decision(&engine, "/slow/b"),
    ];
    until("both slots taken", || slow.arrived() == 2).await;
    first.open(true);
    let late = late.await.unwrap();
    assert!(!late.is_allow());
    assert!(
        late.reason
            .contains("too many look-ups in flight (`max_concurrent`)"),
        "{}",
        late.reason
    );
    assert_eq!(slow.arrived(), 2, "the busy look-up made no call");
    // `first` is not held up by `slow` being full.
    assert!(decide(&engine, "/first/y").await.is_allow());
    slow.open(true);
    for holder in holders {
        // Allowed, or timed out if the machine was slow: either way done.
        let _ = holder.await.unwrap();
    }
    slow.open(false);

    // A look-up waiting for a slot goes ahead when one frees within its deadline.
    let holders = [
        spawn_decision(&engine, "/slow/c"),
        spawn_decision(&engine, "/slow/d"),
    ];
    until("both slots taken again", || slow.arrived() >= 4).await;
    let waiting = spawn_decision(&engine, "/slow/e");
    slow.open(true);
    assert!(waiting.await.unwrap().is_allow());
    for holder in holders {
        assert!(holder.await.unwrap().is_allow());
    }
}

#[tokio::test]
async fn more_look_ups_or_rounds_than_allowed_fail_and_never_allow() {
    let fhir = StandIn::start(fhir_script).await;
    let policy = r#"
policies:
  - id: three
    anonymous: true
    match: {paths: ["/three"]}
    rules:
      - id: all-found
        allow: >-
          sources.holder({'read': 'Patient/1'}) != null
            && sources.holder({'read': 'Task/t1'}) != null
            && sources.holder({'read': 'Composition/c1'}) != null
  - id: nested
    anonymous: true
    match: {paths: ["/nested/*"]}
    rules:
      - id: referenced-by-the-task
        allow: >-
          sources.holder({'read': sources.holder({'read': 'Task/t1'}).input[0].valueReference.reference})
            .section.exists(s, s.entry.exists(e, e.reference == 'Observation/' + request.segments[1]))
"#;
    let sources = |limits: &str| {
        format!(
            "lookups: {{{limits}}}\n{}",
            super::sources::sources_yaml(&fhir.url(), "")
        )
    };
    let (_dir, bounded) = engine(&sources("max_per_decision: 2, max_rounds: 1"), policy);
    let three = decide(&bounded, "/three").await;
    assert!(!three.is_allow());
    assert!(
        three
            .reason
            .contains("more look-ups than `lookups.max_per_decision` allows"),
        "{}",
        three.reason
    );
    // A fresh cache: answers cached by the decision above would need no round.
    let (_dir, shallow) = engine(&sources("max_rounds: 1"), policy);
    let nested = decide(&shallow, "/nested/o1").await;
    assert!(!nested.is_allow());
    assert!(
        nested
            .reason
            .contains("look-ups nest deeper than `lookups.max_rounds`"),
        "{}",
        nested.reason
    );
    assert_eq!(fhir.calls(), 3, "two of /three, the Task of /nested");

    // Within the bounds the same policies allow.
    let (_dir, roomy) = engine(&sources("max_per_decision: 3, max_rounds: 2"), policy);
    assert!(decide(&roomy, "/three").await.is_allow());
    assert!(decide(&roomy, "/nested/o1").await.is_allow());
}

/// A JSON API stand-in: `GET /v1/patients/{id}/consent` and `POST /v1/consent` answer
/// `{"consent": true}` when the bearer token is `expected`, else 401.
fn consent_api(expected: &'static str) -> impl Fn(&str, &str, Option<&str>) -> Reply {
    move |target, _body, auth| {
        if auth != Some(&format!("Bearer {expected}")[..]) {
            return Reply::status(401);
        }
        let path = target.split('?').next().unwrap_or("");
        if path.starts_with("/v1/patients/") && path.ends_with("/consent") || path == "/v1/consent"
        {
            Reply {
                status: 200,
                content_type: "application/json",
                body: r#"{"consent": true, "until": "2030-01-01"}"#.into(),
                headers: Vec::new(),
            }
        } else {
            Reply::status(404)
        }
    }
}

#[tokio::test]
async fn the_http_kind_gets_and_posts_with_a_bearer_from_a_file() {
    let api = StandIn::start(consent_api("file-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("consent-token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let sources = format!(
        r#"sources:
  - name: by_path
    kind: http
    url: {url}/v1/patients/{{patient}}/consent
    allow_insecure_http: true
    client_auth: {{method: bearer, token: {{file: {token}}}}}
  - name: by_body
    kind: http
    method: POST
    url: {url}/v1/consent
    allow_insecure_http: true
    client_auth: {{method: bearer, token: {{file: {token}}}}}
"#,
        url = api.url(),
        token = token_file.display()
    );
    let policy = r#"
policies:
  - id: get
    anonymous: true
    match: {paths: ["/get/*"]}
    rules:
      - id: consented
        allow: "sources.by_path({'patient': request.segments[1]}).consent == true"
  - id: post
    anonymous: true
    match: {paths: ["/post/*"]}
    rules:
      - id: consented
        allow: >-
          sources.by_body({'patient': request.segments[1], 'purpose': request.method,
            'codes': ['a', 'b']}).consent == true
"#;
    let (_dir, engine) = engine(&sources, policy);
    let decision = decide(&engine, "/get/p%2F1").await;
    assert!(decision.is_allow(), "{}", decision.reason);
    let decision = decide(&engine, "/post/p-2").await;
    assert!(decision.is_allow(), "{}", decision.reason);
    let bodies = api.bodies.lock().unwrap().clone();
    let posted: serde_json::Value = serde_json::from_str(bodies.last().unwrap()).unwrap();
    assert_eq!(
        posted,
        serde_json::json!({"patient": "p-2", "purpose": "GET", "codes": ["a", "b"]}),
        "the argument map is the JSON body"
    );
    assert_eq!(api.calls(), 2);
}

/// A token endpoint (`/token`, client `sluis` with secret `s3cret` in HTTP Basic) handing
/// out `at-1`, `at-2`, ... valid for `expires_in`, and an API taking only the latest.
struct Credentials {
    stand_in: StandIn,
    issued: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

async fn credentials(expires_in: u64) -> Credentials {
    let issued = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (count, fail) = (issued.clone(), failing.clone());
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("sluis:s3cret")
        )
    };
    let stand_in = StandIn::start(move |target, body, auth| {
        if target == "/token" {
            if fail.load(Ordering::SeqCst) || auth != Some(basic.as_str()) {
                return Reply::status(500);
            }
            assert!(body.contains("grant_type=client_credentials"), "{body}");
            assert!(body.contains("scope=consent.read"), "{body}");
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply {
                status: 200,
                content_type: "application/json",
                body: format!(
                    r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#
                ),
                headers: Vec::new(),
            };
        }
        let latest = format!("Bearer at-{}", count.load(Ordering::SeqCst));
        if auth == Some(latest.as_str()) {
            Reply {
                status: 200,
                content_type: "application/json",
                body: r#"{"consent": true}"#.into(),
                headers: Vec::new(),
            }
        } else {
            Reply::status(401)
        }
    })
    .await;
    Credentials {
        stand_in,
        issued,
        failing,
    }
}

fn credentials_engine(api: &Credentials) -> (tempfile::TempDir, tempfile::TempDir, Engine) {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("secret"), "s3cret").unwrap();
    let sources = format!(
        r#"sources:
  - name: consent
    kind: http
    url: {url}/v1/patients/{{patient}}/consent
    allow_insecure_http: true
    retries: 0
    cache: {{ttl: 0s}}
    client_auth: {{method: client_credentials, token_endpoint: {url}/token, client_id: sluis,
                  client_secret: {{file: {secret}}}, scope: consent.read}}
"#,
        url = api.stand_in.url(),
        secret = secrets.path().join("secret").display()
    );
    let policy = r#"
policies:
  - id: consent
    anonymous: true
    match: {paths: ["/consent/*"]}
    rules:
      - id: consented
        allow: "sources.consent({'patient': request.segments[1]}).consent == true"
"#;
    let (dir, engine) = engine(&sources, policy);
    (secrets, dir, engine)
}

#[tokio::test]
async fn client_credentials_tokens_are_fetched_once_reused_and_refreshed() {
    // `expires_in: 31`: reused until 30 s before, so for one second.
    let api = credentials(31).await;
    let (_secrets, _dir, engine) = credentials_engine(&api);
    for patient in ["a", "b", "c"] {
        let decision = decide(&engine, &format!("/consent/{patient}")).await;
        assert!(decision.is_allow(), "{}", decision.reason);
    }
    assert_eq!(
        api.issued.load(Ordering::SeqCst),
        1,
        "one token for three calls"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let decision = decide(&engine, "/consent/d").await;
    assert!(decision.is_allow(), "{}", decision.reason);
    assert_eq!(
        api.issued.load(Ordering::SeqCst),
        2,
        "fetched again once expired"
    );
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_source_failure() {
    let api = credentials(3600).await;
    api.failing.store(true, Ordering::SeqCst);
    let (_secrets, _dir, engine) = credentials_engine(&api);
    let decision = decide(&engine, "/consent/a").await;
    assert!(!decision.is_allow());
    assert!(
        decision
            .reason
            .contains("source `consent`: failed: the token endpoint answered HTTP 500"),
        "{}",
        decision.reason
    );
    assert_eq!(api.stand_in.calls(), 1, "the API itself was not called");
    api.failing.store(false, Ordering::SeqCst);
    assert!(decide(&engine, "/consent/a").await.is_allow());
}

#[tokio::test]
async fn a_policy_chosen_by_scope_calls_sources() {
    let fhir = StandIn::start(fhir_script).await;
    let policy = r#"
policies:
  - id: by-scope
    match: {paths: ["/patients/*"]}
    issuers: [test]
    select:
      by_scope: [read]
  - id: read
    issuers: [test]
    rules:
      - id: active-patient
        allow: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == true"
"#;
    let (_dir, engine) = engine(&super::sources::sources_yaml(&fhir.url(), ""), policy);
    for issuer in engine.authenticator().issuers() {
        issuer.refresh().await.unwrap();
    }
    let token = kit::token(&kit::claims());
    let ask = |path: &str| {
        let mut request = get(path);
        request
            .headers
            .insert("authorization".into(), format!("Bearer {token}"));
        request
    };
    let allowed = engine.decide(&ask("/patients/1")).await.unwrap();
    assert!(allowed.is_allow(), "{}", allowed.reason);
    assert_eq!(allowed.policy.as_deref(), Some("read"));
    let denied = engine.decide(&ask("/patients/2")).await.unwrap();
    assert!(!denied.is_allow(), "{}", denied.reason);
    assert_eq!(fhir.calls(), 2);
}

/// 1,000 concurrent decisions over 10 distinct patients against a source answering after
/// 20 ms: one upstream call per patient, whatever the interleaving (the latency is
/// measured in `benches/sources.rs`, not here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_decisions_over_ten_keys_make_ten_calls() {
    let fhir = StandIn::start(|target, _, _| {
        let id = target.rsplit('/').next().unwrap_or("");
        Reply::json(serde_json::json!({"resourceType": "Patient", "id": id, "active": true}))
    })
    .await;
    fhir.delay_ms.store(20, Ordering::SeqCst);
    let sources = format!(
        "lookups: {{deadline: 30s}}\n{}",
        super::sources::sources_yaml(&fhir.url(), "    timeout: 30s\n    max_concurrent: 64\n")
    );
    let (_dir, engine) = engine(&sources, READ_POLICY);
    let engine = Arc::new(engine);
    let decisions: Vec<_> = (0..1000)
        .map(|i| spawn_decision(&engine, &format!("/patients/p{}", i % 10)))
        .collect();
    for decision in decisions {
        let decision = decision.await.unwrap();
        assert!(decision.is_allow(), "{}", decision.reason);
    }
    assert_eq!(fhir.calls(), 10);
}
