//! How a decision was reached, step by step: what `sluis explain`, `/explain` and the
//! test tools show. Filled in by the engine (policy choice, identity, scopes) and by
//! [`super::Policy::evaluate`] (each rule with its result and the values of its parts).

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
    /// The request read as FHIR, and whether its CapabilityStatement lists it.
    pub fhir: Option<String>,
    /// The caller's identifiers (`caller`), when the policy defines any.
    pub caller: Option<String>,
    /// Each rule, in evaluation order (deny rules first), with its result.
    pub rules: Vec<RuleTrace>,
    /// Each information source look-up, its cache state and its value, masked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<crate::sources::LookupTrace>,
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
