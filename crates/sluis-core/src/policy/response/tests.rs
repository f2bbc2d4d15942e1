//! Response rules: load checks, per-entry semantics, failing closed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use serde_json::{Value, json};

use crate::authn::Identity;
use crate::flows::FlowIndex;
use crate::policy::{LoadSettings, PolicySet};
use crate::request::AccessRequest;
use crate::response::{ResponseParts, ResponseVerdict};

fn set(policies: &str) -> Result<PolicySet, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), policies).unwrap();
    let config = LoadSettings {
        policies: vec!["p.yaml".into()],
        issuers: vec!["test".into()],
        base_dir: dir.path().to_owned(),
        ..LoadSettings::default()
    };
    PolicySet::load(&config).map_err(|e| e.iter().map(ToString::to_string).collect())
}

const POLICY: &str = r#"
policies:
  - id: mcsd
    issuers: [test]
    caller:
      ura: {prefix: "ura|", from: ["claim:organization_ura"]}
    rules: [{id: open, allow: "true"}]
    response_rules:
      resource_types: [Organization, Location, Patient, OperationOutcome]
      withheld_notice: NOTICE
      rules:
        - id: restricted
          withhold: has(entry.resource.meta) && entry.resource.meta.security.exists(s, s.code == 'R')
        - id: own-organization
          keep: >-
            entry.resource.resourceType == 'Organization' &&
            entry.resource.identifier.exists(i, i.system == 'http://fhir.nl/fhir/NamingSystem/ura' && i.value == caller.ura)
        - id: own-location
          keep: entry.resource.managingOrganization.reference == 'Organization/' + caller.ura
        - id: public-outcome
          keep: entry.resource.resourceType == 'OperationOutcome' && request.method == 'GET' && response.status >= 400
        - id: foreign-patient
          deny: entry.resource.resourceType == 'Patient' && token.sub != 'alice'
          status: 451
          message: no patients here
"#;

fn policy(notice: &str) -> PolicySet {
    set(&POLICY.replace("NOTICE", notice)).unwrap()
}

fn identity(sub: &str, ura: &str) -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert("organization_ura".into(), ura.into());
    Identity {
        claims,
        ..Identity::for_tests("test", "https://i", Some(sub))
    }
}

fn org(id: &str, ura: &str) -> Value {
    json!({"fullUrl": format!("http://fhir/Organization/{id}"), "search": {"mode": "match"},
        "resource": {"resourceType": "Organization", "id": id,
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": ura}]}})
}

fn bundle(entries: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "searchset",
        "total": entries.len(), "entry": entries}))
    .unwrap()
}

fn judge(
    set: &PolicySet,
    who: &Identity,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> super::ResponseJudgement {
    let request = AccessRequest {
        method: "GET".into(),
        path: "/fhir/Organization".into(),
        ..AccessRequest::default()
    };
    let headers = vec![("content-type".to_string(), content_type.to_string())];
    set.get("mcsd").unwrap().judge_response(
        &request,
        Some(who),
        &FlowIndex::new(),
        &ResponseParts {
            status,
            headers: &headers,
            body,
            from_upstream: true,
        },
    )
}

const FHIR: &str = "application/fhir+json";

#[test]
fn entries_are_kept_or_withheld_per_rule() {
    let set = policy("none");
    let mut restricted = org("r", "1");
    restricted["resource"]["meta"] = json!({"security": [{"code": "R"}]});
    let body = bundle(vec![
        org("a", "1"),
        org("foreign", "2"),
        restricted,
        json!({"search": {"mode": "include"}, "resource": {"resourceType": "Location", "id": "l", "managingOrganization": {"reference": "Organization/1"}}}),
        json!({"resource": {"resourceType": "Practitioner", "id": "p"}}),
    ]);
    let judged = judge(&set, &identity("alice", "ura|1"), 200, FHIR, &body);
    let ResponseVerdict::Filter {
        body,
        kept,
        withheld,
        remove_headers,
        ..
    } = judged.verdict
    else {
        panic!("{judged:?}")
    };
    assert_eq!((kept, withheld), (2, 3));
    assert!(remove_headers.contains(&"content-length") && remove_headers.contains(&"etag"));
    assert!(remove_headers.contains(&"last-modified"));
    let out: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = out["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "l"]);
    assert_eq!(out["total"], 1, "one kept `match` entry");
    assert!(
        judged.reason.contains("not in `resource_types`"),
        "{}",
        judged.reason
    );
}

#[test]
fn all_kept_passes_the_answer_unchanged() {
    let judged = judge(
        &policy("none"),
        &identity("alice", "ura|1"),
        200,
        FHIR,
        &bundle(vec![org("a", "1")]),
    );
    assert_eq!(
        judged.verdict,
        ResponseVerdict::Pass {
            remove_headers: vec![]
        }
    );
    assert_eq!((judged.kept, judged.withheld), (1, 0));
}

#[test]
fn one_deny_rule_hit_denies_the_whole_answer_with_its_status() {
    let body = bundle(vec![
        org("a", "1"),
        json!({"resource": {"resourceType": "Patient", "id": "p"}}),
    ]);
    let judged = judge(
        &policy("none"),
        &identity("mallory", "ura|1"),
        200,
        FHIR,
        &body,
    );
    let ResponseVerdict::Deny(deny) = judged.verdict else {
        panic!("{judged:?}")
    };
    assert_eq!(deny.status, 451);
    assert!(deny.body.contains("no patients here"));
    assert_eq!(&*judged.rule, "foreign-patient");
}

#[test]
fn a_failing_rule_withholds_or_denies_never_keeps() {
    // `caller.ura` fails to read (two sources disagree is an error; here the claim is
    // missing, so it is null and the comparison fails): nothing is kept.
    let mut who = identity("alice", "ura|1");
    who.claims.remove("organization_ura");
    let judged = judge(
        &policy("none"),
        &who,
        200,
        FHIR,
        &bundle(vec![org("a", "1")]),
    );
    assert!(
        matches!(
            judged.verdict,
            ResponseVerdict::Filter {
                kept: 0,
                withheld: 1,
                ..
            }
        ),
        "{judged:?}"
    );
    // A deny rule that fails denies: `token.sub` of an identity without `sub`.
    let set = set(&POLICY
        .replace("NOTICE", "none")
        .replace("token.sub != 'alice'", "token.claims.nope.deeper"))
    .unwrap();
    let body = bundle(vec![
        json!({"resource": {"resourceType": "Patient", "id": "p"}}),
    ]);
    let judged = judge(&set, &identity("alice", "ura|1"), 200, FHIR, &body);
    assert!(
        matches!(judged.verdict, ResponseVerdict::Deny(_)),
        "{judged:?}"
    );
    assert!(judged.reason.contains("failing closed"));
}

#[test]
fn a_single_resource_is_kept_whole_or_denied() {
    let own = serde_json::to_vec(&org("a", "1")["resource"]).unwrap();
    let judged = judge(
        &policy("none"),
        &identity("alice", "ura|1"),
        200,
        FHIR,
        &own,
    );
    assert_eq!(
        judged.verdict,
        ResponseVerdict::Pass {
            remove_headers: vec![]
        }
    );
    let judged = judge(
        &policy("none"),
        &identity("alice", "ura|2"),
        200,
        FHIR,
        &own,
    );
    let ResponseVerdict::Deny(deny) = judged.verdict else {
        panic!("{judged:?}")
    };
    assert_eq!(deny.status, 403);
    // Error answers are judged too: the rules read `response.status`.
    let outcome = br#"{"resourceType":"OperationOutcome","issue":[]}"#;
    let judged = judge(
        &policy("none"),
        &identity("alice", "ura|2"),
        404,
        FHIR,
        outcome,
    );
    assert!(
        matches!(judged.verdict, ResponseVerdict::Pass { .. }),
        "{judged:?}"
    );
}

#[test]
fn notices_are_what_the_policy_asks_for() {
    let body = bundle(vec![org("a", "1"), org("b", "2")]);
    let judged = judge(
        &policy("header"),
        &identity("alice", "ura|1"),
        200,
        FHIR,
        &body,
    );
    let ResponseVerdict::Filter {
        set_headers, body, ..
    } = judged.verdict
    else {
        panic!()
    };
    assert_eq!(
        set_headers,
        [("x-sluis-withheld".to_string(), "true".to_string())]
    );
    assert!(
        !String::from_utf8(body)
            .unwrap()
            .contains("OperationOutcome")
    );
    let judged = judge(
        &policy("operation_outcome"),
        &identity("alice", "ura|1"),
        200,
        FHIR,
        &bundle(vec![org("a", "1"), org("b", "2")]),
    );
    let ResponseVerdict::Filter {
        set_headers, body, ..
    } = judged.verdict
    else {
        panic!()
    };
    assert!(set_headers.is_empty());
    assert!(String::from_utf8(body).unwrap().contains("suppressed"));
}

#[test]
fn unreadable_answers_are_denied_unless_the_policy_passes_them() {
    let judged = judge(
        &policy("none"),
        &identity("alice", "ura|1"),
        200,
        "application/fhir+xml",
        b"<Bundle/>",
    );
    let ResponseVerdict::Deny(deny) = judged.verdict else {
        panic!("{judged:?}")
    };
    assert_eq!(deny.status, 502);
    let passing = set(&POLICY.replace("NOTICE", "none").replace(
        "withheld_notice: none",
        "withheld_notice: none\n      unreadable: pass",
    ))
    .unwrap();
    let judged = judge(
        &passing,
        &identity("alice", "ura|1"),
        200,
        "application/fhir+xml",
        b"<Bundle/>",
    );
    assert!(matches!(judged.verdict, ResponseVerdict::Pass { .. }));
    // An empty body (204, 304) has nothing to judge; its ETag goes.
    let judged = judge(&policy("none"), &identity("alice", "ura|1"), 304, FHIR, b"");
    assert_eq!(
        judged.verdict,
        ResponseVerdict::Pass {
            remove_headers: vec!["etag"]
        }
    );
}

#[test]
fn load_errors_name_the_policy_and_rule() {
    let no_keep = r#"
policies:
  - id: p
    anonymous: true
    rules: [{id: open, allow: "true"}]
    response_rules:
      rules:
        - {id: w, withhold: "true"}
        - {id: bad, keep: "entry.resource.("}
        - {id: both, keep: "true", deny: "true"}
        - {id: w, withhold: "false"}
      max_entries: 20000
"#;
    let errors = set(no_keep).unwrap_err().join("\n");
    for expected in [
        "policy `p` rule `bad`: invalid CEL",
        "rule `both`: a response rule needs exactly one of `keep`, `withhold` or `deny`",
        "rule `w`: duplicate response rule id",
        "has no `keep` rule",
        "`response_rules.max_entries` must be 1 to 10000",
    ] {
        assert!(errors.contains(expected), "{expected} not in\n{errors}");
    }
    let request_rule_reads_entry = r#"
policies:
  - id: p
    anonymous: true
    rules: [{id: open, allow: "entry.resource.id == 'x'"}]
"#;
    assert!(
        set(request_rule_reads_entry)
            .unwrap_err()
            .join("\n")
            .contains("only `response_rules` may read `entry`")
    );
    let evaluation = r#"
policies:
  - id: p
    anonymous: true
    match: {evaluation: {}}
    rules: [{id: open, allow: "true"}]
    response_rules: {rules: [{id: k, keep: "true"}]}
"#;
    assert!(
        set(evaluation)
            .unwrap_err()
            .join("\n")
            .contains("a policy that matches evaluations has none")
    );
}

proptest::proptest! {
    /// Whatever the upstream sends (own, foreign, restricted, other types, in any order,
    /// paged or not), the client never sees a resource the rules do not keep, and what it
    /// gets is a JSON Bundle or a denial.
    #[test]
    fn judged_answers_never_show_a_withheld_resource(
        kinds in proptest::collection::vec(0u8..5, 0..30),
        paged in proptest::bool::ANY,
        notice in proptest::sample::select(vec!["none", "header", "operation_outcome"]),
    ) {
        let entries: Vec<Value> = kinds.iter().enumerate().map(|(i, kind)| match kind {
            0 => org(&format!("keep-{i}"), "1"),
            1 => org(&format!("gone-{i}"), "2"),
            2 => {
                let mut e = org(&format!("gone-{i}"), "1");
                e["resource"]["meta"] = json!({"security": [{"code": "R"}]});
                e
            }
            3 => json!({"resource": {"resourceType": "Practitioner", "id": format!("gone-{i}")}}),
            _ => json!({"resource": {"resourceType": "Organization", "id": format!("gone-{i}"), "identifier": "not a list"}}),
        }).collect();
        let mut body: Value = serde_json::from_slice(&bundle(entries)).unwrap();
        if paged {
            body["link"] = json!([{"relation": "next", "url": "http://fhir/x?page=2"}]);
        }
        let set = policy(notice);
        let judged = judge(&set, &identity("alice", "ura|1"), 200, FHIR, &serde_json::to_vec(&body).unwrap());
        let kept = kinds.iter().filter(|k| **k == 0).count();
        match judged.verdict {
            ResponseVerdict::Pass { .. } => proptest::prop_assert_eq!(kept, kinds.len()),
            ResponseVerdict::Filter { body, .. } => {
                let out: Value = serde_json::from_slice(&body).unwrap();
                proptest::prop_assert_eq!(&out["resourceType"], "Bundle");
                let text = out.to_string();
                proptest::prop_assert!(!text.contains("gone-"), "{}", text);
                proptest::prop_assert_eq!(text.matches("\"keep-").count(), kept);
                if paged {
                    proptest::prop_assert!(out.get("total").is_none());
                } else {
                    proptest::prop_assert_eq!(out["total"].as_u64(), Some(kept as u64));
                }
            }
            ResponseVerdict::Deny(deny) => proptest::prop_assert!(false, "unexpected deny {:?}", deny),
        }
    }
}
