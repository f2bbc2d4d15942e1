//! The grant: what a request decision hands on to the judging of its answer.
//!
//! Envoy's ext_proc filter asks about the upstream's answer in a second gRPC stream that
//! carries no token. Deciding the request again there would replay a DPoP proof and
//! double the cost, so the request decision seals what the response rules need (policy,
//! verified claims, the request as allowed) and Envoy carries it from the ext_authz
//! filter to the ext_proc filter as dynamic metadata. It is sealed (HMAC-SHA256) because
//! anyone who reaches the gRPC port could otherwise send forged claims with a body of
//! their choice and learn from the filtering what flows and data say, with no token at
//! all. It is not encrypted: a gateway access log that prints ext_authz dynamic metadata
//! would print the claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The name a gateway carries the sealed grant under, from the request decision's
/// metadata to the judging of its answer (Envoy: ext_authz dynamic metadata, forwarded to
/// ext_proc).
pub const GRANT_KEY: &str = "sluis_grant";

/// How long a grant stays valid after the request decision (seconds).
pub const LIFETIME: i64 = 300;

/// The largest sealed grant accepted or made (bytes).
pub const MAX_SEALED: usize = 16 * 1024;

/// What the response rules need of the request decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseGrant {
    pub policy: String,
    /// The configured issuer that verified the token (`None`: an anonymous policy).
    pub issuer: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub method: String,
    pub path: String,
    pub query: String,
    pub host: String,
    pub context: Vec<(String, String)>,
    pub shadow: bool,
    pub issued_at: i64,
}

/// The HMAC key grants are sealed with; the same in every replica that judges answers.
pub struct GrantKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

impl GrantKey {
    /// A key from configured secret bytes.
    pub fn from_secret(secret: &[u8]) -> GrantKey {
        GrantKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            secret,
        ))
    }

    /// A random key: grants are then judged only by this process.
    pub fn random() -> GrantKey {
        GrantKey::from_secret(&crate::secret::random_key())
    }
}

/// Why a sealed grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the grant is malformed")]
    Malformed,
    #[error("the grant's seal does not verify")]
    BadMac,
    #[error("the grant has expired")]
    Expired,
    #[error("the grant is larger than {MAX_SEALED} bytes")]
    TooLarge,
}

impl ResponseGrant {
    /// `base64url(json) "." base64url(hmac)`; `TooLarge` beyond [`MAX_SEALED`].
    pub fn seal(&self, key: &GrantKey) -> Result<String, GrantError> {
        let json = serde_json::to_vec(self).map_err(|_| GrantError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = aws_lc_rs::hmac::sign(&key.0, payload.as_bytes());
        let sealed = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        if sealed.len() > MAX_SEALED {
            return Err(GrantError::TooLarge);
        }
        Ok(sealed)
    }

    /// The grant `sealed` carries, if `key` sealed it less than [`LIFETIME`] before `now`.
    pub fn open(sealed: &str, key: &GrantKey, now: i64) -> Result<ResponseGrant, GrantError> {
        if sealed.len() > MAX_SEALED {
            return Err(GrantError::TooLarge);
        }
        let (payload, tag) = sealed.split_once('.').ok_or(GrantError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| GrantError::Malformed)?;
        aws_lc_rs::hmac::verify(&key.0, payload.as_bytes(), &tag)
            .map_err(|_| GrantError::BadMac)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| GrantError::Malformed)?;
        let grant: ResponseGrant =
            serde_json::from_slice(&json).map_err(|_| GrantError::Malformed)?;
        // A grant from the future (clock skew between replicas) is allowed a little.
        if now.saturating_sub(grant.issued_at) > LIFETIME || grant.issued_at > now + 30 {
            return Err(GrantError::Expired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant() -> ResponseGrant {
        ResponseGrant {
            policy: "mcsd".into(),
            issuer: Some("nuts".into()),
            claims: serde_json::json!({"sub": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            method: "GET".into(),
            path: "/fhir/Organization".into(),
            query: "name=x".into(),
            host: "fhir".into(),
            context: vec![],
            shadow: false,
            issued_at: 1000,
        }
    }

    #[test]
    fn a_sealed_grant_opens_with_its_key_within_its_lifetime() {
        let key = GrantKey::random();
        let sealed = grant().seal(&key).unwrap();
        assert_eq!(
            ResponseGrant::open(&sealed, &key, 1000 + LIFETIME),
            Ok(grant())
        );
        assert_eq!(
            ResponseGrant::open(&sealed, &key, 1001 + LIFETIME),
            Err(GrantError::Expired)
        );
        assert_eq!(
            ResponseGrant::open(&sealed, &GrantKey::random(), 1000),
            Err(GrantError::BadMac)
        );
    }

    #[test]
    fn a_changed_payload_does_not_verify() {
        let key = GrantKey::from_secret(b"k");
        let sealed = grant().seal(&key).unwrap();
        let mut forged = grant();
        forged.claims.insert("sub".into(), "someone-else".into());
        let forged_payload = forged.seal(&GrantKey::from_secret(b"other")).unwrap();
        let (payload, _) = forged_payload.split_once('.').unwrap();
        let (_, tag) = sealed.split_once('.').unwrap();
        assert_eq!(
            ResponseGrant::open(&format!("{payload}.{tag}"), &key, 1000),
            Err(GrantError::BadMac)
        );
    }

    #[test]
    fn an_oversized_grant_is_neither_made_nor_opened() {
        let mut big = grant();
        big.claims
            .insert("pad".into(), "x".repeat(MAX_SEALED).into());
        assert_eq!(big.seal(&GrantKey::random()), Err(GrantError::TooLarge));
        assert_eq!(
            ResponseGrant::open(&"a".repeat(MAX_SEALED + 1), &GrantKey::random(), 0),
            Err(GrantError::TooLarge)
        );
    }

    proptest! {
        #[test]
        fn opening_anything_never_panics_and_never_verifies(text in ".{0,300}") {
            prop_assert!(ResponseGrant::open(&text, &GrantKey::random(), 1000).is_err());
        }

        #[test]
        fn flipping_any_byte_breaks_the_seal(at in 0usize..400, bit in 0u8..8) {
            let key = GrantKey::random();
            let sealed = grant().seal(&key).unwrap();
            let mut bytes = sealed.into_bytes();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            if let Ok(text) = String::from_utf8(bytes) {
                prop_assert!(ResponseGrant::open(&text, &key, 1000).is_err());
            }
        }
    }
}
