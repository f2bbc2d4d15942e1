//! Aggregated claims (OpenID Connect Core §5.6.2): claims a token carries second-hand, as
//! JWTs of another claims provider embedded in it.
//!
//! ```json
//! "_claim_names":   {"agb": "src1", "uzovi": "src1"},
//! "_claim_sources": {"src1": {"jwt": "eyJhbGciOiJIUzI1NiJ9.eyJ1em92aSI6IjUwMDAifQ.…"}}
//! ```
//!
//! iWlz RFC0014 tokens carry the caller's AGB or UZOVI code this way. A claim named in
//! `_claim_names` is taken from the JWT of its source, under the same name. The embedded
//! JWT is only as good as whoever vouches for it, so the issuer's `aggregated_claims`
//! configuration says who that is ([`ClaimSources`]): a key of the claims provider that
//! signed it, or the issuer itself, whose verified token carries the embedded JWT. A
//! source that cannot be trusted (no such configuration, a bad signature, `alg: none`, a
//! distributed source with an `endpoint` instead of a `jwt`) gives no claims: the
//! identifiers it would have given are null, never guessed. Tokens are never logged.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value as Json};

use super::jwks::{KeyFamily, KeySet};
use super::parse_algorithm;
use crate::authn::settings::AggregatedClaimsConfig;

/// How one issuer's embedded claim JWTs are trusted.
pub struct ClaimSources {
    trust: Trust,
    algorithms: Vec<Algorithm>,
}

enum Trust {
    /// HS256/384/512 with a secret shared with the claims provider.
    Secret(DecodingKey),
    /// Public keys of the claims provider (a JWKS file, or one PEM key).
    Keys(KeySet),
    /// The issuer's own signature over the whole token covers the embedded JWT.
    Vouched,
}

impl std::fmt::Debug for ClaimSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let trust = match &self.trust {
            Trust::Secret(_) => "shared secret",
            Trust::Keys(_) => "public keys",
            Trust::Vouched => "vouched by issuer",
        };
        f.debug_struct("ClaimSources")
            .field("trust", &trust)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// Largest number of claim sources read from one token; a token naming more is refused
/// whole (no aggregated claims), so a crafted token cannot make us verify hundreds of JWTs.
const MAX_SOURCES: usize = 8;

impl ClaimSources {
    /// Loads the keys the configuration names. Relative paths resolve against `base_dir`.
    pub fn new(config: &AggregatedClaimsConfig, base_dir: &Path) -> Result<ClaimSources, String> {
        // Vouched-for JWTs are not verified, so their algorithm says nothing; `none`
        // still fails to parse.
        let default_algorithms: &[&str] = if config.shared_secret.is_some() {
            &["HS256"]
        } else if config.vouched_by_issuer {
            &[
                "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "EdDSA",
            ]
        } else {
            &["RS256", "PS256", "ES256", "EdDSA"]
        };
        let algorithms = match &config.algorithms {
            Some(list) => list
                .iter()
                .map(|a| parse_algorithm(a))
                .collect::<Result<Vec<_>, _>>()?,
            None => default_algorithms
                .iter()
                .map(|a| parse_algorithm(a))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let trust = if let Some(secret) = &config.shared_secret {
            Trust::Secret(DecodingKey::from_secret(&secret.resolve(base_dir)?))
        } else if let Some(file) = &config.jwks_file {
            let path = base_dir.join(file);
            let document = std::fs::read(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            let (keys, skipped) =
                KeySet::parse(&document).map_err(|e| format!("`{}`: {e}", path.display()))?;
            if let Some(problem) = skipped.first() {
                return Err(format!("`{}`: {problem}", path.display()));
            }
            Trust::Keys(keys)
        } else if let Some(file) = &config.public_key {
            let path = base_dir.join(file);
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            Trust::Keys(pem_key(&pem).map_err(|e| format!("`{}`: {e}", path.display()))?)
        } else if config.vouched_by_issuer {
            Trust::Vouched
        } else {
            return Err("says nothing about how embedded JWTs are trusted".into());
        };
        Ok(ClaimSources { trust, algorithms })
    }

    /// The aggregated claims of a verified token's `claims`: each claim `_claim_names`
    /// names, from its source's JWT when that JWT is trusted. Claims of untrusted
    /// sources are left out (logged without the token); null claims too.
    pub fn resolve(&self, claims: &Map<String, Json>, issuer: &str) -> Map<String, Json> {
        let mut resolved = Map::new();
        let Some(names) = claims.get("_claim_names").and_then(Json::as_object) else {
            return resolved;
        };
        let sources = claims.get("_claim_sources").and_then(Json::as_object);
        let mut verified: Vec<(&str, Option<Map<String, Json>>)> = Vec::new();
        for (claim, source) in names {
            let Some(source) = source.as_str() else {
                tracing::debug!(issuer, claim, "aggregated claim names no source");
                continue;
            };
            let payload = match verified.iter().find(|(name, _)| *name == source) {
                Some((_, payload)) => payload,
                None => {
                    if verified.len() == MAX_SOURCES {
                        tracing::warn!(
                            issuer,
                            "token names more than {MAX_SOURCES} claim sources: none used"
                        );
                        return Map::new();
                    }
                    let payload = match sources.and_then(|s| s.get(source)) {
                        Some(entry) => match self.source_claims(entry) {
                            Ok(payload) => Some(payload),
                            Err(e) => {
                                tracing::warn!(issuer, source, "claim source not used: {e}");
                                None
                            }
                        },
                        None => {
                            tracing::debug!(issuer, source, "claim source is missing");
                            None
                        }
                    };
                    verified.push((source, payload));
                    match verified.last() {
                        Some((_, payload)) => payload,
                        None => continue,
                    }
                }
            };
            if let Some(value) = payload.as_ref().and_then(|p| p.get(claim))
                && !value.is_null()
            {
                resolved.insert(claim.clone(), value.clone());
            }
        }
        resolved
    }

    /// The payload of one `_claim_sources` entry's JWT, when it is trusted.
    fn source_claims(&self, entry: &Json) -> Result<Map<String, Json>, String> {
        let jwt = match entry.get("jwt") {
            Some(Json::String(jwt)) => jwt,
            Some(_) => return Err("`jwt` is not a string".into()),
            None if entry.get("endpoint").is_some() => {
                return Err("distributed claims (`endpoint`) are not fetched".into());
            }
            None => return Err("has no `jwt`".into()),
        };
        // As strict as an access token about its shape and JSON (no member twice): the
        // library below keeps the last of duplicate members silently.
        super::jose::parse(jwt).map_err(|e| format!("embedded JWT rejected: {e}"))?;
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|_| "embedded JWT has an unusable header (or `alg: none`)".to_string())?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!(
                "embedded JWT algorithm `{:?}` is not accepted",
                header.alg
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        // Embedded claim JWTs (RFC0014) carry no `exp`, `iss` or `aud`; when they do
        // carry `exp` or `nbf`, those are checked.
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 30;
        let decoded = match &self.trust {
            Trust::Secret(key) => jsonwebtoken::decode::<Map<String, Json>>(jwt, key, &validation),
            Trust::Keys(keys) => {
                let mut result = Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into());
                for key in keys.candidates(header.kid.as_deref(), header.alg) {
                    result = jsonwebtoken::decode::<Map<String, Json>>(jwt, &key.key, &validation);
                    if result.is_ok() {
                        break;
                    }
                }
                result
            }
            Trust::Vouched => {
                jsonwebtoken::dangerous::insecure_decode::<Map<String, Json>>(jwt).and_then(
                    |data| {
                        // Not signed by anyone we know, but `exp` and `nbf` still count.
                        let now = super::now_secs();
                        let int = |name: &str| data.claims.get(name).and_then(Json::as_i64);
                        if int("exp").is_some_and(|exp| exp + 30 < now) {
                            return Err(jsonwebtoken::errors::ErrorKind::ExpiredSignature.into());
                        }
                        if int("nbf").is_some_and(|nbf| nbf > now + 30) {
                            return Err(jsonwebtoken::errors::ErrorKind::ImmatureSignature.into());
                        }
                        Ok(data)
                    },
                )
            }
        };
        decoded
            .map(|data| data.claims)
            .map_err(|e| format!("embedded JWT rejected: {}", super::jose::brief(&e)))
    }
}

/// One PEM public key as a key set of one, of whichever family it is.
fn pem_key(pem: &[u8]) -> Result<KeySet, String> {
    let attempts = [
        (KeyFamily::Rsa, DecodingKey::from_rsa_pem(pem)),
        (KeyFamily::Ec, DecodingKey::from_ec_pem(pem)),
        (KeyFamily::Ed, DecodingKey::from_ed_pem(pem)),
    ];
    for (family, key) in attempts {
        if let Ok(key) = key {
            return Ok(KeySet {
                keys: vec![super::jwks::Key {
                    kid: None,
                    alg: None,
                    family,
                    key,
                }],
            });
        }
    }
    Err("not a PEM RSA, EC or Ed25519 public key".into())
}

#[cfg(test)]
mod tests;
