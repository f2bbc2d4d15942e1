//! The AuthZEN 1.0 Search API and the certification scenario, over HTTP against a running
//! server.
//!
//! Conformance data:
//! - the Search interop expected results, `tests/fixtures/authzen-search/{subject,resource,
//!   action}.json`, copied verbatim from github.com/openid/authzen (branch search-demo,
//!   `interop/authzen-search-demo/test/*/results.json`; see `SOURCE.txt` there), decided by
//!   `tests/fixtures/authzen-search/policy.yaml`, written from the scenario's text;
//! - the requests of the certification scenario (github.com/openid/authzen
//!   `certification/authorization-api-1_0-scenario.md`, commit 23c4a3b), on its fixture
//!   `tests/fixtures/authzen-certification/policy.yaml`.

use sluis_test_kit as kit;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kit::{Server, Setup};
use serde_json::{Value, json};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

async fn server_with(policy: &str, extra: &str) -> (Setup, Server) {
    let config = format!(
        "policies: [policies, {}]\n{extra}\n",
        fixture(policy).display()
    );
    let setup = Setup::new(&config, &[]);
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

/// `(status, body)` of a POST.
async fn ask(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = post(server, path, body).await;
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path} {body}"
        );
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

fn as_set(results: &Value) -> BTreeSet<String> {
    results
        .as_array()
        .unwrap_or_else(|| panic!("results not an array: {results}"))
        .iter()
        .map(Value::to_string)
        .collect()
}

/// Every case of the three interop result files gives exactly the expected set.
#[tokio::test]
async fn the_search_interop_results_all_pass() {
    let (_setup, server) = server_with("authzen-search/policy.yaml", "").await;
    let mut checked = 0;
    for (kind, cases) in [("subject", 60), ("resource", 18), ("action", 120)] {
        let file = fixture(&format!("authzen-search/{kind}.json"));
        let data: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let evaluations = data["evaluation"].as_array().unwrap();
        assert_eq!(evaluations.len(), cases, "{}", file.display());
        for case in evaluations {
            let request = &case["request"];
            let (status, answer) =
                ask(&server, &format!("/access/v1/search/{kind}"), request).await;
            assert_eq!(status, 200, "{kind}: {request} → {answer}");
            assert_eq!(
                as_set(&answer["results"]),
                as_set(&case["expected"]["results"]),
                "{kind}: {request}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 198);
    server.stop().await;
}

/// Pages of two reassemble the whole answer; a token is only good for its own search.
#[tokio::test]
async fn search_pages_walk_the_whole_answer_and_tokens_stay_with_their_search() {
    let (_setup, server) = server_with("authzen-search/policy.yaml", "").await;
    let search = json!({
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "view"},
        "resource": {"type": "record"},
    });
    let (_, whole) = ask(&server, "/access/v1/search/resource", &search).await;
    assert_eq!(whole["results"].as_array().unwrap().len(), 11, "{whole}");
    assert!(whole.get("page").is_none(), "{whole}");
    let mut collected = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut request = search.clone();
        request["page"] = json!({"limit": 2, "token": token});
        let (status, answer) = ask(&server, "/access/v1/search/resource", &request).await;
        assert_eq!(status, 200, "{answer}");
        let results = answer["results"].as_array().unwrap();
        assert!(results.len() <= 2);
        assert_eq!(answer["page"]["count"], results.len());
        assert_eq!(answer["page"]["total"], 11);
        collected.extend(results.iter().cloned());
        pages += 1;
        token = answer["page"]["next_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "no end");
    }
    assert_eq!(pages, 6);
    assert_eq!(Value::Array(collected), whole["results"]);

    // The first page's token, on a different search: refused.
    let mut first = search.clone();
    first["page"] = json!({"limit": 2});
    let (_, answer) = ask(&server, "/access/v1/search/resource", &first).await;
    let token = answer["page"]["next_token"].as_str().unwrap().to_owned();
    let mut other = search.clone();
    other["action"] = json!({"name": "edit"});
    other["page"] = json!({"token": token});
    let (status, answer) = ask(&server, "/access/v1/search/resource", &other).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("different search"),
        "{answer}"
    );
    let mut garbage = search.clone();
    garbage["page"] = json!({"token": "!!"});
    assert_eq!(
        ask(&server, "/access/v1/search/resource", &garbage).await.0,
        400
    );
    server.stop().await;
}

/// A policy without candidates for the searched kind says so, rather than answering an
/// empty (and wrong) list.
#[tokio::test]
async fn a_policy_that_cannot_be_searched_answers_a_clear_400() {
    let todo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/authzen-todo.yaml");
    let setup = Setup::new(&format!("policies: [policies, {}]\n", todo.display()), &[]);
    let server = Server::start(&setup.config_path()).await;
    let (status, answer) = ask(
        &server,
        "/access/v1/search/subject",
        &json!({
            "subject": {"type": "user"},
            "action": {"name": "can_read_todos"},
            "resource": {"type": "todo", "id": "1"},
        }),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "unsupported_search");
    assert_eq!(
        answer["message"],
        "policy `authzen-todo` cannot be searched for subjects: it has no `search` block"
    );
    // A type no policy decides is not an error: nothing is found (scenario §c-4-6-2).
    let (status, answer) = ask(
        &server,
        "/access/v1/search/subject",
        &json!({
            "subject": {"type": "spaceship"},
            "action": {"name": "can_read_todos"},
            "resource": {"type": "todo", "id": "1"},
        }),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"results": []})));
    server.stop().await;
}

fn subject(id: &str) -> Value {
    json!({"type": "user", "id": id})
}

fn record(id: &str) -> Value {
    json!({"type": "record", "id": id})
}

/// The certification scenario's requests, in its order, with the answers it requires.
#[tokio::test]
async fn the_certification_scenario_passes() {
    let (_setup, server) = server_with(
        "authzen-certification/policy.yaml",
        "authzen:\n  issuer: https://pdp.example.com\n  capabilities: [\"urn:example:authzen:capability:search\"]",
    )
    .await;
    let (t, f) = (json!({"decision": true}), json!({"decision": false}));
    let one =
        |s: Value, action: Value, r: Value| json!({"subject": s, "action": action, "resource": r});
    let read = json!({"name": "read"});
    let write = json!({"name": "write"});
    // §c-2-2: the eight fixture decisions, and the structural requests.
    let archived =
        json!({"type": "record", "id": "record-2", "properties": {"status": "archived"}});
    let admin = json!({"type": "user", "id": "bob", "properties": {"role": "admin"}});
    let cases = [
        (one(subject("alice"), read.clone(), record("record-1")), &t),
        (one(subject("alice"), write.clone(), record("record-1")), &t),
        (one(subject("bob"), read.clone(), record("record-1")), &t),
        (one(subject("bob"), write.clone(), record("record-1")), &f),
        (one(subject("alice"), write.clone(), archived.clone()), &f),
        (one(admin.clone(), write.clone(), archived.clone()), &t),
        (
            one(
                subject("alice"),
                json!({"name": "delete", "properties": {"soft": true}}),
                record("record-1"),
            ),
            &t,
        ),
        (
            one(
                subject("alice"),
                json!({"name": "delete", "properties": {"soft": false}}),
                record("record-1"),
            ),
            &f,
        ),
        (
            json!({"subject": subject("alice"), "action": read, "resource": record("record-1"),
                   "context": {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}}),
            &t,
        ),
        (
            json!({"subject": {"type": "user", "id": "alice", "properties": {"department": "Sales", "role": "manager"}},
                   "action": {"name": "read", "properties": {"method": "GET"}},
                   "resource": {"type": "record", "id": "record-1", "properties": {"status": "active", "owner": "bob"}}}),
            &t,
        ),
        (
            json!({"subject": subject("alice"), "action": read, "resource": record("record-1"),
                   "foo": "bar", "futureField": {"nested": true}}),
            &t,
        ),
    ];
    for (request, expected) in &cases {
        // §c-2-6: the same answer each time.
        for _ in 0..2 {
            assert_eq!(
                ask(&server, "/access/v1/evaluation", request).await,
                (200, (*expected).clone()),
                "{request}"
            );
        }
    }
    // §c-2-4: missing or mistyped parts → 400.
    for bad in [
        json!({"action": read, "resource": record("record-1")}),
        json!({"subject": subject("alice"), "resource": record("record-1")}),
        json!({"subject": subject("alice"), "action": read}),
        json!({"subject": {"id": "alice"}, "action": read, "resource": record("record-1")}),
        json!({"subject": {"type": "user"}, "action": read, "resource": record("record-1")}),
        json!({"subject": subject("alice"), "action": {}, "resource": record("record-1")}),
        json!({"subject": subject("alice"), "action": read, "resource": {"id": "record-1"}}),
        json!({"subject": subject("alice"), "action": read, "resource": {"type": "record"}}),
        json!({"subject": "alice", "action": read, "resource": record("record-1")}),
        json!({"subject": subject("alice"), "action": {"name": 123}, "resource": record("record-1")}),
    ] {
        assert_eq!(
            ask(&server, "/access/v1/evaluation", &bad).await.0,
            400,
            "{bad}"
        );
    }

    // §c-3: batches.
    let batches = [
        (
            json!({"subject": subject("bob"), "resource": record("record-1"),
                   "evaluations": [{"action": read}, {"action": write}]}),
            json!({"evaluations": [t, f]}),
        ),
        (
            json!({"subject": subject("alice"), "action": write, "evaluations": [
                {"resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}}},
                {"resource": archived}]}),
            json!({"evaluations": [t, f]}),
        ),
        (
            json!({"action": write, "resource": archived,
                   "evaluations": [{"subject": subject("alice")}, {"subject": admin}]}),
            json!({"evaluations": [f, t]}),
        ),
        (
            json!({"evaluations": [
                {"subject": subject("alice"), "action": read, "resource": record("record-1")},
                {"subject": subject("bob"), "action": write, "resource": record("record-1")}]}),
            json!({"evaluations": [t, f]}),
        ),
        // §c-3-2-7: default merging of a missing `type`.
        (
            json!({"subject": subject("alice"), "action": write, "resource": {"type": "record"},
                   "evaluations": [
                       {"resource": {"id": "record-1", "properties": {"status": "active"}}},
                       {"resource": archived}]}),
            json!({"evaluations": [t, f]}),
        ),
        // §c-3-4-2 and §c-3-4-3: no or an empty `evaluations` array.
        (
            one(subject("alice"), read.clone(), record("record-1")),
            t.clone(),
        ),
        (
            json!({"subject": subject("alice"), "action": read, "resource": record("record-1"), "evaluations": []}),
            t.clone(),
        ),
    ];
    for (request, expected) in &batches {
        assert_eq!(
            ask(&server, "/access/v1/evaluations", request).await,
            (200, expected.clone()),
            "{request}"
        );
    }
    // §c-3-2-6: context inheritance is accepted.
    let (status, answer) = ask(
        &server,
        "/access/v1/evaluations",
        &json!({"subject": subject("alice"), "action": read, "context": {"time": "2025-06-27T18:03-07:00"},
                "evaluations": [{"resource": record("record-1")},
                                {"resource": record("record-2"), "context": {"source": "batch-override"}}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["evaluations"].as_array().unwrap().len(), 2);
    // §c-3-4-1: an item error stays in its place.
    let (status, answer) = ask(
        &server,
        "/access/v1/evaluations",
        &json!({"subject": subject("alice"), "action": read,
                "evaluations": [{"resource": record("record-1")}, {}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["evaluations"][0], t);
    assert_eq!(answer["evaluations"][1]["decision"], false);
    assert_eq!(answer["evaluations"][1]["context"]["error"]["status"], 400);

    // §c-4: searches, and what each must include.
    let includes = |answer: &Value, wanted: &[Value]| {
        let results = answer["results"].as_array().unwrap();
        wanted.iter().all(|w| results.contains(w))
    };
    let searches = [
        (
            "subject",
            json!({"subject": {"type": "user"}, "action": read, "resource": record("record-1")}),
            vec![subject("alice"), subject("bob")],
        ),
        (
            "subject",
            json!({"subject": {"type": "user"}, "action": read, "resource": record("record-1"), "context": {"x": 1}}),
            vec![subject("alice"), subject("bob")],
        ),
        (
            "subject",
            json!({"subject": {"type": "user"}, "action": write, "resource": archived}),
            vec![subject("bob")],
        ),
        (
            "resource",
            json!({"subject": subject("alice"), "action": read, "resource": {"type": "record"}}),
            vec![record("record-1")],
        ),
        (
            "resource",
            json!({"subject": admin, "action": write, "resource": {"type": "record"}}),
            vec![record("record-2")],
        ),
        (
            "action",
            json!({"subject": subject("alice"), "resource": record("record-1")}),
            vec![json!({"name": "read"}), json!({"name": "write"})],
        ),
        (
            "action",
            json!({"subject": admin, "resource": archived}),
            vec![json!({"name": "write"})],
        ),
    ];
    for (kind, request, wanted) in &searches {
        let (status, answer) = ask(&server, &format!("/access/v1/search/{kind}"), request).await;
        assert_eq!(status, 200, "{request}");
        assert!(includes(&answer, wanted), "{request} → {answer}");
    }
    // §c-4-5: paging accepted; the follow-up page ends with an empty token.
    let paged = json!({"subject": {"type": "user"}, "action": read, "resource": record("record-1"), "page": {"limit": 1}});
    let (status, answer) = ask(&server, "/access/v1/search/subject", &paged).await;
    assert_eq!(status, 200);
    let token = answer["page"]["next_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty(), "{answer}");
    let mut next = paged.clone();
    next["page"] = json!({"token": token});
    let (status, answer) = ask(&server, "/access/v1/search/subject", &next).await;
    assert_eq!(status, 200);
    assert_eq!(answer["page"]["next_token"], "", "{answer}");
    // §c-4-6: unknown id or type → empty results.
    for (kind, request) in [
        (
            "action",
            json!({"subject": subject("nonexistent-user"), "resource": record("record-1")}),
        ),
        (
            "subject",
            json!({"subject": {"type": "spaceship"}, "action": read, "resource": record("record-1")}),
        ),
    ] {
        assert_eq!(
            ask(&server, &format!("/access/v1/search/{kind}"), &request).await,
            (200, json!({"results": []})),
            "{request}"
        );
    }
    // §c-4-7: missing required fields → 400.
    for (kind, bad) in [
        (
            "subject",
            json!({"subject": {"type": "user"}, "resource": record("record-1")}),
        ),
        (
            "resource",
            json!({"action": read, "resource": {"type": "record"}}),
        ),
        ("action", json!({"subject": subject("alice")})),
        (
            "subject",
            json!({"subject": {"type": "user"}, "action": read, "resource": {"type": "record"}}),
        ),
        (
            "resource",
            json!({"subject": {"type": "user"}, "action": read, "resource": {"type": "record"}}),
        ),
    ] {
        assert_eq!(
            ask(&server, &format!("/access/v1/search/{kind}"), &bad)
                .await
                .0,
            400,
            "{kind} {bad}"
        );
    }

    // §c-6: discovery.
    let response = reqwest::get(format!(
        "http://{}/.well-known/authzen-configuration",
        server.http
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let metadata: Value = response.json().await.unwrap();
    let base = "https://pdp.example.com";
    assert_eq!(metadata["policy_decision_point"], base);
    for (key, path) in [
        ("access_evaluation_endpoint", "/access/v1/evaluation"),
        ("access_evaluations_endpoint", "/access/v1/evaluations"),
        ("search_subject_endpoint", "/access/v1/search/subject"),
        ("search_resource_endpoint", "/access/v1/search/resource"),
        ("search_action_endpoint", "/access/v1/search/action"),
    ] {
        assert_eq!(metadata[key], format!("{base}{path}"), "{key}");
    }
    assert_eq!(
        metadata["capabilities"],
        json!(["urn:example:authzen:capability:search"])
    );
    server.stop().await;
}
