//! Method-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
//! `X-Method-Override`): an upstream framework that honours them performs another method
//! than the one the gateway saw, so Sluis never lets one through unjudged. By default a
//! request carrying one is refused with 400 `invalid_request`, at every door; a policy
//! with `method_override: judge` decides it as the overriding method instead.

use sluis_test_kit as kit;

use kit::{POLICY, Req, Server, Setup, claims, config_yaml, token};

const OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// `/judged/**` judges an overriding method; GET and DELETE on `/judged/delete/**` are
/// allowed, only GET elsewhere.
const JUDGED: &str = r#"
policies:
  - id: judged
    match:
      paths: ["/judged/**"]
    issuers: [test]
    method_override: judge
    rules:
      - id: delete
        allow: request.method == "DELETE" && request.path.startsWith("/judged/delete/")
      - id: get
        allow: request.method == "GET"
"#;

async fn server(policies: &[(&str, &str)]) -> (Setup, Server) {
    let setup = Setup::new(&config_yaml("127.0.0.1:0", "127.0.0.1:0"), policies);
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

/// The status and `error` of a forward-auth check of `GET path` with `headers`.
async fn forward(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(format!("http://{}/decisions{path}", server.http))
        .bearer_auth(token(&claims()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

/// The OPA door's `result` for an APISIX input of `GET /api/x` with `override_header`.
async fn opa(server: &Server, bearer: &str, override_header: &str) -> serde_json::Value {
    let input = serde_json::json!({"input": {"type": "http", "request": {
        "method": "GET",
        "path": "/api/x",
        "host": "api.test",
        "scheme": "https",
        "headers": {"authorization": format!("Bearer {bearer}"), override_header: "DELETE"},
    }}});
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/v1/data/sluis/allow", server.http))
        .json(&input)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["result"].clone()
}

#[tokio::test]
async fn an_override_header_is_refused_by_default_at_every_door() {
    let (_setup, server) = server(&[("api.yaml", POLICY)]).await;
    let bearer = token(&claims());
    // Without one, the GET is allowed: the refusal below is the header's doing.
    assert_eq!(
        server
            .check(Req::get("/api/x").bearer(&bearer))
            .await
            .status,
        200
    );
    assert_eq!(forward(&server, "/api/x", &[]).await.0, 200);
    for name in OVERRIDES {
        let answer = server
            .check(Req::get("/api/x").bearer(&bearer).header(name, "DELETE"))
            .await;
        assert_eq!(answer.status, 400, "{name}: {answer:?}");
        assert_eq!(answer.body_json()["error"], "invalid_request", "{name}");
        assert_eq!(
            forward(&server, "/api/x", &[(name, "DELETE")]).await,
            (400, "invalid_request".to_owned()),
            "{name}"
        );
        let opa = opa(&server, &bearer, name).await;
        assert_eq!(opa["allow"], false, "{name}: {opa}");
        assert_eq!(opa["status_code"], 400, "{name}: {opa}");
        assert_eq!(opa["reason"]["error"], "invalid_request", "{name}: {opa}");
        // Even an override to the method itself: the header has no business here.
        let same = server
            .check(Req::get("/api/x").bearer(&bearer).header(name, "GET"))
            .await;
        assert_eq!(same.status, 400, "{name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_policy_may_judge_the_overriding_method_instead() {
    let (_setup, server) = server(&[("api.yaml", POLICY), ("judged.yaml", JUDGED)]).await;
    let bearer = token(&claims());
    for name in OVERRIDES {
        // A GET that will be performed as a DELETE is judged as a DELETE.
        let denied = server
            .check(Req::get("/judged/x").bearer(&bearer).header(name, "delete"))
            .await;
        assert_eq!(denied.status, 403, "{name}: {denied:?}");
        assert_eq!(
            forward(&server, "/judged/x", &[(name, "DELETE")]).await.0,
            403,
            "{name}"
        );
        let allowed = server
            .check(
                Req::get("/judged/delete/1")
                    .bearer(&bearer)
                    .header(name, "DELETE"),
            )
            .await;
        assert_eq!(allowed.status, 200, "{name}: {allowed:?}");
        assert_eq!(
            forward(&server, "/judged/delete/1", &[(name, "DELETE")])
                .await
                .0,
            200,
            "{name}"
        );
    }
    // An override that is no method, or two that disagree, is refused even here.
    let bad = server
        .check(
            Req::get("/judged/x")
                .bearer(&bearer)
                .header("x-http-method-override", "DE LETE"),
        )
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let split = server
        .check(
            Req::get("/judged/delete/1")
                .bearer(&bearer)
                .header("x-http-method-override", "DELETE")
                .header("x-http-method", "PUT"),
        )
        .await;
    assert_eq!(split.status, 400, "{split:?}");
    server.stop().await;
}
