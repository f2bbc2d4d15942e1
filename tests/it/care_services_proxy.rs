//! The Care Services Proxy door over HTTP, with the examples of the API's two OpenAPI
//! versions (nl-generic-functions-ig, `input/images/care-services-proxy-openapi.json` at
//! commits d68517a (v1.0.0) and f7f1a4d (v2.0.0), copied into
//! `tests/fixtures/care-services-proxy/`), and the same narrowing inline through a real
//! Envoy.

use sluis_test_kit as kit;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kit::gateway::*;
use kit::*;
use serde_json::{Value, json};

/// An OpenAPI document of the API (`tests/fixtures/care-services-proxy/SOURCE.txt`).
fn openapi(commit: &str) -> Value {
    let path = fixture(&format!(
        "care-services-proxy/care-services-proxy-openapi.{commit}.json"
    ));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The shipped mCSD example policy, for the test issuer.
fn mcsd_policy() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy/care-services-mcsd.yaml");
    std::fs::read_to_string(path)
        .unwrap()
        .replace("issuers: [nuts-node]", "issuers: [test]")
}

/// The v2 example's use case: a practitioner sees the patients of their care teams. The
/// proxy has introspected the token already, so the policy takes the practitioner from
/// the introspection result and needs no token of its own.
const PATIENT_ACCESS: &str = r#"
policies:
  - id: patient-access
    match: {paths: ["/patient-access/**"]}
    anonymous: true
    rules:
      - id: active-token
        allow: request.context["introspection.active"] == "true"
    narrowing:
      base_path: /patient-access
      use_cases: [patient_access]
      resources:
        Patient:
          "_has:CareTeam:patient:participant:Practitioner.identifier": request.context["introspection.user_id"]
"#;

async fn start() -> (Setup, Server) {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[
            ("mcsd.yaml", &mcsd_policy()),
            ("patient-access.yaml", PATIENT_ACCESS),
        ],
    );
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

fn requester_token(ura: &str) -> String {
    let mut claims = claims();
    claims["organization_ura"] = json!(ura);
    token(&claims)
}

async fn post(server: &Server, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", server.http))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// The `example` of every property of an OpenAPI object schema.
fn examples(schema: &Value) -> Value {
    let properties = schema["properties"].as_object().unwrap();
    Value::Object(
        properties
            .iter()
            .filter_map(|(name, property)| {
                let example =
                    if property["type"] == "object" && property.get("properties").is_some() {
                        examples(property)
                    } else {
                        property.get("example")?.clone()
                    };
                Some((name.clone(), example))
            })
            .collect(),
    )
}

#[tokio::test]
async fn v1_search_narrowing_answers_the_openapi_examples() {
    let api = openapi("d68517a");
    let operation = &api["paths"]["/authorization/search-narrowing"]["post"];
    let request = examples(&operation["requestBody"]["content"]["application/json"]["schema"]);
    let response =
        examples(&operation["responses"]["200"]["content"]["application/json"]["schema"]);
    assert_eq!(request["query"], "Organization?name=Example&_id=123");
    let (_setup, server) = start().await;
    let token = requester_token("24173480");

    // The example request gets the example answer, field by field: the scope is the
    // resource type and its narrowing; the proxy applies the client's own parameters.
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        Some(&token),
        &request,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["narrowed_scope"], response["narrowed_scope"]);
    assert_eq!(
        body["narrowed_scope"],
        "Organization?identifier=ura|24173480"
    );
    assert_eq!(body["original_scope"], response["original_scope"]);
    assert_eq!(body["original_scope"], "Organization");

    // The example response, for the example's original scope.
    let mut plain = request.clone();
    plain["query"] = response["original_scope"].clone();
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        Some(&token),
        &plain,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["narrowed_scope"], response["narrowed_scope"]);
    assert_eq!(body["original_scope"], response["original_scope"]);
    let filter = &operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        ["applied_filters"]["items"]["properties"];
    assert_eq!(
        body["applied_filters"],
        json!([{"parameter": filter["parameter"]["example"], "value": filter["value"]["example"]}])
    );
    server.stop().await;
}

#[tokio::test]
async fn v1_scopes_are_the_openapi_example_scopes() {
    let api = openapi("d68517a");
    let operation = &api["paths"]["/authorization/scopes"]["post"];
    let request = examples(&operation["requestBody"]["content"]["application/json"]["schema"]);
    let expected: BTreeSet<String> = operation["responses"]["200"]["content"]["application/json"]
        ["schema"]["properties"]["scopes"]["example"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let (_setup, server) = start().await;
    let mut claims = claims();
    claims["organization_ura"] = json!("24173480");
    let exp = claims["exp"].as_i64().unwrap();
    let (status, body) = post(
        &server,
        "/authorization/scopes",
        Some(&token(&claims)),
        &request,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Every field the OpenAPI's answer has, and no other.
    let properties =
        &operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"];
    let fields: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let specified: BTreeSet<&str> = properties
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, specified, "{body}");
    // `expiry`: a `date-time` written as the example is (`2024-12-31T23:59:59Z`), when the
    // requester's token expires.
    assert_eq!(properties["expiry"]["format"], "date-time");
    let expiry = body["expiry"].as_str().unwrap();
    let example = properties["expiry"]["example"].as_str().unwrap();
    assert_eq!(expiry.len(), example.len(), "{expiry} vs {example}");
    assert!(
        expiry.ends_with('Z') && expiry.as_bytes()[10] == b'T',
        "{expiry}"
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(expiry)
            .unwrap()
            .timestamp(),
        exp
    );
    // In the example's order, which is the policy's (not sorted).
    let in_order: Vec<&str> = operation["responses"]["200"]["content"]["application/json"]
        ["schema"]["properties"]["scopes"]["example"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let given: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(given, in_order);
    let scopes: BTreeSet<String> = given.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(scopes, expected);
    let details = body["scope_details"].as_array().unwrap();
    let detail = &operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        ["scope_details"]["items"]["properties"];
    let organization = details
        .iter()
        .find(|d| d["scope"] == detail["scope"]["example"])
        .unwrap();
    assert_eq!(
        organization["description"],
        detail["description"]["example"]
    );
    // The example's constraints add `type=prov`, which its own scope string does not
    // have: we give what the scope narrows (docs/cookbook.md says so).
    assert_eq!(
        organization["constraints"],
        json!(["identifier=ura|24173480"])
    );
    for (scope, detail) in given.iter().zip(details) {
        assert_eq!(detail["scope"], *scope);
    }
    // The scopes mean what the narrowing does: each permits exactly the narrowed search.
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let permits = |query: &str| {
        sluis_core::policy::smart::permits(&scopes, "GET", "/Organization", query, "")
    };
    assert!(permits("name=x&identifier=ura|24173480"));
    assert!(!permits("name=x"));
    assert!(!permits("identifier=ura|11111111"));
    server.stop().await;
}

#[tokio::test]
async fn v2_search_narrowing_answers_the_openapi_examples() {
    let api = openapi("f7f1a4d");
    let schemas = &api["components"]["schemas"];
    let request_schema = &schemas["SearchNarrowingRequest"]["properties"];
    let response_schema = &schemas["SearchNarrowingResponse"]["properties"];
    let mut introspection = request_schema["introspection_result"]["example"].clone();
    // "Additional properties are extracted from the Verifiable Credentials (e.g.,
    // user_type, user_id, ...)" (the spec's description of `introspection_result`): as
    // the Nuts node would, put the example credential's subject identifier at the top.
    introspection["user_id"] =
        introspection["vps"][0]["verifiableCredential"][0]["credentialSubject"]["identifier"]
            .clone();
    let http_request = json!({
        "method": request_schema["http_request"]["properties"]["method"]["example"],
        "path": request_schema["http_request"]["properties"]["path"]["example"],
        "headers": request_schema["http_request"]["properties"]["headers"]["example"],
    });
    let request = json!({
        "introspection_result": introspection,
        "http_request": http_request,
        "use_case": request_schema["use_case"]["example"],
    });
    let (_setup, server) = start().await;

    let (status, body) = post(&server, "/authorization/search-narrowing", None, &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], true);
    assert_eq!(
        body["rewritten_query"],
        response_schema["rewritten_query"]["example"]
    );
    assert_eq!(
        body["original_query"],
        response_schema["original_query"]["example"]
    );
    let filter = &response_schema["applied_filters"]["items"]["properties"];
    assert_eq!(
        body["applied_filters"][0]["parameter"],
        filter["parameter"]["example"]
    );
    assert_eq!(
        body["applied_filters"][0]["value"],
        filter["value"]["example"]
    );
    assert_eq!(
        body["audit_info"]["applied_policies"],
        json!(["patient-access"])
    );

    // With the example's query parameters: kept, the narrowing added.
    let mut with_query = request.clone();
    with_query["http_request"]["query_params"] =
        request_schema["http_request"]["properties"]["query_params"]["example"].clone();
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        None,
        &with_query,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rewritten_query"],
        "/Patient?_count=10&name=Smith&_has:CareTeam:patient:participant:Practitioner.identifier=urn:oid:2.16.528.1.1007.3.1:123456789"
    );

    // An inactive token: denied, in the API's error shape.
    let mut inactive = request.clone();
    inactive["introspection_result"]["active"] = json!(false);
    let (status, body) = post(&server, "/authorization/search-narrowing", None, &inactive).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    server.stop().await;
}

#[tokio::test]
async fn a_client_parameter_cannot_widen_the_narrowing_through_the_door() {
    let (_setup, server) = start().await;
    let token = requester_token("24173480");
    let ask = |query: &str| {
        json!({"use_case": "mCSD", "method": "GET", "query": query,
               "requester": {"organization_identifier": "ura|24173480"}})
    };
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        Some(&token),
        &ask("Organization?identifier=ura|11111111&name=x&identifier=ura|22222222"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The client's identifiers are gone: the scope is the narrowing only.
    assert_eq!(
        body["narrowed_scope"],
        "Organization?identifier=ura|24173480"
    );
    assert_eq!(body["original_scope"], "Organization");
    for query in [
        "Organization?identifier:missing=true",
        "Organization?_filter=identifier%20eq%20x",
        "Organization?_revinclude=Location:organization",
        "Location?managingOrganization.name=x",
    ] {
        let (status, body) = post(
            &server,
            "/authorization/search-narrowing",
            Some(&token),
            &ask(query),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "access_denied", "{body}");
    }
    // Reads by id cannot be narrowed; a requester other than the token's is refused.
    let (status, _) = post(
        &server,
        "/authorization/search-narrowing",
        Some(&token),
        &ask("Organization/11111111"),
    )
    .await;
    assert_eq!(status, 403);
    let mut other = ask("Organization");
    other["requester"]["organization_identifier"] = json!("ura|11111111");
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        Some(&token),
        &other,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["message"],
        "the requester is not the organisation of the token"
    );
    // No token: the policy's 401.
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        None,
        &ask("Organization"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_400_naming_the_problem() {
    let (_setup, server) = start().await;
    let url = format!("http://{}/authorization/search-narrowing", server.http);
    let client = reqwest::Client::new();
    let send = |content_type: &'static str, body: &'static str| {
        client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: &[(&str, &str, &str)] = &[
        (
            "text/plain",
            "{}",
            "content type must be `application/json`",
        ),
        ("application/json", "{not json", "invalid request body"),
        (
            "application/json",
            "[]",
            "the request body must be a JSON object",
        ),
        (
            "application/json",
            r#"{"use_case": "mCSD", "method": "GET"}"#,
            "missing field `query`",
        ),
        (
            "application/json",
            r#"{"introspection_result": {}, "http_request": {"path": "/Patient"}}"#,
            "missing field `method`",
        ),
        (
            "application/json",
            r#"{"use_case": "mCSD", "method": "TRACE", "query": "Organization"}"#,
            "method `TRACE` is not one of",
        ),
        (
            "application/json",
            r#"{"use_case": 7, "method": "GET", "query": "Organization"}"#,
            "invalid type",
        ),
    ];
    for (content_type, body, expected) in cases {
        let response = send(content_type, body).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_request");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let response = client
        .post(format!("http://{}/authorization/scopes", server.http))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("missing field `use_case`")
    );
    // A use case no policy answers for.
    let (status, body) = post(
        &server,
        "/authorization/search-narrowing",
        None,
        &json!({"use_case": "unknown", "method": "GET", "query": "Organization"}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["message"], "no policy answers for use case `unknown`");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_narrows_searches_inline_and_a_client_cannot_widen_them() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    let setup = Setup::new(
        &config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")),
        &[("mcsd.yaml", &mcsd_policy())],
    );
    let _sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _envoy = start_envoy(
        &envoy,
        setup.dir.path(),
        listen,
        grpc,
        upstream_port,
        envoy_admin,
    );
    let sluis_admin = format!("127.0.0.1:{admin}");
    wait_until("sluis", || http_ok(&sluis_admin, "/readyz")).await;
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;

    let client = reqwest::Client::new();
    let token = requester_token("24173480");
    let get = |target: &str| {
        client
            .get(format!("http://127.0.0.1:{listen}{target}"))
            .bearer_auth(&token)
            .send()
    };

    // The client's two identifiers (an AND a lax server might read as "either") are
    // replaced by the one narrowing value.
    let response =
        get("/mcsd/Organization?identifier=ura%7C11111111&name=x&identifier=ura|22222222")
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    let uri = echoed["uri"].as_str().unwrap();
    let identifiers: Vec<&str> = uri
        .split(['?', '&'])
        .filter(|pair| pair.starts_with("identifier"))
        .collect();
    assert_eq!(identifiers, ["identifier=ura%7C24173480"], "{uri}");
    assert!(
        uri.starts_with("/mcsd/Organization?") && uri.contains("name=x"),
        "{uri}"
    );

    let response = get("/mcsd/Location?_count=5").await.unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    let uri = echoed["uri"].as_str().unwrap();
    assert!(
        uri.contains("managingOrganization=Organization%2F24173480"),
        "{uri}"
    );

    // What cannot be narrowed safely never reaches the upstream.
    let before = seen.lock().unwrap().len();
    for (target, status) in [
        ("/mcsd/Organization?identifier:missing=true", 400),
        ("/mcsd/Organization?identifi%65r=ura|11111111", 400),
        ("/mcsd/Organization?_filter=identifier%20eq%20x", 400),
        ("/mcsd/Organization/11111111", 403),
        ("/mcsd?_type=Organization", 403),
    ] {
        let response = get(target).await.unwrap();
        assert_eq!(response.status(), status, "{target}");
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "a refused search reached the upstream"
    );
}

/// `/authorization/scopes` is one decision per narrowed type, each in the decision log
/// as the door's: the engine merges them. A 401 answers at once, after one decision; an
/// unknown use case judges no request and logs nothing.
#[tokio::test]
async fn scopes_are_decided_and_logged_one_per_narrowed_type() {
    let config = format!(
        "{}decision_log:\n  sink: file\n  path: decisions.log\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("mcsd.yaml", &mcsd_policy())]);
    let server = Server::start(&setup.config_path()).await;
    let request =
        json!({"use_case": "mCSD", "requester": {"organization_identifier": "ura|24173480"}});
    let (status, body) = post(
        &server,
        "/authorization/scopes",
        Some(&requester_token("24173480")),
        &request,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scopes"].as_array().unwrap().len(), 5, "{body}");
    let (status, body) = post(&server, "/authorization/scopes", None, &request).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        &server,
        "/authorization/scopes",
        Some(&requester_token("24173480")),
        &json!({"use_case": "unknown"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    assert_eq!(body["message"], "no policy answers for use case `unknown`");
    server.stop().await;
    let lines: Vec<Value> = std::fs::read_to_string(setup.dir.path().join("decisions.log"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["door"], "care-services", "{line:#}");
        assert_eq!(line["policy"], "care-services-mcsd", "{line:#}");
    }
    assert!(
        lines[..5]
            .iter()
            .all(|line| line["outcome"] == "allow" && line["rule"] == "directory-searches"),
        "{lines:#?}"
    );
    assert_eq!(lines[5]["outcome"], "deny");
    assert_eq!(lines[5]["rule"], "authentication");
}
