//! A policy's `graphql` block: how its requests are read ([`crate::graphql`]), which
//! operation types and whether introspection are allowed, and its query templates with
//! the variables bound to the caller and the scopes each needs.
//!
//! Order within a decision, after the token and the policy's scopes: the request is read
//! (400 with the RFC0014 error body when it is not GraphQL Sluis will judge), its
//! operation type and introspection are checked (403), it must fit a template (403, the
//! reason naming the closest template and what differs), and then the rules run with
//! `graphql` describing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use super::expr::{Expr, Vars};
use super::spec::GraphqlSpec;
use super::{DiagnosticKind, Reporter, Step};
use crate::authn::Identity;
use crate::graphql::template::{Misfit, Template};
use crate::graphql::{DocumentCache, GraphqlRequest, Limits, OperationType};

/// The query text a policy keeps parsed: a few hundred distinct queries of a few KB, the
/// iWlz templates and their parts, fit many times over.
const DOCUMENT_CACHE_BYTES: u64 = 4 << 20;

#[derive(Debug)]
pub struct PolicyGraphql {
    pub limits: Limits,
    /// Queries this policy has parsed: a template-shaped query is sent again and again.
    pub documents: DocumentCache,
    operations: Vec<OperationType>,
    introspection: bool,
    templates: Vec<PolicyTemplate>,
    /// Each template file and its text, so the policy set's version changes with them.
    pub sources: Vec<(PathBuf, String)>,
}

#[derive(Debug)]
struct PolicyTemplate {
    name: Arc<str>,
    template: Template,
    /// Template variable (without `$`) → the value it must have.
    binds: Vec<(String, Expr)>,
    scopes: Vec<String>,
}

impl PolicyGraphql {
    /// Reads the templates (relative to `policy_file`) and compiles the binds. Problems
    /// are reported and leave the policy out.
    pub(super) fn compile(
        spec: GraphqlSpec,
        policy_file: &Path,
        anonymous: bool,
        report: &mut Reporter,
    ) -> Option<PolicyGraphql> {
        // Each problem is located at the key it is about, below `graphql`.
        let failed = std::cell::Cell::new(false);
        let fail = |report: &mut Reporter, path: &[Step], message: String| {
            failed.set(true);
            report.error(DiagnosticKind::InvalidValue, path, message);
        };
        let at = |steps: &[Step]| -> Vec<Step> {
            std::iter::once(Step::from("graphql"))
                .chain(steps.iter().cloned())
                .collect()
        };
        let limits = &spec.limits;
        for (name, value) in [
            ("max_body_bytes", limits.max_body_bytes),
            ("max_tokens", limits.max_tokens),
            ("max_depth", limits.max_depth),
            ("max_fields", limits.max_fields),
        ] {
            if value == 0 {
                fail(
                    report,
                    &at(&["limits".into(), name.into()]),
                    format!("`graphql.limits.{name}` must be above 0"),
                );
            }
        }
        if limits.max_depth > 100 {
            fail(
                report,
                &at(&["limits".into(), "max_depth".into()]),
                "`graphql.limits.max_depth` is at most 100".into(),
            );
        }
        if spec.operations.is_empty() {
            fail(
                report,
                &at(&["operations".into()]),
                "`graphql.operations` allows no operation type".into(),
            );
        }
        let base = policy_file.parent().unwrap_or(Path::new("."));
        let mut templates: Vec<PolicyTemplate> = Vec::new();
        let mut sources = Vec::new();
        for (index, entry) in spec.templates.into_iter().enumerate() {
            let entry_at = |steps: &[Step]| -> Vec<Step> {
                at(&[Step::from("templates"), Step::Index(index)]
                    .into_iter()
                    .chain(steps.iter().cloned())
                    .collect::<Vec<_>>())
            };
            let path = base.join(&entry.file);
            let name = entry.name.clone().unwrap_or_else(|| {
                Path::new(&entry.file)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(|n| n.strip_suffix(".graphql").unwrap_or(n).to_owned())
                    .unwrap_or_else(|| entry.file.clone())
            });
            if templates.iter().any(|t| *t.name == *name) {
                fail(
                    report,
                    &entry_at(&["name".into()]),
                    format!("two query templates are named `{name}`"),
                );
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    fail(
                        report,
                        &entry_at(&["file".into()]),
                        format!("cannot read query template `{}`: {e}", path.display()),
                    );
                    continue;
                }
            };
            let template = match Template::parse(&name, &text) {
                Ok(template) => template,
                Err(e) => {
                    fail(
                        report,
                        &entry_at(&["file".into()]),
                        format!("query template `{}`: {e}", path.display()),
                    );
                    continue;
                }
            };
            if anonymous && !entry.scopes.is_empty() {
                fail(
                    report,
                    &entry_at(&["scopes".into()]),
                    format!("query template `{name}`: an anonymous policy cannot require scopes"),
                );
            }
            let mut binds = Vec::new();
            for (written, source) in entry.bind {
                let bind_at = entry_at(&["bind".into(), written.as_str().into()]);
                let variable = written;
                let variable = variable.strip_prefix('$').unwrap_or(&variable).to_owned();
                if !template.variables.iter().any(|d| d.name == variable) {
                    let declared: Vec<String> = template
                        .variables
                        .iter()
                        .map(|d| format!("${}", d.name))
                        .collect();
                    fail(
                        report,
                        &bind_at,
                        format!(
                            "query template `{name}` (`{}`) declares no `${variable}` to bind (it declares {})",
                            path.display(),
                            if declared.is_empty() {
                                "none".to_string()
                            } else {
                                declared.join(", ")
                            }
                        ),
                    );
                    continue;
                }
                match Expr::compile(&source) {
                    Ok(expr) if expr.graphql_fields.any() => fail(
                        report,
                        &bind_at,
                        format!(
                            "the bind of `${variable}` in template `{name}` cannot read `graphql`"
                        ),
                    ),
                    Ok(expr) if expr.uses_flows => fail(
                        report,
                        &bind_at,
                        format!(
                            "the bind of `${variable}` in template `{name}` cannot read `flows`"
                        ),
                    ),
                    Ok(expr) => binds.push((variable, expr)),
                    Err(e) => {
                        failed.set(true);
                        report.cel_error(
                            None,
                            &bind_at,
                            &e,
                            format!(
                                "invalid CEL in the bind of `${variable}` in template `{name}`: `{source}`: {}",
                                e.message
                            ),
                        );
                    }
                }
            }
            sources.push((path, text));
            templates.push(PolicyTemplate {
                name: Arc::from(name.as_str()),
                template,
                binds,
                scopes: entry.scopes,
            });
        }
        if failed.get() {
            return None;
        }
        Some(PolicyGraphql {
            documents: DocumentCache::new(DOCUMENT_CACHE_BYTES),
            limits: Limits {
                max_body_bytes: limits.max_body_bytes,
                max_tokens: limits.max_tokens,
                max_depth: limits.max_depth,
                max_fields: limits.max_fields,
                max_aliases: limits.max_aliases,
            },
            operations: spec.operations,
            introspection: spec.introspection,
            templates,
            sources,
        })
    }

    /// The bind expressions, which read the request and token like rules do.
    pub fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.templates
            .iter()
            .flat_map(|t| t.binds.iter().map(|(_, e)| e))
    }

    /// Whether the policy lets this kind of operation through at all: its type is
    /// allowed, and it asks no introspection unless that is allowed.
    pub fn refusal(&self, request: &GraphqlRequest) -> Option<String> {
        if !self.operations.contains(&request.operation) {
            let allowed: Vec<&str> = self.operations.iter().map(|o| o.as_str()).collect();
            return Some(format!(
                "{} operations are not allowed (allowed: {})",
                request.operation.as_str(),
                allowed.join(", ")
            ));
        }
        if request.introspection && !self.introspection {
            return Some("introspection (`__schema`, `__type`) is not allowed".into());
        }
        None
    }

    /// The template the request fits: `Ok(None)` when the policy has no templates,
    /// otherwise the first that fits, or the closest one and why not.
    pub fn fit(
        &self,
        request: &GraphqlRequest,
        vars: &Vars,
        identity: Option<&Identity>,
    ) -> Result<Option<Arc<str>>, String> {
        let mut closest: Option<(&PolicyTemplate, Misfit)> = None;
        for candidate in &self.templates {
            let misfit = match candidate.template.check(request) {
                Ok(fit) => {
                    let misfit = candidate.bound(request, &fit.variables, vars, identity);
                    if misfit.count == 0 {
                        return Ok(Some(candidate.name.clone()));
                    }
                    misfit
                }
                Err(misfit) => misfit,
            };
            if closest.as_ref().is_none_or(|(_, m)| misfit.score < m.score) {
                closest = Some((candidate, misfit));
            }
        }
        match closest {
            None => Ok(None),
            Some((template, misfit)) => Err(format!(
                "the query fits no query template; closest `{}`: {}",
                template.name,
                misfit.describe()
            )),
        }
    }
}

impl PolicyTemplate {
    /// What of the binds and scopes a structurally fitting request fails.
    fn bound(
        &self,
        request: &GraphqlRequest,
        used: &[String],
        vars: &Vars,
        identity: Option<&Identity>,
    ) -> Misfit {
        let mut misfit = Misfit::default();
        for (variable, expr) in &self.binds {
            if !used.contains(variable) {
                continue;
            }
            let wanted = match expr.eval(vars) {
                Ok(value) => cel_json(&value),
                Err(e) => {
                    misfit.add(
                        1,
                        format!("the bind of `${variable}` failed, failing closed: {e}"),
                    );
                    continue;
                }
            };
            match wanted {
                Some(Json::Null) => misfit.add(
                    1,
                    format!(
                        "variable `${variable}` cannot be bound: `{}` is null for this caller",
                        expr.source
                    ),
                ),
                Some(wanted) if request.variable(variable).as_ref() == Some(&wanted) => {}
                Some(_) => misfit.add(
                    1,
                    format!(
                        "variable `${variable}` is not bound to the caller (it must equal `{}`)",
                        expr.source
                    ),
                ),
                None => misfit.add(
                    1,
                    format!(
                        "the bind of `${variable}` (`{}`) gave no string, number or bool",
                        expr.source
                    ),
                ),
            }
        }
        for scope in &self.scopes {
            if !identity.is_some_and(|i| i.scopes.contains(scope)) {
                misfit.add(1, format!("the token lacks scope `{scope}`"));
            }
        }
        misfit
    }
}

/// A scalar CEL value as JSON, to compare with a variable's value; `None` for others.
fn cel_json(value: &cel::Value) -> Option<Json> {
    Some(match value {
        cel::Value::String(s) => Json::String(s.to_string()),
        cel::Value::Int(i) => Json::from(*i),
        cel::Value::UInt(u) => Json::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f).map(Json::Number)?,
        cel::Value::Bool(b) => Json::Bool(*b),
        cel::Value::Null => Json::Null,
        _ => return None,
    })
}
