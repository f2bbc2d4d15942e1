//! The `sources:` and `lookups:` sections of the config file, as the core reads them.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::authn::settings::Secret;

/// Every declared source and the bounds every decision's look-ups share.
#[derive(Debug, Clone, Default)]
pub struct SourceSettings {
    pub sources: Vec<SourceConfig>,
    pub lookups: LookupLimits,
    /// The config file's directory: relative paths resolve against it.
    pub base_dir: PathBuf,
}

/// `lookups:`: bounds on the look-ups of one decision.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupLimits {
    /// Every look-up of one decision shares this budget; what is not answered by then
    /// fails (`timed out`).
    #[serde(default = "default_deadline", with = "humantime_serde")]
    #[schemars(with = "String", example = "1s")]
    pub deadline: Duration,
    /// Distinct look-ups one decision may make; beyond this they fail.
    #[serde(default = "default_max_per_decision")]
    pub max_per_decision: usize,
    /// Rounds of look-ups (a look-up whose argument needs another source's answer is a
    /// second round); beyond this they fail.
    #[serde(default = "default_max_rounds")]
    pub max_rounds: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            deadline: default_deadline(),
            max_per_decision: default_max_per_decision(),
            max_rounds: default_max_rounds(),
        }
    }
}

fn default_deadline() -> Duration {
    Duration::from_secs(1)
}
fn default_max_per_decision() -> usize {
    16
}
fn default_max_rounds() -> usize {
    3
}

/// One declared source, called from policies as `sources.NAME(...)`. A key that neither
/// every source nor its kind takes is refused.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SourceConfig {
    /// The name policies call it by: lowercase letters, digits and `_`, starting with a
    /// letter, at most 32 characters.
    pub name: String,
    #[serde(flatten)]
    pub kind: KindConfig,
    /// How Sluis authenticates itself to the source.
    #[serde(default)]
    pub client_auth: SourceAuth,
    /// PEM CA certificate(s) to trust instead of the system's roots.
    pub ca_certificate: Option<PathBuf>,
    /// Allow a plain `http://` URL (loopback test setups only).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// One attempt's time limit.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String", example = "500ms")]
    pub timeout: Duration,
    /// Attempts after the first, only on a connection failure, a timeout or 502/503/504,
    /// and only within the decision's deadline.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Calls in flight to this source at once; a look-up that cannot start within the
    /// decision's deadline fails (`busy`), so one slow source cannot hold every worker.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Largest answer accepted.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default)]
    pub cache: SourceCache,
    #[serde(default)]
    pub circuit: CircuitConfig,
}

/// The keys every kind of source takes.
const COMMON_KEYS: [&str; 11] = [
    "name",
    "kind",
    "client_auth",
    "ca_certificate",
    "allow_insecure_http",
    "timeout",
    "retries",
    "max_concurrent",
    "max_response_bytes",
    "cache",
    "circuit",
];

impl KindConfig {
    /// The keys only this kind takes.
    fn keys(&self) -> &'static [&'static str] {
        match self {
            KindConfig::Http { .. } => &["method", "url"],
            KindConfig::Fhir { .. } => &["base_url", "search_method", "max_results"],
            KindConfig::Userinfo { .. } => &["endpoint"],
            KindConfig::Mitz { .. } => &["endpoint", "defaults", "data_holders"],
        }
    }
}

/// A source with whatever keys were left over beside it.
#[derive(Deserialize)]
struct Checked {
    #[serde(flatten)]
    config: SourceConfig,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// A declared source whose every key is known to its kind.
struct Strict(SourceConfig);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        let Checked { config, rest } = Checked::deserialize(deserializer)?;
        let kind = config.kind.keys();
        let unknown = rest
            .keys()
            .find(|key| !COMMON_KEYS.contains(&key.as_str()) && !kind.contains(&key.as_str()));
        match unknown {
            None => Ok(Strict(config)),
            Some(key) => {
                let expected = COMMON_KEYS
                    .iter()
                    .chain(kind)
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                // Worded as serde's own, so the config's "did you mean" finds the nearest.
                Err(serde::de::Error::custom(format!(
                    "source `{}` ({}): unknown field `{key}`, expected one of {expected}",
                    config.name,
                    config.kind.name()
                )))
            }
        }
    }
}

/// Reads `sources:`, refusing a key that neither every source nor its kind takes: serde
/// alone cannot refuse unknown fields beside a flattened `kind`, and would ignore them.
pub fn deserialize_sources<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SourceConfig>, D::Error> {
    let strict = Vec::<Strict>::deserialize(deserializer)?;
    Ok(strict.into_iter().map(|Strict(config)| config).collect())
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_retries() -> u32 {
    1
}
fn default_max_concurrent() -> usize {
    32
}
fn default_max_response_bytes() -> usize {
    1 << 20
}

/// What kind of source, with what only that kind has.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KindConfig {
    /// A JSON API: GET, or POST with the argument map as the JSON body.
    Http {
        #[serde(default)]
        method: HttpMethod,
        /// The URL; `{name}` is replaced by the argument `name`, percent-encoded as one
        /// path segment (or query value), so an argument cannot change which URL is
        /// called.
        url: String,
    },
    /// A FHIR server: `{'read': 'Type/id'}` or `{'search': 'Type', 'params': {...}}`.
    Fhir {
        base_url: String,
        /// `POST` (the default): `[type]/_search` with a form body, so identifiers stay
        /// out of URLs (and the FHIR server's access logs); `GET` for servers without it.
        #[serde(default = "post")]
        search_method: HttpMethod,
        /// Sent as `_count`; a searchset with a `next` link fails (a partial page is
        /// never taken for the whole answer).
        #[serde(default = "default_max_results")]
        max_results: u32,
    },
    /// OIDC userinfo, asked with the caller's own token: `sources.NAME()`.
    Userinfo { endpoint: String },
    /// Mitz, the Dutch consent service: an XACML closed question over mutual TLS.
    Mitz {
        endpoint: String,
        /// Inputs every question gets unless the call gives them (`author_ura`,
        /// `author_facility_type`, `event_code`, `purpose_of_use`, ...).
        #[serde(default)]
        defaults: std::collections::BTreeMap<String, String>,
        /// The data holders (URAs, 8 digits) this deployment answers for. When set, a
        /// question naming another data holder (`author_ura`, from a call or `defaults`)
        /// is not asked of Mitz: the look-up fails with bad arguments, so the rule that
        /// asked denies. Empty (the default): any well-formed URA is asked.
        #[serde(default)]
        data_holders: Vec<String>,
    },
}

fn post() -> HttpMethod {
    HttpMethod::Post
}

fn default_max_results() -> u32 {
    100
}

impl KindConfig {
    /// The kind's name as the config writes it.
    pub fn name(&self) -> &'static str {
        match self {
            KindConfig::Http { .. } => "http",
            KindConfig::Fhir { .. } => "fhir",
            KindConfig::Userinfo { .. } => "userinfo",
            KindConfig::Mitz { .. } => "mitz",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "post")]
    Post,
}

/// How Sluis authenticates itself to a source.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, tag = "method", rename_all = "snake_case")]
pub enum SourceAuth {
    #[default]
    None,
    /// `Authorization: Bearer` with a fixed token read from a file or the environment.
    Bearer { token: Secret },
    /// OAuth2 client credentials (RFC 6749 §4.4), the client authenticated with HTTP Basic.
    ClientCredentials {
        token_endpoint: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    /// Mutual TLS with a client certificate.
    Mtls {
        /// PEM certificate chain.
        certificate: PathBuf,
        /// PEM private key.
        private_key: Secret,
    },
}

/// `cache:` of one source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceCache {
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// How long an answer is kept; never longer than its own `Cache-Control: max-age` or
    /// `Expires`. `0s`: not cached.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    #[schemars(with = "String", example = "300s")]
    pub ttl: Duration,
    /// How long a negative answer (404, an empty search, a Mitz Deny) is kept.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    #[schemars(with = "String", example = "30s")]
    pub negative_ttl: Duration,
}

impl Default for SourceCache {
    fn default() -> Self {
        SourceCache {
            max_entries: default_max_entries(),
            ttl: default_ttl(),
            negative_ttl: default_negative_ttl(),
        }
    }
}

fn default_max_entries() -> u64 {
    10_000
}
fn default_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(30)
}

/// `circuit:` of one source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failed look-ups that open the circuit.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long an open circuit fails look-ups without calling; then one probe is let
    /// through.
    #[serde(default = "default_open_for", with = "humantime_serde")]
    #[schemars(with = "String", example = "30s")]
    pub open_for: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failures: default_failures(),
            open_for: default_open_for(),
        }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

impl SourceSettings {
    /// Checks what serde cannot: names, URLs, mTLS for Mitz.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for source in &self.sources {
            let name = &source.name;
            if !valid_name(name) {
                return Err(format!(
                    "source name `{name}` must be lowercase letters, digits and `_`, start with a letter, and be at most 32 characters"
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("source `{name}` is declared twice"));
            }
            let urls: Vec<&str> = match &source.kind {
                KindConfig::Http { url, .. } => vec![url],
                KindConfig::Fhir { base_url, .. } => vec![base_url],
                KindConfig::Userinfo { endpoint } | KindConfig::Mitz { endpoint, .. } => {
                    vec![endpoint]
                }
            };
            for url in urls {
                let scheme_ok = url.starts_with("https://")
                    || (source.allow_insecure_http && url.starts_with("http://"));
                if !scheme_ok {
                    return Err(format!(
                        "source `{name}`: the URL must be https (`allow_insecure_http` for loopback tests)"
                    ));
                }
            }
            if source.max_concurrent == 0 {
                return Err(format!(
                    "source `{name}`: `max_concurrent` must be at least 1"
                ));
            }
            if source.circuit.failures == 0 {
                return Err(format!(
                    "source `{name}`: `circuit.failures` must be at least 1"
                ));
            }
            if matches!(source.kind, KindConfig::Mitz { .. })
                && !matches!(source.client_auth, SourceAuth::Mtls { .. })
            {
                return Err(format!(
                    "source `{name}`: Mitz is asked over mutual TLS: set `client_auth: {{method: mtls, ...}}`"
                ));
            }
        }
        if self.lookups.max_rounds == 0 || self.lookups.max_per_decision == 0 {
            return Err(
                "`lookups.max_rounds` and `lookups.max_per_decision` must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// The declared names and kinds, for checking policies at load.
    pub fn declared(&self) -> Vec<(String, &'static str)> {
        self.sources
            .iter()
            .map(|s| (s.name.clone(), s.kind.name()))
            .collect()
    }
}

/// `^[a-z][a-z0-9_]{0,31}$`: a CEL identifier that cannot clash with anything.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Deserialize)]
    struct Sources {
        #[serde(deserialize_with = "deserialize_sources")]
        sources: Vec<SourceConfig>,
    }

    fn read(yaml: &str) -> Result<Vec<SourceConfig>, String> {
        serde_yaml_ng::from_str::<Sources>(yaml)
            .map(|s| s.sources)
            .map_err(|e| e.to_string())
    }

    const KINDS: [(&str, &str); 4] = [
        ("http", "url: https://api.example/x"),
        ("fhir", "base_url: https://fhir.example"),
        ("userinfo", "endpoint: https://idp.example/userinfo"),
        ("mitz", "endpoint: https://mitz.example"),
    ];

    #[test]
    fn a_misspelt_optional_key_is_refused_naming_it_and_the_source() {
        let error = read(
            "sources:\n  - {name: holder, kind: fhir, base_url: https://fhir.example, timout: 1s}\n",
        )
        .unwrap_err();
        assert!(error.contains("source `holder` (fhir)"), "{error}");
        assert!(error.contains("unknown field `timout`"), "{error}");
        assert!(error.contains("`timeout`"), "{error}");
        // A key of another kind is as unknown.
        let error = read(
            "sources:\n  - {name: api, kind: http, url: https://api.example, base_url: https://x.example}\n",
        )
        .unwrap_err();
        assert!(error.contains("unknown field `base_url`"), "{error}");
        // Every key a kind documents is taken.
        let all = read(
            "sources:\n  - {name: a, kind: fhir, base_url: https://f.example, search_method: GET, max_results: 5,\n     client_auth: {method: none}, ca_certificate: ca.pem, allow_insecure_http: false, timeout: 1s,\n     retries: 0, max_concurrent: 2, max_response_bytes: 10, cache: {ttl: 1s}, circuit: {failures: 2}}\n",
        );
        assert!(all.is_ok(), "{all:?}");
    }

    /// The keys the check knows are exactly those the schema (and so the reference docs)
    /// lists for a source.
    #[test]
    fn the_known_keys_are_the_schemas() {
        fn collect(value: &serde_json::Value, into: &mut std::collections::BTreeSet<String>) {
            if let Some(object) = value.as_object() {
                for (key, inner) in object {
                    match key.as_str() {
                        "$defs" | "definitions" => {}
                        "properties" => into.extend(
                            inner
                                .as_object()
                                .into_iter()
                                .flat_map(|o| o.keys().cloned()),
                        ),
                        _ => collect(inner, into),
                    }
                }
            } else if let Some(items) = value.as_array() {
                for item in items {
                    collect(item, into);
                }
            }
        }
        let schema = serde_json::to_value(schemars::schema_for!(SourceConfig)).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        collect(&schema, &mut documented);
        let variants = [
            KindConfig::Http {
                method: HttpMethod::Get,
                url: String::new(),
            },
            KindConfig::Fhir {
                base_url: String::new(),
                search_method: HttpMethod::Post,
                max_results: 1,
            },
            KindConfig::Userinfo {
                endpoint: String::new(),
            },
            KindConfig::Mitz {
                endpoint: String::new(),
                defaults: Default::default(),
                data_holders: Vec::new(),
            },
        ];
        let known: std::collections::BTreeSet<String> = COMMON_KEYS
            .iter()
            .chain(variants.iter().flat_map(KindConfig::keys))
            .map(|k| k.to_string())
            .collect();
        assert_eq!(known, documented);
    }

    proptest! {
        /// Any key no source takes, beside any kind, is refused with its name and the
        /// source's; never ignored.
        #[test]
        fn unknown_keys_are_refused_whatever_the_kind(
            key in "[a-z][a-z_]{0,20}",
            kind in 0usize..4,
        ) {
            let (kind, required) = KINDS[kind];
            let known = COMMON_KEYS.contains(&key.as_str())
                || ["method", "url", "base_url", "search_method", "max_results", "endpoint", "defaults", "data_holders"]
                    .contains(&key.as_str());
            prop_assume!(!known);
            let yaml = format!("sources:\n  - name: src\n    kind: {kind}\n    {required}\n    {key}: 1\n");
            let error = read(&yaml).unwrap_err();
            prop_assert!(error.contains(&format!("unknown field `{key}`")), "{}", error);
            prop_assert!(error.contains("source `src`"), "{}", error);
        }
    }
}
