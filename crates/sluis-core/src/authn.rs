//! Who is calling: turns the credentials of an [`AccessRequest`] into an [`Identity`].
//!
//! Today that is a JWT access token verified against a configured issuer's keys
//! ([`issuer`], keys from [`jwks`]). Verified tokens are cached by a keyed hash of the token
//! ([`TokenKeys`]) until their `exp`, so the signature is checked once per token, not once
//! per request.
//!
//! The unverified `iss` of a token is only used to pick which issuer's keys to try; every
//! claim a policy sees comes from a verified token.

pub mod aggregated;
pub mod certificate;
pub mod dpop;
pub mod introspection;
pub mod issuer;
pub mod jose;
pub mod jwks;
pub mod nonce;
pub mod replay;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use moka::sync::Cache;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::decision::{Cause, Unavailable};
use crate::metrics::Metrics;
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
    /// The policy engine's `caller` of this identity for one policy's `caller` block (by
    /// the block's id), when its identifiers agree: built on first use, then shared by
    /// every request carrying the same (cached) token that a policy with that block
    /// judges. Another block's `caller` is built per request.
    pub(crate) caller_value: OnceLock<(u64, Box<dyn cel::common::value::Val>)>,
    /// How the issuer's aggregated claims are trusted; `None`: the issuer has no
    /// `aggregated_claims` configuration, so none are used.
    pub claim_sources: Option<Arc<aggregated::ClaimSources>>,
    /// The trusted aggregated claims, resolved on first use (only policies that read
    /// `caller` ask) and then shared by every request carrying the same (cached) token.
    pub(crate) aggregated: OnceLock<serde_json::Map<String, Json>>,
}

#[cfg(test)]
impl Identity {
    /// An identity from `issuer` (its configured name; `iss` is its URL) for `sub`, with
    /// no audience, scopes or claims: each test sets the fields it reads.
    pub(crate) fn for_tests(issuer: &str, iss: &str, sub: Option<&str>) -> Identity {
        Identity {
            issuer: Arc::from(issuer),
            iss: iss.into(),
            sub: sub.map(str::to_owned),
            client_id: None,
            aud: vec![],
            scopes: vec![],
            exp: None,
            iat: None,
            claims: serde_json::Map::new(),
            payload_json: "{}".into(),
            token_hash: "00".into(),
            cache_until: i64::MAX,
            cel_value: OnceLock::new(),
            caller_value: OnceLock::new(),
            claim_sources: None,
            aggregated: OnceLock::new(),
        }
    }
}

impl Identity {
    /// The `act` claim (RFC 8693 current actor), when present.
    pub fn act(&self) -> Option<&Json> {
        self.claims.get("act").filter(|v| v.is_object())
    }

    /// The token's aggregated claims (`_claim_names` / `_claim_sources`) whose embedded
    /// JWTs the issuer's `aggregated_claims` configuration trusts; empty without one.
    pub fn aggregated_claims(&self) -> &serde_json::Map<String, Json> {
        self.aggregated.get_or_init(|| match &self.claim_sources {
            Some(sources) => sources.resolve(&self.claims, &self.issuer),
            None => {
                if self.claims.contains_key("_claim_names") {
                    tracing::debug!(
                        issuer = %self.issuer,
                        "token has aggregated claims, but its issuer has no `aggregated_claims` configuration: none used"
                    );
                }
                serde_json::Map::new()
            }
        })
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
    /// The DPoP proof is not acceptable: 401 `invalid_dpop_proof` (RFC 9449 §7.1).
    #[error("{0}")]
    InvalidProof(String),
    /// The DPoP proof is fine but lacks a current server nonce: 401 `use_dpop_nonce`
    /// with `fresh` in a `DPoP-Nonce` header (RFC 9449 §9).
    #[error("a current DPoP nonce is required")]
    UseNonce { fresh: String },
    /// We could not check the token (keys not loaded, identity provider down): the gateway's
    /// failure mode decides, never an allow.
    #[error("{}", .0.detail)]
    Unavailable(Unavailable),
}

/// Parses an algorithm name from the config. `none` is never acceptable.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm `none` is never accepted".into());
    }
    name.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm `{name}`"))
}

/// How a token was presented (RFC 6750 Bearer or RFC 9449 DPoP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The scheme of one credential, when it is one that carries an access token.
fn token_scheme(credential: &str) -> Option<(Scheme, &str)> {
    // RFC 7235: the scheme ends at whitespace; a tab counts like a space.
    let credential = credential.trim_matches([' ', '\t']);
    let (scheme, token) = credential
        .split_once([' ', '\t'])
        .unwrap_or((credential, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token.trim_matches([' ', '\t'])))
}

/// The access token of a request and its scheme. The scheme is case-insensitive
/// (RFC 7235); other schemes (Basic, ...) alone count as no token.
pub fn presented_token(request: &AccessRequest) -> Result<(Scheme, &str), AuthnError> {
    let Some(value) = request.header("authorization") else {
        return Err(AuthnError::Missing);
    };
    // Envoy and the HTTP doors join repeated headers with commas; neither a token nor
    // Basic credentials contain one. Two credentials of which one is a token (two tokens,
    // or Basic beside Bearer) are ambiguous: RFC 6750 §3.1 `invalid_request`.
    if memchr::memchr(b',', value.as_bytes()).is_some() {
        if value.split(',').any(|part| token_scheme(part).is_some()) {
            return Err(AuthnError::BadRequest(
                "more than one authorization header".into(),
            ));
        }
        return Err(AuthnError::Missing);
    }
    let Some((scheme, token)) = token_scheme(value) else {
        return Err(AuthnError::Missing);
    };
    if token.is_empty() {
        // RFC 6750 §3.1: a malformed request, not an invalid token.
        return Err(AuthnError::BadRequest("empty access token".into()));
    }
    // A vectorised byte search: this runs over every token of every Check, and a byte
    // loop cost 4k instructions for a 900-byte JWT (a two-`char` pattern, decoding UTF-8
    // one character at a time, cost more).
    if memchr::memchr2(b' ', b'\t', token.as_bytes()).is_some() {
        return Err(AuthnError::BadRequest(
            "access token contains whitespace".into(),
        ));
    }
    Ok((scheme, token))
}

/// The client certificate of a request: the one the gateway put in the check (Envoy's
/// peer certificate), else the one in the configured header.
pub fn client_certificate(
    request: &AccessRequest,
    header: Option<&crate::authn::settings::CertificateHeader>,
) -> Result<Option<certificate::ClientCertificate>, certificate::CertificateError> {
    if let Some(pem) = &request.source.certificate {
        return certificate::ClientCertificate::from_pem(pem).map(Some);
    }
    let Some(header) = header else {
        return Ok(None);
    };
    let Some(value) = request.header(&header.header.to_ascii_lowercase()) else {
        return Ok(None);
    };
    match header.format {
        crate::authn::settings::CertificateHeaderFormat::Xfcc => certificate::from_xfcc(value),
        crate::authn::settings::CertificateHeaderFormat::ClientCert => {
            certificate::from_client_cert_header(value).map(Some)
        }
    }
}

/// How DPoP proofs are checked.
pub struct DpopSettings {
    pub max_age: i64,
    pub leeway: i64,
    pub algorithms: Vec<Algorithm>,
    /// Proof ids seen; swapped for a Redis-backed one at start when configured.
    pub replay: arc_swap::ArcSwap<replay::ReplayCache>,
    /// Server nonces every proof must carry, when `dpop.nonce.required`.
    pub nonces: Option<nonce::Nonces>,
}

impl DpopSettings {
    /// The `algs` of a DPoP challenge.
    pub fn algs(&self) -> String {
        self.algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The nonces `dpop.nonce` asks for, if it requires them.
fn nonces(
    config: &settings::NonceConfig,
    settings: &settings::AuthnSettings,
) -> Result<Option<nonce::Nonces>, String> {
    if !config.required {
        return Ok(None);
    }
    let lifetime = i64::try_from(config.lifetime.as_secs())
        .ok()
        .filter(|seconds| *seconds >= 1)
        .ok_or("`dpop.nonce.lifetime` must be at least 1s")?;
    Ok(Some(match &config.key {
        None => nonce::Nonces::random(lifetime),
        Some(secret) => {
            let key = secret
                .resolve(&settings.base_dir)
                .map_err(|e| format!("`dpop.nonce.key`: {e}"))?;
            if key.len() < 32 {
                return Err(format!(
                    "`dpop.nonce.key` is {} bytes, fewer than 32",
                    key.len()
                ));
            }
            nonce::Nonces::new(&key, lifetime)
        }
    }))
}

/// The token caches' hasher. Their keys are [`TokenKeys`] of tokens, as even as hashes get
/// and not chosen by a client, who does not know the secret: a seeded fast hash of them
/// spreads as well as SipHash does, at a fraction of the cost per look-up.
type KeyHasher = foldhash::fast::RandomState;

/// What the token caches know a token by: 128 bits of SipHash-2-4 of the token.
pub type TokenKey = [u8; 16];

/// The token caches' keys: SipHash-2-4 with a 128-bit output, keyed by 128 random bits
/// drawn when the [`Authenticator`] is made and never shown.
///
/// A cache hit hands out the identity verified for another token with the same key, so
/// the key must be one a client cannot aim at. Keyed SipHash is a pseudorandom function:
/// without the secret, a token made to share a cached token's key succeeds with
/// probability about (cached tokens) / 2^128 per try, as it would against SHA-256's
/// collision resistance, and the token is not kept in the clear. It costs a fraction of
/// SHA-256 (which was the key until session 13): about a tenth of the instructions, half
/// the time with the CPU's SHA extensions. The decision log's `token_hash` stays the
/// SHA-256 prefix operators can compute themselves, made only when a token is verified.
#[derive(Clone)]
pub struct TokenKeys(siphasher::sip128::SipHasher24);

impl TokenKeys {
    /// Keys under a fresh random secret; an error when the system's random source fails
    /// (a guessable secret would be worse than no cache).
    pub fn new() -> Result<TokenKeys, String> {
        let mut secret = [0u8; 16];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| "the system's random source fails: no secret for the token cache")?;
        Ok(TokenKeys(siphasher::sip128::SipHasher24::new_with_key(
            &secret,
        )))
    }

    /// The key of `token`.
    pub fn of(&self, token: &str) -> TokenKey {
        self.0.hash(token.as_bytes()).as_bytes()
    }
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// All configured issuers and the cache of verified tokens.
pub struct Authenticator {
    /// By their `iss` value: how an incoming token finds its keys.
    by_iss: HashMap<String, Arc<Issuer>>,
    /// By configured name: how policies refer to them.
    by_name: HashMap<String, Arc<Issuer>>,
    /// How the caches know a token.
    keys: TokenKeys,
    /// Verified tokens by [`TokenKey`]. Bounded by `token_cache.max_entries`; each entry
    /// expires at its token's `exp`.
    cache: Cache<TokenKey, Arc<Identity>, KeyHasher>,
    /// JWTs refused for good ([`jose::TokenError::is_final`]), by [`TokenKey`], with why;
    /// `None` when `token_cache.rejected_ttl` is 0.
    rejected: Option<Cache<TokenKey, Arc<str>, KeyHasher>>,
    /// The largest token any issuer accepts: tokens beyond it are refused unparsed.
    max_token_bytes: usize,
    pub dpop: DpopSettings,
    certificate_header: Option<settings::CertificateHeader>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// The authenticator `settings` describe, counting what it does in `metrics`.
    pub fn new(
        settings: &settings::AuthnSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Authenticator, String> {
        let config = settings;
        let mut by_iss = HashMap::new();
        let mut by_name = HashMap::new();
        for issuer_config in &config.issuers {
            let issuer = Arc::new(Issuer::new(
                issuer_config,
                &config.base_dir,
                metrics.clone(),
            )?);
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
            .build_with_hasher(KeyHasher::default());
        let rejected = (!config.token_cache.rejected_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.token_cache.max_rejected)
                .time_to_live(config.token_cache.rejected_ttl)
                .build_with_hasher(KeyHasher::default())
        });
        let dpop = &config.dpop;
        // A shared cache is put in by `use_replay_cache`; until then, and in offline tools,
        // memory.
        let replay = replay::ReplayCache::memory(dpop.replay_cache.max_entries);
        Ok(Authenticator {
            by_iss,
            by_name,
            keys: TokenKeys::new()?,
            cache,
            rejected,
            max_token_bytes,
            dpop: DpopSettings {
                max_age: dpop.max_age.as_secs() as i64,
                leeway: dpop.leeway.as_secs() as i64,
                algorithms: dpop
                    .algorithms
                    .iter()
                    .map(|a| parse_algorithm(a))
                    .collect::<Result<_, _>>()?,
                replay: arc_swap::ArcSwap::from_pointee(replay),
                nonces: nonces(&dpop.nonce, config)?,
            },
            certificate_header: config.client_certificate.clone(),
            metrics,
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
        let key = self.keys.of(token);
        if let Some(identity) = self.cache.get(&key) {
            // The cache expires entries on time, but check: expiry is not exact.
            let now = now_secs();
            if identity.exp.is_some_and(|exp| exp < now) || identity.cache_until <= now {
                self.cache.invalidate(&key);
            } else {
                self.metrics.token_cache_lookup(true);
                return accept(identity, accepted);
            }
        }
        if let Some(why) = self.rejected.as_ref().and_then(|r| r.get(&key)) {
            self.metrics.token_cache_lookup(true);
            return Err(AuthnError::Invalid(why.to_string()));
        }
        self.metrics.token_cache_lookup(false);
        let issuer = self.issuer_for(token, accepted)?;
        let identity = match issuer.verify(token, key, token_hash(token)).await {
            Ok(identity) => Arc::new(identity),
            Err(error) => {
                // The kind of refusal decides, never its wording.
                if let Some(rejected) = &self.rejected
                    && error.is_final()
                    && !issuer.introspects(token)
                {
                    rejected.insert(key, Arc::from(error.to_string()));
                }
                return Err(error.into());
            }
        };
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

    /// The identity of claims relayed by an enforcement point that verified the token
    /// itself ([`issuer::Issuer::verify_relayed`]), for `issuer` if `accepted` names it.
    pub fn identity_from_relayed(
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
        found.verify_relayed(claims)
    }

    /// The accepted issuer that must judge `token`: for a JWT the one its (unverified)
    /// `iss` names, for an opaque token the first accepted issuer that introspects.
    fn issuer_for(&self, token: &str, accepted: &[Arc<str>]) -> Result<&Arc<Issuer>, AuthnError> {
        if !issuer::looks_like_jwt(token) {
            return accepted
                .iter()
                .filter_map(|name| self.by_name.get(&**name))
                .find(|issuer| issuer.introspection.is_some())
                .ok_or_else(|| match jose::parse(token) {
                    // Says which shape it is (a JWE, too few parts) when it can.
                    Err(error) => error.into(),
                    Ok(_) => AuthnError::Invalid("token is malformed".into()),
                });
        }
        let iss = issuer::unverified_issuer(token)?;
        self.by_iss
            .get(&iss)
            .filter(|issuer| accepted.iter().any(|name| **name == **issuer.name()))
            .ok_or_else(|| {
                AuthnError::Invalid(format!(
                    "issuer `{}` is not accepted here",
                    jose::echo(&iss)
                ))
            })
    }

    /// Checks DPoP proofs against `cache` from now on: the server puts in a shared one
    /// (Redis, in `sluis-store`) when the config asks for it. It need not be connected:
    /// until it is, DPoP-bound requests fail closed (UNAVAILABLE) while everything else is
    /// decided as usual.
    pub fn use_replay_cache(&self, cache: replay::ReplayCache) {
        self.dpop.replay.store(Arc::new(cache));
    }

    /// The metrics this authenticator counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sender constraints: a DPoP-bound token (`cnf.jkt`) needs the DPoP scheme and a
    /// valid, unused proof by that key; a certificate-bound token (`cnf.x5t#S256`, RFC
    /// 8705) needs the client certificate it names. An unbound token must come as Bearer.
    pub async fn check_binding(
        &self,
        request: &AccessRequest,
        scheme: Scheme,
        token: &str,
        identity: &Identity,
    ) -> Result<(), AuthnError> {
        let cnf = identity.claims.get("cnf");
        let jkt = cnf.and_then(|c| c.get("jkt")).and_then(Json::as_str);
        match (scheme, jkt) {
            (Scheme::Bearer, Some(_)) => {
                return Err(AuthnError::Invalid(
                    "token is bound to a DPoP key: present it with the DPoP scheme and a proof"
                        .into(),
                ));
            }
            (Scheme::Dpop, None) => {
                return Err(AuthnError::Invalid(
                    "token is not DPoP-bound: present it as a Bearer token".into(),
                ));
            }
            (Scheme::Dpop, Some(jkt)) => self.check_proof(request, token, jkt).await?,
            (Scheme::Bearer, None) => {}
        }
        if let Some(x5t) = cnf.and_then(|c| c.get("x5t#S256")).and_then(Json::as_str) {
            let certificate = client_certificate(request, self.certificate_header.as_ref())
                .map_err(|e| AuthnError::Invalid(format!("{e}")))?
                .ok_or_else(|| {
                    AuthnError::Invalid(
                        "token is bound to a client certificate, but none was presented".into(),
                    )
                })?;
            if certificate.thumbprint != x5t {
                return Err(AuthnError::Invalid(
                    "client certificate does not match the token".into(),
                ));
            }
        }
        Ok(())
    }

    async fn check_proof(
        &self,
        request: &AccessRequest,
        token: &str,
        jkt: &str,
    ) -> Result<(), AuthnError> {
        let Some(proof) = request.header("dpop") else {
            return Err(AuthnError::InvalidProof("DPoP proof missing".into()));
        };
        if proof.contains(',') {
            return Err(AuthnError::InvalidProof("more than one DPoP proof".into()));
        }
        let scheme = if request.scheme.is_empty() {
            "https"
        } else {
            &request.scheme
        };
        let url = format!("{scheme}://{}{}", request.host, request.path);
        let now = now_secs();
        let settings = &self.dpop;
        let accepts_nonce = |nonce: &str| {
            settings
                .nonces
                .as_ref()
                .is_some_and(|nonces| nonces.accepts(nonce, now))
        };
        let verified = dpop::verify_proof(&dpop::ProofCheck {
            proof,
            method: &request.method,
            url: &url,
            access_token: token,
            now,
            max_age: settings.max_age,
            leeway: settings.leeway,
            algorithms: &settings.algorithms,
            nonce: settings
                .nonces
                .is_some()
                .then_some(&accepts_nonce as &dyn Fn(&str) -> bool),
        })
        .map_err(|e| match e {
            dpop::DpopError::Invalid(reason) => AuthnError::InvalidProof(reason),
            dpop::DpopError::UseNonce => AuthnError::UseNonce {
                fresh: settings
                    .nonces
                    .as_ref()
                    .map(|nonces| nonces.issue(now))
                    .unwrap_or_default(),
            },
        })?;
        if verified.jkt != jkt {
            return Err(AuthnError::Invalid(
                "token is bound to another DPoP key".into(),
            ));
        }
        let ttl = verified.replay_ttl(now, settings.max_age, settings.leeway);
        // The earliest moment the proof could have been accepted: a proof whose first use
        // the cache may have forgotten (it lost its keys after that) is refused.
        let earliest_use = verified.iat.saturating_sub(settings.leeway);
        match settings
            .replay
            .load()
            .check(&verified.replay_key(), ttl, earliest_use)
            .await
        {
            Ok(replay::ProofUse::First) => Ok(()),
            Ok(replay::ProofUse::Replayed) => Err(AuthnError::InvalidProof(
                "DPoP proof was already used".into(),
            )),
            Ok(replay::ProofUse::BeforeLoss) => Err(AuthnError::InvalidProof(
                "DPoP proof predates the replay cache's last restart: send a new proof".into(),
            )),
            Err(e) => Err(AuthnError::Unavailable(Unavailable::new(
                Cause::ReplayCache,
                format!("dpop replay cache: {e}"),
            ))),
        }
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

/// The decision log's `token_hash`: the first 8 bytes of the token's SHA-256, in hex, which
/// an operator holding a token can compute to find its decisions.
fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    hex::encode(digest.get(..8).unwrap_or_default())
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Cache expiry: an identity lives until its token's `exp` (at most a day without one).
struct UntilExp;

impl moka::Expiry<TokenKey, Arc<Identity>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
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

    /// A token's cache key is the same each time under one secret, and another under
    /// another secret: what a client sends cannot aim at a key it does not know.
    #[test]
    fn token_keys_are_stable_and_depend_on_the_secret() {
        let keys = TokenKeys::new().unwrap();
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        assert_eq!(keys.of(token), keys.of(token));
        assert_eq!(keys.clone().of(token), keys.of(token));
        assert_ne!(TokenKeys::new().unwrap().of(token), keys.of(token));
        // Not a prefix of the token's SHA-256 (the log's `token_hash`, which anyone can
        // compute).
        let digest = Sha256::digest(token.as_bytes());
        assert_ne!(keys.of(token)[..], digest[..16]);
        assert_eq!(format!("{keys:?}"), "TokenKeys(..)");
    }

    proptest::proptest! {
        /// Different tokens, different keys (a collision of 128 random bits would take
        /// about 2^64 tokens); a token one byte longer or changed anywhere included.
        #[test]
        fn different_tokens_have_different_keys(
            a in "[A-Za-z0-9._-]{0,300}",
            b in "[A-Za-z0-9._-]{0,300}",
        ) {
            let keys = TokenKeys::new().unwrap();
            proptest::prop_assert_eq!(a == b, keys.of(&a) == keys.of(&b));
            let longer = format!("{a}.");
            proptest::prop_assert_ne!(keys.of(&a), keys.of(&longer));
        }

        /// Any text a client can put in a header, not only a JWT's characters: control
        /// characters, NUL, any Unicode; and a text with one character changed anywhere.
        #[test]
        fn any_text_has_a_key_of_its_own(
            a in "(?s).{0,200}",
            b in "(?s).{0,200}",
            at in proptest::prelude::any::<proptest::sample::Index>(),
            other in proptest::prelude::any::<char>(),
        ) {
            let keys = TokenKeys::new().unwrap();
            proptest::prop_assert_eq!(a == b, keys.of(&a) == keys.of(&b));
            let mut chars: Vec<char> = a.chars().collect();
            if !chars.is_empty() {
                let at = at.index(chars.len());
                let changed = chars[at] != other;
                chars[at] = other;
                let c: String = chars.into_iter().collect();
                proptest::prop_assert_eq!(changed, keys.of(&a) != keys.of(&c));
            }
        }
    }

    #[tokio::test]
    async fn final_refusals_are_remembered_and_passing_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "a-long-shared-secret-for-unit-tests";
        std::fs::write(dir.path().join("secret.txt"), secret).unwrap();
        let settings = settings::AuthnSettings {
            issuers: serde_yaml_ng::from_str(
                r#"
- name: hs
  issuer: https://hs.test
  audiences: [https://api.test]
  algorithms: [HS256]
  shared_secret: { file: secret.txt }
"#,
            )
            .unwrap(),
            base_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let authn = Authenticator::new(&settings, Arc::default()).unwrap();
        let sign = |claims: Json| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let now = now_secs();
        let claims = |exp: i64, nbf: i64| {
            serde_json::json!({"iss": "https://hs.test", "aud": "https://api.test",
                "exp": exp, "nbf": nbf, "iat": now - 7200})
        };
        let expired = sign(claims(now - 3600, now - 7200));
        let early = sign(claims(now + 7200, now + 3600));
        let mut future = claims(now + 7200, now - 60);
        future["iat"] = (now + 3600).into();
        let future = sign(future);
        let mut text_exp = claims(now + 7200, now - 60);
        text_exp["exp"] = "soon".into();
        let text_exp = sign(text_exp);
        let accepted: [Arc<str>; 1] = [Arc::from("hs")];
        let refusal = |result: Result<Arc<Identity>, AuthnError>| match result {
            Err(AuthnError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        for _ in 0..2 {
            assert_eq!(
                refusal(authn.authenticate(&expired, &accepted).await),
                "token has expired"
            );
            assert_eq!(
                refusal(authn.authenticate(&early, &accepted).await),
                "token is not valid yet"
            );
        }
        assert_eq!(
            refusal(authn.authenticate(&future, &accepted).await),
            "token is issued in the future"
        );
        assert_eq!(
            refusal(authn.authenticate(&text_exp, &accepted).await),
            "claim `exp` must be a number"
        );
        let rejected = authn.rejected.as_ref().unwrap();
        let key = |token: &str| authn.keys.of(token);
        assert!(rejected.contains_key(&key(&expired)));
        assert!(rejected.contains_key(&key(&text_exp)));
        assert!(!rejected.contains_key(&key(&future)));
        // Time will make this one valid: it must be verified again next time.
        assert!(!rejected.contains_key(&key(&early)));

        // A valid token: cached under its key, and its `token_hash` is the SHA-256 prefix
        // an operator can compute from the token, verified or answered from the cache.
        let valid = sign(claims(now + 7200, now - 60));
        let sha_prefix = hex::encode(&Sha256::digest(valid.as_bytes())[..8]);
        let first = authn.authenticate(&valid, &accepted).await.unwrap();
        assert_eq!(first.token_hash, sha_prefix);
        assert!(authn.cache.contains_key(&key(&valid)));
        let again = authn.authenticate(&valid, &accepted).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second is the cached identity"
        );
        assert_eq!(again.token_hash, sha_prefix);
    }

    #[test]
    fn only_refusals_time_and_key_rotation_cannot_mend_are_final() {
        use jose::TokenError;
        for error in [
            TokenError::Expired,
            TokenError::BadSignature,
            TokenError::WrongAudience,
            TokenError::Malformed("token header has no `alg`".into()),
            TokenError::Claim("claim `exp` must be a number".into()),
        ] {
            assert!(error.is_final(), "{error:?}");
        }
        for error in [
            TokenError::NotYetValid,
            TokenError::IssuedInFuture,
            TokenError::UnknownKey("k2".into()),
            TokenError::KeyMismatch("key `k1` is for RS256, not PS256".into()),
            TokenError::Other(AuthnError::Unavailable(Unavailable::new(
                Cause::IssuerKeys,
                "keys of issuer `x` are not loaded",
            ))),
            TokenError::Other(AuthnError::Missing),
        ] {
            assert!(!error.is_final(), "{error:?}");
        }
    }

    #[test]
    fn an_empty_token_or_two_credentials_are_a_bad_request() {
        for value in [
            "Bearer ",
            "Bearer",
            "Bearer \t",
            "Basic dXNlcjpwdw==, Bearer abc",
            "Bearer abc, Basic dXNlcjpwdw==",
            "Bearer a b",
        ] {
            assert!(
                matches!(
                    presented_token(&with_auth(value)),
                    Err(AuthnError::BadRequest(_))
                ),
                "{value:?}"
            );
        }
        assert_eq!(
            presented_token(&with_auth("Bearer\tabc")),
            Ok((Scheme::Bearer, "abc"))
        );
    }

    proptest::proptest! {
        /// Whitespace inside a token is refused as a bad request, whatever surrounds it
        /// (unicode included); a token without whitespace or comma comes back as sent.
        #[test]
        fn whitespace_inside_any_token_is_a_bad_request(
            head in "[^ \t,]{1,40}",
            gap in "[ \t]{1,3}",
            tail in "[^ \t,]{1,40}",
            scheme in proptest::sample::select(vec!["Bearer", "bearer", "DPoP"]),
        ) {
            let whole = format!("{scheme} {head}{tail}");
            let expected = if scheme == "DPoP" { Scheme::Dpop } else { Scheme::Bearer };
            let head_tail = format!("{head}{tail}");
            let request = with_auth(&whole);
            proptest::prop_assert_eq!(
                presented_token(&request),
                Ok((expected, head_tail.as_str()))
            );
            let split = format!("{scheme} {head}{gap}{tail}");
            let request = with_auth(&split);
            proptest::prop_assert!(matches!(
                presented_token(&request),
                Err(AuthnError::BadRequest(_))
            ));
        }
    }

    fn with_auth(value: &str) -> AccessRequest {
        let mut request = AccessRequest::default();
        request
            .headers
            .insert("authorization".into(), value.to_string());
        request
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(
            presented_token(&with_auth("bearer abc")),
            Ok((Scheme::Bearer, "abc"))
        );
        assert_eq!(
            presented_token(&with_auth("BEARER  abc ")),
            Ok((Scheme::Bearer, "abc"))
        );
        assert_eq!(
            presented_token(&with_auth("dpop abc")),
            Ok((Scheme::Dpop, "abc"))
        );
    }

    #[test]
    fn other_schemes_count_as_no_token() {
        assert_eq!(
            presented_token(&with_auth("Basic dXNlcjpwdw==")),
            Err(AuthnError::Missing)
        );
        assert_eq!(
            presented_token(&AccessRequest::default()),
            Err(AuthnError::Missing)
        );
    }

    #[test]
    fn two_tokens_are_a_bad_request() {
        assert!(matches!(
            presented_token(&with_auth("Bearer a,Bearer b")),
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
