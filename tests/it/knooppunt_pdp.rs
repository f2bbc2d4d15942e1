//! knooppunt's PDP door (`POST /pdp`, issue #21) with the shipped `policy/nl` policies,
//! chosen by scope: bodies in the shapes the PEP (`authorize.js`), the Go struct
//! (`query_params`) and the older `subject.properties` send; the trust boundary
//! (`allow_from`, `active`, `exp`); and one table of cases sent to the forward-auth door,
//! the Envoy gRPC door and `/pdp`, whose decisions must agree.

use sluis_test_kit as kit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kit::mitz::MitzStandIn;
use kit::nuts::*;
use kit::*;
use serde_json::{Value, json};

/// The Nuts node (answering `answers`), the data holder's FHIR server (Patient `p1`, BSN
/// 999999990; a local eOverdracht Consent for `Task/t1`) and Mitz (Permit), started.
async fn stand_ins(
    answers: Arc<Mutex<HashMap<String, Value>>>,
) -> (std::net::SocketAddr, String, MitzStandIn) {
    let node = NutsNode::with_answers(answers).start().await;
    let holder = HolderFhir::new(vec![
        patient("p1", "999999990"),
        eoverdracht_consent("c1", "24173480", &["Task/t1"]),
    ])
    .start()
    .await;
    let mitz = MitzStandIn::start().await;
    let sources = sources_yaml(&holder, &mitz);
    (node, sources, mitz)
}

const NUTS_ISS: &str = "https://nuts.example.org";

pub(crate) fn config(node: std::net::SocketAddr, allow_from: &str, sources: &str) -> String {
    format!(
        r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: nuts-node
    issuer: {NUTS_ISS}
    introspection:
      endpoint: http://{node}{INTROSPECTION_PATH}
      allow_insecure_http: true
      timeout: 1s
policies: [{policies}]
doors:
  knooppunt_pdp:
    issuer: nuts-node
    fhir_base_path: /fhir
    allow_from: [{allow_from}]
{sources}
"#,
        policies = repo_path("policy/nl").display()
    )
}

/// The introspection answer for a token with `scope` (and extra claims).
pub(crate) fn introspection(scope: &str, extra: Value) -> Value {
    let mut claims = json!({
        "active": true,
        "iss": NUTS_ISS,
        "client_id": "https://requester.example.org",
        "scope": scope,
        "organization_ura": "24173480",
        "organization_name": "Zorg B.V.",
        "organization_facility_type": "Z3",
        "subject_role": "01.015",
        "exp": now() + 600,
        "iat": now() - 10,
    });
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// The body knooppunt's PEP (`authorize.js`) sends.
fn pep_body(subject: &Value, method: &str, path: &str, query: &str, body: &str) -> Value {
    json!({"input": {
        "subject": subject,
        "request": {"method": method, "protocol": "HTTP/1.1", "path": path, "query": query,
            "header": {"accept": ["application/fhir+json"]}, "body": body},
        "context": {"connection_type_code": "hl7-fhir-rest",
            "data_holder_organization_id": "00000666", "data_holder_facility_type": "Z3",
            "patient_bsn": ""}
    }})
}

async fn pdp(client: &reqwest::Client, server: &Server, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("http://{}/pdp", server.http))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn the_pdp_door_answers_in_knooppunts_shape() {
    let (node, sources, _mitz) = stand_ins(Arc::default()).await;
    let setup = Setup::new(&config(node, r#""127.0.0.1/32""#, &sources), &[]);
    let server = Server::start(&setup.config_path()).await;
    let client = reqwest::Client::new();

    // The PEP's shape: an mCSD search, allowed by the policy the scope names.
    let subject = introspection("mcsd_query", json!({}));
    let (status, answer) = pdp(
        &client,
        &server,
        &pep_body(&subject, "GET", "/Organization", "name:contains=Zorg", ""),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "allow": true,
            "policies": {"mcsd_query": {"allow": true, "reasons": []}},
            "result": {"allow": true, "reasons": []},
        })
    );

    // Two scopes: both evaluated and reported, the first (by name) that allows decides.
    let subject = introspection("MCSD-Update mcsd_query", json!({}));
    let (_, answer) = pdp(
        &client,
        &server,
        &pep_body(&subject, "GET", "/Organization/org-1", "", ""),
    )
    .await;
    assert_eq!(answer["allow"], true);
    assert_eq!(answer["policies"]["mcsd_query"]["allow"], true);
    assert_eq!(answer["policies"]["mcsd_update"]["allow"], false);
    assert_eq!(
        answer["policies"]["mcsd_update"]["reasons"][0]["code"],
        "not_allowed"
    );

    // An unknown scope: not_implemented; no scope: "no policy defined".
    let subject = introspection("spoedzorg", json!({}));
    let (_, answer) = pdp(
        &client,
        &server,
        &pep_body(&subject, "GET", "/Patient", "", ""),
    )
    .await;
    assert_eq!(answer["allow"], false);
    assert_eq!(
        answer["policies"]["spoedzorg"]["reasons"][0],
        json!({"code": "not_implemented", "description": "scope `spoedzorg` has no policy"})
    );
    // The PEP that reads OPA's `result` (knooppunt's `authorize.js` of the older subject)
    // gets the same decision with every policy's reasons.
    assert_eq!(answer["result"]["allow"], false);
    assert_eq!(
        answer["result"]["reasons"][0],
        answer["policies"]["spoedzorg"]["reasons"][0]
    );
    let subject = introspection("", json!({"scope": null}));
    let (_, answer) = pdp(
        &client,
        &server,
        &pep_body(&subject, "GET", "/Patient", "", ""),
    )
    .await;
    assert_eq!(answer["allow"], false);
    assert_eq!(answer["error"], "no policy defined");

    // A malformed FHIR query is unexpected input, with knooppunt's `error`.
    let subject = introspection("mcsd_query", json!({}));
    let (_, answer) = pdp(
        &client,
        &server,
        &pep_body(&subject, "GET", "/Organization", "_count=lots", ""),
    )
    .await;
    assert_eq!(answer["allow"], false);
    assert_eq!(
        answer["policies"]["mcsd_query"]["reasons"][0]["code"],
        "unexpected_input"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid request: ")
    );

    // The Go struct's `query_params` and the base as "/": the eOverdracht notification.
    let subject = introspection("eoverdracht_receiver", json!({}));
    let body = json!({"input": {"subject": subject,
        "request": {"method": "POST", "path": "/", "query_params": {}, "header": {}, "body": "{}"},
        "context": {"data_holder_organization_id": "00000666"}}});
    let (_, answer) = pdp(&client, &server, &body).await;
    assert_eq!(answer["allow"], true, "{answer}");
    let body = json!({"input": {"subject": introspection("mcsd_query", json!({})),
        "request": {"method": "GET", "path": "/Organization",
            "query_params": {"name:contains": ["Zorg"], "_count": ["5"]}}}});
    let (_, answer) = pdp(&client, &server, &body).await;
    assert_eq!(answer["allow"], true, "{answer}");
    // The same path at knooppunt's OPA-style route; another package is refused.
    let response = client
        .post(format!(
            "http://{}/pdp/v1/data/knooppunt/authz",
            server.http
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .post(format!("http://{}/pdp/v1/data/other/allow", server.http))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // The older subject shape: properties flattened, qualifications as scopes.
    let legacy = json!({"input": {
        "subject": {"type": "organization", "id": "x", "active": true, "exp": now() + 600,
            "properties": {"client_qualifications": ["mcsd_query"], "subject_organization_id": "24173480"}},
        "request": {"method": "GET", "path": "/Location/loc-1"}}});
    let (_, answer) = pdp(&client, &server, &legacy).await;
    assert_eq!(answer["allow"], true, "{answer}");

    server.stop().await;
}

#[tokio::test]
async fn the_pdp_door_holds_its_trust_boundary() {
    let (node, sources, _mitz) = stand_ins(Arc::default()).await;
    let setup = Setup::new(&config(node, r#""127.0.0.1/32""#, &sources), &[]);
    let server = Server::start(&setup.config_path()).await;
    let client = reqwest::Client::new();
    let ok = |subject: &Value| pep_body(subject, "GET", "/Organization", "", "");

    // Inactive, expired, without `exp`, from another issuer: never an allow.
    for (name, subject) in [
        (
            "inactive",
            introspection("mcsd_query", json!({"active": false})),
        ),
        (
            "no active",
            introspection("mcsd_query", json!({"active": null})),
        ),
        (
            "expired",
            introspection("mcsd_query", json!({"exp": now() - 600})),
        ),
        ("no exp", introspection("mcsd_query", json!({"exp": null}))),
        (
            "other iss",
            introspection("mcsd_query", json!({"iss": "https://elsewhere"})),
        ),
    ] {
        let (status, answer) = pdp(&client, &server, &ok(&subject)).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(answer["allow"], false, "{name}: {answer}");
    }

    // Bad JSON and a query given twice: 400 with knooppunt's error text.
    let response = client
        .post(format!("http://{}/pdp", server.http))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["allow"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("unable to parse request body: ")
    );
    let twice = json!({"input": {"subject": introspection("mcsd_query", json!({})),
        "request": {"method": "GET", "path": "/Organization", "query": "a=1", "query_params": {"a": ["1"]}}}});
    let (status, _) = pdp(&client, &server, &twice).await;
    assert_eq!(status, 400);

    // A body past the limit: 413, never read whole.
    let huge = "x".repeat(3 * 1024 * 1024);
    let response = client
        .post(format!("http://{}/pdp", server.http))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // A BSN in a reason is masked before it leaves the door.
    let subject = introspection("mcsd_query", json!({}));
    let (_, answer) = pdp(
        &client,
        &server,
        &pep_body(
            &subject,
            "GET",
            "/Patient",
            "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999999990",
            "",
        ),
    )
    .await;
    assert_eq!(answer["allow"], false);
    assert!(!answer.to_string().contains("999999990"), "{answer}");

    // The context cannot name the policy that decides.
    let mut body = ok(&introspection(
        "mcsd_query",
        json!({"organization_ura": null}),
    ));
    body["input"]["context"]["sluis_policy"] = json!("mcsd_query");
    let (_, answer) = pdp(&client, &server, &body).await;
    assert_eq!(answer["allow"], false);
    server.stop().await;

    // A peer outside `allow_from` is refused before anything is read.
    let setup = Setup::new(&config(node, r#""10.0.0.0/8""#, &sources), &[]);
    let server = Server::start(&setup.config_path()).await;
    let (status, answer) = pdp(
        &client,
        &server,
        &ok(&introspection("mcsd_query", json!({}))),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(answer["allow"], false);
    server.stop().await;
}

/// The same request and identity give the same decision at the forward-auth door (NGINX
/// `auth_request` headers), the Envoy gRPC door and `/pdp` (claims as the PEP relays them,
/// the base path stripped as the PEP strips it).
#[tokio::test]
async fn forward_auth_envoy_and_pdp_doors_agree() {
    let answers: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let (node, sources, _mitz) = stand_ins(answers.clone()).await;
    let setup = Setup::new(&config(node, r#""127.0.0.1/32""#, &sources), &[]);
    let server = Server::start(&setup.config_path()).await;
    let client = reqwest::Client::new();
    let enrolled =
        json!({"patient_enrollment_identifier": "http://fhir.nl/fhir/NamingSystem/bsn|999999990"});
    // (scope, extra claims, method, path below /fhir, query)
    let cases: Vec<(&str, Value, &str, &str, &str)> = vec![
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/Organization",
            "name:contains=Zorg&active=true",
        ),
        ("mcsd_query", json!({}), "GET", "/Location/loc-1", ""),
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/Endpoint",
            "_lastUpdated=ge2026-01-01&_id=e1,e2",
        ),
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/Organization",
            "name:missing=true",
        ),
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/Organization",
            "_include:iterate=Organization:endpoint",
        ),
        ("mcsd_query", json!({}), "GET", "/Patient", "name=Jansen"),
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/Organization",
            "_count=lots",
        ),
        (
            "mcsd_query",
            json!({"organization_ura": null}),
            "GET",
            "/Organization",
            "",
        ),
        ("mcsd_query", json!({}), "DELETE", "/Organization/org-1", ""),
        (
            "mcsd_update",
            json!({}),
            "GET",
            "/Organization/_history",
            "_since=2026-01-01T00:00:00Z",
        ),
        (
            "MCSD-Update",
            json!({}),
            "GET",
            "/Practitioner/_history",
            "",
        ),
        ("mcsd_update", json!({}), "GET", "/Organization/org-1", ""),
        (
            "mcsd_update mcsd_query",
            json!({}),
            "GET",
            "/Organization/org-1",
            "",
        ),
        (
            "mcsd_update mcsd_query",
            json!({}),
            "PUT",
            "/Organization/org-1",
            "",
        ),
        ("eoverdracht_receiver", json!({}), "POST", "/", ""),
        ("eoverdracht_receiver", json!({}), "GET", "/", ""),
        (
            "eoverdracht_receiver",
            json!({"organization_ura": null}),
            "POST",
            "/",
            "",
        ),
        (
            "pzp_gf",
            json!({}),
            "GET",
            "/Patient",
            "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999999990",
        ),
        (
            "medicatieoverdracht_gf",
            enrolled.clone(),
            "GET",
            "/Patient",
            "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999999990",
        ),
        (
            "medicatieoverdracht_gf",
            enrolled,
            "GET",
            "/MedicationRequest",
            "patient=Patient/p1",
        ),
        ("eoverdracht_sender", json!({}), "GET", "/Task/t1", ""),
        ("eoverdracht_sender", json!({}), "GET", "/Task/t2", ""),
        ("bgz", json!({}), "GET", "/Patient", ""),
        ("bgz", json!({}), "GET", "/Condition", "patient=Patient/p1"),
        (
            "bgz",
            json!({}),
            "GET",
            "/Coverage",
            "patient=Patient/p1&_include=Coverage:payor:Organization&_include=Coverage:payor:Patient",
        ),
        ("bgz", json!({}), "GET", "/Condition", "patient=Patient/p2"),
        ("", json!({"scope": null}), "GET", "/Organization", ""),
    ];
    let mut failures = Vec::new();
    let mut allowed = Vec::new();
    for (index, (scope, extra, method, path, query)) in cases.iter().enumerate() {
        let claims = introspection(scope, extra.clone());
        let token = format!("opaque-token-{index}");
        answers
            .lock()
            .unwrap()
            .insert(token.clone(), claims.clone());
        let full_path = if *path == "/" {
            "/fhir".to_owned()
        } else {
            format!("/fhir{path}")
        };
        let target = if query.is_empty() {
            full_path.clone()
        } else {
            format!("{full_path}?{query}")
        };

        let envoy = server
            .check(
                Req::get(&target)
                    .method(method)
                    .header("authorization", &format!("Bearer {token}")),
            )
            .await;
        let forward = client
            .get(format!("http://{}/decisions", server.http))
            .bearer_auth(&token)
            .header("x-original-method", *method)
            .header("x-original-uri", &target)
            .send()
            .await
            .unwrap();
        let forward_status = forward.status().as_u16();
        let (status, answer) = pdp(
            &client,
            &server,
            &pep_body(&claims, method, path, query, ""),
        )
        .await;
        let pdp_allow = status == 200 && answer["allow"] == true;
        if pdp_allow {
            allowed.push(format!("{scope} {method} {target}"));
        }
        let envoy_allow = envoy.status == 200;
        let forward_allow = forward_status == 200;
        if !(envoy_allow == forward_allow && forward_allow == pdp_allow) {
            failures.push(format!(
                "{method} {target} ({scope}): envoy {}, forward-auth {forward_status}, pdp {status} {answer}",
                envoy.status
            ));
        }
        // Denials agree on status between the two gateway doors too.
        if envoy.status != forward_status {
            failures.push(format!(
                "{method} {target} ({scope}): envoy {} vs forward-auth {forward_status}",
                envoy.status
            ));
        }
    }
    // Not all the same answer: the table tells allow from deny.
    assert!(failures.is_empty(), "{failures:#?}");
    // The policies that ask Mitz and the data holder's FHIR server allow through every
    // door when those agree.
    for case in [
        "pzp_gf GET /fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999999990",
        "medicatieoverdracht_gf GET /fhir/MedicationRequest?patient=Patient/p1",
        "eoverdracht_sender GET /fhir/Task/t1",
        "bgz GET /fhir/Condition?patient=Patient/p1",
    ] {
        assert!(
            allowed.iter().any(|a| a == case),
            "{case} not allowed: {allowed:#?}"
        );
    }
    for case in [
        "eoverdracht_sender GET /fhir/Task/t2",
        "bgz GET /fhir/Condition?patient=Patient/p2",
    ] {
        assert!(!allowed.iter().any(|a| a == case), "{case} allowed");
    }
    server.stop().await;
}

/// The Mitz question names the data holder the PEP names in its context (8 digits), the
/// source's default otherwise; a holder outside the source's `data_holders` is never
/// asked about, and the answer says why.
#[tokio::test]
async fn the_mitz_question_names_the_peps_data_holder() {
    let node = NutsNode::default();
    let node_address = node.start().await;
    let holder = HolderFhir::new(vec![patient("p1", "999999990")])
        .start()
        .await;
    let mitz = MitzStandIn::start().await;
    let sources = sources_yaml(&holder, &mitz).replace(
        "    defaults: {author_ura",
        "    data_holders: [\"00000659\", \"00000666\"]\n    defaults: {author_ura",
    );
    assert!(sources.contains("data_holders"));
    let setup = Setup::new(&config(node_address, r#""127.0.0.1/32""#, &sources), &[]);
    let server = Server::start(&setup.config_path()).await;
    let client = reqwest::Client::new();
    let subject = introspection("pzp_gf", json!({}));
    // A different patient per case: each question is asked, not answered from the cache.
    let ask = |bsn: &str, holder: Option<&str>, facility: Option<&str>| {
        let mut body = pep_body(
            &subject,
            "GET",
            "/Patient",
            &format!("identifier=http://fhir.nl/fhir/NamingSystem/bsn|{bsn}"),
            "",
        );
        let context = &mut body["input"]["context"];
        context["data_holder_organization_id"] = json!(holder);
        context["data_holder_facility_type"] = json!(facility);
        body
    };

    // The PEP's holder and facility type.
    let (_, answer) = pdp(
        &client,
        &server,
        &ask("999999990", Some("00000666"), Some("A1")),
    )
    .await;
    assert_eq!(answer["allow"], true, "{answer}");
    let asked = mitz.last_request().unwrap().question;
    assert_eq!(asked.author_ura, "00000666");
    assert_eq!(asked.author_facility_type.code, "A1");
    // None, or malformed: the source's default holder, with its facility type.
    for (bsn, holder) in [
        ("900186021", None),
        ("111222333", Some("666")),
        ("123456782", Some("")),
    ] {
        let (_, answer) = pdp(&client, &server, &ask(bsn, holder, Some("A1"))).await;
        assert_eq!(answer["allow"], true, "{holder:?}: {answer}");
        let asked = mitz.last_request().unwrap().question;
        assert_eq!(asked.author_ura, "00000659", "{holder:?}");
        assert_eq!(asked.author_facility_type.code, "Z3", "{holder:?}");
    }
    // A holder this deployment does not serve: not asked, denied with the reason.
    let calls = mitz.calls();
    let (status, answer) = pdp(&client, &server, &ask("999999990", Some("00000777"), None)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["allow"], false, "{answer}");
    assert_eq!(
        mitz.calls(),
        calls,
        "Mitz was asked about a holder not served"
    );
    let reasons = answer["policies"]["pzp_gf"]["reasons"].to_string();
    assert!(reasons.contains("data_holders"), "{answer}");
    assert!(!reasons.contains("00000777"), "{answer}");
    server.stop().await;
}

/// `patient-bsn-differs` at the `/pdp` door, for any BSN the PEP may pass and any patient
/// the request may name (by id, read from the data holder, or by BSN in a Patient
/// search): a context BSN other than the patient's is never allowed, and refused by that
/// rule; the same BSN is never refused by it.
#[test]
fn a_context_bsn_is_never_another_patients() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const DIFFERS: &str = "`patient-bsn-differs`";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let holder = HolderFhir::new(Vec::new());
    let (server, client, _mitz, _setup) = runtime.block_on(async {
        let node = NutsNode::default().start().await;
        let holder_url = holder.start().await;
        let mitz = MitzStandIn::start().await;
        let setup = Setup::new(
            &config(node, r#""127.0.0.1/32""#, &sources_yaml(&holder_url, &mitz)),
            &[],
        );
        let server = Server::start(&setup.config_path()).await;
        (server, reqwest::Client::new(), mitz, setup)
    });
    let next = AtomicUsize::new(0);
    // A BSN as a holder stores it and a query can carry it; the context's may be anything.
    let stored = prop_oneof!["[0-9]{9}", "[0-9A-Za-z]{1,12}"];
    let context = prop_oneof![stored.clone(), "\\PC{1,16}"];
    // (policy, request shape): 0 names the patient by id, 1 by BSN in the query.
    let shape = prop_oneof![Just(("bgz", 0)), Just(("pzp_gf", 0)), Just(("pzp_gf", 1))];
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &(stored, context, any::<bool>(), shape),
        |(patient_bsn, other_bsn, same, (scope, shape))| {
            let context_bsn = if same { patient_bsn.clone() } else { other_bsn };
            let id = format!("prop-{}", next.fetch_add(1, Ordering::SeqCst));
            holder.add(patient(&id, &patient_bsn));
            let (path, query) = match (scope, shape) {
                ("bgz", _) => ("/Condition", format!("patient=Patient/{id}")),
                (_, 0) => (
                    "/Consent",
                    format!(
                        "patient=Patient/{id}&scope=http://terminology.hl7.org/CodeSystem/consentscope|treatment&category=http://snomed.info/sct|129125009"
                    ),
                ),
                _ => (
                    "/Patient",
                    format!("identifier=http://fhir.nl/fhir/NamingSystem/bsn|{patient_bsn}"),
                ),
            };
            let mut body = pep_body(&introspection(scope, json!({})), "GET", path, &query, "");
            body["input"]["context"]["patient_bsn"] = json!(context_bsn);
            let (status, answer) = runtime.block_on(pdp(&client, &server, &body));
            prop_assert_eq!(status, 200, "{}", answer);
            let refused_by_rule = answer["policies"][scope]["reasons"]
                .as_array()
                .is_some_and(|reasons| {
                    reasons.iter().any(|r| {
                        r["description"]
                            .as_str()
                            .is_some_and(|d| d.contains(DIFFERS))
                    })
                });
            if context_bsn == patient_bsn {
                prop_assert!(!refused_by_rule, "same BSN refused: {}", answer);
            } else {
                prop_assert_eq!(&answer["allow"], &json!(false), "{}", answer);
                prop_assert!(refused_by_rule, "{}", answer);
            }
            Ok::<(), TestCaseError>(())
        },
    );
    runtime.block_on(server.stop());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
