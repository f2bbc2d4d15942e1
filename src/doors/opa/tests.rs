//! The request bodies are the documented examples of each plugin, cited per test.

use serde_json::json;

use super::*;
use sluis_core::decision::{Allow, Deny};

/// Kong's OPA plugin, "OPA input format", <https://developer.konghq.com/plugins/opa/>
/// (the documented example with its comments removed; the optional `service`, `route`
/// and `consumer` entities shortened).
const KONG_INPUT: &str = r#"{
  "input": {
    "request": {
      "http": {
        "host": "example.org",
        "port": "8000",
        "tls": {},
        "method": "GET",
        "scheme": "http",
        "path": "/foo/bar",
        "querystring": { "arg1": "value1", "arg2": ["a", "b"], "flag": true },
        "headers": { "header1": "value1", "header2": ["v1", "v2"] }
      }
    },
    "client_ip": "127.0.0.1",
    "service": { "host": "upstream.example.org", "name": "example-service" },
    "route": { "paths": ["/foo"], "name": "example-route" },
    "consumer": { "username": "alice" }
  }
}"#;

/// APISIX's `opa` plugin, "Data definition: APISIX to OPA service",
/// <https://apisix.apache.org/docs/apisix/plugins/opa/> (the documented example).
const APISIX_INPUT: &str = r#"{
  "input": {
    "type": "http",
    "request": {
      "scheme": "http",
      "path": "\/get",
      "headers": {
        "user-agent": "curl\/7.68.0",
        "accept": "*\/*",
        "host": "127.0.0.1:9080"
      },
      "query": {},
      "port": 9080,
      "method": "GET",
      "host": "127.0.0.1"
    },
    "var": {
      "timestamp": 1701234567,
      "server_addr": "127.0.0.1",
      "server_port": "9080",
      "remote_port": "port",
      "remote_addr": "ip address"
    },
    "route": {},
    "service": {},
    "consumer": {}
  }
}"#;

#[test]
fn kong_input_is_read() {
    let (plugin, access) = parse(KONG_INPUT.as_bytes()).unwrap();
    assert_eq!(plugin, Plugin::Kong);
    assert_eq!(access.method, "GET");
    assert_eq!(access.scheme, "http");
    assert_eq!(access.host, "example.org");
    assert_eq!(access.path, "/foo/bar");
    assert_eq!(access.query, "arg1=value1&arg2=a&arg2=b&flag");
    assert_eq!(access.header("header1"), Some("value1"));
    assert_eq!(access.header("header2"), Some("v1,v2"));
    assert_eq!(access.source.address, "127.0.0.1");
}

#[test]
fn apisix_input_is_read() {
    let (plugin, access) = parse(APISIX_INPUT.as_bytes()).unwrap();
    assert_eq!(plugin, Plugin::Apisix);
    assert_eq!(access.method, "GET");
    assert_eq!(access.path, "/get");
    assert_eq!(access.host, "127.0.0.1");
    assert_eq!(access.query, "");
    assert_eq!(access.header("user-agent"), Some("curl/7.68.0"));
    assert_eq!(access.source.address, "ip address:port");
}

#[test]
fn bad_documents_are_named() {
    let cases = [
        ("{", "not valid JSON"),
        ("{}", "`input` is missing"),
        (r#"{"input": null}"#, "`input` is missing"),
        (r#"{"input": {"foo": 1}}"#, "neither Kong's"),
        (
            r#"{"input": {"type": "stream", "request": {}}}"#,
            "must be `http`",
        ),
        (
            r#"{"input": {"request": {"http": {"method": "GET"}}}}"#,
            "missing field `path`",
        ),
        (
            r#"{"input": {"request": {"http": {"method": "GET", "path": "x"}}}}"#,
            "does not start with `/`",
        ),
        (
            r#"{"input": {"request": {"http": {"method": "G T", "path": "/"}}}}"#,
            "not an HTTP method",
        ),
        (
            r#"{"input": {"type": "http", "request": {"method": "GET", "path": "/", "headers": {"a": 1}}}}"#,
            "header `a`",
        ),
    ];
    for (body, expected) in cases {
        let error = parse(body.as_bytes()).unwrap_err();
        assert!(error.contains(expected), "{body}: {error}");
    }
}

fn decision(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        policy: Some(Arc::from("p")),
        rule: Arc::from("r"),
        reason: String::new(),
    }
}

fn allow() -> Decision {
    decision(Outcome::Allow(Allow {
        set_headers: vec![("x-user".into(), "alice".into())],
        remove_headers: vec!["authorization".into()],
        ..Default::default()
    }))
}

fn deny(body: &str) -> Decision {
    decision(Outcome::Deny(Deny {
        status: 401,
        headers: vec![("www-authenticate".into(), "Bearer realm=\"api\"".into())],
        body: body.into(),
    }))
}

#[test]
fn kong_results() {
    // Kong: `allow`, `headers` injected into the request on allow; `status`, `headers` and
    // `message` make the response on deny.
    assert_eq!(
        result(Plugin::Kong, allow()),
        json!({"allow": true, "headers": {"x-user": "alice"}})
    );
    assert_eq!(
        result(Plugin::Kong, deny(r#"{"error":"unauthorized"}"#)),
        json!({
            "allow": false,
            "status": 401,
            "headers": {"www-authenticate": "Bearer realm=\"api\""},
            "message": {"error": "unauthorized"},
        })
    );
}

#[test]
fn apisix_results() {
    // APISIX: `allow`, `reason`, `headers`, `status_code`.
    assert_eq!(
        result(Plugin::Apisix, allow()),
        json!({"allow": true, "headers": {"x-user": "alice"}})
    );
    assert_eq!(
        result(Plugin::Apisix, deny("not here")),
        json!({
            "allow": false,
            "status_code": 401,
            "headers": {"www-authenticate": "Bearer realm=\"api\""},
            "reason": "not here",
        })
    );
}
