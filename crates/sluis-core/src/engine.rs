//! The decision core: [`Engine::decide`] turns an [`AccessRequest`] into a [`Decision`].
//!
//! It picks the policy, authenticates the caller with the issuers that policy accepts,
//! checks scopes, and lets the policy's rules decide. Front doors call it and only
//! translate; nothing here knows which gateway asked.

pub mod candidate;
pub mod door;
pub mod response;
pub mod scopes;
pub mod search;
pub mod span;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tracing::Instrument;

use crate::audit::{DecisionLog, DecisionRecord, Verdict};
use crate::mask::{MaskConfig, Masker};

use crate::authn::{Authenticator, AuthnError, Identity, Scheme, presented_token};
use crate::decision::{
    Cause, Decision, Deny, DenyCode, Outcome, PolicyResult, Reason, ReasonCode, deny_body,
};
use crate::flows::FlowIndex;
use crate::metrics::Metrics;
use crate::policy::spec::OnError;
use crate::policy::{MethodOverride, Pass, Policy, PolicySet};
use crate::request::AccessRequest;
use crate::sources::{Fixture, Lookups, SourceSet};
use candidate::{Authenticated, Candidate};
pub use door::DoorCapabilities;

pub use crate::decision::Unavailable;
pub use crate::policy::trace::{RuleTrace, ScopeCheck, Trace};

/// How a decision's span joins the caller's distributed trace, and which trace it is in.
/// The server's telemetry (OpenTelemetry) provides one; without it a decision's span has
/// no remote parent and no trace id.
pub trait TraceContext: Send + Sync {
    /// Makes `span` a child of the trace context the request carries (`traceparent`).
    fn adopt(&self, span: &tracing::Span, request: &AccessRequest);
    /// The trace id of `span` (32 hex digits), when it has one.
    fn trace_id(&self, span: &tracing::Span) -> Option<String>;
}

pub struct Engine {
    /// The policy set in force and the sources its policies call; a reload swaps both
    /// together, and in-flight decisions keep theirs.
    in_force: ArcSwap<InForce>,
    /// Shared with the candidate set's worker, which authenticates with the same issuers
    /// and caches.
    authn: Arc<Authenticator>,
    /// The flow index policies read; the store's sync loop keeps it current. Shared with
    /// the candidate set's worker.
    flows: Arc<ArcSwap<FlowIndex>>,
    /// Where every door's decisions are recorded, when the decision log is on. Only a
    /// queue: the engine never writes a line itself.
    log: Option<DecisionLog>,
    /// The candidate policy set every decision is also put to, when configured.
    candidate: Option<Candidate>,
    /// Where decisions are counted: the authenticator's metrics.
    metrics: Arc<Metrics>,
    /// Joins decision spans to the caller's trace, when tracing is on.
    trace_context: Option<Arc<dyn TraceContext>>,
    /// Seals the grants under which upstream answers are judged ([`response`]).
    grant_key: crate::response::grant::GrantKey,
}

/// What a reload replaces as one: a policy that calls a source always finds it.
struct InForce {
    policies: Arc<PolicySet>,
    /// The declared information sources rules call, when any are.
    sources: Option<Arc<SourceSet>>,
}

/// What a decision saw on the way, for its decision log record and the candidate set.
#[derive(Default)]
pub(crate) struct Seen {
    policies: Option<Arc<PolicySet>>,
    /// The policy that decided, once chosen: its mode says whether the answer stands.
    policy: Option<Arc<Policy>>,
    caller: Option<Arc<Identity>>,
    /// What checking the request's token gave, so the candidate set need not check it
    /// again.
    authn: Option<Authenticated>,
    /// Each policy a `select` evaluated, in the order evaluated.
    evaluated: Vec<PolicyResult>,
}

/// A decision with what each policy it weighed decided: what [`Engine::decide_relayed`]
/// answers, for a door that reports per policy (knooppunt's `/pdp`).
#[derive(Debug, Clone)]
pub struct Weighed {
    pub decision: Decision,
    /// Every policy evaluated, in name order when chosen by scope; the deciding policy
    /// alone otherwise; empty when no policy was chosen.
    pub evaluated: Vec<PolicyResult>,
    /// The verified caller, when the decision authenticated one.
    pub caller: Option<Arc<crate::authn::Identity>>,
}

impl Engine {
    /// An engine deciding with `policies`, authenticating callers with `authn` and
    /// counting in its metrics.
    pub fn new(policies: PolicySet, authn: Authenticator) -> Engine {
        let metrics = authn.metrics().clone();
        Engine {
            in_force: ArcSwap::from_pointee(InForce {
                policies: Arc::new(policies),
                sources: None,
            }),
            authn: Arc::new(authn),
            flows: Arc::new(ArcSwap::from_pointee(FlowIndex::new())),
            log: None,
            candidate: None,
            metrics,
            trace_context: None,
            grant_key: crate::response::grant::GrantKey::random(),
        }
    }

    /// Lets rules call the declared information `sources`.
    pub fn with_sources(self, sources: Arc<SourceSet>) -> Engine {
        let policies = self.policies();
        self.in_force.store(Arc::new(InForce {
            policies,
            sources: Some(sources),
        }));
        self
    }

    /// The declared information sources in force.
    pub fn sources(&self) -> Option<Arc<SourceSet>> {
        self.in_force.load().sources.clone()
    }

    /// Joins every decision's span to the caller's trace through `context`.
    pub fn with_trace_context(mut self, context: Arc<dyn TraceContext>) -> Engine {
        self.trace_context = Some(context);
        self
    }

    /// The metrics decisions are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records every decision [`Engine::decide`] makes in `log`.
    pub fn with_decision_log(mut self, log: DecisionLog) -> Engine {
        self.log = Some(log);
        self
    }

    /// Puts every decision to a candidate policy set too, once one is swapped in
    /// ([`Engine::swap_candidate`]), on a background task with a queue of `queue`
    /// decisions. Call after [`Engine::with_decision_log`], from within a tokio runtime.
    pub fn with_candidate(mut self, queue: usize) -> Engine {
        self.candidate = Some(Candidate::start(
            queue,
            self.authn.clone(),
            self.flows.clone(),
            self.log.clone(),
            self.metrics.clone(),
        ));
        self
    }

    pub fn decision_log(&self) -> Option<&DecisionLog> {
        self.log.as_ref()
    }

    /// The flow index decisions read.
    pub fn flows(&self) -> Arc<FlowIndex> {
        self.flows.load_full()
    }

    /// Decides with another flow index from now on (the server's store, a test suite's
    /// fixtures).
    pub fn set_flows(&self, flows: Arc<FlowIndex>) {
        self.flows.store(flows);
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authn
    }

    /// The policy set in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.in_force.load().policies.clone()
    }

    /// Puts a new, already validated policy set in force, with the sources in force.
    pub fn swap_policies(&self, policies: PolicySet) {
        let sources = self.sources();
        self.swap_policies_and_sources(policies, sources);
    }

    /// Puts a new policy set in force together with the sources it was validated against:
    /// no decision sees the one without the other.
    pub fn swap_policies_and_sources(&self, policies: PolicySet, sources: Option<Arc<SourceSet>>) {
        let next = Arc::new(InForce {
            policies: Arc::new(policies),
            sources,
        });
        let previous = self.in_force.swap(next.clone());
        if let Some(previous) = &previous.sources {
            previous.forget_removed(next.sources.as_deref());
        }
    }

    /// The candidate policy set, when one is configured and has loaded.
    pub fn candidate_policies(&self) -> Option<Arc<PolicySet>> {
        self.candidate.as_ref().and_then(Candidate::policies)
    }

    /// Puts a new, already validated candidate set in place. Without
    /// [`Engine::with_candidate`] there is nowhere to put it, and it is dropped.
    pub fn swap_candidate(&self, policies: PolicySet) {
        if let Some(candidate) = &self.candidate {
            candidate.swap(policies);
        }
    }

    /// Waits until the candidate set has decided every decision queued so far (and handed
    /// its record to the decision log): at shutdown, before the log is flushed.
    pub async fn flush_candidate(&self) {
        if let Some(candidate) = &self.candidate {
            candidate.flush().await;
        }
    }

    /// Ready to decide: policies are loaded (they always are once built) and every issuer
    /// has keys.
    pub fn ready(&self) -> bool {
        self.authn.ready()
    }

    fn judge<'a>(&'a self, in_force: &'a InForce) -> Judge<'a> {
        Judge {
            authn: &self.authn,
            flows: &self.flows,
            sources: in_force.sources.as_ref(),
            fixtures: None,
        }
    }

    /// Decides a request from a gateway: the caller is whoever the request's token says.
    /// Every door comes through here, so this is where shadow mode applies, where the
    /// decision log and the candidate set are fed, and where the decision's span (a child
    /// of the request's `traceparent`) is opened.
    pub async fn decide(&self, request: &AccessRequest) -> Result<Decision, Unavailable> {
        self.decide_for_door(request, DoorCapabilities::ALL).await
    }

    /// [`Engine::decide`] for a door whose gateway cannot carry out every decision (an
    /// HTTP forward-auth door cannot rewrite a query): an allow the door could not carry
    /// out is refused here ([`DoorCapabilities`]), and that refusal is what metrics and
    /// the decision log record.
    pub async fn decide_for_door(
        &self,
        request: &AccessRequest,
        door: DoorCapabilities,
    ) -> Result<Decision, Unavailable> {
        self.decide_with(request, &Credentials::Request, door)
            .await
            .map(|weighed| weighed.decision)
    }

    /// Decides for a door that is given the caller's token claims by an enforcement point
    /// that verified the token itself (knooppunt's PEP introspects and checks DPoP before
    /// it asks its PDP): the claims are taken as issuer `issuer`'s, checked as an
    /// introspection answer is ([`crate::authn::issuer::Issuer::verify_relayed`]), but no
    /// signature or sender binding is checked. Only a door reachable from that enforcement
    /// point alone may call this. Answers each policy's result beside the decision.
    pub async fn decide_relayed(
        &self,
        request: &AccessRequest,
        issuer: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
        door: DoorCapabilities,
    ) -> Result<Weighed, Unavailable> {
        let weighed = self
            .decide_with(request, &Credentials::Relayed { issuer, claims }, door)
            .await;
        // Here, not in every decision: only this door reports per policy, and a door
        // that does not would build and drop the list on every Check.
        weighed.map(|mut weighed| {
            if weighed.evaluated.is_empty() {
                weighed
                    .evaluated
                    .extend(PolicyResult::of(&weighed.decision));
            }
            weighed
        })
    }

    async fn decide_with(
        &self,
        request: &AccessRequest,
        credentials: &Credentials<'_>,
        door: DoorCapabilities,
    ) -> Result<Weighed, Unavailable> {
        let time = self.log.is_some().then(SystemTime::now);
        let started = Instant::now();
        let span = span::decision_span(request, self.trace_context.as_deref());
        let mut seen = Seen::default();
        let in_force = self.in_force.load_full();
        let decided = self
            .judge(&in_force)
            .decide(
                in_force.policies.clone(),
                request,
                credentials,
                None,
                None,
                &mut seen,
            )
            .instrument(span.clone())
            .await;
        let (result, shadow) = answer(request, seen.policy.as_deref(), decided);
        let result = result.map(|decision| door.apply(decision, request));
        let result = match seen.policy.as_deref() {
            Some(policy) if policy.has_response_rules() => result.map(|decision| {
                self.grant_response(decision, request, policy, seen.caller.as_deref())
            }),
            _ => result,
        };
        let latency = started.elapsed();
        let (policy, rule, outcome, status) = match &result {
            Ok(decision) => (
                decision.policy.as_ref(),
                Some(&decision.rule),
                if decision.is_allow() { "allow" } else { "deny" },
                decision.status(),
            ),
            Err(_) => (None, None, "unavailable", 503),
        };
        let metrics = &self.metrics;
        metrics.decision(policy, rule, outcome, request.door.0, latency);
        if let Some(would) = &shadow {
            metrics.shadow_decision(policy.map_or("-", |p| &**p), would.outcome);
        }
        span::record_decision(
            &span,
            policy.map_or("-", |p| &**p),
            rule.map_or("-", |r| &**r),
            outcome,
            status,
        );
        self.log_outcome(request, &result);
        let record = time.map(|time| DecisionRecord {
            shadow,
            trace_id: self
                .trace_context
                .as_ref()
                .and_then(|context| context.trace_id(&span)),
            ..DecisionRecord::new(
                request,
                &result,
                seen.policies,
                seen.caller.clone(),
                time,
                latency,
            )
        });
        // The candidate set decides after this answer is given; the record waits for it.
        let record = match &self.candidate {
            Some(candidate) => candidate.submit(request, &result, seen.authn, record),
            None => record,
        };
        if let (Some(log), Some(record)) = (&self.log, record) {
            log.record(record).await;
        }
        result.map(|decision| Weighed {
            decision,
            evaluated: seen.evaluated,
            caller: seen.caller,
        })
    }

    /// The service's own log line for a decision: at debug, or a warning when the engine
    /// could not decide. The path and the reason are masked as the decision log masks
    /// them, so a BSN in a URL does not reach the service's log either.
    fn log_outcome(&self, request: &AccessRequest, result: &Result<Decision, Unavailable>) {
        let masker = match &self.log {
            Some(log) => log.masker(),
            None => default_masker(),
        };
        let door = request.door.0;
        let path = || masker.mask(&request.path);
        match (result, request.evaluation.as_ref()) {
            // An AuthZEN evaluation has no method or path; its subject is left out: its id
            // may be personal data.
            (Ok(decision), Some(evaluation)) => tracing::debug!(
                door,
                policy = decision.policy.as_deref().unwrap_or("-"),
                rule = %decision.rule,
                allow = decision.is_allow(),
                reason = %masker.mask(&decision.reason),
                action = evaluation.action_name(),
                resource_type = evaluation.resource_type(),
                "decision"
            ),
            // A denial is what a newcomer and an operator ask about ("why 403?"): at info,
            // with policy, rule and the masked reason, but without the path, which may
            // name a patient. Bounded, so a flood of denials cannot flood the log.
            (Ok(decision), None) if !decision.is_allow() => {
                if let Some(skipped) = DENY_LOG.admit(SystemTime::now()) {
                    if skipped > 0 {
                        tracing::info!(
                            door,
                            skipped,
                            "denials not logged (at most {DENY_LOG_PER_SECOND} a second)"
                        );
                    }
                    tracing::info!(
                        door,
                        policy = decision.policy.as_deref().unwrap_or("-"),
                        rule = %decision.rule,
                        status = decision.status(),
                        reason = %masker.mask(&decision.reason),
                        method = %request.method,
                        "request denied"
                    );
                }
                tracing::debug!(
                    door,
                    policy = decision.policy.as_deref().unwrap_or("-"),
                    rule = %decision.rule,
                    status = decision.status(),
                    method = %request.method,
                    path = %path(),
                    "decision"
                );
            }
            (Ok(decision), None) => tracing::debug!(
                door,
                policy = decision.policy.as_deref().unwrap_or("-"),
                rule = %decision.rule,
                status = decision.status(),
                reason = %masker.mask(&decision.reason),
                method = %request.method,
                path = %path(),
                "decision"
            ),
            (Err(unavailable), Some(evaluation)) => tracing::warn!(
                door,
                action = evaluation.action_name(),
                resource_type = evaluation.resource_type(),
                "{unavailable}"
            ),
            (Err(unavailable), None) => {
                tracing::warn!(door, method = %request.method, path = %path(), "{unavailable}")
            }
        }
    }

    /// Decides with the given credentials, recording each step in `trace` when asked
    /// (`sluis explain`, `sluis test`). Doors use [`Engine::decide`]. A shadow policy's
    /// decision is given as it would be enforced: what its tests and explanations judge.
    pub async fn decide_as(
        &self,
        request: &AccessRequest,
        credentials: &Credentials<'_>,
        trace: Option<&mut Trace>,
    ) -> Result<Decision, Unavailable> {
        self.decide_with_fixtures(request, credentials, trace, None)
            .await
    }

    /// [`Engine::decide_as`] with information sources answered by test `fixtures` (no
    /// cache, no network) when given: what `sluis test` decides with.
    pub async fn decide_with_fixtures(
        &self,
        request: &AccessRequest,
        credentials: &Credentials<'_>,
        trace: Option<&mut Trace>,
        fixtures: Option<Arc<[Fixture]>>,
    ) -> Result<Decision, Unavailable> {
        let in_force = self.in_force.load_full();
        let mut seen = Seen::default();
        let result = Judge {
            fixtures,
            ..self.judge(&in_force)
        }
        .decide(
            in_force.policies.clone(),
            request,
            credentials,
            None,
            trace,
            &mut seen,
        )
        .await;
        // An allow of a policy that judges answers carries its grant here too, so that
        // `sluis test` and `explain` judge a case's answer as the server would.
        match seen.policy.as_deref() {
            Some(policy) if policy.has_response_rules() => result.map(|decision| {
                self.grant_response(decision, request, policy, seen.caller.as_deref())
            }),
            _ => result,
        }
    }
}

/// Masks BSNs in the service's log when no decision log says what to mask.
fn default_masker() -> &'static Masker {
    static MASKER: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
    MASKER.get_or_init(|| Masker::new(&MaskConfig::default()))
}

/// What the gateway is told: the decision, or for a shadow policy an allow, beside the
/// verdict it would have been told.
pub(crate) fn answer(
    request: &AccessRequest,
    policy: Option<&Policy>,
    decided: Result<Decision, Unavailable>,
) -> (Result<Decision, Unavailable>, Option<Verdict>) {
    let Some(policy) = policy.filter(|p| p.is_shadow()) else {
        return (decided, None);
    };
    let would = Verdict::of(&decided);
    let answer = match decided {
        Ok(decision) if decision.is_allow() => decision,
        _ => Decision {
            outcome: Outcome::Allow(policy.pass_through(request)),
            policy: Some(policy.id.clone()),
            rule: Arc::from("shadow"),
            reason: format!(
                "shadow mode, let through: would {} with {} (rule `{}`): {}",
                would.outcome,
                would.status,
                would.rule.as_deref().unwrap_or("-"),
                would.reason
            ),
        },
    };
    (Ok(answer), Some(would))
}

/// What deciding needs besides a policy set: the same for the enforced and the candidate
/// set.
struct Judge<'a> {
    authn: &'a Authenticator,
    flows: &'a ArcSwap<FlowIndex>,
    sources: Option<&'a Arc<SourceSet>>,
    fixtures: Option<Arc<[Fixture]>>,
}

impl Judge<'_> {
    /// Chooses the policy of `policies`, authenticates (or takes what `prior`, the
    /// enforced path, found about the token, when that holds for this policy), checks
    /// scopes and evaluates the rules.
    async fn decide(
        &self,
        policies: Arc<PolicySet>,
        request: &AccessRequest,
        credentials: &Credentials<'_>,
        prior: Option<&Authenticated>,
        mut trace: Option<&mut Trace>,
        seen: &mut Seen,
    ) -> Result<Decision, Unavailable> {
        // A method-override header makes an upstream that honours it perform another
        // method: the policy is chosen, and judges, as that method, or the request is
        // refused; it never passes unjudged.
        let method_override = request.method_override();
        let overridden = match &method_override {
            Some(Ok(method)) if *method != request.method => Some(AccessRequest {
                method: method.clone(),
                ..request.clone()
            }),
            _ => None,
        };
        let request = overridden.as_ref().unwrap_or(request);
        let policy = match policies.select(request) {
            Ok(policy) => policy.clone(),
            Err(reason) => {
                if let Some(trace) = trace.as_deref_mut() {
                    trace.policy = format!("{reason}; {}", policies.why_not(request));
                }
                seen.policies = Some(policies);
                return Ok(no_policy(reason));
            }
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.policy = policies.why(request, &policy);
            if policy.is_shadow() {
                trace.policy.push_str(
                    "; it is in shadow mode: a gateway is told allow whatever it decides, and this decision is logged as what it would have answered",
                );
            }
        }
        seen.policies = Some(policies);
        seen.policy = Some(policy.clone());
        match (method_override, policy.method_override) {
            (None, _) => {}
            (Some(Ok(method)), MethodOverride::Judge) => note(&mut trace, || {
                format!("judged as `{method}`, the method its method-override header asks for")
            }),
            (Some(Ok(_)), MethodOverride::Refuse) => {
                let reason = "the request carries a method-override header, which this policy refuses (`method_override: refuse`)".to_owned();
                note(&mut trace, || reason.clone());
                return Ok(policy.refuse_method_override(reason));
            }
            (Some(Err(reason)), _) => {
                note(&mut trace, || reason.clone());
                return Ok(policy.refuse_method_override(reason));
            }
        }
        if policy.anonymous {
            note(&mut trace, || {
                "anonymous policy: no token checked, `token` is null".into()
            });
            return self.evaluate(&policy, request, None, trace).await;
        }
        let mut scheme = Scheme::Bearer;
        let reused = prior.and_then(|prior| prior.for_policy(&policy));
        let identity = match (reused, credentials) {
            (Some((presented, result)), _) => {
                scheme = presented;
                result
            }
            (None, Credentials::Request) => {
                let result = match presented_token(request) {
                    Ok((presented, token)) => {
                        scheme = presented;
                        let identity = self.authn.authenticate(token, &policy.issuers).await;
                        match identity {
                            Ok(identity) => {
                                note(&mut trace, || {
                                    format!(
                                        "{} verified by issuer `{}` ({}): algorithm, signature, iss, aud, exp and nbf checked",
                                        match presented {
                                            Scheme::Bearer => "bearer token",
                                            Scheme::Dpop => "DPoP token",
                                        },
                                        identity.issuer,
                                        identity.iss
                                    )
                                });
                                self.authn
                                    .check_binding(request, presented, token, &identity)
                                    .await
                                    .map(|()| identity)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                seen.authn = Some(Authenticated::new(scheme, &policy, &result));
                result
            }
            (None, Credentials::Relayed { issuer, claims }) => {
                let result = self
                    .authn
                    .identity_from_relayed(issuer, claims, &policy.issuers)
                    .map(Arc::new);
                if result.is_ok() {
                    note(&mut trace, || {
                        format!(
                            "token claims relayed for issuer `{issuer}` by the enforcement point that verified the token: active, iss, aud, exp and nbf checked here, signature and sender binding there"
                        )
                    });
                }
                seen.authn = Some(Authenticated::new(scheme, &policy, &result));
                result
            }
            (None, Credentials::Claims { issuer, claims }) => {
                let identity = self
                    .authn
                    .identity_from_claims(issuer, claims, &policy.issuers)
                    .map(Arc::new);
                if identity.is_ok() {
                    note(&mut trace, || {
                        format!(
                            "token given as claims for issuer `{issuer}`: no signature checked; iss, aud, exp, nbf and lifetime checked as for a real token"
                        )
                    });
                }
                identity
            }
        };
        let identity = match identity {
            Ok(identity) => {
                seen.caller = Some(identity.clone());
                identity
            }
            Err(AuthnError::Unavailable(unavailable)) => {
                note(&mut trace, || {
                    format!("identity could not be checked: {}", unavailable.detail)
                });
                return Err(unavailable);
            }
            Err(e) => {
                note(&mut trace, || format!("authentication failed: {e}"));
                return Ok(authn_denial(&policy, scheme, &self.authn.dpop.algs(), e));
            }
        };
        let missing = policy.missing_scopes(&identity);
        if let Some(trace) = trace.as_deref_mut() {
            trace.scopes = Some(ScopeCheck {
                required: policy.scopes.clone(),
                present: identity.scopes.clone(),
                missing: missing.iter().map(|s| s.to_string()).collect(),
            });
        }
        if !missing.is_empty() {
            return Ok(policy.deny_scopes(&missing));
        }
        if let Some(selector) = &policy.select {
            let Some(policies) = seen.policies.clone() else {
                return Ok(no_policy("no policy set".into()));
            };
            return self
                .by_scope(
                    &policies, &policy, selector, request, &identity, trace, seen,
                )
                .await;
        }
        self.evaluate(&policy, request, Some(&identity), trace)
            .await
    }

    /// The policy's rules, with the look-ups they need fetched between passes: every
    /// look-up a pass wants is fetched concurrently, then the rules run again, at most
    /// `lookups.max_rounds` times. A decision whose look-ups are all cached is one pass.
    async fn evaluate(
        &self,
        policy: &Arc<Policy>,
        request: &AccessRequest,
        identity: Option<&Identity>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Decision, Unavailable> {
        let sources = match self.sources {
            Some(sources) if policy.uses_sources => sources,
            _ => return Ok(policy.evaluate(request, identity, &self.flows.load(), trace)),
        };
        // The caller's own bearer token, for userinfo; a DPoP-bound one cannot be used
        // without a proof Sluis cannot make. Copied only where a userinfo source is
        // declared: nothing else reads it.
        let (token, sub) = if sources.asks_with_the_callers_token() {
            let token = match presented_token(request) {
                Ok((Scheme::Bearer, token)) if identity.is_some() => Some(Arc::from(token)),
                _ => None,
            };
            (token, identity.and_then(|i| i.sub.clone()))
        } else {
            (None, None)
        };
        let lookups = Arc::new(Lookups::new(
            sources.clone(),
            token,
            sub,
            self.fixtures.clone(),
        ));
        // An `Arc`, not a guard: it is held across the fetches.
        let flows = self.flows.load_full();
        let mut round = 0;
        let decision = loop {
            match policy.evaluate_with(request, identity, &flows, trace.as_deref_mut(), &lookups) {
                Pass::Decided(decision) => break decision,
                Pass::Needs(pending) => {
                    round += 1;
                    if round > lookups.max_rounds() {
                        lookups.refuse(pending, crate::sources::LookupFailure::TooDeep);
                        continue;
                    }
                    let failed = lookups.fetch_all(pending).await;
                    if let (Some(failed), OnError::Unavailable) = (failed, policy.on_error) {
                        if let Some(trace) = trace.as_deref_mut() {
                            trace.lookups = lookups.report();
                        }
                        return Err(Unavailable::new(Cause::Source, failed));
                    }
                }
            }
        };
        if let Some(trace) = trace {
            trace.lookups = lookups.report();
        }
        Ok(decision)
    }

    /// The decision of the policies the token's scopes name (`select`): each is
    /// evaluated, in name order, and the first that allows decides; every one's result is
    /// kept in `seen.evaluated`. A scope naming no listed policy is reported as
    /// `not_implemented`, as the Nuts reference PDP does.
    #[allow(
        clippy::too_many_arguments,
        reason = "the decision's whole state, as `decide` has it"
    )]
    async fn by_scope(
        &self,
        policies: &PolicySet,
        selecting: &Arc<Policy>,
        selector: &crate::policy::Selector,
        request: &AccessRequest,
        identity: &Identity,
        mut trace: Option<&mut Trace>,
        seen: &mut Seen,
    ) -> Result<Decision, Unavailable> {
        let mut scopes: Vec<String> = identity
            .scopes
            .iter()
            .map(|scope| selector.normalize.apply(scope))
            .collect();
        scopes.sort();
        scopes.dedup();
        let refuse = |rule: &str, reason: String| Decision {
            outcome: Outcome::Deny(Deny {
                status: 403,
                headers: vec![("content-type".into(), "application/json".into())],
                body: deny_body(DenyCode::AccessDenied, "access denied by policy"),
            }),
            policy: Some(selecting.id.clone()),
            rule: Arc::from(rule),
            reason,
        };
        if scopes.len() > MAX_SELECTING_SCOPES {
            note(&mut trace, || {
                format!("{} scopes: more than {MAX_SELECTING_SCOPES}", scopes.len())
            });
            return Ok(refuse(
                "too-many-scopes",
                format!("the token has more than {MAX_SELECTING_SCOPES} scopes"),
            ));
        }
        if scopes.is_empty() {
            note(&mut trace, || {
                "the token has no scope to choose a policy by".into()
            });
            return Ok(refuse("no-scope", "no policy defined".into()));
        }
        let mut allowed: Option<(Decision, Arc<Policy>)> = None;
        let mut denied: Vec<(Decision, Arc<Policy>)> = Vec::new();
        for scope in &scopes {
            let chosen = selector
                .by_scope
                .iter()
                .find(|id| ***id == **scope)
                .and_then(|id| policies.get(id));
            let Some(chosen) = chosen else {
                seen.evaluated.push(PolicyResult {
                    policy: Arc::from(scope.as_str()),
                    allow: false,
                    reasons: vec![Reason {
                        code: ReasonCode::NotImplemented,
                        description: format!("scope `{scope}` has no policy"),
                    }],
                });
                continue;
            };
            note(&mut trace, || {
                format!("scope `{scope}` chooses policy `{}`", chosen.id)
            });
            let missing = chosen.missing_scopes(identity);
            let decision = if missing.is_empty() {
                self.evaluate(chosen, request, Some(identity), trace.as_deref_mut())
                    .await?
            } else {
                chosen.deny_scopes(&missing)
            };
            seen.evaluated.extend(PolicyResult::of(&decision));
            if !decision.is_allow() {
                denied.push((decision, chosen.clone()));
            } else if allowed.is_none() {
                allowed = Some((decision, chosen.clone()));
            }
        }
        if let Some((decision, chosen)) = allowed {
            // Its response rules and shadow mode are the chosen policy's.
            seen.policy = Some(chosen);
            return Ok(decision);
        }
        // One policy weighed, and it denied: its own answer (status, rule, body) stands.
        if seen.evaluated.len() == 1
            && let Some((decision, chosen)) = denied.pop()
        {
            seen.policy = Some(chosen);
            return Ok(decision);
        }
        let why: Vec<String> = seen
            .evaluated
            .iter()
            .map(|result| {
                let reasons: Vec<&str> = result
                    .reasons
                    .iter()
                    .map(|r| r.description.as_str())
                    .collect();
                format!("{}: {}", result.policy, reasons.join("; "))
            })
            .collect();
        Ok(refuse(
            "no-scope-allows",
            format!(
                "no policy the token's scopes choose allows: {}",
                why.join(", ")
            ),
        ))
    }
}

/// More scopes than this on a token that chooses policies by scope is refused: each one
/// costs a policy evaluation.
const MAX_SELECTING_SCOPES: usize = 16;

/// Who the caller is, for [`Engine::decide_as`].
pub enum Credentials<'a> {
    /// The request's own `Authorization` header, verified: what every door uses.
    Request,
    /// Claims taken as if the named issuer had signed them. Only for offline tools
    /// (`sluis test`, `explain`, `replay`): a door never builds this.
    Claims {
        issuer: &'a str,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    },
    /// The claims of a token an enforcement point in front verified (introspected, its
    /// sender binding checked) and relayed: knooppunt's PEP to its PDP. Checked as an
    /// introspection answer ([`Engine::decide_relayed`]).
    Relayed {
        issuer: &'a str,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    },
}

/// Records a step of the decision for `explain` and `sluis test`. The text is only made
/// when a trace is kept: a door's decision keeps none, and formatting the step anyway (the
/// token's issuer, on every Check) cost 0.8k instructions and an allocation.
fn note(trace: &mut Option<&mut Trace>, step: impl FnOnce() -> String) {
    if let Some(trace) = trace.as_deref_mut() {
        trace.identity.push(step());
    }
}

fn no_policy(reason: String) -> Decision {
    Decision {
        outcome: Outcome::Deny(Deny {
            status: 403,
            headers: vec![("content-type".into(), "application/json".into())],
            body: deny_body(DenyCode::AccessDenied, "no policy allows this request"),
        }),
        policy: None,
        rule: Arc::from("no-policy"),
        reason,
    }
}

/// RFC 6750 §3: 401 with a challenge; `error` only when a token was presented.
/// RFC 6750 §3 / RFC 9449 §7: 401 with a challenge in the scheme the client used;
/// `error` only when a token was presented.
fn authn_denial(policy: &Policy, scheme: Scheme, dpop_algs: &str, error: AuthnError) -> Decision {
    let realm = &policy.realm;
    let challenge = |error_code: &str, description: &str| {
        let description = quotable(description);
        match scheme {
            Scheme::Bearer => format!(
                "Bearer realm=\"{realm}\", error=\"{error_code}\", error_description=\"{description}\""
            ),
            Scheme::Dpop => format!(
                "DPoP realm=\"{realm}\", algs=\"{dpop_algs}\", error=\"{error_code}\", error_description=\"{description}\""
            ),
        }
    };
    let (status, code, challenge, message) = match &error {
        AuthnError::Missing => (
            401,
            DenyCode::Unauthorized,
            format!("Bearer realm=\"{realm}\""),
            "an access token is required".to_string(),
        ),
        AuthnError::Invalid(description) => (
            401,
            DenyCode::InvalidToken,
            challenge("invalid_token", description),
            description.clone(),
        ),
        AuthnError::InvalidProof(description) => (
            401,
            DenyCode::InvalidDpopProof,
            challenge("invalid_dpop_proof", description),
            description.clone(),
        ),
        // RFC 9449 §9: the challenge names the error in the DPoP scheme whatever scheme
        // the client used (only DPoP proofs get here), and the fresh nonce rides along.
        AuthnError::UseNonce { .. } => (
            401,
            DenyCode::UseDpopNonce,
            format!(
                "DPoP realm=\"{realm}\", algs=\"{dpop_algs}\", error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\""
            ),
            "Resource server requires nonce in DPoP proof".to_string(),
        ),
        AuthnError::Unavailable(Unavailable {
            detail: description,
            ..
        })
        | AuthnError::BadRequest(description) => (
            400,
            DenyCode::InvalidRequest,
            challenge("invalid_request", description),
            description.clone(),
        ),
    };
    let mut headers = vec![
        ("content-type".into(), "application/json".into()),
        ("www-authenticate".into(), challenge),
    ];
    if let AuthnError::UseNonce { fresh } = &error {
        headers.push(("dpop-nonce".into(), fresh.clone()));
    }
    Decision {
        outcome: Outcome::Deny(Deny {
            status,
            headers,
            body: deny_body(code, &message),
        }),
        policy: Some(policy.id.clone()),
        rule: Arc::from("authentication"),
        reason: format!("authentication failed: {error}"),
    }
}

/// Text safe inside a quoted-string of a challenge: RFC 6750 §3 allows printable ASCII
/// but `"` and `\\` in `error_description`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '\''
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;

/// How many denials a second reach the info log; the decision log has every one.
const DENY_LOG_PER_SECOND: u64 = 10;

/// The info log's budget for denial lines: [`DENY_LOG_PER_SECOND`] per wall-clock second,
/// process-wide (the log is), counting what it drops so the next admitted line says so.
static DENY_LOG: DenyLogBudget = DenyLogBudget::new();

/// The same budget for the info lines of answers judged with entries withheld or denied
/// (`engine::response`): its own, so answers cannot crowd out request denials.
static RESPONSE_LOG: DenyLogBudget = DenyLogBudget::new();

struct DenyLogBudget {
    /// (second since the epoch << 20) | lines logged in it, so one compare-and-swap
    /// moves both.
    window: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl DenyLogBudget {
    const fn new() -> Self {
        DenyLogBudget {
            window: std::sync::atomic::AtomicU64::new(0),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines dropped since the last admitted one)` when a line may be logged now.
    fn admit(&self, now: SystemTime) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let admitted = self
            .window
            .fetch_update(Relaxed, Relaxed, |window| {
                let (at, count) = (window >> 20, window & 0xF_FFFF);
                if at != second {
                    Some((second << 20) | 1)
                } else if count < DENY_LOG_PER_SECOND {
                    Some(window + 1)
                } else {
                    None
                }
            })
            .is_ok();
        if admitted {
            Some(self.skipped.swap(0, Relaxed))
        } else {
            self.skipped.fetch_add(1, Relaxed);
            None
        }
    }
}
