//! Questions asked by use case (the Care Services Proxy's): which policy answers for a
//! use case, and the scopes a use case amounts to, merged from one decision per narrowed
//! resource type. The door only translates its JSON to and from these.

use std::sync::Arc;

use super::{DoorCapabilities, Engine, Unavailable};
use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
use crate::request::{AccessRequest, POLICY_CONTEXT_KEY};

/// What [`Engine::decide_scopes`] answers.
#[derive(Debug)]
pub enum Scopes {
    /// The resource types the use case may search, each with its narrowing; never empty.
    Granted(Vec<Scope>),
    /// Nothing granted: the denial to answer with.
    Denied(Decision),
}

/// Read and search access to one resource type, narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub resource_type: String,
    /// The query parameters the narrowing sets, in the decision's order.
    pub narrowing: Vec<(String, String)>,
    /// When the grant ends: the verified token's `exp` (Unix seconds); `None` when the
    /// decision verified no token, or one without `exp`.
    pub expires_at: Option<i64>,
}

impl Engine {
    /// Puts a FHIR request whose path is `relative` (to the FHIR base, as the proxy wrote
    /// it) where the policy that answers for `use_case` decides it: below its narrowing's
    /// base path, with the policy named in the request's context. Or, when no policy
    /// answers for the use case, the 403 to answer; no request was judged, so it is not a
    /// decision the log or metrics record.
    pub fn place_in_use_case(
        &self,
        use_case: &str,
        relative: &str,
        request: &mut AccessRequest,
    ) -> Result<(), Box<Decision>> {
        let policies = self.policies();
        let Some(policy) = policies.for_use_case(use_case) else {
            return Err(Box::new(unknown_use_case(use_case)));
        };
        let base = policy.narrowing().map(|n| n.base_path()).unwrap_or("");
        request
            .context
            .insert(POLICY_CONTEXT_KEY.into(), policy.id.to_string());
        request.path = format!("{base}/{}", relative.trim_start_matches('/'));
        Ok(())
    }

    /// The scopes `use_case` amounts to: one search per resource type its policy narrows,
    /// decided (and logged and metered) as the proxy would ask it, `request` giving the
    /// caller's headers and context. The narrowing each allow sets is that scope's
    /// constraint. A 401 answers at once (the caller must authenticate, whatever the
    /// other types would say); when nothing is granted, the last denial answers, or a 403
    /// when the use case has no policy or nothing narrowed.
    pub async fn decide_scopes(
        &self,
        use_case: &str,
        request: &AccessRequest,
    ) -> Result<Scopes, Unavailable> {
        let policies = self.policies();
        let Some(policy) = policies.for_use_case(use_case) else {
            return Ok(Scopes::Denied(unknown_use_case(use_case)));
        };
        let Some(narrowing) = policy.narrowing() else {
            return Ok(Scopes::Denied(unknown_use_case(use_case)));
        };
        let mut granted = Vec::new();
        let mut last_denial = None;
        for resource_type in narrowing.resource_types() {
            let mut access = AccessRequest {
                method: "GET".into(),
                path: format!("{}/{resource_type}", narrowing.base_path()),
                query: String::new(),
                ..request.clone()
            };
            access
                .context
                .insert(POLICY_CONTEXT_KEY.into(), policy.id.to_string());
            let weighed = self
                .decide_with(&access, &super::Credentials::Request, DoorCapabilities::ALL)
                .await?;
            let expires_at = weighed.caller.as_ref().and_then(|caller| caller.exp);
            let decision = weighed.decision;
            match decision.outcome {
                Outcome::Allow(allow) => granted.push(Scope {
                    resource_type: resource_type.to_owned(),
                    narrowing: allow.set_query,
                    expires_at,
                }),
                Outcome::Deny(_) if decision.status() == 401 => {
                    return Ok(Scopes::Denied(decision));
                }
                Outcome::Deny(_) => last_denial = Some(decision),
            }
        }
        if granted.is_empty() {
            return Ok(Scopes::Denied(
                last_denial.unwrap_or_else(|| unknown_use_case(use_case)),
            ));
        }
        Ok(Scopes::Granted(granted))
    }
}

/// No policy answers for the use case (or it narrows nothing).
fn unknown_use_case(use_case: &str) -> Decision {
    let message = format!("no policy answers for use case `{use_case}`");
    Decision {
        outcome: Outcome::Deny(Deny {
            status: 403,
            headers: vec![("content-type".into(), "application/json".into())],
            body: deny_body(DenyCode::AccessDenied, &message),
        }),
        policy: None,
        rule: Arc::from("no-use-case"),
        reason: message,
    }
}
