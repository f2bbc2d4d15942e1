//! The tracing span of one decision: opened by [`super::Engine::decide_for_door`], given the
//! caller's trace as parent by the server's [`super::TraceContext`], and exported (or not)
//! by whatever subscriber the server installed.

use crate::request::AccessRequest;

use super::TraceContext;

/// The target of exported spans (see [`crate::metrics::SPAN_TARGET`]).
pub use crate::metrics::SPAN_TARGET;

/// The span of one decision, child of the request's W3C trace context when it has one.
/// Disabled, and nearly free, when tracing is off: the headers are only read when the
/// span is live.
pub fn decision_span(request: &AccessRequest, context: Option<&dyn TraceContext>) -> tracing::Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "sluis.decide",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        sluis.door = request.door.0,
        sluis.policy = tracing::field::Empty,
        sluis.rule = tracing::field::Empty,
        sluis.outcome = tracing::field::Empty,
        sluis.status = tracing::field::Empty,
    );
    if let Some(context) = context
        && !span.is_disabled()
        && request.headers.contains_key("traceparent")
    {
        context.adopt(&span, request);
    }
    span
}

/// Records what was decided on the decision's span.
pub fn record_decision(span: &tracing::Span, policy: &str, rule: &str, outcome: &str, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("sluis.policy", policy);
    span.record("sluis.rule", rule);
    span.record("sluis.outcome", outcome);
    span.record("sluis.status", status);
    if outcome == "unavailable" {
        // Sluis could not decide: the one outcome that is an error of Sluis's own.
        span.record("otel.status_code", "error");
    }
}
