//! The policy authors' tools as an author meets them: `sluis test` (passing and failing
//! suites, coverage), `sluis explain` (CLI and admin endpoint), `sluis replay`, and the
//! JSON Schema check.

use sluis_test_kit as kit;

use kit::*;

use crate::sluis;
use serde_json::Value;

const PASSING: &str = r#"
tests:
  - name: reads are allowed
    request: {path: /api/things, headers: {x-user: mallory}}
    token: {issuer: test, claims: {sub: alice, client_id: app, scope: read}}
    expect:
      decision: allow
      rule: get
      headers: {x-user: alice, x-client: app}
      removed_headers: [authorization]
  - name: admin is denied
    request: {path: /api/admin}
    token: {issuer: test, claims: {sub: alice, scope: read}}
    expect: {status: 403, rule: no-admin, body: {error: access_denied, message: admin is off limits}}
"#;

const FAILING: &str = r#"
tests:
  - name: a wrong expectation
    request: {method: DELETE, path: /api/things}
    token: {issuer: test, claims: {sub: alice, scope: read}}
    expect:
      decision: allow
      rule: get
      headers: {x-user: bob}
      body: {error: nope}
  - name: a right one
    request: {path: /api/things}
    token: {issuer: test, claims: {sub: alice, scope: read}}
    expect: {decision: allow}
"#;

fn suite(tests: &str) -> Setup {
    Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY), ("api.test.yaml", tests)],
    )
}

#[test]
fn a_passing_suite_exits_0_with_a_summary() {
    let setup = suite(PASSING);
    let (code, stdout, stderr) =
        sluis(&["test", "--config", setup.config_path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("  pass  reads are allowed"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("2 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn a_failing_suite_exits_1_and_shows_what_differs() {
    let setup = suite(FAILING);
    let (code, stdout, _) = sluis(&["test", "--config", setup.config_path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    let expected = [
        "  FAIL  a wrong expectation",
        "        decision: expected allow, got deny",
        "        rule: expected `get`, got `default-deny`",
        "        header `x-user`: expected \"bob\", got nothing",
        "        body: `error` expected \"nope\", got \"access_denied\"",
        "  pass  a right one",
        "1 passed, 1 failed",
    ];
    for line in expected {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}

#[test]
fn coverage_lists_rules_no_case_decided() {
    let setup = suite(FAILING);
    let (_, stdout, _) = sluis(&[
        "test",
        "--coverage",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("coverage: 1 rule(s) decided no case:"),
        "{stdout}"
    );
    assert!(stdout.contains("  api/no-admin ("), "{stdout}");
}

#[test]
fn a_broken_suite_is_an_error_not_a_pass() {
    let setup = suite("tests:\n  - name: x\n    reqest: {path: /}\n");
    let (code, stdout, _) = sluis(&["test", "--config", setup.config_path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("ERROR") && stdout.contains("unknown field `reqest`"),
        "{stdout}"
    );
}

#[test]
fn the_example_policies_pass_their_suites() {
    let (code, stdout, stderr) = sluis(&["test", "--coverage", "--config", "examples/config.yaml"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("coverage: every rule decided at least one case"),
        "{stdout}"
    );
}

fn explain_case(setup: &Setup, case: &str) -> (i32, String) {
    let path = setup.dir.path().join("case.yaml");
    std::fs::write(&path, case).unwrap();
    let (code, stdout, stderr) = sluis(&[
        "explain",
        "--config",
        setup.config_path().to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn explain_an_allowed_request() {
    let setup = suite(PASSING);
    let (code, text) = explain_case(
        &setup,
        "request: {path: /api/things}\ntoken: {issuer: test, claims: {sub: alice, scope: read}}\n",
    );
    assert_eq!(code, 0, "{text}");
    for line in [
        "decision: ALLOW 200 (policy `api`, rule `get`)",
        "policy: policy `api` (",
        "identity: token given as claims for issuer `test`: no signature checked",
        "scopes: required [\"read\"], present [\"read\"], missing []",
        "rule `no-admin` (deny): false",
        "    request.path.startsWith(\"/api/admin\") = false",
        "rule `get` (allow): true",
        "    request.method == \"GET\" = true",
        "    request.method = \"GET\"",
        "set header x-user: alice",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn explain_a_denied_request_with_a_real_token() {
    let setup = suite(PASSING);
    let token = token(&claims());
    let (code, text) = explain_case(
        &setup,
        &format!(
            "request: {{method: DELETE, path: /api/things, headers: {{authorization: 'Bearer {token}'}}}}\n"
        ),
    );
    assert_eq!(code, 0, "{text}");
    for line in [
        "decision: DENY 403 (policy `api`, rule `default-deny`)",
        "identity: bearer token verified by issuer `test` (https://issuer.test)",
        "rule `get` (allow): false",
        "    request.method = \"DELETE\"",
        "response body: {\"error\":\"access_denied\",\"message\":\"access denied by policy\"}",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(!text.contains(&token), "explain must not echo the token");
}

#[tokio::test]
async fn the_admin_explain_endpoint_is_opt_in() {
    let off = suite(PASSING);
    let server = Server::start(&off.config_path()).await;
    let client = reqwest::Client::new();
    let case = serde_json::json!({
        "request": {"path": "/api/things"},
        "token": {"issuer": "test", "claims": {"sub": "alice", "scope": "read"}}
    });
    let response = client
        .post(format!("http://{}/explain", server.admin))
        .json(&case)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    server.stop().await;

    let on = Setup::new(
        &format!(
            "{}admin: {{explain: true}}\n",
            config_yaml("127.0.0.1:0", "127.0.0.1:0")
        ),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&on.config_path()).await;
    let response = client
        .post(format!("http://{}/explain", server.admin))
        .json(&case)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["decision"]["outcome"], "allow");
    assert_eq!(body["decision"]["rule"], "get");
    assert_eq!(body["trace"]["rules"][1]["result"], "true");

    let response = client
        .post(format!("http://{}/explain", server.admin))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[test]
fn replay_reports_changed_decisions_grouped_by_rule() {
    let setup = suite(PASSING);
    let candidate = setup.dir.path().join("candidate");
    std::fs::create_dir(&candidate).unwrap();
    // The candidate also allows DELETE.
    std::fs::write(
        candidate.join("api.yaml"),
        POLICY.replace(
            "request.method == \"GET\"",
            "request.method in [\"GET\", \"DELETE\"]",
        ),
    )
    .unwrap();
    let records = setup.dir.path().join("records.jsonl");
    let line = |method: &str, path: &str| {
        serde_json::json!({
            "request": {"method": method, "path": path},
            "token": {"issuer": "test", "claims": {"sub": "alice", "scope": "read"}}
        })
        .to_string()
    };
    std::fs::write(
        &records,
        [
            line("GET", "/api/a"),
            line("DELETE", "/api/a"),
            line("DELETE", "/api/admin/x"),
        ]
        .join("\n"),
    )
    .unwrap();
    let config = setup.config_path();
    let (code, stdout, stderr) = sluis(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--candidate",
        candidate.to_str().unwrap(),
        records.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("1 of 3 requests would be decided differently"),
        "{stdout}"
    );
    assert!(stdout.contains("api/get: 1 request(s)"), "{stdout}");
    assert!(
        stdout.contains(
            "line 2: DELETE /api/a: deny 403 by api/default-deny -> allow 200 by api/get"
        ),
        "{stdout}"
    );

    // The same policies again: nothing changes.
    let (code, stdout, _) = sluis(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--candidate",
        setup.dir.path().join("policies").to_str().unwrap(),
        records.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("no decision changes in 3 requests"),
        "{stdout}"
    );
}

#[test]
fn the_committed_schemas_match_the_code() {
    let (code, stdout, stderr) = sluis(&["schema", "--check", "schema"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

const ANSWERING: &str = r#"
policies:
  - id: directory
    match: {paths: ["/dir/**"]}
    issuers: [test]
    rules: [{id: read, allow: "request.method == 'GET'"}]
    response_rules:
      rules:
        - {id: secret, withhold: "entry.resource.id.startsWith('s')"}
        - {id: mine, keep: "entry.resource.owner == token.sub"}
        - {id: never, deny: "entry.resource.resourceType == 'Patient'", status: 451}
"#;

const ANSWER_CASES: &str = r#"
tests:
  - name: own entries are kept
    request: {path: /dir/Thing}
    token: {issuer: test, claims: {sub: alice}}
    response:
      body: {resourceType: Bundle, type: searchset, entry: [
        {resource: {resourceType: Thing, id: a1, owner: alice}},
        {resource: {resourceType: Thing, id: s1, owner: alice}},
        {resource: {resourceType: Thing, id: b1, owner: bob}}]}
    expect: {decision: allow, response: {outcome: filter, kept: [Thing/a1]}}
  - name: a patient denies the answer
    request: {path: /dir/Thing}
    token: {issuer: test, claims: {sub: alice}}
    response:
      body: {resourceType: Patient, id: p1}
    expect: {decision: allow, response: {outcome: deny, status: 451, rule: never}}
  - name: a wrong expectation is reported
    request: {path: /dir/Thing}
    token: {issuer: test, claims: {sub: alice}}
    response:
      body: {resourceType: Thing, id: b1, owner: bob}
    expect: {decision: allow, response: {outcome: pass}}
"#;

#[test]
fn answers_are_judged_covered_and_explained_per_entry() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("dir.yaml", ANSWERING), ("dir.test.yaml", ANSWER_CASES)],
    );
    let (code, stdout, stderr) = sluis(&[
        "test",
        "--coverage",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("  pass  own entries are kept"), "{stdout}");
    assert!(
        stdout.contains("  pass  a patient denies the answer"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  FAIL  a wrong expectation is reported"),
        "{stdout}"
    );
    assert!(
        stdout.contains("response: expected Pass, got Deny"),
        "{stdout}"
    );
    // Every response rule decided an entry of some case.
    assert!(
        stdout.contains("coverage: every rule decided at least one case"),
        "{stdout}"
    );
    let (code, text) = explain_case(
        &setup,
        "request: {path: /dir/Thing}\ntoken: {issuer: test, claims: {sub: alice}}\nresponse:\n  body: {resourceType: Bundle, type: searchset, entry: [{resource: {resourceType: Thing, id: a1, owner: alice}}, {resource: {resourceType: Thing, id: s1, owner: alice}}, {resource: {resourceType: Thing, id: b1, owner: bob}}]}\n",
    );
    assert_eq!(code, 0, "{text}");
    for line in [
        "response: filter (1 kept, 2 withheld) by `response` of policy `directory`",
        "  Thing/a1: kept by `mine`",
        "  Thing/s1: withheld: withhold rule `secret` matched",
        "  Thing/b1: withheld: no keep rule matched",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}
