//! The decision core: [`Engine::decide`] turns an [`AccessRequest`] into a [`Decision`].
//!
//! It picks the policy, authenticates the caller with the issuers that policy accepts,
//! checks scopes, and lets the policy's rules decide. Front doors call it and only
//! translate; nothing here knows which gateway asked.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::authn::{Authenticator, AuthnError, bearer_token};
use crate::config::Config;
use crate::decision::{Decision, Deny, DenyCode, Outcome, deny_body};
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
}

impl Engine {
    pub fn new(config: &Config, policies: PolicySet) -> Result<Engine, String> {
        Ok(Engine {
            policies: ArcSwap::from_pointee(policies),
            authn: Authenticator::new(config)?,
        })
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

    pub async fn decide(&self, request: &AccessRequest) -> Result<Decision, Unavailable> {
        let selected = self.policies.load().select(request).cloned();
        let policy = match selected {
            Ok(policy) => policy,
            Err(reason) => return Ok(no_policy(reason)),
        };
        if policy.anonymous {
            return Ok(policy.evaluate(request, None));
        }
        let identity = match bearer_token(request) {
            Ok(token) => self.authn.authenticate(token, &policy.issuers).await,
            Err(e) => Err(e),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(AuthnError::Unavailable(reason)) => return Err(Unavailable(reason)),
            Err(e) => return Ok(authn_denial(&policy, e)),
        };
        let missing = policy.missing_scopes(&identity);
        if !missing.is_empty() {
            return Ok(policy.deny_scopes(&missing));
        }
        Ok(policy.evaluate(request, Some(&identity)))
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
fn authn_denial(policy: &Policy, error: AuthnError) -> Decision {
    let realm = &policy.realm;
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
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                quotable(description)
            ),
            description.clone(),
        ),
        AuthnError::BadRequest(description) | AuthnError::Unavailable(description) => (
            400,
            DenyCode::InvalidRequest,
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{}\"",
                quotable(description)
            ),
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
