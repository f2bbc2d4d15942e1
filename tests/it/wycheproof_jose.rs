//! Project Wycheproof JWS vectors (C2SP/wycheproof, `testvectors_v1/json_web_signature_test.json`,
//! Apache-2.0; copied into `tests/fixtures/wycheproof/`, see its SOURCE.md) through
//! Sluis's signature layer: the strict split and header check of `authn::jose`, the key
//! set parsing of `authn::jwks` and the key choice by `kid` and `alg` that
//! `Issuer::verify` makes, then `jsonwebtoken::crypto::verify`.
//!
//! Every vector that must fail must fail. Every valid one must verify, except those that
//! need what Sluis deliberately does not support, which must be refused and are counted:
//! ES512 (P-521, not offered by the JWT library) and HMAC keys published in a JWKS (a
//! shared secret is configured as `shared_secret`, never read from a key set; those
//! vectors are run with the key as the configured secret instead).

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};
use sluis_core::authn::jose;
use sluis_core::authn::jwks::KeySet;

fn vectors() -> Value {
    // A copy of the upstream file, so the suite runs on a fresh clone: see
    // tests/fixtures/wycheproof/SOURCE.md.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wycheproof/json_web_signature_test.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// What Sluis decides about `jws` with this key: `Ok` only for a verified signature.
fn verify(jws: &str, keys: &KeySet, secret: Option<&DecodingKey>) -> Result<(), String> {
    let (header, _payload, signing_input, signature) =
        jose::split(jws).map_err(|e| e.to_string())?;
    let written = jose::check_header(&header).map_err(|e| e.to_string())?;
    let alg: Algorithm = written
        .parse()
        .map_err(|_| format!("algorithm `{}` is not accepted", jose::echo(written)))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let verified = |key: &DecodingKey| {
        jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), key, alg).unwrap_or(false)
    };
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return match secret {
            Some(secret) if verified(secret) => Ok(()),
            Some(_) => Err("signature is invalid".into()),
            None => Err("no shared secret".into()),
        };
    }
    if keys.candidates(kid, alg).any(|key| verified(&key.key)) {
        Ok(())
    } else {
        Err("no key verifies".into())
    }
}

/// The counts this copy of the vectors gives; a new copy must be looked at, not absorbed.
const VALID_VERIFIED: usize = 40;
const INVALID_REFUSED: usize = 353;

/// The `alg` a JWS's header names, read loosely: only to explain a refusal.
fn header_alg(jws: &str) -> Option<String> {
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.split('.').next()?)
        .ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header["alg"].as_str().map(str::to_owned)
}

#[test]
fn wycheproof_jws_vectors() {
    let vectors = vectors();
    let (mut valid_ok, mut invalid_refused, mut unsupported) = (0, 0, Vec::new());
    let (mut pinned, mut mislabelled) = (Vec::new(), Vec::new());
    let mut wrong = Vec::new();
    for group in vectors["testGroups"].as_array().unwrap() {
        let jwk = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let (keys, _) = KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        let secret = (jwk["kty"] == "oct").then(|| {
            let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk["k"].as_str().unwrap())
                .unwrap();
            DecodingKey::from_secret(&k)
        });
        for test in group["tests"].as_array().unwrap() {
            let id = &test["tcId"];
            let jws = test["jws"].as_str().unwrap();
            let outcome = verify(jws, &keys, secret.as_ref());
            match (test["result"].as_str().unwrap(), outcome) {
                ("valid", Ok(())) => valid_ok += 1,
                ("invalid", Err(_)) => invalid_refused += 1,
                ("valid", Err(why)) if jwk["crv"] == "P-521" => {
                    unsupported.push(format!("{id}: ES512 ({why})"))
                }
                // The vector labels of these four contradict RFC 7515 §2 and §7.1 as the
                // text stands in this copy: 367 and 370 ("invalidBase64Padding...") are a
                // well-formed JWS without padding, correctly signed; 372 and 373
                // ("InvalidCharacterInserted...") carry a `?` inside a base64url segment.
                // Sluis follows the RFC: it verifies the first two and refuses the others.
                (_, outcome) if [367, 370].contains(&id.as_u64().unwrap()) && outcome.is_ok() => {
                    mislabelled.push(id.to_string())
                }
                (_, outcome) if [372, 373].contains(&id.as_u64().unwrap()) && outcome.is_err() => {
                    mislabelled.push(id.to_string())
                }
                // Deliberate: a key's `alg` pins it (RFC 7517 §4.4), and these RFC 7520
                // figures sign PS384 with a key whose JWK says PS256.
                ("valid", Err(_)) if jwk["alg"].as_str() != header_alg(jws).as_deref() => {
                    pinned.push(id.to_string())
                }
                (result, outcome) => wrong.push(format!(
                    "{id} ({}): expected {result}, got {outcome:?}",
                    test["comment"]
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    println!(
        "wycheproof jws: {valid_ok} valid verified, {invalid_refused} invalid refused, \
         unsupported (ES512) {unsupported:?}, refused by alg pinning {pinned:?}, \
         judged by the RFC against the label {mislabelled:?}"
    );
    assert_eq!(
        valid_ok + invalid_refused + unsupported.len() + pinned.len() + mislabelled.len(),
        vectors["numberOfTests"].as_u64().unwrap() as usize
    );
    assert_eq!(pinned, ["346", "350"]);
    assert_eq!(mislabelled, ["367", "370", "372", "373"]);
    assert_eq!(
        (valid_ok, invalid_refused),
        (VALID_VERIFIED, INVALID_REFUSED)
    );
}
