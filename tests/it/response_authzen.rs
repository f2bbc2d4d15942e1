//! Response authorization as AuthZEN (Care Services Proxy phase 2): the proxy asks
//! `/authorization/search-narrowing` before the request (phase 1) and gets the sealed grant
//! in `Sluis-Response-Grant`; after the upstream answered it sends the answer's resources
//! to `/access/v1/evaluations`, one evaluation per entry, with that grant in
//! `context.response_to`. The per-entry decisions must be what the ext_proc door keeps of
//! the same Bundle for the same identity, and each answer is one decision-log record with
//! counts only.

use sluis_test_kit as kit;

use kit::{Server, Setup};
use serde_json::{Value, json};

const POLICY: &str = r#"
policies:
  - id: mcsd
    match: {paths: ["/fhir", "/fhir/**"]}
    issuers: [test]
    caller:
      ura: {prefix: "ura|", from: ["claim:organization_ura"]}
    rules:
      - {id: read, allow: "request.method == 'GET'"}
    narrowing:
      base_path: /fhir
      use_cases: [mCSD]
      on_conflict: replace
      resources:
        Organization:
          identifier: '"ura|" + token.claims.organization_ura'
    response_rules:
      resource_types: [Organization, Patient]
      rules:
        - id: restricted
          withhold: has(entry.resource.meta) && entry.resource.meta.security.exists(s, s.code == 'R')
        - id: own-organization
          keep: entry.resource.identifier.exists(i, i.system == 'http://fhir.nl/fhir/NamingSystem/ura' && i.value == caller.ura)
        - id: no-patients
          deny: entry.resource.resourceType == 'Patient'
          status: 451
          message: patients are not in this directory
"#;

const URA: &str = "http://fhir.nl/fhir/NamingSystem/ura";

fn org(id: &str, ura: &str, restricted: bool) -> Value {
    let mut resource = json!({"resourceType": "Organization", "id": id,
        "identifier": [{"system": URA, "value": ura}]});
    if restricted {
        resource["meta"] = json!({"security": [{"code": "R"}]});
    }
    json!({"fullUrl": format!("http://fhir.test/fhir/Organization/{id}"),
        "resource": resource, "search": {"mode": "match"}})
}

fn bundle(entries: &[Value]) -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}

/// One AuthZEN evaluation per entry.
fn evaluations(grant: &str, entries: &[Value]) -> Value {
    let items: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({"resource": {
                "type": entry["resource"]["resourceType"],
                "id": entry["resource"]["id"],
                "properties": {"resource": entry["resource"], "fullUrl": entry["fullUrl"],
                    "search": entry["search"]},
            }})
        })
        .collect();
    json!({
        "subject": {"type": "organization", "id": "ura|1234"},
        "action": {"name": "read"},
        "context": {"response_to": {"grant": grant}},
        "evaluations": items,
    })
}

async fn post(server: &Server, path: &str, body: &Value, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", server.http))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// What the ext_proc door answers for `body` under `grant`: the kept ids, or the status
/// of its denial.
async fn ext_proc(server: &Server, grant: &str, body: &Value) -> Result<Vec<String>, i32> {
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        body_mutation::Mutation, processing_response::Response,
    };
    let last = kit::ext_proc::exchange(
        &server.grpc.to_string(),
        grant,
        body.to_string().into_bytes(),
    )
    .await;
    let ids = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    match last {
        Some(Response::ImmediateResponse(immediate)) => Err(immediate.status.unwrap().code),
        Some(Response::ResponseBody(reply)) => {
            let common = reply.response.unwrap_or_default();
            match common.body_mutation.and_then(|m| m.mutation) {
                Some(Mutation::Body(filtered)) => {
                    Ok(ids(&serde_json::from_slice(&filtered).unwrap()))
                }
                // Unchanged: everything kept.
                _ => Ok(ids(body)),
            }
        }
        other => panic!("unexpected reply: {other:?}"),
    }
}

#[tokio::test]
async fn response_evaluations_agree_with_the_ext_proc_door() {
    let config = kit::config_yaml("127.0.0.1:0", "127.0.0.1:0")
        + "decision_log:\n  sink: file\n  path: decisions.log\n";
    let setup = Setup::new(&config, &[("mcsd.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let mut claims = kit::claims();
    claims["organization_ura"] = json!("1234");
    let token = kit::token(&claims);

    // Phase 1: the narrowing, and the grant for judging the answer.
    let narrowing = post(
        &server,
        "/authorization/search-narrowing",
        &json!({"use_case": "mCSD", "query": "Organization?name=x", "method": "GET"}),
        Some(&token),
    )
    .await;
    assert_eq!(narrowing.status(), 200);
    let grant = narrowing
        .headers()
        .get("sluis-response-grant")
        .expect("a response grant")
        .to_str()
        .unwrap()
        .to_owned();
    let narrowed: Value = narrowing.json().await.unwrap();
    assert_eq!(
        narrowed["narrowed_scope"],
        "Organization?identifier=ura|1234"
    );

    // Phase 2: the same Bundle, both ways.
    let entries = vec![
        org("own-1", "1234", false),
        org("foreign", "9999", false),
        org("own-2", "1234", false),
        org("own-secret", "1234", true),
    ];
    let filtered = ext_proc(&server, &grant, &bundle(&entries)).await.unwrap();
    assert_eq!(filtered, ["own-1", "own-2"]);
    let response = post(
        &server,
        "/access/v1/evaluations",
        &evaluations(&grant, &entries),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let decisions = answer["evaluations"].as_array().unwrap();
    let allowed: Vec<&str> = entries
        .iter()
        .zip(decisions)
        .filter(|(_, d)| d["decision"] == true)
        .map(|(e, _)| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(allowed, filtered, "{answer}");
    assert_eq!(
        decisions[3]["context"],
        json!({"reason": "withheld", "rule": "restricted"})
    );
    assert_eq!(decisions[1]["context"], json!({"reason": "withheld"}));

    // A bad item gets its error in its place; the others are still judged.
    let mut body = evaluations(&grant, &entries[..2]);
    body["evaluations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource": {"type": "Location", "id": "own-1",
            "properties": {"resource": entries[0]["resource"]}}}));
    body["evaluations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource": {"type": "Organization", "id": "x"}}));
    let answer: Value = post(&server, "/access/v1/evaluations", &body, None)
        .await
        .json()
        .await
        .unwrap();
    let decisions = answer["evaluations"].as_array().unwrap();
    assert_eq!(decisions.len(), 4, "{answer}");
    assert_eq!(decisions[0], json!({"decision": true}));
    assert_eq!(decisions[1]["decision"], false);
    for (index, expected) in [
        (
            2,
            "`evaluations[2].resource.type` `Location` is not the resource's `resourceType` `Organization`",
        ),
        (3, "missing `evaluations[3].resource.properties.resource`"),
    ] {
        assert_eq!(decisions[index]["decision"], false);
        assert_eq!(decisions[index]["context"]["error"]["status"], 400);
        assert_eq!(
            decisions[index]["context"]["error"]["message"], expected,
            "{answer}"
        );
    }

    // A deny rule: the whole answer is denied both ways, with the policy's status.
    let with_patient = vec![
        org("own-1", "1234", false),
        json!({"resource": {"resourceType": "Patient", "id": "p1"}}),
    ];
    assert_eq!(
        ext_proc(&server, &grant, &bundle(&with_patient)).await,
        Err(451)
    );
    let answer: Value = post(
        &server,
        "/access/v1/evaluations",
        &evaluations(&grant, &with_patient),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        answer["evaluations"],
        json!([
            {"decision": false, "context": {"reason": "denied", "status": 451}},
            {"decision": false, "context": {"reason": "denied", "status": 451, "rule": "no-patients"}},
        ])
    );

    // A single evaluation works the same way.
    let mut single = evaluations(&grant, &entries[..1]);
    let item = single["evaluations"][0]["resource"].clone();
    single.as_object_mut().unwrap().remove("evaluations");
    single["resource"] = item;
    let answer: Value = post(&server, "/access/v1/evaluation", &single, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"decision": true}));

    // A grant of one's own making: nothing is shown.
    let forged = "eyJwb2xpY3kiOiJtY3NkIn0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let answer: Value = post(
        &server,
        "/access/v1/evaluations",
        &evaluations(forged, &entries),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    for decision in answer["evaluations"].as_array().unwrap() {
        assert_eq!(decision["decision"], false, "{answer}");
        assert_eq!(decision["context"]["error"]["status"], 403, "{answer}");
    }
    // A grant that is not a string is a bad request.
    let mut bad = evaluations(&grant, &entries);
    bad["context"]["response_to"]["grant"] = json!(7);
    assert_eq!(
        post(&server, "/access/v1/evaluations", &bad, None)
            .await
            .status(),
        400
    );

    // One record per judged answer: policy, outcome, counts; no resource content.
    let log = setup.dir.path().join("decisions.log");
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<Value>>()
    };
    assert!(
        kit::eventually(|| async {
            lines()
                .iter()
                .filter(|l| l.get("response").is_some())
                .count()
                >= 7
        })
        .await,
        "{:?}",
        lines()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("own-secret") && !text.contains("\"p1\""),
        "{text}"
    );
    let records = lines();
    let ext_proc_filter = records
        .iter()
        .find(|l| l["door"] == "envoy-ext-proc" && l["outcome"] == "filter")
        .expect("the ext_proc answer's record");
    assert_eq!(ext_proc_filter["policy"], "mcsd");
    assert_eq!(
        ext_proc_filter["response"],
        json!({"kept": 2, "withheld": 2})
    );
    assert_eq!(ext_proc_filter["request"]["path"], "/fhir/Organization");
    let authzen_filter = records
        .iter()
        .find(|l| l["door"] == "authzen" && l["outcome"] == "filter")
        .expect("the response evaluations' record");
    assert_eq!(
        authzen_filter["response"],
        json!({"kept": 2, "withheld": 2})
    );
    assert!(
        records
            .iter()
            .any(|l| l["door"] == "authzen" && l["rule"] == "no-patients" && l["status"] == 451),
        "{records:?}"
    );
    server.stop().await;
}
