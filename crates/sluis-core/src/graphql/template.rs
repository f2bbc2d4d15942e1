//! Query templates: an operation an operator allows (a `.graphql` file such as the iWlz
//! QIR-0001-ZKi), and whether a request fits it.
//!
//! A request fits a template when
//! - it is the same kind of operation (its name does not matter);
//! - every field it selects is in the template at the same place (a subset is fine), with
//!   exactly the template's arguments: the same structure, the same literals, the same
//!   variables in the same places, so a filter can be neither dropped nor replaced by a
//!   literal, and with the template's directives;
//! - every variable it uses is declared as the template declares it (type and default),
//!   it declares no other, and the template's required ones (non-null, no default) that it
//!   uses have a value.
//!
//! `__typename` is accepted below the root wherever it is asked: clients add it on their
//! own, and it only names a type. Whether a variable is bound to the caller (`$Instelling`
//! is the caller's AGB) is for the policy to say (`policy`): here a fit lists the
//! variables the request uses.

use super::{ArgValue, Directive, Field, GraphqlRequest, OperationType, VariableDefinition};

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    operation: OperationType,
    pub variables: Vec<VariableDefinition>,
    directives: Vec<Directive>,
    fields: Vec<Node>,
}

/// A template field: fields of the same name, arguments and directives merged into one.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    arguments: Vec<(String, ArgValue)>,
    directives: Vec<Directive>,
    children: Vec<Node>,
}

/// A request fits: the template variables it uses, each once.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub variables: Vec<String>,
}

/// Why a request does not fit a template.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Misfit {
    /// The first few problems, readable.
    pub problems: Vec<String>,
    /// How many there are in all.
    pub count: usize,
    /// How far the request is from the template: a wrong root field or operation weighs
    /// more than wrong arguments, which weigh more than an extra field. The closest
    /// template is the one with the lowest score.
    pub score: usize,
}

/// Problems kept for the reason; more are only counted.
const SHOWN: usize = 3;
const ROOT: usize = 100;
const ARGUMENTS: usize = 10;
const FIELD: usize = 1;

impl Misfit {
    pub fn add(&mut self, weight: usize, problem: String) {
        if self.problems.len() < SHOWN {
            self.problems.push(problem);
        }
        self.count += 1;
        self.score += weight;
    }

    /// `extra field `a.b`; missing required variable `$v` (and 2 more)`.
    pub fn describe(&self) -> String {
        let mut text = self.problems.join("; ");
        if self.count > self.problems.len() {
            text.push_str(&format!(" (and {} more)", self.count - self.problems.len()));
        }
        text
    }
}

impl Template {
    /// Parses a template. `name` is what policies and decisions call it.
    pub fn parse(name: &str, text: &str) -> Result<Template, String> {
        let operation = super::parse_template(text)?;
        let mut declared_missing: Vec<String> = Vec::new();
        let mut note = |variable: &str| {
            if !operation
                .variable_definitions
                .iter()
                .any(|d| d.name == variable)
                && !declared_missing.iter().any(|m| m == variable)
            {
                declared_missing.push(variable.to_owned());
            }
        };
        fn uses(fields: &[Field], note: &mut impl FnMut(&str)) {
            for field in fields {
                for (_, value) in &field.arguments {
                    value.variables(note);
                }
                for directive in &field.directives {
                    for (_, value) in &directive.arguments {
                        value.variables(note);
                    }
                }
                uses(&field.selection, note);
            }
        }
        uses(&operation.fields, &mut note);
        if let Some(variable) = declared_missing.first() {
            return Err(format!("uses `${variable}` without declaring it"));
        }
        Ok(Template {
            name: name.to_owned(),
            operation: operation.operation,
            variables: operation.variable_definitions,
            directives: operation.directives,
            fields: merge(&operation.fields),
        })
    }

    /// Whether `request` fits this template, and if not, why.
    pub fn check(&self, request: &GraphqlRequest) -> Result<Fit, Misfit> {
        let mut misfit = Misfit::default();
        if request.operation != self.operation {
            misfit.add(
                ROOT,
                format!(
                    "the request is a {}, the template a {}",
                    request.operation.as_str(),
                    self.operation.as_str()
                ),
            );
        }
        if request.directives != self.directives {
            misfit.add(
                ARGUMENTS,
                "the operation's directives differ from the template's".into(),
            );
        }
        let mut used: Vec<String> = Vec::new();
        within(
            &self.fields,
            &request.fields,
            &mut Vec::new(),
            &mut used,
            &mut misfit,
        );
        for name in &used {
            let Some(wanted) = self.variables.iter().find(|d| d.name == *name) else {
                continue;
            };
            match request
                .variable_definitions
                .iter()
                .find(|d| d.name == *name)
            {
                None => misfit.add(
                    ARGUMENTS,
                    format!("variable `${name}` is used but not declared"),
                ),
                Some(declared) if declared.ty != wanted.ty => misfit.add(
                    ARGUMENTS,
                    format!(
                        "variable `${name}` is declared `{}`, the template declares `{}`",
                        declared.ty, wanted.ty
                    ),
                ),
                Some(declared) if declared.default != wanted.default => misfit.add(
                    ARGUMENTS,
                    format!("variable `${name}` has another default than the template's"),
                ),
                Some(_) => {}
            }
            if wanted.required() && request.variable(name).is_none_or(|v| v.is_null()) {
                misfit.add(ARGUMENTS, format!("missing required variable `${name}`"));
            }
        }
        for declared in &request.variable_definitions {
            if !self.variables.iter().any(|d| d.name == declared.name) {
                misfit.add(
                    ARGUMENTS,
                    format!("variable `${}` is not in the template", declared.name),
                );
            }
        }
        if misfit.count == 0 {
            Ok(Fit { variables: used })
        } else {
            Err(misfit)
        }
    }
}

/// Template fields with the same name, arguments and directives become one node whose
/// children are the union of theirs (a template may list a field twice).
fn merge(fields: &[Field]) -> Vec<Node> {
    let mut nodes: Vec<(Node, Vec<Field>)> = Vec::new();
    for field in fields {
        match nodes.iter_mut().find(|(node, _)| {
            node.name == field.name
                && node.directives == field.directives
                && arguments_difference("", &node.arguments, &field.arguments).is_none()
        }) {
            Some((_, children)) => children.extend(field.selection.iter().cloned()),
            None => nodes.push((
                Node {
                    name: field.name.clone(),
                    arguments: field.arguments.clone(),
                    directives: field.directives.clone(),
                    children: Vec::new(),
                },
                field.selection.clone(),
            )),
        }
    }
    nodes
        .into_iter()
        .map(|(mut node, children)| {
            node.children = merge(&children);
            node
        })
        .collect()
}

/// Checks that `request` fields are within `template` nodes, below the field names in
/// `path` (empty at the root). Paths are only written out for a problem.
fn within<'r>(
    template: &[Node],
    request: &'r [Field],
    path: &mut Vec<&'r str>,
    used: &mut Vec<String>,
    misfit: &mut Misfit,
) {
    let root = path.is_empty();
    for field in request {
        if !root
            && field.name == "__typename"
            && field.arguments.is_empty()
            && field.directives.is_empty()
            && field.selection.is_empty()
        {
            continue;
        }
        let shown = |path: &[&str]| {
            let mut text = path.join(".");
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(&field.name);
            text
        };
        let mut candidates = template.iter().filter(|n| n.name == field.name).peekable();
        let Some(first) = candidates.peek().copied() else {
            if root {
                misfit.add(ROOT, format!("extra root field `{}`", shown(path)));
            } else {
                misfit.add(FIELD, format!("extra field `{}`", shown(path)));
            }
            continue;
        };
        let fitting = candidates.find(|node| {
            node.directives == field.directives
                && arguments_difference("", &node.arguments, &field.arguments).is_none()
        });
        let Some(node) = fitting else {
            let problem = match arguments_difference("", &first.arguments, &field.arguments) {
                Some(difference) => format!("arguments of `{}` differ: {difference}", shown(path)),
                None => format!("directives on `{}` differ from the template's", shown(path)),
            };
            misfit.add(if root { ROOT } else { ARGUMENTS }, problem);
            continue;
        };
        for (_, value) in &field.arguments {
            value.variables(&mut |name| {
                if !used.iter().any(|u| u == name) {
                    used.push(name.to_owned());
                }
            });
        }
        path.push(&field.name);
        within(&node.children, &field.selection, path, used, misfit);
        path.pop();
    }
}

/// The first difference between two argument lists (or input objects), if any.
fn arguments_difference(
    prefix: &str,
    template: &[(String, ArgValue)],
    request: &[(String, ArgValue)],
) -> Option<String> {
    // Both sides are sorted with unique names, so no difference is equality: the common
    // case, answered without writing a path.
    if template == request {
        return None;
    }
    for (name, wanted) in template {
        let path = format!("{prefix}{name}");
        match request.iter().find(|(n, _)| n == name) {
            None => return Some(format!("`{path}` is missing")),
            Some((_, given)) => {
                if let Some(difference) = value_difference(&path, wanted, given) {
                    return Some(difference);
                }
            }
        }
    }
    request
        .iter()
        .find(|(name, _)| !template.iter().any(|(n, _)| n == name))
        .map(|(name, _)| format!("`{prefix}{name}` is not in the template"))
}

fn value_difference(path: &str, template: &ArgValue, request: &ArgValue) -> Option<String> {
    match (template, request) {
        (ArgValue::Variable(wanted), ArgValue::Variable(given)) if wanted == given => None,
        (ArgValue::Variable(wanted), ArgValue::Variable(given)) => Some(format!(
            "`{path}` is `${given}` where the template has `${wanted}`"
        )),
        (ArgValue::Variable(wanted), _) => Some(format!(
            "`{path}` is a literal where the template has `${wanted}`"
        )),
        (ArgValue::Object(wanted), ArgValue::Object(given)) => {
            arguments_difference(&format!("{path}."), wanted, given)
        }
        (ArgValue::List(wanted), ArgValue::List(given)) => {
            if wanted.len() != given.len() {
                return Some(format!(
                    "`{path}` has {} items, the template {}",
                    given.len(),
                    wanted.len()
                ));
            }
            wanted
                .iter()
                .zip(given)
                .enumerate()
                .find_map(|(i, (w, g))| value_difference(&format!("{path}[{i}]"), w, g))
        }
        (wanted, given) if wanted == given => None,
        _ => Some(format!("`{path}` differs from the template")),
    }
}
