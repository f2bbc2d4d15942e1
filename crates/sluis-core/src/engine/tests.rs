//! The engine's operations for doors: deciding for a door that cannot rewrite a query,
//! and the Care Services Proxy's use cases and scopes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use crate::authn::settings::AuthnSettings;
use crate::policy::LoadSettings;

use super::scopes::{Scope, Scopes};
use super::*;
use crate::request::{Door, POLICY_CONTEXT_KEY};
use std::time::Duration;

/// Organisations and locations narrowed to the requester; `deny_all` turns every answer
/// into a denial of rule `closed`.
fn engine(deny_all: bool) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let rule = if deny_all {
        "{id: closed, deny: 'true'}"
    } else {
        "{id: open, allow: 'true'}"
    };
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            r#"
policies:
  - id: directory
    match: {{paths: ["/mcsd/**"]}}
    anonymous: true
    rules: [{rule}]
    narrowing:
      base_path: /mcsd
      use_cases: [mCSD]
      on_conflict: replace
      resources:
        Organization:
          identifier: "'ura|' + request.context['requester.organization_identifier']"
        Location:
          managingOrganization: "'Organization/' + request.context['requester.organization_identifier']"
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
    Engine::new(policies, authn)
}

fn asked(ura: &str) -> AccessRequest {
    AccessRequest {
        context: [(
            "requester.organization_identifier".to_string(),
            ura.to_string(),
        )]
        .into_iter()
        .collect(),
        door: Door("care-services"),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_door_that_cannot_rewrite_the_query_is_refused_a_narrowing_allow() {
    let engine = engine(false);
    let mut request = asked("1");
    request.method = "GET".into();
    request.set_target("/mcsd/Organization?name=x");
    let refused = DoorCapabilities {
        can_rewrite_query: false,
    };
    let denied = engine.decide_for_door(&request, refused).await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(&*denied.rule, "gateway-cannot-rewrite-query");
    assert_eq!(denied.policy.as_deref(), Some("directory"));
    let Outcome::Deny(deny) = &denied.outcome else {
        panic!("an allow: {denied:?}")
    };
    assert_eq!(
        deny.body,
        deny_body(DenyCode::AccessDenied, "access denied by policy")
    );
    // The same request through a door that can rewrite: the narrowing, as decided.
    let allowed = engine.decide(&request).await.unwrap();
    let Outcome::Allow(allow) = &allowed.outcome else {
        panic!("a deny: {allowed:?}")
    };
    assert_eq!(
        allow.set_query,
        vec![("identifier".to_string(), "ura|1".to_string())]
    );
    // Asked exactly as narrowed, there is nothing to rewrite: it passes either door.
    request.set_target("/mcsd/Organization?identifier=ura%7C1");
    assert!(
        engine
            .decide_for_door(&request, refused)
            .await
            .unwrap()
            .is_allow()
    );
}

#[test]
fn a_use_case_places_the_request_below_its_policys_base_path() {
    let engine = engine(false);
    let mut request = asked("1");
    engine
        .place_in_use_case("mCSD", "/Organization", &mut request)
        .unwrap();
    assert_eq!(request.path, "/mcsd/Organization");
    assert_eq!(
        request.context.get(POLICY_CONTEXT_KEY).map(String::as_str),
        Some("directory")
    );
    let denied = engine
        .place_in_use_case("unknown", "Organization", &mut asked("1"))
        .unwrap_err();
    assert_eq!(denied.status(), 403);
    assert_eq!(&*denied.rule, "no-use-case");
    let Outcome::Deny(deny) = &denied.outcome else {
        panic!("an allow")
    };
    assert_eq!(
        deny.body,
        deny_body(
            DenyCode::AccessDenied,
            "no policy answers for use case `unknown`"
        )
    );
}

#[tokio::test]
async fn the_scopes_of_a_use_case_merge_one_decision_per_narrowed_type() {
    let engine = engine(false);
    let Scopes::Granted(scopes) = engine.decide_scopes("mCSD", &asked("7")).await.unwrap() else {
        panic!("nothing granted")
    };
    // In the order the policy lists the types, not sorted.
    assert_eq!(
        scopes,
        vec![
            Scope {
                resource_type: "Organization".into(),
                narrowing: vec![("identifier".into(), "ura|7".into())],
                expires_at: None,
            },
            Scope {
                resource_type: "Location".into(),
                narrowing: vec![("managingOrganization".into(), "Organization/7".into())],
                expires_at: None,
            },
        ]
    );
}

#[tokio::test]
async fn scopes_denied_everywhere_answer_with_the_denial_or_a_403_for_an_unknown_use_case() {
    let engine = engine(true);
    let Scopes::Denied(denied) = engine.decide_scopes("mCSD", &asked("7")).await.unwrap() else {
        panic!("granted")
    };
    assert_eq!(denied.status(), 403);
    assert_eq!(&*denied.rule, "closed");
    let Scopes::Denied(denied) = engine.decide_scopes("nope", &asked("7")).await.unwrap() else {
        panic!("granted")
    };
    assert_eq!(denied.status(), 403);
    assert_eq!(&*denied.rule, "no-use-case");
    assert!(denied.policy.is_none());
}

#[test]
fn at_most_ten_denials_a_second_and_the_next_line_counts_the_rest() {
    let budget = DenyLogBudget::new();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for _ in 0..DENY_LOG_PER_SECOND {
        assert_eq!(budget.admit(t), Some(0));
    }
    assert_eq!(budget.admit(t), None);
    assert_eq!(budget.admit(t), None);
    assert_eq!(budget.admit(t + Duration::from_secs(1)), Some(2));
    assert_eq!(budget.admit(t + Duration::from_secs(1)), Some(0));
}
