//! The AuthZEN Authorization API 1.0 door over HTTP, against a running server with the
//! example Todo policy (`policy/authzen-todo.yaml`).
//!
//! Conformance data: the AuthZEN interop Todo decision sets in
//! `tests/fixtures/authzen-todo/*.json`, copied verbatim from github.com/openid/authzen
//! `interop/authzen-todo-backend/test/` at commit e287920eed842b227e38531c1735b712337ca44d
//! (see `SOURCE.txt` there).

use sluis_test_kit as kit;

use std::path::{Path, PathBuf};

use kit::{Req, Server, Setup};
use serde_json::{Value, json};

const RICK: &str = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const BETH: &str = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";

fn todo_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/authzen-todo.yaml")
}

/// A server with the Todo policy, and `extra` config lines (e.g. `authzen:`).
async fn server(extra: &str, setup_files: &[(&str, &str)]) -> (Setup, Server) {
    let config = format!(
        "policies: [policies, {todo}]\n{extra}\n",
        todo = todo_policy().display()
    );
    let setup = Setup::new(&config, setup_files);
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

async fn post(server: &Server, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", server.http))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn decision(server: &Server, body: &Value) -> Value {
    let response = post(server, "/access/v1/evaluation", body).await;
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.unwrap()
}

async fn decisions(server: &Server, body: &Value) -> Value {
    let response = post(server, "/access/v1/evaluations", body).await;
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.unwrap()
}

/// Every case of every interop decision file: single evaluations one by one and as one
/// boxcar, and the boxcar cases as given.
#[tokio::test]
async fn the_interop_todo_decisions_all_pass() {
    // The interop's decision sets (github.com/openid/authzen, see SOURCE.txt there).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authzen-todo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the interop data in `{}`: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "interop files in {}", dir.display());
    let (_setup, server) = server("", &[]).await;
    let mut checked = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let data: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        // `decisions` in the pre-1.0 file, `evaluation` in the 1.0 ones.
        let singles = data
            .get("evaluation")
            .or_else(|| data.get("decisions"))
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{name}: no single evaluations"));
        for case in singles {
            let request = &case["request"];
            let answer = decision(&server, request).await;
            assert_eq!(
                answer,
                json!({"decision": case["expected"]}),
                "{name}: {request}"
            );
            checked += 1;
        }
        // The same cases as one boxcar: the same answers, in order.
        let items: Vec<Value> = singles.iter().map(|c| c["request"].clone()).collect();
        let expected: Vec<Value> = singles
            .iter()
            .map(|c| json!({"decision": c["expected"]}))
            .collect();
        let answer = decisions(&server, &json!({"evaluations": items})).await;
        assert_eq!(
            answer,
            json!({"evaluations": expected}),
            "{name} as a boxcar"
        );
        for case in data["evaluations"].as_array().into_iter().flatten() {
            let request = &case["request"];
            let answer = decisions(&server, request).await;
            assert_eq!(
                answer,
                json!({"evaluations": case["expected"]}),
                "{name}: {request}"
            );
            checked += 1;
        }
    }
    // 4 × 40 single evaluations and 3 boxcars.
    assert_eq!(checked, 163);
    server.stop().await;
}

fn beth_may(action: &str) -> Value {
    json!({
        "action": {"name": action},
        "resource": {"type": "todo", "id": "todo-1"},
    })
}

#[tokio::test]
async fn each_evaluations_semantic_keeps_order_and_stops_where_it_says() {
    let (_setup, server) = server("", &[]).await;
    // Beth, a viewer, may read todos but not create them.
    let batch = |semantic: Option<&str>, actions: &[&str]| {
        let mut body = json!({
            "subject": {"type": "user", "id": BETH},
            "evaluations": actions.iter().map(|a| beth_may(a)).collect::<Vec<_>>(),
        });
        if let Some(semantic) = semantic {
            body["options"] = json!({"evaluations_semantic": semantic});
        }
        body
    };
    let (t, f) = (json!({"decision": true}), json!({"decision": false}));
    let three = ["can_read_todos", "can_create_todo", "can_read_user"];
    let all = json!({"evaluations": [t, f, t]});
    assert_eq!(decisions(&server, &batch(None, &three)).await, all);
    assert_eq!(
        decisions(&server, &batch(Some("execute_all"), &three)).await,
        all
    );
    assert_eq!(
        decisions(&server, &batch(Some("deny_on_first_deny"), &three)).await,
        json!({"evaluations": [t, f]})
    );
    assert_eq!(
        decisions(&server, &batch(Some("permit_on_first_permit"), &three)).await,
        json!({"evaluations": [t]})
    );
    assert_eq!(
        decisions(
            &server,
            &batch(
                Some("permit_on_first_permit"),
                &["can_create_todo", "can_delete_todo", "can_read_todos", "x"]
            )
        )
        .await,
        json!({"evaluations": [f, f, t]})
    );
    let response = post(
        &server,
        "/access/v1/evaluations",
        &batch(Some("first_wins"), &three),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("options.evaluations_semantic"),
        "{body}"
    );
    // Without `evaluations`, the evaluations endpoint answers one evaluation.
    let mut single = beth_may("can_read_todos");
    single["subject"] = json!({"type": "user", "id": BETH});
    assert_eq!(decisions(&server, &single).await, t);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_problem() {
    let (_setup, server) = server("", &[]).await;
    let valid = json!({
        "subject": {"type": "user", "id": RICK},
        "action": {"name": "can_read_todos"},
        "resource": {"type": "todo", "id": "todo-1"},
    });
    let without = |path: &[&str]| {
        let mut body = valid.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut at = &mut body;
        for p in parents {
            at = &mut at[*p];
        }
        at.as_object_mut().unwrap().remove(*last);
        body
    };
    let cases = [
        (without(&["subject"]), "missing `subject`"),
        (without(&["action"]), "missing `action`"),
        (without(&["resource"]), "missing `resource`"),
        (without(&["subject", "type"]), "missing `subject.type`"),
        (without(&["subject", "id"]), "missing `subject.id`"),
        (without(&["resource", "type"]), "missing `resource.type`"),
        (without(&["resource", "id"]), "missing `resource.id`"),
        (without(&["action", "name"]), "missing `action.name`"),
    ];
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        for (body, message) in &cases {
            let response = post(&server, path, body).await;
            assert_eq!(response.status(), 400, "{path} {body}");
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                json!({"error": "invalid_request", "message": message}),
                "{path} {body}"
            );
        }
    }
    let boxcar = json!({
        "subject": {"type": "user", "id": RICK},
        "action": {"name": "can_read_todos"},
        "evaluations": [{"resource": {"type": "todo", "id": "1"}}, {"resource": {"id": "2"}}],
    });
    // An item that cannot form an evaluation is answered in its place (certification
    // scenario §c-3-4-1), the batch itself 200.
    assert_eq!(
        decisions(&server, &boxcar).await,
        json!({"evaluations": [
            {"decision": true},
            {"decision": false, "context": {"error": {
                "status": 400, "code": "invalid_request",
                "message": "missing `evaluations[1].resource.type`"}}},
        ]})
    );

    let client = reqwest::Client::new();
    let url = format!("http://{}/access/v1/evaluation", server.http);
    let raw = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = client.post(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    let response = raw(Some("application/json"), "{\"subject\": ")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("the body is not valid JSON"),
        "{body}"
    );
    let text = valid.to_string().leak() as &'static str;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = raw(content_type, text).await.unwrap();
        assert_eq!(response.status(), 400, "{content_type:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("content type must be `application/json`"),
            "{body}"
        );
    }
    let response = raw(Some("application/json; charset=utf-8"), text)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = raw(Some("application/json"), "[1, 2]").await.unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_the_request_id_is_echoed() {
    let (_setup, server) = server("", &[]).await;
    let body = json!({
        "subject": {"type": "user", "id": RICK, "department": "science", "properties": {"x": 1}},
        "action": {"name": "can_read_todos", "properties": {"method": "GET"}},
        "resource": {"type": "todo", "id": "todo-1", "colour": "green"},
        "context": {"time": "2025-01-01T00:00:00Z"},
        "page": {"next_token": ""},
        "something_new": [1, 2, 3],
    });
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/access/v1/evaluation", server.http))
        .header("x-request-id", "bfe9eb29-ab87-4ca3-be83-a1d5d8305716")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-request-id"],
        "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the spec's HTTPS binding answers JSON"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"decision": true})
    );
    // Errors echo it too.
    let response = client
        .post(format!("http://{}/access/v1/evaluations", server.http))
        .header("x-request-id", "r-400")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-request-id"], "r-400");
    // Without one, none is made up.
    let response = post(&server, "/access/v1/evaluation", &body).await;
    assert!(response.headers().get("x-request-id").is_none());
    server.stop().await;
}

#[tokio::test]
async fn callers_must_present_the_configured_token() {
    let config = format!(
        "policies: [{todo}]\nauthzen:\n  token: {{file: pep-token}}\n  issuer: https://pdp.example.org/\n",
        todo = todo_policy().display()
    );
    let setup = Setup::new(&config, &[]);
    std::fs::write(setup.dir.path().join("pep-token"), "s3cret-pep-token\n").unwrap();
    let server = Server::start(&setup.config_path()).await;
    let body = json!({
        "subject": {"type": "user", "id": RICK},
        "action": {"name": "can_read_todos"},
        "resource": {"type": "todo", "id": "todo-1"},
    });
    let client = reqwest::Client::new();
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        let url = format!("http://{}{path}", server.http);
        for authorization in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic czNjcmV0LXBlcC10b2tlbg=="),
            Some("s3cret-pep-token"),
        ] {
            let mut request = client
                .post(&url)
                .header("x-request-id", "r-401")
                .json(&body);
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} {authorization:?}");
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"sluis-authzen\""
            );
            assert_eq!(response.headers()["x-request-id"], "r-401");
            assert_eq!(
                response.json::<Value>().await.unwrap()["error"],
                "unauthorized"
            );
        }
        let response = client
            .post(&url)
            .bearer_auth("s3cret-pep-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"decision": true})
        );
    }
    // Metadata is public, and names the configured issuer.
    let metadata: Value = reqwest::get(format!(
        "http://{}/.well-known/authzen-configuration",
        server.http
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(metadata["issuer"], "https://pdp.example.org");
    assert_eq!(
        metadata["access_evaluations_endpoint"],
        "https://pdp.example.org/access/v1/evaluations"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_http_policy_never_decides_an_evaluation() {
    // A catch-all anonymous policy for HTTP requests, loaded before the Todo policy.
    let allow_all = r#"
policies:
  - id: allow-all
    anonymous: true
    rules:
      - {id: everything, allow: "true"}
"#;
    let (_setup, server) = server("", &[("a-allow-all.yaml", allow_all)]).await;
    // It decides HTTP requests …
    assert_eq!(server.check(Req::get("/anything")).await.status, 200);
    // … but an evaluation no evaluation policy matches is denied, not allowed by it.
    let body = json!({
        "subject": {"type": "user", "id": RICK},
        "action": {"name": "can_read_user"},
        "resource": {"type": "account", "id": "a-1"},
    });
    assert_eq!(decision(&server, &body).await, json!({"decision": false}));
    server.stop().await;
}

#[tokio::test]
async fn metadata_names_the_endpoints() {
    let (_setup, server) = server("", &[]).await;
    let response = reqwest::get(format!(
        "http://{}/.well-known/authzen-configuration",
        server.http
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let base = format!("http://{}", server.http);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "issuer": base,
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
            "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
            "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
            "search_action_endpoint": format!("{base}/access/v1/search/action"),
        })
    );
    server.stop().await;
}

/// A boxcar is read up to 2 MiB (room for the 1000 evaluations allowed): past that it is
/// refused while it is read, before any of it is parsed.
#[tokio::test]
async fn an_oversized_boxcar_is_refused_while_read() {
    let (_setup, server) = server("", &[]).await;
    let item = json!({
        "subject": {"type": "user", "id": "x".repeat(1000)},
        "action": {"name": "can_read_user"},
        "resource": {"type": "user", "id": "y"},
    });
    let body = json!({"evaluations": vec![item; 2100]});
    assert!(body.to_string().len() > 2 * 1024 * 1024);
    let response = post(&server, "/access/v1/evaluations", &body).await;
    assert_eq!(response.status(), 413);
    server.stop().await;
}
