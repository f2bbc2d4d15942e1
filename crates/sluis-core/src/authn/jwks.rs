//! JSON Web Key Sets: parsing a document into verification keys, and fetching it from a
//! file or an https URL.
//!
//! A JWKS document from the outside is untrusted input: a key that does not parse is
//! skipped with a warning instead of failing the whole set, and a document that is not a
//! JWKS at all is an error that leaves the previously loaded keys in place.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    /// The algorithm the key is pinned to by its `alg`, when it has one.
    pub alg: Option<Algorithm>,
    pub family: KeyFamily,
    pub key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Ed,
    Hmac,
}

impl KeyFamily {
    /// For messages: "key `k` is an EC key, not one for RS256".
    pub fn described(self) -> &'static str {
        match self {
            KeyFamily::Rsa => "an RSA",
            KeyFamily::Ec => "an EC",
            KeyFamily::Ed => "an OKP (EdDSA)",
            KeyFamily::Hmac => "a shared-secret",
        }
    }

    pub fn of(alg: Algorithm) -> KeyFamily {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
            Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
            Algorithm::EdDSA => KeyFamily::Ed,
            _ => KeyFamily::Rsa,
        }
    }
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.family == KeyFamily::of(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// The keys of one issuer.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.family)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys that do not parse, or are meant for encryption, are
    /// skipped and reported in the second value.
    pub fn parse(document: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        let value: serde_json::Value = serde_json::from_slice(document)
            .map_err(|e| format!("jwks document is not JSON: {e}"))?;
        let Some(entries) = value.get("keys").and_then(|keys| keys.as_array()) else {
            return Err("jwks document has no `keys` array".into());
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(e) => skipped.push(format!("key {index}: {e}")),
            }
        }
        Ok((KeySet { keys }, skipped))
    }

    pub fn find<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> Option<&'a Key> {
        self.candidates(kid, alg).next()
    }

    /// Keys that may verify a token with this `kid` and `alg`: the key with that `kid`, or,
    /// for a token without `kid`, every key of the right type.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> {
        self.keys.iter().filter(move |key| {
            key.fits(alg)
                && match kid {
                    Some(kid) => key.kid.as_deref() == Some(kid),
                    None => true,
                }
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

fn parse_key(entry: &serde_json::Value) -> Result<Option<Key>, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| e.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    // RFC 7517 §4.3: a key whose `key_ops` are given but do not include `verify` is not
    // for verifying signatures (Wycheproof `rejectWrongKeyOps`).
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("key_ops do not include `verify`".into());
    }
    // A curve fixes its algorithm (RFC 7518 §3.4: ES256 is ECDSA on P-256, ES384 on
    // P-384), so an EC key is pinned to it even without `alg`.
    let (family, curve_alg) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            check_rsa_key(&rsa.n, &rsa.e)?;
            (KeyFamily::Rsa, None)
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => (KeyFamily::Ec, Some(Algorithm::ES256)),
            EllipticCurve::P384 => (KeyFamily::Ec, Some(Algorithm::ES384)),
            EllipticCurve::P521 => return Err("curve `P-521` is not supported".into()),
            _ => return Err("unsupported curve for an EC key".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => (KeyFamily::Ed, None),
        // Symmetric keys are never published: a JWKS `oct` key would let anyone who can
        // read the document mint tokens.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric key in a JWKS".into()),
        _ => return Err("unsupported key type".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(signing_algorithm(alg)?),
    };
    let alg = match (alg, curve_alg) {
        (Some(alg), Some(curve)) if alg != curve => {
            return Err(format!(
                "`alg` {alg:?} does not fit the key's curve, which is for {curve:?}"
            ));
        }
        (alg, curve) => alg.or(curve),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        family,
        key,
    }))
}

/// Refuses RSA public keys no signature should be trusted from: under 2048 bits, an
/// exponent below 3 or even (with `e = 1` the "signature" is the padded message itself,
/// Wycheproof `rejectsPublicExponent1`), or one generated by the Infineon library whose
/// private key can be recovered (ROCA, CVE-2017-15361, Wycheproof
/// `rejectsKeyWithRocaVulnerability`).
fn check_rsa_key(n: &str, e: &str) -> Result<(), String> {
    let decode = |text: &str, name: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("RSA `{name}` is not base64url"))
    };
    let n = decode(n, "n")?;
    let e = decode(e, "e")?;
    let significant = |bytes: &[u8]| -> usize {
        match bytes.iter().enumerate().find(|(_, b)| **b != 0) {
            Some((first, b)) => (bytes.len() - first) * 8 - b.leading_zeros() as usize,
            None => 0,
        }
    };
    let bits = significant(&n);
    if bits < 2048 {
        return Err(format!(
            "RSA key of {bits} bits: at least 2048 are required"
        ));
    }
    let exponent = if significant(&e) <= 64 {
        e.iter().fold(0u64, |value, b| (value << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if exponent < 3 || exponent % 2 == 0 {
        return Err("RSA public exponent must be odd and at least 3".into());
    }
    if roca_fingerprint(&n) {
        return Err(
            "RSA key has the ROCA fingerprint (CVE-2017-15361): its private key can be recovered"
                .into(),
        );
    }
    Ok(())
}

/// The ROCA test (Nemec et al., CCS 2017): a vulnerable modulus is, modulo each of these
/// small primes, a power of 65537. A random modulus passes all of them with negligible
/// probability.
fn roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0u32, |r, b| (r * 256 + u32::from(*b)) % p);
        // The subgroup 65537 generates modulo p.
        let generator = 65537 % p;
        let mut power = 1;
        loop {
            if power == residue {
                return true;
            }
            power = power * generator % p;
            if power == 1 {
                return false;
            }
        }
    })
}

fn signing_algorithm(alg: KeyAlgorithm) -> Result<Algorithm, String> {
    Ok(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        other => return Err(format!("`{other:?}` is not a signing algorithm")),
    })
}

/// Where an issuer's JWKS document comes from.
pub enum KeySource {
    File(PathBuf),
    Url {
        url: String,
        client: reqwest::Client,
    },
    /// OIDC discovery / RFC 8414 metadata naming the `jwks_uri`; looked up at every
    /// refresh, so a provider can move its keys.
    Discovery {
        /// Metadata documents to try, in order.
        urls: Vec<String>,
        /// The `issuer` the metadata must state: a document for another issuer is refused.
        issuer: String,
        allow_insecure_http: bool,
        client: reqwest::Client,
    },
}

impl KeySource {
    pub fn url(url: &str, timeout: Duration) -> Result<KeySource, String> {
        Ok(KeySource::Url {
            url: url.to_owned(),
            client: http_client(timeout)?,
        })
    }

    /// Discovery for `issuer`: `setting` is a metadata URL, or `auto` for the well-known
    /// locations (OIDC first, then RFC 8414).
    pub fn discovery(
        setting: &str,
        issuer: &str,
        allow_insecure_http: bool,
        timeout: Duration,
    ) -> Result<KeySource, String> {
        let urls = if setting == "auto" {
            let base = issuer.trim_end_matches('/');
            let mut urls = vec![format!("{base}/.well-known/openid-configuration")];
            // RFC 8414 §3: the well-known part goes between host and path.
            if let Some(rest) = base
                .strip_prefix("https://")
                .or(base.strip_prefix("http://"))
            {
                let scheme = if base.starts_with("https://") {
                    "https"
                } else {
                    "http"
                };
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let path = if path.is_empty() {
                    String::new()
                } else {
                    format!("/{path}")
                };
                urls.push(format!(
                    "{scheme}://{host}/.well-known/oauth-authorization-server{path}"
                ));
            }
            urls
        } else {
            vec![setting.to_owned()]
        };
        for url in &urls {
            check_scheme(url, allow_insecure_http)?;
        }
        Ok(KeySource::Discovery {
            urls,
            issuer: issuer.to_owned(),
            allow_insecure_http,
            client: http_client(timeout)?,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            KeySource::File(path) => path.display().to_string(),
            KeySource::Url { url, .. } => url.clone(),
            KeySource::Discovery { urls, .. } => urls.join(" or "),
        }
    }

    /// Reads the document.
    pub async fn fetch(&self) -> Result<Vec<u8>, String> {
        match self {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read `{}`: {e}", path.display())),
            KeySource::Url { url, client } => get(client, url).await,
            KeySource::Discovery {
                urls,
                issuer,
                allow_insecure_http,
                client,
            } => {
                let mut problems = Vec::new();
                for url in urls {
                    let metadata = match get(client, url).await {
                        Ok(body) => body,
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    };
                    let metadata: serde_json::Value = serde_json::from_slice(&metadata)
                        .map_err(|_| format!("discovery document `{url}` is not JSON"))?;
                    let stated = metadata.get("issuer").and_then(|i| i.as_str());
                    if stated != Some(issuer.as_str()) {
                        return Err(format!(
                            "discovery document `{url}` is for issuer `{}`, not `{issuer}`",
                            stated.unwrap_or("(none)")
                        ));
                    }
                    let jwks_uri = metadata
                        .get("jwks_uri")
                        .and_then(|u| u.as_str())
                        .ok_or_else(|| format!("discovery document `{url}` has no `jwks_uri`"))?;
                    check_scheme(jwks_uri, *allow_insecure_http)?;
                    return get(client, jwks_uri).await;
                }
                Err(problems.join("; "))
            }
        }
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| format!("cannot build an http client: {e}"))
}

fn check_scheme(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    if url.starts_with("https://") || (allow_insecure_http && url.starts_with("http://")) {
        Ok(())
    } else {
        Err(format!("`{url}` is not an https URL"))
    }
}

/// GETs a JSON document of at most [`MAX_JWKS_BYTES`].
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .header("accept", "application/json, application/jwk-set+json")
        .send()
        .await
        .map_err(|e| format!("cannot fetch `{url}`: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("`{url}` answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("cannot read `{url}`: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("`{url}` sent more than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(KeySet::parse(b"<html>").unwrap_err().contains("not JSON"));
        assert!(KeySet::parse(b"{}").unwrap_err().contains("no `keys`"));
    }

    #[test]
    fn bad_keys_are_skipped_not_fatal() {
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"good","alg":"ES256","use":"sig"},
            {"kty":"RSA","n":"!!!","e":"AQAB","kid":"bad"},
            {"kty":"oct","k":"c2VjcmV0","kid":"sym"},
            {"nonsense":true}
        ]}"#;
        let (set, skipped) = KeySet::parse(doc).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(set.has_kid("good"));
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(set.find(Some("good"), Algorithm::ES256).is_some());
        assert!(set.find(Some("good"), Algorithm::RS256).is_none());
    }
}
