//! AuthZEN search candidates: which subjects, resources or actions a search tries.
//!
//! A search ("who may view record 101?") cannot be answered by rules alone: rules judge
//! one evaluation. A policy that can be searched names its candidates (`search:`), each
//! of which is then decided by the engine as an ordinary evaluation,
//! so a search never answers anything the evaluations would not. A policy without a
//! candidate list for the searched kind cannot be searched, and says so.

use std::fmt;

use cel::Value;
use serde_json::{Map, Value as Json};

use super::Reporter;
use super::diagnostic::DiagnosticKind as Kind;
use super::expr::{Data, Expr, Vars};
use super::positions::Step;
use super::spec::SearchSpec;
use crate::request::{AccessRequest, Evaluation};

/// Most candidates one search may try, over all policies: each is a full decision.
pub const MAX_CANDIDATES: usize = 10_000;

/// What a search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Subject,
    Resource,
    Action,
}

impl SearchKind {
    /// The entity the search fills in: `subject`, `resource` or `action`.
    pub fn entity(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

impl fmt::Display for SearchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SearchKind::Subject => "subjects",
            SearchKind::Resource => "resources",
            SearchKind::Action => "actions",
        })
    }
}

/// Why a search has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// A policy that decides such evaluations cannot list candidates of this kind.
    #[error("policy `{policy}` cannot be searched for {kind}: {why}")]
    Unsupported {
        policy: String,
        kind: SearchKind,
        why: String,
    },
    /// A candidate expression failed or gave something that is not a candidate list.
    #[error("policy `{policy}`: the {kind} candidates could not be listed: {message}")]
    Candidates {
        policy: String,
        kind: SearchKind,
        message: String,
    },
    #[error("more than {MAX_CANDIDATES} candidates to try")]
    TooLarge,
}

/// One candidate: an id (a name for actions) and the properties the rules see with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub properties: Option<Map<String, Json>>,
}

/// A policy's compiled `search` block.
#[derive(Debug, Default)]
pub struct PolicySearch {
    subjects: Vec<(String, Expr)>,
    resources: Vec<(String, Expr)>,
    actions: Option<Vec<String>>,
}

impl PolicySearch {
    pub(super) fn compile(spec: SearchSpec, report: &mut Reporter) -> PolicySearch {
        let mut compile = |kind: &str, map: std::collections::BTreeMap<String, String>| {
            let mut out = Vec::new();
            for (entity_type, source) in map {
                match Expr::compile(&source) {
                    Ok(expr) => out.push((entity_type, expr)),
                    Err(e) => report.cel_error(
                        None,
                        &[
                            Step::from("search"),
                            Step::from(kind),
                            Step::from(entity_type.as_str()),
                        ],
                        &e,
                        format!("invalid CEL `{source}`: {}", e.message),
                    ),
                }
            }
            out
        };
        let subjects = compile("subjects", spec.subjects);
        let resources = compile("resources", spec.resources);
        if spec
            .actions
            .as_ref()
            .is_some_and(|a| a.iter().any(String::is_empty))
        {
            report.error(
                Kind::InvalidValue,
                &[Step::from("search"), Step::from("actions")],
                "`search.actions` names an empty action".into(),
            );
        }
        PolicySearch {
            subjects,
            resources,
            actions: spec.actions,
        }
    }

    /// The candidates `policy` tries for a search of `kind` shaped like `template`
    /// (whose searched entity carries only its type). `default_actions` is the policy's
    /// `match.evaluation.actions`.
    pub fn candidates(
        &self,
        policy: &str,
        kind: SearchKind,
        template: &Evaluation,
        data: Option<&Data>,
        default_actions: &[String],
    ) -> Result<Vec<Candidate>, SearchError> {
        let list = match kind {
            SearchKind::Action => {
                let actions = self.actions.as_deref().unwrap_or(default_actions);
                if actions.is_empty() {
                    return Err(SearchError::Unsupported {
                        policy: policy.into(),
                        kind,
                        why: "it lists no `search.actions` and no `match.evaluation.actions`"
                            .into(),
                    });
                }
                return Ok(actions
                    .iter()
                    .map(|name| Candidate {
                        id: name.clone(),
                        properties: None,
                    })
                    .collect());
            }
            SearchKind::Subject => (&self.subjects, template.subject_type()),
            SearchKind::Resource => (&self.resources, template.resource_type()),
        };
        let (exprs, entity_type) = list;
        let Some((_, expr)) = exprs.iter().find(|(t, _)| t == entity_type) else {
            return Err(SearchError::Unsupported {
                policy: policy.into(),
                kind,
                why: format!("it lists no `search.{kind}.{entity_type}`"),
            });
        };
        let request = AccessRequest {
            evaluation: Some(template.clone()),
            ..Default::default()
        };
        let vars = Vars::new(&request, None, expr.request_fields).with_data(data);
        let failed = |message: String| SearchError::Candidates {
            policy: policy.into(),
            kind,
            message,
        };
        let value = expr.eval(&vars).map_err(failed)?;
        candidate_list(&value).map_err(failed)
    }
}

/// A CEL list of ids, or of `{id, properties}` maps, as candidates.
fn candidate_list(value: &Value) -> Result<Vec<Candidate>, String> {
    let Value::List(items) = value else {
        return Err(format!("a list was expected, not {:?}", value.type_of()));
    };
    if items.len() > MAX_CANDIDATES {
        return Err(format!("more than {MAX_CANDIDATES} candidates"));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(id) => Ok(Candidate {
                id: id.to_string(),
                properties: None,
            }),
            Value::Int(id) => Ok(Candidate {
                id: id.to_string(),
                properties: None,
            }),
            Value::Map(_) => {
                let json = to_json(item, 0)?;
                let id = match json.get("id") {
                    Some(Json::String(id)) => id.clone(),
                    Some(Json::Number(id)) => id.to_string(),
                    _ => return Err("a candidate map without a string `id`".into()),
                };
                let properties = match json.get("properties") {
                    None | Some(Json::Null) => None,
                    Some(Json::Object(p)) => Some(p.clone()),
                    Some(_) => return Err(format!("candidate `{id}`: `properties` is not a map")),
                };
                Ok(Candidate { id, properties })
            }
            other => Err(format!(
                "a candidate is an id or a map, not {:?}",
                other.type_of()
            )),
        })
        .collect()
}

/// A CEL value as JSON (candidate maps are small: a depth bound keeps a cyclic or
/// pathological value from recursing far).
fn to_json(value: &Value, depth: usize) -> Result<Json, String> {
    if depth > 32 {
        return Err("a candidate nests deeper than 32 levels".into());
    }
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.to_string()),
        Value::List(items) => Json::Array(
            items
                .iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(map) => {
            let mut out = Map::new();
            for (key, v) in map.map.iter() {
                let key = match key {
                    cel::objects::Key::String(s) => s.to_string(),
                    cel::objects::Key::Int(i) => i.to_string(),
                    cel::objects::Key::Uint(u) => u.to_string(),
                    cel::objects::Key::Bool(b) => b.to_string(),
                };
                out.insert(key, to_json(v, depth + 1)?);
            }
            Json::Object(out)
        }
        other => return Err(format!("{:?} has no JSON form", other.type_of())),
    })
}
