//! The negative corpus (issue #15): tokens Sluis must refuse, one case per row of
//! `tests/fixtures/negative-corpus/cases.json`, each sent through the gRPC door (what
//! Envoy uses) and the forward-auth door, which must give the same answer.
//!
//! A row says how to build the token from a valid one (claims to `set` or `remove`, a
//! whole `header`, raw `header_text`/`payload_text` for what a JSON object cannot say,
//! such as a member named twice, a `token` pattern over the signed parts `{h}.{p}.{s}`
//! for serialization defects, or a whole `authorization` value) and what the client must
//! see: `status`, the challenge's `error=` and a substring of its description. Times
//! are written `"$now+600"`; the issuer's leeway is the default 30 s.

use sluis_test_kit as kit;

use kit::corpus::{authorization, cases, jwks_with_pinned_key};
use kit::*;
use serde_json::{Value, json};

#[tokio::test]
async fn every_corpus_token_is_refused_the_same_at_both_doors() {
    let keys = tempfile::tempdir().unwrap();
    let jwks = jwks_with_pinned_key(keys.path());
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0").replace(
        &fixture("keys/jwks.json").display().to_string(),
        &jwks.display().to_string(),
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let value = authorization(case);
        let expected_status = case["status"].as_u64().unwrap() as u16;
        let error = case["error"].as_str().unwrap();
        let message = case["message"].as_str().unwrap();
        let max_challenge = case["max_challenge"].as_u64().unwrap_or(400) as usize;

        let answer = server
            .check(Req::get("/api/things").header("authorization", &value))
            .await;
        let challenge = answer.header("www-authenticate").unwrap_or("").to_owned();
        // An allow has no body: read it leniently so every wrong row is listed.
        let body: Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let body_message = body["message"].as_str().unwrap_or("").to_owned();
        let right = answer.status == expected_status
            && challenge.contains(&format!("error=\"{error}\""))
            && challenge.contains(message)
            && body_message.contains(message)
            && challenge.len() <= max_challenge
            && challenge.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !right {
            failures.push(format!(
                "{name}: grpc door gave {} `{challenge}` / `{body_message}`",
                answer.status
            ));
            continue;
        }

        let response = client
            .get(format!("http://{}/decisions/api/things", server.http))
            .header("authorization", &value)
            .send()
            .await
            .unwrap();
        let http_challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if response.status().as_u16() != expected_status || http_challenge != challenge {
            failures.push(format!(
                "{name}: forward-auth door gave {} `{http_challenge}`",
                response.status()
            ));
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_corpus_builder_makes_a_valid_token_from_an_empty_row() {
    // Guards the corpus itself: a row that changes nothing must be allowed, so every
    // refusal above is caused by what its row changes.
    let keys = tempfile::tempdir().unwrap();
    let jwks = jwks_with_pinned_key(keys.path());
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0").replace(
        &fixture("keys/jwks.json").display().to_string(),
        &jwks.display().to_string(),
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    for row in [
        json!({}),
        json!({"header": {"alg": "RS256", "kid": "rsa-pinned"}}),
        json!({"header": {"alg": "ES256", "kid": "ec-1"}, "key": "ec"}),
        json!({"set": {"aud": ["https://other.test", AUDIENCE], "exp": "$now-20", "iat": "$now+20", "nbf": "$now+20"}}),
        json!({"set": {"exp": 4102444800.5}}),
    ] {
        let answer = server
            .check(Req::get("/api/things").header("authorization", &authorization(&row)))
            .await;
        assert_eq!(answer.status, 200, "{row}: {answer:?}");
    }
    server.stop().await;
}
