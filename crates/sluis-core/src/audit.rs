//! The decision log: one JSON line per decision, for the accounting care networks owe
//! ("elk besluit wordt vastgelegd").
//!
//! `engine::Engine::decide`, where every front door meets, hands a
//! [`DecisionRecord`] to a [`DecisionLog`] handle and goes on deciding. A bounded queue
//! carries records to a writer thread, which masks identifiers ([`crate::mask`]), formats the
//! line, chains it to the previous one when asked ([`chain`]) and writes it to a sink
//! ([`sink`]): stdout or a size-rotated file. The engine does no I/O and never waits on the
//! disk, unless the operator chose `on_full: block` because losing a line is worse than a
//! slower answer.
//!
//! With a candidate policy set (`engine::candidate`) a record first waits for the
//! candidate's decision, which it then carries; a shadow policy's record carries what it
//! would have answered.
//!
//! A line never holds a token: the caller appears as its claims `iss`, `sub`,
//! `client_id`, `act.sub` and the token's short hash.

pub mod chain;

pub mod sink;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::authn::Identity;
use crate::decision::Decision;
use crate::decision::Unavailable;
use crate::policy::PolicySet;
use crate::request::AccessRequest;

use crate::mask::{MaskConfig, Masker};
use sink::Sink;

/// `decision_log:` in the config. Without the block, no decision is logged.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// Where lines go: `stdout` (beside the service's own log) or `file` (`path`).
    #[serde(default)]
    pub sink: SinkKind,
    /// The log file for `sink: file`; relative to the config's directory.
    pub path: Option<PathBuf>,
    /// Size in bytes at which the file is rotated: `FILE` becomes `FILE.1`, `FILE.1`
    /// becomes `FILE.2`, and so on.
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// How many rotated files (`FILE.1` .. `FILE.N`) are kept beside the current one.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// How many lines may wait for the writer. Beyond that, `on_full` decides.
    #[serde(default = "default_queue")]
    pub queue: usize,
    #[serde(default)]
    pub on_full: OnFull,
    #[serde(default)]
    pub mask: MaskConfig,
    /// Tamper evidence: each line carries `prev`, the SHA-256 of the line before it (the
    /// first line the genesis value, 64 zeros), across restarts and rotations. Checked by
    /// `sluis audit verify`.
    #[serde(default)]
    pub chain: bool,
}

fn default_max_size() -> u64 {
    100 * 1024 * 1024
}

fn default_max_files() -> usize {
    5
}

fn default_queue() -> usize {
    8192
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    Stdout,
    File,
}

/// What a decision does when the queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// The line is dropped and counted; the decision is not slowed.
    #[default]
    Drop,
    /// The decision waits until the writer has room: no line is lost, but a slow disk
    /// slows every answer.
    Block,
}

impl DecisionLogConfig {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.sink == SinkKind::File && self.path.is_none() {
            return Err("`sink: file` needs a `path`".into());
        }
        if self.queue == 0 {
            return Err("`queue` must be at least 1".into());
        }
        if self.max_size == 0 {
            return Err("`max_size` must be at least 1 byte".into());
        }
        Ok(())
    }
}

/// What the engine knows about one decision, unmasked and unformatted: the writer thread
/// does that work, off the hot path.
pub struct DecisionRecord {
    pub time: SystemTime,
    pub door: &'static str,
    pub request_id: Option<String>,
    /// The raw `traceparent` header; the writer extracts the trace id.
    pub traceparent: Option<String>,
    /// The trace id of the decision's span, when tracing is on (`engine::TraceContext`):
    /// logged instead of the header's, so a line and its span name the same trace (the
    /// header's when it was valid, else the new trace the span started).
    pub trace_id: Option<String>,
    /// The set that decided; `None` only when the engine failed before choosing.
    pub policies: Option<Arc<PolicySet>>,
    pub policy: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    pub outcome: &'static str,
    pub status: u16,
    pub reason: String,
    pub caller: Option<Arc<Identity>>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub latency: Duration,
    /// What a shadow policy would have answered; `None` when the deciding policy is
    /// enforced.
    pub shadow: Option<Verdict>,
    /// What the candidate policy set would have answered, when one is evaluated beside
    /// the enforced set.
    pub candidate: Option<CandidateVerdict>,
    /// For a judged answer: how many of its entries were kept and withheld.
    pub response: Option<ResponseCounts>,
    /// For an AuthZEN search: what was searched and how much was found.
    pub search: Option<SearchCounts>,
}

/// How many entries of a judged answer were kept and withheld: counts only, never what
/// the entries held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResponseCounts {
    pub kept: usize,
    pub withheld: usize,
}

/// An AuthZEN search: its kind (`subject`, `resource`, `action`), how many candidates
/// were decided and how many were allowed. No ids: a subject's id may be personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SearchCounts {
    pub kind: &'static str,
    pub candidates: usize,
    pub found: usize,
}

/// One answer, as the log states it: what, how and who decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `allow`, `deny`, or `unavailable` when it could not be decided.
    pub outcome: &'static str,
    /// The HTTP status the client gets (200 for allow, 503 for unavailable).
    pub status: u16,
    pub policy: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    pub reason: String,
}

impl Verdict {
    pub fn of(result: &Result<Decision, Unavailable>) -> Verdict {
        match result {
            Ok(decision) => Verdict {
                outcome: if decision.is_allow() { "allow" } else { "deny" },
                status: decision.status(),
                policy: decision.policy.clone(),
                rule: Some(decision.rule.clone()),
                reason: decision.reason.clone(),
            },
            // The gateway's failure mode decides; Envoy gets UNAVAILABLE.
            Err(unavailable) => Verdict {
                outcome: "unavailable",
                status: 503,
                policy: None,
                rule: None,
                reason: format!("{}: {}", unavailable.cause, unavailable.detail),
            },
        }
    }
}

/// The candidate policy set's answer to a decision, and how it differs from the
/// enforced one.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateVerdict {
    /// The candidate set's version (content hash).
    pub policy_set_version: String,
    pub verdict: Verdict,
    /// `None` when the candidate agrees; else `outcome` (allow, deny or unavailable
    /// differ), `status` (both deny, with different statuses) or `rule` (same answer,
    /// another policy or rule decided).
    pub disagreement: Option<&'static str>,
}

impl DecisionRecord {
    /// A record of `request` and what the engine made of it.
    pub fn new(
        request: &AccessRequest,
        result: &Result<Decision, Unavailable>,
        policies: Option<Arc<PolicySet>>,
        caller: Option<Arc<Identity>>,
        time: SystemTime,
        latency: Duration,
    ) -> DecisionRecord {
        let Verdict {
            outcome,
            status,
            policy,
            rule,
            reason,
        } = Verdict::of(result);
        DecisionRecord {
            time,
            door: request.door.0,
            request_id: request.header("x-request-id").map(str::to_owned),
            traceparent: request.header("traceparent").map(str::to_owned),
            trace_id: None,
            policies,
            policy,
            rule,
            outcome,
            status,
            reason,
            caller,
            method: request.method.clone(),
            host: request.host.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            latency,
            shadow: None,
            candidate: None,
            response: None,
            search: None,
        }
    }
}

/// One line of the log, in field order.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    decision_id: &'a str,
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    door: &'a str,
    policy: Option<&'a str>,
    policy_set_version: Option<&'a str>,
    rule: Option<&'a str>,
    outcome: &'a str,
    status: u16,
    reason: &'a str,
    caller: Option<Caller<'a>>,
    request: RequestLine<'a>,
    latency_us: u128,
    /// `shadow` when a shadow policy decided (the answer above is then what the gateway
    /// was told); absent for enforced policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    /// A shadow policy's would-be answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    would: Option<Answer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<CandidateLine<'a>>,
    /// A judged answer's entries: kept and withheld.
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseCounts>,
    /// An AuthZEN search: its kind, candidates decided, found.
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<SearchCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<&'a str>,
}

#[derive(Serialize)]
struct Answer<'a> {
    outcome: &'a str,
    status: u16,
    policy: Option<&'a str>,
    rule: Option<&'a str>,
    reason: std::borrow::Cow<'a, str>,
}

impl<'a> Answer<'a> {
    fn new(verdict: &'a Verdict, masker: &Masker) -> Answer<'a> {
        Answer {
            outcome: verdict.outcome,
            status: verdict.status,
            policy: verdict.policy.as_deref(),
            rule: verdict.rule.as_deref(),
            reason: masker.mask(&verdict.reason),
        }
    }
}

#[derive(Serialize)]
struct CandidateLine<'a> {
    policy_set_version: &'a str,
    #[serde(flatten)]
    answer: Answer<'a>,
    agrees: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disagreement: Option<&'a str>,
}

#[derive(Serialize)]
struct Caller<'a> {
    iss: &'a str,
    sub: Option<&'a str>,
    client_id: Option<&'a str>,
    act_sub: Option<&'a str>,
    /// A short hash of the token, to correlate lines of one token; never the token.
    token_hash: &'a str,
}

#[derive(Serialize)]
struct RequestLine<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), when well formed
/// and not all zeros.
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

/// Random version 4 UUIDs for the lines' decision ids, their random bits drawn from the
/// system's generator (aws-lc) for [`IdPool::IDS`] ids at a time, where `Uuid::new_v4`
/// makes a `getrandom` system call for each (BENCHMARKS.md, session 24). The ids need to
/// be unique, not secret.
struct IdPool {
    drawn: Box<[[u8; 16]; IdPool::IDS]>,
    /// How many of `drawn` were used.
    used: usize,
}

impl IdPool {
    const IDS: usize = 256;

    fn new() -> IdPool {
        IdPool {
            drawn: Box::new([[0; 16]; IdPool::IDS]),
            used: IdPool::IDS,
        }
    }

    fn next(&mut self) -> uuid::Uuid {
        if self.used == IdPool::IDS {
            if aws_lc_rs::rand::fill(self.drawn.as_flattened_mut()).is_err() {
                return uuid::Uuid::new_v4();
            }
            self.used = 0;
        }
        // Always there: `used` is below `IDS` here.
        let Some(&bytes) = self.drawn.get(self.used) else {
            return uuid::Uuid::new_v4();
        };
        self.used += 1;
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The lines' times: RFC 3339 in UTC with microseconds, `2026-12-07T22:30:44.123456Z`.
/// The date and the time of day are formatted once per second, not once per line.
#[derive(Default)]
struct Stamps {
    /// The second `prefix` shows, since the Unix epoch.
    second: Option<u64>,
    /// `2026-12-07T22:30:44`.
    prefix: String,
}

impl Stamps {
    /// The last second of the year 9999: later years do not fit RFC 3339's four digits,
    /// and chrono's own form of them is kept.
    const LAST: u64 = 253_402_300_799;

    fn format(&mut self, time: SystemTime) -> String {
        let since = match time.duration_since(UNIX_EPOCH) {
            Ok(since) if since.as_secs() <= Stamps::LAST => since,
            _ => {
                return chrono::DateTime::<chrono::Utc>::from(time)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            }
        };
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole =
                chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + Duration::from_secs(second));
            self.prefix = whole.format("%Y-%m-%dT%H:%M:%S").to_string();
            self.second = Some(second);
        }
        format!("{}.{:06}Z", self.prefix, since.subsec_micros())
    }
}

/// Turns records into lines: masks, formats and chains. Lives on the writer thread.
struct Formatter {
    masker: Arc<Masker>,
    /// Where the lines' decision ids come from.
    ids: IdPool,
    stamps: Stamps,
    /// The hash of the last line written, when chaining.
    prev: Option<String>,
}

impl Formatter {
    fn line(&mut self, record: &DecisionRecord) -> String {
        let time = self.stamps.format(record.time);
        let path = self.masker.mask(&record.path);
        let query = self.masker.mask(&record.query);
        let reason = self.masker.mask(&record.reason);
        let caller = record.caller.as_deref().map(|identity| Caller {
            iss: &identity.iss,
            sub: identity.sub.as_deref(),
            client_id: identity.client_id.as_deref(),
            act_sub: identity
                .act()
                .and_then(|act| act.get("sub"))
                .and_then(|sub| sub.as_str()),
            token_hash: &identity.token_hash,
        });
        let mut id = uuid::Uuid::encode_buffer();
        let line = Line {
            time,
            decision_id: self.ids.next().hyphenated().encode_lower(&mut id),
            request_id: record.request_id.as_deref(),
            trace_id: record
                .trace_id
                .as_deref()
                .or_else(|| record.traceparent.as_deref().and_then(trace_id)),
            door: record.door,
            policy: record.policy.as_deref(),
            policy_set_version: record.policies.as_deref().map(|p| p.version.as_str()),
            rule: record.rule.as_deref(),
            outcome: record.outcome,
            status: record.status,
            reason: &reason,
            caller,
            request: RequestLine {
                method: &record.method,
                host: &record.host,
                path: &path,
                query: &query,
            },
            latency_us: record.latency.as_micros(),
            mode: record.shadow.as_ref().map(|_| "shadow"),
            would: record
                .shadow
                .as_ref()
                .map(|verdict| Answer::new(verdict, &self.masker)),
            candidate: record.candidate.as_ref().map(|candidate| CandidateLine {
                policy_set_version: &candidate.policy_set_version,
                answer: Answer::new(&candidate.verdict, &self.masker),
                agrees: candidate.disagreement.is_none(),
                disagreement: candidate.disagreement,
            }),
            response: record.response,
            search: record.search,
            prev: self.prev.as_deref(),
        };
        // Serializing plain strings and numbers cannot fail; an empty object keeps the
        // chain and line count honest if it ever did.
        let text = serde_json::to_string(&line).unwrap_or_else(|_| "{}".into());
        if self.prev.is_some() {
            self.prev = Some(chain::line_hash(&text));
        }
        text
    }
}

/// Counters of the log, for metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines lost because the queue was full (or the writer had stopped).
    pub dropped: AtomicU64,
    /// Lines the sink accepted.
    pub written: AtomicU64,
    /// Lines the sink refused (disk full, closed stdout).
    pub failed: AtomicU64,
    /// Unix second of the last "dropping lines" warning, so a full queue warns every
    /// [`WARN_EVERY`] seconds rather than for every decision.
    last_drop_warning: AtomicU64,
    last_failure_warning: AtomicU64,
}

/// Seconds between two warnings about the same kind of loss.
const WARN_EVERY: u64 = 10;

/// True at most once per [`WARN_EVERY`] seconds per `last`.
fn warn_now(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let before = last.load(Ordering::Relaxed);
    now >= before + WARN_EVERY
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// What travels to the writer thread.
enum Message {
    Record(Box<DecisionRecord>),
    /// Answered once every message before it is written and flushed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The engine's handle on the decision log: cheap to clone, never does I/O itself.
#[derive(Clone)]
pub struct DecisionLog {
    sender: mpsc::Sender<Message>,
    on_full: OnFull,
    stats: Arc<LogStats>,
    masker: Arc<Masker>,
}

impl DecisionLog {
    /// Opens the configured sink and starts the writer thread.
    pub fn start(config: &DecisionLogConfig, base_dir: &Path) -> Result<DecisionLog, String> {
        config.check().map_err(|e| format!("decision_log: {e}"))?;
        let (sink, last_line): (Box<dyn Sink>, Option<String>) = match config.sink {
            SinkKind::Stdout => (Box::new(sink::Stdout), None),
            SinkKind::File => {
                let path = base_dir.join(config.path.as_deref().unwrap_or(Path::new("")));
                let last = if config.chain {
                    sink::last_line(&path, config.max_files)
                        .map_err(|e| format!("decision_log: {e}"))?
                } else {
                    None
                };
                let file = sink::RotatingFile::open(&path, config.max_size, config.max_files)
                    .map_err(|e| format!("decision_log: {e}"))?;
                (Box::new(file), last)
            }
        };
        let prev = config.chain.then(|| match &last_line {
            Some(line) => chain::line_hash(line),
            None => chain::GENESIS.to_owned(),
        });
        DecisionLog::with_sink(config, sink, prev)
    }

    /// A log writing to `sink`, chaining from `prev` when given.
    pub fn with_sink(
        config: &DecisionLogConfig,
        sink: Box<dyn Sink>,
        prev: Option<String>,
    ) -> Result<DecisionLog, String> {
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(LogStats::default());
        let masker = Arc::new(Masker::new(&config.mask));
        let formatter = Formatter {
            masker: masker.clone(),
            ids: IdPool::new(),
            stamps: Stamps::default(),
            prev,
        };
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(receiver, formatter, sink, &writer_stats))
            .map_err(|e| format!("decision_log: cannot start the writer thread: {e}"))?;
        Ok(DecisionLog {
            sender,
            on_full: config.on_full,
            stats,
            masker,
        })
    }

    /// Queues a record. With `on_full: drop` this never waits.
    pub async fn record(&self, record: DecisionRecord) {
        let message = Message::Record(Box::new(record));
        let queued = match self.on_full {
            OnFull::Drop => self.sender.try_send(message).is_ok(),
            OnFull::Block => self.sender.send(message).await.is_ok(),
        };
        if !queued {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if warn_now(&self.stats.last_drop_warning) {
                tracing::warn!(
                    dropped,
                    "decision log queue full: lines are being dropped (raise `decision_log.queue` or set `on_full: block`)"
                );
            }
        }
    }

    /// Waits until every line queued before this call is written and flushed: at
    /// shutdown, so the last decisions are not lost with the process.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// What masks identifiers in this log's lines (`decision_log.mask`): the service's own
    /// log masks with it too.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Lines waiting for the writer.
    pub fn queued(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// How long the writer waits, once the queue is empty, for more lines before it flushes.
const LINGER: Duration = Duration::from_micros(200);

/// The writer thread: runs until every handle is gone, flushing once the queue has stayed
/// empty for [`LINGER`], so lines reach the sink within a moment without a flush, or a
/// wake-up of this thread, per line under load.
fn write_lines(
    mut receiver: mpsc::Receiver<Message>,
    mut formatter: Formatter,
    mut sink: Box<dyn Sink>,
    stats: &LogStats,
) {
    while let Some(message) = receiver.blocking_recv() {
        // The next message is taken only once this one is written, so the writer holds
        // at most one record outside the queue and `queue` bounds what waits.
        let mut next = Some(message);
        let mut waiting = Vec::new();
        let mut lingered = false;
        loop {
            let Some(message) = next.take() else {
                // The queue is empty. Once per batch, wait [`LINGER`] for more lines before
                // flushing: under load a decision then neither wakes this thread nor
                // costs a write of its own, as most did when the writer flushed whenever
                // it caught up (2.3–2.8 µs of CPU per decision more, BENCHMARKS.md session
                // 23), and a line reaches the file at most that much later.
                if lingered {
                    break;
                }
                lingered = true;
                std::thread::sleep(LINGER);
                next = receiver.try_recv().ok();
                continue;
            };
            match message {
                Message::Record(record) => {
                    let line = formatter.line(&record);
                    drop(record);
                    match sink.write_line(&line) {
                        Ok(()) => {
                            stats.written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            if warn_now(&stats.last_failure_warning) {
                                tracing::error!("decision log: cannot write a line: {e}");
                            }
                        }
                    }
                }
                Message::Flush(done) => waiting.push(done),
            }
            next = receiver.try_recv().ok();
        }
        if let Err(e) = sink.flush()
            && warn_now(&stats.last_failure_warning)
        {
            tracing::error!("decision log: cannot flush: {e}");
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests;
