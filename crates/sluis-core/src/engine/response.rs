//! Judging an upstream's answer: the ext_proc door's engine operation.
//!
//! The request decision seals a grant into its allow (`Engine::grant_response`); the
//! gateway hands it back with the answer, and [`Engine::judge_response`] opens it, rebuilds
//! the request's variables from it (policy, verified claims, method, path, query, host,
//! context: never anything from the answer itself) and lets the policy's response rules
//! judge. No grant, a grant that does not verify or has expired, a policy gone since: the
//! answer is denied, never passed.

use std::sync::Arc;

use super::Engine;
use crate::authn::Identity;
use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
use crate::policy::Policy;
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

    /// Judges an upstream's answer under the grant its request decision sealed.
    pub fn judge_response(
        &self,
        sealed_grant: Option<&str>,
        parts: &ResponseParts<'_>,
    ) -> ResponseDecision {
        let started = std::time::Instant::now();
        let decided = self.judge_sealed(sealed_grant, parts);
        let (outcome, status) = match &decided.verdict {
            ResponseVerdict::Pass { .. } => ("pass", parts.status),
            ResponseVerdict::Filter { .. } => ("filter", parts.status),
            ResponseVerdict::Deny(deny) => ("deny", deny.status),
        };
        self.metrics.decision(
            decided.policy.as_ref(),
            Some(&decided.rule),
            outcome,
            "envoy-ext-proc",
            started.elapsed(),
        );
        self.metrics
            .response_entries(decided.policy.as_ref(), decided.kept, decided.withheld);
        let masker = super::default_masker();
        tracing::info!(
            door = "envoy-ext-proc",
            policy = decided.policy.as_deref().unwrap_or("-"),
            rule = %decided.rule,
            outcome,
            status,
            kept = decided.kept,
            withheld = decided.withheld,
            reason = %masker.mask(&decided.reason),
            "response decision"
        );
        decided
    }

    fn judge_sealed(&self, sealed: Option<&str>, parts: &ResponseParts<'_>) -> ResponseDecision {
        if !parts.from_upstream {
            // E.g. the request's own denial, which carries no grant: nothing of the
            // upstream's to withhold.
            return ResponseDecision {
                verdict: ResponseVerdict::Pass {
                    remove_headers: Vec::new(),
                },
                policy: None,
                rule: Arc::from("response"),
                reason: "the gateway's own answer".into(),
                kept: 0,
                withheld: 0,
            };
        }
        let Some(sealed) = sealed else {
            return no_grant("no response grant came with the answer".into());
        };
        let grant = match ResponseGrant::open(sealed, &self.grant_key, now()) {
            Ok(grant) => grant,
            Err(e) => return no_grant(format!("response grant refused: {e}")),
        };
        let shadow = grant.shadow;
        let decided = self.judge_granted(grant, parts);
        if !shadow {
            return decided;
        }
        // A shadow policy's judgement is only logged: the answer goes through, also when
        // the request was let through only because of shadow mode (no identity).
        ResponseDecision {
            verdict: ResponseVerdict::Pass {
                remove_headers: Vec::new(),
            },
            reason: format!("shadow mode, passed: {}", decided.reason),
            ..decided
        }
    }

    fn judge_granted(&self, grant: ResponseGrant, parts: &ResponseParts<'_>) -> ResponseDecision {
        let policies = self.policies();
        let Some(policy) = policies.get(&grant.policy) else {
            return no_grant(format!(
                "policy `{}` of the response grant is no longer loaded",
                grant.policy
            ));
        };
        let identity = match &grant.issuer {
            Some(issuer) => {
                match self
                    .authn
                    .identity_from_claims(issuer, &grant.claims, &policy.issuers)
                {
                    Ok(identity) => Some(identity),
                    Err(e) => {
                        return ResponseDecision {
                            policy: Some(policy.id.clone()),
                            ..no_grant(format!("the grant's claims no longer hold: {e}"))
                        };
                    }
                }
            }
            None if policy.anonymous => None,
            None => return no_grant("the grant names no issuer".into()),
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
        let judged = policy.judge_response(&request, identity.as_ref(), &self.flows.load(), parts);
        ResponseDecision {
            verdict: judged.verdict,
            policy: Some(policy.id.clone()),
            rule: judged.rule,
            reason: judged.reason,
            kept: judged.kept,
            withheld: judged.withheld,
        }
    }
}

#[cfg(test)]
mod tests;
