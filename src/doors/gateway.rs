//! What the HTTP doors share: what the gateways behind them cannot do (warned about at
//! load, refused by the engine at run time), how such a door asks the engine, and the
//! caller's trace context for doors asked about something other than their own request.

use sluis_config::{Config, HttpGateway};
use sluis_core::decision::Decision;
use sluis_core::engine::{DoorCapabilities, Engine};
use sluis_core::policy::PolicySet;
use sluis_core::request::AccessRequest;

/// The W3C trace context headers: the engine opens the decision's span in the trace they
/// name (see the `telemetry` module).
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
/// run time when a rewrite is asked for ([`decide`]); these warnings say so
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
                "gateways.http: {} remove a header only when their own configuration says so; policies {} remove `{header}`: remove it in the gateway's configuration (see docs/gateways.md) and list it in `gateways.removes_headers`",
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
/// rewrite that would change the request refused, since none of these gateways can apply
/// one ([`sluis_core::engine::DoorCapabilities`]); or why it could not.
pub async fn decide(
    engine: &Engine,
    access: &AccessRequest,
) -> Result<Decision, sluis_core::engine::Unavailable> {
    engine.decide_for_door(access, FORWARD_AUTH).await
}

/// What the gateways behind the forward-auth and OPA doors can do: no query rewrite.
pub const FORWARD_AUTH: DoorCapabilities = DoorCapabilities {
    can_rewrite_query: false,
};
