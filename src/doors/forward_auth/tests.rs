use axum::http::{HeaderMap, HeaderValue, Method, Uri};

use super::*;
use sluis_core::decision::{Allow, Deny};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn translate(method: &str, uri: &str, pairs: &[(&str, &str)]) -> Result<AccessRequest, String> {
    access_request(
        &Method::from_bytes(method.as_bytes()).unwrap(),
        &uri.parse::<Uri>().unwrap(),
        &headers(pairs),
        b"",
    )
}

#[test]
fn envoy_path_prefix_carries_method_path_and_query() {
    // Envoy `http_service` with `path_prefix: /decisions`: the original method, the
    // prefix + original path and query, the original Host.
    let access = translate(
        "DELETE",
        "/decisions/fhir/Patient/1?_format=json",
        &[("host", "api.example.org"), ("x-forwarded-proto", "https")],
    )
    .unwrap();
    assert_eq!(access.method, "DELETE");
    assert_eq!(access.path, "/fhir/Patient/1");
    assert_eq!(access.query, "_format=json");
    assert_eq!(access.host, "api.example.org");
    assert_eq!(access.scheme, "https");
    let root = translate("GET", "/decisions/", &[]).unwrap();
    assert_eq!(root.path, "/");
}

#[test]
fn with_a_path_headers_a_client_could_send_are_ignored() {
    let access = translate(
        "GET",
        "/decisions/public",
        &[
            ("x-original-uri", "/admin"),
            ("x-forwarded-method", "DELETE"),
        ],
    )
    .unwrap();
    assert_eq!(
        (access.method.as_str(), access.path.as_str()),
        ("GET", "/public")
    );
}

#[test]
fn nginx_original_headers() {
    // NGINX `auth_request`: `proxy_set_header X-Original-URI $request_uri;` and
    // `X-Original-Method $request_method`; the subrequest itself is a GET to /decisions.
    let access = translate(
        "GET",
        "/decisions",
        &[
            ("host", "sluis.internal"),
            ("x-original-method", "post"),
            ("x-original-uri", "/api/things?tenant=a%20b"),
            ("x-forwarded-host", "api.example.org"),
            ("x-forwarded-for", "192.0.2.7"),
        ],
    )
    .unwrap();
    assert_eq!(access.method, "POST");
    assert_eq!(access.path, "/api/things");
    assert_eq!(access.query, "tenant=a%20b");
    assert_eq!(access.host, "api.example.org");
    assert_eq!(access.scheme, "http");
    assert_eq!(access.source.address, "192.0.2.7");
}

#[test]
fn traefik_and_caddy_forwarded_headers() {
    // Traefik ForwardAuth and Caddy forward_auth: X-Forwarded-Method, -Uri, -Host, -Proto,
    // -For.
    let access = translate(
        "GET",
        "/decisions",
        &[
            ("x-forwarded-method", "PUT"),
            ("x-forwarded-uri", "/api/x"),
            ("x-forwarded-host", "api.example.org"),
            ("x-forwarded-proto", "HTTPS"),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.2"),
        ],
    )
    .unwrap();
    assert_eq!(access.method, "PUT");
    assert_eq!(access.path, "/api/x");
    assert_eq!(access.scheme, "https");
    // The last entry is the one the gateway appended; earlier ones the client may forge.
    assert_eq!(access.source.address, "198.51.100.2");
}

#[test]
fn conventions_that_disagree_are_refused_not_resolved() {
    // Through Traefik a client can add `X-Original-URI`; through NGINX `X-Forwarded-Uri`.
    // Picking either could decide on a path the gateway does not forward.
    let spoofed_uri = translate(
        "GET",
        "/decisions",
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/admin"),
            ("x-original-uri", "/public"),
        ],
    )
    .unwrap_err();
    assert!(
        spoofed_uri.contains("disagree about the original URI"),
        "{spoofed_uri}"
    );
    let spoofed_method = translate(
        "GET",
        "/decisions",
        &[
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/a"),
            ("x-forwarded-method", "GET"),
        ],
    )
    .unwrap_err();
    assert!(
        spoofed_method.contains("X-Original-Method"),
        "{spoofed_method}"
    );
    // Both set alike (an NGINX config may set both): fine.
    let access = translate(
        "GET",
        "/decisions",
        &[
            ("x-original-method", "PATCH"),
            ("x-forwarded-method", "PATCH"),
            ("x-original-uri", "/a"),
            ("x-forwarded-uri", "/a"),
        ],
    )
    .unwrap();
    assert_eq!(
        (access.method.as_str(), access.path.as_str()),
        ("PATCH", "/a")
    );
    // Each convention may give one part.
    let access = translate(
        "GET",
        "/decisions",
        &[
            ("x-original-uri", "/from-nginx"),
            ("x-forwarded-method", "PUT"),
        ],
    )
    .unwrap();
    assert_eq!(
        (access.method.as_str(), access.path.as_str()),
        ("PUT", "/from-nginx")
    );
}

#[test]
fn an_absolute_form_target_keeps_its_path_and_query() {
    let access = translate(
        "GET",
        "/decisions",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "http://api.example.org/a/b?c=d"),
        ],
    )
    .unwrap();
    assert_eq!(
        (access.path.as_str(), access.query.as_str()),
        ("/a/b", "c=d")
    );
}

#[test]
fn what_is_not_said_is_a_400_not_a_guess() {
    let no_uri = translate("GET", "/decisions", &[("x-forwarded-method", "GET")]).unwrap_err();
    assert!(no_uri.contains("original URI is missing"), "{no_uri}");
    let no_method = translate("GET", "/decisions", &[("x-original-uri", "/a")]).unwrap_err();
    assert!(
        no_method.contains("original method is missing"),
        "{no_method}"
    );
    let nothing = translate("GET", "/decisions", &[]).unwrap_err();
    assert!(nothing.contains("missing"), "{nothing}");
    let bad_method = translate(
        "GET",
        "/decisions",
        &[("x-original-method", "GET /x"), ("x-original-uri", "/a")],
    )
    .unwrap_err();
    assert!(bad_method.contains("not an HTTP method"), "{bad_method}");
    let bad_uri = translate(
        "GET",
        "/decisions",
        &[("x-original-method", "GET"), ("x-original-uri", "a b")],
    )
    .unwrap_err();
    assert!(bad_uri.contains("not a request URI"), "{bad_uri}");
}

#[test]
fn repeated_headers_are_joined() {
    let access = translate("GET", "/decisions/a", &[("x-tag", "one"), ("x-tag", "two")]).unwrap();
    assert_eq!(access.header("x-tag"), Some("one,two"));
}

fn decision(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        policy: Some(Arc::from("p")),
        rule: Arc::from("r"),
        reason: String::new(),
    }
}

#[test]
fn allow_sends_headers_to_set_and_names_those_to_remove() {
    let allow = Allow {
        set_headers: vec![("x-user".into(), "alice".into())],
        remove_headers: vec!["authorization".into(), "x-debug".into()],
        ..Default::default()
    };
    let answer = response(decision(Outcome::Allow(allow)), false);
    assert_eq!(answer.status(), 200);
    let headers = answer.headers();
    assert_eq!(headers["x-user"], "alice");
    assert_eq!(headers["x-sluis-remove-headers"], "authorization, x-debug");
    assert_eq!(
        headers["x-envoy-auth-headers-to-remove"],
        "authorization,x-debug"
    );
}

#[test]
fn deny_sends_status_headers_and_body_and_the_body_in_a_header_when_asked() {
    let deny = Deny {
        status: 401,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("www-authenticate".into(), "Bearer realm=\"api\"".into()),
        ],
        body: r#"{"error":"unauthorized","message":"an access token is required"}"#.into(),
    };
    let answer = response(decision(Outcome::Deny(deny.clone())), false);
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["www-authenticate"], "Bearer realm=\"api\"");
    assert!(answer.headers().get("x-sluis-deny-body").is_none());
    let answer = response(decision(Outcome::Deny(deny.clone())), true);
    assert_eq!(answer.headers()["x-sluis-deny-body"], deny.body.as_str());
}
