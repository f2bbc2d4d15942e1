//! Expressions of a few common shapes, evaluated without the CEL interpreter.
//!
//! Each interpreter call pays for a scope, qualified-name lookups, an overload search and
//! value conversions: about as much as a whole decision's other work. Most rules and
//! header values in real policies are one of a handful of shapes (a field read, a field
//! compared with a literal, "is this list empty", `true`), which are recognised at load
//! and evaluated here directly. Anything unexpected at run time (a variable that is not a
//! list, say) falls back to the interpreter, so the answer is always CEL's.

use cel::Value;
use cel::common::ast::{CallExpr, Expr as Node, LiteralValue};
use cel::common::types::CelList;
use cel::context::VariableResolver;

use super::{Vars, text};

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
    /// `!x` of any of the above that gives a bool.
    Not(Box<Fast>),
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
            _ => None,
        }
    }

    fn call(call: &CallExpr) -> Option<Fast> {
        match (call.func_name.as_str(), call.args.as_slice()) {
            ("!_", [operand]) => {
                let inner = Fast::of(&operand.expr)?;
                (!matches!(inner, Fast::Field(_))).then(|| Fast::Not(Box::new(inner)))
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
            Fast::Not(inner) => match inner.eval(vars)? {
                Ok(Value::Bool(b)) => Ok(Value::Bool(!b)),
                Ok(_) => return None,
                Err(e) => Err(e),
            },
        })
    }
}

/// `v.size()` or `size(v)` of a variable: the variable's name.
fn list_size(node: &Node) -> Option<String> {
    let Node::Call(call) = node else {
        return None;
    };
    if call.func_name != "size" {
        return None;
    }
    let operand = match (&call.target, call.args.as_slice()) {
        (Some(target), []) => &target.expr,
        (None, [operand]) => &operand.expr,
        _ => return None,
    };
    match operand {
        Node::Ident(name) => Some(name.clone()),
        _ => None,
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
