//! The example policies in `policy/` with the example config, decided by the engine:
//! what each allows, what it denies, and with which answer.

use sluis_test_kit as kit;

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sluis_core::decision::{Decision, Outcome};
use sluis_core::engine::Engine;
use sluis_core::request::AccessRequest;

async fn engine() -> Engine {
    let config = sluis_config::Config::load(Path::new("examples/config.yaml")).unwrap();
    let engine = config.build_engine(std::sync::Arc::default()).unwrap();
    for issuer in engine.authenticator().issuers() {
        issuer.refresh().await.unwrap();
    }
    engine
}

/// A token signed with the example development key.
fn dev_token(claims: Value) -> String {
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read("examples/keys/dev-rsa.pem").unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("dev-1".into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A client certificate valid until 2126, as the gateway passes it on.
const VECOZO_CERTIFICATE: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB5DCCAYugAwIBAgIUcyBT5Ayw1vdffvYz6A3m9R+t/hIwCgYIKoZIzj0EAwIw\n\
RzEZMBcGA1UECgwQWm9yZ2thbnRvb3IgNTAwMDEqMCgGA1UEAwwhdmVjb3pvLXN5\n\
c3RlZW1jZXJ0aWZpY2FhdC5leGFtcGxlMCAXDTI2MTIwNjAxMjU1OVoYDzIxMjYx\n\
MTEyMDEyNTU5WjBHMRkwFwYDVQQKDBBab3Jna2FudG9vciA1MDAwMSowKAYDVQQD\n\
DCF2ZWNvem8tc3lzdGVlbWNlcnRpZmljYWF0LmV4YW1wbGUwWTATBgcqhkjOPQIB\n\
BggqhkjOPQMBBwNCAATyJRmRsNH/1/ZExuSw+9soernXihDJh69LvBSO9DQx4S72\n\
dksHpjG34A8zO+60maRwDcNthx01qt1NAkH+PtdMo1MwUTAdBgNVHQ4EFgQUoOrb\n\
rBlRtTu/qCHtFmd2RiQfFJEwHwYDVR0jBBgwFoAUoOrbrBlRtTu/qCHtFmd2RiQf\n\
FJEwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBIEnbnuUidU93K\n\
lQM+SNLH85hhbmNzT1ohhQrVXBLE6gIgMcxMKVjm7WbA7kvnWgn0gdCGiAlBR8z5\n\
vKprH662zIM=\n\
-----END CERTIFICATE-----\n";

fn request(method: &str, target: &str, token: Option<&str>) -> AccessRequest {
    let mut request = AccessRequest {
        method: method.into(),
        host: "fhir.example.org".into(),
        scheme: "https".into(),
        ..Default::default()
    };
    request.set_target(target);
    // The iWlz registers want the caller's VECOZO system certificate (RFC0014 [11]).
    if target.starts_with("/iwlz/") {
        request.source.certificate = Some(VECOZO_CERTIFICATE.into());
    }
    if let Some(token) = token {
        request
            .headers
            .insert("authorization".into(), format!("Bearer {token}"));
    }
    request
}

async fn decide(engine: &Engine, method: &str, target: &str, token: &str) -> Decision {
    engine
        .decide(&request(method, target, Some(token)))
        .await
        .unwrap()
}

fn header<'a>(decision: &'a Decision, name: &str) -> Option<&'a str> {
    match &decision.outcome {
        Outcome::Allow(allow) => allow
            .set_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str()),
        Outcome::Deny(deny) => deny
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str()),
    }
}

fn body(decision: &Decision) -> Value {
    match &decision.outcome {
        Outcome::Deny(deny) => serde_json::from_str(&deny.body).unwrap(),
        Outcome::Allow(_) => panic!("allowed: {decision:?}"),
    }
}

// --- eOverdracht receiver (policy/eoverdracht-receiver.yaml) ---

fn nuts_claims() -> Value {
    json!({
        "iss": "https://nuts.example.org",
        "aud": "https://fhir.example.org",
        "sub": "did:web:receiver.example.org",
        "client_id": "did:web:receiver.example.org",
        "scope": "eOverdracht-receiver",
        "iat": kit::now(),
        "exp": kit::now() + 300,
    })
}

/// An engine on the example config with the receiver's transfer registered.
async fn engine_with_transfer() -> Engine {
    let engine = engine().await;
    let transfer = sluis_core::flows::Flow::from_json(json!({
        "id": "transfer-abc",
        "purpose": "eOverdracht",
        "custodian": "did:web:sender.example.org",
        "actor": "did:web:receiver.example.org",
        "resources": [
            {"path": "Task/abc", "operations": ["read", "update"]},
            {"path": "Patient/123", "operations": ["read"]},
            {"path": "Composition/c-1", "operations": ["read", "document"]},
        ],
        "scopes": ["eOverdracht-receiver"],
    }))
    .unwrap();
    engine.set_flows(std::sync::Arc::new(
        sluis_core::flows::FlowIndex::from_flows([&transfer]),
    ));
    engine
}

#[tokio::test]
async fn eoverdracht_receiver_reads_transfer_resources() {
    let engine = engine_with_transfer().await;
    let token = dev_token(nuts_claims());
    for target in [
        "/eoverdracht/fhir/Task/abc",
        "/eoverdracht/fhir/Patient/123",
        "/eoverdracht/fhir/Composition/c-1?_format=json",
    ] {
        let decision = decide(&engine, "GET", target, &token).await;
        assert!(decision.is_allow(), "{target}: {decision:?}");
        assert_eq!(decision.policy.as_deref(), Some("eoverdracht-receiver"));
        assert_eq!(&*decision.rule, "transfer");
        assert_eq!(
            header(&decision, "x-sluis-client-id"),
            Some("did:web:receiver.example.org")
        );
    }
}

#[tokio::test]
async fn eoverdracht_receiver_denials() {
    let engine = engine_with_transfer().await;
    let token = dev_token(nuts_claims());
    let uniform = json!({"error": "access_denied", "message": "access denied"});

    // Every policy denial gets the same answer; the rule says which check failed.
    for (method, target, rule) in [
        ("POST", "/eoverdracht/fhir/Patient", "resource-in-flow"),
        ("GET", "/eoverdracht/fhir/Claim/1", "resource-in-flow"),
        ("GET", "/eoverdracht/fhir/Patient", "resource-in-flow"),
        (
            "GET",
            "/eoverdracht/fhir/Patient/123/_history",
            "resource-in-flow",
        ),
        ("DELETE", "/eoverdracht/fhir/Patient/123", "method-allowed"),
        ("PUT", "/eoverdracht/fhir/Composition/c-1", "method-allowed"),
    ] {
        let decision = decide(&engine, method, target, &token).await;
        assert_eq!(
            (decision.status(), &*decision.rule),
            (403, rule),
            "{method} {target}"
        );
        assert_eq!(body(&decision), uniform);
    }
    let mut stranger = nuts_claims();
    stranger["client_id"] = json!("did:web:stranger.example.org");
    let decision = decide(
        &engine,
        "GET",
        "/eoverdracht/fhir/Task/abc",
        &dev_token(stranger),
    )
    .await;
    assert_eq!((decision.status(), &*decision.rule), (403, "receiver"));

    let mut other_scope = nuts_claims();
    other_scope["scope"] = json!("eOverdracht-sender");
    let decision = decide(
        &engine,
        "GET",
        "/eoverdracht/fhir/Task/1",
        &dev_token(other_scope),
    )
    .await;
    // Missing scopes get the uniform answer too; the rule says `scopes`.
    assert_eq!((decision.status(), &*decision.rule), (403, "scopes"));
    assert_eq!(body(&decision), uniform);

    // A token of another issuer, valid there, is not accepted here.
    let decision = decide(
        &engine,
        "GET",
        "/eoverdracht/fhir/Task/1",
        &dev_token(smart_claims("system/*.read")),
    )
    .await;
    assert_eq!(decision.status(), 401);
    assert_eq!(
        body(&decision)["message"],
        "issuer `https://auth.example.org` is not accepted here"
    );
}

// --- iWlz Indicatieregister (policy/iwlz-indicatieregister.yaml) ---

const IWLZ_PATH: &str = "/iwlz/indicatieregister/v2/graphql";
const IWLZ_SCOPE: &str = "registers/wlzindicatieregister/indicaties/indicatie:read";

/// Shaped like the RFC0014 token example (iwlz-rfc0014-autorisatie §4.1.4.2).
fn iwlz_claims() -> Value {
    json!({
        "iss": "auth.nid",
        "sub": "uzovi:5000",
        "aud": "https://koppelpunt.ciz.nl/iwlz/indicatieregister/v2/graphql",
        "iat": kit::now(),
        "nbf": kit::now() - 5,
        "exp": kit::now() + 3000,
        "jti": "eaa55b46-8d97-46ab-82a3-3a5a44170c67",
        "client_id": "uzovi:5000",
        "subjects": null,
        "scopes": [IWLZ_SCOPE],
        "consent_id": "7a8ddf4d-8953-4232-9714-4d1926888a65",
        "client_metadata": null,
        "act": {"sub": "20001000001131"}
    })
}

/// A QIR-0001-ZKi query (a part of the template) for the zorgkantoor with UZOVI `uzovi`.
fn qir_body(uzovi: &str) -> String {
    json!({
        "query": "query WlzIndicatie($wlzIndicatieID: UUID!, $initieelVerantwoordelijkZorgkantoor: String!) {
            wlzIndicatie(where: {wlzindicatieID: {eq: $wlzIndicatieID},
                initieelVerantwoordelijkZorgkantoor: {eq: $initieelVerantwoordelijkZorgkantoor}}) {
              wlzindicatieID bsn grondslag { grondslagID }
            }
          }",
        "variables": {
            "wlzIndicatieID": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "initieelVerantwoordelijkZorgkantoor": uzovi
        }
    })
    .to_string()
}

/// RFC0014 [11]: without a client certificate, or with one past its dates, an iWlz
/// register answers 403 Invalid Client Certificate, whatever the token.
#[tokio::test]
async fn iwlz_wants_a_client_certificate() {
    let engine = engine().await;
    let token = dev_token(iwlz_claims());
    let decision = iwlz_post(&engine, &token, &qir_body("5000")).await;
    assert!(
        matches!(decision.outcome, Outcome::Allow(_)),
        "{decision:?}"
    );
    let mut request = request("POST", IWLZ_PATH, Some(&token));
    request
        .headers
        .insert("content-type".into(), "application/json".into());
    request.body = qir_body("5000");
    request.source.certificate = None;
    let decision = engine.decide(&request).await.unwrap();
    assert_eq!(&*decision.rule, "client-certificate", "{decision:?}");
    assert_eq!(body(&decision)["message"], "Invalid Client Certificate");
    let Outcome::Deny(deny) = &decision.outcome else {
        panic!("allowed: {decision:?}");
    };
    assert_eq!(deny.status, 403);
}

/// A GraphQL POST to the Indicatieregister.
async fn iwlz_post(engine: &Engine, token: &str, body: &str) -> Decision {
    graphql_post(engine, IWLZ_PATH, token, body).await
}

async fn graphql_post(engine: &Engine, path: &str, token: &str, body: &str) -> Decision {
    let mut request = request("POST", path, Some(token));
    request
        .headers
        .insert("content-type".into(), "application/json".into());
    request.body = body.into();
    engine.decide(&request).await.unwrap()
}

#[tokio::test]
async fn iwlz_reader_gets_the_claims_header() {
    let engine = engine().await;
    let claims = iwlz_claims();
    let decision = iwlz_post(&engine, &dev_token(claims.clone()), &qir_body("5000")).await;
    assert!(decision.is_allow(), "{decision:?}");
    assert_eq!(&*decision.rule, "zorgkantoor-reads-indication");
    let forwarded: Value = serde_json::from_str(header(&decision, "claims").unwrap()).unwrap();
    assert_eq!(
        forwarded, claims,
        "the claims header is the verified payload"
    );
    assert_eq!(header(&decision, "x-sluis-actor"), Some("20001000001131"));
    assert_eq!(header(&decision, "x-sluis-client-id"), Some("uzovi:5000"));

    // Without an actor, no actor header — and a client's own copy is removed.
    let mut own = iwlz_claims();
    own.as_object_mut().unwrap().remove("act");
    let decision = iwlz_post(&engine, &dev_token(own), &qir_body("5000")).await;
    let Outcome::Allow(allow) = &decision.outcome else {
        panic!("{decision:?}")
    };
    assert!(header(&decision, "x-sluis-actor").is_none());
    assert!(allow.remove_headers.contains(&"x-sluis-actor".to_string()));
}

#[tokio::test]
async fn iwlz_caller_codes_come_from_the_client_id_or_the_aggregated_claims() {
    let engine = engine().await;
    let decision = iwlz_post(&engine, &dev_token(iwlz_claims()), &qir_body("5000")).await;
    assert_eq!(header(&decision, "x-sluis-uzovi"), Some("5000"));
    // RFC0014 §4.1.4.1: a zorgaanbieder as itself, its AGB code in the embedded JWT, which
    // the example issuer vouches for, reads its bemiddelingspecificatie (QBR-0001-ZA).
    let bemiddeling = "/iwlz/bemiddelingsregister/v1/graphql";
    let qbr_body = json!({
        "query": "query Bemiddelingspecificatie($BemiddelingspecificatieID: UUID!, $Instelling: String!) {
            bemiddelingspecificatie(where: {bemiddelingspecificatieID: {eq: $BemiddelingspecificatieID},
                instelling: {eq: $Instelling}}) { bemiddelingspecificatieID zzpCode }
          }",
        "variables": {"BemiddelingspecificatieID": "7b2a3c1e-0d6f-4b8e-9a5c-2e4f6a8b0c1d", "Instelling": "012345123"}
    })
    .to_string();
    let mut party = iwlz_claims();
    party["aud"] = json!(format!(
        "https://bemiddelingsregister.example.nl{bemiddeling}"
    ));
    party["scopes"] = json!(["registers/wlzbemiddelingsregister/bemiddelingen/bemiddeling:read"]);
    party["sub"] = json!("20001000001131");
    party["client_id"] = json!("20001000001131");
    party.as_object_mut().unwrap().remove("act");
    party["_claim_names"] = json!({"agb": "localhost", "uzovi": "localhost"});
    party["_claim_sources"] = json!({"localhost": {"jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhZ2IiOiIwMTIzNDUxMjMiLCJ1em92aSI6bnVsbH0.Y6XJZI7Ri0gV8Xqh6HZ0kk97oLu6sixc3T2v2K2GKfU"}});
    let decision = graphql_post(&engine, bemiddeling, &dev_token(party.clone()), &qbr_body).await;
    assert!(decision.is_allow(), "{decision:?}");
    assert_eq!(header(&decision, "x-sluis-agb"), Some("012345123"));
    assert_eq!(header(&decision, "x-sluis-uzovi"), None);
    // Without the aggregated claims it names no party: `$Instelling` binds to nothing.
    party.as_object_mut().unwrap().remove("_claim_sources");
    let decision = graphql_post(&engine, bemiddeling, &dev_token(party), &qbr_body).await;
    assert_eq!(
        (decision.status(), &*decision.rule),
        (403, "graphql-template")
    );
    assert!(
        decision.reason.contains("`$Instelling` cannot be bound"),
        "{}",
        decision.reason
    );
}

#[tokio::test]
async fn iwlz_token_rules() {
    let engine = engine().await;
    let mut long = iwlz_claims();
    long["exp"] = json!(kit::now() + 7200);
    let decision = decide(&engine, "POST", IWLZ_PATH, &dev_token(long)).await;
    assert_eq!(decision.status(), 401);
    assert_eq!(
        body(&decision)["message"],
        "token lifetime 7200s exceeds the maximum of 3600s"
    );

    let mut two_audiences = iwlz_claims();
    two_audiences["aud"] = json!([
        "https://koppelpunt.ciz.nl/iwlz/indicatieregister/v2/graphql",
        "https://elsewhere.example"
    ]);
    let decision = decide(&engine, "POST", IWLZ_PATH, &dev_token(two_audiences)).await;
    assert_eq!(
        body(&decision)["message"],
        "token must have exactly one audience"
    );

    // The scope RFC0014 struck through is not allowed: 400 in RFC0014's shape ([09]).
    let mut old_scope = iwlz_claims();
    old_scope["scopes"] = json!(["registers/wlzindicatieregister/indicaties:read"]);
    let decision = decide(&engine, "POST", IWLZ_PATH, &dev_token(old_scope)).await;
    assert_eq!(decision.status(), 400);
    assert_eq!(body(&decision), json!("Scope is not allowed"));

    let decision = decide(&engine, "GET", IWLZ_PATH, &dev_token(iwlz_claims())).await;
    assert_eq!((decision.status(), &*decision.rule), (400, "graphql"));
    assert_eq!(
        body(&decision),
        json!({"ErrorCode": "bad_request", "Error": "No operation found to evaluate"})
    );
}

#[tokio::test]
async fn iwlz_queries_must_fit_the_template_and_name_the_caller() {
    let engine = engine().await;
    let token = dev_token(iwlz_claims());
    // Another zorgkantoor's code: the query fits the template's shape, not its binding.
    let decision = iwlz_post(&engine, &token, &qir_body("5501")).await;
    assert_eq!(
        (decision.status(), &*decision.rule),
        (403, "graphql-template")
    );
    assert!(
        decision
            .reason
            .contains("closest `QIR-0001-ZKi`: variable `$initieelVerantwoordelijkZorgkantoor` is not bound to the caller"),
        "{}",
        decision.reason
    );
    assert_eq!(body(&decision)["error"], "access_denied");

    let smuggled = qir_body("5000").replace("grondslag { grondslagID }", "client { wachtwoord }");
    let decision = iwlz_post(&engine, &token, &smuggled).await;
    assert!(
        decision
            .reason
            .ends_with("extra field `wlzIndicatie.client.wachtwoord`"),
        "{}",
        decision.reason
    );

    let decision = iwlz_post(&engine, &token, r#"{"query": "query { wlzIndicatie("}"#).await;
    assert_eq!(decision.status(), 400);
    assert_eq!(body(&decision)["ErrorCode"], "bad_request");
}

// --- SMART on FHIR read (policy/smart-fhir-read.yaml) ---

fn smart_claims(scope: &str) -> Value {
    json!({
        "iss": "https://auth.example.org",
        "aud": "https://fhir.example.org",
        "sub": "app-1",
        "client_id": "app-1",
        "scope": format!("openid {scope}"),
        "iat": kit::now(),
        "exp": kit::now() + 300,
    })
}

#[tokio::test]
async fn smart_scopes_grant_reads_per_resource_type() {
    let engine = engine().await;
    let cases: [(&str, &str, &str, u16); 13] = [
        ("system/Observation.rs", "GET", "/fhir/Observation/1", 200),
        (
            "system/Observation.rs",
            "GET",
            "/fhir/Observation?code=x",
            200,
        ),
        ("patient/Observation.read", "GET", "/fhir/Observation", 200),
        ("user/*.read", "GET", "/fhir/Patient/7", 200),
        ("user/*.cruds", "HEAD", "/fhir/Patient/7", 200),
        ("system/Observation.rs", "GET", "/fhir/Patient/1", 403),
        ("system/Observation.c", "GET", "/fhir/Observation/1", 403),
        // `r` grants vread and history too (SMART v2).
        (
            "system/Observation.rs",
            "GET",
            "/fhir/Observation/1/_history/2",
            200,
        ),
        (
            "system/Observation.r",
            "GET",
            "/fhir/Observation?code=x",
            403,
        ),
        (
            "system/Organization.rs?identifier=ura|1",
            "GET",
            "/fhir/Organization?identifier=ura|1",
            200,
        ),
        (
            "system/Organization.rs?identifier=ura|1",
            "GET",
            "/fhir/Organization",
            403,
        ),
        // A path segment cannot smuggle a pattern or a scope into the comparison.
        ("system/Observation.rs", "GET", "/fhir/.rs/1", 403),
        ("system/Observation.rs", "POST", "/fhir/Observation", 405),
    ];
    for (scope, method, target, status) in cases {
        let decision = decide(&engine, method, target, &dev_token(smart_claims(scope))).await;
        assert_eq!(
            decision.status(),
            status,
            "{scope} {method} {target}: {decision:?}"
        );
    }
}
