//! The negative corpus's token builder (issue #15), shared by the tests that send its rows
//! through each door: see `tests/it/negative_corpus.rs` for what a row says.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::{claims, fixture, now, token};

/// Replaces every `"$now±N"` string in JSON text with the number it stands for.
pub fn with_times(text: &str) -> String {
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
pub fn authorization(case: &Value) -> String {
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
pub fn jwks_with_pinned_key(dir: &std::path::Path) -> std::path::PathBuf {
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

pub fn cases() -> Vec<Value> {
    let corpus: Value =
        serde_json::from_slice(&std::fs::read(fixture("negative-corpus/cases.json")).unwrap())
            .unwrap();
    corpus["cases"].as_array().unwrap().clone()
}
