//! Project Wycheproof JWK vectors (C2SP/wycheproof, `testvectors_v1/json_web_key_test.json`,
//! Apache-2.0; copied into `tests/fixtures/wycheproof/`, see its SOURCE.md) through
//! Sluis's key-set path: each group's key set is read as a JWKS document by
//! `authn::jwks::KeySet::parse` (the public set when the group has one, else the private
//! one), the JWS is split and its header checked by `authn::jose`, and a key is chosen by
//! `kid` and `alg` as `Issuer::verify` chooses it, then `jsonwebtoken::crypto::verify`.
//!
//! Every vector that must fail fails. Every valid one verifies, except those that need
//! what Sluis refuses by design, which are counted and named: a symmetric (`oct`) key in
//! a JWKS (a shared secret is configured as `shared_secret`, never published in a key set,
//! where anyone who can read it could mint tokens).
//!
//! What the key-set parser refuses for these vectors, and why: RSA keys under 2048 bits,
//! with an exponent below 3 or even, or with the ROCA fingerprint (tcIds 7, 8, 9); an EC
//! key whose `alg` does not fit its curve (tcId 23: `ES256` on P-384); an `alg` that is
//! not a signing algorithm (19, 20); `use: enc` (6, 21); symmetric keys (1-4, 10-18, 25,
//! 26). The printed table gives each vector's outcome and the keys skipped.

use std::path::Path;

use jsonwebtoken::Algorithm;
use serde_json::Value;
use sluis_core::authn::jose;
use sluis_core::authn::jwks::KeySet;

fn vectors() -> Value {
    // A copy of the upstream file, so the suite runs on a fresh clone: see
    // tests/fixtures/wycheproof/SOURCE.md.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wycheproof/json_web_key_test.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// What Sluis decides about `jws` with this key set: `Ok` only for a verified signature.
fn verify(jws: &str, keys: &KeySet) -> Result<(), String> {
    let (header, _payload, signing_input, signature) =
        jose::split(jws).map_err(|e| e.to_string())?;
    let written = jose::check_header(&header).map_err(|e| e.to_string())?;
    let alg: Algorithm = written
        .parse()
        .map_err(|_| format!("algorithm `{}` is not accepted", jose::echo(written)))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let mut candidates = keys.candidates(kid, alg).peekable();
    if candidates.peek().is_none() {
        return Err(format!("no key fits `{kid:?}` and {alg:?}"));
    }
    if candidates.any(|key| {
        jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key.key, alg)
            .unwrap_or(false)
    }) {
        Ok(())
    } else {
        Err("no key verifies".into())
    }
}

/// The counts this copy of the vectors gives; a new copy must be looked at, not absorbed.
const VALID_VERIFIED: usize = 1;
const INVALID_REFUSED: usize = 21;
/// Valid vectors signed with an HMAC key published in the set: refused by design.
const SYMMETRIC_IN_JWKS: [&str; 4] = ["2", "13", "14", "15"];

#[test]
fn wycheproof_jwk_vectors() {
    let vectors = vectors();
    let (mut valid_ok, mut invalid_refused) = (0, 0);
    let (mut symmetric, mut wrong, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for group in vectors["testGroups"].as_array().unwrap() {
        let set = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        // Keys Sluis cannot use are skipped (and logged) at load, never fatal for the set.
        let (keys, skipped) = KeySet::parse(set.to_string().as_bytes()).unwrap();
        let has_oct = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kty"] == "oct");
        for test in group["tests"].as_array().unwrap() {
            let id = test["tcId"].to_string();
            let outcome = verify(test["jws"].as_str().unwrap(), &keys);
            reasons.push(format!(
                "{id} {} ({}): {outcome:?}, skipped keys {skipped:?}",
                test["comment"].as_str().unwrap(),
                group["comment"].as_str().unwrap()
            ));
            match (test["result"].as_str().unwrap(), outcome) {
                ("valid", Ok(())) => valid_ok += 1,
                ("invalid", Err(_)) => invalid_refused += 1,
                ("valid", Err(_)) if has_oct => symmetric.push(id),
                (result, outcome) => wrong.push(format!(
                    "{id} ({}): expected {result}, got {outcome:?}",
                    test["comment"]
                )),
            }
        }
    }
    println!("{}", reasons.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    println!(
        "wycheproof jwk: {valid_ok} valid verified, {invalid_refused} invalid refused, \
         refused by design (symmetric key in a JWKS) {symmetric:?}"
    );
    assert_eq!(
        valid_ok + invalid_refused + symmetric.len(),
        vectors["numberOfTests"].as_u64().unwrap() as usize
    );
    assert_eq!(symmetric, SYMMETRIC_IN_JWKS);
    assert_eq!(
        (valid_ok, invalid_refused),
        (VALID_VERIFIED, INVALID_REFUSED)
    );
}
