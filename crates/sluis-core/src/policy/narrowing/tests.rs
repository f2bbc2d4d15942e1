//! Search narrowing: what is set, what conflicts, what is refused, and how a bad
//! `narrowing` block fails the load.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use crate::decision::{Decision, Outcome};
use crate::flows::FlowIndex;
use crate::policy::{LoadError, LoadSettings, PolicySet};
use crate::request::AccessRequest;

fn set(policies: &str) -> Result<PolicySet, Vec<LoadError>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), policies).unwrap();
    let config = LoadSettings {
        policies: vec!["p.yaml".into()],
        issuers: vec!["test".into()],
        base_dir: dir.path().to_owned(),
        ..LoadSettings::default()
    };
    PolicySet::load(&config)
}

fn policy(on_conflict: &str) -> String {
    format!(
        r#"
policies:
  - id: mcsd
    anonymous: true
    narrowing:
      base_path: /mcsd
      use_cases: [mCSD]
      on_conflict: {on_conflict}
      resources:
        Organization:
          identifier: "'ura|' + request.context.ura"
        Location:
          managingOrganization: "'Organization/' + request.context.ura"
        PractitionerRole:
          _has:Organization:x:y: "request.context.ura"
    rules:
      - {{id: any, allow: true}}
"#
    )
}

fn decide(on_conflict: &str, method: &str, target: &str, ura: Option<&str>) -> Decision {
    let set = set(&policy(on_conflict)).unwrap();
    let mut request = AccessRequest {
        method: method.into(),
        ..Default::default()
    };
    request.set_target(target);
    if let Some(ura) = ura {
        request.context.insert("ura".into(), ura.into());
    }
    let policy = set.get("mcsd").unwrap();
    policy.evaluate(&request, None, &FlowIndex::new(), None)
}

/// The query parameters set, or the deny status and message.
fn outcome(decision: &Decision) -> Result<Vec<(String, String)>, (u16, String)> {
    match &decision.outcome {
        Outcome::Allow(allow) => Ok(allow.set_query.clone()),
        Outcome::Deny(deny) => {
            let body: serde_json::Value = serde_json::from_str(&deny.body).unwrap();
            Err((deny.status, body["message"].as_str().unwrap().to_owned()))
        }
    }
}

fn set_to(name: &str, value: &str) -> Result<Vec<(String, String)>, (u16, String)> {
    Ok(vec![(name.to_owned(), value.to_owned())])
}

#[test]
fn searches_of_listed_types_are_narrowed() {
    let d = decide("deny", "GET", "/mcsd/Organization?name=x", Some("123"));
    assert_eq!(outcome(&d), set_to("identifier", "ura|123"));
    let d = decide("deny", "GET", "/mcsd/Location", Some("123"));
    assert_eq!(
        outcome(&d),
        set_to("managingOrganization", "Organization/123")
    );
}

#[test]
fn other_types_and_paths_are_untouched() {
    let d = decide("deny", "GET", "/mcsd/Endpoint?x=1", Some("123"));
    assert_eq!(outcome(&d), Ok(vec![]));
    let d = decide("deny", "GET", "/mcsd/Endpoint/1", Some("123"));
    assert_eq!(outcome(&d), Ok(vec![]));
    let d = decide("deny", "GET", "/mcsd/metadata", Some("123"));
    assert_eq!(outcome(&d), Ok(vec![]));
    let d = decide("deny", "GET", "/elsewhere/Organization", Some("123"));
    assert_eq!(outcome(&d), Ok(vec![]));
}

#[test]
fn a_conflicting_parameter_is_denied_or_replaced_as_the_policy_says() {
    let target = "/mcsd/Organization?identifier=ura|999&name=x";
    let d = decide("deny", "GET", target, Some("123"));
    assert_eq!(d.rule.as_ref(), "narrowing");
    assert_eq!(
        outcome(&d),
        Err((
            400,
            "search parameter `identifier` conflicts with the narrowing of `Organization`".into()
        ))
    );
    let d = decide("replace", "GET", target, Some("123"));
    assert_eq!(outcome(&d), set_to("identifier", "ura|123"));
    // Repeated: all replaced by the one value (Envoy overwrites every occurrence).
    let d = decide(
        "replace",
        "GET",
        "/mcsd/Organization?identifier=a&identifier=b",
        Some("123"),
    );
    assert_eq!(outcome(&d), set_to("identifier", "ura|123"));
}

#[test]
fn forms_of_the_parameter_that_cannot_be_replaced_are_denied_in_either_mode() {
    for mode in ["deny", "replace"] {
        for query in [
            "identifier:missing=true",
            "identifier:not=ura|123",
            "identifier.system=x",
            "identifi%65r=ura|999",
            "identifier%20=ura|999",
            "name%3Amissing=true",
            "_filter=identifier eq x",
            "_include=Organization:partof",
            "_revinclude=Location:organization",
            "_contained=true",
            "_query=everything",
        ] {
            let d = decide(
                mode,
                "GET",
                &format!("/mcsd/Organization?{query}"),
                Some("1"),
            );
            let Err((400, _)) = outcome(&d) else {
                panic!("{mode}: {query} was not refused: {d:?}");
            };
        }
    }
    // A narrowing parameter with a modifier can never be replaced: its encoded name
    // would not match the client's.
    let d = decide(
        "replace",
        "GET",
        "/mcsd/PractitionerRole?_has:Organization:x:y=2",
        Some("1"),
    );
    assert!(matches!(outcome(&d), Err((400, _))), "{d:?}");
}

#[test]
fn requests_that_cannot_be_narrowed_are_denied() {
    for (method, target) in [
        ("GET", "/mcsd/Organization/123"),
        ("GET", "/mcsd/Organization/123/_history"),
        ("GET", "/mcsd/Organization/_history"),
        ("POST", "/mcsd/Organization/_search"),
        ("POST", "/mcsd/Organization"),
        ("DELETE", "/mcsd/Organization?name=x"),
        ("GET", "/mcsd?_type=Organization"),
        ("POST", "/mcsd/_search"),
        ("GET", "/mcsd/_history"),
        ("POST", "/mcsd"),
        ("GET", "/mcsd/%4Frganization"),
        ("GET", "/mcsd//Organization"),
        ("POST", "/mcsd/$export"),
    ] {
        let d = decide("replace", method, target, Some("1"));
        assert!(
            matches!(outcome(&d), Err((403, _))),
            "{method} {target}: {d:?}"
        );
    }
}

#[test]
fn no_value_or_an_or_value_denies() {
    let d = decide("deny", "GET", "/mcsd/Organization", None);
    assert!(matches!(outcome(&d), Err((403, _))), "{d:?}");
    let d = decide("deny", "GET", "/mcsd/Location", Some("1,2"));
    assert!(matches!(outcome(&d), Err((403, _))), "{d:?}");
    let d = decide("deny", "GET", "/mcsd/Location", Some(""));
    assert_eq!(
        outcome(&d),
        set_to("managingOrganization", "Organization/"),
        "a constant prefix with an empty value still narrows to nothing"
    );
}

#[test]
fn use_cases_find_their_policy() {
    let set = set(&policy("deny")).unwrap();
    assert_eq!(set.for_use_case("mCSD").unwrap().id.as_ref(), "mcsd");
    assert!(set.for_use_case("mcsd").is_none());
    let narrowing = set.get("mcsd").unwrap().narrowing().unwrap();
    assert_eq!(narrowing.base_path(), "/mcsd");
    // In the order the policy lists them: the Care Services scopes keep it.
    assert_eq!(
        narrowing.resource_types().collect::<Vec<_>>(),
        ["Organization", "Location", "PractitionerRole"]
    );
}

#[test]
fn a_resource_type_given_twice_is_refused() {
    let text = policy("deny").replace(
        "        PractitionerRole:\n",
        "        Organization:\n          identifier: \"'x'\"\n        PractitionerRole:\n",
    );
    let problems = set(&text).expect_err("loaded");
    assert!(
        format!("{problems:?}").contains("duplicate entry with key \\\"Organization\\\""),
        "{problems:?}"
    );
}

#[test]
fn bad_narrowing_blocks_fail_the_load() {
    let errors = |yaml: &str| -> String {
        set(yaml)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = errors(
        r#"
policies:
  - id: p
    anonymous: true
    narrowing:
      base_path: fhir
      resources:
        organization: {identifier: "'x'"}
        Location: {"bad name": "'x'", _include: "'x'", organization: "request.nope"}
        Patient: {}
    rules: [{id: any, allow: true}]
"#,
    );
    for expected in [
        "`narrowing.base_path` must start with `/`",
        "`organization` is not a FHIR resource type",
        "`bad name` is not a search parameter Sluis may set",
        "`_include` is not a search parameter Sluis may set",
        "invalid CEL for `narrowing.resources.Location.organization`",
        "`narrowing.resources.Patient` sets no search parameter",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    let text = errors(
        "policies:\n  - {id: p, anonymous: true, narrowing: {resources: {Location: {organization: flows.size()}}}, rules: [{id: a, allow: true}]}\n",
    );
    assert!(text.contains("reads `flows`"), "{text}");
    let text = errors(
        "policies:\n  - {id: p, anonymous: true, narrowing: {on_conflict: merge, resources: {}}, rules: [{id: a, allow: true}]}\n",
    );
    assert!(text.contains("merge"), "{text}");
}
