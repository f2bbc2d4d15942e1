//! The HTTP front doors, served together on `listeners.http`.
//!
//! Each door is a router of its own module, translating one HTTP convention to an
//! [`crate::request::AccessRequest`] and the [`crate::decision::Decision`] back; this
//! module only puts them on one port, and says what the gateways behind them cannot do.
//! Their paths do not overlap:
//!
//! | path | door |
//! |---|---|
//! | `/healthz` | liveness of the doors' listener |
//! | `/access/v1/evaluation`, `/access/v1/evaluations`, `/.well-known/authzen-configuration` | [`super::authzen`] |
//! | `/authorization/search-narrowing`, `/authorization/scopes` | [`super::care_services`]: the Care Services Proxy API |
//! | `/decisions`, `/decisions/{path}` | [`super::forward_auth`]: Envoy `http_service`, NGINX `auth_request`, Traefik ForwardAuth, Caddy `forward_auth` |
//! | `POST /v1/data/{path}` | [`super::opa`]: OPA REST Data API for Kong's and APISIX's `opa` plugins |

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::config::{Config, HttpGateway};
use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
use crate::engine::Engine;
use crate::policy::PolicySet;
use crate::request::AccessRequest;

/// Every HTTP door on one router. Fails when a door's configuration cannot be used.
pub fn router(engine: Arc<Engine>, config: &Config) -> Result<Router, String> {
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(super::authzen::router(engine.clone(), config)?)
        .merge(super::care_services::router(engine.clone()))
        .merge(super::forward_auth::router(
            engine.clone(),
            config.request_body.max_bytes,
        ))
        .merge(super::opa::router(engine)))
}

/// The W3C trace context headers: the engine opens the decision's span in the trace they
/// name ([`crate::telemetry`]).
const TRACE_CONTEXT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// For doors asked about something other than the HTTP request they arrive in (an AuthZEN
/// evaluation, a Care Services Proxy question): the caller's own trace context, from the
/// call's headers, unless the question carries one of its own.
pub(crate) fn adopt_trace_context(headers: &axum::http::HeaderMap, access: &mut AccessRequest) {
    if access.headers.contains_key("traceparent") {
        return;
    }
    for name in TRACE_CONTEXT_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            access.headers.insert(name.into(), value.to_owned());
        }
    }
}

/// What the configured HTTP gateways (`gateways.http`) cannot do of what the loaded
/// policies ask, one message each, for `sluis validate` and the server's log.
///
/// None of these gateways can rewrite a query string on an authorization server's word,
/// and only Envoy removes headers on it (`x-envoy-auth-headers-to-remove`); the others
/// remove a header only when their own configuration says so. The doors fail closed at
/// run time when a rewrite is asked for ([`refuse_query_rewrite`]); these warnings say so
/// before the first request does.
pub fn gateway_warnings(config: &Config, policies: &PolicySet) -> Vec<String> {
    let gateways = &config.gateways;
    if gateways.http.is_empty() {
        return Vec::new();
    }
    let names = |list: &[HttpGateway]| {
        list.iter()
            .map(|g| format!("{g:?}").to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut warnings = Vec::new();
    let rewriting: Vec<&str> = policies
        .policies
        .iter()
        .filter(|p| p.rewrites_query())
        .map(|p| &*p.id)
        .collect();
    if !rewriting.is_empty() {
        warnings.push(format!(
            "gateways.http: {} cannot rewrite the query string; policies {} do, so the HTTP doors deny the requests they allow with a query change (use Envoy's gRPC ext_authz for them)",
            names(&gateways.http),
            quoted(&rewriting)
        ));
    }
    let limited: Vec<HttpGateway> = gateways
        .http
        .iter()
        .copied()
        .filter(|g| *g != HttpGateway::Envoy)
        .collect();
    if !limited.is_empty() {
        let mut unremoved: Vec<(&str, Vec<&str>)> = Vec::new();
        for policy in &policies.policies {
            for header in policy.removed_headers() {
                if gateways
                    .removes_headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(header))
                {
                    continue;
                }
                match unremoved.iter_mut().find(|(h, _)| *h == header) {
                    Some((_, ids)) => ids.push(&policy.id),
                    None => unremoved.push((header, vec![&policy.id])),
                }
            }
        }
        for (header, ids) in unremoved {
            warnings.push(format!(
                "gateways.http: {} remove a header only when their own configuration says so; policies {} remove `{header}`: remove it in the gateway's configuration (see README, Gateways) and list it in `gateways.removes_headers`",
                names(&limited),
                quoted(&ids)
            ));
        }
    }
    warnings
}

fn quoted(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks the engine, as every HTTP forward-auth door does: the decision, with a query
/// rewrite refused ([`refuse_query_rewrite`]); or why it could not.
pub async fn decide(
    engine: &Engine,
    access: &AccessRequest,
) -> Result<Decision, crate::engine::Unavailable> {
    engine.decide_for_door(access, refuse_query_rewrite).await
}

/// The decision, or a deny when it allows with a query rewrite that would change this
/// request: no HTTP door's gateway can apply one, and forwarding the request unchanged
/// could be wider than the policy allows (a search that was to be narrowed), so it fails
/// closed. A rewrite that changes nothing (the client already sent exactly the narrowed
/// query) passes.
pub fn refuse_query_rewrite(decision: Decision, request: &AccessRequest) -> Decision {
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
        let denied = refuse_query_rewrite(decision, &request("/Organization?name=x"));
        assert_eq!(denied.status(), 403);
        assert_eq!(&*denied.rule, "gateway-cannot-rewrite-query");
        // A client parameter the narrowing would replace is a change too.
        let decision = allowing(&[("identifier", "ura|1")], &[]);
        let denied = refuse_query_rewrite(decision, &request("/Organization?identifier=ura|2"));
        assert_eq!(denied.status(), 403);
        let decision = allowing(&[], &["debug"]);
        assert_eq!(
            refuse_query_rewrite(decision, &request("/a?debug=1")).status(),
            403
        );
    }

    #[test]
    fn a_query_rewrite_that_changes_nothing_passes() {
        let decision = allowing(&[("identifier", "ura|1")], &["debug"]);
        let kept = refuse_query_rewrite(decision, &request("/Organization?identifier=ura%7C1"));
        assert!(kept.is_allow());
        let decision = allowing(&[], &[]);
        assert!(refuse_query_rewrite(decision, &request("/a?x=1")).is_allow());
    }
}
