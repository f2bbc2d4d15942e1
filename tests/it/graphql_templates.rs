//! GraphQL policies against a real Sluis on port 0, asked over gRPC like Envoy with
//! `with_request_body` asks: the RFC0014 error table (status and body) and the template
//! table over QIR-0001-ZKi, each case also decided by the engine to check the rule and
//! the reason the decision log gets; then the `graphql` variable in rules.

use sluis_test_kit as kit;

use kit::*;

use crate::sluis;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

const POLICY: &str = r#"
policies:
  - id: register
    match: {paths: ["/graphql"]}
    issuers: [test]
    graphql:
      templates:
        - file: templates/QIR-0001-ZKi.graphql
          bind:
            $initieelVerantwoordelijkZorgkantoor: 'has(token.claims.uzovi) ? token.claims.uzovi : null'
        # An auditor reads any zorgkantoor's indications, with its own scope.
        - file: templates/QIR-0001-ZKi.graphql
          name: QIR-0001-ZKi-audit
          scopes: [audit]
    rules:
      - id: zorgkantoor
        allow: graphql.template == "QIR-0001-ZKi"
      - id: auditor
        allow: >-
          graphql.template == "QIR-0001-ZKi-audit"
          && !graphql.fields.exists(f, f.startsWith("wlzIndicatie.client"))
  - id: open
    match: {paths: ["/open"]}
    issuers: [test]
    graphql:
      operations: [query, mutation]
      introspection: true
      limits: {max_aliases: 2}
    rules:
      - id: no-delete
        deny: graphql.operation == "mutation" && "deleteAll" in graphql.root_fields
      - id: own-things-literal
        allow: >-
          graphql.name == "Mine" && graphql.template == null
          && graphql.arguments["things"].all(a, a.owner == token.sub)
      - id: own-things-variable
        allow: >-
          graphql.arguments["things"][0].owner["$variable"] == "owner"
          && graphql.variables.owner == token.sub
      - id: add
        allow: graphql.operation == "mutation" && graphql.root_fields == ["addThing"]
      - id: introspect
        allow: graphql.fields.exists(f, f.startsWith("__schema"))
"#;

const QIR: &str = include_str!("../../policy/iwlz/indicatie/QIR-0001-ZKi.graphql");
const VARS: &str = "$wlzIndicatieID: UUID!, $initieelVerantwoordelijkZorgkantoor: String!";
const WHERE: &str = "where: {wlzindicatieID: {eq: $wlzIndicatieID}, initieelVerantwoordelijkZorgkantoor: {eq: $initieelVerantwoordelijkZorgkantoor}}";

fn own() -> Value {
    json!({"wlzIndicatieID": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "initieelVerantwoordelijkZorgkantoor": "5000"})
}

fn q(selection: &str) -> String {
    format!("query WlzIndicatie({VARS}) {{ wlzIndicatie({WHERE}) {{ {selection} }} }}")
}

fn body(query: &str, variables: Value) -> String {
    json!({"query": query, "variables": variables}).to_string()
}

/// The zorgkantoor with UZOVI 5000, and an auditor.
fn zorgkantoor() -> String {
    let mut claims = claims();
    claims["uzovi"] = json!("5000");
    token(&claims)
}

fn auditor() -> String {
    let mut claims = claims();
    claims["scope"] = json!("audit");
    token(&claims)
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    body: String,
    token: Option<String>,
    status: u16,
    /// Fields the answer's JSON body must have (all of them, for an exact body).
    answer: Value,
    rule: &'static str,
    /// Part of the decision's reason.
    reason: &'static str,
}

fn post(name: &'static str, body: String, status: u16, answer: Value) -> Case {
    Case {
        name,
        method: "POST",
        path: "/graphql".into(),
        body,
        token: Some(zorgkantoor()),
        status,
        answer,
        rule: "",
        reason: "",
    }
}

impl Case {
    fn rule(mut self, rule: &'static str, reason: &'static str) -> Case {
        self.rule = rule;
        self.reason = reason;
        self
    }
    fn token(mut self, token: Option<String>) -> Case {
        self.token = token;
        self
    }
    fn path(mut self, path: &str) -> Case {
        self.path = path.into();
        self
    }
}

fn not_fitting() -> Value {
    json!({"error": "access_denied", "message": "the query does not fit an allowed query template"})
}

fn bad_request(message: &str) -> Value {
    json!({"ErrorCode": "bad_request", "Error": message})
}

fn cases() -> Vec<Case> {
    let fragment_bomb = {
        let mut document = format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ ...F0 }} }}");
        for i in 0..30 {
            document.push_str(&format!(
                " fragment F{i} on W {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        document.push_str(" fragment F30 on W { bsn }");
        document
    };
    let aliases: String = (0..3_000).map(|i| format!("a{i}: bsn ")).collect();
    vec![
        post("the exact template", body(QIR, own()), 200, json!(null))
            .rule("zorgkantoor", ""),
        post(
            "a part of the template, with aliases, fragments and __typename",
            body(
                &(q("id: wlzindicatieID ...G __typename")
                    + " fragment G on WlzIndicatie { grondslag { grondslagID } }"),
                own(),
            ),
            200,
            json!(null),
        )
        .rule("zorgkantoor", ""),
        post("an extra field", body(&q("bsn wachtwoord"), own()), 403, not_fitting())
            .rule("graphql-template", "closest `QIR-0001-ZKi`: extra field `wlzIndicatie.wachtwoord`"),
        post(
            "an extra root field",
            body(
                &format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn }} users {{ name }} }}"),
                own(),
            ),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "extra root field `users`"),
        post(
            "a missing required variable",
            body(&q("bsn"), json!({"wlzIndicatieID": "x"})),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "missing required variable `$initieelVerantwoordelijkZorgkantoor`"),
        post(
            "another zorgkantoor's code",
            body(&q("bsn"), json!({"wlzIndicatieID": "x", "initieelVerantwoordelijkZorgkantoor": "5501"})),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "variable `$initieelVerantwoordelijkZorgkantoor` is not bound to the caller"),
        post(
            "a fragment smuggling a field",
            body(&(q("...S") + " fragment S on W { client { wachtwoord } }"), own()),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "extra field `wlzIndicatie.client.wachtwoord`"),
        post(
            "an alias dressing a field up as a template field",
            body(&q("bsn: wachtwoord"), own()),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "extra field `wlzIndicatie.wachtwoord`"),
        post(
            "a literal where the template has a variable",
            body(
                "query($wlzIndicatieID: UUID!) { wlzIndicatie(where: {wlzindicatieID: {eq: $wlzIndicatieID}, initieelVerantwoordelijkZorgkantoor: {eq: \"5000\"}}) { bsn } }",
                json!({"wlzIndicatieID": "x"}),
            ),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "`where.initieelVerantwoordelijkZorgkantoor.eq` is a literal where the template has `$initieelVerantwoordelijkZorgkantoor`"),
        post(
            "the identity filter left out",
            body("query($wlzIndicatieID: UUID!) { wlzIndicatie(where: {wlzindicatieID: {eq: $wlzIndicatieID}}) { bsn } }", json!({"wlzIndicatieID": "x"})),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "`where.initieelVerantwoordelijkZorgkantoor` is missing"),
        post(
            "a mutation",
            body(&format!("mutation({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn }} }}"), own()),
            403,
            json!({"error": "access_denied", "message": "this GraphQL operation is not allowed"}),
        )
        .rule("graphql", "mutation operations are not allowed (allowed: query)"),
        post(
            "introspection",
            body("{ __schema { types { name } } }", json!(null)),
            403,
            json!({"error": "access_denied", "message": "this GraphQL operation is not allowed"}),
        )
        .rule("graphql", "introspection"),
        post(
            "several operations without operationName",
            body(&format!("{} query Other {{ a }}", q("bsn")), own()),
            400,
            bad_request("the query has several operations: name the one to run in `operationName`"),
        )
        .rule("graphql", "several operations"),
        post(
            "the operation named by operationName",
            json!({"query": format!("{} query Other {{ a }}", q("bsn")), "operationName": "WlzIndicatie", "variables": own()}).to_string(),
            200,
            json!(null),
        )
        .rule("zorgkantoor", ""),
        post(
            "a syntax error",
            body("query { wlzIndicatie(", json!(null)),
            400,
            json!({"ErrorCode": "bad_request"}),
        )
        .rule("graphql", "invalid GraphQL syntax"),
        post("no operation", body("fragment F on W { bsn }", json!(null)), 400, bad_request("No operation found to evaluate"))
            .rule("graphql", "no operation"),
        post("no query at all", "{}".into(), 400, bad_request("No operation found to evaluate"))
            .rule("graphql", "the request has no query"),
        post(
            "deep nesting",
            body(&format!("{}{}", "{ a ".repeat(40), "}".repeat(40)), json!(null)),
            400,
            bad_request("the query nests fields deeper than 15"),
        )
        .rule("graphql", "deeper"),
        post(
            "a huge document",
            body(&q(&"bsn ".repeat(20_000)), own()),
            400,
            bad_request("the body exceeds 65536 bytes"),
        )
        .rule("graphql", "exceeds"),
        post(
            "thousands of aliases",
            body(&q(&aliases), own()),
            400,
            bad_request("the query has more than 30 aliases"),
        )
        .rule("graphql", "aliases"),
        post("a fragment bomb", body(&fragment_bomb, own()), 400, bad_request("the query selects more than 1000 fields"))
            .rule("graphql", "more than 1000 fields"),
        post(
            "a batch",
            format!("[{}, {}]", body(QIR, own()), body("{ __schema { types { name } } }", json!(null))),
            400,
            bad_request("the body must be one JSON object (batches are not accepted)"),
        )
        .rule("graphql", "batches"),
        post(
            "a variable sent twice",
            format!(
                r#"{{"query": {}, "variables": {{"wlzIndicatieID": "x", "initieelVerantwoordelijkZorgkantoor": "5000", "initieelVerantwoordelijkZorgkantoor": "5501"}}}}"#,
                json!(q("bsn"))
            ),
            400,
            json!({"ErrorCode": "bad_request"}),
        )
        .rule("graphql", "duplicate key"),
        post("no token", body(QIR, own()), 401, json!({"error": "unauthorized"}))
            .token(None)
            .rule("authentication", ""),
        post(
            "an auditor reads any zorgkantoor's indication without client data",
            body(&q("wlzindicatieID grondslag { grondslag }"), json!({"wlzIndicatieID": "x", "initieelVerantwoordelijkZorgkantoor": "5501"})),
            200,
            json!(null),
        )
        .token(Some(auditor()))
        .rule("auditor", ""),
        post(
            "but not the client's",
            body(&q("client { bsn }"), json!({"wlzIndicatieID": "x", "initieelVerantwoordelijkZorgkantoor": "5501"})),
            403,
            json!({"error": "access_denied"}),
        )
        .token(Some(auditor()))
        .rule("default-deny", ""),
        post(
            "the auditor's template needs its scope",
            body(&q("bsn"), json!({"wlzIndicatieID": "x", "initieelVerantwoordelijkZorgkantoor": "5501"})),
            403,
            not_fitting(),
        )
        .rule("graphql-template", "closest `QIR-0001-ZKi`"),
        // The `graphql` variable, in a policy without templates.
        post("a literal argument rules can read", body("query Mine { things(owner: \"user-1\") { id } }", json!(null)), 200, json!(null))
            .path("/open")
            .rule("own-things-literal", ""),
        post("someone else's things", body("query Mine { things(owner: \"user-2\") { id } }", json!(null)), 403, json!({"error": "access_denied"}))
            .path("/open")
            .rule("default-deny", ""),
        post(
            "a variable argument rules can follow",
            body("query($owner: String!) { things(owner: $owner) { id } }", json!({"owner": "user-1"})),
            200,
            json!(null),
        )
        .path("/open")
        .rule("own-things-variable", ""),
        post("an allowed mutation", body("mutation { addThing(name: \"x\") { id } }", json!(null)), 200, json!(null))
            .path("/open")
            .rule("add", ""),
        post("a denied mutation", body("mutation { deleteAll }", json!(null)), 403, json!({"error": "access_denied"}))
            .path("/open")
            .rule("no-delete", ""),
        post("allowed introspection", body("{ __schema { types { name } } }", json!(null)), 200, json!(null))
            .path("/open")
            .rule("introspect", ""),
        post("subscriptions are not allowed", body("subscription { things { id } }", json!(null)), 403, json!({"error": "access_denied"}))
            .path("/open")
            .rule("graphql", "subscription operations are not allowed"),
        post("a configured alias limit", body("{ a: x b: x c: x }", json!(null)), 400, bad_request("the query has more than 2 aliases"))
            .path("/open")
            .rule("graphql", "aliases"),
    ]
}

fn setup() -> Setup {
    // The door takes bodies up to 1 MiB, so the policy's own limit (64 KiB) is what
    // refuses a huge query.
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0") + "request_body: {max_bytes: 1048576}\n";
    let setup = Setup::new(&config, &[("graphql.yaml", POLICY)]);
    let templates = setup.dir.path().join("policies/templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("QIR-0001-ZKi.graphql"), QIR).unwrap();
    setup
}

/// A check as Envoy sends it with `with_request_body` (the body as a string).
async fn check(server: &Server, case: &Case) -> Answer {
    let mut request = Req {
        method: case.method.into(),
        path: case.path.clone(),
        ..Default::default()
    }
    .header("content-type", "application/json");
    if let Some(token) = &case.token {
        request = request.bearer(token);
    }
    let mut check = request.into_check();
    if let Some(http) = check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.body = case.body.clone();
    }
    let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    Answer::from(client.check(check).await.unwrap().into_inner())
}

#[tokio::test]
async fn graphql_requests_are_answered_as_rfc0014_says() {
    let setup = setup();
    let server = Server::start(&setup.config_path()).await;
    let config = sluis_config::Config::load(&setup.config_path()).unwrap();
    let engine = sluis_policy_tools::offline_engine(&config).await.unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let answer = check(&server, &case).await;
        let mut problems = Vec::new();
        if answer.status != case.status {
            problems.push(format!("status {} (body {})", answer.status, answer.body));
        }
        if let Value::Object(wanted) = &case.answer {
            let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
            for (key, value) in wanted {
                if body.get(key) != Some(value) {
                    problems.push(format!("body {} lacks {key}: {value}", answer.body));
                }
            }
            if case.answer.get("ErrorCode").is_some() {
                // RFC0014's key order, exactly.
                assert!(
                    answer.body.starts_with(r#"{"ErrorCode": "#),
                    "{}",
                    answer.body
                );
                assert_eq!(answer.header("content-type"), Some("application/json"));
            }
        }

        let mut request = sluis_core::request::AccessRequest {
            method: case.method.into(),
            host: "api.test".into(),
            body: case.body.clone(),
            ..Default::default()
        };
        request.set_target(&case.path);
        request
            .headers
            .insert("content-type".into(), "application/json".into());
        if let Some(token) = &case.token {
            request
                .headers
                .insert("authorization".into(), format!("Bearer {token}"));
        }
        let decision = engine.decide(&request).await.unwrap();
        if *decision.rule != *case.rule {
            problems.push(format!("rule `{}` ({})", decision.rule, decision.reason));
        }
        if !decision.reason.contains(case.reason) {
            problems.push(format!("reason {:?}", decision.reason));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    server.stop().await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn other_methods_get_405_and_get_is_read_from_the_url() {
    let setup = setup();
    let server = Server::start(&setup.config_path()).await;
    let put = Case {
        method: "PUT",
        ..post("put", body(QIR, own()), 405, json!(null))
    };
    let answer = check(&server, &put).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("GET, POST"));
    assert_eq!(
        answer.body_json(),
        json!({"ErrorCode": "method_not_allowed", "Error": "GraphQL is sent with GET or POST, not PUT"})
    );

    let encode = |text: &str| {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let target = format!(
        "/graphql?query={}&variables={}",
        encode(&q("bsn")),
        encode(&own().to_string())
    );
    let get = Case {
        method: "GET",
        path: target,
        ..post("get", String::new(), 200, json!(null))
    };
    assert_eq!(check(&server, &get).await.status, 200);
    let smuggled = Case {
        path: format!(
            "/graphql?query={}&variables={}",
            encode(&q("bsn geheim")),
            encode(&own().to_string())
        ),
        ..get
    };
    assert_eq!(check(&server, &smuggled).await.status, 403);
    server.stop().await;
}

#[test]
fn validate_names_the_policy_and_template_file() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[(
            "bad.yaml",
            r#"
policies:
  - id: broken
    issuers: [test]
    graphql:
      templates:
        - file: missing.graphql
        - file: t.graphql
          bind: {nope: token.sub}
        - file: bad.graphql
    rules:
      - {id: r, allow: graphql.tempalte == "x"}
  - id: no-block
    issuers: [test]
    rules:
      - {id: r, allow: graphql.template == "x"}
"#,
        )],
    );
    let dir = setup.dir.path().join("policies");
    std::fs::write(
        dir.join("t.graphql"),
        "query($id: ID!) { a(id: $id) { b } }",
    )
    .unwrap();
    std::fs::write(dir.join("bad.graphql"), "query {\n  a(\n}").unwrap();
    let (code, stdout, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    for expected in [
        "policy `broken`: cannot read query template `",
        "missing.graphql`",
        "policy `broken`: query template `t` (`",
        "declares no `$nope` to bind (it declares $id)",
        "bad.graphql`: invalid GraphQL at line 3",
        "rule `r`: invalid CEL `graphql.tempalte == \"x\"`: `graphql` has no field `tempalte`",
        "policy `no-block`: reads `graphql` but has no `graphql` block",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn explain_shows_the_operation_and_the_closest_template() {
    let setup = setup();
    let case = json!({
        "request": {
            "method": "POST",
            "path": "/graphql",
            "headers": {"content-type": "application/json"},
            "body": body(&q("bsn client { wachtwoord }"), own()),
        },
        "token": {"issuer": "test", "claims": {"sub": "user-1", "uzovi": "5000"}},
    });
    let file = setup.dir.path().join("case.json");
    std::fs::write(&file, case.to_string()).unwrap();
    let (code, stdout, stderr) = sluis(&[
        "explain",
        "--config",
        setup.config_path().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "decision: DENY 403 (policy `register`, rule `graphql-template`)",
        "graphql: query `WlzIndicatie`: root fields [\"wlzIndicatie\"], 4 field path(s); the query fits no query template; closest `QIR-0001-ZKi`: extra field `wlzIndicatie.client.wachtwoord`",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
