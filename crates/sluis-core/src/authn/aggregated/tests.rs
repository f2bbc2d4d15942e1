use std::path::PathBuf;

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::authn::settings::Secret;

/// The embedded JWTs of the three RFC0014 example tokens (seeds/iwlz-rfc0014-autorisatie.txt
/// §4.1.4.1, §4.1.4.2 and §4.2), as published. Their HS256 secret is not published.
const SEED_PARTY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhZ2IiOiIwMTIzNDUxMjMiLCJ1em92aSI6bnVsbH0.Y6XJZI7Ri0gV8Xqh6HZ0kk97oLu6sixc3T2v2K2GKfU";
const SEED_ACTOR: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhZ2IiOm51bGwsInV6b3ZpIjoiNTAwMCJ9.9mRf50AuhkVfGwIcqYA4I_8fChcXg_N9h-VHhMo2MlE";
const SEED_PEP: &str = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJhZ2IiOiBudWxsLCAidXpvdmkiOiAiNTUyOSJ9.4YmLNTMhftIz7jL3_BOuJG0uBVHA2MobjsbMXJ9hctw";

const SECRET: &[u8] = b"iwlz-claims-test-secret-0123456789";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn config(yaml: &str) -> AggregatedClaimsConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn vouched() -> ClaimSources {
    ClaimSources::new(&config("vouched_by_issuer: true"), &fixtures()).unwrap()
}

/// Trusting embedded JWTs signed with [`SECRET`], read from a file.
fn with_secret() -> ClaimSources {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let mut config = config("algorithms: [HS256]");
    config.shared_secret = Some(Secret {
        env: None,
        file: Some(dir.path().join("secret")),
    });
    ClaimSources::new(&config, dir.path()).unwrap()
}

/// A token's claims as RFC0014 writes them: both identifiers from one source.
fn token_claims(jwt: &str) -> Map<String, Json> {
    json!({
        "iss": "auth.nid",
        "_claim_names": {"agb": "localhost", "uzovi": "localhost"},
        "_claim_sources": {"localhost": {"jwt": jwt}},
    })
    .as_object()
    .unwrap()
    .clone()
}

fn hs256(claims: &Json, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// A JWT whose payload is replaced after signing.
fn tampered(jwt: &str, payload: &Json) -> String {
    let parts: Vec<&str> = jwt.split('.').collect();
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
    format!("{}.{body}.{}", parts[0], parts[2])
}

#[test]
fn the_rfc0014_examples_decode_as_the_seed_says_when_vouched_for() {
    let sources = vouched();
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(SEED_PARTY), "iwlz")),
        json!({"agb": "012345123"}),
        "a null claim is left out"
    );
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(SEED_ACTOR), "iwlz")),
        json!({"uzovi": "5000"})
    );
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(SEED_PEP), "iwlz")),
        json!({"uzovi": "5529"})
    );
}

#[test]
fn a_shared_secret_verifies_embedded_jwts() {
    let sources = with_secret();
    // The seed's payloads, signed with our secret: accepted.
    let party = hs256(&json!({"agb": "012345123", "uzovi": null}), SECRET);
    let actor = hs256(&json!({"agb": null, "uzovi": "5000"}), SECRET);
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(&party), "iwlz")),
        json!({"agb": "012345123"})
    );
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(&actor), "iwlz")),
        json!({"uzovi": "5000"})
    );
    // The published examples are signed with another secret: not used.
    for seed in [SEED_PARTY, SEED_ACTOR, SEED_PEP] {
        assert!(sources.resolve(&token_claims(seed), "iwlz").is_empty());
    }
}

#[test]
fn a_tampered_embedded_jwt_is_rejected() {
    let sources = with_secret();
    let signed = hs256(&json!({"uzovi": "5000"}), SECRET);
    let forged = tampered(&signed, &json!({"uzovi": "9999"}));
    assert!(sources.resolve(&token_claims(&forged), "iwlz").is_empty());
    let error = sources.source_claims(&json!({"jwt": forged})).unwrap_err();
    assert_eq!(error, "embedded JWT rejected: signature is invalid");
}

#[test]
fn alg_none_is_rejected_however_the_issuer_is_trusted() {
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"uzovi":"5000"}"#);
    for unsigned in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        for sources in [vouched(), with_secret()] {
            assert!(
                sources.resolve(&token_claims(&unsigned), "iwlz").is_empty(),
                "{unsigned} with {sources:?}"
            );
        }
    }
}

#[test]
fn algorithms_outside_the_list_are_rejected() {
    let sources = with_secret();
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({"uzovi": "5000"}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert_eq!(
        sources.source_claims(&json!({"jwt": hs512})).unwrap_err(),
        "embedded JWT algorithm `HS512` is not accepted"
    );
}

#[test]
fn a_public_key_verifies_embedded_jwts() {
    let sources = ClaimSources::new(&config("public_key: keys/rsa.pub.pem"), &fixtures()).unwrap();
    let pem = std::fs::read(fixtures().join("keys/rsa.pem")).unwrap();
    let signed = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"agb": "012345678"}),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(&signed), "iwlz")),
        json!({"agb": "012345678"})
    );
    let other = std::fs::read(fixtures().join("keys/rsa-other.pem")).unwrap();
    let foreign = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"agb": "012345678"}),
        &EncodingKey::from_rsa_pem(&other).unwrap(),
    )
    .unwrap();
    assert!(sources.resolve(&token_claims(&foreign), "iwlz").is_empty());
    // A JWKS file works the same way.
    let sources = ClaimSources::new(&config("jwks_file: keys/jwks.json"), &fixtures()).unwrap();
    assert_eq!(
        Json::Object(sources.resolve(&token_claims(&signed), "iwlz")),
        json!({"agb": "012345678"})
    );
}

#[test]
fn an_expired_embedded_jwt_is_rejected_even_when_vouched_for() {
    let past = super::super::now_secs() - 3600;
    let expired = hs256(&json!({"uzovi": "5000", "exp": past}), SECRET);
    assert!(
        vouched()
            .resolve(&token_claims(&expired), "iwlz")
            .is_empty()
    );
    assert!(
        with_secret()
            .resolve(&token_claims(&expired), "iwlz")
            .is_empty()
    );
}

#[test]
fn only_claims_named_for_a_source_are_taken_from_it() {
    let signed = hs256(&json!({"uzovi": "5000", "agb": "012345678"}), SECRET);
    let mut claims = token_claims(&signed);
    claims.insert("_claim_names".into(), json!({"uzovi": "localhost"}));
    assert_eq!(
        Json::Object(with_secret().resolve(&claims, "iwlz")),
        json!({"uzovi": "5000"})
    );
}

#[test]
fn unusable_sources_give_nothing() {
    let sources = vouched();
    let cases = [
        // Distributed claims are not fetched.
        json!({"_claim_names": {"uzovi": "src"}, "_claim_sources": {"src": {"endpoint": "https://claims.example", "access_token": "x"}}}),
        // The named source is missing, or not an object, or names no string.
        json!({"_claim_names": {"uzovi": "other"}, "_claim_sources": {"src": {"jwt": SEED_ACTOR}}}),
        json!({"_claim_names": {"uzovi": "src"}, "_claim_sources": {"src": "jwt"}}),
        json!({"_claim_names": {"uzovi": 7}, "_claim_sources": {"src": {"jwt": SEED_ACTOR}}}),
        json!({"_claim_names": {"uzovi": "src"}, "_claim_sources": {"src": {"jwt": 12}}}),
        json!({"_claim_names": {"uzovi": "src"}, "_claim_sources": {"src": {"jwt": "not.a.jwt"}}}),
        json!({"_claim_names": "uzovi", "_claim_sources": {}}),
        json!({}),
    ];
    for case in cases {
        assert!(
            sources
                .resolve(case.as_object().unwrap(), "iwlz")
                .is_empty(),
            "{case}"
        );
    }
}

#[test]
fn too_many_sources_give_nothing() {
    let names: Map<String, Json> = (0..=MAX_SOURCES)
        .map(|i| (format!("c{i}"), json!(format!("s{i}"))))
        .collect();
    let sources: Map<String, Json> = (0..=MAX_SOURCES)
        .map(|i| (format!("s{i}"), json!({"jwt": SEED_ACTOR})))
        .collect();
    let claims = json!({"_claim_names": names, "_claim_sources": sources});
    assert!(
        vouched()
            .resolve(claims.as_object().unwrap(), "iwlz")
            .is_empty()
    );
}

#[test]
fn the_configuration_must_say_exactly_one_way_to_trust() {
    for (yaml, error) in [
        ("{}", "needs exactly one of"),
        ("{vouched_by_issuer: false}", "needs exactly one of"),
        (
            "{vouched_by_issuer: true, public_key: k.pem}",
            "needs exactly one of",
        ),
        (
            "{public_key: k.pem, algorithms: [HS256]}",
            "`HS256` needs a `shared_secret`",
        ),
        (
            "{shared_secret: {env: X}, algorithms: [RS256]}",
            "`RS256` needs a public key",
        ),
        (
            "{vouched_by_issuer: true, algorithms: [none]}",
            "`none` is never accepted",
        ),
    ] {
        let message = config(yaml).check().unwrap_err();
        assert!(message.contains(error), "{yaml}: {message}");
    }
    assert!(config("{vouched_by_issuer: true}").check().is_ok());
    assert!(
        !config("{public_key: k.pem}").vouched_by_issuer,
        "off by default"
    );
}
