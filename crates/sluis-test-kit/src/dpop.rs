//! DPoP (RFC 9449) proofs signed with the EC fixture key (`tests/fixtures/keys/ec.pem`).

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::{fixture, now};

/// The proof key's public JWK (the EC fixture key, `kid` and `use` left out).
pub fn proof_jwk() -> Value {
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("keys/jwks.json")).unwrap()).unwrap();
    let mut jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "ec-1")
        .unwrap()
        .clone();
    let object = jwk.as_object_mut().unwrap();
    object.remove("kid");
    object.remove("use");
    jwk
}

/// The proof key's RFC 7638 thumbprint: what a bound token's `cnf.jkt` holds.
pub fn jkt() -> String {
    sluis_core::authn::dpop::jwk_thumbprint(&proof_jwk()).unwrap()
}

/// A proof for `method url`, bound to `token`, issued `age` seconds ago.
pub fn proof(method: &str, url: &str, token: &str, age: i64, jti: &str) -> String {
    proof_with_nonce(method, url, token, age, jti, None)
}

/// [`proof`] carrying a server nonce (RFC 9449 §8) when `nonce` is given.
pub fn proof_with_nonce(
    method: &str,
    url: &str,
    token: &str,
    age: i64,
    jti: &str,
    nonce: Option<&str>,
) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(serde_json::from_value::<Jwk>(proof_jwk()).unwrap());
    let mut claims = json!({
        "jti": jti,
        "htm": method,
        "htu": url,
        "iat": now() - age,
        "ath": sluis_core::authn::dpop::access_token_hash(token),
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("keys/ec.pem")).unwrap()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}
