use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use sluis_core::decision::{Allow, Deny};

fn check(value: Value) -> Result<AccessRequest, Refusal> {
    access_request(parse(value.to_string().as_bytes())?, 16)
}

fn status(refusal: Refusal) -> u16 {
    match refusal {
        Refusal::Undecidable { status, .. } => status,
        Refusal::Malformed(message) => panic!("malformed, not undecidable: {message}"),
    }
}

#[test]
fn a_check_request_becomes_the_access_request_it_describes() {
    let access = check(json!({
        "method": "get",
        "scheme": "HTTPS",
        "host": "api.test",
        "target": "/fhir/Patient%2F1?name=a%20b&x=1",
        "protocol": "HTTP/1.1",
        "headers": {"Authorization": "Bearer t", "x-a": "1,2", "X-A": "3"},
        "client_address": "10.0.0.1",
        "body_base64": "eyJhIjoxfQ==",
        "context": {"sluis_policy": "eoverdracht"},
    }))
    .unwrap();
    assert_eq!(access.method, "GET");
    assert_eq!(access.scheme, "https");
    assert_eq!(access.host, "api.test");
    assert_eq!(access.path, "/fhir/Patient%2F1");
    assert_eq!(access.query, "name=a%20b&x=1");
    assert_eq!(access.header("authorization"), Some("Bearer t"));
    // Two spellings of one name are joined as repeats are (in the JSON's key order).
    assert_eq!(access.header("x-a"), Some("3,1,2"));
    assert_eq!(access.source.address, "10.0.0.1");
    assert_eq!(access.body, r#"{"a":1}"#);
    assert_eq!(
        access.context.get("sluis_policy").map(String::as_str),
        Some("eoverdracht")
    );
    assert_eq!(access.door, Door("http-check"));
}

#[test]
fn defaults_are_plain_http_without_body_or_context() {
    let access = check(json!({"method": "POST", "target": "/"})).unwrap();
    assert_eq!(access.scheme, "http");
    assert_eq!(access.body, "");
    assert!(access.context.is_empty() && access.headers.is_empty());
}

#[test]
fn what_is_not_a_check_request_is_malformed() {
    for bad in [
        json!({"method": "GET"}),
        json!({"method": "GET", "target": "/", "extra": 1}),
        json!({"method": "GET", "target": "/", "body_base64": "not base64!"}),
        json!({"method": "GET", "target": "http://a.test/"}),
        json!({"method": "GET", "target": "/", "headers": {"a": 1}}),
        json!({"method": "GET", "target": "/", "context": (0..17).map(|i| (i.to_string(), json!("x"))).collect::<serde_json::Map<_, _>>()}),
    ] {
        assert!(
            matches!(check(bad.clone()), Err(Refusal::Malformed(_))),
            "{bad}"
        );
    }
    assert!(matches!(parse(b"{"), Err(Refusal::Malformed(_))));
}

#[test]
fn a_request_that_cannot_be_decided_on_is_denied_with_why() {
    let too_many: serde_json::Map<String, Value> = (0..=MAX_HEADERS)
        .map(|i| (format!("h{i}"), json!("v")))
        .collect();
    let cases = [
        (json!({"method": "G E T", "target": "/"}), 400),
        (json!({"method": "", "target": "/"}), 400),
        (
            json!({"method": "GET", "target": "/", "headers": {"x": "a\r\nb"}}),
            400,
        ),
        (
            json!({"method": "GET", "target": "/", "headers": {"x": "caf\u{e9}"}}),
            400,
        ),
        (
            json!({"method": "GET", "target": "/", "headers": too_many}),
            431,
        ),
        // 17 bytes, one over the limit of this test's door.
        (
            json!({"method": "POST", "target": "/", "body_base64": "MDEyMzQ1Njc4OWFiY2RlZmc="}),
            413,
        ),
        (
            json!({"method": "GET", "target": format!("/{}", "a".repeat(MAX_TARGET))}),
            414,
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(
            status(check(value.clone()).unwrap_err()),
            expected,
            "{value}"
        );
    }
    // Exactly at the body limit is decided.
    assert!(
        check(json!({"method": "POST", "target": "/", "body_base64": "MDEyMzQ1Njc4OWFiY2RlZg=="}))
            .is_ok()
    );
}

fn decision(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        policy: Some(Arc::from("p")),
        rule: Arc::from("r"),
        reason: "because".into(),
    }
}

#[test]
fn an_allow_carries_headers_removals_and_the_rewritten_query() {
    let mut access = AccessRequest::default();
    access.set_target("/a?name=x%2Fy&debug=1");
    let allow = Allow {
        set_headers: vec![("x-sluis-client-id".into(), "c-1".into())],
        remove_headers: vec!["authorization".into()],
        set_query: vec![("tenant".into(), "ura|1".into())],
        remove_query: vec!["debug".into()],
        ..Default::default()
    };
    let answer = answer(decision(Outcome::Allow(allow)), &access);
    assert_eq!(
        serde_json::to_value(&answer).unwrap(),
        json!({
            "decision": "allow",
            "set_headers": [["x-sluis-client-id", "c-1"]],
            "remove_headers": ["authorization"],
            "query": "name=x%2Fy&tenant=ura%7C1",
            "policy": "p",
            "rule": "r",
        })
    );
    // Without query changes the query is left alone: null, not "".
    let plain = answer_of(Outcome::Allow(Allow::default()), &access);
    assert_eq!(plain["query"], Value::Null);
}

fn answer_of(outcome: Outcome, access: &AccessRequest) -> Value {
    serde_json::to_value(answer(decision(outcome), access)).unwrap()
}

#[test]
fn a_deny_carries_status_headers_and_body() {
    let deny = Deny {
        status: 401,
        headers: vec![("www-authenticate".into(), "Bearer realm=\"sluis\"".into())],
        body: "{\"error\":\"unauthorized\"}".into(),
    };
    assert_eq!(
        answer_of(Outcome::Deny(deny), &AccessRequest::default()),
        json!({
            "decision": "deny",
            "status": 401,
            "headers": [["www-authenticate", "Bearer realm=\"sluis\""]],
            "body": "{\"error\":\"unauthorized\"}",
            "policy": "p",
            "rule": "r",
        })
    );
}

proptest::proptest! {
    /// Whatever the plugin sends, the door answers with a request or a refusal, and a
    /// header value with a byte a header cannot carry is never decided on.
    #[test]
    fn any_check_request_is_translated_or_refused(
        method in "[ -~]{0,8}",
        target in "/[ -~]{0,20}",
        value in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        body in proptest::option::of("[A-Za-z0-9+/=]{0,12}"),
    ) {
        let value = String::from_utf8_lossy(&value).into_owned();
        let mut request = json!({
            "method": method,
            "target": target,
            "headers": {"x-v": value},
        });
        if let Some(body) = body {
            request["body_base64"] = json!(body);
        }
        if let Ok(access) = check(request) {
            proptest::prop_assert!(access.method.bytes().all(|b| b.is_ascii_uppercase()));
            proptest::prop_assert!(value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        let _ = parse(&bytes);
    }
}
