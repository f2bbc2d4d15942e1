//! Expressions of a few common shapes, evaluated without the CEL interpreter.
//!
//! Each interpreter call pays for a scope, qualified-name lookups, an overload search and
//! value conversions: about as much as a whole decision's other work. Most rules and
//! header values in real policies are one of a handful of shapes (a field read, a field
//! compared with a literal, "is this list empty", `true`), which are recognised at load
//! and evaluated here directly. Anything unexpected at run time (a variable that is not a
//! list, say) falls back to the interpreter, so the answer is always CEL's.
//!
//! Quantifiers over the caller's flows (`flows.permitting(request).exists(f,
//! f.scopes.size() == 0 || token.scopes.containsAny(f.scopes))`) are one such shape: CEL
//! runs `exists` as a comprehension, a scope per element with the element copied into it
//! and every step of the fold interpreted, which cost a whole rule's worth per flow. A
//! condition built from `||`, `&&`, `!`, list emptiness, `containsAny`/`containsAll`,
//! `in` and string comparisons of fields over the element's and the token's fields ([`Cond`]) is
//! evaluated here on the flow itself.

use std::sync::Arc;

use cel::Value;
use cel::common::ast::{CallExpr, ComprehensionExpr, Expr as Node, LiteralValue, operators};
use cel::common::types::{CelList, CelNull, CelString};
use cel::common::value::CowVal;
use cel::context::VariableResolver;

#[cfg(test)]
pub(super) mod tests;

use super::flow_val::FlowVal;
use super::{Vars, text};
use crate::authn::Identity;

/// An expression recognised as one of the shapes evaluated directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fast {
    /// `token.client_id`, `request.path`: a string field.
    Field(Field),
    /// `true`, `false`.
    Bool(bool),
    /// `list.size() == 0` (`when_empty`), or `!= 0` / `> 0` (not `when_empty`), over a
    /// variable (e.g. `flows`).
    Empty { variable: String, when_empty: bool },
    /// `field == 'text'` (`equal`), or `!=` (not `equal`).
    Equals {
        field: Field,
        text: String,
        equal: bool,
    },
    /// `list.exists(x, cond)` (not `all`) or `list.all(x, cond)` (`all`) over a variable
    /// holding flows (`flows`, or `flows.permitting(request)` once memoized).
    Quantified {
        variable: String,
        all: bool,
        cond: Cond,
    },
    /// `!x` of any of the above that gives a bool.
    Not(Box<Fast>),
    /// `request.fhir.type == 'Patient'`, `request.fhir.patient.id == null` (`text` is
    /// `None`), or `!=` (not `equal`): a member, or a member's member, of the request read
    /// as FHIR compared with a string or null. Read from the decision's `request.fhir`
    /// (built once per decision); anything but a string or null there, or no
    /// `request.fhir`, leaves the expression to the interpreter.
    FhirEquals {
        path: Vec<String>,
        text: Option<String>,
        equal: bool,
    },
    /// `'key' in request.context`.
    InContext(String),
    /// `a && b` with `a` of a shape above: false where `a` is false (CEL's `&&` is false
    /// with a false operand, whatever the other is, and does not evaluate it); anything
    /// else leaves the whole expression to the interpreter. The use-case policies open
    /// most rules with such a test (`request.fhir.type == 'Coverage' && ...`), and most
    /// rules do not apply to a given request.
    AndFirst(Box<Fast>),
}

impl Fast {
    /// The shape of `node`, if it is one of ours.
    pub(super) fn of(node: &Node) -> Option<Fast> {
        if let Some(field) = Field::of(node) {
            return Some(Fast::Field(field));
        }
        match node {
            Node::Literal(LiteralValue::Boolean(b)) => Some(Fast::Bool(*b.inner())),
            Node::Call(call) => Fast::call(call),
            Node::Comprehension(comprehension) => Fast::quantified(comprehension),
            _ => None,
        }
    }

    /// `exists`/`all` over a variable holding flows (see [`Quantifier::of`]).
    fn quantified(comprehension: &ComprehensionExpr) -> Option<Fast> {
        let quantifier = Quantifier::of(comprehension)?;
        let Node::Ident(variable) = quantifier.range else {
            return None;
        };
        // A variable the loop shadows is the loop's, not the request's.
        if variable == quantifier.var || *variable == comprehension.accu_var {
            return None;
        }
        Some(Fast::Quantified {
            variable: variable.clone(),
            all: quantifier.all,
            cond: Cond::of(quantifier.cond, quantifier.var)?,
        })
    }

    fn call(call: &CallExpr) -> Option<Fast> {
        match (call.func_name.as_str(), call.args.as_slice()) {
            ("!_", [operand]) => {
                let inner = Fast::of(&operand.expr)?;
                (!matches!(inner, Fast::Field(_))).then(|| Fast::Not(Box::new(inner)))
            }
            (operators::LOGICAL_AND, [left, _]) => {
                let first = Fast::of(&left.expr)?;
                (!matches!(first, Fast::Field(_))).then(|| Fast::AndFirst(Box::new(first)))
            }
            (operators::IN, [key, container]) => {
                let key = string(&key.expr)?;
                let Node::Select(select) = &container.expr else {
                    return None;
                };
                let request = matches!(&select.operand.expr, Node::Ident(r) if r == "request");
                (request && !select.test && select.field == "context")
                    .then(|| Fast::InContext(key.to_owned()))
            }
            (op @ ("_==_" | "_!=_"), [left, right])
                if fhir_path(&left.expr).is_some() || fhir_path(&right.expr).is_some() =>
            {
                let (path, literal) = match (fhir_path(&left.expr), fhir_path(&right.expr)) {
                    (Some(path), None) => (path, &right.expr),
                    (None, Some(path)) => (path, &left.expr),
                    _ => return None,
                };
                let text = match literal {
                    Node::Literal(LiteralValue::String(text)) => Some(text.inner().to_owned()),
                    Node::Literal(LiteralValue::Null) => None,
                    _ => return None,
                };
                Some(Fast::FhirEquals {
                    path,
                    text,
                    equal: op == "_==_",
                })
            }
            (op @ ("_==_" | "_!=_" | "_>_"), [left, right]) => {
                if let (Some(variable), Some(0)) = (list_size(&left.expr), int(&right.expr)) {
                    return match op {
                        "_==_" => Some(Fast::Empty {
                            variable,
                            when_empty: true,
                        }),
                        _ => Some(Fast::Empty {
                            variable,
                            when_empty: false,
                        }),
                    };
                }
                if op == "_>_" {
                    return None;
                }
                let (field, literal) = match (Field::of(&left.expr), Field::of(&right.expr)) {
                    (Some(field), None) => (field, &right.expr),
                    (None, Some(field)) => (field, &left.expr),
                    _ => return None,
                };
                let Node::Literal(LiteralValue::String(literal)) = literal else {
                    return None;
                };
                Some(Fast::Equals {
                    field,
                    text: literal.inner().to_owned(),
                    equal: op == "_==_",
                })
            }
            _ => None,
        }
    }

    /// The value, or `None` when the interpreter must decide after all.
    pub(super) fn eval(&self, vars: &Vars) -> Option<Result<Value, String>> {
        Some(match self {
            Fast::Field(field) => field
                .read(vars)
                .map(|value| value.map(text).unwrap_or(Value::Null)),
            Fast::Bool(b) => Ok(Value::Bool(*b)),
            Fast::Empty {
                variable,
                when_empty,
            } => {
                let value = vars.resolve(variable)?;
                let list = value.downcast_ref::<CelList>()?;
                Ok(Value::Bool(list.inner().is_empty() == *when_empty))
            }
            // CEL's `==` between a string and null is false, not an error.
            Fast::Equals { field, text, equal } => field
                .read(vars)
                .map(|value| Value::Bool((value == Some(text.as_str())) == *equal)),
            Fast::Quantified {
                variable,
                all,
                cond,
            } => {
                let value = vars.resolve(variable)?;
                let list = value.downcast_ref::<CelList>()?;
                let token = vars.identity;
                for item in list.inner() {
                    let flow = item.downcast_ref::<FlowVal>()?;
                    // The first element that decides it ends the loop, as in CEL; an
                    // element we cannot judge hands the whole expression to CEL, which
                    // may still find an error there.
                    if cond.holds(flow, token)? != *all {
                        return Some(Ok(Value::Bool(!*all)));
                    }
                }
                Ok(Value::Bool(*all))
            }
            Fast::Not(inner) => match inner.eval(vars)? {
                Ok(Value::Bool(b)) => Ok(Value::Bool(!b)),
                Ok(_) => return None,
                Err(e) => Err(e),
            },
            Fast::FhirEquals { path, text, equal } => {
                let (first, rest) = path.split_first()?;
                let mut value = vars.fhir.as_ref()?.field(first)?;
                for step in rest {
                    let key = CelString::from(step.as_str());
                    match value.as_indexer()?.get(&key).ok()? {
                        CowVal::Borrowed(member) => value = member,
                        CowVal::Owned(_) => return None,
                    }
                }
                // CEL's `==` of a string and null is false, of two nulls true.
                let read = if let Some(read) = value.downcast_ref::<CelString>() {
                    Some(read.inner())
                } else if value.downcast_ref::<CelNull>().is_some() {
                    None
                } else {
                    return None;
                };
                Ok(Value::Bool((read == text.as_deref()) == *equal))
            }
            Fast::InContext(key) => Ok(Value::Bool(vars.request.context.contains_key(key))),
            Fast::AndFirst(first) => match first.eval(vars)? {
                Ok(Value::Bool(false)) => Ok(Value::Bool(false)),
                _ => return None,
            },
        })
    }
}

/// `list.exists(x, cond)` or `list.all(x, cond)` as CEL's macros expand them: an
/// accumulator `@result` starting at false (true), folded with `||` (`&&`) until it is
/// true (false), which is its result.
pub(super) struct Quantifier<'e> {
    /// What it ranges over.
    pub(super) range: &'e Node,
    /// The loop variable.
    pub(super) var: &'e str,
    /// `all` (else `exists`).
    pub(super) all: bool,
    /// The condition on each item.
    pub(super) cond: &'e Node,
}

impl<'e> Quantifier<'e> {
    pub(super) fn of(comprehension: &'e ComprehensionExpr) -> Option<Quantifier<'e>> {
        let ComprehensionExpr {
            iter_range,
            iter_var,
            iter_var2,
            accu_var,
            accu_init,
            loop_cond,
            loop_step,
            result,
        } = comprehension;
        if iter_var2.is_some() || !matches!(&result.expr, Node::Ident(r) if r == accu_var) {
            return None;
        }
        let Node::Literal(LiteralValue::Boolean(init)) = &accu_init.expr else {
            return None;
        };
        let all = *init.inner();
        let is_accu = |node: &Node| matches!(node, Node::Ident(name) if name == accu_var);
        // `@not_strictly_false(@result)` for `all`, `@not_strictly_false(!@result)` for
        // `exists`: stop once the answer is known.
        let Node::Call(stop) = &loop_cond.expr else {
            return None;
        };
        let [tested] = stop.args.as_slice() else {
            return None;
        };
        let stops_right = stop.func_name == operators::NOT_STRICTLY_FALSE
            && match &tested.expr {
                node if all => is_accu(node),
                Node::Call(not) => {
                    not.func_name == operators::LOGICAL_NOT
                        && matches!(not.args.as_slice(), [a] if is_accu(&a.expr))
                }
                _ => false,
            };
        let Node::Call(step) = &loop_step.expr else {
            return None;
        };
        let fold = if all {
            operators::LOGICAL_AND
        } else {
            operators::LOGICAL_OR
        };
        let [accu, cond] = step.args.as_slice() else {
            return None;
        };
        if !stops_right || step.func_name != fold || !is_accu(&accu.expr) {
            return None;
        }
        Some(Quantifier {
            range: &iter_range.expr,
            var: iter_var,
            all,
            cond: &cond.expr,
        })
    }
}

/// `request.fhir.a` or `request.fhir.a.b` (as the load rewrote it: `@fhir.a`): `[a, b]`.
fn fhir_path(node: &Node) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut node = node;
    loop {
        match node {
            Node::Select(select) if !select.test => {
                path.push(select.field.clone());
                node = &select.operand.expr;
            }
            Node::Ident(root) if root == super::FHIR && (1..=2).contains(&path.len()) => {
                path.reverse();
                return Some(path);
            }
            _ => return None,
        }
    }
}

/// `v.size()` or `size(v)` of a variable: the variable's name.
fn list_size(node: &Node) -> Option<String> {
    match size_of(node)? {
        Node::Ident(name) => Some(name.clone()),
        _ => None,
    }
}

/// `x.size()` or `size(x)`: `x`.
fn size_of(node: &Node) -> Option<&Node> {
    let Node::Call(call) = node else {
        return None;
    };
    if call.func_name != "size" {
        return None;
    }
    match (&call.target, call.args.as_slice()) {
        (Some(target), []) => Some(&target.expr),
        (None, [operand]) => Some(&operand.expr),
        _ => None,
    }
}

fn string(node: &Node) -> Option<&str> {
    match node {
        Node::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// A condition on one flow (the loop variable of `exists`/`all`) and the token, of the
/// shapes evaluated directly. Anything else in the condition leaves the whole expression
/// to the interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cond {
    Or(Box<Cond>, Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    /// `list.size() == 0` (`when_empty`), `!= 0` or `> 0`.
    Empty {
        list: Strings,
        when_empty: bool,
    },
    /// `list.containsAny(wanted)`, or `containsAll` (`all`).
    Contains {
        list: Strings,
        wanted: Strings,
        all: bool,
    },
    /// `'text' in list`.
    In {
        text: String,
        list: Strings,
    },
    /// `left == right` (`equal`) or `!=`, of fields or a field and a literal.
    Equals {
        left: Term,
        right: Term,
        equal: bool,
    },
}

/// A side of a comparison: a string field, or a string literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Term {
    Text(Text),
    Literal(String),
}

impl Term {
    fn of(node: &Node, item: &str) -> Option<Term> {
        match string(node) {
            Some(literal) => Some(Term::Literal(literal.to_owned())),
            None => Text::of(node, item).map(Term::Text),
        }
    }

    /// The text (`None` for null); `None` where CEL must judge.
    fn read<'v>(
        &'v self,
        flow: &'v FlowVal,
        token: Option<&'v Identity>,
    ) -> Option<Option<&'v str>> {
        match self {
            Term::Text(text) => text.read(flow, token),
            Term::Literal(literal) => Some(Some(literal)),
        }
    }
}

/// A list of strings a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strings {
    /// The flow's `scopes`.
    FlowScopes,
    /// The token's `scopes`.
    TokenScopes,
    /// The token's `aud`.
    TokenAud,
}

/// A string a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Text {
    Flow(FlowField),
    Token(TokenField),
}

/// The string fields of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlowField {
    Id,
    Purpose,
    Custodian,
    Actor,
    Patient,
}

/// What `name.field` names inside a loop over `item`: the flow's field or the token's.
enum Operand<'n> {
    Flow(&'n str),
    Token(&'n str),
}

fn operand<'n>(node: &'n Node, item: &str) -> Option<Operand<'n>> {
    let Node::Select(select) = node else {
        return None;
    };
    let Node::Ident(name) = &select.operand.expr else {
        return None;
    };
    if select.test {
        return None;
    }
    // The loop variable shadows a variable of the same name.
    if name == item {
        Some(Operand::Flow(&select.field))
    } else if name == "token" {
        Some(Operand::Token(&select.field))
    } else {
        None
    }
}

impl Strings {
    fn of(node: &Node, item: &str) -> Option<Strings> {
        match operand(node, item)? {
            Operand::Flow("scopes") => Some(Strings::FlowScopes),
            Operand::Token("scopes") => Some(Strings::TokenScopes),
            Operand::Token("aud") => Some(Strings::TokenAud),
            _ => None,
        }
    }

    /// Whether [`Strings::read`] gives the list: not the token's without a token.
    fn readable(self, token: Option<&Identity>) -> bool {
        token.is_some() || self == Strings::FlowScopes
    }

    /// The list's strings; `None` for the token's without a token (an error in CEL).
    fn read<'v>(self, flow: &'v FlowVal, token: Option<&'v Identity>) -> Option<StringsOf<'v>> {
        Some(match self {
            Strings::FlowScopes => StringsOf::Shared(flow.flow.scopes.iter()),
            Strings::TokenScopes => StringsOf::Owned(token?.scopes.iter()),
            Strings::TokenAud => StringsOf::Owned(token?.aud.iter()),
        })
    }
}

/// The strings of a list [`Strings::read`] gives, without a box: a condition such as
/// `token.scopes.containsAny(f.scopes)` reads a list once per element of the other.
enum StringsOf<'v> {
    Shared(std::slice::Iter<'v, Arc<str>>),
    Owned(std::slice::Iter<'v, String>),
}

impl<'v> Iterator for StringsOf<'v> {
    type Item = &'v str;

    fn next(&mut self) -> Option<&'v str> {
        match self {
            StringsOf::Shared(list) => list.next().map(|s| &**s),
            StringsOf::Owned(list) => list.next().map(String::as_str),
        }
    }
}

impl Text {
    fn of(node: &Node, item: &str) -> Option<Text> {
        Some(match operand(node, item)? {
            Operand::Flow(field) => Text::Flow(match field {
                "id" => FlowField::Id,
                "purpose" => FlowField::Purpose,
                "custodian" => FlowField::Custodian,
                "actor" => FlowField::Actor,
                "patient" => FlowField::Patient,
                _ => return None,
            }),
            Operand::Token(field) => Text::Token(match field {
                "issuer" => TokenField::Issuer,
                "iss" => TokenField::Iss,
                "sub" => TokenField::Sub,
                "client_id" => TokenField::ClientId,
                _ => return None,
            }),
        })
    }

    /// The text (`None` for null); `None` for the token's without a token (an error in
    /// CEL).
    fn read<'v>(self, flow: &'v FlowVal, token: Option<&'v Identity>) -> Option<Option<&'v str>> {
        let token = |field| {
            let token = token?;
            Some(match field {
                TokenField::Issuer => Some(&*token.issuer),
                TokenField::Iss => Some(&*token.iss),
                TokenField::Sub => token.sub.as_deref(),
                TokenField::ClientId => token.client_id.as_deref(),
            })
        };
        Some(match self {
            Text::Flow(FlowField::Id) => Some(&flow.flow.id),
            Text::Flow(FlowField::Purpose) => Some(&flow.flow.purpose),
            Text::Flow(FlowField::Custodian) => Some(&flow.flow.custodian),
            Text::Flow(FlowField::Actor) => Some(&flow.actor),
            Text::Flow(FlowField::Patient) => flow.flow.patient.as_deref(),
            Text::Token(field) => token(field)?,
        })
    }
}

impl Cond {
    /// The condition `node` of a loop whose variable is `item`, if it is of our shapes.
    fn of(node: &Node, item: &str) -> Option<Cond> {
        let Node::Call(call) = node else {
            return None;
        };
        let both =
            |a: &Node, b: &Node| Some((Box::new(Cond::of(a, item)?), Box::new(Cond::of(b, item)?)));
        match (call.func_name.as_str(), &call.target, call.args.as_slice()) {
            (operators::LOGICAL_OR, None, [a, b]) => {
                let (a, b) = both(&a.expr, &b.expr)?;
                Some(Cond::Or(a, b))
            }
            (operators::LOGICAL_AND, None, [a, b]) => {
                let (a, b) = both(&a.expr, &b.expr)?;
                Some(Cond::And(a, b))
            }
            (operators::LOGICAL_NOT, None, [a]) => {
                Some(Cond::Not(Box::new(Cond::of(&a.expr, item)?)))
            }
            (op @ ("containsAny" | "containsAll"), Some(list), [wanted]) => Some(Cond::Contains {
                list: Strings::of(&list.expr, item)?,
                wanted: Strings::of(&wanted.expr, item)?,
                all: op == "containsAll",
            }),
            (operators::IN, None, [text, list]) => Some(Cond::In {
                text: string(&text.expr)?.to_owned(),
                list: Strings::of(&list.expr, item)?,
            }),
            (
                op @ (operators::EQUALS | operators::NOT_EQUALS | operators::GREATER),
                None,
                [left, right],
            ) => {
                if let (Some(list), Some(0)) = (size_of(&left.expr), int(&right.expr)) {
                    return Some(Cond::Empty {
                        list: Strings::of(list, item)?,
                        when_empty: op == operators::EQUALS,
                    });
                }
                if op == operators::GREATER {
                    return None;
                }
                let (left, right) = (Term::of(&left.expr, item)?, Term::of(&right.expr, item)?);
                if matches!((&left, &right), (Term::Literal(_), Term::Literal(_))) {
                    return None;
                }
                Some(Cond::Equals {
                    left,
                    right,
                    equal: op == operators::EQUALS,
                })
            }
            _ => None,
        }
    }

    /// Whether the condition holds for `flow`; `None` where CEL must judge (no token:
    /// `token.scopes` is an error there).
    fn holds(&self, flow: &FlowVal, token: Option<&Identity>) -> Option<bool> {
        Some(match self {
            // `||` and `&&` short-circuit as CEL's do. An operand we cannot judge may be
            // an error CEL would absorb (`error || true` is true): CEL decides then.
            Cond::Or(a, b) => a.holds(flow, token)? || b.holds(flow, token)?,
            Cond::And(a, b) => a.holds(flow, token)? && b.holds(flow, token)?,
            Cond::Not(a) => !a.holds(flow, token)?,
            Cond::Empty { list, when_empty } => {
                list.read(flow, token)?.next().is_none() == *when_empty
            }
            Cond::Contains { list, wanted, all } => {
                // Either may be the token's, an error without one, whatever the other holds.
                if !list.readable(token) {
                    return None;
                }
                let mut wanted = wanted.read(flow, token)?;
                let found = |w: &str| {
                    list.read(flow, token)
                        .is_some_and(|mut list| list.any(|l| l == w))
                };
                if *all {
                    wanted.all(found)
                } else {
                    wanted.any(found)
                }
            }
            Cond::In { text, list } => list.read(flow, token)?.any(|l| l == text),
            // CEL's `==` between a string and null is false, not an error.
            Cond::Equals { left, right, equal } => {
                (left.read(flow, token)? == right.read(flow, token)?) == *equal
            }
        })
    }
}

fn int(node: &Node) -> Option<i64> {
    match node {
        Node::Literal(LiteralValue::Int(i)) => Some(*i.inner()),
        _ => None,
    }
}

/// A string field of `token` or `request`. Header values and `flows.actor` are mostly
/// such fields; reading one directly costs a fraction of a CEL evaluation (a scope, a
/// qualified-name lookup, a map lookup and a value conversion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Token(TokenField),
    Request(&'static str),
    /// `graphql.template`, which template policies' rules ask most.
    GraphqlTemplate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenField {
    Issuer,
    Iss,
    Sub,
    ClientId,
}

impl Field {
    pub(super) fn of(node: &Node) -> Option<Field> {
        let Node::Select(select) = node else {
            return None;
        };
        let Node::Ident(variable) = &select.operand.expr else {
            return None;
        };
        if select.test {
            return None;
        }
        match (variable.as_str(), select.field.as_str()) {
            ("token", "issuer") => Some(Field::Token(TokenField::Issuer)),
            ("token", "iss") => Some(Field::Token(TokenField::Iss)),
            ("token", "sub") => Some(Field::Token(TokenField::Sub)),
            ("token", "client_id") => Some(Field::Token(TokenField::ClientId)),
            ("request", field) => ["method", "scheme", "host", "path", "protocol", "body"]
                .into_iter()
                .find(|f| *f == field)
                .map(Field::Request),
            ("graphql", "template") => Some(Field::GraphqlTemplate),
            _ => None,
        }
    }

    /// The field's text, `None` for null; as CEL would give it, errors included.
    pub(super) fn read<'v>(self, vars: &'v Vars) -> Result<Option<&'v str>, String> {
        match self {
            Field::Token(field) => {
                let identity = vars
                    .identity
                    .ok_or("`token` is null: this policy checks no token")?;
                Ok(match field {
                    TokenField::Issuer => Some(&*identity.issuer),
                    TokenField::Iss => Some(&*identity.iss),
                    TokenField::Sub => identity.sub.as_deref(),
                    TokenField::ClientId => identity.client_id.as_deref(),
                })
            }
            Field::GraphqlTemplate => match vars.graphql {
                Some(_) => Ok(vars.graphql_template.get().map(|t| &**t)),
                None => Err("`graphql` is null: this policy reads no GraphQL".into()),
            },
            Field::Request(name) => {
                let request = vars.request;
                Ok(Some(match name {
                    "method" => &*request.method,
                    "scheme" => &*request.scheme,
                    "host" => &*request.host,
                    "path" => &*request.path,
                    "protocol" => &*request.protocol,
                    _ => &*request.body,
                }))
            }
        }
    }
}
