//! The candidate policy set: the set a rollout is heading for, decided beside the enforced
//! one and never enforced, so a new policy is rolled out by watching, not by hoping.
//!
//! [`super::Engine::decide`] answers with the enforced set first. Then it hands the
//! request, its answer and what it found about the token to a bounded queue
//! (`Candidate::submit`); a background task decides the same request with the candidate
//! set and compares. The enforced answer never waits for the candidate: when the queue is
//! full the decision is not put to the candidate, and that is counted as dropped.
//!
//! The token is not verified twice: the candidate reuses the enforced path's verified
//! identity (or its refusal) whenever its policy accepts the same issuers, or the issuer
//! that vouched for the token (`Authenticated::for_policy`). Only when the enforced path
//! did not look at the token (no policy, an anonymous policy) or judged it against other
//! issuers does the candidate check it itself, through the same caches.
//!
//! A disagreement (another outcome, another status, or the same answer by another policy
//! or rule) is counted (`sluis_candidate_disagreements_total`) and, with the decision log
//! on, written on the decision's own line as its `candidate` field: the record waits in
//! the queue with the job and is logged once the candidate has decided.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot};

use super::{Credentials, Judge, Seen, Unavailable, answer};
use crate::audit::{CandidateVerdict, DecisionLog, DecisionRecord, Verdict};
use crate::authn::{Authenticator, AuthnError, Identity, Scheme};
use crate::decision::Decision;
use crate::flows::FlowIndex;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicySet};
use crate::request::AccessRequest;

/// What the enforced path found checking the request's token, and for which policy.
#[derive(Clone)]
pub struct Authenticated {
    scheme: Scheme,
    /// The policy whose issuers the token was checked against.
    policy: Arc<Policy>,
    /// The identity (token verified, sender binding checked) or why not.
    result: Result<Arc<Identity>, AuthnError>,
}

impl Authenticated {
    pub(super) fn new(
        scheme: Scheme,
        policy: &Arc<Policy>,
        result: &Result<Arc<Identity>, AuthnError>,
    ) -> Authenticated {
        Authenticated {
            scheme,
            policy: policy.clone(),
            result: result.clone(),
        }
    }

    /// What checking the token would give for `policy`, when that follows from what the
    /// enforced path found; `None` when it must be checked again.
    pub(super) fn for_policy(
        &self,
        policy: &Policy,
    ) -> Option<(Scheme, Result<Arc<Identity>, AuthnError>)> {
        let same_issuers = self.policy.issuers.len() == policy.issuers.len()
            && self
                .policy
                .issuers
                .iter()
                .all(|i| policy.issuers.contains(i));
        let result = match &self.result {
            _ if same_issuers => self.result.clone(),
            // A JWT's `iss` names exactly one configured issuer: it is accepted here if
            // and only if that issuer is.
            Ok(identity) if policy.issuers.contains(&identity.issuer) => Ok(identity.clone()),
            Ok(identity) => Err(AuthnError::Invalid(format!(
                "issuer `{}` is not accepted here",
                identity.iss
            ))),
            // Refusals that do not depend on the issuers accepted.
            Err(error @ (AuthnError::Missing | AuthnError::BadRequest(_))) => Err(error.clone()),
            Err(_) => return None,
        };
        Some((self.scheme, result))
    }
}

/// One decision for the candidate set to make.
struct Job {
    request: AccessRequest,
    /// What the gateway was told.
    enforced: Verdict,
    prior: Option<Authenticated>,
    /// The decision's log record, written once the candidate has decided.
    record: Option<DecisionRecord>,
}

enum Message {
    Decide(Box<Job>),
    /// Answered once every job before it is done.
    Flush(oneshot::Sender<()>),
}

/// The engine's handle on the candidate set and its worker.
pub(super) struct Candidate {
    /// `None` until a candidate set has loaded: a broken candidate at start leaves none.
    policies: Arc<ArcSwapOption<PolicySet>>,
    sender: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl Candidate {
    /// Starts the worker. Must be called from within a tokio runtime.
    pub(super) fn start(
        queue: usize,
        authn: Arc<Authenticator>,
        flows: Arc<ArcSwap<FlowIndex>>,
        log: Option<DecisionLog>,
        metrics: Arc<Metrics>,
    ) -> Candidate {
        let (sender, receiver) = mpsc::channel(queue.max(1));
        let policies = Arc::new(ArcSwapOption::empty());
        let worker = Worker {
            policies: policies.clone(),
            authn,
            flows,
            log,
            metrics: metrics.clone(),
            disagreements: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
        };
        tokio::spawn(worker.run(receiver));
        Candidate {
            policies,
            sender,
            metrics,
        }
    }

    pub(super) fn policies(&self) -> Option<Arc<PolicySet>> {
        self.policies.load_full()
    }

    pub(super) fn swap(&self, policies: PolicySet) {
        self.policies.store(Some(Arc::new(policies)));
    }

    /// Queues the decision for the candidate set, with its log record. Never waits: the
    /// record comes back when the decision is not queued (no candidate set loaded, queue
    /// full), for the caller to log without a candidate verdict.
    pub(super) fn submit(
        &self,
        request: &AccessRequest,
        result: &Result<Decision, Unavailable>,
        prior: Option<Authenticated>,
        record: Option<DecisionRecord>,
    ) -> Option<DecisionRecord> {
        if self.policies.load().is_none() {
            return record;
        }
        let job = Box::new(Job {
            request: request.clone(),
            enforced: Verdict::of(result),
            prior,
            record,
        });
        match self.sender.try_send(Message::Decide(job)) {
            Ok(()) => None,
            Err(
                mpsc::error::TrySendError::Full(message)
                | mpsc::error::TrySendError::Closed(message),
            ) => {
                self.metrics.candidate_decision("dropped");
                match message {
                    Message::Decide(job) => job.record,
                    Message::Flush(_) => None,
                }
            }
        }
    }

    pub(super) async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

struct Worker {
    policies: Arc<ArcSwapOption<PolicySet>>,
    authn: Arc<Authenticator>,
    flows: Arc<ArcSwap<FlowIndex>>,
    log: Option<DecisionLog>,
    metrics: Arc<Metrics>,
    disagreements: AtomicU64,
    /// Unix second of the last disagreement warning: at most one per [`WARN_EVERY`].
    last_warning: AtomicU64,
}

/// Seconds between two warnings about disagreements in the service log.
const WARN_EVERY: u64 = 10;

impl Worker {
    /// Runs until the engine is gone.
    async fn run(self, mut receiver: mpsc::Receiver<Message>) {
        while let Some(message) = receiver.recv().await {
            match message {
                Message::Decide(job) => self.decide(*job).await,
                Message::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    async fn decide(&self, job: Job) {
        let Job {
            request,
            enforced,
            prior,
            mut record,
        } = job;
        // A set swapped out since the job was queued is not missed: the newest decides.
        let Some(policies) = self.policies.load_full() else {
            if let (Some(log), Some(record)) = (&self.log, record) {
                log.record(record).await;
            }
            return;
        };
        let version = policies.version.clone();
        // The candidate set calls no information source: its rules that need one fail
        // closed rather than add upstream calls for decisions nobody is told.
        let judge = Judge {
            authn: &self.authn,
            flows: &self.flows,
            sources: None,
            fixtures: None,
        };
        let mut seen = Seen::default();
        let decided = judge
            .decide(
                policies,
                &request,
                &Credentials::Request,
                prior.as_ref(),
                None,
                &mut seen,
            )
            .await;
        let (result, _) = answer(&request, seen.policy.as_deref(), decided);
        let verdict = Verdict::of(&result);
        let disagreement = disagreement(&enforced, &verdict);
        let metrics = &self.metrics;
        match disagreement {
            None => metrics.candidate_decision("agreed"),
            Some(kind) => {
                metrics.candidate_decision("disagreed");
                let policy = enforced.policy.as_deref().unwrap_or("-");
                let candidate_policy = verdict.policy.as_deref().unwrap_or("-");
                metrics.candidate_disagreement(kind, policy, candidate_policy);
                self.report(kind, &request, &enforced, &verdict);
            }
        }
        if let (Some(log), Some(mut record)) = (&self.log, record.take()) {
            record.candidate = Some(CandidateVerdict {
                policy_set_version: version,
                verdict,
                disagreement,
            });
            log.record(record).await;
        }
    }

    /// Says so in the service log: each disagreement at debug level, and a warning at
    /// most every [`WARN_EVERY`] seconds. Never the path or query, which may carry
    /// personal identifiers; the decision log has them, masked.
    fn report(&self, kind: &str, request: &AccessRequest, enforced: &Verdict, candidate: &Verdict) {
        let count = self.disagreements.fetch_add(1, Ordering::Relaxed) + 1;
        let describe = |v: &Verdict| {
            format!(
                "{} {} by `{}`/`{}`",
                v.outcome,
                v.status,
                v.policy.as_deref().unwrap_or("-"),
                v.rule.as_deref().unwrap_or("-")
            )
        };
        let (enforced, candidate) = (describe(enforced), describe(candidate));
        let request_id = request.header("x-request-id").unwrap_or("-");
        tracing::debug!(
            kind,
            %enforced,
            %candidate,
            request_id,
            door = request.door.0,
            "candidate policy set disagrees"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let before = self.last_warning.load(Ordering::Relaxed);
        if now >= before + WARN_EVERY
            && self
                .last_warning
                .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                disagreements = count,
                kind,
                %enforced,
                %candidate,
                request_id,
                "candidate policy set disagrees with the enforced one (each one is in the decision log and in sluis_candidate_disagreements_total)"
            );
        }
    }
}

/// How the candidate's answer differs from the enforced one, if it does.
fn disagreement(enforced: &Verdict, candidate: &Verdict) -> Option<&'static str> {
    if enforced.outcome != candidate.outcome {
        Some("outcome")
    } else if enforced.status != candidate.status {
        Some("status")
    } else if enforced.policy != candidate.policy || enforced.rule != candidate.rule {
        Some("rule")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> PolicySet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.yaml"),
            "policies:\n  - {id: a, issuers: [a], rules: []}\n  - {id: also-a, issuers: [a], rules: []}\n  - {id: b, issuers: [b], rules: []}\n  - {id: ab, issuers: [b, a], rules: []}\n",
        )
        .unwrap();
        let config = crate::policy::LoadSettings {
            policies: vec!["p.yaml".into()],
            issuers: vec!["a".into(), "b".into()],
            base_dir: dir.path().to_owned(),
            ..Default::default()
        };
        PolicySet::load(&config).unwrap()
    }

    fn identity() -> Arc<Identity> {
        Arc::new(Identity::for_tests("a", "https://a", Some("alice")))
    }

    #[test]
    fn the_enforced_token_check_is_reused_where_it_holds() {
        let set = policies();
        let policy = |id: &str| set.get(id).unwrap().clone();
        let verified = Authenticated::new(Scheme::Dpop, &policy("a"), &Ok(identity()));
        // Same issuers, or the issuer that vouched is accepted: the same identity (and
        // the scheme it came with), not checked again.
        for id in ["also-a", "ab"] {
            let (scheme, result) = verified.for_policy(&policy(id)).unwrap();
            assert_eq!(scheme, Scheme::Dpop);
            assert!(Arc::ptr_eq(&result.unwrap(), &identity_of(&verified)));
        }
        // Its issuer is not accepted: refused as `authenticate` would.
        let (_, result) = verified.for_policy(&policy("b")).unwrap();
        assert_eq!(
            result.unwrap_err(),
            AuthnError::Invalid("issuer `https://a` is not accepted here".into())
        );
        // A refusal holds where the same issuers are accepted, and a missing token
        // everywhere; a refused token is checked again against other issuers.
        let refused = Err(AuthnError::Invalid("token expired".into()));
        let refused = Authenticated::new(Scheme::Bearer, &policy("a"), &refused);
        assert!(refused.for_policy(&policy("also-a")).unwrap().1.is_err());
        assert!(refused.for_policy(&policy("b")).is_none());
        let missing = Authenticated::new(Scheme::Bearer, &policy("a"), &Err(AuthnError::Missing));
        assert_eq!(
            missing.for_policy(&policy("b")).unwrap().1.unwrap_err(),
            AuthnError::Missing
        );
    }

    fn identity_of(authenticated: &Authenticated) -> Arc<Identity> {
        authenticated.result.clone().unwrap()
    }

    fn verdict(outcome: &'static str, status: u16, policy: &str, rule: &str) -> Verdict {
        Verdict {
            outcome,
            status,
            policy: Some(Arc::from(policy)),
            rule: Some(Arc::from(rule)),
            reason: "why".into(),
        }
    }

    #[test]
    fn disagreements_are_told_apart_by_kind() {
        let allow = verdict("allow", 200, "api", "get");
        assert_eq!(disagreement(&allow, &allow.clone()), None);
        assert_eq!(
            disagreement(&allow, &verdict("deny", 403, "api", "no-admin")),
            Some("outcome")
        );
        assert_eq!(
            disagreement(
                &verdict("deny", 403, "api", "x"),
                &verdict("deny", 401, "api", "authentication")
            ),
            Some("status")
        );
        assert_eq!(
            disagreement(&allow, &verdict("allow", 200, "api-v2", "get")),
            Some("rule")
        );
        let unavailable = Verdict {
            outcome: "unavailable",
            status: 503,
            policy: None,
            rule: None,
            reason: "down".into(),
        };
        assert_eq!(disagreement(&allow, &unavailable), Some("outcome"));
    }
}
