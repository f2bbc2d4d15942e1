//! The decision core: [`Engine::decide`] turns an [`AccessRequest`] into a [`Decision`].
//!
//! It picks the policy, authenticates the caller with the issuers that policy accepts,
//! checks scopes, and lets the policy's rules decide. Front doors call it and only
//! translate; nothing here knows which gateway asked.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::audit::{DecisionLog, DecisionRecord};

use crate::authn::{Authenticator, AuthnError, Identity, Scheme, presented_token};
use crate::config::Config;
use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
use crate::flows::FlowIndex;
use crate::policy::{Policy, PolicySet};
use crate::request::AccessRequest;

/// The engine could not decide: e.g. an identity provider is down. Never an allow; the
/// door answers so that the gateway's failure mode applies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot decide: {0}")]
pub struct Unavailable(pub String);

pub struct Engine {
    /// The policy set in force; a reload swaps it whole, in-flight decisions keep theirs.
    policies: ArcSwap<PolicySet>,
    authn: Authenticator,
    /// The flow index policies read; the store's sync loop keeps it current.
    flows: ArcSwap<FlowIndex>,
    /// Where every door's decisions are recorded, when the decision log is on. Only a
    /// queue: the engine never writes a line itself.
    log: Option<DecisionLog>,
}

/// What a decision saw on the way, for its decision log record.
#[derive(Default)]
struct Seen {
    policies: Option<Arc<PolicySet>>,
    caller: Option<Arc<Identity>>,
}

impl Engine {
    pub fn new(config: &Config, policies: PolicySet) -> Result<Engine, String> {
        Ok(Engine {
            policies: ArcSwap::from_pointee(policies),
            authn: Authenticator::new(config)?,
            flows: ArcSwap::from_pointee(FlowIndex::new()),
            log: None,
        })
    }

    /// Records every decision [`Engine::decide`] makes in `log`.
    pub fn with_decision_log(mut self, log: DecisionLog) -> Engine {
        self.log = Some(log);
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
        self.policies.load_full()
    }

    /// Puts a new, already validated policy set in force.
    pub fn swap_policies(&self, policies: PolicySet) {
        self.policies.store(Arc::new(policies));
    }

    /// Ready to decide: policies are loaded (they always are once built) and every issuer
    /// has keys.
    pub fn ready(&self) -> bool {
        self.authn.ready()
    }

    /// Decides a request from a gateway: the caller is whoever the request's token says.
    /// Every door comes through here, so this is where the decision log is fed.
    pub async fn decide(&self, request: &AccessRequest) -> Result<Decision, Unavailable> {
        self.decide_for_door(request, |decision, _| decision).await
    }

    /// [`Engine::decide`] for a door whose gateway cannot carry out every decision (an
    /// HTTP door cannot rewrite a query): `door` turns the decision into the answer the
    /// door will give, and that answer is what metrics and the decision log record.
    pub async fn decide_for_door(
        &self,
        request: &AccessRequest,
        door: impl FnOnce(Decision, &AccessRequest) -> Decision,
    ) -> Result<Decision, Unavailable> {
        let time = self.log.is_some().then(SystemTime::now);
        let started = Instant::now();
        let mut seen = Seen::default();
        let result = self
            .decide_seen(request, &Credentials::Request, None, &mut seen)
            .await
            .map(|decision| door(decision, request));
        let latency = started.elapsed();
        let (policy, rule, outcome) = match &result {
            Ok(decision) => (
                decision.policy.as_ref(),
                Some(&decision.rule),
                if decision.is_allow() { "allow" } else { "deny" },
            ),
            Err(_) => (None, None, "unavailable"),
        };
        crate::metrics::global().decision(policy, rule, outcome, request.door.0, latency);
        if let (Some(log), Some(time)) = (&self.log, time) {
            log.record(DecisionRecord::new(
                request,
                &result,
                seen.policies,
                seen.caller,
                time,
                latency,
            ))
            .await;
        }
        result
    }

    /// Decides with the given credentials, recording each step in `trace` when asked
    /// (`sluis explain`, `sluis test`). Doors use [`Engine::decide`].
    pub async fn decide_as(
        &self,
        request: &AccessRequest,
        credentials: &Credentials<'_>,
        trace: Option<&mut Trace>,
    ) -> Result<Decision, Unavailable> {
        self.decide_seen(request, credentials, trace, &mut Seen::default())
            .await
    }

    async fn decide_seen(
        &self,
        request: &AccessRequest,
        credentials: &Credentials<'_>,
        mut trace: Option<&mut Trace>,
        seen: &mut Seen,
    ) -> Result<Decision, Unavailable> {
        let policies = self.policies.load_full();
        seen.policies = Some(policies.clone());
        let policy = match policies.select(request) {
            Ok(policy) => policy.clone(),
            Err(reason) => {
                if let Some(trace) = trace.as_deref_mut() {
                    trace.policy = format!("{reason}; {}", policies.why_not(request));
                }
                return Ok(no_policy(reason));
            }
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.policy = policies.why(request, &policy);
        }
        if policy.anonymous {
            note(
                &mut trace,
                "anonymous policy: no token checked, `token` is null".into(),
            );
            return Ok(policy.evaluate(request, None, &self.flows.load(), trace));
        }
        let mut scheme = Scheme::Bearer;
        let identity = match credentials {
            Credentials::Request => match presented_token(request) {
                Ok((presented, token)) => {
                    scheme = presented;
                    let identity = self.authn.authenticate(token, &policy.issuers).await;
                    match identity {
                        Ok(identity) => {
                            note(
                                &mut trace,
                                format!(
                                    "{} verified by issuer `{}` ({}): algorithm, signature, iss, aud, exp and nbf checked",
                                    match presented {
                                        Scheme::Bearer => "bearer token",
                                        Scheme::Dpop => "DPoP token",
                                    },
                                    identity.issuer,
                                    identity.iss
                                ),
                            );
                            self.authn
                                .check_binding(request, presented, token, &identity)
                                .await
                                .map(|()| identity)
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            Credentials::Claims { issuer, claims } => {
                let identity = self
                    .authn
                    .identity_from_claims(issuer, claims, &policy.issuers)
                    .map(Arc::new);
                if identity.is_ok() {
                    note(
                        &mut trace,
                        format!(
                            "token given as claims for issuer `{issuer}`: no signature checked; iss, aud, exp, nbf and lifetime checked as for a real token"
                        ),
                    );
                }
                identity
            }
        };
        let identity = match identity {
            Ok(identity) => {
                seen.caller = Some(identity.clone());
                identity
            }
            Err(AuthnError::Unavailable(reason)) => {
                note(
                    &mut trace,
                    format!("identity could not be checked: {reason}"),
                );
                return Err(Unavailable(reason));
            }
            Err(e) => {
                note(&mut trace, format!("authentication failed: {e}"));
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
        Ok(policy.evaluate(request, Some(&identity), &self.flows.load(), trace))
    }
}

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
}

/// How a decision was reached, step by step.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Trace {
    /// Which policy was chosen and why (or why none).
    pub policy: String,
    /// The identity checks that ran, in order.
    pub identity: Vec<String>,
    pub scopes: Option<ScopeCheck>,
    /// Whose flows the policy read, and which were active.
    pub flows: Option<String>,
    /// The GraphQL operation read, and the template it fits (or why not).
    pub graphql: Option<String>,
    /// The caller's identifiers (`caller`), when the policy defines any.
    pub caller: Option<String>,
    /// Each rule, in evaluation order (deny rules first), with its result.
    pub rules: Vec<RuleTrace>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScopeCheck {
    pub required: Vec<String>,
    pub present: Vec<String>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleTrace {
    pub rule: String,
    pub effect: &'static str,
    pub condition: String,
    /// `true`, `false` or `error: ...`.
    pub result: String,
    /// Values of the condition's parts (operands of `&&`, `||`, `!` and comparisons).
    pub parts: Vec<(String, String)>,
}

fn note(trace: &mut Option<&mut Trace>, step: String) {
    if let Some(trace) = trace.as_deref_mut() {
        trace.identity.push(step);
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
        AuthnError::BadRequest(description) | AuthnError::Unavailable(description) => (
            400,
            DenyCode::InvalidRequest,
            challenge("invalid_request", description),
            description.clone(),
        ),
    };
    Decision {
        outcome: Outcome::Deny(Deny {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("www-authenticate".into(), challenge),
            ],
            body: deny_body(code, &message),
        }),
        policy: Some(policy.id.clone()),
        rule: Arc::from("authentication"),
        reason: format!("authentication failed: {error}"),
    }
}

/// Text safe inside a quoted-string of a challenge.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .collect()
}
