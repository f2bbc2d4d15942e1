//! FHIR search narrowing: a policy's `narrowing` block adds search parameters to the
//! searches it allows, so the FHIR server returns only what the caller may see (Care
//! Services Proxy, mCSD: `Organization?identifier=ura|<requester's URA>`).
//!
//! The same compiled rules serve the Envoy door (the parameters become the decision's
//! `set_query`, which Envoy writes into the query string) and the Care Services Proxy door
//! (which returns the rewritten query). Narrowing runs after a rule allowed; it can only
//! narrow further or deny, never allow.
//!
//! Never a wider query: a parameter is only ever set, replacing the client's (Envoy
//! overwrites every occurrence of the name), never merged into a list of values. A client
//! parameter with the same name is denied or replaced as the policy says; modified,
//! chained forms of it (`identifier:missing`, `organization.name`), any percent-encoded
//! parameter name (`identifi%65r`), and parameters whose effect cannot be narrowed (`_include`,
//! `_revinclude`, `_contained`, `_filter`, `_query`) are always denied. On a listed type,
//! anything but a GET search is denied (a read by id cannot carry a filter, a POST
//! `_search` body is not rewritten); system-level searches, history, batches and
//! unrecognisable paths below the base could reach a listed type, so they are denied too.
//! A value that is null, empty or holds a `,` (FHIR's "or") denies: no narrowing, no
//! answer.

use std::sync::Arc;

use super::expr::{Expr, Vars};
use super::spec::{NarrowingSpec, OnConflict};
use super::{DiagnosticKind, Policy, PolicySet, Reporter, Step};
use crate::fhir::{Interaction, classify, is_type};
use crate::request::AccessRequest;
use crate::request::decoded_pairs;

/// A policy's compiled `narrowing` block.
#[derive(Debug)]
pub struct Narrowing {
    base_path: String,
    use_cases: Vec<String>,
    on_conflict: OnConflict,
    /// Resource type → its parameters and their value expressions.
    resources: Vec<(String, Vec<(String, Expr)>)>,
}

/// Why a request cannot be narrowed, as the deny says it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    /// For the client.
    pub message: String,
}

fn refuse(status: u16, message: String) -> Refusal {
    Refusal { status, message }
}

/// Parameters whose effect on the result the narrowing cannot bound.
fn unnarrowable(name: &str) -> bool {
    ["_include", "_revinclude", "_contained"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "_filter"
        || name == "_query"
}

/// The parameter a name modifies or chains from: `identifier:missing` → `identifier`.
fn base_name(name: &str) -> &str {
    name.split([':', '.']).next().unwrap_or(name)
}

/// A parameter name Envoy's query rewrite matches as written: no character a client
/// could percent-encode differently.
fn plain(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Narrowing {
    pub(super) fn compile(spec: NarrowingSpec, report: &mut Reporter) -> Option<Narrowing> {
        // Each problem is located at the key it is about, below `narrowing`.
        let at = |steps: &[&str]| -> Vec<Step> {
            std::iter::once("narrowing")
                .chain(steps.iter().copied())
                .map(Step::from)
                .collect()
        };
        let failures = std::cell::Cell::new(0_usize);
        let fail = |report: &mut Reporter, path: &[Step], message: String| {
            failures.set(failures.get() + 1);
            report.error(DiagnosticKind::InvalidValue, path, message);
        };
        if !(spec.base_path.is_empty() || spec.base_path.starts_with('/')) {
            fail(
                report,
                &at(&["base_path"]),
                "`narrowing.base_path` must start with `/`".into(),
            );
        }
        if spec.resources.is_empty() {
            fail(
                report,
                &at(&["resources"]),
                "`narrowing.resources` names no resource type".into(),
            );
        }
        let mut resources = Vec::new();
        for (resource_type, parameters) in spec.resources {
            if !is_type(&resource_type) {
                fail(
                    report,
                    &at(&["resources", &resource_type]),
                    format!("`narrowing.resources`: `{resource_type}` is not a FHIR resource type"),
                );
            }
            if parameters.is_empty() {
                fail(
                    report,
                    &at(&["resources", &resource_type]),
                    format!("`narrowing.resources.{resource_type}` sets no search parameter"),
                );
            }
            let mut compiled = Vec::new();
            for (name, source) in parameters {
                let path = at(&["resources", &resource_type, &name]);
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b))
                    && !unnarrowable(&name);
                if !valid {
                    fail(
                        report,
                        &path,
                        format!(
                            "`narrowing.resources.{resource_type}`: `{name}` is not a search parameter Sluis may set"
                        ),
                    );
                    continue;
                }
                match Expr::compile(&source) {
                    Ok(expr) => compiled.push((name, expr)),
                    Err(e) => {
                        failures.set(failures.get() + 1);
                        report.cel_error(
                            None,
                            &path,
                            &e,
                            format!(
                                "invalid CEL for `narrowing.resources.{resource_type}.{name}`: `{source}`: {}",
                                e.message
                            ),
                        );
                    }
                }
            }
            resources.push((resource_type, compiled));
        }
        (failures.get() == 0).then_some(Narrowing {
            base_path: spec.base_path.trim_end_matches('/').to_owned(),
            use_cases: spec.use_cases,
            on_conflict: spec.on_conflict,
            resources,
        })
    }

    /// Every value expression, for the load-time checks of the policy.
    pub(super) fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.resources
            .iter()
            .flat_map(|(_, parameters)| parameters.iter().map(|(_, expr)| expr))
    }

    /// The FHIR base path the resource types are below.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The narrowed resource types, in name order.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.resources.iter().map(|(name, _)| name.as_str())
    }

    /// The parameters to set on `request` (none when it is not a narrowed search), or
    /// why it cannot be allowed.
    pub fn apply(
        &self,
        request: &AccessRequest,
        vars: &Vars,
    ) -> Result<Vec<(String, String)>, Refusal> {
        let Some(fhir) = classify(&request.method, &request.path, &self.base_path) else {
            return Ok(Vec::new());
        };
        let listed = fhir
            .resource_type
            .and_then(|t| self.resources.iter().find(|(name, _)| name == t));
        let Some((resource_type, parameters)) = listed else {
            return match fhir.interaction {
                Interaction::SystemSearch
                | Interaction::SystemHistory
                | Interaction::Bundle
                | Interaction::Unknown
                | Interaction::Operation
                    if fhir.resource_type.is_none() =>
                {
                    Err(refuse(
                        403,
                        "this request could reach narrowed resources unnarrowed".into(),
                    ))
                }
                _ => Ok(Vec::new()),
            };
        };
        match fhir.interaction {
            Interaction::Search { post: false } => {}
            Interaction::Search { post: true } => {
                return Err(refuse(
                    403,
                    format!(
                        "a POST _search on `{resource_type}` cannot be narrowed: search with GET"
                    ),
                ));
            }
            _ => {
                return Err(refuse(
                    403,
                    format!("only searches on `{resource_type}` are served, narrowed"),
                ));
            }
        }
        for pair in request.query.split('&').filter(|p| !p.is_empty()) {
            let raw = pair.split_once('=').map_or(pair, |(name, _)| name);
            // FHIR parameter names never need encoding: an encoded one (`identifi%65r`,
            // `identifier%20`) is a name the gateway would not replace but a server might
            // read as ours.
            if raw.contains(['%', '+']) {
                return Err(refuse(
                    400,
                    format!("search parameter name `{raw}` must not be percent-encoded"),
                ));
            }
            let Some((name, _)) = decoded_pairs(raw).into_iter().next() else {
                continue;
            };
            if unnarrowable(&name) {
                return Err(refuse(
                    400,
                    format!("search parameter `{name}` cannot be narrowed"),
                ));
            }
            for (parameter, _) in parameters {
                if base_name(&name) != base_name(parameter) {
                    continue;
                }
                let replaced =
                    self.on_conflict == OnConflict::Replace && plain(parameter) && raw == parameter;
                if !replaced {
                    return Err(refuse(
                        400,
                        format!(
                            "search parameter `{name}` conflicts with the narrowing of `{resource_type}`"
                        ),
                    ));
                }
            }
        }
        let mut narrowed = Vec::with_capacity(parameters.len());
        for (parameter, expr) in parameters {
            match expr.eval_text(vars) {
                Ok(Some(value)) if !value.is_empty() && !value.contains(',') => {
                    narrowed.push((parameter.clone(), value));
                }
                Ok(_) => {
                    return Err(refuse(
                        403,
                        format!(
                            "the search on `{resource_type}` cannot be narrowed for this caller"
                        ),
                    ));
                }
                Err(e) => {
                    tracing::debug!(parameter, "narrowing value failed: {e}");
                    return Err(refuse(
                        403,
                        format!(
                            "the search on `{resource_type}` cannot be narrowed for this caller"
                        ),
                    ));
                }
            }
        }
        Ok(narrowed)
    }
}

impl Policy {
    /// Its search narrowing, if it has one.
    pub fn narrowing(&self) -> Option<&Narrowing> {
        self.narrowing.as_ref()
    }
}

impl PolicySet {
    /// The first policy whose narrowing answers for the Care Services Proxy `use_case`.
    pub fn for_use_case(&self, use_case: &str) -> Option<&Arc<Policy>> {
        self.policies.iter().find(|policy| {
            policy
                .narrowing
                .as_ref()
                .is_some_and(|n| n.use_cases.iter().any(|u| u == use_case))
        })
    }
}

#[cfg(test)]
mod tests;
