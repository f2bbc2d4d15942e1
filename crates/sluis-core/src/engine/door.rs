//! What a door can carry out of a decision, and the refusal of an allow it cannot.
//!
//! The engine decides what a door answers: a door only says what its gateway can do
//! ([`DoorCapabilities`]), and [`super::Engine::decide_for_door`] turns an allow the door
//! could not carry out into a deny before metrics and the decision log see it.

use std::sync::Arc;

use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
use crate::request::AccessRequest;

/// What a door's gateway can do with an allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorCapabilities {
    /// The gateway rewrites the request's query string on the engine's word (Envoy's
    /// gRPC ext_authz; a door that hands the rewritten query back itself). No HTTP
    /// forward-auth gateway can.
    pub can_rewrite_query: bool,
}

impl DoorCapabilities {
    /// A door that carries out every decision.
    pub const ALL: DoorCapabilities = DoorCapabilities {
        can_rewrite_query: true,
    };

    /// The decision this door may give: `decision`, or a deny when it allows with
    /// something the door cannot carry out for `request`.
    pub(crate) fn apply(self, decision: Decision, request: &AccessRequest) -> Decision {
        if self.can_rewrite_query {
            decision
        } else {
            refuse_query_rewrite(decision, request)
        }
    }
}

/// The decision, or a deny when it allows with a query rewrite that would change this
/// request: the door's gateway cannot apply one, and forwarding the request unchanged
/// could be wider than the policy allows (a search that was to be narrowed), so it fails
/// closed. A rewrite that changes nothing (the client already sent exactly the narrowed
/// query) passes.
fn refuse_query_rewrite(decision: Decision, request: &AccessRequest) -> Decision {
    let Outcome::Allow(allow) = &decision.outcome else {
        return decision;
    };
    if allow.set_query.is_empty() && allow.remove_query.is_empty() {
        return decision;
    }
    let before = request.query_pairs();
    let mut after: Vec<(String, String)> = before
        .iter()
        .filter(|(name, _)| {
            !allow.remove_query.contains(name) && !allow.set_query.iter().any(|(n, _)| n == name)
        })
        .cloned()
        .collect();
    after.extend(allow.set_query.iter().cloned());
    let mut before = before;
    before.sort();
    after.sort();
    if before == after {
        return decision;
    }
    tracing::error!(
        policy = decision.policy.as_deref().unwrap_or("-"),
        rule = %decision.rule,
        "the policy rewrites the query, which an HTTP door's gateway cannot do: denied"
    );
    Decision {
        outcome: Outcome::Deny(Deny {
            status: 403,
            headers: vec![("content-type".into(), "application/json".into())],
            body: deny_body(DenyCode::AccessDenied, "access denied by policy"),
        }),
        rule: Arc::from("gateway-cannot-rewrite-query"),
        reason: format!(
            "{}; but the query rewrite cannot be applied through this door, failing closed",
            decision.reason
        ),
        policy: decision.policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Allow;

    const NO_REWRITE: DoorCapabilities = DoorCapabilities {
        can_rewrite_query: false,
    };

    fn allowing(set_query: &[(&str, &str)], remove_query: &[&str]) -> Decision {
        Decision {
            outcome: Outcome::Allow(Allow {
                set_query: set_query
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                remove_query: remove_query.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            }),
            policy: Some(Arc::from("p")),
            rule: Arc::from("r"),
            reason: "allow rule `r` matched".into(),
        }
    }

    fn request(target: &str) -> AccessRequest {
        let mut request = AccessRequest::default();
        request.set_target(target);
        request
    }

    #[test]
    fn a_query_rewrite_that_changes_the_request_is_denied() {
        let decision = allowing(&[("identifier", "ura|1")], &[]);
        let denied = NO_REWRITE.apply(decision, &request("/Organization?name=x"));
        assert_eq!(denied.status(), 403);
        assert_eq!(&*denied.rule, "gateway-cannot-rewrite-query");
        assert_eq!(denied.policy.as_deref(), Some("p"));
        assert!(denied.reason.starts_with("allow rule `r` matched; but"));
        // A client parameter the narrowing would replace is a change too.
        let decision = allowing(&[("identifier", "ura|1")], &[]);
        let denied = NO_REWRITE.apply(decision, &request("/Organization?identifier=ura|2"));
        assert_eq!(denied.status(), 403);
        let decision = allowing(&[], &["debug"]);
        assert_eq!(
            NO_REWRITE.apply(decision, &request("/a?debug=1")).status(),
            403
        );
    }

    #[test]
    fn a_query_rewrite_that_changes_nothing_passes() {
        let decision = allowing(&[("identifier", "ura|1")], &["debug"]);
        let kept = NO_REWRITE.apply(decision, &request("/Organization?identifier=ura%7C1"));
        assert!(kept.is_allow());
        let decision = allowing(&[], &[]);
        assert!(NO_REWRITE.apply(decision, &request("/a?x=1")).is_allow());
    }

    #[test]
    fn a_door_that_can_rewrite_gets_the_decision_as_it_is() {
        let decision = allowing(&[("identifier", "ura|1")], &[]);
        let kept = DoorCapabilities::ALL.apply(decision, &request("/Organization?name=x"));
        assert!(kept.is_allow());
    }
}
