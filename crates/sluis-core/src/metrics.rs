//! Prometheus metrics, served as text on the admin listener at `/metrics`.
//!
//! One registry per server, made at start and handed to what counts: the engine, the
//! authenticator, the listeners (no process-wide global, so tests and tools each count
//! on their own). Counters are bumped where things happen (decisions in the engine, cache look-ups in `authn`, key
//! fetches in the issuers), and values that already live elsewhere (the flow index size,
//! reload status, cache sizes) are read when scraped ([`Metrics::render`]), so nothing is kept
//! twice. Label values are bounded by the configuration: policy and rule ids, issuer
//! names, door names; never a request's path or a caller's identity.

use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::HashTable;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The tracing target of the spans Sluis exports (a decision's `sluis.decide` and each
/// information-source look-up's `sluis.lookup`), so a subscriber can export them and
/// nothing else. Here, at the bottom of the core, so that every layer that opens such a
/// span can name it without importing the engine.
pub const SPAN_TARGET: &str = "sluis::span";

/// The per-shard counter and histogram every decision bumps.
mod shards;

use shards::{ShardedCounter, ShardedHistogram};

/// Decision labels borrow what the decision already holds (policy and rule ids are
/// shared `Arc<str>`s, outcome and door static names), so counting a decision allocates
/// nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: Id,
    rule: Id,
    outcome: &'static str,
    door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabels {
    door: &'static str,
}

/// A policy or rule id as a label value.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Id(Arc<str>);

impl EncodeLabelValue for Id {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// `-`: the label value when no policy or rule decided.
static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    issuer: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabels {
    policy: Id,
    verdict: &'static str,
}

/// An information source's configured name, and what happened (`hit`, `miss`,
/// `joined`; a failure kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Id,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceErrorLabels {
    source: Id,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceNameLabels {
    source: Id,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    policy: String,
    would: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DisagreementLabels {
    kind: String,
    policy: String,
    candidate_policy: String,
}

/// One decision label set's counter and histogram, resolved once ([`Metrics::decision`]).
#[derive(Clone)]
struct DecisionHandles {
    policy: Option<Arc<str>>,
    rule: Option<Arc<str>>,
    outcome: &'static str,
    door: &'static str,
    counted: ShardedCounter,
    timed: ShardedHistogram,
}

/// At most this many label sets' handles are kept (policy and rule ids come from the
/// configuration, so a server sees few); past it, the table is emptied and refilled.
const MAX_DECISION_HANDLES: usize = 1024;

/// Every metric Sluis exports.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, ShardedCounter>,
    decision_seconds: Family<DoorLabels, ShardedHistogram, fn() -> ShardedHistogram>,
    /// What each decision label set resolved to in `decisions` and `decision_seconds`: a
    /// decision is counted with one cheap hash of its labels and a look-up in a table
    /// that readers share without a lock (a new label set replaces the table), instead
    /// of two family look-ups (SipHash of every label, a lock each, reference counts).
    decision_handles: ArcSwap<HashTable<DecisionHandles>>,
    handle_hasher: foldhash::fast::RandomState,
    token_cache_hits: ShardedCounter,
    token_cache_misses: ShardedCounter,
    token_cache_entries: Gauge,
    introspection: Family<EventLabels, Counter>,
    jwks_fetches: Family<IssuerLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    policy_last_reload: Gauge,
    flows_indexed: Gauge,
    flows_version: Gauge,
    log_queue: Gauge,
    log_lines: Family<ResultLabels, Counter>,
    shadow_decisions: Family<ShadowLabels, Counter>,
    candidate_decisions: Family<ResultLabels, Counter>,
    candidate_disagreements: Family<DisagreementLabels, Counter>,
    candidate_reloads: Family<ResultLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    replay_cache_losses: Counter,
    response_entries: Family<EntryLabels, Counter>,
    source_calls: Family<SourceNameLabels, Counter>,
    source_cache: Family<SourceLabels, Counter>,
    source_errors: Family<SourceErrorLabels, Counter>,
    source_seconds: Family<SourceNameLabels, Histogram, fn() -> Histogram>,
    source_circuit_open: Family<SourceNameLabels, Gauge>,
}

fn source_histogram() -> Histogram {
    // 1 ms .. ~16 s: a look-up is a network call.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn decision_histogram() -> ShardedHistogram {
    // 5 µs .. ~80 ms: a cached decision takes microseconds, a first verification
    // tens of µs, an introspection call or a JWKS fetch milliseconds.
    ShardedHistogram::new(exponential_buckets(0.000_005, 2.0, 15))
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluis");
        let decisions = Family::<DecisionLabels, ShardedCounter>::default();
        registry.register(
            "decisions",
            "Decisions by policy, deciding rule, outcome and front door",
            decisions.clone(),
        );
        let decision_seconds =
            Family::<DoorLabels, ShardedHistogram, fn() -> ShardedHistogram>::new_with_constructor(
                decision_histogram,
            );
        registry.register(
            "decision_duration_seconds",
            "Time to decide, token verification and policy evaluation included, by front door",
            decision_seconds.clone(),
        );
        let token_cache = Family::<ResultLabels, ShardedCounter>::default();
        registry.register(
            "token_cache_lookups",
            "Verified-token cache look-ups: hit or miss",
            token_cache.clone(),
        );
        // Handles kept, so the hot path does no label look-up.
        let lookup = |result: &str| {
            token_cache
                .get_or_create(&ResultLabels {
                    result: result.to_owned(),
                })
                .clone()
        };
        let (token_cache_hits, token_cache_misses) = (lookup("hit"), lookup("miss"));
        let token_cache_entries = Gauge::default();
        registry.register(
            "token_cache_entries",
            "Verified tokens held in the cache",
            token_cache_entries.clone(),
        );
        let introspection = Family::<EventLabels, Counter>::default();
        registry.register(
            "introspection_events",
            "RFC 7662 introspection by issuer: endpoint calls (retries included), cache hits and misses, stale answers served during an outage",
            introspection.clone(),
        );
        let jwks_fetches = Family::<IssuerLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by issuer and result (ok, error)",
            jwks_fetches.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads since start, by result (success, failure)",
            policy_reloads.clone(),
        );
        let policy_last_reload = Gauge::default();
        registry.register(
            "policy_last_reload_success_timestamp_seconds",
            "When the policies last loaded or reloaded successfully (unix seconds)",
            policy_last_reload.clone(),
        );
        let flows_indexed = Gauge::default();
        registry.register(
            "flows_indexed",
            "Active flows in the in-memory index",
            flows_indexed.clone(),
        );
        let flows_version = Gauge::default();
        registry.register(
            "flows_index_version",
            "The flow store version the index has caught up with",
            flows_version.clone(),
        );
        let log_queue = Gauge::default();
        registry.register(
            "decision_log_queue_depth",
            "Decision log lines waiting for the writer",
            log_queue.clone(),
        );
        let log_lines = Family::<ResultLabels, Counter>::default();
        registry.register(
            "decision_log_lines",
            "Decision log lines: written, dropped (queue full), failed (the sink refused them)",
            log_lines.clone(),
        );
        let shadow_decisions = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_decisions",
            "Decisions of shadow policies (let through whatever they decide) by policy and would-be outcome: allow, deny, unavailable",
            shadow_decisions.clone(),
        );
        let candidate_decisions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "candidate_decisions",
            "Decisions the candidate policy set made beside the enforced one: agreed, disagreed, dropped (its queue was full)",
            candidate_decisions.clone(),
        );
        let candidate_disagreements = Family::<DisagreementLabels, Counter>::default();
        registry.register(
            "candidate_disagreements",
            "Candidate decisions that differ from the enforced answer, by kind (outcome, status, rule), enforced policy and candidate policy",
            candidate_disagreements.clone(),
        );
        let candidate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "candidate_reloads",
            "Loads of the candidate policy set since start, by result (success, failure)",
            candidate_reloads.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Open connections on an HTTP listener (admin, http)",
            connections_open.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed on accept because the listener had `max_connections` open",
            connections_refused.clone(),
        );
        let replay_cache_losses = Counter::default();
        registry.register(
            "dpop_replay_cache_losses",
            "Times this replica found the Redis replay cache emptied or replaced (restart, flush, failover); proofs from before are refused",
            replay_cache_losses.clone(),
        );
        let response_entries = Family::<EntryLabels, Counter>::default();
        registry.register(
            "response_entries",
            "Resources of upstream answers judged by response rules, by policy: kept or withheld",
            response_entries.clone(),
        );
        let source_calls = Family::<SourceNameLabels, Counter>::default();
        registry.register(
            "source_calls",
            "Calls made to an information source, retries included, by configured source name",
            source_calls.clone(),
        );
        let source_cache = Family::<SourceLabels, Counter>::default();
        registry.register(
            "source_cache",
            "Information source look-ups by source and cache result: hit, miss, joined (waited for an identical look-up in flight)",
            source_cache.clone(),
        );
        let source_errors = Family::<SourceErrorLabels, Counter>::default();
        registry.register(
            "source_errors",
            "Failed information source look-ups by source and failure kind",
            source_errors.clone(),
        );
        let source_seconds =
            Family::<SourceNameLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                source_histogram,
            );
        registry.register(
            "source_call_duration_seconds",
            "Time of one call to an information source",
            source_seconds.clone(),
        );
        let source_circuit_open = Family::<SourceNameLabels, Gauge>::default();
        registry.register(
            "source_circuit_open",
            "Whether a source's circuit breaker is open (1): look-ups fail without a call",
            source_circuit_open.clone(),
        );
        Metrics {
            registry,
            source_calls,
            source_cache,
            source_errors,
            source_seconds,
            source_circuit_open,
            response_entries,
            connections_open,
            connections_refused,
            replay_cache_losses,
            shadow_decisions,
            candidate_decisions,
            candidate_disagreements,
            candidate_reloads,
            log_queue,
            log_lines,
            decisions,
            decision_seconds,
            decision_handles: ArcSwap::default(),
            handle_hasher: foldhash::fast::RandomState::default(),
            token_cache_hits,
            token_cache_misses,
            token_cache_entries,
            introspection,
            jwks_fetches,
            policy_reloads,
            policy_last_reload,
            flows_indexed,
            flows_version,
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// One decision: who decided what (`allow`, `deny`, or `unavailable` when it could
    /// not), through which door, in how long.
    /// `policy` and `rule` are `None` when none decided.
    pub fn decision(
        &self,
        policy: Option<&Arc<str>>,
        rule: Option<&Arc<str>>,
        outcome: &'static str,
        door: &'static str,
        took: Duration,
    ) {
        let (policy_id, rule_id) = (policy.map(|p| &**p), rule.map(|r| &**r));
        let hash = self
            .handle_hasher
            .hash_one((policy_id, rule_id, outcome, door));
        let same = |handles: &DecisionHandles| {
            handles.outcome == outcome
                && handles.door == door
                && handles.policy.as_deref() == policy_id
                && handles.rule.as_deref() == rule_id
        };
        let seconds = took.as_secs_f64();
        if let Some(found) = self.decision_handles.load().find(hash, same) {
            found.counted.inc();
            found.timed.observe(seconds);
            return;
        }
        let id = |id: Option<&Arc<str>>| Id(id.unwrap_or(&NONE).clone());
        let resolved = DecisionHandles {
            policy: policy.cloned(),
            rule: rule.cloned(),
            outcome,
            door,
            counted: self
                .decisions
                .get_or_create(&DecisionLabels {
                    policy: id(policy),
                    rule: id(rule),
                    outcome,
                    door,
                })
                .clone(),
            timed: self
                .decision_seconds
                .get_or_create(&DoorLabels { door })
                .clone(),
        };
        resolved.counted.inc();
        resolved.timed.observe(seconds);
        // A label set not seen before: a new table with it replaces the old (rare, so
        // copying is cheaper than making every decision take a lock).
        let hasher = &self.handle_hasher;
        self.decision_handles.rcu(|table| {
            let mut table = if table.len() >= MAX_DECISION_HANDLES {
                HashTable::new()
            } else {
                HashTable::clone(table)
            };
            if table.find(hash, same).is_none() {
                table.insert_unique(hash, resolved.clone(), |h| {
                    hasher.hash_one((h.policy.as_deref(), h.rule.as_deref(), h.outcome, h.door))
                });
            }
            table
        });
    }

    /// One call to information source `source` (each retry is one), and how long it took.
    pub fn source_call(&self, source: &Arc<str>, took: Duration) {
        let labels = SourceNameLabels {
            source: Id(source.clone()),
        };
        self.source_calls.get_or_create(&labels).inc();
        self.source_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A look-up of `source` answered from its cache (`hit`), by a call (`miss`), or by
    /// an identical call already in flight (`joined`).
    pub fn source_cache(&self, source: &Arc<str>, result: &'static str) {
        self.source_cache
            .get_or_create(&SourceLabels {
                source: Id(source.clone()),
                result,
            })
            .inc();
    }

    /// The counter of `source`'s look-ups with cache result `result`, to keep: counting
    /// through it skips the label look-up [`Metrics::source_cache`] makes each time.
    pub fn source_cache_counter(&self, source: &Arc<str>, result: &'static str) -> Counter {
        self.source_cache
            .get_or_create(&SourceLabels {
                source: Id(source.clone()),
                result,
            })
            .clone()
    }

    /// Forgets every series of `source`, a source a reload removed: its circuit gauge
    /// and counters leave `/metrics` instead of showing their last values for ever.
    /// `error_kinds`: every failure kind a look-up can fail with.
    pub fn forget_source(&self, source: &Arc<str>, error_kinds: &[&'static str]) {
        let name = SourceNameLabels {
            source: Id(source.clone()),
        };
        self.source_calls.remove(&name);
        self.source_seconds.remove(&name);
        self.source_circuit_open.remove(&name);
        for result in ["hit", "miss", "joined"] {
            self.source_cache.remove(&SourceLabels {
                source: Id(source.clone()),
                result,
            });
        }
        for &kind in error_kinds {
            self.source_errors.remove(&SourceErrorLabels {
                source: Id(source.clone()),
                kind,
            });
        }
    }

    /// A failed look-up of `source`, by failure kind.
    pub fn source_error(&self, source: &Arc<str>, kind: &'static str) {
        self.source_errors
            .get_or_create(&SourceErrorLabels {
                source: Id(source.clone()),
                kind,
            })
            .inc();
    }

    /// Whether `source`'s circuit breaker is open.
    pub fn source_circuit(&self, source: &Arc<str>, open: bool) {
        self.source_circuit_open
            .get_or_create(&SourceNameLabels {
                source: Id(source.clone()),
            })
            .set(i64::from(open));
    }

    /// The resources of one judged answer: how many were kept and withheld.
    pub fn response_entries(&self, policy: Option<&Arc<str>>, kept: usize, withheld: usize) {
        let policy = Id(policy.unwrap_or(&NONE).clone());
        for (verdict, count) in [("kept", kept), ("withheld", withheld)] {
            if count > 0 {
                self.response_entries
                    .get_or_create(&EntryLabels {
                        policy: policy.clone(),
                        verdict,
                    })
                    .inc_by(count as u64);
            }
        }
    }

    /// A decision of a shadow policy: what it would have answered.
    pub fn shadow_decision(&self, policy: &str, would: &str) {
        self.shadow_decisions
            .get_or_create(&ShadowLabels {
                policy: policy.to_owned(),
                would: would.to_owned(),
            })
            .inc();
    }

    /// A decision of the candidate set: `agreed`, `disagreed` or `dropped`.
    pub fn candidate_decision(&self, result: &str) {
        self.candidate_decisions
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// A candidate decision that differs from the enforced one. Policy ids come from the
    /// configuration (`-` when no policy decided), so the label values stay bounded.
    pub fn candidate_disagreement(&self, kind: &str, policy: &str, candidate_policy: &str) {
        self.candidate_disagreements
            .get_or_create(&DisagreementLabels {
                kind: kind.to_owned(),
                policy: policy.to_owned(),
                candidate_policy: candidate_policy.to_owned(),
            })
            .inc();
    }

    /// A connection accepted on `listener`; the returned guard counts it open until dropped.
    pub fn connection_opened(&self, listener: &'static str) -> OpenConnection {
        let gauge = self
            .connections_open
            .get_or_create(&ListenerLabels { listener })
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// A connection closed at once: `listener` had its maximum open.
    pub fn connection_refused(&self, listener: &'static str) {
        self.connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// The replay cache was found to have lost its keys.
    pub fn replay_cache_lost(&self) {
        self.replay_cache_losses.inc();
    }

    /// A verified-token cache look-up.
    pub fn token_cache_lookup(&self, hit: bool) {
        if hit {
            self.token_cache_hits.inc();
        } else {
            self.token_cache_misses.inc();
        }
    }

    /// A JWKS fetch's outcome.
    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        self.jwks_fetches
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }
}

/// Keeps a connection counted in `sluis_connections_open` while it lives.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What [`Metrics::render`] reads at scrape time from where it lives.
pub struct Snapshot {
    pub token_cache_entries: u64,
    pub reload_successes: u64,
    pub reload_failures: u64,
    pub last_reload_success: Option<std::time::SystemTime>,
    pub flows_indexed: usize,
    pub flows_version: i64,
    /// Per introspecting issuer: endpoint calls, cache hits, cache misses, stale served,
    /// as counted since start by the issuer's introspector.
    pub introspection: Vec<(String, [u64; 4])>,
    /// The decision log's queue depth and lines written, dropped and failed, when on.
    pub decision_log: Option<(usize, [u64; 3])>,
    /// Successful and failed loads of the candidate policy set, when one is configured.
    pub candidate_reloads: Option<(u64, u64)>,
}

const INTROSPECTION_EVENTS: [&str; 4] = ["calls", "cache_hits", "cache_misses", "stale_served"];

impl Metrics {
    /// The Prometheus text exposition of every metric, with `snapshot`'s values.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let metrics = self;
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        metrics
            .token_cache_entries
            .set(gauge(snapshot.token_cache_entries));
        for (result, count) in [
            ("success", snapshot.reload_successes),
            ("failure", snapshot.reload_failures),
        ] {
            // The reloader counts for itself; the exported counter catches up with it.
            let counter = metrics.policy_reloads.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        if let Some(at) = snapshot.last_reload_success
            && let Ok(since) = at.duration_since(std::time::UNIX_EPOCH)
        {
            metrics.policy_last_reload.set(gauge(since.as_secs()));
        }
        metrics
            .flows_indexed
            .set(gauge(snapshot.flows_indexed as u64));
        metrics.flows_version.set(snapshot.flows_version);
        // The introspectors count for themselves; the exported counters catch up with them.
        for (issuer, counts) in &snapshot.introspection {
            for (event, count) in INTROSPECTION_EVENTS.iter().zip(counts) {
                let counter = metrics.introspection.get_or_create(&EventLabels {
                    issuer: issuer.clone(),
                    event: (*event).to_owned(),
                });
                counter.inc_by(count.saturating_sub(counter.get()));
            }
        }
        if let Some((depth, counts)) = snapshot.decision_log {
            metrics.log_queue.set(gauge(depth as u64));
            for (result, count) in ["written", "dropped", "failed"].iter().zip(counts) {
                let counter = metrics.log_lines.get_or_create(&ResultLabels {
                    result: (*result).to_owned(),
                });
                counter.inc_by(count.saturating_sub(counter.get()));
            }
        }
        if let Some((successes, failures)) = snapshot.candidate_reloads {
            for (result, count) in [("success", successes), ("failure", failures)] {
                let counter = metrics.candidate_reloads.get_or_create(&ResultLabels {
                    result: result.to_owned(),
                });
                counter.inc_by(count.saturating_sub(counter.get()));
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &metrics.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decisions are counted through resolved handles: the same labels in other `Arc`s
    /// count in one series, other labels in their own, and a full table is refilled
    /// without losing a count.
    #[test]
    fn decision_handles_count_by_label_value() {
        let metrics = Metrics::new();
        let decide = |policy: Option<&str>, rule: &str, outcome: &'static str| {
            metrics.decision(
                policy.map(Arc::from).as_ref(),
                Some(&Arc::from(rule)),
                outcome,
                "envoy-grpc",
                Duration::from_micros(7),
            )
        };
        for _ in 0..3 {
            decide(Some("p"), "r", "allow");
        }
        decide(Some("p"), "r", "deny");
        decide(None, "no-policy", "deny");
        for n in 0..(MAX_DECISION_HANDLES + 10) {
            decide(Some("many"), &format!("rule-{n}"), "deny");
        }
        decide(Some("p"), "r", "allow");
        let text = metrics.render(&Snapshot {
            token_cache_entries: 0,
            reload_successes: 0,
            reload_failures: 0,
            last_reload_success: None,
            flows_indexed: 0,
            flows_version: 0,
            introspection: Vec::new(),
            decision_log: None,
            candidate_reloads: None,
        });
        for line in [
            r#"sluis_decisions_total{policy="p",rule="r",outcome="allow",door="envoy-grpc"} 4"#,
            r#"sluis_decisions_total{policy="p",rule="r",outcome="deny",door="envoy-grpc"} 1"#,
            r#"sluis_decisions_total{policy="-",rule="no-policy",outcome="deny",door="envoy-grpc"} 1"#,
            r#"sluis_decisions_total{policy="many",rule="rule-0",outcome="deny",door="envoy-grpc"} 1"#,
            r#"sluis_decisions_total{policy="many",rule="rule-1033",outcome="deny",door="envoy-grpc"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // 3 + 1 allowed and denied by `p`, 1 without a policy, MAX + 10 by `many`, 1 more.
        let all = MAX_DECISION_HANDLES + 16;
        assert!(
            text.contains(&format!(
                r#"sluis_decision_duration_seconds_count{{door="envoy-grpc"}} {all}"#
            )),
            "{text}"
        );
    }

    #[test]
    fn decisions_and_snapshots_are_exported() {
        let metrics = Metrics::new();
        metrics.decision(
            Some(&Arc::from("p-test")),
            Some(&Arc::from("allow-rule")),
            "allow",
            "envoy-grpc",
            Duration::from_micros(7),
        );
        metrics.token_cache_lookup(true);
        metrics.jwks_fetch("issuer-test", false);
        metrics.shadow_decision("p-test", "deny");
        metrics.candidate_decision("disagreed");
        metrics.candidate_disagreement("status", "p-test", "-");
        let text = metrics.render(&Snapshot {
            token_cache_entries: 3,
            reload_successes: 2,
            reload_failures: 1,
            last_reload_success: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            flows_indexed: 42,
            flows_version: 7,
            introspection: vec![("idp-test".into(), [5, 3, 2, 0])],
            decision_log: Some((4, [10, 2, 0])),
            candidate_reloads: Some((3, 1)),
        });
        for line in [
            r#"sluis_decisions_total{policy="p-test",rule="allow-rule",outcome="allow",door="envoy-grpc"} "#,
            r#"sluis_decision_duration_seconds_bucket{le="0.00001",door="envoy-grpc"} "#,
            r#"sluis_token_cache_lookups_total{result="hit"} "#,
            r#"sluis_jwks_fetches_total{issuer="issuer-test",result="error"} "#,
            "sluis_token_cache_entries 3",
            r#"sluis_policy_reloads_total{result="failure"} 1"#,
            "sluis_policy_last_reload_success_timestamp_seconds 1700000000",
            "sluis_flows_indexed 42",
            "sluis_flows_index_version 7",
            r#"sluis_introspection_events_total{issuer="idp-test",event="calls"} 5"#,
            "sluis_decision_log_queue_depth 4",
            r#"sluis_decision_log_lines_total{result="dropped"} 2"#,
            r#"sluis_candidate_reloads_total{result="failure"} 1"#,
            r#"sluis_shadow_decisions_total{policy="p-test",would="deny"} "#,
            r#"sluis_candidate_decisions_total{result="disagreed"} "#,
            r#"sluis_candidate_disagreements_total{kind="status",policy="p-test",candidate_policy="-"} "#,
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        // Reload counts are counters: a later scrape with the same counts adds nothing, a
        // higher count adds the difference.
        let mut again = Snapshot {
            token_cache_entries: 3,
            reload_successes: 2,
            reload_failures: 1,
            last_reload_success: None,
            flows_indexed: 42,
            flows_version: 7,
            introspection: Vec::new(),
            decision_log: None,
            candidate_reloads: Some((3, 1)),
        };
        let text = metrics.render(&again);
        assert!(
            text.contains(r#"sluis_policy_reloads_total{result="failure"} 1"#),
            "{text}"
        );
        again.reload_failures = 4;
        let text = metrics.render(&again);
        assert!(
            text.contains(r#"sluis_policy_reloads_total{result="failure"} 4"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sluis_policy_reloads counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sluis_candidate_reloads counter"),
            "{text}"
        );
    }
}
