//! CEL in policies: compiling expressions at load, the variables a request exposes to
//! them, and the functions Sluis adds.
//!
//! Variables: `request`, `token`, `source`, `now`. Functions added to CEL's standard ones:
//! `string.matchesGlob(pattern)`, `list.containsAll(list)`, `list.containsAny(list)`.
//!
//! Cost on the hot path: a CEL root context (with every built-in function registered) is
//! built once per thread, and each request gets a child scope. Variables are resolved
//! lazily, so a request pays only for the variables its policy's expressions touch, and the
//! `token` value is built once per verified token and shared by every request carrying it.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use cel::common::value::{CowVal, Val};
use cel::extractors::This;
use cel::{Context, ExecutionError, Program, Value};

use crate::authn::Identity;
use crate::request::AccessRequest;

/// The variables expressions may use.
pub const VARIABLES: [&str; 4] = ["request", "token", "source", "now"];

/// A compiled CEL expression and its source text.
pub struct Expr {
    pub source: String,
    program: Program,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// 1-based line and column within the expression, when known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl Expr {
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        let program = Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            ExprError {
                position: first.map(|e| (e.pos.0.max(0) as usize + 1, e.pos.1.max(0) as usize + 1)),
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| errors.to_string()),
            }
        })?;
        let mut unknown = Vec::new();
        free_variables(&program.expression().expr, &mut Vec::new(), &mut unknown);
        if let Some(name) = unknown.first() {
            return Err(ExprError {
                position: None,
                message: format!(
                    "unknown variable `{name}` (known: {})",
                    VARIABLES.join(", ")
                ),
            });
        }
        Ok(Expr {
            source: source.to_owned(),
            program,
        })
    }

    /// Evaluates to a boolean; anything else is an error (and so, for rules, no match).
    pub fn eval_bool(&self, vars: &Vars) -> Result<bool, String> {
        match self.eval(vars)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {}, not a bool",
                self.source,
                other.type_of()
            )),
        }
    }

    /// Evaluates to a header or query value: a string, a number or bool in its usual text,
    /// or `None` for null.
    pub fn eval_text(&self, vars: &Vars) -> Result<Option<String>, String> {
        match self.eval(vars)? {
            Value::String(s) => Ok(Some(s.to_string())),
            Value::Int(i) => Ok(Some(i.to_string())),
            Value::UInt(u) => Ok(Some(u.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Null => Ok(None),
            other => Err(format!(
                "`{}` gave {}, not a string",
                self.source,
                other.type_of()
            )),
        }
    }

    pub fn eval(&self, vars: &Vars) -> Result<Value, String> {
        ROOT.with(|root| {
            let root: &Context = root;
            let mut scope = root.new_inner_scope();
            scope.set_variable_resolver(vars);
            self.program
                .execute(&scope)
                .map_err(|e| format!("`{}`: {e}", self.source))
        })
    }
}

/// Collects identifiers that are neither known variables nor bound by a comprehension
/// (`list.exists(x, ...)` binds `x`).
fn free_variables(
    expr: &cel::common::ast::Expr,
    bound: &mut Vec<String>,
    unknown: &mut Vec<String>,
) {
    use cel::common::ast::Expr as E;
    match expr {
        E::Ident(name) => {
            let known = VARIABLES.contains(&name.as_str())
                || name.starts_with('@')
                || bound.iter().any(|b| b == name);
            if !known && !unknown.contains(name) {
                unknown.push(name.clone());
            }
        }
        E::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(&target.expr, bound, unknown);
            }
            for arg in &call.args {
                free_variables(&arg.expr, bound, unknown);
            }
        }
        E::Comprehension(comp) => {
            free_variables(&comp.iter_range.expr, bound, unknown);
            free_variables(&comp.accu_init.expr, bound, unknown);
            let depth = bound.len();
            bound.push(comp.iter_var.clone());
            bound.extend(comp.iter_var2.clone());
            bound.push(comp.accu_var.clone());
            free_variables(&comp.loop_cond.expr, bound, unknown);
            free_variables(&comp.loop_step.expr, bound, unknown);
            free_variables(&comp.result.expr, bound, unknown);
            bound.truncate(depth);
        }
        E::List(list) => {
            for element in &list.elements {
                free_variables(&element.expr, bound, unknown);
            }
        }
        E::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr {
                    free_variables(&entry.key.expr, bound, unknown);
                    free_variables(&entry.value.expr, bound, unknown);
                }
            }
        }
        E::Select(select) => free_variables(&select.operand.expr, bound, unknown),
        E::Struct(structure) => {
            for field in &structure.entries {
                if let cel::common::ast::EntryExpr::StructField(field) = &field.expr {
                    free_variables(&field.value.expr, bound, unknown);
                }
            }
        }
        E::Literal(_) | E::Unspecified => {}
    }
}

thread_local! {
    /// CEL's root context with every built-in and Sluis function: expensive to build
    /// (tens of µs), so one per thread, never per request.
    static ROOT: Context<'static, 'static> = root_context();
}

fn root_context() -> Context<'static, 'static> {
    let mut context = Context::default();
    // The names are fixed and not CEL built-ins, so registration cannot conflict; a
    // failure would only drop the function, which then fails closed at evaluation.
    let _ = context.add_function(
        "matchesGlob",
        |This(path): This<Arc<String>>, pattern: Arc<String>| {
            fast_glob::glob_match(pattern.as_str(), path.as_str())
        },
    );
    let _ = context.add_function(
        "containsAll",
        |This(list): This<Arc<Vec<Value>>>, wanted: Arc<Vec<Value>>| {
            wanted.iter().all(|w| list.contains(w))
        },
    );
    let _ = context.add_function(
        "containsAny",
        |This(list): This<Arc<Vec<Value>>>, wanted: Arc<Vec<Value>>| {
            wanted.iter().any(|w| list.contains(w))
        },
    );
    context
}

/// The variables of one request, built on first use.
pub struct Vars<'a> {
    request: &'a AccessRequest,
    identity: Option<&'a Identity>,
    request_value: OnceLock<Box<dyn Val>>,
    source_value: OnceLock<Box<dyn Val>>,
    now_value: OnceLock<Box<dyn Val>>,
}

impl<'a> Vars<'a> {
    pub fn new(request: &'a AccessRequest, identity: Option<&'a Identity>) -> Vars<'a> {
        Vars {
            request,
            identity,
            request_value: OnceLock::new(),
            source_value: OnceLock::new(),
            now_value: OnceLock::new(),
        }
    }
}

impl cel::context::VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &dyn Val = match variable {
            "request" => &**self
                .request_value
                .get_or_init(|| to_val(request_value(self.request))),
            "token" => match self.identity {
                Some(identity) => identity_val(identity),
                None => return Some(CowVal::Owned(Box::new(cel::common::types::CelNull))),
            },
            "source" => &**self
                .source_value
                .get_or_init(|| to_val(source_value(self.request))),
            "now" => &**self.now_value.get_or_init(|| to_val(now_value())),
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

fn to_val(value: Value) -> Box<dyn Val> {
    value
        .try_into()
        .unwrap_or_else(|_| Box::new(cel::common::types::CelNull) as Box<dyn Val>)
}

/// The `token` variable of an identity, built once and kept with the (cached) identity.
fn identity_val(identity: &Identity) -> &dyn Val {
    &**identity
        .cel_value
        .get_or_init(|| to_val(token_value(identity)))
}

fn text(s: &str) -> Value {
    Value::String(Arc::new(s.to_owned()))
}

fn opt_text(s: Option<&str>) -> Value {
    s.map(text).unwrap_or(Value::Null)
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let map: std::collections::HashMap<cel::objects::Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.to_owned())), v))
        .collect();
    Value::Map(cel::objects::Map { map: Arc::new(map) })
}

fn json(value: &serde_json::Value) -> Value {
    cel::to_value(value).unwrap_or(Value::Null)
}

fn request_value(request: &AccessRequest) -> Value {
    let headers: std::collections::HashMap<cel::objects::Key, Value> = request
        .headers
        .iter()
        .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), text(v)))
        .collect();
    let mut query = std::collections::HashMap::new();
    for (key, value) in request.query_pairs() {
        query
            .entry(cel::objects::Key::String(Arc::new(key)))
            .or_insert_with(|| Value::String(Arc::new(value)));
    }
    map(vec![
        ("method", text(&request.method)),
        ("scheme", text(&request.scheme)),
        ("host", text(&request.host)),
        ("path", text(&request.path)),
        ("query_string", text(&request.query)),
        (
            "segments",
            Value::List(Arc::new(
                request
                    .path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(text)
                    .collect(),
            )),
        ),
        (
            "query",
            Value::Map(cel::objects::Map {
                map: Arc::new(query),
            }),
        ),
        ("protocol", text(&request.protocol)),
        (
            "headers",
            Value::Map(cel::objects::Map {
                map: Arc::new(headers),
            }),
        ),
    ])
}

fn source_value(request: &AccessRequest) -> Value {
    map(vec![
        ("address", text(&request.source.address)),
        (
            "certificate",
            opt_text(request.source.certificate.as_deref()),
        ),
    ])
}

fn token_value(identity: &Identity) -> Value {
    let strings = |items: &[String]| Value::List(Arc::new(items.iter().map(|s| text(s)).collect()));
    let claims = serde_json::Value::Object(identity.claims.clone());
    map(vec![
        ("issuer", text(&identity.issuer)),
        ("iss", text(&identity.iss)),
        ("sub", opt_text(identity.sub.as_deref())),
        ("client_id", opt_text(identity.client_id.as_deref())),
        ("aud", strings(&identity.aud)),
        ("scopes", strings(&identity.scopes)),
        ("claims", json(&claims)),
        ("act", identity.act().map(json).unwrap_or(Value::Null)),
        ("exp", identity.exp.map(Value::Int).unwrap_or(Value::Null)),
        ("iat", identity.iat.map(Value::Int).unwrap_or(Value::Null)),
    ])
}

fn now_value() -> Value {
    let now = chrono::Utc::now().fixed_offset();
    Value::Timestamp(now)
}

/// The variables an expression set uses, so callers can tell which are needed.
pub fn referenced_variables<'e>(exprs: impl Iterator<Item = &'e Expr>) -> HashSet<String> {
    let mut names = HashSet::new();
    for expr in exprs {
        for name in expr.program.references().variables() {
            if VARIABLES.contains(&name) {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

impl From<ExecutionError> for ExprError {
    fn from(e: ExecutionError) -> Self {
        ExprError {
            position: None,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AccessRequest {
        let mut request = AccessRequest {
            method: "GET".into(),
            host: "fhir.example.org".into(),
            ..Default::default()
        };
        request.set_target("/fhir/Patient/123?_format=json");
        request.headers.insert("x-request-id".into(), "abc".into());
        request
    }

    fn eval(source: &str) -> Result<Value, String> {
        let expr = Expr::compile(source).map_err(|e| e.message)?;
        let request = request();
        expr.eval(&Vars::new(&request, None))
    }

    #[test]
    fn request_fields_are_visible() {
        assert_eq!(eval("request.method == 'GET'"), Ok(Value::Bool(true)));
        assert_eq!(
            eval("request.headers['x-request-id']"),
            Ok(Value::String(Arc::new("abc".into())))
        );
        assert_eq!(
            eval("request.query._format == 'json'"),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("token == null"), Ok(Value::Bool(true)));
    }

    #[test]
    fn globs_match_segments() {
        assert_eq!(
            eval("request.path.matchesGlob('/fhir/Patient/*')"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("request.path.matchesGlob('/fhir/*')"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            eval("request.path.matchesGlob('/fhir/**')"),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn list_helpers() {
        assert_eq!(eval("['a','b'].containsAll(['a'])"), Ok(Value::Bool(true)));
        assert_eq!(
            eval("['a','b'].containsAll(['a','c'])"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            eval("['a','b'].containsAny(['c','b'])"),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn unknown_variables_fail_compilation() {
        let err = Expr::compile("reqest.method == 'GET'").unwrap_err();
        assert!(err.message.contains("unknown variable `reqest`"), "{err:?}");
        assert!(Expr::compile("[1,2].exists(x, x == 1)").is_ok());
        let err = Expr::compile("[1,2].exists(x, y == 1)").unwrap_err();
        assert!(err.message.contains("`y`"), "{err:?}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = Expr::compile("request.method ==").unwrap_err();
        assert!(err.position.is_some(), "{err:?}");
    }

    #[test]
    fn now_is_a_timestamp() {
        assert_eq!(
            eval("now > timestamp('2020-01-01T00:00:00Z')"),
            Ok(Value::Bool(true))
        );
    }
}
