//! Information sources: facts a decision needs that the request does not carry (a FHIR
//! resource at the data holder, OIDC userinfo, a JSON API, Mitz consent), declared once in
//! the config and called from rule conditions as `sources.NAME(args)`.
//!
//! How a call reaches the network without making CEL asynchronous (cel 0.15 functions are
//! synchronous): a rule is evaluated; a call whose answer is neither in the request's own
//! table ([`Lookups`]) nor in the source's cache is noted as wanted and fails the rule for
//! now. The engine then fetches every wanted look-up concurrently, within one deadline,
//! and evaluates again. A fully cached decision is one pass with no `.await`. Finding the
//! look-ups by evaluating (instead of a static pre-fetch pass) handles arguments computed
//! in a comprehension and calls behind `&&` guards: `false && sources.a(x)` never calls.
//!
//! Per source: a bounded cache (TTL, negative TTL, capped by `Cache-Control`/`Expires`)
//! keyed by a keyed SHA-256 of the canonical arguments, so no BSN is a key in clear;
//! identical concurrent look-ups share one call; a per-attempt timeout, bounded retries,
//! a circuit breaker and a concurrency limit. A failure never becomes a value: the rule
//! that read it fails (closed), or with `on_error: unavailable` the decision is
//! unavailable. Failure texts name the source and the kind of failure, never a URL, an
//! argument value or an answer.

pub mod cache_control;
pub mod circuit;
mod kinds;
mod lookups;
pub mod mitz;
pub mod settings;
mod shared;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cel::Value;
use cel::common::types::{CelBool, CelDouble, CelInt, CelMapKey, CelNull, CelUInt};
use cel::common::value::{BuiltinRef, Val};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::metrics::Metrics;
pub use kinds::{MITZ_KEYS, Query};
pub use lookups::{
    CacheState, Fixture, FixtureAnswer, LookupTrace, Lookups, Pending, Scope, call_current,
    call_current_fields,
};
use settings::{LookupLimits, SourceConfig, SourceSettings};
pub use shared::{SharedAnswer, SharedMap};

/// A look-up's cache key: a keyed hash of the source and its canonical arguments.
pub type Key = [u8; 32];

/// Largest canonical argument accepted.
const MAX_ARGUMENT_BYTES: usize = 4096;

/// Why a look-up gave no answer. The texts name no URL, argument value or answer body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupFailure {
    #[error("timed out")]
    Timeout,
    #[error("could not connect")]
    Connect,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered a content type other than {0}")]
    ContentType(&'static str),
    #[error("answer not usable: {0}")]
    Invalid(&'static str),
    #[error("answer larger than `max_response_bytes`")]
    TooLarge,
    #[error("circuit open after repeated failures")]
    CircuitOpen,
    #[error("too many look-ups in flight (`max_concurrent`)")]
    Busy,
    #[error("bad arguments: {0}")]
    Arguments(String),
    #[error("no fixture for this call ({0})")]
    NoFixture(String),
    #[error("more look-ups than `lookups.max_per_decision` allows")]
    TooMany,
    #[error("look-ups nest deeper than `lookups.max_rounds`")]
    TooDeep,
    #[error("failed: {0}")]
    Other(String),
}

impl LookupFailure {
    /// Every [`LookupFailure::kind`].
    pub const KINDS: [&'static str; 13] = [
        "timeout",
        "connect",
        "status",
        "content_type",
        "invalid",
        "too_large",
        "circuit_open",
        "busy",
        "arguments",
        "no_fixture",
        "too_many",
        "too_deep",
        "other",
    ];

    /// The failure's kind, for metrics and `sluis test` fixtures.
    pub fn kind(&self) -> &'static str {
        match self {
            LookupFailure::Timeout => "timeout",
            LookupFailure::Connect => "connect",
            LookupFailure::Status(_) => "status",
            LookupFailure::ContentType(_) => "content_type",
            LookupFailure::Invalid(_) => "invalid",
            LookupFailure::TooLarge => "too_large",
            LookupFailure::CircuitOpen => "circuit_open",
            LookupFailure::Busy => "busy",
            LookupFailure::Arguments(_) => "arguments",
            LookupFailure::NoFixture(_) => "no_fixture",
            LookupFailure::TooMany => "too_many",
            LookupFailure::TooDeep => "too_deep",
            LookupFailure::Other(_) => "other",
        }
    }

    /// Whether another attempt may succeed.
    fn retryable(&self) -> bool {
        matches!(
            self,
            LookupFailure::Timeout | LookupFailure::Connect | LookupFailure::Status(502..=504)
        )
    }
}

/// A source's answer as CEL sees it.
#[derive(Debug)]
pub struct Answer {
    /// The answer in the interpreter's own form, converted once when it arrives: every
    /// rule that reads it gets a [`SharedAnswer`] handle on this one copy. (A `cel::Value`
    /// handed back from a function is converted, deeply, on every call: that conversion
    /// was a third of what a cached look-up cost.) Objects in lists are shared
    /// ([`SharedMap`]): a comprehension binds each item it visits by a reference count.
    evaluable: Box<dyn Val>,
    /// Not found / empty / refused: cached for `negative_ttl`.
    pub negative: bool,
    /// Masked and cut to 200 characters, for explain.
    pub shown: String,
}

impl Answer {
    /// An answer of `value`, converted for the interpreter and rendered for explain.
    pub fn new(value: Value, negative: bool) -> Result<Answer, LookupFailure> {
        let shown = shown(&value);
        let evaluable = shared::evaluable(value)
            .map_err(|_| LookupFailure::Invalid("a value CEL cannot hold"))?;
        Ok(Answer {
            evaluable,
            negative,
            shown,
        })
    }
}

pub type Outcome = Result<Arc<Answer>, LookupFailure>;

/// Every declared source, built once from the config.
pub struct SourceSet {
    sources: Vec<Arc<Source>>,
    by_name: HashMap<Arc<str>, usize>,
    /// Keys the cache hashes: made at start, never stored, so a key cannot be matched
    /// against a list of BSNs hashed offline.
    secret: [u8; 32],
    pub limits: LookupLimits,
}

impl std::fmt::Debug for SourceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSet")
            .field("sources", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SourceSet {
    /// Builds every source's client and cache. Counts in `metrics`.
    pub fn new(settings: &SourceSettings, metrics: Arc<Metrics>) -> Result<SourceSet, String> {
        SourceSet::rebuild(None, settings, metrics).map(|(set, _)| set)
    }

    /// Builds the sources of `settings` for a reload, taking over from `previous` every
    /// source whose configuration, and every file and secret it reads, is unchanged: that
    /// source keeps its cache, circuit, limit and client_credentials token, as a restart
    /// would not. A source that changed in any way starts afresh. Also returns the names
    /// taken over.
    pub fn rebuild(
        previous: Option<&SourceSet>,
        settings: &SourceSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(SourceSet, Vec<String>), String> {
        settings.check()?;
        let mut sources = Vec::new();
        let mut by_name = HashMap::new();
        let mut kept = Vec::new();
        for (index, config) in settings.sources.iter().enumerate() {
            let source = Source::new(config, &settings.base_dir, metrics.clone())
                .map_err(|e| format!("source `{}`: {e}", config.name))?;
            let same = previous
                .and_then(|p| p.index(&source.name).and_then(|i| p.get(i)))
                .filter(|old| old.fingerprint == source.fingerprint);
            let source = match same {
                Some(old) => {
                    kept.push(config.name.clone());
                    old.clone()
                }
                None => Arc::new(source),
            };
            by_name.insert(source.name.clone(), index);
            sources.push(source);
        }
        // The cache keys of sources taken over stay valid only under the same secret.
        let secret = match previous {
            Some(previous) => previous.secret,
            None => {
                let mut secret = [0u8; 32];
                let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
                for (slot, byte) in secret
                    .iter_mut()
                    .zip(a.as_bytes().iter().chain(b.as_bytes()))
                {
                    *slot = *byte;
                }
                secret
            }
        };
        Ok((
            SourceSet {
                sources,
                by_name,
                secret,
                limits: settings.lookups.clone(),
            },
            kept,
        ))
    }

    /// Whether a source answers for the caller's own token (userinfo): only then does a
    /// decision's [`Lookups`] need the token and its `sub`.
    pub fn asks_with_the_callers_token(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s.kind, kinds::Kind::Userinfo { .. }))
    }

    /// The declared names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| &*s.name)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn get(&self, index: usize) -> Option<&Arc<Source>> {
        self.sources.get(index)
    }

    /// The cache key of `canonical` arguments to source `index`: by the source's name, not
    /// its place, so a source taken over by a reload keeps its keys.
    fn key(&self, index: usize, canonical: &[u8]) -> Key {
        self.key_of(self.get(index).map_or("", |s| &*s.name), canonical)
    }

    fn key_of(&self, name: &str, canonical: &[u8]) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(canonical);
        hasher.finalize().into()
    }

    /// Forgets the metric series of every source of this set that `next` does not
    /// declare: a source removed by a reload leaves `/metrics`.
    pub fn forget_removed(&self, next: Option<&SourceSet>) {
        for source in &self.sources {
            if next.is_none_or(|next| next.index(&source.name).is_none()) {
                source
                    .metrics
                    .forget_source(&source.name, &LookupFailure::KINDS);
            }
        }
    }

    /// The calls made to each source so far (retries included), for tests and readiness.
    pub fn calls(&self, name: &str) -> u64 {
        self.index(name)
            .and_then(|i| self.get(i))
            .map_or(0, |s| s.calls.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// One declared source: its client, cache and bounds.
pub struct Source {
    pub name: Arc<str>,
    kind: kinds::Kind,
    client: reqwest::Client,
    auth: kinds::Auth,
    cache: moka::sync::Cache<Key, Cached>,
    /// Look-ups in progress, by key: later callers wait for the first one's call.
    flights: Mutex<HashMap<Key, Arc<OnceCell<Outcome>>>>,
    permits: Arc<Semaphore>,
    circuit: Mutex<circuit::Circuit>,
    timeout: Duration,
    retries: u32,
    max_response_bytes: usize,
    ttl: Duration,
    negative_ttl: Duration,
    metrics: Arc<Metrics>,
    /// The `hit` counter, resolved at the first hit: a cached look-up counts without a
    /// label look-up.
    hits: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
    calls: std::sync::atomic::AtomicU64,
    /// A hash of the configuration and of every file and secret read to build it.
    fingerprint: [u8; 32],
}

#[derive(Clone)]
struct Cached {
    answer: Arc<Answer>,
    ttl: Duration,
}

/// Takes a look-up's flight out of its source's table when the caller is done with it.
struct Landing<'a> {
    source: &'a Source,
    key: Key,
    flight: Arc<OnceCell<Outcome>>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut flights = self
            .source
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

/// Each entry lives for its own TTL.
struct ByEntry;

impl moka::Expiry<Key, Cached> for ByEntry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl Source {
    fn new(
        config: &SourceConfig,
        base_dir: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Result<Source, String> {
        let kind = kinds::Kind::new(&config.kind)?;
        let mut read = Sha256::new();
        read.update(format!("{config:?}").as_bytes());
        read.update(base_dir.as_os_str().as_encoded_bytes());
        let (client, auth) = kinds::client(config, base_dir, &mut read)?;
        Ok(Source {
            fingerprint: read.finalize().into(),
            name: Arc::from(config.name.as_str()),
            kind,
            client,
            auth,
            cache: moka::sync::Cache::builder()
                .max_capacity(config.cache.max_entries)
                .expire_after(ByEntry)
                .build(),
            flights: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            circuit: Mutex::new(circuit::Circuit::new(
                config.circuit.failures,
                config.circuit.open_for,
            )),
            timeout: config.timeout,
            retries: config.retries,
            max_response_bytes: config.max_response_bytes,
            ttl: config.cache.ttl,
            negative_ttl: config.cache.negative_ttl,
            metrics,
            hits: std::sync::OnceLock::new(),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn count_hit(&self) {
        self.hits
            .get_or_init(|| self.metrics.source_cache_counter(&self.name, "hit"))
            .inc();
    }

    fn cached(&self, key: &Key) -> Option<Arc<Answer>> {
        self.cache.get(key).map(|c| c.answer)
    }

    /// The answer for `key`: from the cache, from an identical look-up in flight, or by
    /// a call made on its own task (a cancelled decision does not cancel it).
    async fn lookup(
        self: &Arc<Self>,
        key: Key,
        query: Arc<Query>,
        deadline: tokio::time::Instant,
    ) -> (Outcome, CacheState) {
        if let Some(answer) = self.cached(&key) {
            self.count_hit();
            return (Ok(answer), CacheState::Hit);
        }
        let (flight, first) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(OnceCell::new());
                    flights.insert(key, flight.clone());
                    (flight, true)
                }
            }
        };
        self.metrics
            .source_cache(&self.name, if first { "miss" } else { "joined" });
        // However the first caller ends (answered, or dropped with its decision), its
        // flight leaves the table: an abandoned key cannot stay behind. Those who joined
        // leave it to the first.
        let _landing = first.then(|| Landing {
            source: self,
            key,
            flight: flight.clone(),
        });
        let source = self.clone();
        // The decision's span, so the look-up's span is its child although it runs on a
        // task of its own.
        let parent = tracing::Span::current();
        let wait = flight.get_or_init(|| async move {
            let task =
                tokio::spawn(async move { source.fetch(key, query, deadline, parent).await });
            task.await
                .unwrap_or_else(|_| Err(LookupFailure::Other("the look-up task ended".into())))
        });
        // The first caller's fetch keeps to its deadline itself, and says why it failed
        // (`busy` rather than `timed out`); one who joined a flight begun by a decision
        // with a later deadline stops waiting at its own.
        let outcome = if first {
            wait.await.clone()
        } else {
            match tokio::time::timeout_at(deadline, wait).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => Err(LookupFailure::Timeout),
            }
        };
        let state = if first {
            CacheState::Miss
        } else {
            CacheState::Joined
        };
        (outcome, state)
    }

    /// One look-up: circuit, concurrency limit, attempts, caching.
    async fn fetch(
        self: Arc<Self>,
        key: Key,
        query: Arc<Query>,
        deadline: tokio::time::Instant,
        parent: tracing::Span,
    ) -> Outcome {
        // Exported with the decision spans (and kept out of the service's log, as they are).
        let span = tracing::info_span!(
            target: crate::metrics::SPAN_TARGET,
            parent: &parent,
            "sluis.lookup",
            otel.kind = "client",
            source = %self.name,
            kind = self.kind.name(),
            outcome = tracing::field::Empty,
            http.status_code = tracing::field::Empty,
        );
        let outcome =
            tracing::Instrument::instrument(self.fetch_inner(&query, deadline), span.clone()).await;
        match &outcome {
            Ok((answer, ttl)) => {
                span.record("outcome", if answer.negative { "negative" } else { "ok" });
                if !ttl.is_zero() {
                    self.cache.insert(
                        key,
                        Cached {
                            answer: answer.clone(),
                            ttl: *ttl,
                        },
                    );
                }
            }
            Err(failure) => {
                span.record("outcome", failure.kind());
                self.metrics.source_error(&self.name, failure.kind());
            }
        }
        outcome.map(|(answer, _)| answer)
    }

    async fn fetch_inner(
        &self,
        query: &Query,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Answer>, Duration), LookupFailure> {
        let admit = {
            let mut circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
            circuit.admit(Instant::now())
        };
        if admit == circuit::Admit::Refuse {
            return Err(LookupFailure::CircuitOpen);
        }
        let result = self.attempts(query, deadline).await;
        let open = {
            let mut circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
                // Bad arguments or a busy limit say nothing about the source's health.
                Err(LookupFailure::Busy | LookupFailure::Arguments(_)) => {
                    circuit.abandon_probe(Instant::now());
                    matches!(circuit.state(), circuit::State::Open { .. })
                }
                other => circuit.report(other.is_ok(), Instant::now()),
            }
        };
        self.metrics.source_circuit(&self.name, open);
        result
    }

    async fn attempts(
        &self,
        query: &Query,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Answer>, Duration), LookupFailure> {
        let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(LookupFailure::Busy),
        };
        let mut attempt = 0;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(LookupFailure::Timeout);
            }
            let limit = self.timeout.min(deadline - now);
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = Instant::now();
            let result = tokio::time::timeout(limit, self.call(query))
                .await
                .unwrap_or(Err(LookupFailure::Timeout));
            self.metrics.source_call(&self.name, started.elapsed());
            match result {
                Err(failure) if failure.retryable() && attempt < self.retries => {
                    attempt += 1;
                    let pause = Duration::from_millis(25);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(failure);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt.
    async fn call(&self, query: &Query) -> Result<(Arc<Answer>, Duration), LookupFailure> {
        let request = kinds::request(&self.client, &self.auth, query).await?;
        let response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        tracing::Span::current().record("http.status_code", status);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type");
        let (cache_control, age, expires, date) = (
            header("cache-control"),
            header("age"),
            header("expires"),
            header("date"),
        );
        let body = read_limited(response, self.max_response_bytes).await?;
        let parsed = self
            .kind
            .parse(query, status, content_type.as_deref(), &body)?;
        let configured = if parsed.negative {
            self.negative_ttl
        } else {
            self.ttl
        };
        let ttl = if parsed.cacheable {
            cache_control::ttl(
                configured,
                &cache_control::Freshness {
                    cache_control: cache_control.as_deref(),
                    age: age.as_deref(),
                    expires: expires.as_deref(),
                    date: date.as_deref(),
                },
                SystemTime::now(),
            )
        } else {
            Duration::ZERO
        };
        Ok((Arc::new(Answer::new(parsed.value, parsed.negative)?), ttl))
    }
}

/// Reads an answer as a source of `kind` (`fhir`, `http`, `userinfo`, `mitz`) would, for
/// a read (or a search when `search`) and returns its masked rendering: the parsing
/// every answer goes through, exposed for fuzzing and tests. Never panics.
pub fn read_answer(
    kind: &str,
    search: bool,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<String, LookupFailure> {
    let config = match kind {
        "fhir" => settings::KindConfig::Fhir {
            base_url: "https://fhir.invalid".into(),
            search_method: settings::HttpMethod::Post,
            max_results: 100,
        },
        "userinfo" => settings::KindConfig::Userinfo {
            endpoint: "https://idp.invalid".into(),
        },
        "mitz" => settings::KindConfig::Mitz {
            endpoint: "https://mitz.invalid".into(),
            defaults: BTreeMap::new(),
            data_holders: Vec::new(),
        },
        _ => settings::KindConfig::Http {
            method: settings::HttpMethod::Get,
            url: "https://api.invalid".into(),
        },
    };
    let kind = kinds::Kind::new(&config).map_err(LookupFailure::Other)?;
    let query = match kind {
        kinds::Kind::Userinfo { .. } => Query::Userinfo {
            url: String::new(),
            token: Arc::from("t"),
            sub: None,
        },
        _ if search => Query::PostForm {
            url: String::new(),
            form: Vec::new(),
        },
        _ => Query::Get {
            url: String::new(),
            search: false,
        },
    };
    let parsed = kind.parse(&query, status, content_type, body)?;
    Ok(shown(&parsed.value))
}

/// A reqwest error as a failure kind, without its URL.
fn classify(error: reqwest::Error) -> LookupFailure {
    if error.is_timeout() {
        LookupFailure::Timeout
    } else {
        LookupFailure::Connect
    }
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, LookupFailure> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(LookupFailure::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > limit {
            return Err(LookupFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An answer for explain: JSON, masked, at most 200 characters.
fn shown(value: &Value) -> String {
    let text = canonical(value)
        .map(|json| json.to_string())
        .unwrap_or_else(|_| format!("({})", value.type_of()));
    let masked = masker().mask(&text);
    let mut cut: String = masked.chars().take(200).collect();
    if cut.len() < masked.len() {
        cut.push('…');
    }
    cut
}

fn masker() -> &'static crate::mask::Masker {
    static MASKER: std::sync::OnceLock<crate::mask::Masker> = std::sync::OnceLock::new();
    MASKER.get_or_init(|| crate::mask::Masker::new(&crate::mask::MaskConfig::default()))
}

/// A CEL argument as canonical JSON: map keys sorted, only strings, numbers, booleans,
/// null, lists and string-keyed maps. Equal arguments give equal bytes whatever the
/// order they were written in.
pub fn canonical(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or("a number that is not finite")?,
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(canonical).collect::<Result<Vec<_>, _>>()?)
        }
        Value::Map(map) => {
            let mut sorted = BTreeMap::new();
            for (key, value) in map.map.iter() {
                let cel::objects::Key::String(key) = key else {
                    return Err("map keys must be strings".into());
                };
                sorted.insert(key.to_string(), canonical(value)?);
            }
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => return Err(format!("a {} cannot be an argument", other.type_of())),
    })
}

/// Writes a CEL argument, as the interpreter holds it, as canonical JSON: the bytes
/// `canonical` then `canonical_bytes` give for the same value, written straight from the
/// interpreter's value instead of through a `cel::Value` and a `serde_json::Value` (two
/// deep copies, and a map built twice, per call). Bounded by `MAX_ARGUMENT_BYTES`.
pub fn write_canonical(value: &dyn Val, out: &mut Vec<u8>) -> Result<(), String> {
    write_value(value, out)?;
    if out.len() > MAX_ARGUMENT_BYTES {
        return Err(format!("arguments larger than {MAX_ARGUMENT_BYTES} bytes"));
    }
    Ok(())
}

fn write_value(value: &dyn Val, out: &mut Vec<u8>) -> Result<(), String> {
    // Stop early on an argument far beyond the bound (the check after the whole is exact).
    if out.len() > MAX_ARGUMENT_BYTES {
        return Err(format!("arguments larger than {MAX_ARGUMENT_BYTES} bytes"));
    }
    match value.as_builtin() {
        BuiltinRef::String(s) => json(out, s.inner()),
        BuiltinRef::List(list) => {
            out.push(b'[');
            for (i, item) in list.inner().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item.as_ref(), out)?;
            }
            out.push(b']');
            Ok(())
        }
        BuiltinRef::Map(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map.iter() {
                let CelMapKey::String(key) = key else {
                    return Err("map keys must be strings".into());
                };
                entries.push((key.inner(), value.as_ref()));
            }
            write_object(&mut entries, out)
        }
        _ => {
            if let Some(b) = value.downcast_ref::<CelBool>() {
                json(out, b.inner())
            } else if let Some(i) = value.downcast_ref::<CelInt>() {
                json(out, i.inner())
            } else if let Some(u) = value.downcast_ref::<CelUInt>() {
                json(out, u.inner())
            } else if let Some(f) = value.downcast_ref::<CelDouble>() {
                if !f.inner().is_finite() {
                    return Err("a number that is not finite".into());
                }
                json(out, f.inner())
            } else if value.downcast_ref::<CelNull>().is_some() {
                out.extend_from_slice(b"null");
                Ok(())
            } else {
                // Anything else (a list a comprehension built, bytes, a timestamp) the
                // long way, with its errors.
                let value = Value::try_from(value)
                    .map_err(|_| format!("a {} cannot be an argument", value.get_type().name()))?;
                let canonical = canonical(&value)?;
                json(out, &canonical)
            }
        }
    }
}

/// An object of `entries` (their keys distinct), its members in key order.
fn write_object(entries: &mut [(&str, &dyn Val)], out: &mut Vec<u8>) -> Result<(), String> {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json(out, key)?;
        out.push(b':');
        write_value(*value, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// The canonical bytes of a map of `fields` (their names distinct), bounded in size: what
/// [`write_canonical`] writes of a map holding them, without building the map (a rule's
/// map literal of arguments, `sources.mitz({'bsn': ..., ...})`).
pub fn write_canonical_fields(
    fields: &mut [(&str, &dyn Val)],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    write_object(fields, out)?;
    if out.len() > MAX_ARGUMENT_BYTES {
        return Err(format!("arguments larger than {MAX_ARGUMENT_BYTES} bytes"));
    }
    Ok(())
}

fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    serde_json::to_writer(out, value).map_err(|e| e.to_string())
}

/// The canonical bytes of an argument map, bounded in size: what [`write_canonical`]
/// writes, the long way (its reference in the tests).
#[cfg(test)]
fn canonical_bytes(args: &serde_json::Value) -> Result<Vec<u8>, String> {
    // serde_json's map keeps keys sorted (no `preserve_order`), and `canonical` built it
    // from a sorted map either way.
    let bytes = serde_json::to_vec(args).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_ARGUMENT_BYTES {
        return Err(format!("arguments larger than {MAX_ARGUMENT_BYTES} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
