//! The engine's response operation: the grant made at request time and opened with the
//! answer; no grant, a forged one, a stale one: denied.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;

use futures_util::FutureExt;

use serde_json::{Value, json};

use crate::authn::Authenticator;
use crate::authn::settings::AuthnSettings;
use crate::decision::Outcome;
use crate::engine::Engine;
use crate::policy::{LoadSettings, PolicySet};
use crate::request::AccessRequest;
use crate::response::grant::{GrantKey, ResponseGrant};
use crate::response::{ResponseParts, ResponseVerdict};

fn engine(mode: &str, response_rules: bool) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let rules = if response_rules {
        r#"
    response_rules:
      rules:
        - id: own
          keep: entry.resource.id.startsWith(request.context['org'])
        - id: narrowed
          keep: request.context['org'] == 'c' && request.query['owner'] == entry.resource.id"#
    } else {
        ""
    };
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            r#"
policies:
  - id: directory
    mode: {mode}
    anonymous: true
    rules: [{{id: open, allow: "request.context['org'] != 'none'"}}]
    response:
      set_query: {{owner: "'b-1'"}}{rules}
"#
        ),
    )
    .unwrap();
    let config = LoadSettings {
        policies: vec!["p.yaml".into()],
        base_dir: dir.path().to_owned(),
        ..LoadSettings::default()
    };
    let policies = PolicySet::load(&config).unwrap();
    let authn = Authenticator::new(&AuthnSettings::default(), Arc::default()).unwrap();
    Engine::new(policies, authn).with_grant_secret(b"test secret")
}

fn request(org: &str) -> AccessRequest {
    AccessRequest {
        method: "GET".into(),
        path: "/fhir/Organization".into(),
        context: [("org".to_string(), org.to_string())].into_iter().collect(),
        ..AccessRequest::default()
    }
}

async fn grant(engine: &Engine, org: &str) -> Option<String> {
    match engine.decide(&request(org)).await.unwrap().outcome {
        Outcome::Allow(allow) => allow.response_grant,
        Outcome::Deny(_) => None,
    }
}

fn body() -> Vec<u8> {
    serde_json::to_vec(
        &json!({"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Organization", "id": "a-1"}},
        {"resource": {"resourceType": "Organization", "id": "b-1"}}]}),
    )
    .unwrap()
}

fn judge(engine: &Engine, grant: Option<&str>) -> ResponseVerdict {
    let headers = vec![(
        "content-type".to_string(),
        "application/fhir+json".to_string(),
    )];
    let body = body();
    engine
        .judge_response(
            grant,
            &ResponseParts {
                status: 200,
                headers: &headers,
                body: &body,
                from_upstream: true,
            },
        )
        .now_or_never()
        .expect("judged at once without a decision log")
        .verdict
}

fn kept_ids(verdict: &ResponseVerdict) -> Vec<String> {
    let ResponseVerdict::Filter { body, .. } = verdict else {
        panic!("{verdict:?}")
    };
    let out: Value = serde_json::from_slice(body).unwrap();
    out["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_request_decision_grants_and_the_answer_is_judged_under_it() {
    let engine = engine("enforce", true);
    let a = grant(&engine, "a")
        .await
        .expect("an allow of a policy with response rules carries a grant");
    assert_eq!(kept_ids(&judge(&engine, Some(&a))), ["a-1"]);
    let c = grant(&engine, "c").await.unwrap();
    // `request.query` is the query the upstream got: with `owner` set by the policy.
    assert_eq!(kept_ids(&judge(&engine, Some(&c))), ["b-1"]);
}

#[tokio::test]
async fn no_grant_is_made_without_response_rules_or_on_a_deny() {
    assert_eq!(grant(&engine("enforce", false), "a").await, None);
    assert_eq!(grant(&engine("enforce", true), "none").await, None);
}

#[tokio::test]
async fn without_a_valid_grant_the_answer_is_denied() {
    let engine = engine("enforce", true);
    let expect_500 = |verdict: ResponseVerdict| {
        let ResponseVerdict::Deny(deny) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(deny.status, 500);
    };
    expect_500(judge(&engine, None));
    expect_500(judge(&engine, Some("garbage")));
    // Sealed with another key: someone reaching the port with claims of their choice.
    let forged = ResponseGrant {
        policy: "directory".into(),
        issuer: None,
        claims: Default::default(),
        method: "GET".into(),
        path: "/fhir/Organization".into(),
        query: String::new(),
        host: String::new(),
        context: vec![("org".into(), "b".into())],
        shadow: false,
        issued_at: chrono::Utc::now().timestamp(),
    };
    expect_500(judge(
        &engine,
        Some(&forged.seal(&GrantKey::from_secret(b"guess")).unwrap()),
    ));
    // The right key, but stale.
    let stale = ResponseGrant {
        issued_at: 0,
        ..forged.clone()
    };
    expect_500(judge(
        &engine,
        Some(&stale.seal(&GrantKey::from_secret(b"test secret")).unwrap()),
    ));
    // A policy that is gone.
    let gone = ResponseGrant {
        policy: "other".into(),
        ..forged
    };
    expect_500(judge(
        &engine,
        Some(&gone.seal(&GrantKey::from_secret(b"test secret")).unwrap()),
    ));
}

#[tokio::test]
async fn a_shadow_policy_judges_but_passes() {
    let engine = engine("shadow", true);
    let a = grant(&engine, "a").await.unwrap();
    let decided = engine
        .judge_response(
            Some(&a),
            &ResponseParts {
                status: 200,
                headers: &[("content-type".into(), "application/fhir+json".into())],
                body: &body(),
                from_upstream: true,
            },
        )
        .now_or_never()
        .expect("judged at once without a decision log");
    assert!(matches!(decided.verdict, ResponseVerdict::Pass { .. }));
    assert!(
        decided.reason.starts_with("shadow mode"),
        "{}",
        decided.reason
    );
    assert_eq!(decided.withheld, 1);
    // A request let through only because of shadow mode still gets its answer.
    let none = grant(&engine, "none")
        .await
        .expect("shadow pass-through carries a grant");
    assert!(matches!(
        judge(&engine, Some(&none)),
        ResponseVerdict::Pass { .. }
    ));
}

#[test]
fn the_gateways_own_answers_pass_without_a_grant() {
    let engine = engine("enforce", true);
    let decided = engine
        .judge_response(
            None,
            &ResponseParts {
                status: 401,
                headers: &[],
                body: b"{}",
                from_upstream: false,
            },
        )
        .now_or_never()
        .expect("judged at once without a decision log");
    assert!(matches!(decided.verdict, ResponseVerdict::Pass { .. }));
}

/// What the service's log gets: one line per answer, at debug when it passed whole; an
/// answer with entries withheld at info, but no more than the budget a second.
///
/// Run in a process of its own (this test binary again, with only this test): the budget
/// is process-wide, and with other tests logging the same lines on threads without a
/// subscriber, tracing's cached interest lost this subscriber's info lines (seen: 18 lines
/// of 26, every one at info missing).
#[tokio::test]
async fn answers_passed_whole_log_at_debug_and_filtered_ones_at_info_within_a_budget() {
    const ALONE: &str = "SLUIS_TEST_LOG_ALONE";
    if std::env::var_os(ALONE).is_none() {
        let name = "engine::response::tests::\
                    answers_passed_whole_log_at_debug_and_filtered_ones_at_info_within_a_budget";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let engine = engine("enforce", true);
    // Every id starts with "": both entries kept. With "a", `b-1` is withheld.
    let whole = grant(&engine, "").await.unwrap();
    let filtered = grant(&engine, "a").await.unwrap();
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        assert!(matches!(
            judge(&engine, Some(&whole)),
            ResponseVerdict::Pass { .. }
        ));
        for _ in 0..25 {
            assert!(matches!(
                judge(&engine, Some(&filtered)),
                ResponseVerdict::Filter { .. }
            ));
        }
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let decisions: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("response decision"))
        .collect();
    assert_eq!(decisions.len(), 26, "{text}");
    let (first, rest) = decisions.split_first().unwrap();
    assert!(
        first.contains("DEBUG") && first.contains("outcome=\"pass\""),
        "{first}"
    );
    assert!(
        rest.iter()
            .all(|l| l.contains("outcome=\"filter\"") && l.contains("withheld=1")),
        "{text}"
    );
    // The budget is this process's alone: its size at info, or twice that if the answers
    // straddled a second.
    let at_info = rest.iter().filter(|l| l.contains(" INFO ")).count();
    assert!(
        (10..=20).contains(&at_info),
        "{at_info} lines at info: {text}"
    );
    assert!(
        rest.iter()
            .all(|l| l.contains(" INFO ") || l.contains("DEBUG")),
        "{text}"
    );
}
