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
use sluis_core::authn::settings::AuthnSettings;
pub use sluis_core::authn::settings::{
    AggregatedClaimsConfig, CertificateHeader, CertificateHeaderFormat, ClientAuth, DpopConfig,
    IntrospectionConfig, IssuerConfig, JwksSource, ReplayCacheConfig, Secret, TokenCacheConfig,
};
use sluis_core::policy::LoadSettings;
pub use sluis_store::StoreConfig;

pub mod telemetry;

/// Errors loading the configuration file. Each names the file and what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is in the message, not the error's source, so that printing the error
    /// with its chain names it once.
    #[error("cannot read config `{path}`: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A problem at a place in the file: `FILE:LINE:COLUMN: ...`, as policy files' errors.
    #[error("{path}:{line}:{column}: {message}")]
    InvalidAt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
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
    /// The AuthZEN door on `listeners.http`.
    #[serde(default)]
    pub authzen: AuthzenConfig,
    /// Which gateways ask Sluis over the HTTP doors, so that what they cannot do is said at
    /// load time (`sluis validate`, `sluis serve`) instead of found out in production.
    #[serde(default)]
    pub gateways: GatewaysConfig,
    /// The decision log: off unless this block is present.
    pub decision_log: Option<sluis_core::audit::DecisionLogConfig>,
    /// Request bodies the gateways send along (Envoy `with_request_body`, forward-auth).
    #[serde(default)]
    pub request_body: RequestBodyConfig,
    /// Traces over OTLP: off unless this block is present.
    pub tracing: Option<telemetry::TracingConfig>,
    /// The ext_proc door, where upstream answers are judged by policies' response rules.
    #[serde(default)]
    pub ext_proc: ExtProcConfig,
    /// Doors that are off unless configured.
    #[serde(default)]
    pub doors: DoorsConfig,
    /// Information sources rules call as `sources.NAME(...)`: FHIR servers, JSON APIs,
    /// OIDC userinfo (docs/sources.md).
    #[serde(
        default,
        deserialize_with = "sluis_core::sources::settings::deserialize_sources"
    )]
    pub sources: Vec<sluis_core::sources::settings::SourceConfig>,
    /// Bounds on one decision's look-ups.
    #[serde(default)]
    pub lookups: sluis_core::sources::settings::LookupLimits,
    /// Directory the file was loaded from; relative paths resolve against it.
    #[serde(skip)]
    #[schemars(skip)]
    pub base_dir: PathBuf,
    /// The file it was loaded from, read again on a reload for its `sources` and `lookups`.
    #[serde(skip)]
    #[schemars(skip)]
    pub path: Option<PathBuf>,
}

/// `doors:`: doors that are off unless configured.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DoorsConfig {
    /// nuts-knooppunt's PDP protocol (`POST /pdp`) on `listeners.http`, so Sluis can stand
    /// behind knooppunt's NGINX PEP unchanged. The PEP has verified the token and sends
    /// its introspection claims: this door trusts them, so it must only be reachable from
    /// the PEP (`allow_from`).
    pub knooppunt_pdp: Option<KnooppuntPdpConfig>,
}

/// `doors.knooppunt_pdp`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnooppuntPdpConfig {
    /// The issuer (a configured name) whose tokens the PEP verified: the relayed claims
    /// are checked as its introspection answers are (active, exp, iss, aud).
    pub issuer: String,
    /// The FHIR base path the PEP strips from the request path (`FHIR_BASE_PATH`): it is
    /// put back, so policies see the same path as through the other doors.
    #[serde(default)]
    pub fhir_base_path: String,
    /// Peers (CIDR blocks) allowed to ask; anyone else gets 403. Default: loopback only.
    #[serde(default = "default_pdp_allow_from")]
    pub allow_from: Vec<String>,
}

impl KnooppuntPdpConfig {
    /// `allow_from`, parsed: a bare address is a block of one.
    pub fn allowed_peers(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.allow_from
            .iter()
            .map(|block| {
                block
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| block.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("`doors.knooppunt_pdp.allow_from`: `{block}` is not an address or CIDR block")
                    })
            })
            .collect()
    }
}

fn default_pdp_allow_from() -> Vec<String> {
    vec!["127.0.0.1/32".into(), "::1/128".into()]
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
    /// TLS on the listeners (rustls). Without it every listener is plaintext: keep them on
    /// loopback or a trusted network.
    #[serde(default)]
    pub tls: Option<ListenersTls>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            grpc: default_grpc(),
            admin: default_admin(),
            http: None,
            limits: ListenerLimits::default(),
            tls: None,
        }
    }
}

/// TLS for the listeners: `certificate` and `private_key` (with an optional `client_ca`)
/// here are shared by every listener; `grpc`, `http` or `admin` give one listener its own.
/// A listener with neither stays plaintext. Relative paths are relative to the config
/// file. The files are read again every `reload_interval`; a change takes effect for new
/// connections, and a change that does not load keeps the previous certificate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenersTls {
    /// PEM certificate chain, leaf first.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// PEM certificates of the CAs whose client certificates are accepted. When set, a
    /// client must present one (mTLS); the handshake fails without it.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// The Envoy ext_authz gRPC listener's own TLS, instead of the shared one.
    #[serde(default)]
    pub grpc: Option<TlsFiles>,
    /// The HTTP doors' own TLS, instead of the shared one.
    #[serde(default)]
    pub http: Option<TlsFiles>,
    /// The admin listener's own TLS, instead of the shared one.
    #[serde(default)]
    pub admin: Option<TlsFiles>,
    /// How often the files are checked for a change; `SIGHUP` checks them at once.
    #[serde(default = "default_tls_reload_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub reload_interval: Duration,
}

/// One listener's certificate, key and optional client CA (see [`ListenersTls`]).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}

impl ListenersTls {
    /// The files of listener `name` (`grpc`, `http`, `admin`), resolved against
    /// `base_dir`; `None`: plaintext.
    pub fn for_listener(&self, name: &str, base_dir: &Path) -> Option<TlsFiles> {
        let own = match name {
            "grpc" => self.grpc.as_ref(),
            "http" => self.http.as_ref(),
            "admin" => self.admin.as_ref(),
            _ => None,
        };
        let files = match (own, &self.certificate, &self.private_key) {
            (Some(own), _, _) => own.clone(),
            (None, Some(certificate), Some(private_key)) => TlsFiles {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
                client_ca: self.client_ca.clone(),
            },
            _ => return None,
        };
        Some(TlsFiles {
            certificate: base_dir.join(files.certificate),
            private_key: base_dir.join(files.private_key),
            client_ca: files.client_ca.map(|ca| base_dir.join(ca)),
        })
    }

    fn check(&self) -> Result<(), String> {
        match (&self.certificate, &self.private_key) {
            (Some(_), None) => return Err("`listeners.tls.certificate` needs `private_key`".into()),
            (None, Some(_)) => return Err("`listeners.tls.private_key` needs `certificate`".into()),
            (None, None) if self.client_ca.is_some() => {
                return Err(
                    "`listeners.tls.client_ca` needs `certificate` and `private_key`".into(),
                );
            }
            (None, None) if self.grpc.is_none() && self.http.is_none() && self.admin.is_none() => {
                return Err("`listeners.tls` names no certificate: set `certificate` and `private_key`, or a listener's own".into());
            }
            _ => {}
        }
        if self.reload_interval < Duration::from_secs(1) {
            return Err("`listeners.tls.reload_interval` must be at least 1s".into());
        }
        Ok(())
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
    /// gateway sees the refusal and retries elsewhere instead of waiting. On the gRPC
    /// listener with TLS, the TLS handshakes in progress at most: one more ends the oldest
    /// unfinished handshake (a client that never sends its ClientHello).
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

/// The ext_proc door (`envoy.service.ext_proc.v3`) on `listeners.grpc`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtProcConfig {
    /// The secret (at least 32 bytes) grants are sealed with: a request decided by one
    /// replica may have its answer judged by another, so all replicas need the same.
    /// Without it, each process makes a random key, and only the replica that decided a
    /// request can judge its answer.
    pub grant_key: Option<Secret>,
    /// The largest answer body judged (bytes). Default 4 MiB; match Envoy's
    /// `per_connection_buffer_limit_bytes`.
    #[serde(default = "default_ext_proc_max_body")]
    pub max_body_bytes: usize,
}

impl Default for ExtProcConfig {
    fn default() -> ExtProcConfig {
        ExtProcConfig {
            grant_key: None,
            max_body_bytes: default_ext_proc_max_body(),
        }
    }
}

fn default_ext_proc_max_body() -> usize {
    4 * 1024 * 1024
}

/// The shortest grant key accepted (bytes): HMAC-SHA256's block of randomness.
pub const MIN_GRANT_KEY: usize = 32;

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
    /// Capability URNs published in the metadata's `capabilities` (omitted when empty,
    /// as the spec asks of empty parameters).
    #[serde(default)]
    pub capabilities: Vec<String>,
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

impl Config {
    /// Reads and checks the file. Policies are not loaded here (see [`sluis_core::policy`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut config = Config::parse(&text, path, base_dir)?;
        config.path = Some(path.to_owned());
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut config: Config = serde_yaml_ng::from_str(text).map_err(|e| {
            // `FILE:LINE:COLUMN: ...`, as policy files' errors are reported.
            let message = sluis_core::yaml_error_message(&e);
            match e.location() {
                Some(at) => ConfigError::InvalidAt {
                    path: path.to_owned(),
                    line: at.line(),
                    column: at.column(),
                    message,
                },
                None => invalid(message),
            }
        })?;
        config.base_dir = base_dir;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    /// Checks what serde cannot: consistency between fields.
    fn check(&self) -> Result<(), String> {
        self.authn_settings().check()?;
        self.source_settings().check()?;
        if let Some(tls) = &self.listeners.tls {
            tls.check()?;
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
        if self.ext_proc.max_body_bytes == 0 {
            return Err("`ext_proc.max_body_bytes` must be at least 1".into());
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
        if let Some(pdp) = &self.doors.knooppunt_pdp {
            if !self.issuers.iter().any(|i| i.name == pdp.issuer) {
                return Err(format!(
                    "`doors.knooppunt_pdp.issuer` `{}` is not a configured issuer",
                    pdp.issuer
                ));
            }
            if !(pdp.fhir_base_path.is_empty() || pdp.fhir_base_path.starts_with('/')) {
                return Err("`doors.knooppunt_pdp.fhir_base_path` must start with `/`".into());
            }
            pdp.allowed_peers()?;
        }
        if let Some(tracing) = &self.tracing {
            tracing.check().map_err(|e| format!("tracing: {e}"))?;
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

    /// What the authenticator is built from: the `issuers`, `token_cache`,
    /// `client_certificate` and `dpop` sections.
    pub fn authn_settings(&self) -> AuthnSettings {
        AuthnSettings {
            issuers: self.issuers.clone(),
            token_cache: self.token_cache.clone(),
            client_certificate: self.client_certificate.clone(),
            dpop: self.dpop.clone(),
            base_dir: self.base_dir.clone(),
        }
    }

    /// What the policy set is loaded with: `policies`, and what of the service they may
    /// name.
    pub fn policy_settings(&self) -> LoadSettings {
        LoadSettings {
            policies: self.policies.clone(),
            issuers: self.issuers.iter().map(|i| i.name.clone()).collect(),
            client_certificate: self.client_certificate.clone(),
            strip_headers: self.strip_headers.clone(),
            base_dir: self.base_dir.clone(),
            sources: self.source_settings().declared(),
        }
    }

    /// What the information sources are built from: `sources` and `lookups`.
    pub fn source_settings(&self) -> sluis_core::sources::settings::SourceSettings {
        sluis_core::sources::settings::SourceSettings {
            sources: self.sources.clone(),
            lookups: self.lookups.clone(),
            base_dir: self.base_dir.clone(),
        }
    }

    /// The engine this config describes: its policies loaded and checked, its issuers
    /// set up, counting in `metrics`. Every problem is reported, not just the first.
    pub fn build_engine(
        &self,
        metrics: std::sync::Arc<sluis_core::metrics::Metrics>,
    ) -> Result<sluis_core::engine::Engine, Vec<String>> {
        let policies = sluis_core::policy::PolicySet::load(&self.policy_settings())
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let sources = if self.sources.is_empty() {
            None
        } else {
            Some(
                sluis_core::sources::SourceSet::new(&self.source_settings(), metrics.clone())
                    .map_err(|e| vec![e])?,
            )
        };
        let authn = sluis_core::authn::Authenticator::new(&self.authn_settings(), metrics)
            .map_err(|e| vec![e])?;
        let engine = sluis_core::engine::Engine::new(policies, authn);
        let engine = match sources {
            Some(sources) => engine.with_sources(std::sync::Arc::new(sources)),
            None => engine,
        };
        Ok(match &self.ext_proc.grant_key {
            Some(secret) => engine.with_grant_secret(&self.grant_key(secret).map_err(|e| vec![e])?),
            None => engine,
        })
    }

    /// The configured grant key, long enough.
    fn grant_key(&self, secret: &Secret) -> Result<Vec<u8>, String> {
        let key = secret
            .resolve(&self.base_dir)
            .map_err(|e| format!("`ext_proc.grant_key`: {e}"))?;
        if key.len() < MIN_GRANT_KEY {
            return Err(format!(
                "`ext_proc.grant_key` is {} bytes, fewer than {MIN_GRANT_KEY}",
                key.len()
            ));
        }
        Ok(key)
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
    fn a_misspelt_key_beside_a_source_kind_is_refused_with_a_suggestion() {
        let err = parse(
            "policies: [p]\nsources:\n  - name: holder\n    kind: fhir\n    base_url: https://fhir.example\n    max_concurent: 4\n",
        )
        .unwrap_err();
        assert!(
            err.contains(
                "source `holder` (fhir): unknown field `max_concurent` (did you mean `max_concurrent`?)"
            ),
            "{err}"
        );
        assert!(err.starts_with("sluis.yaml:"), "{err}");
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
        assert!(
            err.contains("sluis.yaml:3:3: listeners: unknown field `grcp` (did you mean `grpc`?)"),
            "{err}"
        );
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
    fn a_grant_key_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short"), "short\n").unwrap();
        let mut config = parse("policies: [p]\next_proc: {grant_key: {file: short}}\n").unwrap();
        config.base_dir = dir.path().to_owned();
        let secret = config.ext_proc.grant_key.clone().unwrap();
        let err = config.grant_key(&secret).unwrap_err();
        assert!(err.contains("5 bytes, fewer than 32"), "{err}");
        std::fs::write(dir.path().join("short"), "k".repeat(32)).unwrap();
        assert_eq!(config.grant_key(&secret).unwrap().len(), 32);
        assert_eq!(
            parse("policies: [p]\n").unwrap().ext_proc.max_body_bytes,
            4 << 20
        );
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
