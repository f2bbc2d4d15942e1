//! Who is calling: turns the credentials of an [`AccessRequest`] into an [`Identity`].
//!
//! Today that is a JWT access token verified against a configured issuer's keys
//! ([`jwt`], keys from [`jwks`]). Verified tokens are cached by a SHA-256 of the token until
//! their `exp`, so the signature is checked once per token, not once per request.
//!
//! The unverified `iss` of a token is only used to pick which issuer's keys to try; every
//! claim a policy sees comes from a verified token.

pub mod certificate;
pub mod dpop;
pub mod introspection;
pub mod issuer;
pub mod jwks;
pub mod replay;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use moka::sync::Cache;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::request::AccessRequest;

pub use issuer::Issuer;

/// A verified caller.
#[derive(Debug)]
pub struct Identity {
    /// The configured name of the issuer that vouched for this token.
    pub issuer: Arc<str>,
    pub iss: String,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub aud: Vec<String>,
    pub scopes: Vec<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    /// Every claim of the token.
    pub claims: serde_json::Map<String, Json>,
    /// The token's payload as compact, ASCII-only JSON, for the iWlz `claims` header.
    pub payload_json: String,
    /// A short hash of the token, safe to log.
    pub token_hash: String,
    /// Until when (unix seconds) this identity may be reused for the same token: `exp`
    /// for a JWT, the introspection cache deadline for an introspected token.
    pub cache_until: i64,
    /// The policy engine's view of this identity, built on first use and then shared by
    /// every request carrying the same (cached) token.
    pub(crate) cel_value: OnceLock<Box<dyn cel::common::value::Val>>,
}

impl Identity {
    /// The `act` claim (RFC 8693 current actor), when present.
    pub fn act(&self) -> Option<&Json> {
        self.claims.get("act").filter(|v| v.is_object())
    }
}

/// Why a caller could not be identified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthnError {
    /// No credentials at all: challenge without an error code (RFC 6750 §3.1).
    #[error("no access token")]
    Missing,
    /// The request carries credentials in a way we refuse, e.g. two tokens.
    #[error("{0}")]
    BadRequest(String),
    /// The token is not acceptable: 401 `invalid_token`.
    #[error("{0}")]
    Invalid(String),
    /// We could not check the token (keys not loaded, identity provider down): the gateway's
    /// failure mode decides, never an allow.
    #[error("{0}")]
    Unavailable(String),
}

/// Parses an algorithm name from the config. `none` is never acceptable.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm `none` is never accepted".into());
    }
    name.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm `{name}`"))
}

/// The bearer token of a request, if any. The scheme is case-insensitive (RFC 7235).
pub fn bearer_token(request: &AccessRequest) -> Result<&str, AuthnError> {
    let Some(value) = request.header("authorization") else {
        return Err(AuthnError::Missing);
    };
    let value = value.trim();
    let Some((scheme, token)) = value.split_once(' ') else {
        return if value.eq_ignore_ascii_case("bearer") {
            Err(AuthnError::Invalid("empty bearer token".into()))
        } else {
            Err(AuthnError::Missing)
        };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::Missing);
    }
    let token = token.trim();
    // Envoy joins repeated headers with commas; a token never contains one.
    if token.contains(',') {
        return Err(AuthnError::BadRequest(
            "more than one authorization header".into(),
        ));
    }
    if token.is_empty() {
        return Err(AuthnError::Invalid("empty bearer token".into()));
    }
    Ok(token)
}

/// All configured issuers and the cache of verified tokens.
pub struct Authenticator {
    /// By their `iss` value: how an incoming token finds its keys.
    by_iss: HashMap<String, Arc<Issuer>>,
    /// By configured name: how policies refer to them.
    by_name: HashMap<String, Arc<Issuer>>,
    /// Verified tokens by SHA-256 of the token. Bounded by `token_cache.max_entries`;
    /// each entry expires at its token's `exp`.
    cache: Cache<[u8; 32], Arc<Identity>>,
    /// The largest token any issuer accepts: tokens beyond it are refused unparsed.
    max_token_bytes: usize,
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Authenticator, String> {
        let mut by_iss = HashMap::new();
        let mut by_name = HashMap::new();
        for issuer_config in &config.issuers {
            let issuer = Arc::new(Issuer::new(issuer_config, &config.base_dir)?);
            if by_iss
                .insert(issuer_config.issuer.clone(), issuer.clone())
                .is_some()
            {
                return Err(format!(
                    "two issuers have `issuer: {}`: tokens could not be told apart",
                    issuer_config.issuer
                ));
            }
            by_name.insert(issuer_config.name.clone(), issuer);
        }
        let max_token_bytes = config
            .issuers
            .iter()
            .map(|i| i.max_token_bytes)
            .max()
            .unwrap_or(16 * 1024);
        let cache = Cache::builder()
            .max_capacity(config.token_cache.max_entries)
            .expire_after(UntilExp)
            .build();
        Ok(Authenticator {
            by_iss,
            by_name,
            cache,
            max_token_bytes,
        })
    }

    pub fn issuer(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.by_name.get(name)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_name.values()
    }

    /// True when every issuer has keys to verify with.
    pub fn ready(&self) -> bool {
        self.by_name.values().all(|issuer| issuer.has_keys())
    }

    /// Starts the background key refreshers. Call once from within a tokio runtime.
    pub fn start_refreshers(&self) {
        for issuer in self.by_name.values() {
            issuer.clone().spawn_refresher();
        }
    }

    /// Verifies `token` and checks that one of the `accepted` issuers (by name) issued it.
    pub async fn authenticate(
        &self,
        token: &str,
        accepted: &[Arc<str>],
    ) -> Result<Arc<Identity>, AuthnError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthnError::Invalid(format!(
                "token is larger than {} bytes",
                self.max_token_bytes
            )));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(identity) = self.cache.get(&key) {
            // The cache expires entries on time, but check: expiry is not exact.
            let now = now_secs();
            if identity.exp.is_some_and(|exp| exp < now) || identity.cache_until <= now {
                self.cache.invalidate(&key);
            } else {
                return accept(identity, accepted);
            }
        }
        let issuer = self.issuer_for(token, accepted)?;
        let identity = Arc::new(issuer.verify(token, key, hex_prefix(&key)).await?);
        if identity.cache_until > now_secs() {
            self.cache.insert(key, identity.clone());
        }
        Ok(identity)
    }

    /// An identity from claims given directly, checked by the named issuer's rules as a
    /// token would be, except for the signature. For offline tools only.
    pub fn identity_from_claims(
        &self,
        issuer: &str,
        claims: &serde_json::Map<String, Json>,
        accepted: &[Arc<str>],
    ) -> Result<Identity, AuthnError> {
        let Some(found) = self.by_name.get(issuer) else {
            return Err(AuthnError::Invalid(format!(
                "issuer `{issuer}` is not configured"
            )));
        };
        if !accepted.iter().any(|name| **name == *issuer) {
            return Err(AuthnError::Invalid(format!(
                "issuer `{}` is not accepted here",
                found.iss()
            )));
        }
        found.verify_claims(claims)
    }

    /// The accepted issuer that must judge `token`: for a JWT the one its (unverified)
    /// `iss` names, for an opaque token the first accepted issuer that introspects.
    fn issuer_for(&self, token: &str, accepted: &[Arc<str>]) -> Result<&Arc<Issuer>, AuthnError> {
        if !issuer::looks_like_jwt(token) {
            return accepted
                .iter()
                .filter_map(|name| self.by_name.get(&**name))
                .find(|issuer| issuer.introspection.is_some())
                .ok_or_else(|| AuthnError::Invalid("token is malformed".into()));
        }
        let iss = issuer::unverified_issuer(token)?;
        self.by_iss
            .get(&iss)
            .filter(|issuer| accepted.iter().any(|name| **name == **issuer.name()))
            .ok_or_else(|| AuthnError::Invalid(format!("issuer `{iss}` is not accepted here")))
    }

    /// Number of verified tokens cached.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

fn accept(identity: Arc<Identity>, accepted: &[Arc<str>]) -> Result<Arc<Identity>, AuthnError> {
    if accepted.iter().any(|name| *name == identity.issuer) {
        Ok(identity)
    } else {
        Err(AuthnError::Invalid(format!(
            "issuer `{}` is not accepted here",
            identity.iss
        )))
    }
}

fn hex_prefix(digest: &[u8; 32]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Cache expiry: an identity lives until its token's `exp` (at most a day without one).
struct UntilExp;

impl moka::Expiry<[u8; 32], Arc<Identity>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        identity: &Arc<Identity>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let until = identity.cache_until.min(now_secs() + 24 * 3600);
        Some(Duration::from_secs((until - now_secs()).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> AccessRequest {
        let mut request = AccessRequest::default();
        request
            .headers
            .insert("authorization".into(), value.to_string());
        request
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&with_auth("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&with_auth("BEARER  abc ")), Ok("abc"));
    }

    #[test]
    fn other_schemes_count_as_no_token() {
        assert_eq!(
            bearer_token(&with_auth("Basic dXNlcjpwdw==")),
            Err(AuthnError::Missing)
        );
        assert_eq!(
            bearer_token(&AccessRequest::default()),
            Err(AuthnError::Missing)
        );
    }

    #[test]
    fn two_tokens_are_a_bad_request() {
        assert!(matches!(
            bearer_token(&with_auth("Bearer a,Bearer b")),
            Err(AuthnError::BadRequest(_))
        ));
    }

    #[test]
    fn none_is_refused() {
        assert!(parse_algorithm("none").is_err());
        assert!(parse_algorithm("NONE").is_err());
        assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
    }
}
