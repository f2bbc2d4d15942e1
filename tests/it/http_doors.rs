//! The forward-auth and OPA Data API doors over HTTP, against a real server on ephemeral
//! ports: the conventions each gateway uses, the 400 rules, the result shapes, and the
//! load-time warnings about what the configured gateways cannot do.

use sluis_test_kit as kit;

use kit::*;

use crate::sluis;
use serde_json::{Value, json};

/// A policy that narrows searches through the query: no HTTP door's gateway can apply it.
const NARROWING: &str = r#"
policies:
  - id: narrowing
    match: {paths: ["/fhir/Organization"]}
    issuers: [test]
    rules:
      - {id: any, allow: true}
    response:
      set_query:
        identifier: "'ura|' + token.client_id"
"#;

async fn start() -> (Setup, Server) {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY), ("narrowing.yaml", NARROWING)],
    );
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

#[tokio::test]
async fn forward_auth_allows_with_headers_and_denies_with_sluis_answer() {
    let (_setup, server) = start().await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.http);
    let token = token(&claims());

    // Envoy style: the original path after the prefix, the original method.
    let response = client
        .get(format!("{base}/decisions/api/things?x=1"))
        .bearer_auth(&token)
        .header("x-sluis-role", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-user"], "user-1");
    assert_eq!(response.headers()["x-client"], "client-1");
    assert_eq!(
        response.headers()["x-sluis-remove-headers"],
        "authorization, x-sluis-role"
    );
    assert_eq!(
        response.headers()["x-envoy-auth-headers-to-remove"],
        "authorization,x-sluis-role"
    );

    // Traefik/Caddy style.
    let response = client
        .get(format!("{base}/decisions"))
        .bearer_auth(&token)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/api/things")
        .header("x-forwarded-host", "api.test")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-user"], "user-1");

    // NGINX style, denied by method: X-Original-Method wins over the subrequest's GET.
    let response = client
        .get(format!("{base}/decisions"))
        .bearer_auth(&token)
        .header("x-original-method", "DELETE")
        .header("x-original-uri", "/api/things")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "access_denied", "message": "access denied by policy"})
    );

    // No token: 401 with the challenge and the JSON body.
    let response = client
        .get(format!("{base}/decisions/api/things"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"sluis\""
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "unauthorized", "message": "an access token is required"})
    );
    server.stop().await;
}

/// APISIX's `forward-auth` plugin (https://apisix.apache.org/docs/apisix/plugins/forward-auth/):
/// it asks `uri` (here exactly `/decisions`) with GET, or POST with the client's body when
/// `request_method: POST`, and sets `X-Forwarded-Proto`, `-Method`, `-Host`, `-Uri` (the
/// normalized URI with its query string) and `-For` itself, beside the client headers
/// listed in `request_headers`.
#[tokio::test]
async fn apisix_forward_auth_shapes_are_decided() {
    let (_setup, server) = start().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/decisions", server.http);
    let token = token(&claims());
    let ask = |auth_method: reqwest::Method, method: &str, uri: &str, body: &str| {
        client
            .request(auth_method, &url)
            .bearer_auth(&token)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-method", method)
            .header("x-forwarded-host", "api.test")
            .header("x-forwarded-uri", uri)
            .header("x-forwarded-for", "192.0.2.7")
            .body(body.to_owned())
            .send()
    };

    let allowed = ask(reqwest::Method::GET, "GET", "/api/things?x=1", "")
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    // What `upstream_headers: [X-User, X-Client]` copies to the upstream.
    assert_eq!(allowed.headers()["x-user"], "user-1");
    assert_eq!(allowed.headers()["x-client"], "client-1");

    // The original method is the header's, not the auth request's GET.
    let denied = ask(reqwest::Method::GET, "DELETE", "/api/things", "")
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(
        denied.json::<Value>().await.unwrap()["error"],
        "access_denied"
    );

    // `request_method: POST`: the body comes along, the method is still the header's.
    let posted = ask(reqwest::Method::POST, "GET", "/api/things", "{\"a\": 1}")
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);

    // Without a token APISIX passes the 401 and, with `client_headers`, its challenge.
    let anonymous = client
        .get(&url)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/api/things")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));

    // A query rewrite cannot be carried through forward-auth: denied, never a wider allow.
    let narrowed = ask(reqwest::Method::GET, "GET", "/fhir/Organization", "")
        .await
        .unwrap();
    assert_ne!(narrowed.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn forward_auth_refuses_requests_that_do_not_say_what_was_asked() {
    let (_setup, server) = start().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/decisions", server.http);
    for headers in [
        vec![],
        vec![("x-forwarded-method", "GET")],
        vec![("x-original-uri", "/api/things")],
        vec![("x-original-method", "GET"), ("x-original-uri", "no-slash")],
        // A client's own `X-Original-URI` next to the gateway's `X-Forwarded-Uri`.
        vec![
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/api/admin/users"),
            ("x-original-uri", "/api/things"),
        ],
    ] {
        let mut request = client.get(&url).bearer_auth(token(&claims()));
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{headers:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(body["message"].as_str().unwrap().len() > 10, "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_query_rewrite_the_gateway_cannot_apply_fails_closed() {
    let (_setup, server) = start().await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.http);
    let token = token(&claims());
    // Forwarded unchanged this search would be wider than the policy allows: denied.
    let response = client
        .get(format!("{base}/decisions/fhir/Organization?name=x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // Already exactly as narrowed: nothing to rewrite, allowed.
    let response = client
        .get(format!(
            "{base}/decisions/fhir/Organization?identifier=ura%7Cclient-1"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Through the OPA door alike.
    let response = client
        .post(format!("{base}/v1/data/sluis/allow"))
        .json(&kong_input("GET", "/fhir/Organization", &token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["allow"], false, "{body}");
    server.stop().await;
}

/// Kong's OPA plugin input (https://developer.konghq.com/plugins/opa/, "OPA input
/// format") for a request with a bearer token.
fn kong_input(method: &str, path: &str, token: &str) -> Value {
    json!({
        "input": {
            "request": {
                "http": {
                    "host": "api.test",
                    "port": "8000",
                    "tls": {},
                    "method": method,
                    "scheme": "http",
                    "path": path,
                    "querystring": {},
                    "headers": {
                        "authorization": format!("Bearer {token}"),
                        "user-agent": "curl/8.0",
                    },
                }
            },
            "client_ip": "127.0.0.1",
        }
    })
}

/// APISIX's `opa` plugin input (https://apisix.apache.org/docs/apisix/plugins/opa/,
/// "Data definition").
fn apisix_input(method: &str, path: &str, token: Option<&str>) -> Value {
    let mut headers = json!({"user-agent": "curl/7.68.0", "accept": "*/*", "host": "api.test"});
    if let Some(token) = token {
        headers["authorization"] = json!(format!("Bearer {token}"));
    }
    json!({
        "input": {
            "type": "http",
            "request": {
                "scheme": "http",
                "path": path,
                "headers": headers,
                "query": {},
                "port": 9080,
                "method": method,
                "host": "api.test",
            },
            "var": {
                "timestamp": 1701234567,
                "server_addr": "127.0.0.1",
                "server_port": "9080",
                "remote_port": "40000",
                "remote_addr": "127.0.0.1",
            },
        }
    })
}

#[tokio::test]
async fn opa_door_answers_kong_and_apisix_in_their_shapes() {
    let (_setup, server) = start().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/data/sluis/allow", server.http);
    let token = token(&claims());
    let ask = |body: Value| {
        let request = client.post(&url).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };

    assert_eq!(
        ask(kong_input("GET", "/api/things", &token)).await,
        json!({"result": {"allow": true, "headers": {"x-user": "user-1", "x-client": "client-1"}}})
    );
    assert_eq!(
        ask(kong_input("GET", "/api/admin/x", &token)).await,
        json!({"result": {
            "allow": false,
            "status": 403,
            "headers": {"content-type": "application/json"},
            "message": {"error": "access_denied", "message": "admin is off limits"},
        }})
    );
    assert_eq!(
        ask(apisix_input("GET", "/api/things", Some(&token))).await,
        json!({"result": {"allow": true, "headers": {"x-user": "user-1", "x-client": "client-1"}}})
    );
    assert_eq!(
        ask(apisix_input("GET", "/api/things", None)).await,
        json!({"result": {
            "allow": false,
            "status_code": 401,
            "headers": {
                "content-type": "application/json",
                "www-authenticate": "Bearer realm=\"sluis\"",
            },
            "reason": {"error": "unauthorized", "message": "an access token is required"},
        }})
    );
    server.stop().await;
}

#[tokio::test]
async fn opa_door_rejects_bad_documents_in_opa_error_shape() {
    let (_setup, server) = start().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/data/sluis/allow", server.http);
    for (body, expected) in [
        ("{\"input\": ", "not valid JSON"),
        ("{}", "`input` is missing"),
        ("{\"input\": {\"hello\": 1}}", "neither Kong's"),
    ] {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "invalid_parameter", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    server.stop().await;
}

#[test]
fn validate_warns_about_what_the_configured_gateways_cannot_do() {
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0")
        + "gateways:\n  http: [nginx, envoy]\n  removes_headers: [Authorization]\n";
    let setup = Setup::new(
        &config,
        &[("api.yaml", POLICY), ("narrowing.yaml", NARROWING)],
    );
    let (code, stdout, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("nginx, envoy cannot rewrite the query string; policies `narrowing`"),
        "{stderr}"
    );
    // NGINX cannot remove `x-sluis-*` on Sluis's word; Envoy can, and `authorization`
    // is removed by the gateway's own configuration.
    assert!(
        stderr.contains("nginx remove a header only when their own configuration says so; policies `api`, `narrowing` remove `x-sluis-*`"),
        "{stderr}"
    );
    assert!(!stderr.contains("`authorization`"), "{stderr}");

    // No gateways configured: nothing to warn about.
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("narrowing.yaml", NARROWING)],
    );
    let (code, _, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(!stderr.contains("warning"), "{stderr}");

    // An unknown gateway is named.
    let setup = Setup::new(
        &(config_yaml("127.0.0.1:0", "127.0.0.1:0") + "gateways:\n  http: [haproxy]\n"),
        &[("api.yaml", POLICY)],
    );
    let (code, _, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("haproxy"), "{stderr}");
}

/// OPA input is read up to 2 MiB: past that it is refused while it is read.
#[tokio::test]
async fn opa_door_refuses_an_oversized_input_while_reading() {
    let (_setup, server) = start().await;
    let url = format!("http://{}/v1/data/sluis/allow", server.http);
    let body = json!({"input": {"padding": "x".repeat(2 * 1024 * 1024)}}).to_string();
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    server.stop().await;
}
