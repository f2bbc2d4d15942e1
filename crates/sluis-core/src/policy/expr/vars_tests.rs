//! `request` and `caller` built straight as the interpreter's values agree with the same
//! values built through `cel::Value` (the way before, kept as the reference).

use std::collections::HashMap;

use cel::Value;
use cel::common::value::Val;
use proptest::prelude::*;

use crate::authn::Identity;
use crate::request::AccessRequest;

use super::{RequestFields, caller_val, caller_value, request_val, request_value, to_val};

/// The value the interpreter would hand back, for comparing.
fn value(val: &dyn Val) -> Value {
    Value::try_from(val).unwrap()
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /%+=&?é_.-]{0,12}"
}

prop_compose! {
    fn any_request()(
        method in prop::sample::select(vec!["GET", "POST", ""]),
        scheme in text(),
        host in text(),
        target in "(/[a-z%0-9]{0,4}){0,4}(\\?[a-z]{0,3}(=[a-z%2B+]{0,3})?(&[a-z]{0,3}=[a-z]{0,2}){0,3})?",
        protocol in text(),
        body in text(),
        headers in prop::collection::hash_map("[a-z-]{1,6}", text(), 0..4),
        context in prop::collection::hash_map("[a-z_]{1,6}", text(), 0..4),
    ) -> AccessRequest {
        let mut request = AccessRequest {
            method: method.into(),
            scheme,
            host,
            protocol,
            body,
            headers: headers.into_iter().collect(),
            context,
            ..Default::default()
        };
        request.set_target(&target);
        request
    }
}

proptest! {
    /// Any request, any set of fields read: the same `request` value.
    #[test]
    fn request_is_built_as_before(request in any_request(), bits in any::<u16>()) {
        let fields = RequestFields(bits);
        let before = to_val(request_value(&request, fields));
        prop_assert_eq!(value(request_val(&request, fields).as_ref()), value(before.as_ref()));
    }
}

#[test]
fn a_request_with_every_field_is_built_as_before() {
    let mut request = AccessRequest {
        method: "GET".into(),
        headers: [("x-a", "1")].into_iter().collect(),
        context: HashMap::from([("patient_bsn".into(), "900186021".into())]),
        ..Default::default()
    };
    request.set_target("/fhir/Patient/1?a=1&a=2&b=%2B+x");
    let built = request_val(&request, RequestFields::ALL);
    assert_eq!(
        value(built.as_ref()),
        value(to_val(request_value(&request, RequestFields::ALL)).as_ref())
    );
    let query = Value::try_from(
        built
            .as_indexer()
            .unwrap()
            .get(&cel::common::types::CelString::from("query"))
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let Value::Map(query) = query else {
        panic!("query is a map")
    };
    assert_eq!(
        query.get(&cel::objects::Key::from("a")),
        Some(&Value::from("1")),
        "the first of a repeated parameter"
    );
}

#[test]
fn caller_is_built_as_before() {
    let caller = super::super::caller::Caller::compile(
        serde_yaml_ng::from_str(
            r#"
ura: {from: ["claim:organization_ura", "claim:subject_organization_id"]}
facility_type: {from: ["claim:organization_facility_type"]}
role: {from: ["claim:subject_role"]}
"#,
        )
        .unwrap(),
    )
    .unwrap();
    let claims = |claims: serde_json::Value| Identity {
        claims: claims.as_object().unwrap().clone(),
        ..Identity::for_tests("nuts", "https://idp", Some("s-1"))
    };
    let identities = [
        claims(
            serde_json::json!({"organization_ura": "24173480", "organization_facility_type": "Z3"}),
        ),
        // Two sources disagree: `ura` is left out.
        claims(serde_json::json!({"organization_ura": "1", "subject_organization_id": "2"})),
        claims(serde_json::json!({})),
    ];
    for identity in &identities {
        for caller in [Some(&caller), None] {
            for identity in [Some(identity), None] {
                assert_eq!(
                    value(caller_val(caller, identity).0.as_ref()),
                    value(to_val(caller_value(caller, identity)).as_ref())
                );
            }
        }
    }
}

/// `caller` through `Vars`, kept with the identity: the same value on every request, for
/// the block it was built for; another block's is its own; a conflict is never kept.
#[test]
fn caller_kept_with_the_identity_is_the_callers_value() {
    let block = |yaml: &str| {
        super::super::caller::Caller::compile(serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    };
    let ura = block(r#"ura: {from: ["claim:organization_ura", "claim:subject_organization_id"]}"#);
    let role = block(r#"role: {from: ["claim:subject_role"]}"#);
    let identity = |claims: serde_json::Value| Identity {
        claims: claims.as_object().unwrap().clone(),
        ..Identity::for_tests("nuts", "https://idp", Some("s-1"))
    };
    let request = AccessRequest::default();
    let through = |caller: &super::super::caller::Caller, identity: &Identity| {
        use cel::context::VariableResolver;
        let vars = super::Vars::new(&request, Some(identity), RequestFields::default())
            .with_caller(Some(caller));
        value(vars.resolve("caller").unwrap().as_ref())
    };
    let reference =
        |caller, identity| value(to_val(caller_value(Some(caller), Some(identity))).as_ref());
    let agreeing = identity(serde_json::json!({"organization_ura": "1", "subject_role": "01.015"}));
    for _ in 0..2 {
        assert_eq!(through(&ura, &agreeing), reference(&ura, &agreeing));
        assert_eq!(through(&role, &agreeing), reference(&role, &agreeing));
    }
    assert!(
        agreeing
            .caller_value
            .get()
            .is_some_and(|(id, _)| *id == ura.id())
    );
    let conflicting =
        identity(serde_json::json!({"organization_ura": "1", "subject_organization_id": "2"}));
    for _ in 0..2 {
        assert_eq!(through(&ura, &conflicting), reference(&ura, &conflicting));
    }
    assert!(
        conflicting.caller_value.get().is_none(),
        "a conflict is not kept"
    );
    assert_ne!(ura.id(), role.id());
}
