//! One decision's look-ups: what its rules asked, what was answered, and what is still
//! wanted. Rules reach it through [`Scope`] while they are evaluated (CEL functions are
//! synchronous and get no per-request state of their own).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cel::common::value::Val;

use super::{
    Answer, Key, LookupFailure, Outcome, Query, SharedAnswer, SourceSet, write_canonical,
    write_canonical_fields,
};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    Hit,
    Miss,
    /// An identical look-up was already in flight; this one waited for it.
    Joined,
    /// A test fixture: no cache, no network.
    Fixture,
    /// Never asked: the arguments were bad, or a bound was reached.
    NotAsked,
}

impl CacheState {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "hit",
            CacheState::Miss => "miss",
            CacheState::Joined => "joined",
            CacheState::Fixture => "fixture",
            CacheState::NotAsked => "not asked",
        }
    }
}

/// A look-up a rule needs and the cache could not answer.
#[derive(Debug)]
pub struct Pending {
    source: usize,
    key: Key,
    query: Arc<Query>,
    /// The arguments as canonical JSON.
    args: Vec<u8>,
}

/// One answered (or failed) look-up of this decision.
struct Entry {
    source: usize,
    key: Key,
    outcome: Outcome,
    cache: CacheState,
    /// The arguments as canonical JSON (what explain shows, masked).
    args: Vec<u8>,
    took_ms: u64,
}

/// A test case's answer for calls to one source (`sluis test`).
#[derive(Debug, Clone)]
pub struct Fixture {
    pub source: String,
    /// Only calls with these arguments (canonical JSON); any call when absent.
    pub args: Option<serde_json::Value>,
    pub answer: FixtureAnswer,
}

#[derive(Debug, Clone)]
pub enum FixtureAnswer {
    Value(serde_json::Value),
    /// A failure kind: `timeout`, `connect`, `circuit_open`, `busy`, `invalid`, or
    /// `status:503`.
    Error(String),
}

/// One look-up as explain shows it: arguments and value masked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LookupTrace {
    pub source: String,
    pub args: String,
    pub cache: &'static str,
    pub outcome: String,
    pub value: Option<String>,
    pub ms: u64,
}

/// One decision's look-ups.
pub struct Lookups {
    set: Arc<SourceSet>,
    /// The caller's bearer token (userinfo), and its `sub`.
    token: Option<Arc<str>>,
    sub: Option<String>,
    fixtures: Option<Arc<[Fixture]>>,
    table: Mutex<Vec<Entry>>,
    wanted: Mutex<Vec<Pending>>,
    /// When the look-ups must be done: set when the first is fetched, from the
    /// configured `lookups.deadline`. A decision whose look-ups are all cached never reads
    /// the clock for it.
    deadline: std::sync::OnceLock<tokio::time::Instant>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").finish_non_exhaustive()
    }
}

impl Lookups {
    /// The look-ups of one decision. `token`: the caller's presented bearer token (not a
    /// DPoP-bound one, for which no proof can be made), `sub` the verified token's subject.
    pub fn new(
        set: Arc<SourceSet>,
        token: Option<Arc<str>>,
        sub: Option<String>,
        fixtures: Option<Arc<[Fixture]>>,
    ) -> Lookups {
        Lookups {
            set,
            token,
            sub,
            fixtures,
            table: Mutex::new(Vec::new()),
            wanted: Mutex::new(Vec::new()),
            deadline: std::sync::OnceLock::new(),
        }
    }

    pub fn max_rounds(&self) -> usize {
        self.set.limits.max_rounds
    }

    /// A call `sources.NAME(arg)` from a rule: the answer if this decision or the cache
    /// has it; else the look-up is noted as wanted and the call fails for now.
    pub fn call(&self, name: &str, arg: &dyn Val) -> Result<SharedAnswer, String> {
        self.call_with(name, |out| write_canonical(arg, out))
    }

    /// A call `sources.NAME({...})` whose argument is a map literal, given as its fields
    /// (their names distinct) instead of a built map: the same look-up as [`Lookups::call`]
    /// with that map.
    pub fn call_fields(
        &self,
        name: &str,
        fields: &mut [(&str, &dyn Val)],
    ) -> Result<SharedAnswer, String> {
        self.call_with(name, |out| write_canonical_fields(fields, out))
    }

    /// A call whose canonical arguments `write` writes.
    fn call_with(
        &self,
        name: &str,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<SharedAnswer, String> {
        let Some(index) = self.set.index(name) else {
            return Err(format!(
                "no source `{name}` is declared (declared: {})",
                self.set.names().collect::<Vec<_>>().join(", ")
            ));
        };
        let Some(source) = self.set.get(index) else {
            return Err(format!("no source `{name}`"));
        };
        let failed = |failure: LookupFailure| format!("source `{name}`: {failure}");
        let mut args = Vec::with_capacity(64);
        write(&mut args).map_err(|e| failed(LookupFailure::Arguments(e)))?;
        let key = if matches!(source.kind, super::kinds::Kind::Userinfo { .. }) {
            // Userinfo answers for the caller's token: the token is the key.
            self.set
                .key(index, self.token.as_deref().unwrap_or("").as_bytes())
        } else {
            self.set.key(index, &args)
        };
        {
            let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = table.iter().find(|e| e.key == key) {
                return match &entry.outcome {
                    Ok(answer) => Ok(SharedAnswer(answer.clone())),
                    Err(failure) => Err(failed(failure.clone())),
                };
            }
        }
        if self.fixtures.is_none()
            && let Some(answer) = source.cached(&key)
        {
            source.count_hit();
            let value = SharedAnswer(answer.clone());
            self.record(index, key, Ok(answer), CacheState::Hit, args, 0);
            return Ok(value);
        }
        // Not answered yet: the arguments as JSON, to build the request from.
        let json: serde_json::Value = serde_json::from_slice(&args)
            .map_err(|e| failed(LookupFailure::Arguments(e.to_string())))?;
        let query = match source
            .kind
            .query(&json, self.token.as_ref(), self.sub.as_deref())
        {
            Ok(query) => query,
            Err(failure) => {
                let text = failed(failure.clone());
                self.record(index, key, Err(failure), CacheState::NotAsked, args, 0);
                return Err(text);
            }
        };
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        if !wanted.iter().any(|p| p.key == key) {
            let asked = self.table.lock().unwrap_or_else(|p| p.into_inner()).len();
            if asked + wanted.len() >= self.set.limits.max_per_decision {
                drop(wanted);
                self.record(
                    index,
                    key,
                    Err(LookupFailure::TooMany),
                    CacheState::NotAsked,
                    args,
                    0,
                );
                return Err(failed(LookupFailure::TooMany));
            }
            wanted.push(Pending {
                source: index,
                key,
                query: Arc::new(query),
                args,
            });
        }
        Err(format!("source `{name}`: not fetched yet"))
    }

    fn record(
        &self,
        source: usize,
        key: Key,
        outcome: Outcome,
        cache: CacheState,
        args: Vec<u8>,
        took_ms: u64,
    ) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.iter().any(|e| e.key == key) {
            table.push(Entry {
                source,
                key,
                outcome,
                cache,
                args,
                took_ms,
            });
        }
    }

    /// The look-ups wanted since the last call, which are forgotten here.
    pub fn take_wanted(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.wanted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Fails `pending` without asking (`lookups.max_rounds` reached).
    pub fn refuse(&self, pending: Vec<Pending>, failure: LookupFailure) {
        for p in pending {
            self.record(
                p.source,
                p.key,
                Err(failure.clone()),
                CacheState::NotAsked,
                p.args,
                0,
            );
        }
    }

    /// Fetches every pending look-up concurrently, within the decision's deadline. Returns
    /// the first failure, as `source `NAME`: what failed`.
    pub async fn fetch_all(&self, pending: Vec<Pending>) -> Option<String> {
        let deadline = *self
            .deadline
            .get_or_init(|| tokio::time::Instant::now() + self.set.limits.deadline);
        let fetches = pending.into_iter().map(|p| async move {
            let started = Instant::now();
            let (outcome, state) = match (&self.fixtures, self.set.get(p.source)) {
                (Some(fixtures), Some(source)) => (
                    fixture(fixtures, &source.name, &p.args),
                    CacheState::Fixture,
                ),
                // Each look-up keeps to the deadline itself (and says whether it was
                // busy or timed out); this only guards against one that does not.
                (None, Some(source)) => match tokio::time::timeout_at(
                    deadline + std::time::Duration::from_millis(250),
                    source.lookup(p.key, p.query.clone(), deadline),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => (Err(LookupFailure::Timeout), CacheState::Miss),
                },
                (_, None) => (
                    Err(LookupFailure::Other("unknown source".into())),
                    CacheState::NotAsked,
                ),
            };
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            (p, outcome, state, took)
        });
        let results = futures_util::future::join_all(fetches).await;
        let mut first = None;
        for (p, outcome, state, took) in results {
            if let (Err(failure), None) = (&outcome, &first) {
                let name = self.set.get(p.source).map_or("?", |s| &*s.name);
                first = Some(format!("source `{name}`: {failure}"));
            }
            self.record(p.source, p.key, outcome, state, p.args, took);
        }
        first
    }

    /// Every look-up of this decision, masked, for explain.
    pub fn report(&self) -> Vec<LookupTrace> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .iter()
            .map(|e| LookupTrace {
                source: self
                    .set
                    .get(e.source)
                    .map_or_else(|| "?".to_owned(), |s| s.name.to_string()),
                args: super::masker()
                    .mask(&String::from_utf8_lossy(&e.args))
                    .into_owned(),
                cache: e.cache.as_str(),
                outcome: match &e.outcome {
                    Ok(answer) if answer.negative => "negative".into(),
                    Ok(_) => "ok".into(),
                    Err(failure) => failure.to_string(),
                },
                value: e.outcome.as_ref().ok().map(|a| a.shown.clone()),
                ms: e.took_ms,
            })
            .collect()
    }
}

/// The fixture answering a call.
fn fixture(fixtures: &[Fixture], source: &str, args: &[u8]) -> Outcome {
    let args: serde_json::Value =
        serde_json::from_slice(args).map_err(|e| LookupFailure::Arguments(e.to_string()))?;
    let args = &args;
    let found = fixtures
        .iter()
        .filter(|f| f.source == source)
        .find(|f| f.args.as_ref().is_none_or(|a| a == args))
        .ok_or_else(|| {
            let keys = match args {
                serde_json::Value::Object(map) => {
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                }
                _ => String::new(),
            };
            LookupFailure::NoFixture(format!("`sources.{source}`, keys: {keys}"))
        })?;
    match &found.answer {
        FixtureAnswer::Value(json) => {
            let value = super::kinds::to_cel(json)?;
            Ok(Arc::new(Answer::new(value, json.is_null())?))
        }
        FixtureAnswer::Error(kind) => Err(match kind.as_str() {
            "timeout" => LookupFailure::Timeout,
            "connect" | "unavailable" => LookupFailure::Connect,
            "circuit_open" => LookupFailure::CircuitOpen,
            "busy" => LookupFailure::Busy,
            "invalid" => LookupFailure::Invalid("the fixture says so"),
            other => match other
                .strip_prefix("status:")
                .and_then(|s| s.trim().parse().ok())
            {
                Some(status) => LookupFailure::Status(status),
                None => LookupFailure::Other(other.to_owned()),
            },
        }),
    }
}

thread_local! {
    /// The look-ups of the decision whose rules this thread is evaluating.
    static CURRENT: RefCell<Option<Arc<Lookups>>> = const { RefCell::new(None) };
}

/// Makes `lookups` the ones `sources.NAME(...)` calls on this thread reach, until dropped.
/// Rules are evaluated synchronously, never across an `.await`, so the thread is the
/// decision's for as long as the scope lives.
pub struct Scope {
    previous: Option<Arc<Lookups>>,
}

impl Scope {
    pub fn enter(lookups: Option<Arc<Lookups>>) -> Scope {
        let previous = CURRENT.with(|c| c.replace(lookups));
        Scope { previous }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| {
            c.replace(previous);
        });
    }
}

/// `sources.NAME(arg)` as a rule calls it.
pub fn call_current(name: &str, arg: &dyn Val) -> Result<SharedAnswer, String> {
    with_current(name, |lookups| lookups.call(name, arg))
}

/// `sources.NAME({...})` with a map literal, as a rule calls it: see [`Lookups::call_fields`].
pub fn call_current_fields(
    name: &str,
    fields: &mut [(&str, &dyn Val)],
) -> Result<SharedAnswer, String> {
    with_current(name, |lookups| lookups.call_fields(name, fields))
}

fn with_current(
    name: &str,
    call: impl FnOnce(&Lookups) -> Result<SharedAnswer, String>,
) -> Result<SharedAnswer, String> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(lookups) => call(lookups),
        None => Err(format!(
            "source `{name}`: no information sources are configured here"
        )),
    })
}
