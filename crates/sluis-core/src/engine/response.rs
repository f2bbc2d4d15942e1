//! Judging an upstream's answer: the ext_proc door's engine operation.
//!
//! The request decision seals a grant into its allow (`Engine::grant_response`); the
//! gateway hands it back with the answer, and [`Engine::judge_response`] opens it, rebuilds
//! the request's variables from it (policy, verified claims, method, path, query, host,
//! context: never anything from the answer itself) and lets the policy's response rules
//! judge. No grant, a grant that does not verify or has expired, a policy gone since: the
//! answer is denied, never passed.
//!
//! The same grant lets an enforcement point that is not Envoy ask about an answer's
//! resources one by one ([`Engine::judge_entries`]: the AuthZEN door's response
//! evaluations). Every judged answer is one decision-log record: policy, outcome and how
//! many entries were kept and withheld, never what they held.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::Engine;
use crate::audit::{DecisionRecord, ResponseCounts};
use crate::authn::Identity;
use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
use crate::policy::Policy;
use crate::policy::response::EntryVerdict;
use crate::request::{AccessRequest, Door};
use crate::response::grant::{GrantKey, ResponseGrant};
use crate::response::{ResponseParts, ResponseVerdict};

/// What the engine made of an answer, for the door and its log line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseDecision {
    pub verdict: ResponseVerdict,
    pub policy: Option<Arc<str>>,
    pub rule: Arc<str>,
    pub reason: String,
    pub kept: usize,
    pub withheld: usize,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The answer when the engine cannot tell under which decision an answer is judged.
fn no_grant(reason: String) -> ResponseDecision {
    ResponseDecision {
        verdict: ResponseVerdict::Deny(Deny {
            status: 500,
            headers: vec![("content-type".into(), "application/json".into())],
            body: deny_body(DenyCode::AccessDenied, "the answer could not be checked"),
        }),
        policy: None,
        rule: Arc::from("response-grant"),
        reason,
        kept: 0,
        withheld: 0,
    }
}

/// The request an answer is judged under, as its grant rebuilt it: for the log.
#[derive(Default)]
struct Granted {
    caller: Option<Arc<Identity>>,
    request: AccessRequest,
}

/// Per-entry decisions on an answer's resources ([`Engine::judge_entries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EntriesDecision {
    pub policy: Option<Arc<str>>,
    /// One per entry, in order; empty when `refused`.
    pub entries: Vec<EntryVerdict>,
    /// Why no entry was judged (no grant, a grant refused, too many entries): every
    /// entry is then withheld.
    pub refused: Option<String>,
    /// A deny rule held for some entry: the whole answer is denied, every entry withheld.
    pub denied: bool,
    /// The grant's policy is in shadow mode: the entries were judged and logged, and all
    /// are to be shown.
    pub shadow: bool,
}

impl EntriesDecision {
    /// Whether entry `index` may be shown.
    pub fn shown(&self, index: usize) -> bool {
        if self.shadow {
            return true;
        }
        self.refused.is_none()
            && !self.denied
            && self.entries.get(index).is_some_and(EntryVerdict::is_keep)
    }

    fn refused(policy: Option<Arc<str>>, reason: String) -> EntriesDecision {
        EntriesDecision {
            policy,
            entries: Vec::new(),
            refused: Some(reason),
            denied: false,
            shadow: false,
        }
    }
}

/// How an answer whose resources are judged one by one is described to the rules'
/// `response` variable.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerShape {
    pub status: u16,
    /// The Bundle's `type` (`searchset`), or `None` for a single resource.
    pub bundle_type: Option<String>,
}

impl Default for AnswerShape {
    fn default() -> AnswerShape {
        AnswerShape {
            status: 200,
            bundle_type: Some("searchset".into()),
        }
    }
}

impl Engine {
    /// Seals grants with this secret instead of a random per-process key: every replica
    /// that may judge an answer must have the same one.
    pub fn with_grant_secret(mut self, secret: &[u8]) -> Engine {
        self.grant_key = GrantKey::from_secret(secret);
        self
    }

    /// Puts the sealed grant for judging the answer into an allow of a policy with
    /// response rules. A grant that cannot be sealed (too large) is left out, so the
    /// answer will be denied.
    pub(super) fn grant_response(
        &self,
        mut decision: Decision,
        request: &AccessRequest,
        policy: &Policy,
        identity: Option<&Identity>,
    ) -> Decision {
        let Outcome::Allow(allow) = &mut decision.outcome else {
            return decision;
        };
        let Some(mut grant) = policy.response_grant(request, identity, now()) else {
            return decision;
        };
        // The answer is to the request as the upstream got it: narrowed, rewritten.
        if !allow.set_query.is_empty() || !allow.remove_query.is_empty() {
            grant.query = crate::request::rewrite_query(
                &request.query,
                &allow.set_query,
                &allow.remove_query,
            );
        }
        match grant.seal(&self.grant_key) {
            Ok(sealed) => allow.response_grant = Some(sealed),
            Err(e) => tracing::warn!(
                policy = %policy.id,
                "no response grant: {e}; the answer will be denied"
            ),
        }
        decision
    }

    /// Judges an upstream's answer under the grant its request decision sealed, and
    /// logs it (one decision-log record, door `envoy-ext-proc`).
    pub async fn judge_response(
        &self,
        sealed_grant: Option<&str>,
        parts: &ResponseParts<'_>,
    ) -> ResponseDecision {
        let time = SystemTime::now();
        let started = std::time::Instant::now();
        let (decided, granted) = self.judge_sealed(sealed_grant, parts);
        let (outcome, status) = match &decided.verdict {
            ResponseVerdict::Pass { .. } => ("pass", parts.status),
            ResponseVerdict::Filter { .. } => ("filter", parts.status),
            ResponseVerdict::Deny(deny) => ("deny", deny.status),
        };
        let latency = started.elapsed();
        self.metrics.decision(
            decided.policy.as_ref(),
            Some(&decided.rule),
            outcome,
            "envoy-ext-proc",
            latency,
        );
        self.metrics
            .response_entries(decided.policy.as_ref(), decided.kept, decided.withheld);
        let masker = match &self.log {
            Some(log) => log.masker(),
            None => super::default_masker(),
        };
        // An answer passed whole is the common case: at debug, as an allowed request is.
        // One with entries withheld (a shadow policy's too) or denied is what an operator
        // asks about: at info, bounded as request denials are, so that a flood of
        // answers cannot flood the log (and a busy proxy does not pay a write per
        // answer). The decision log and the metrics have every one.
        let notable =
            !matches!(decided.verdict, ResponseVerdict::Pass { .. }) || decided.withheld > 0;
        let admitted = if notable {
            super::RESPONSE_LOG.admit(time)
        } else {
            None
        };
        macro_rules! log_decision {
            ($level:ident) => {
                tracing::$level!(
                    door = "envoy-ext-proc",
                    policy = decided.policy.as_deref().unwrap_or("-"),
                    rule = %decided.rule,
                    outcome,
                    status,
                    kept = decided.kept,
                    withheld = decided.withheld,
                    reason = %masker.mask(&decided.reason),
                    "response decision"
                )
            };
        }
        match admitted {
            Some(skipped) => {
                if skipped > 0 {
                    tracing::info!(
                        door = "envoy-ext-proc",
                        skipped,
                        "response decisions not logged (at most {} a second)",
                        super::DENY_LOG_PER_SECOND
                    );
                }
                log_decision!(info);
            }
            None => log_decision!(debug),
        }
        if let Some(log) = &self.log {
            let record = DecisionRecord {
                door: "envoy-ext-proc",
                policies: Some(self.policies()),
                policy: decided.policy.clone(),
                rule: Some(decided.rule.clone()),
                outcome,
                status,
                reason: decided.reason.clone(),
                response: Some(ResponseCounts {
                    kept: decided.kept,
                    withheld: decided.withheld,
                }),
                ..granted.record(time, latency)
            };
            log.record(record).await;
        }
        decided
    }

    /// Judges the resources of an answer one by one under the grant its request decision
    /// sealed: `entries` are Bundle entries (`{"resource": {...}}`), judged as parts of an
    /// answer shaped like `shape`. What the entries' verdicts are is what the ext_proc
    /// door would keep of a Bundle of them; a `deny` rule holding for one entry denies
    /// all, as it denies that Bundle. Logged as one record, door `door`.
    pub async fn judge_entries(
        &self,
        sealed_grant: &str,
        entries: &[Value],
        shape: &AnswerShape,
        door: &'static str,
    ) -> EntriesDecision {
        let time = SystemTime::now();
        let started = std::time::Instant::now();
        let (decided, granted) = self.entries_under(sealed_grant, entries, shape);
        let latency = started.elapsed();
        let kept = (0..entries.len()).filter(|i| decided.shown(*i)).count();
        let withheld = entries.len() - kept;
        let (outcome, status, rule, reason) = match (&decided.refused, decided.denied) {
            (Some(reason), _) => ("deny", 500, "response-grant".to_owned(), reason.clone()),
            (None, true) => {
                let (index, rule, status, why) = decided
                    .entries
                    .iter()
                    .enumerate()
                    .find_map(|(i, e)| match e {
                        EntryVerdict::Deny {
                            rule,
                            status,
                            reason,
                        } => Some((i, rule.to_string(), *status, reason.clone())),
                        _ => None,
                    })
                    .unwrap_or((0, "response".into(), 403, String::new()));
                ("deny", status, rule, format!("entry {index}: {why}"))
            }
            (None, false) => {
                let outcome = if withheld == 0 { "pass" } else { "filter" };
                let mut reason = format!("{kept} kept, {withheld} withheld");
                if decided.shadow {
                    reason = format!("shadow mode, passed: {reason}");
                }
                (outcome, shape.status, "response".to_owned(), reason)
            }
        };
        self.metrics.decision(
            decided.policy.as_ref(),
            Some(&Arc::from(rule.as_str())),
            outcome,
            door,
            latency,
        );
        self.metrics
            .response_entries(decided.policy.as_ref(), kept, withheld);
        if let Some(log) = &self.log {
            let record = DecisionRecord {
                door,
                policies: Some(self.policies()),
                policy: decided.policy.clone(),
                rule: Some(Arc::from(rule.as_str())),
                outcome,
                status,
                reason,
                response: Some(ResponseCounts { kept, withheld }),
                ..granted.record(time, latency)
            };
            log.record(record).await;
        }
        decided
    }

    fn entries_under(
        &self,
        sealed: &str,
        entries: &[Value],
        shape: &AnswerShape,
    ) -> (EntriesDecision, Granted) {
        let grant = match ResponseGrant::open(sealed, &self.grant_key, now()) {
            Ok(grant) => grant,
            Err(e) => {
                return (
                    EntriesDecision::refused(None, format!("response grant refused: {e}")),
                    Granted::default(),
                );
            }
        };
        let shadow = grant.shadow;
        let response = serde_json::json!({
            "status": shape.status,
            "bundle_type": shape.bundle_type,
        });
        let judged = self.under_grant(grant, |policy, identity, request| {
            if policy
                .response_max_entries()
                .is_some_and(|max| entries.len() > max)
            {
                return EntriesDecision::refused(
                    Some(policy.id.clone()),
                    "more entries than the policy's `max_entries`".to_owned(),
                );
            }
            match policy.judge_entries(request, identity, &self.flows.load(), entries, &response) {
                Some(verdicts) => EntriesDecision {
                    policy: Some(policy.id.clone()),
                    denied: verdicts
                        .iter()
                        .any(|v| matches!(v, EntryVerdict::Deny { .. })),
                    entries: verdicts,
                    refused: None,
                    shadow,
                },
                None => EntriesDecision::refused(
                    Some(policy.id.clone()),
                    format!("policy `{}` has no response rules", policy.id),
                ),
            }
        });
        match judged {
            Ok((decided, granted)) => (decided, granted),
            Err(refusal) => (
                EntriesDecision::refused(refusal.policy, refusal.reason),
                Granted::default(),
            ),
        }
    }

    fn judge_sealed(
        &self,
        sealed: Option<&str>,
        parts: &ResponseParts<'_>,
    ) -> (ResponseDecision, Granted) {
        if !parts.from_upstream {
            // E.g. the request's own denial, which carries no grant: nothing of the
            // upstream's to withhold.
            let passed = ResponseDecision {
                verdict: ResponseVerdict::Pass {
                    remove_headers: Vec::new(),
                },
                policy: None,
                rule: Arc::from("response"),
                reason: "the gateway's own answer".into(),
                kept: 0,
                withheld: 0,
            };
            return (passed, Granted::default());
        }
        let Some(sealed) = sealed else {
            return (
                no_grant("no response grant came with the answer".into()),
                Granted::default(),
            );
        };
        let grant = match ResponseGrant::open(sealed, &self.grant_key, now()) {
            Ok(grant) => grant,
            Err(e) => {
                return (
                    no_grant(format!("response grant refused: {e}")),
                    Granted::default(),
                );
            }
        };
        let shadow = grant.shadow;
        let judged = self.under_grant(grant, |policy, identity, request| {
            let judged = policy.judge_response(request, identity, &self.flows.load(), parts);
            ResponseDecision {
                verdict: judged.verdict,
                policy: Some(policy.id.clone()),
                rule: judged.rule,
                reason: judged.reason,
                kept: judged.kept,
                withheld: judged.withheld,
            }
        });
        let (decided, granted) = match judged {
            Ok(judged) => judged,
            Err(refused) => return (*refused, Granted::default()),
        };
        if !shadow {
            return (decided, granted);
        }
        // A shadow policy's judgement is only logged: the answer goes through, also when
        // the request was let through only because of shadow mode (no identity).
        let passed = ResponseDecision {
            verdict: ResponseVerdict::Pass {
                remove_headers: Vec::new(),
            },
            reason: format!("shadow mode, passed: {}", decided.reason),
            ..decided
        };
        (passed, granted)
    }

    /// Runs `judge` with the policy, identity and request `grant` names, rebuilt: never
    /// anything from the answer itself. A policy gone since, or claims that no longer
    /// hold: the refusal.
    fn under_grant<T>(
        &self,
        grant: ResponseGrant,
        judge: impl FnOnce(&Policy, Option<&Identity>, &AccessRequest) -> T,
    ) -> Result<(T, Granted), Box<ResponseDecision>> {
        let policies = self.policies();
        let Some(policy) = policies.get(&grant.policy) else {
            return Err(Box::new(no_grant(format!(
                "policy `{}` of the response grant is no longer loaded",
                grant.policy
            ))));
        };
        let identity = match &grant.issuer {
            Some(issuer) => {
                match self
                    .authn
                    .identity_from_claims(issuer, &grant.claims, &policy.issuers)
                {
                    Ok(identity) => Some(Arc::new(identity)),
                    Err(e) => {
                        let refused = ResponseDecision {
                            policy: Some(policy.id.clone()),
                            ..no_grant(format!("the grant's claims no longer hold: {e}"))
                        };
                        return Err(Box::new(refused));
                    }
                }
            }
            None if policy.anonymous => None,
            None => {
                return Err(Box::new(no_grant("the grant names no issuer".into())));
            }
        };
        let request = AccessRequest {
            method: grant.method,
            path: grant.path,
            query: grant.query,
            host: grant.host,
            context: grant.context.into_iter().collect(),
            door: Door("envoy-ext-proc"),
            ..AccessRequest::default()
        };
        let judged = judge(policy, identity.as_deref(), &request);
        Ok((
            judged,
            Granted {
                caller: identity,
                request,
            },
        ))
    }
}

impl Granted {
    /// A record of an answer to this request; the caller fills in the verdict.
    fn record(self, time: SystemTime, latency: std::time::Duration) -> DecisionRecord {
        DecisionRecord {
            time,
            door: "envoy-ext-proc",
            request_id: None,
            traceparent: None,
            trace_id: None,
            policies: None,
            policy: None,
            rule: None,
            outcome: "deny",
            status: 500,
            reason: String::new(),
            caller: self.caller,
            method: self.request.method,
            host: self.request.host,
            path: self.request.path,
            query: self.request.query,
            latency,
            shadow: None,
            candidate: None,
            response: None,
            search: None,
        }
    }
}

#[cfg(test)]
mod tests;
