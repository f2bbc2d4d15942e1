//! The service configuration file (YAML): listeners, issuers, policy locations, caches,
//! logging. Every struct rejects unknown keys, so a typo fails the load with the key's name
//! instead of being silently ignored.
//!
//! Relative paths in the file are resolved against the directory the file lives in, so a
//! config and its policies can be moved together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// Errors loading the configuration file. Each names the file and what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Listeners,
    /// Token issuers Sluis trusts. Policies name the ones they accept.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Policy files or directories (every `*.yaml`/`*.yml` in a directory, not recursive;
    /// files ending in `.test.yaml` are test suites, not policies).
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    /// A candidate policy set, decided beside the enforced one and never enforced: every
    /// decision is also put to it, and where it would answer differently that is logged
    /// and counted. Off unless present.
    pub candidate: Option<CandidateConfig>,
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    /// Headers removed from every allowed request whatever the policy says, e.g. a prefix
    /// of headers only Sluis may set (`x-sluis-*` is always removed).
    #[serde(default)]
    pub strip_headers: Vec<String>,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where a client certificate comes from when the gateway does not send it in the
    /// check itself (Envoy's `include_peer_certificate` does): a header set by the proxy
    /// that terminated mutual TLS. Used for certificate-bound tokens (RFC 8705) and
    /// `source.certificate` in policies.
    pub client_certificate: Option<CertificateHeader>,
    /// DPoP (RFC 9449) proof checking for DPoP-bound tokens.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// Where registered flows are kept. Without a store, policies see no flows and the
    /// flows API is off.
    pub store: Option<StoreConfig>,
    /// The AuthZEN door on `listeners.http` ([`crate::doors::authzen`]).
    #[serde(default)]
    pub authzen: AuthzenConfig,
    /// Which gateways ask Sluis over the HTTP doors, so that what they cannot do is said at
    /// load time (`sluis validate`, `sluis serve`) instead of found out in production.
    #[serde(default)]
    pub gateways: GatewaysConfig,
    /// The decision log ([`crate::audit`]): off unless this block is present.
    pub decision_log: Option<crate::audit::DecisionLogConfig>,
    /// Request bodies the gateways send along (Envoy `with_request_body`, forward-auth).
    #[serde(default)]
    pub request_body: RequestBodyConfig,
    /// Traces over OTLP ([`crate::telemetry`]): off unless this block is present.
    pub tracing: Option<crate::telemetry::TracingConfig>,
    /// Directory the file was loaded from; relative paths resolve against it.
    #[serde(skip)]
    #[schemars(skip)]
    pub base_dir: PathBuf,
}

/// `candidate:`: the policy set a rollout is heading for.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    /// Policy files or directories, as in `policies`. Loaded, validated and hot-reloaded
    /// like the enforced set, but apart from it: a broken candidate never touches the
    /// enforced set.
    pub policies: Vec<PathBuf>,
    /// How many decisions may wait for the candidate set. It decides after the enforced
    /// answer is given, off the hot path; beyond this, decisions are not put to it, and
    /// are counted as dropped.
    #[serde(default = "default_candidate_queue")]
    pub queue: usize,
}

fn default_candidate_queue() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Envoy ext_authz gRPC (`envoy.service.auth.v3.Authorization`) and `grpc.health.v1`.
    #[serde(default = "default_grpc")]
    pub grpc: SocketAddr,
    /// Admin HTTP: `/healthz`, `/readyz`.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// The HTTP front doors, on one port: forward-auth for NGINX, Traefik, Caddy and
    /// Envoy's `http_service`, the OPA Data API for Kong and APISIX, AuthZEN and the Care
    /// Services Proxy endpoints. Off unless set.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Timeouts and limits on the listeners' connections, against slow or idle clients
    /// holding them open (slowloris).
    #[serde(default)]
    pub limits: ListenerLimits,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            grpc: default_grpc(),
            admin: default_admin(),
            http: None,
            limits: ListenerLimits::default(),
        }
    }
}

/// Connection timeouts and limits. The HTTP ones apply to the admin listener and the HTTP
/// doors, each on its own; the `grpc_` ones to the ext_authz listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// HTTP/1: how long a client may take to send a request's line and headers, counted
    /// from the connection's start or the previous answer. So it is also the longest an
    /// idle keep-alive connection is kept open.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_read_timeout: Duration,
    /// The longest a request may take from its headers to its answer, reading its body
    /// included; past it the answer is 408 and the request is not decided.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// Connections open at once on each HTTP listener, at most. One more is accepted and
    /// closed at once (counted in `sluis_connections_refused_total`), not queued: a
    /// gateway sees the refusal and retries elsewhere instead of waiting.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTP/2 (all listeners): how often an idle connection is pinged, and how long the
    /// answer may take before the connection is closed as dead.
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub http2_keepalive_interval: Duration,
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub http2_keepalive_timeout: Duration,
    /// HTTP/2 (all listeners): requests in flight on one connection, at most. Envoy opens
    /// another connection when it needs more.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// gRPC: TCP keep-alive probes on idle connections after this long.
    #[serde(default = "default_tcp_keepalive", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grpc_tcp_keepalive: Duration,
    /// gRPC: the longest one Check may take; past it the answer is DEADLINE_EXCEEDED and
    /// the gateway's failure mode decides.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grpc_request_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            http2_keepalive_interval: default_keepalive_interval(),
            http2_keepalive_timeout: default_keepalive_timeout(),
            max_concurrent_streams: default_max_concurrent_streams(),
            grpc_tcp_keepalive: default_tcp_keepalive(),
            grpc_request_timeout: default_request_timeout(),
        }
    }
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections() -> usize {
    4096
}

fn default_keepalive_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_concurrent_streams() -> u32 {
    1024
}

fn default_tcp_keepalive() -> Duration {
    Duration::from_secs(60)
}

fn default_grpc() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9191))
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9190))
}

/// The gateways in front of the HTTP doors (forward-auth and the OPA Data API).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaysConfig {
    /// The gateways that call `listeners.http`. Policies that rewrite the query, or remove
    /// headers these gateways cannot remove on Sluis's word, are warned about at load.
    #[serde(default)]
    pub http: Vec<HttpGateway>,
    /// Headers the gateways' own configuration removes from every request they forward
    /// (e.g. NGINX `proxy_set_header Authorization "";`), so a policy removing them needs
    /// no warning.
    #[serde(default)]
    pub removes_headers: Vec<String>,
}

/// A gateway that calls an HTTP door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpGateway {
    /// Envoy's ext_authz filter with `http_service` (forward-auth door).
    Envoy,
    /// NGINX `auth_request` (forward-auth door).
    Nginx,
    /// Traefik `ForwardAuth` (forward-auth door).
    Traefik,
    /// Caddy `forward_auth` (forward-auth door).
    Caddy,
    /// Kong's `opa` plugin (OPA Data API door).
    Kong,
    /// APISIX's `opa` plugin (OPA Data API door).
    Apisix,
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
    /// `caller` (see [`crate::policy::caller`]).
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

fn default_algorithms() -> Vec<String> {
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

/// Request bodies sent to the doors for a decision.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBodyConfig {
    /// Largest request body a door accepts, in bytes: a larger one is refused with 413,
    /// never decided on a part. Keep the gateway's own limit (Envoy
    /// `with_request_body.max_request_bytes`) at or below it.
    #[serde(default = "default_max_body_bytes")]
    pub max_bytes: usize,
}

impl Default for RequestBodyConfig {
    fn default() -> Self {
        RequestBodyConfig {
            max_bytes: default_max_body_bytes(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    64 * 1024
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
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            max_age: default_dpop_max_age(),
            leeway: default_dpop_leeway(),
            algorithms: default_algorithms(),
            replay_cache: ReplayCacheConfig::default(),
        }
    }
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

/// What the admin listener offers besides health and readiness.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `POST /explain`: decide a request given as JSON (with a token or bare claims) and
    /// return the decision with its trace. Off by default: it reveals how policies work
    /// to whoever can reach the admin listener.
    #[serde(default)]
    pub explain: bool,
    /// The bearer token the flows API (HTTP `/v1/flows` and gRPC) requires.
    pub token: Option<Secret>,
    /// Serve the flows API without authentication. For development only; Sluis warns at
    /// start.
    #[serde(default)]
    pub allow_anonymous: bool,
}

/// The AuthZEN Authorization API door.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzenConfig {
    /// The bearer token callers (the PEPs) must present. Without it, anyone who can reach
    /// `listeners.http` may ask for decisions.
    pub token: Option<Secret>,
    /// The PDP's issuer identifier (`https://pdp.example.org`), published in
    /// `/.well-known/authzen-configuration` with the endpoint URLs under it. Default: the
    /// scheme and host the metadata request was sent to.
    pub issuer: Option<String>,
}

/// The flow store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:flows.db` (a file, relative to this config's directory, created when
    /// missing), `sqlite::memory:` (tests), or `postgres://user@host:5432/db` when several
    /// replicas share flows. Put the password in `password`, not here.
    pub url: String,
    /// The PostgreSQL password, from an environment variable or file.
    pub password: Option<Secret>,
    /// Database connections, at most.
    #[serde(default = "default_store_connections")]
    pub max_connections: u32,
    /// How long a write may take in all (waiting for another write, a connection, the
    /// statements and the commit) before failing with 503; an import gets this for
    /// every 1000 flows.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// How often the index checks the store for changes it was not told about (with
    /// PostgreSQL, changes are pushed; this is the safety net).
    #[serde(default = "default_store_poll", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
}

fn default_store_connections() -> u32 {
    8
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_store_poll() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A tracing filter, e.g. `info` or `sluis=debug,info`. `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    pub(crate) fn check(&self) -> Result<(), String> {
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
            let parsed = crate::authn::parse_algorithm(alg)?;
            let symmetric =
                crate::authn::jwks::KeyFamily::of(parsed) == crate::authn::jwks::KeyFamily::Hmac;
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

impl Config {
    /// Reads and checks the file. Policies are not loaded here (see [`crate::policy`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Config::parse(&text, path, base_dir)
    }

    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut config: Config =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(crate::yaml_error_message(&e)))?;
        config.base_dir = base_dir;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    /// Checks what serde cannot: consistency between fields.
    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for issuer in &self.issuers {
            let name = &issuer.name;
            if !names.insert(name.as_str()) {
                return Err(format!("issuer `{name}` is defined twice"));
            }
            for alg in &issuer.algorithms {
                crate::authn::parse_algorithm(alg).map_err(|e| format!("issuer `{name}`: {e}"))?;
                if alg.starts_with("HS") && issuer.shared_secret.is_none() {
                    return Err(format!(
                        "issuer `{name}`: algorithm `{alg}` needs a `shared_secret`"
                    ));
                }
            }
            let introspects_all = issuer.introspection.as_ref().is_some_and(|i| i.always);
            match &issuer.jwks {
                None if issuer.shared_secret.is_none() && issuer.introspection.is_none() => {
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
            if let Some(introspection) = &issuer.introspection {
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
            if issuer.scope_claim.is_empty() {
                return Err(format!("issuer `{name}`: `scope_claim` is empty"));
            }
            if let Some(aggregated) = &issuer.aggregated_claims {
                aggregated
                    .check()
                    .map_err(|e| format!("issuer `{name}`: aggregated_claims: {e}"))?;
            }
        }
        for alg in &self.dpop.algorithms {
            let parsed = crate::authn::parse_algorithm(alg).map_err(|e| format!("dpop: {e}"))?;
            if crate::authn::jwks::KeyFamily::of(parsed) == crate::authn::jwks::KeyFamily::Hmac {
                return Err(format!(
                    "dpop: `{alg}` is symmetric; proofs are signed with private keys"
                ));
            }
        }
        if self.policies.is_empty() {
            return Err("`policies` lists no policy file or directory".into());
        }
        if let Some(candidate) = &self.candidate {
            if candidate.policies.is_empty() {
                return Err("`candidate.policies` lists no policy file or directory".into());
            }
            if candidate.queue == 0 {
                return Err("`candidate.queue` must be at least 1".into());
            }
        }
        if let Some(store) = &self.store {
            let url = store.url.as_str();
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err("`store.url` must start with `sqlite:` or `postgres://`".into());
            }
            if store.max_connections == 0 {
                return Err("`store.max_connections` must be at least 1".into());
            }
        }
        if self.admin.token.is_some() && self.admin.allow_anonymous {
            return Err("`admin.token` and `admin.allow_anonymous` exclude each other".into());
        }
        if let Some(log) = &self.decision_log {
            log.check().map_err(|e| format!("decision_log: {e}"))?;
        }
        if self.request_body.max_bytes == 0 {
            return Err("`request_body.max_bytes` must be at least 1".into());
        }
        if let Some(tracing) = &self.tracing {
            tracing.check().map_err(|e| format!("tracing: {e}"))?;
        }
        if self.token_cache.max_entries == 0 {
            return Err("`token_cache.max_entries` must be at least 1".into());
        }
        Ok(())
    }

    /// This config with the candidate set's policies in place of the enforced ones: what
    /// the candidate set is loaded (and checked) with. `None` without a candidate.
    pub fn candidate_config(&self) -> Option<Config> {
        let candidate = self.candidate.as_ref()?;
        let mut config = self.clone();
        config.policies = candidate.policies.clone();
        config.candidate = None;
        Some(config)
    }

    /// A path from the config, resolved against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("sluis.yaml"), PathBuf::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_candidate_set_is_checked_like_the_policies() {
        let err = parse("policies: [p]\ncandidate: {policies: [c], qeue: 1}\n").unwrap_err();
        assert!(err.contains("unknown field `qeue`"), "{err}");
        let err = parse("policies: [p]\ncandidate: {policies: []}\n").unwrap_err();
        assert!(
            err.contains("`candidate.policies` lists no policy"),
            "{err}"
        );
        let err = parse("policies: [p]\ncandidate: {policies: [c], queue: 0}\n").unwrap_err();
        assert!(
            err.contains("`candidate.queue` must be at least 1"),
            "{err}"
        );
        let config = parse("policies: [p]\ncandidate: {policies: [c]}\n").unwrap();
        let candidate = config.candidate_config().unwrap();
        assert_eq!(candidate.policies, vec![PathBuf::from("c")]);
        assert!(candidate.candidate.is_none());
        assert_eq!(config.candidate.unwrap().queue, 1024);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("policies: [p]\nlisteners:\n  grcp: 127.0.0.1:1\n").unwrap_err();
        assert!(err.contains("unknown field `grcp`"), "{err}");
        assert!(err.starts_with("sluis.yaml:"), "{err}");
    }

    #[test]
    fn hs_algorithms_need_a_secret() {
        let err = parse(
            "policies: [p]\nissuers:\n- name: a\n  issuer: https://a\n  jwks: {file: k.json}\n  algorithms: [HS256]\n",
        )
        .unwrap_err();
        assert!(err.contains("needs a `shared_secret`"), "{err}");
    }

    #[test]
    fn aggregated_claims_and_request_body_are_checked() {
        let issuer =
            "policies: [p]\nissuers:\n- name: a\n  issuer: https://a\n  jwks: {file: k.json}\n";
        let err = parse(&format!("{issuer}  aggregated_claims: {{}}\n")).unwrap_err();
        assert!(
            err.contains("issuer `a`: aggregated_claims: needs exactly one of"),
            "{err}"
        );
        let err = parse(&format!(
            "{issuer}  aggregated_claims: {{vouched_by_issuer: true, trust: all}}\n"
        ))
        .unwrap_err();
        assert!(err.contains("unknown field `trust`"), "{err}");
        let config = parse(&format!(
            "{issuer}  aggregated_claims: {{vouched_by_issuer: true}}\n"
        ))
        .unwrap();
        assert!(config.issuers[0].aggregated_claims.is_some());
        assert_eq!(config.request_body.max_bytes, 64 * 1024);
        let err = parse("policies: [p]\nrequest_body: {max_bytes: 0}\n").unwrap_err();
        assert!(
            err.contains("`request_body.max_bytes` must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn none_is_never_an_algorithm() {
        let err = parse(
            "policies: [p]\nissuers:\n- name: a\n  issuer: https://a\n  jwks: {file: k.json}\n  algorithms: [none]\n",
        )
        .unwrap_err();
        assert!(err.contains("`none`"), "{err}");
    }

    #[test]
    fn plain_http_jwks_needs_consent() {
        let err = parse(
            "policies: [p]\nissuers:\n- name: a\n  issuer: https://a\n  jwks: {url: 'http://127.0.0.1:1/jwks'}\n",
        )
        .unwrap_err();
        assert!(err.contains("allow_insecure_http"), "{err}");
    }

    #[test]
    fn tracing_is_off_unless_configured_and_checked_when_it_is() {
        assert!(parse("policies: [p]\n").unwrap().tracing.is_none());
        let err = parse(
            "policies: [p]\ntracing:\n  otlp: {endpoint: 'http://c:4317'}\n  sampling_ratio: -1\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("sluis.yaml: tracing: `sampling_ratio`"),
            "{err}"
        );
        let err =
            parse("policies: [p]\ntracing:\n  otlp: {endpoint: 'http://c:4317'}\n  ratio: 1\n")
                .unwrap_err();
        assert!(err.contains("unknown field `ratio`"), "{err}");
    }

    #[test]
    fn durations_are_humane() {
        let config = parse(
            "policies: [p]\nissuers:\n- name: a\n  issuer: https://a\n  jwks: {file: k.json}\n  max_lifetime: 1h\n  leeway: 5s\n",
        )
        .unwrap();
        assert_eq!(
            config.issuers[0].max_lifetime,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(config.issuers[0].leeway, Duration::from_secs(5));
    }

    #[test]
    fn secrets_come_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "hunter2\n").unwrap();
        let secret = Secret {
            env: None,
            file: Some("s".into()),
        };
        assert_eq!(secret.resolve(dir.path()).unwrap(), b"hunter2");
        let missing = Secret {
            env: Some("SLUIS_TEST_SURELY_UNSET".into()),
            file: None,
        };
        assert!(missing.resolve(dir.path()).unwrap_err().contains("not set"));
    }
}
