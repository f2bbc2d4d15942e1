//! What the engine answers: [`Decision`], gateway-neutral. Front doors encode it.

use std::sync::Arc;

/// The engine's answer and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The policy that decided; `None` when no policy matched.
    pub policy: Option<Arc<str>>,
    /// The rule (or built-in step such as `authentication`, `scopes`, `default-deny`) that
    /// decided.
    pub rule: Arc<str>,
    /// Why, for logs and explain output; never sent to the client as is.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Allow(Allow),
    Deny(Deny),
}

/// What the gateway must do to the request before it goes upstream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allow {
    /// Headers to set, replacing any client-supplied value of the same name.
    pub set_headers: Vec<(String, String)>,
    /// Headers to remove (lower-case names). Never contains a name in `set_headers`.
    pub remove_headers: Vec<String>,
    /// Query parameters to set, replacing any of the same name.
    pub set_query: Vec<(String, String)>,
    /// Query parameters to remove.
    pub remove_query: Vec<String>,
    /// The sealed grant under which the upstream's answer is judged, when the policy has
    /// response rules (`response::grant`): Envoy carries it to the ext_proc door.
    pub response_grant: Option<String>,
}

/// What the gateway must answer the client instead of forwarding.
#[derive(Debug, Clone, PartialEq)]
pub struct Deny {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// A JSON document by default; a policy's uniform deny body otherwise.
    pub body: String,
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self.outcome, Outcome::Allow(_))
    }

    /// The HTTP status the client will see: 200 for allow.
    pub fn status(&self) -> u16 {
        match &self.outcome {
            Outcome::Allow(_) => 200,
            Outcome::Deny(deny) => deny.status,
        }
    }
}

/// Stable error codes in deny bodies. Clients and tests may rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyCode {
    /// No credentials were presented (401).
    Unauthorized,
    /// RFC 6750 `invalid_token` (401).
    InvalidToken,
    /// RFC 9449 `invalid_dpop_proof` (401).
    InvalidDpopProof,
    /// RFC 9449 §9 `use_dpop_nonce` (401, with a `DPoP-Nonce` header).
    UseDpopNonce,
    /// RFC 6750 `invalid_request` (400): e.g. two tokens in one request.
    InvalidRequest,
    /// RFC 6750 `insufficient_scope` (403).
    InsufficientScope,
    /// A policy denied (403), or no policy matched.
    AccessDenied,
}

impl DenyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::Unauthorized => "unauthorized",
            DenyCode::InvalidToken => "invalid_token",
            DenyCode::InvalidDpopProof => "invalid_dpop_proof",
            DenyCode::UseDpopNonce => "use_dpop_nonce",
            DenyCode::InvalidRequest => "invalid_request",
            DenyCode::InsufficientScope => "insufficient_scope",
            DenyCode::AccessDenied => "access_denied",
        }
    }
}

/// The JSON body of a deny: `{"error": code, "message": message}`.
pub fn deny_body(code: DenyCode, message: &str) -> String {
    serde_json::json!({ "error": code.as_str(), "message": message }).to_string()
}

/// The error body RFC0014 §6.2 gives for a GraphQL request the PEP refuses as malformed,
/// byte for byte as its error table \[08\] writes it:
/// `{"ErrorCode": "bad_request", "Error": "No operation found to evaluate"}`, keys in that
/// order, a space after each colon and comma (clients that compare the body as text
/// expect exactly that).
pub fn bad_request_body(code: &str, message: &str) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "{{\"ErrorCode\": {}, \"Error\": {}}}",
        quoted(code),
        quoted(message)
    )
}

/// The engine could not decide: e.g. an identity provider is down. Never an allow; the
/// door answers so that the gateway's failure mode applies.
///
/// What failed is the typed [`Cause`]; `detail` is for people (logs, the decision log) and
/// no behaviour may depend on its text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot decide: {detail}")]
pub struct Unavailable {
    pub cause: Cause,
    pub detail: String,
}

impl Unavailable {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Self {
        Unavailable {
            cause,
            detail: detail.into(),
        }
    }
}

/// What the engine could not reach or read, so that a decision could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// An issuer's signing keys are not loaded and could not be fetched now.
    IssuerKeys,
    /// The token introspection endpoint did not answer usably (RFC 7662).
    Introspection,
    /// The shared DPoP replay cache could not be asked whether a proof was used.
    ReplayCache,
    /// An information source a policy with `on_error: unavailable` reads failed; `detail`
    /// names the source and the failure.
    Source,
}

impl Cause {
    /// The name used in the decision log and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::IssuerKeys => "issuer_keys",
            Cause::Introspection => "introspection",
            Cause::ReplayCache => "replay_cache",
            Cause::Source => "source",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy answered as it did, in the codes the Nuts reference PDP (nuts-knooppunt)
/// reports per policy, so a door speaking its protocol can say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The request could not be read as asked (a malformed FHIR query, too many scopes).
    UnexpectedInput,
    /// A rule, the default deny or a CapabilityStatement refused it.
    NotAllowed,
    /// The token carries a scope no policy is configured for.
    NotImplemented,
    InternalError,
    /// An information source (the data holder's FHIR server) failed.
    PipError,
    Info,
}

/// One reason of a [`PolicyResult`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub description: String,
}

/// What one policy decided, when a decision weighed several (policies selected by the
/// token's scopes), or the one that decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyResult {
    #[serde(skip)]
    pub policy: Arc<str>,
    pub allow: bool,
    pub reasons: Vec<Reason>,
}

impl PolicyResult {
    /// The result a decision by a policy stands for: no reasons for an allow, and for a
    /// deny the rule's code and the decision's reason.
    pub fn of(decision: &Decision) -> Option<PolicyResult> {
        let policy = decision.policy.clone()?;
        let allow = decision.is_allow();
        let reasons = if allow {
            Vec::new()
        } else {
            vec![Reason {
                code: reason_code(&decision.rule),
                description: decision.reason.clone(),
            }]
        };
        Some(PolicyResult {
            policy,
            allow,
            reasons,
        })
    }
}

/// The reason code of a deny by `rule`: a request that could not be read is unexpected
/// input, anything else a refusal.
fn reason_code(rule: &str) -> ReasonCode {
    match rule {
        "fhir-request" | "too-many-scopes" | "no-scope" => ReasonCode::UnexpectedInput,
        _ => ReasonCode::NotAllowed,
    }
}
