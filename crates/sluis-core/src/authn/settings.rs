//! What the operator configures about callers' credentials: the issuers, the verified-token
//! cache, client certificates and DPoP. These are the authenticator's own settings; the
//! config file (`sluis-config`) embeds them as its `issuers`, `token_cache`,
//! `client_certificate` and `dpop` sections, and the JSON Schema is generated from them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// Everything [`super::Authenticator`] is built from.
#[derive(Debug, Clone, Default)]
pub struct AuthnSettings {
    pub issuers: Vec<IssuerConfig>,
    pub token_cache: TokenCacheConfig,
    pub client_certificate: Option<CertificateHeader>,
    pub dpop: DpopConfig,
    /// The directory relative paths (key files, secrets) are resolved against.
    pub base_dir: PathBuf,
}

impl AuthnSettings {
    /// A path from the settings, resolved against [`Self::base_dir`].
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// Checks what serde cannot: consistency between fields.
    pub fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for issuer in &self.issuers {
            if !names.insert(issuer.name.as_str()) {
                return Err(format!("issuer `{}` is defined twice", issuer.name));
            }
            issuer.check()?;
        }
        for alg in &self.dpop.algorithms {
            let parsed = super::parse_algorithm(alg).map_err(|e| format!("dpop: {e}"))?;
            if super::jwks::KeyFamily::of(parsed) == super::jwks::KeyFamily::Hmac {
                return Err(format!(
                    "dpop: `{alg}` is symmetric; proofs are signed with private keys"
                ));
            }
        }
        if self.token_cache.max_entries == 0 {
            return Err("`token_cache.max_entries` must be at least 1".into());
        }
        Ok(())
    }
}

impl IssuerConfig {
    /// Checks one issuer's settings; errors name the issuer.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        for alg in &self.algorithms {
            super::parse_algorithm(alg).map_err(|e| format!("issuer `{name}`: {e}"))?;
            if alg.starts_with("HS") && self.shared_secret.is_none() {
                return Err(format!(
                    "issuer `{name}`: algorithm `{alg}` needs a `shared_secret`"
                ));
            }
        }
        let introspects_all = self.introspection.as_ref().is_some_and(|i| i.always);
        match &self.jwks {
            None if self.shared_secret.is_none() && self.introspection.is_none() => {
                return Err(format!(
                    "issuer `{name}`: needs `jwks` (file, url or discovery), a `shared_secret` or `introspection`"
                ));
            }
            Some(_) if introspects_all => {
                return Err(format!(
                    "issuer `{name}`: `introspection.always` makes `jwks` unused; remove one"
                ));
            }
            Some(jwks) => {
                let given = [
                    jwks.file.is_some(),
                    jwks.url.is_some(),
                    jwks.discovery.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(format!(
                        "issuer `{name}`: `jwks` needs exactly one of `file`, `url` or `discovery`"
                    ));
                }
                for url in [&jwks.url, &jwks.discovery].into_iter().flatten() {
                    check_url(name, "jwks", url, jwks.allow_insecure_http)?;
                }
            }
            None => {}
        }
        if let Some(introspection) = &self.introspection {
            check_url(
                name,
                "introspection endpoint",
                &introspection.endpoint,
                introspection.allow_insecure_http,
            )?;
            if introspection.max_cache_entries == 0 {
                return Err(format!(
                    "issuer `{name}`: `introspection.max_cache_entries` must be at least 1"
                ));
            }
        }
        if self.scope_claim.is_empty() {
            return Err(format!("issuer `{name}`: `scope_claim` is empty"));
        }
        if let Some(aggregated) = &self.aggregated_claims {
            aggregated
                .check()
                .map_err(|e| format!("issuer `{name}`: aggregated_claims: {e}"))?;
        }
        Ok(())
    }
}

/// A JWT issuer: where its keys are, which tokens of it are acceptable.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The name policies use to accept this issuer.
    pub name: String,
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one of them. Empty accepts any
    /// audience, which is only sensible when the issuer audience-restricts by other means.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Require exactly one audience (iWlz RFC0014: one https audience per token).
    #[serde(default)]
    pub single_audience: bool,
    /// Where the verification keys come from. Required for JWTs unless `shared_secret`
    /// is set or every token is introspected.
    pub jwks: Option<JwksSource>,
    /// RFC 7662 token introspection: opaque tokens (and, with `always`, JWTs too) are
    /// sent to this endpoint.
    pub introspection: Option<IntrospectionConfig>,
    /// RFC 9068 JWT access token profile: require header `typ` `at+jwt` (or
    /// `application/at+jwt`).
    #[serde(default)]
    pub rfc9068: bool,
    /// Allowed signature algorithms. `none` is never accepted; HS* only with a shared secret.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// A shared secret for HS256/384/512 tokens of this issuer.
    pub shared_secret: Option<Secret>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    #[schemars(with = "String", example = "30s")]
    pub leeway: Duration,
    /// Maximum `exp - iat` (iWlz: 1h). Tokens without `iat` are rejected when set.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>", example = "1h")]
    pub max_lifetime: Option<Duration>,
    /// The claim holding the scopes: a space-separated string (`scope`) or an array
    /// (`scp`, iWlz `scopes`). Both shapes are accepted in whichever claim is named.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Largest token accepted, in bytes. Larger ones are rejected before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// OIDC aggregated claims (OpenID Connect Core §5.6.2): how the JWTs embedded in this
    /// issuer's tokens (`_claim_sources.<source>.jwt`, named by `_claim_names`) are
    /// trusted. Without it no aggregated claim is used. Policies read them through
    /// `caller`.
    pub aggregated_claims: Option<AggregatedClaimsConfig>,
}

/// How the JWTs embedded in a token as aggregated claims are trusted: verified with a key
/// of their own (`shared_secret`, `jwks_file` or `public_key`), or, with
/// `vouched_by_issuer: true`, taken on the word of the issuer whose verified token carries
/// them. Exactly one of the four.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregatedClaimsConfig {
    /// Signature algorithms accepted for embedded JWTs. Default: `HS256` with a
    /// `shared_secret`; `RS256`, `PS256`, `ES256`, `EdDSA` with a public key; any but
    /// `none` when vouched for. `none` is never accepted.
    pub algorithms: Option<Vec<String>>,
    /// The secret of HS256/384/512-signed embedded JWTs (iWlz RFC0014 examples).
    pub shared_secret: Option<Secret>,
    /// A local JWKS document with the keys of the claims provider.
    pub jwks_file: Option<PathBuf>,
    /// One PEM public key (RSA, EC or Ed25519) of the claims provider.
    pub public_key: Option<PathBuf>,
    /// Accept embedded JWTs without checking their signature, because the issuer signed
    /// the token that carries them (or its introspection endpoint vouched for it). Only
    /// for issuers known to check what they aggregate; `alg: none` is refused all the same.
    #[serde(default)]
    pub vouched_by_issuer: bool,
}

pub(crate) fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(String::from)
        .to_vec()
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_scope_claim() -> String {
    "scope".into()
}

fn default_max_token_bytes() -> usize {
    16 * 1024
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksSource {
    /// A local JWKS document.
    pub file: Option<PathBuf>,
    /// An https URL serving the JWKS document.
    pub url: Option<String>,
    /// Find `jwks_uri` through discovery: this URL, or `true`-like `auto` for the
    /// issuer's `/.well-known/openid-configuration` (falling back to RFC 8414
    /// `/.well-known/oauth-authorization-server`). The document's `issuer` must equal the
    /// configured `issuer`.
    pub discovery: Option<String>,
    /// Allow a plain `http://` URL. Only for loopback test setups: keys fetched over plain
    /// HTTP can be swapped by anyone on the path.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// How often the document is fetched again (URL) or re-read (file).
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub refresh_interval: Duration,
    /// Shortest time between two fetches triggered by tokens with an unknown `kid`, so a
    /// stream of forged `kid`s cannot hammer the identity provider.
    #[serde(default = "default_min_refresh_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub min_refresh_interval: Duration,
    /// Timeout of one fetch.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// How Sluis asks an authorization server about a token (RFC 7662).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// e.g. a Nuts node's `/internal/auth/v2/accesstoken/introspect`.
    pub endpoint: String,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Sent as `token_type_hint`.
    pub token_type_hint: Option<String>,
    /// Introspect JWT-shaped tokens of this issuer too, instead of verifying them locally.
    #[serde(default)]
    pub always: bool,
    /// Timeout of one call.
    #[serde(default = "default_introspection_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Extra attempts after a failed call (connection error, timeout, 5xx).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Active results are reused for at most this long (and never past the token's `exp`).
    #[serde(default = "default_positive_ttl", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub cache_ttl: Duration,
    /// Inactive results are remembered this long, so a flood of bad tokens does not
    /// become a flood of introspection calls.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub negative_cache_ttl: Duration,
    /// Cached results kept, at most (active and inactive together).
    #[serde(default = "default_cache_entries")]
    pub max_cache_entries: u64,
    /// While the endpoint is down, keep accepting a token whose earlier active result is
    /// cached and whose `exp` has not passed. Off by default: revocations are not seen
    /// during an outage.
    #[serde(default)]
    pub serve_stale_on_error: bool,
    /// Allow a plain `http://` endpoint (loopback test setups only).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// PEM CA certificate(s) to trust for the endpoint instead of the system's roots,
    /// e.g. a private CA of a Nuts node's internal API.
    pub ca_certificate: Option<PathBuf>,
}

/// How Sluis authenticates itself to the introspection endpoint.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, tag = "method", rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client authentication (e.g. a Nuts node's internal API on a private network).
    #[default]
    None,
    /// HTTP Basic with client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic {
        client_id: String,
        client_secret: Secret,
    },
    /// Client id and secret in the form body.
    ClientSecretPost {
        client_id: String,
        client_secret: Secret,
    },
    /// A signed client assertion (RFC 7523), e.g. with an RS256 or ES256 key.
    PrivateKeyJwt {
        client_id: String,
        /// PEM private key.
        private_key: Secret,
        #[serde(default = "default_assertion_alg")]
        algorithm: String,
        key_id: Option<String>,
    },
    /// Mutual TLS with a client certificate (RFC 8705 `tls_client_auth`).
    TlsClientAuth {
        client_id: String,
        /// PEM certificate chain and private key.
        certificate: PathBuf,
        private_key: Secret,
    },
}

fn default_assertion_alg() -> String {
    "RS256".into()
}

fn default_introspection_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_retries() -> u32 {
    1
}

fn default_positive_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_min_refresh_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

/// A secret value, never written in the config itself: read from an environment variable
/// or a file (e.g. a mounted Kubernetes Secret). Trailing newlines of files are dropped.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl Secret {
    /// Reads the secret. `base_dir` resolves a relative file path.
    pub fn resolve(&self, base_dir: &Path) -> Result<Vec<u8>, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable `{var}` is not set")),
            (None, Some(file)) => {
                let path = base_dir.join(file);
                let mut bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Ok(bytes)
            }
            _ => Err("a secret needs exactly one of `env` or `file`".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Verified tokens kept, at most. Each entry holds the token's claims (about 1–2 KiB).
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    /// How long a JWT that failed verification for a reason time cannot mend (expired,
    /// bad signature, wrong issuer or audience, malformed, refused algorithm) is
    /// remembered, so a client that repeats it costs a hash look-up instead of a
    /// signature check. Failures that may pass later (unknown `kid`, not valid yet, keys
    /// not loaded) are never remembered. `0s` turns this off.
    #[serde(default = "default_rejected_ttl", with = "humantime_serde")]
    #[schemars(with = "String", example = "60s")]
    pub rejected_ttl: Duration,
    /// Rejected tokens remembered, at most (about 100 bytes each).
    #[serde(default = "default_cache_entries")]
    pub max_rejected: u64,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        TokenCacheConfig {
            max_entries: default_cache_entries(),
            rejected_ttl: default_rejected_ttl(),
            max_rejected: default_cache_entries(),
        }
    }
}

fn default_rejected_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_cache_entries() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateHeader {
    /// e.g. `x-forwarded-client-cert` or `client-cert`. Only trust it when the proxy
    /// in front always sets (and overwrites) it.
    pub header: String,
    pub format: CertificateHeaderFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateHeaderFormat {
    /// Envoy's `x-forwarded-client-cert` (`Cert="<url-encoded PEM>"`; last element).
    Xfcc,
    /// RFC 9440 `Client-Cert` (`:<base64 DER>:`).
    ClientCert,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// How old a proof's `iat` may be.
    #[serde(default = "default_dpop_max_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
    /// How far in the future a proof's `iat` may be (clock skew).
    #[serde(default = "default_dpop_leeway", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub leeway: Duration,
    /// Accepted proof algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Where used proof ids (`jti`) are remembered, so a proof is accepted once.
    #[serde(default)]
    pub replay_cache: ReplayCacheConfig,
    /// Server nonces (RFC 9449 §9): proofs must carry one this server handed out.
    #[serde(default)]
    pub nonce: NonceConfig,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            max_age: default_dpop_max_age(),
            leeway: default_dpop_leeway(),
            algorithms: default_algorithms(),
            replay_cache: ReplayCacheConfig::default(),
            nonce: NonceConfig::default(),
        }
    }
}

/// DPoP server nonces: stateless (an HMAC over a time window), so no store is needed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// Require a nonce in every proof: one without a current nonce is answered 401
    /// `use_dpop_nonce` with a fresh one in `DPoP-Nonce`.
    #[serde(default)]
    pub required: bool,
    /// How long a nonce is good for: from this to twice this (the current and the
    /// previous window are accepted).
    #[serde(default = "default_nonce_lifetime", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lifetime: Duration,
    /// The HMAC key (at least 32 bytes), shared by replicas so each accepts the others'
    /// nonces. Without it a key is made at start: one replica only, and a restart asks
    /// clients for a new nonce once.
    pub key: Option<Secret>,
}

impl Default for NonceConfig {
    fn default() -> Self {
        NonceConfig {
            required: false,
            lifetime: default_nonce_lifetime(),
            key: None,
        }
    }
}

fn default_nonce_lifetime() -> Duration {
    Duration::from_secs(300)
}

fn default_dpop_max_age() -> Duration {
    Duration::from_secs(60)
}

fn default_dpop_leeway() -> Duration {
    Duration::from_secs(5)
}

/// One replica: in memory. Several replicas: Redis, so a proof used at one is refused at
/// all (a replica that cannot reach Redis refuses DPoP requests: fail closed).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayCacheConfig {
    /// Proof ids kept in memory, at most (without `redis_url`).
    #[serde(default = "default_replay_entries")]
    pub max_entries: u64,
    /// Share the cache through Redis, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Key prefix in Redis.
    #[serde(default = "default_replay_prefix")]
    pub prefix: String,
}

impl Default for ReplayCacheConfig {
    fn default() -> Self {
        ReplayCacheConfig {
            max_entries: default_replay_entries(),
            redis_url: None,
            prefix: default_replay_prefix(),
        }
    }
}

fn default_replay_entries() -> u64 {
    100_000
}

fn default_replay_prefix() -> String {
    "sluis:dpop:".into()
}

/// An URL Sluis fetches security material from: https, or plain http with consent.
fn check_url(issuer: &str, what: &str, url: &str, allow_http: bool) -> Result<(), String> {
    if url == "auto" && what == "jwks" {
        return Ok(());
    }
    let insecure = url.starts_with("http://");
    if !(url.starts_with("https://") || insecure) {
        return Err(format!(
            "issuer `{issuer}`: {what} url `{url}` must be https"
        ));
    }
    if insecure && !allow_http {
        return Err(format!(
            "issuer `{issuer}`: {what} url `{url}` is plain http; set \
             `allow_insecure_http: true` only for loopback test setups"
        ));
    }
    Ok(())
}

impl AggregatedClaimsConfig {
    /// Exactly one way to trust embedded JWTs, and algorithms that fit it.
    pub fn check(&self) -> Result<(), String> {
        let given = [
            self.shared_secret.is_some(),
            self.jwks_file.is_some(),
            self.public_key.is_some(),
            self.vouched_by_issuer,
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(
                "needs exactly one of `shared_secret`, `jwks_file`, `public_key` or `vouched_by_issuer: true`"
                    .into(),
            );
        }
        for alg in self.algorithms.iter().flatten() {
            let parsed = super::parse_algorithm(alg)?;
            let symmetric = super::jwks::KeyFamily::of(parsed) == super::jwks::KeyFamily::Hmac;
            if symmetric && (self.jwks_file.is_some() || self.public_key.is_some()) {
                return Err(format!("`{alg}` needs a `shared_secret`, not a public key"));
            }
            if !symmetric && self.shared_secret.is_some() {
                return Err(format!("`{alg}` needs a public key, not a `shared_secret`"));
            }
        }
        Ok(())
    }
}
