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
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

/// Replaces every `"$now±N"` string in JSON text with the number it stands for.
fn with_times(text: &str) -> String {
    let now = now();
    let pattern = regex::Regex::new(r#""\$now([+-]\d+)?""#).unwrap();
    pattern
        .replace_all(text, |c: &regex::Captures| {
            let offset: i64 = c.get(1).map(|m| m.as_str().parse().unwrap()).unwrap_or(0);
            (now + offset).to_string()
        })
        .into_owned()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn encoding_key(name: &str, alg: Algorithm) -> EncodingKey {
    if name == "rsa-pub-as-hmac" {
        // The classic confusion: the published RSA public key used as an HMAC secret.
        return EncodingKey::from_secret(&std::fs::read(fixture("keys/rsa.pub.pem")).unwrap());
    }
    let pem = std::fs::read(fixture(&format!("keys/{name}.pem"))).unwrap();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    }
}

/// The token (or whole `Authorization` value) a row describes.
fn authorization(case: &Value) -> String {
    let header_text = match (&case["header_text"], &case["header"]) {
        (Value::String(text), _) => text.clone(),
        (_, Value::Null) => json!({"alg": "RS256", "kid": "rsa-1"}).to_string(),
        (_, header) => header.to_string(),
    };
    let payload_text = match &case["payload_text"] {
        Value::String(text) => with_times(text),
        _ => {
            let mut claims = claims();
            if let Some(set) = case["set"].as_object() {
                for (name, value) in set {
                    claims[name] = value.clone();
                }
            }
            for name in case["remove"].as_array().into_iter().flatten() {
                claims
                    .as_object_mut()
                    .unwrap()
                    .remove(name.as_str().unwrap());
            }
            with_times(&claims.to_string())
        }
    };
    let h = b64(header_text.as_bytes());
    let p = case["payload_b64"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| b64(payload_text.as_bytes()));
    let written_alg = serde_json::from_str::<Value>(&header_text)
        .ok()
        .and_then(|h| h["alg"].as_str().and_then(|a| a.parse::<Algorithm>().ok()));
    let sign_alg = case["sign_alg"]
        .as_str()
        .map(|a| a.parse::<Algorithm>().unwrap())
        .or(written_alg)
        .unwrap_or(Algorithm::RS256);
    let key = case["key"].as_str().unwrap_or("rsa");
    let s = match case["signature"].as_str() {
        Some(signature) => signature.to_owned(),
        None => jsonwebtoken::crypto::sign(
            format!("{h}.{p}").as_bytes(),
            &encoding_key(key, sign_alg),
            sign_alg,
        )
        .unwrap(),
    };
    let s_std = s.replace('-', "+").replace('_', "/") + "+/";
    let compact = case["token"]
        .as_str()
        .unwrap_or("{h}.{p}.{s}")
        .replace("{h}", &h)
        .replace("{p}", &p)
        .replace("{s_std}", &s_std)
        .replace("{s}", &s);
    match case["authorization"].as_str() {
        Some(value) => value.replace("{token}", &token(&claims())),
        None => format!("Bearer {compact}"),
    }
}

/// The fixture JWKS plus `rsa-pinned`: the RSA key pinned to RS256 by its `alg`.
fn jwks_with_pinned_key(dir: &std::path::Path) -> std::path::PathBuf {
    let mut jwks: Value =
        serde_json::from_slice(&std::fs::read(fixture("keys/jwks.json")).unwrap()).unwrap();
    let keys = jwks["keys"].as_array_mut().unwrap();
    let mut pinned = keys.iter().find(|k| k["kid"] == "rsa-1").unwrap().clone();
    pinned["kid"] = json!("rsa-pinned");
    pinned["alg"] = json!("RS256");
    keys.push(pinned);
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    path
}

fn cases() -> Vec<Value> {
    let corpus: Value =
        serde_json::from_slice(&std::fs::read(fixture("negative-corpus/cases.json")).unwrap())
            .unwrap();
    corpus["cases"].as_array().unwrap().clone()
}

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
