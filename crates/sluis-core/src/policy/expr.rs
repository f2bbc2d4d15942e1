//! CEL in policies: compiling expressions at load, the variables a request exposes to
//! them, and the functions Sluis adds.
//!
//! Variables: `request`, `token`, `source`, `now`, and `flows` (the caller's active flows,
//! in policies with a `flows` block); `subject`, `action`, `resource` and `context` of an
//! evaluation (null for HTTP requests); `data`, the policy's own facts (null without);
//! `caller`, the caller's party identifiers ([`super::caller`]); `graphql`, the request's
//! GraphQL operation (in policies with a `graphql` block, see [`graphql_value`]);
//! `request.fhir`, the request read as a FHIR REST call (in policies with a `fhir` block,
//! see `expr/fhir_val.rs`).
//! Functions added to CEL's standard ones:
//! `string.matchesGlob(pattern)`, `list.containsAll(list)`, `list.containsAny(list)`,
//! `flow.permits(request)` (a resource of the flow allows this method on this path) and
//! `flow.covers(request)` (a resource of the flow is this path, whatever the method),
//! `smartPermits(token.scopes, request, '/fhir')` (SMART scopes, [`super::smart`]),
//! `request.fhir.param(name)`, `request.fhir.values(name)`, `request.fhir.hasOnly(list)`,
//! `list.sameSet(list)`, `string.fhirPrefix()` and `string.fhirUnprefixed()`.
//!
//! Cost on the hot path: a CEL root context (with every built-in function registered) is
//! built once per thread, and each request gets a child scope. Variables are resolved
//! lazily, so a request pays only for the variables its policy's expressions touch, and the
//! `token` value is built once per verified token and shared by every request carrying it.
//! CEL's own `matches` compiles its regular expression on every call (hundreds of µs for
//! a long pattern); a `matches` with a literal pattern is therefore rewritten at load to a
//! function using the regex compiled once, which also reports a bad pattern at load.
//! Common shapes skip the interpreter's per-call overhead (scopes, qualified-name lookups,
//! overload search): a string field (`token.client_id`, `request.path`), a field compared
//! with a literal, `list.size() == 0`, `true`, and `exists`/`all` over the caller's flows
//! with a condition on each flow's and the token's fields are evaluated directly
//! (`fast`), and `flows.permitting(request)` / `flows.covering(request)` become
//! variables computed once per request, however many rules ask.

use std::sync::{Arc, LazyLock, OnceLock};

use cel::common::ast::{Expr as Node, LiteralValue};
use cel::common::value::{CowVal, Val};
use cel::extractors::This;
use cel::{Context, ExecutionError, FunctionContext, IdedExpr, Program, Value};

use crate::authn::Identity;
use crate::flows::FlowIndex;
use crate::flows::index::IndexedFlow;
use crate::graphql::GraphqlRequest;

mod entry_fast;
pub mod entry_val;
mod fast;
mod fhir_val;
mod flow_val;
use super::diagnostic::DiagnosticKind;
use crate::request::AccessRequest;
use fast::Fast;

/// The variables expressions may use.
pub const VARIABLES: [&str; 14] = [
    "request", "token", "source", "now", "flows", "subject", "action", "resource", "context",
    "data", "caller", "graphql", "entry", "response",
];

/// The variables only response rules have: one entry of the upstream's answer, and the
/// answer's status and Bundle type.
pub const RESPONSE_VARIABLES: [&str; 2] = ["entry", "response"];

/// CEL's type names, which expressions may use as values (`type(x) == int`).
const TYPE_NAMES: [&str; 11] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

/// A compiled CEL expression and its source text.
pub struct Expr {
    pub source: String,
    /// The parsed expression, with literal-pattern `matches` calls rewritten.
    tree: IdedExpr,
    /// Where each node of `tree` was written (node ids survive the rewrite), for explain.
    program: Program,
    /// The fields of `request` it reads, so a request builds only those.
    pub request_fields: RequestFields,
    /// Whether it reads `flows`.
    pub uses_flows: bool,
    /// Whether it reads `request.fhir`.
    pub uses_fhir: bool,
    /// The fields of `graphql` it reads.
    pub graphql_fields: GraphqlFields,
    /// Whether it reads `caller`, and which of its fields (`caller.uzovi`).
    pub uses_caller: bool,
    pub caller_fields: Vec<String>,
    /// Whether it reads `entry` or `response` (only response rules may).
    pub uses_response: bool,
    /// What it reads of `entry`, so an answer's entries are built only that far.
    pub entry_fields: entry_val::EntryFields,
    /// Set when it reads `entry` or `response` and has a shape evaluated on the entry
    /// without the interpreter (see [`entry_fast`]).
    entry_fast: Option<entry_fast::EntryCond>,
    /// The resource type an entry must have for it to hold (see
    /// [`entry_fast::type_guard`]): an entry of another is false without evaluating it.
    entry_type: Option<String>,
    /// `entry_fast` without that guard: what decides an entry of that type.
    entry_rest: Option<entry_fast::EntryCond>,
    /// The information sources it calls (`sources.NAME(arg)`), in order.
    pub source_calls: Vec<SourceCall>,
    /// Set when the whole expression has a shape evaluated without the interpreter
    /// (see [`fast`]).
    fast: Option<Fast>,
    /// `tree` with its dotted names written as one name each (see [`Names`]), which the
    /// interpreter evaluates; `None` when it has none.
    named: Option<IdedExpr>,
}

/// A set of `request` fields. Building the whole `request` value (every header, the
/// parsed query) costs more than evaluating a typical rule, so only what a policy reads is
/// built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFields(u16);

const REQUEST_FIELDS: [&str; 11] = [
    "method",
    "scheme",
    "host",
    "path",
    "segments",
    "query",
    "query_string",
    "protocol",
    "headers",
    "body",
    "context",
];

impl RequestFields {
    pub const ALL: RequestFields = RequestFields(u16::MAX);

    fn bit(name: &str) -> Option<u16> {
        REQUEST_FIELDS
            .iter()
            .position(|f| *f == name)
            .map(|i| 1 << i)
    }

    pub fn union(self, other: RequestFields) -> RequestFields {
        RequestFields(self.0 | other.0)
    }

    fn has(self, name: &str) -> bool {
        Self::bit(name).is_some_and(|bit| self.0 & bit != 0)
    }
}

/// A set of `graphql` fields, like [`RequestFields`]: the field paths and arguments of a
/// large query cost more to build than the rule that asks `graphql.template == "X"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphqlFields(u8);

const GRAPHQL_FIELDS: [&str; 7] = [
    "operation",
    "name",
    "root_fields",
    "fields",
    "arguments",
    "variables",
    "template",
];

impl GraphqlFields {
    pub const ALL: GraphqlFields = GraphqlFields(u8::MAX);

    fn bit(name: &str) -> Option<u8> {
        GRAPHQL_FIELDS
            .iter()
            .position(|f| *f == name)
            .map(|i| 1 << i)
    }

    pub fn union(self, other: GraphqlFields) -> GraphqlFields {
        GraphqlFields(self.0 | other.0)
    }

    /// Whether any field is read.
    pub fn any(self) -> bool {
        self.0 != 0
    }

    fn has(self, name: &str) -> bool {
        Self::bit(name).is_some_and(|bit| self.0 & bit != 0)
    }
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// What the policy author got wrong: syntax, a name, a function.
    pub kind: DiagnosticKind,
    /// 1-based line and column within the expression, when known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl Expr {
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        let program = Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            ExprError {
                kind: DiagnosticKind::CelParse,
                // The parser's line and column are both 1-based already (`)` alone fails
                // at (1, 1)).
                position: first.map(|e| (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize)),
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| errors.to_string()),
            }
        })?;
        let mut tree = program.expression().clone();
        let mut check = Check::default();
        check.walk(&mut tree.expr);
        if let Some(name) = check.unknown.first() {
            return Err(ExprError {
                kind: DiagnosticKind::CelInvalid,
                position: None,
                message: format!(
                    "unknown variable `{name}` (known: {})",
                    VARIABLES.join(", ")
                ),
            });
        }
        if let Some((name, member)) = check.unknown_functions.first() {
            let hint = nearest_function(name, *member)
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            return Err(ExprError {
                kind: DiagnosticKind::CelUnknownFunction,
                position: None,
                message: format!("unknown function `{name}`{hint}"),
            });
        }
        if let Some(message) = check.errors.into_iter().next() {
            return Err(ExprError {
                kind: DiagnosticKind::CelInvalid,
                position: None,
                message,
            });
        }
        let entry_fields = entry_val::EntryFields::of(&tree.expr);
        let entry_fast = check
            .uses_response
            .then(|| entry_fast::EntryCond::of(&tree.expr))
            .flatten();
        let entry_type = entry_fast::type_guard(&tree.expr);
        let entry_rest = entry_fast
            .as_ref()
            .filter(|_| entry_type.is_some())
            .and_then(entry_fast::EntryCond::after_guard);
        let mut named = tree.clone();
        let named = Names::default().walk(&mut named.expr).then_some(named);
        Ok(Expr {
            source: source.to_owned(),
            fast: Fast::of(&tree.expr),
            tree,
            program,
            request_fields: check.request_fields,
            uses_flows: check.uses_flows,
            uses_fhir: check.uses_fhir,
            graphql_fields: check.graphql_fields,
            uses_caller: check.uses_caller,
            caller_fields: check.caller_fields,
            uses_response: check.uses_response,
            entry_fields,
            entry_fast,
            entry_type,
            entry_rest,
            source_calls: check.source_calls,
            named,
        })
    }

    /// Evaluates the tree the interpreter runs in `scope`. Where a dotted name written as
    /// one fails, the tree as written is evaluated again for the interpreter's own error
    /// (`no such key: x` rather than an undeclared `request.context.x`).
    fn run(&self, scope: &Context) -> Result<Value, String> {
        let error = |e: ExecutionError| format!("`{}`: {e}", self.source);
        match &self.named {
            None => Value::resolve(&self.tree, scope).map_err(error),
            Some(named) => Value::resolve(named, scope)
                .or_else(|_| Value::resolve(&self.tree, scope))
                .map_err(error),
        }
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
        if let Some(Fast::Field(field)) = &self.fast {
            return field
                .read(vars)
                .map(|text| text.map(str::to_owned))
                .map_err(|e| format!("`{}`: {e}", self.source));
        }
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

    /// Evaluates to a boolean for one entry of an upstream answer: `entry` and `response`
    /// are bound besides the request's variables.
    pub fn eval_bool_for_entry(
        &self,
        vars: &Vars,
        entry: &entry_val::EntryValue<'_>,
        response: &dyn Val,
    ) -> Result<bool, String> {
        let scoped = EntryScope {
            vars,
            entry,
            response,
        };
        if let (Some(needed), Some(kind)) = (&self.entry_type, entry.resource_type()) {
            if needed != kind {
                return Ok(false);
            }
            // The guard holds, and `true && x` is `x`: the rest decides.
            if let Some(holds) = self
                .entry_rest
                .as_ref()
                .and_then(|rest| rest.holds(&scoped, None))
            {
                return Ok(holds);
            }
        }
        if let Some(holds) = self
            .entry_fast
            .as_ref()
            .and_then(|cond| cond.holds(&scoped, None))
        {
            return Ok(holds);
        }
        self.interpret_for_entry(vars, &scoped)
    }

    /// [`Expr::eval_bool_for_entry`] by the interpreter alone.
    fn interpret_for_entry(&self, vars: &Vars, scoped: &EntryScope) -> Result<bool, String> {
        let result = if self.uses_response {
            ROOT.with(|root| {
                let root: &Context = root;
                let mut scope = root.new_inner_scope();
                scope.set_variable_resolver(scoped);
                self.run(&scope)
            })
        } else {
            self.eval(vars)
        };
        match result? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {}, not a bool",
                self.source,
                other.type_of()
            )),
        }
    }

    pub fn eval(&self, vars: &Vars) -> Result<Value, String> {
        debug_assert!(
            vars.fields.0 & self.request_fields.0 == self.request_fields.0,
            "vars lack request fields the expression reads"
        );
        if let Some(result) = self.fast.as_ref().and_then(|fast| fast.eval(vars)) {
            return result.map_err(|e| format!("`{}`: {e}", self.source));
        }
        ROOT.with(|root| {
            let root: &Context = root;
            let mut scope = root.new_inner_scope();
            scope.set_variable_resolver(vars);
            self.run(&scope)
        })
    }
}

impl Expr {
    /// The values of this expression's parts: the operands of `&&`, `||` and `!`, and
    /// of comparisons, each with its source text. For explain output, not the hot path.
    pub fn explain(&self, vars: &Vars) -> Vec<(String, String)> {
        let mut nodes = Vec::new();
        parts(&self.tree, &mut nodes);
        ROOT.with(|root| {
            let root: &Context = root;
            let mut scope = root.new_inner_scope();
            scope.set_variable_resolver(vars);
            nodes
                .into_iter()
                .map(|node| {
                    let value = match Value::resolve(node, &scope) {
                        Ok(value) => show(&value),
                        Err(e) => format!("error: {e}"),
                    };
                    (self.text_of(node), value)
                })
                .collect()
        })
    }

    /// The source text of a node. The parser records only each node's own token (the
    /// operator, the `.` of a call), so the span is widened over the node's descendants
    /// and then to the brackets it leaves open.
    fn text_of(&self, node: &IdedExpr) -> String {
        let info = self.program.source_info();
        let mut span: Option<(u32, u32)> = None;
        visit(node, &mut |n| {
            if let Some((start, mut stop)) = info.offset_for(n.id) {
                // A select is recorded at its `.`: the field name follows.
                if let Node::Select(select) = &n.expr {
                    stop += select.field.chars().count() as u32;
                }
                span = Some(match span {
                    Some((s, e)) => (s.min(start), e.max(stop)),
                    None => (start, stop),
                });
            }
        });
        let Some((start, stop)) = span else {
            return format!("#{}", node.id);
        };
        let chars: Vec<char> = self.source.chars().collect();
        let mut end = (stop as usize).min(chars.len().saturating_sub(1));
        // Close what the span opened: `f(x` → `f(x)`, `[a, b` → `[a, b]`.
        let mut depth: i32 = 0;
        let mut quote: Option<char> = None;
        for &c in chars.get(start as usize..=end).unwrap_or(&[]) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(' | '[' | '{') => depth += 1,
                (None, ')' | ']' | '}') => depth -= 1,
                _ => {}
            }
        }
        while depth > 0 && end + 1 < chars.len() {
            end += 1;
            if let Some(')' | ']' | '}') = chars.get(end) {
                depth -= 1;
            }
        }
        chars
            .get(start as usize..=end)
            .map(|s| s.iter().collect::<String>().trim().to_string())
            .unwrap_or_default()
    }
}

/// Calls `f` on a node and every node below it.
fn visit(node: &IdedExpr, f: &mut dyn FnMut(&IdedExpr)) {
    f(node);
    match &node.expr {
        Node::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, f);
            }
            for arg in &call.args {
                visit(arg, f);
            }
        }
        Node::Select(select) => visit(&select.operand, f),
        Node::List(list) => list.elements.iter().for_each(|e| visit(e, f)),
        Node::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr {
                    visit(&entry.key, f);
                    visit(&entry.value, f);
                }
            }
        }
        Node::Comprehension(comp) => {
            visit(&comp.iter_range, f);
            visit(&comp.loop_step, f);
        }
        _ => {}
    }
}

/// The nodes worth showing: leaves of the boolean structure, and comparison operands.
fn parts<'e>(node: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    if let Node::Call(call) = &node.expr {
        match call.func_name.as_str() {
            "_&&_" | "_||_" | "!_" => {
                for arg in &call.args {
                    parts(arg, out);
                }
                return;
            }
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "@in" => {
                out.push(node);
                for arg in &call.args {
                    if !constant(arg) {
                        out.push(arg);
                    }
                }
                return;
            }
            _ => {}
        }
    }
    if !constant(node) {
        out.push(node);
    }
}

/// A literal, or a list of literals: nothing to explain.
fn constant(node: &IdedExpr) -> bool {
    match &node.expr {
        Node::Literal(_) => true,
        Node::List(list) => list.elements.iter().all(constant),
        _ => false,
    }
}

/// A short, readable rendering of a value.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{:?}", s.as_str()),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => format!("{u}u"),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::List(items) => {
            let shown: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", shown.join(", "))
        }
        Value::Map(map) => {
            let mut shown: Vec<String> = map
                .map
                .iter()
                .map(|(k, v)| format!("{}: {}", show(&Value::from(k)), show(v)))
                .collect();
            shown.sort();
            format!("{{{}}}", shown.join(", "))
        }
        Value::Timestamp(t) => t.to_rfc3339(),
        other => format!("{other:?}"),
    }
}

/// Walks a parsed expression at load: finds identifiers that are neither known variables
/// nor bound by a comprehension (`list.exists(x, ...)` binds `x`), and rewrites
/// `matches` calls with a literal pattern to use a regex compiled here, once.
#[derive(Default)]
struct Check {
    bound: Vec<String>,
    unknown: Vec<String>,
    errors: Vec<String>,
    request_fields: RequestFields,
    uses_flows: bool,
    uses_fhir: bool,
    graphql_fields: GraphqlFields,
    uses_caller: bool,
    caller_fields: Vec<String>,
    /// Functions called that neither CEL nor Sluis defines, and whether as a method.
    unknown_functions: Vec<(String, bool)>,
    uses_response: bool,
    source_calls: Vec<SourceCall>,
}

/// A call `sources.NAME(arg)` found at load, for checking names and argument shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceCall {
    pub name: String,
    /// How many arguments were given (a source takes none or one map).
    pub arguments: usize,
    /// The keys of a map literal argument, when it is one.
    pub literal_keys: Option<Vec<String>>,
}

/// The function `sources.NAME(arg)` calls are rewritten to: `@source('NAME', arg)`.
const SOURCE: &str = "@source";

/// The function `sources.NAME({'k': v, ...})` calls with a map literal of distinct
/// literal names are rewritten to: `@source_fields('NAME', 'k', v, ...)`. The look-up only
/// writes the map's canonical bytes; building it (a table, every name hashed) on every
/// evaluation cost more than writing them.
const SOURCE_FIELDS: &str = "@source_fields";

/// The variable `request.fhir` is rewritten to: the parsed FHIR request is not part of
/// the `request` map (which is built per field read), but a value of its own, built
/// lazily ([`fhir_val`]).
const FHIR: &str = "@fhir";

/// The function `matches` calls with a literal pattern are rewritten to.
const COMPILED_MATCHES: &str = "@sluis_matches";

/// The variables `flows.permitting(request)` and `flows.covering(request)` are rewritten
/// to, when `flows` and `request` are the policy's: a policy asks the same question in
/// several rules (resource in a flow? method allowed? scope allowed?), and each answer
/// is computed once per request instead of once per rule.
const FLOWS_PERMITTING: &str = "@flows_permitting";
const FLOWS_COVERING: &str = "@flows_covering";

/// The variable a `flows.permitting(request)`/`flows.covering(request)` call stands for.
fn memoized_filter(call: &cel::common::ast::CallExpr, bound: &[String]) -> Option<&'static str> {
    let unbound = |name: &str| !bound.iter().any(|b| b == name);
    let ident = |node: &IdedExpr, want: &str| matches!(&node.expr, Node::Ident(n) if n == want);
    let plain = call.target.as_deref().is_some_and(|t| ident(t, "flows"))
        && matches!(call.args.as_slice(), [arg] if ident(arg, "request"))
        && unbound("flows")
        && unbound("request");
    match call.func_name.as_str() {
        "permitting" if plain => Some(FLOWS_PERMITTING),
        "covering" if plain => Some(FLOWS_COVERING),
        _ => None,
    }
}

/// Writes each dotted name rooted at a variable (`request.context.patient_bsn`,
/// `@fhir.patient.id`) as one identifier, which the resolver answers whole
/// ([`resolve_path`]). The interpreter reads a dotted name by collecting its segments,
/// joining them, and asking every scope for the whole name, each prefix and each type of
/// that name; one identifier is one question. Names rooted at a comprehension's variable
/// stay as written, and so does the last step of a presence test (`has(a.b.c)` tests
/// for `c` on `a.b`).
#[derive(Default)]
struct Names {
    bound: Vec<String>,
}

impl Names {
    /// Whether it wrote any name.
    fn walk(&mut self, expr: &mut Node) -> bool {
        match expr {
            Node::Select(select) if !select.test => {
                if let Some(name) = self.dotted(expr) {
                    *expr = Node::Ident(name);
                    return true;
                }
                let Node::Select(select) = expr else {
                    return false;
                };
                self.walk(&mut select.operand.expr)
            }
            Node::Select(select) => self.walk(&mut select.operand.expr),
            Node::Call(call) => {
                let mut wrote = false;
                if let Some(target) = &mut call.target {
                    wrote |= self.walk(&mut target.expr);
                }
                for arg in &mut call.args {
                    wrote |= self.walk(&mut arg.expr);
                }
                wrote
            }
            Node::Comprehension(comp) => {
                let mut wrote = self.walk(&mut comp.iter_range.expr);
                wrote |= self.walk(&mut comp.accu_init.expr);
                let depth = self.bound.len();
                self.bound.push(comp.iter_var.clone());
                self.bound.extend(comp.iter_var2.clone());
                self.bound.push(comp.accu_var.clone());
                wrote |= self.walk(&mut comp.loop_cond.expr);
                wrote |= self.walk(&mut comp.loop_step.expr);
                wrote |= self.walk(&mut comp.result.expr);
                self.bound.truncate(depth);
                wrote
            }
            Node::List(list) => list
                .elements
                .iter_mut()
                .fold(false, |wrote, element| self.walk(&mut element.expr) | wrote),
            Node::Map(map) => map.entries.iter_mut().fold(false, |wrote, entry| {
                if let cel::common::ast::EntryExpr::MapEntry(entry) = &mut entry.expr {
                    let key = self.walk(&mut entry.key.expr);
                    self.walk(&mut entry.value.expr) | key | wrote
                } else {
                    wrote
                }
            }),
            Node::Struct(structure) => structure.entries.iter_mut().fold(false, |wrote, field| {
                if let cel::common::ast::EntryExpr::StructField(field) = &mut field.expr {
                    self.walk(&mut field.value.expr) | wrote
                } else {
                    wrote
                }
            }),
            Node::Ident(_) | Node::Literal(_) | Node::Unspecified => false,
        }
    }

    /// The dotted name `expr` spells, when its root is a variable the resolver answers.
    fn dotted(&self, expr: &Node) -> Option<String> {
        let mut segments = Vec::new();
        let mut node = expr;
        let root = loop {
            match node {
                Node::Select(select) if !select.test => {
                    segments.push(select.field.as_str());
                    node = &select.operand.expr;
                }
                Node::Ident(root) => break root.as_str(),
                _ => return None,
            }
        };
        let answered = VARIABLES.contains(&root) || root.starts_with('@');
        if !answered || self.bound.iter().any(|b| b == root) {
            return None;
        }
        segments.push(root);
        segments.reverse();
        Some(segments.join("."))
    }
}

/// The names and values of a call's one argument, when it is a map literal of distinct
/// literal string names and no optional entries (`{'bsn': x, 'role': y}`): `'bsn', x,
/// 'role', y`, in the order written, so they are evaluated (and fail) in the order the
/// map's entries would be.
fn literal_fields(args: &[IdedExpr]) -> Option<Vec<IdedExpr>> {
    let [arg] = args else {
        return None;
    };
    let Node::Map(map) = &arg.expr else {
        return None;
    };
    let mut names: Vec<&str> = Vec::with_capacity(map.entries.len());
    let mut fields = Vec::with_capacity(2 * map.entries.len());
    for entry in &map.entries {
        let cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr else {
            return None;
        };
        let Node::Literal(LiteralValue::String(name)) = &entry.key.expr else {
            return None;
        };
        if entry.optional || names.contains(&&**name) {
            return None;
        }
        names.push(&**name);
        fields.push(entry.key.clone());
        fields.push(entry.value.clone());
    }
    Some(fields)
}

impl Check {
    fn walk(&mut self, expr: &mut Node) {
        if let Node::Call(call) = expr
            && let Some(Node::Ident(target)) = call.target.as_deref().map(|t| &t.expr)
            && target == "sources"
            && !self.bound.iter().any(|b| b == "sources")
        {
            self.source_call(call);
            for arg in &mut call.args {
                self.walk(&mut arg.expr);
            }
            return;
        }
        match expr {
            Node::Ident(name)
                if name == "sources" && !self.bound.iter().any(|b| b == "sources") =>
            {
                self.errors
                    .push("call a source: `sources.NAME(...)`".to_owned());
            }
            Node::Ident(name) => {
                let known = VARIABLES.contains(&name.as_str())
                    || TYPE_NAMES.contains(&name.as_str())
                    || name.starts_with('@')
                    || self.bound.iter().any(|b| b == name);
                if !known && !self.unknown.contains(name) {
                    self.unknown.push(name.clone());
                }
                if name == "request" && !self.bound.iter().any(|b| b == "request") {
                    // Used whole (e.g. passed to a function): build all of it.
                    self.request_fields = RequestFields::ALL;
                }
                if name == "flows" && !self.bound.iter().any(|b| b == "flows") {
                    self.uses_flows = true;
                }
                if name == "graphql" && !self.bound.iter().any(|b| b == "graphql") {
                    self.graphql_fields = GraphqlFields::ALL;
                }
                if name == "caller" && !self.bound.iter().any(|b| b == "caller") {
                    self.uses_caller = true;
                }
                if RESPONSE_VARIABLES.contains(&name.as_str())
                    && !self.bound.iter().any(|b| b == name)
                {
                    self.uses_response = true;
                }
            }
            Node::Call(call) => {
                let member = call.target.is_some();
                if !is_operator_or_macro(&call.func_name)
                    && !is_declared(&call.func_name, member)
                    && !self
                        .unknown_functions
                        .iter()
                        .any(|(n, _)| *n == call.func_name)
                {
                    self.unknown_functions
                        .push((call.func_name.clone(), member));
                }
                if call.func_name == "matches" {
                    self.precompile(call);
                }
                if let Some(name) = memoized_filter(call, &self.bound) {
                    // `flows.permitting(request)`, the same list in every rule that asks:
                    // computed once per request (see `Vars::resolve`).
                    for field in ["method", "path"] {
                        self.request_fields.0 |= RequestFields::bit(field).unwrap_or(0);
                    }
                    self.uses_flows = true;
                    *expr = Node::Ident(name.to_owned());
                    return;
                }
                if matches!(
                    call.func_name.as_str(),
                    "permits" | "covers" | "permitting" | "covering"
                ) && call.target.is_some()
                    && matches!(call.args.as_slice(), [arg] if matches!(&arg.expr, Node::Ident(name) if name == "request"))
                    && !self.bound.iter().any(|b| b == "request")
                {
                    // `f.permits(request)` reads only the method and path.
                    for field in ["method", "path"] {
                        self.request_fields.0 |= RequestFields::bit(field).unwrap_or(0);
                    }
                    if let Some(target) = &mut call.target {
                        self.walk(&mut target.expr);
                    }
                    return;
                }
                if call.func_name == "smartPermits"
                    && call.target.is_none()
                    && matches!(call.args.get(1).map(|a| &a.expr), Some(Node::Ident(name)) if name == "request")
                    && !self.bound.iter().any(|b| b == "request")
                {
                    // `smartPermits(scopes, request, base)` reads the method, path and query.
                    for field in ["method", "path", "query_string"] {
                        self.request_fields.0 |= RequestFields::bit(field).unwrap_or(0);
                    }
                    for (index, arg) in call.args.iter_mut().enumerate() {
                        if index != 1 {
                            self.walk(&mut arg.expr);
                        }
                    }
                    return;
                }
                if let Some(target) = &mut call.target {
                    self.walk(&mut target.expr);
                }
                for arg in &mut call.args {
                    self.walk(&mut arg.expr);
                }
            }
            Node::Comprehension(comp) => {
                self.walk(&mut comp.iter_range.expr);
                self.walk(&mut comp.accu_init.expr);
                let depth = self.bound.len();
                self.bound.push(comp.iter_var.clone());
                self.bound.extend(comp.iter_var2.clone());
                self.bound.push(comp.accu_var.clone());
                self.walk(&mut comp.loop_cond.expr);
                self.walk(&mut comp.loop_step.expr);
                self.walk(&mut comp.result.expr);
                self.bound.truncate(depth);
            }
            Node::List(list) => {
                for element in &mut list.elements {
                    self.walk(&mut element.expr);
                }
            }
            Node::Map(map) => {
                for entry in &mut map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(entry) = &mut entry.expr {
                        self.walk(&mut entry.key.expr);
                        self.walk(&mut entry.value.expr);
                    }
                }
            }
            Node::Select(select) if self.is_request_fhir(select) => {
                self.uses_fhir = true;
                *expr = Node::Ident(FHIR.to_owned());
            }
            Node::Select(select) => match &select.operand.expr {
                Node::Select(operand)
                    if self.is_request_fhir(operand)
                        && !fhir_val::FIELDS.contains(&select.field.as_str()) =>
                {
                    self.errors.push(format!(
                        "`request.fhir` has no field `{}` (fields: {}; functions: {})",
                        select.field,
                        fhir_val::FIELDS.join(", "),
                        fhir_val::METHODS.join(", ")
                    ));
                }
                Node::Ident(name)
                    if name == "request" && !self.bound.iter().any(|b| b == "request") =>
                {
                    match RequestFields::bit(&select.field) {
                        Some(bit) => self.request_fields.0 |= bit,
                        None => self.errors.push(format!(
                            "`request` has no field `{}` (fields: {}, fhir)",
                            select.field,
                            REQUEST_FIELDS.join(", ")
                        )),
                    }
                }
                Node::Ident(name)
                    if name == "graphql" && !self.bound.iter().any(|b| b == "graphql") =>
                {
                    match GraphqlFields::bit(&select.field) {
                        Some(bit) => self.graphql_fields.0 |= bit,
                        None => self.errors.push(format!(
                            "`graphql` has no field `{}` (fields: {})",
                            select.field,
                            GRAPHQL_FIELDS.join(", ")
                        )),
                    }
                }
                Node::Ident(name)
                    if name == "caller" && !self.bound.iter().any(|b| b == "caller") =>
                {
                    self.uses_caller = true;
                    if !self.caller_fields.contains(&select.field) {
                        self.caller_fields.push(select.field.clone());
                    }
                }
                _ => self.walk(&mut select.operand.expr),
            },
            Node::Struct(structure) => {
                for field in &mut structure.entries {
                    if let cel::common::ast::EntryExpr::StructField(field) = &mut field.expr {
                        self.walk(&mut field.value.expr);
                    }
                }
            }
            Node::Literal(_) | Node::Unspecified => {}
        }
    }

    /// `sources.NAME(arg?)` → `@source('NAME', arg)` (`{}` without an argument).
    fn source_call(&mut self, call: &mut cel::common::ast::CallExpr) {
        let id = call.target.as_ref().map_or(0, |t| t.id);
        let literal_keys = match call.args.first().map(|a| &a.expr) {
            Some(Node::Map(map)) => Some(
                map.entries
                    .iter()
                    .filter_map(|entry| match &entry.expr {
                        cel::common::ast::EntryExpr::MapEntry(entry) => match &entry.key.expr {
                            Node::Literal(LiteralValue::String(key)) => Some(key.to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect(),
            ),
            None => Some(Vec::new()),
            _ => None,
        };
        self.source_calls.push(SourceCall {
            name: call.func_name.clone(),
            arguments: call.args.len(),
            literal_keys,
        });
        let name = IdedExpr {
            id,
            expr: Node::Literal(LiteralValue::String(call.func_name.clone().into())),
        };
        if call.args.is_empty() {
            call.args.push(IdedExpr {
                id,
                expr: Node::Map(cel::common::ast::MapExpr {
                    entries: Vec::new(),
                }),
            });
        }
        call.target = None;
        if let Some(fields) = literal_fields(&call.args) {
            call.args = std::iter::once(name).chain(fields).collect();
            call.func_name = SOURCE_FIELDS.to_owned();
            return;
        }
        call.args.insert(0, name);
        call.func_name = SOURCE.to_owned();
    }

    /// `request.fhir`, with `request` the policy's (not a comprehension variable).
    fn is_request_fhir(&self, select: &cel::common::ast::SelectExpr) -> bool {
        select.field == "fhir"
            && !select.test
            && matches!(&select.operand.expr, Node::Ident(n) if n == "request")
            && !self.bound.iter().any(|b| b == "request")
    }

    /// `s.matches('lit')` or `matches(s, 'lit')` → `@sluis_matches(s, 'lit')`.
    fn precompile(&mut self, call: &mut cel::common::ast::CallExpr) {
        let pattern_index = if call.target.is_some() { 0 } else { 1 };
        let Some(Node::Literal(LiteralValue::String(pattern))) =
            call.args.get(pattern_index).map(|a| &a.expr)
        else {
            return;
        };
        let pattern = pattern.to_string();
        if let Err(e) = compiled_regex(&pattern) {
            self.errors.push(e);
            return;
        }
        if let Some(target) = call.target.take() {
            call.args.insert(0, *target);
        }
        call.func_name = COMPILED_MATCHES.to_owned();
    }
}

/// Regexes of policy literals, compiled once. A reload brings the new set's literals and
/// the old set's stay until evicted, so the cache is bounded (least recently used out):
/// an evicted pattern is only compiled again at its next use, never wrong.
static REGEXES: LazyLock<moka::sync::Cache<String, Arc<regex::Regex>>> =
    LazyLock::new(|| moka::sync::Cache::new(REGEX_CACHE_CAPACITY as u64));

/// Far above the literal patterns of any one policy set, so a live set's regexes stay
/// compiled; each is at most 1 MiB (`size_limit`), most a few KiB.
const REGEX_CACHE_CAPACITY: usize = 1024;

fn compiled_regex(pattern: &str) -> Result<Arc<regex::Regex>, String> {
    if let Some(re) = REGEXES.get(pattern) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(Arc::new)
        .map_err(|e| format!("invalid regular expression `{pattern}`: {e}"))?;
    REGEXES.insert(pattern.to_owned(), re.clone());
    Ok(re)
}

#[cfg(test)]
fn regex_cache_len() -> usize {
    // moka counts lazily: settle pending evictions first.
    REGEXES.run_pending_tasks();
    usize::try_from(REGEXES.entry_count()).unwrap_or(usize::MAX)
}

/// The functions Sluis adds to CEL's (see [`root_context`]).
const SLUIS_FUNCTIONS: [&str; 8] = [
    "matchesGlob",
    "containsAll",
    "containsAny",
    "permits",
    "covers",
    "permitting",
    "covering",
    "smartPermits",
];

/// CEL's standard functions, only to suggest a name for a misspelt one: whether a name
/// exists is asked of the cel crate itself ([`is_declared`]), so this list going stale
/// costs a suggestion, never a wrong verdict.
const CEL_FUNCTIONS: [&str; 30] = [
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "timestamp",
    "duration",
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "exists",
    "exists_one",
    "all",
    "map",
    "filter",
];

/// Operators (`_==_`, `!_`, `@in`, ...) are calls in the parsed tree; macros (`has`,
/// `exists`, ...) are expanded by the parser, and one left as a call was misused, which
/// evaluation reports better than "unknown function".
fn is_operator_or_macro(name: &str) -> bool {
    name.starts_with(['_', '@', '!', '-'])
        || matches!(
            name,
            "has" | "all" | "exists" | "exists_one" | "map" | "filter"
        )
}

/// Whether calling `name` (as a method when `member`) would find a function, asked of the
/// same root context requests are evaluated in: a call to `name` with no arguments fails
/// with "undeclared reference" exactly when neither CEL nor Sluis defines it (a defined
/// one fails on the missing arguments instead). The cel crate has no public list of its
/// functions; asking it keeps this check true to the version in use.
fn is_declared(name: &str, member: bool) -> bool {
    let source = if member {
        format!("null.{name}()")
    } else {
        format!("{name}()")
    };
    // A name the parser accepted in a call always parses here; if not, let evaluation
    // judge rather than refuse the policy.
    let Ok(program) = Program::compile(&source) else {
        return true;
    };
    ROOT.with(|root| {
        let root: &Context = root;
        let scope = root.new_inner_scope();
        !matches!(
            Value::resolve(program.expression(), &scope),
            Err(ExecutionError::UndeclaredReference(undeclared)) if undeclared.as_str() == name
        )
    })
}

/// The defined function closest to a misspelt `name`: the same ignoring case, else at
/// most two edits away.
fn nearest_function(name: &str, member: bool) -> Option<&'static str> {
    let known = || {
        SLUIS_FUNCTIONS
            .into_iter()
            .chain(CEL_FUNCTIONS)
            .filter(move |c| is_operator_or_macro(c) || is_declared(c, member))
    };
    if let Some(same) = known().find(|c| c.eq_ignore_ascii_case(name)) {
        return Some(same);
    }
    known()
        .map(|c| (strsim::damerau_levenshtein(c, name), c))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
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
        COMPILED_MATCHES,
        |text: Arc<String>, pattern: Arc<String>| -> Result<bool, ExecutionError> {
            compiled_regex(&pattern)
                .map(|re| re.is_match(&text))
                .map_err(|e| ExecutionError::function_error("matches", e))
        },
    );
    let _ = context.add_function("containsAll", |ftx: &FunctionContext| {
        membership(ftx, |list, other, has| {
            other.iter().all(|w| has(list, w.as_ref()))
        })
    });
    let _ = context.add_function("containsAny", |ftx: &FunctionContext| {
        membership(ftx, |list, other, has| {
            other.iter().any(|w| has(list, w.as_ref()))
        })
    });
    let _ = context.add_function("permits", |ftx: &FunctionContext| flow_allows(ftx, true));
    let _ = context.add_function("covers", |ftx: &FunctionContext| flow_allows(ftx, false));
    let permitting: RawFunction = Box::new(|ftx| flows_filter(ftx, true));
    let _ = context.add_function("permitting", permitting);
    let covering: RawFunction = Box::new(|ftx| flows_filter(ftx, false));
    let _ = context.add_function("covering", covering);
    let _ = context.add_function("smartPermits", smart_permits);
    let source: RawFunction = Box::new(source_call);
    let _ = context.add_function(SOURCE, source);
    let source_fields: RawFunction = Box::new(source_fields_call);
    let _ = context.add_function(SOURCE_FIELDS, source_fields);
    let param: RawFunction = Box::new(fhir_val::param);
    let _ = context.add_function("param", param);
    let _ = context.add_function("values", |ftx: &FunctionContext| fhir_val::values(ftx));
    let _ = context.add_function("hasOnly", |ftx: &FunctionContext| fhir_val::has_only(ftx));
    let _ = context.add_function("sameSet", |ftx: &FunctionContext| {
        membership(ftx, |list, other, has| {
            list.iter().all(|x| has(other, x.as_ref()))
                && other.iter().all(|x| has(list, x.as_ref()))
        })
    });
    let _ = context.add_function("fhirPrefix", |This(value): This<Arc<String>>| {
        fhir_val::split_prefix(&value).0.to_owned()
    });
    let _ = context.add_function("fhirUnprefixed", |This(value): This<Arc<String>>| {
        fhir_val::split_prefix(&value).1.to_owned()
    });
    context
}

/// The list functions (`containsAll`, `containsAny`, `sameSet`): `test` over the list
/// called on and the list given, with membership as CEL's `in` decides it, on the lists
/// as they are (converting both to `cel::Value` per call cost more than the test).
fn membership(
    ftx: &FunctionContext,
    test: impl Fn(
        &[Box<dyn Val + '_>],
        &[Box<dyn Val + '_>],
        &dyn Fn(&[Box<dyn Val + '_>], &dyn Val) -> bool,
    ) -> bool,
) -> Result<bool, ExecutionError> {
    use cel::common::types::CelList;
    let invalid = || {
        ExecutionError::function_error(
            ftx.name,
            format!("call it on a list with a list: ['a'].{}(['a'])", ftx.name),
        )
    };
    let list = ftx
        .this
        .as_ref()
        .and_then(|this| this.downcast_ref::<CelList>())
        .ok_or_else(invalid)?;
    let other = ftx
        .args
        .first()
        .and_then(|arg| arg.downcast_ref::<CelList>())
        .ok_or_else(invalid)?;
    let has = |items: &[Box<dyn Val + '_>], x: &dyn Val| items.iter().any(|i| i.equals(x));
    Ok(test(list.inner(), other.inner(), &has))
}

/// `@source('NAME', arg)`: the answer, as a handle on the source's one converted copy
/// (no conversion through `cel::Value`, either way).
fn source_call<'c, 'cl>(
    ftx: &mut FunctionContext<'c, 'cl>,
) -> Result<CowVal<'c, 'cl>, ExecutionError> {
    use cel::common::types::CelString;
    let (Some(name), Some(arg)) = (
        ftx.args
            .first()
            .and_then(|name| name.downcast_ref::<CelString>()),
        ftx.args.get(1),
    ) else {
        return Err(ExecutionError::function_error(
            "sources",
            "call a source as `sources.NAME(...)`",
        ));
    };
    crate::sources::call_current(name.inner(), arg.as_ref())
        .map(CowVal::owned)
        .map_err(|e| ExecutionError::function_error("sources", e))
}

/// `@source_fields('NAME', 'k', v, ...)`: `@source('NAME', {'k': v, ...})` without
/// building the map.
fn source_fields_call<'c, 'cl>(
    ftx: &mut FunctionContext<'c, 'cl>,
) -> Result<CowVal<'c, 'cl>, ExecutionError> {
    use cel::common::types::CelString;
    let invalid =
        || ExecutionError::function_error("sources", "call a source as `sources.NAME(...)`");
    let (name, rest) = ftx.args.split_first().ok_or_else(invalid)?;
    let name = name.downcast_ref::<CelString>().ok_or_else(invalid)?;
    let mut fields = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        let [field, value] = pair else {
            return Err(invalid());
        };
        let field = field.downcast_ref::<CelString>().ok_or_else(invalid)?;
        fields.push((field.inner(), value.as_ref()));
    }
    crate::sources::call_current_fields(name.inner(), &mut fields)
        .map(CowVal::owned)
        .map_err(|e| ExecutionError::function_error("sources", e))
}

/// `smartPermits(scopes, request, base)`: whether the SMART scopes permit the request
/// (anything with a `method`, `path` and optional `query_string`) below the FHIR base path.
fn smart_permits(
    scopes: Arc<Vec<Value>>,
    request: Value,
    base: Arc<String>,
) -> Result<bool, ExecutionError> {
    let invalid = |what: &str| ExecutionError::function_error("smartPermits", what);
    let Value::Map(request) = request else {
        return Err(invalid(
            "pass the request: smartPermits(token.scopes, request, '/fhir')",
        ));
    };
    let field = |name: &str| match request
        .map
        .get(&cel::objects::Key::String(Arc::new(name.to_owned())))
    {
        Some(Value::String(text)) => Ok(Some(text.clone())),
        None => Ok(None),
        Some(_) => Err(invalid(&format!("the request's `{name}` is not a string"))),
    };
    let method = field("method")?.ok_or_else(|| invalid("the request has no `method`"))?;
    let path = field("path")?.ok_or_else(|| invalid("the request has no `path`"))?;
    let query = field("query_string")?.unwrap_or_default();
    let scopes: Vec<&str> = scopes
        .iter()
        .filter_map(|scope| match scope {
            Value::String(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    Ok(super::smart::permits(
        &scopes, &method, &path, &query, &base,
    ))
}

/// `flow.permits(request)` (`with_method`) or `flow.covers(request)`: whether a resource
/// of the flow matches the request's path below the policy's base path, and allows its
/// method. The flow is an element of `flows`; the request anything with a `path` (and a
/// `method` for `permits`). Reads both in place, converting nothing.
fn flow_allows(ftx: &FunctionContext, with_method: bool) -> Result<bool, ExecutionError> {
    let flow = ftx
        .this
        .as_ref()
        .and_then(|this| this.downcast_ref::<flow_val::FlowVal>())
        .ok_or_else(|| {
            ExecutionError::function_error(
                ftx.name,
                "call it on an element of `flows`: f.permits(request)",
            )
        })?;
    with_request(ftx, with_method, |path, method| flow.allows(path, method))
}

/// `flows.permitting(request)` (`with_method`) or `flows.covering(request)`: the flows
/// of the list for which `permits`/`covers` holds, in one pass over the list. Rules
/// that ask several questions of the same request then scan the caller's flows once,
/// not once per rule: `flows.permitting(request).exists(f, ...)`.
fn flows_filter<'c, 'cl>(
    ftx: &mut FunctionContext<'c, 'cl>,
    with_method: bool,
) -> Result<CowVal<'c, 'cl>, ExecutionError> {
    use cel::common::types::CelList;
    let list = ftx
        .this
        .as_ref()
        .and_then(|this| this.downcast_ref::<CelList>())
        .ok_or_else(|| {
            ExecutionError::function_error(
                ftx.name,
                "call it on `flows`: flows.permitting(request)",
            )
        })?;
    let kept = with_request(ftx, with_method, |path, method| {
        let mut kept: Vec<Box<dyn Val>> = Vec::new();
        for item in list.inner() {
            let flow = item.downcast_ref::<flow_val::FlowVal>().ok_or_else(|| {
                ExecutionError::function_error(ftx.name, "the list holds something not a flow")
            })?;
            if flow.allows(path, method) {
                kept.push(Box::new(flow.clone()));
            }
        }
        Ok(kept)
    })??;
    Ok(CowVal::owned(CelList::from(kept)))
}

/// Calls `f` with the `path` and (`with_method`) the `method` of the function's first
/// argument, borrowed in place.
fn with_request<T>(
    ftx: &FunctionContext,
    with_method: bool,
    f: impl FnOnce(&str, Option<&str>) -> T,
) -> Result<T, ExecutionError> {
    use cel::common::types::CelString;
    let invalid = |what: &str| ExecutionError::function_error(ftx.name, what);
    let request = ftx
        .args
        .first()
        .and_then(|r| r.as_indexer())
        .ok_or_else(|| invalid("pass the request, e.g. f.permits(request)"))?;
    let path = request
        .get(&CelString::from("path"))
        .map_err(|_| invalid("the request has no `path`"))?;
    let path = path
        .downcast_ref::<CelString>()
        .ok_or_else(|| invalid("the request's `path` is not a string"))?
        .inner();
    if !with_method {
        return Ok(f(path, None));
    }
    let method = request
        .get(&CelString::from("method"))
        .map_err(|_| invalid("the request has no `method`"))?;
    let method = method
        .downcast_ref::<CelString>()
        .ok_or_else(|| invalid("the request's `method` is not a string"))?
        .inner();
    Ok(f(path, Some(method)))
}

/// A function that returns a CEL value of its own kind (a list of flows), which the
/// typed registration cannot express.
type RawFunction = Box<
    dyn for<'c, 'cl> Fn(&mut FunctionContext<'c, 'cl>) -> Result<CowVal<'c, 'cl>, ExecutionError>
        + Send
        + Sync,
>;

/// What a policy says about flows, as `Vars` needs it.
pub struct FlowSource<'a> {
    pub index: &'a FlowIndex,
    /// Evaluates to the caller's actor key: a string, or null for none.
    pub actor: &'a Expr,
    pub base_path: &'a Arc<str>,
    /// Only flows of these purposes; all when empty.
    pub purposes: &'a [String],
}

/// The variables of one request, built on first use.
pub struct Vars<'a> {
    request: &'a AccessRequest,
    certificate_header: Option<&'a crate::authn::settings::CertificateHeader>,
    fields: RequestFields,
    identity: Option<&'a Identity>,
    request_value: OnceLock<Box<dyn Val + 'a>>,
    source_value: OnceLock<Box<dyn Val>>,
    now_value: OnceLock<Box<dyn Val>>,
    flows: Option<FlowSource<'a>>,
    flows_value: OnceLock<Box<dyn Val>>,
    permitting_value: OnceLock<Box<dyn Val>>,
    covering_value: OnceLock<Box<dyn Val>>,
    data: Option<&'a Data>,
    /// The policy's `caller` block, and its identifiers once resolved.
    caller: Option<&'a super::caller::Caller>,
    caller_value: OnceLock<Box<dyn Val>>,
    /// `subject`, `action`, `resource`, `context` of an evaluation, in that order.
    evaluation_values: [OnceLock<Box<dyn Val>>; 4],
    /// The request's GraphQL operation, in a policy with a `graphql` block.
    graphql: Option<&'a GraphqlRequest>,
    graphql_fields: GraphqlFields,
    /// The template the request fits, set once the policy has matched it: before that,
    /// and for policies without templates, `graphql.template` is null.
    graphql_template: OnceLock<Arc<str>>,
    graphql_value: OnceLock<Box<dyn Val>>,
    /// The request read as FHIR, in a policy with a `fhir` block whose rules read it.
    fhir: Option<fhir_val::FhirVal>,
}

/// A policy's `data`, as a CEL value built once at load.
#[derive(Debug)]
pub struct Data(Box<dyn Val>);

impl Data {
    /// Checks and converts a policy's `data`: anything JSON can hold (map keys are
    /// strings or numbers).
    pub fn from_yaml(value: serde_yaml_ng::Value) -> Result<Data, String> {
        let json = serde_json::to_value(&value).map_err(|e| e.to_string())?;
        let value = cel::to_value(&json).map_err(|e| e.to_string())?;
        Ok(Data(to_val(value)))
    }
}

impl<'a> Vars<'a> {
    /// The variables of `request`, building only the `fields` of `request` given.
    pub fn new(
        request: &'a AccessRequest,
        identity: Option<&'a Identity>,
        fields: RequestFields,
    ) -> Vars<'a> {
        Vars {
            request,
            certificate_header: None,
            fields,
            identity,
            request_value: OnceLock::new(),
            source_value: OnceLock::new(),
            now_value: OnceLock::new(),
            flows: None,
            flows_value: OnceLock::new(),
            permitting_value: OnceLock::new(),
            covering_value: OnceLock::new(),
            data: None,
            caller: None,
            caller_value: OnceLock::new(),
            evaluation_values: Default::default(),
            graphql: None,
            graphql_fields: GraphqlFields::default(),
            graphql_template: OnceLock::new(),
            graphql_value: OnceLock::new(),
            fhir: None,
        }
    }

    /// The request read as FHIR; without it, `request.fhir` is null.
    pub fn with_fhir(mut self, fhir: Option<Arc<crate::fhir::ParsedRequest>>) -> Vars<'a> {
        self.fhir = fhir.map(fhir_val::FhirVal::new);
        self
    }

    /// The request's GraphQL operation, of which rules read `fields`; without it,
    /// `graphql` is null.
    pub fn with_graphql(
        mut self,
        graphql: Option<&'a GraphqlRequest>,
        fields: GraphqlFields,
    ) -> Vars<'a> {
        self.graphql = graphql;
        self.graphql_fields = fields;
        self
    }

    /// Names the template the request fits (`graphql.template`). Only before rules read
    /// `graphql`: the value is built once.
    pub fn set_graphql_template(&self, name: Arc<str>) {
        let _ = self.graphql_template.set(name);
    }

    /// The policy's `caller` block; without it, `caller` is an empty map.
    pub fn with_caller(mut self, caller: Option<&'a super::caller::Caller>) -> Vars<'a> {
        self.caller = caller;
        self
    }

    /// The policy's `data`; without it, `data` is null.
    pub fn with_data(mut self, data: Option<&'a Data>) -> Vars<'a> {
        self.data = data;
        self
    }

    /// Where `flows` comes from; without it, `flows` is an empty list.
    pub fn with_flows(mut self, flows: Option<FlowSource<'a>>) -> Vars<'a> {
        self.flows = flows;
        self
    }

    /// The caller's actor key and their active flows (of the policy's purposes), or why
    /// there are none.
    pub fn caller_flows(&self) -> Result<(Option<String>, Vec<Arc<IndexedFlow>>), String> {
        let Some(source) = &self.flows else {
            return Ok((None, Vec::new()));
        };
        let actor = source.actor.eval_text(self)?;
        let Some(actor) = actor.filter(|a| !a.is_empty()) else {
            return Ok((None, Vec::new()));
        };
        let mut flows = source.index.active(&actor, chrono::Utc::now().timestamp());
        if !source.purposes.is_empty() {
            flows.retain(|f| source.purposes.iter().any(|p| **p == *f.purpose));
        }
        Ok((Some(actor), flows))
    }
}

impl<'a> Vars<'a> {
    /// Also look for the client certificate in this configured header.
    pub fn with_certificate_header(
        mut self,
        header: Option<&'a crate::authn::settings::CertificateHeader>,
    ) -> Vars<'a> {
        self.certificate_header = header;
        self
    }
}

impl Vars<'_> {
    /// The caller's flows that permit (`with_method`) or cover this request, as
    /// `flows.permitting(request)` / `flows.covering(request)` give them.
    fn flows_allowing(&self, with_method: bool) -> Box<dyn Val> {
        use cel::common::types::CelList;
        use cel::context::VariableResolver;
        let Some(flows) = self.resolve("flows") else {
            return Box::new(cel::common::types::CelNull);
        };
        let Some(list) = flows.downcast_ref::<CelList>() else {
            // The actor expression failed: `flows` is null, and so is this: closed.
            return Box::new(cel::common::types::CelNull);
        };
        let method = with_method.then_some(self.request.method.as_str());
        let kept: Vec<Box<dyn Val>> = list
            .inner()
            .iter()
            .filter_map(|item| item.downcast_ref::<flow_val::FlowVal>())
            .filter(|flow| flow.allows(&self.request.path, method))
            .map(|flow| Box::new(flow.clone()) as Box<dyn Val>)
            .collect();
        Box::new(CelList::from(kept))
    }
}

impl Vars<'_> {
    /// `caller`: the identity's value for this policy's `caller` block where the identity
    /// holds it, else built for this request. The first block asked about an identity is
    /// kept with it, unless its identifiers conflict (so a conflict is still resolved, and
    /// logged, on every request, as before).
    fn caller(&self) -> &dyn Val {
        let (Some(caller), Some(identity)) = (self.caller, self.identity) else {
            return &**self
                .caller_value
                .get_or_init(|| caller_val(self.caller, self.identity).0);
        };
        if identity.caller_value.get().is_none() {
            let (value, conflict) = caller_val(Some(caller), Some(identity));
            if conflict {
                return &**self.caller_value.get_or_init(|| value);
            }
            let _ = identity.caller_value.set((caller.id(), value));
        }
        match identity.caller_value.get() {
            Some((id, value)) if *id == caller.id() => &**value,
            _ => &**self
                .caller_value
                .get_or_init(|| caller_val(Some(caller), Some(identity)).0),
        }
    }
}

/// A dotted name (`request.context.patient_bsn`) answered whole, as the value its
/// first segment's resolver lends, selected field by field.
///
/// The interpreter asks a resolver for the whole name first (cel-go's rule: the most
/// specific name wins), and only on `None` for each shorter prefix, then for each CEL type
/// of that name, then selects the rest field by field. Answering the whole name here
/// skips those look-ups and selections, and the names [`Names`] wrote as one are asked
/// only this way. Where a step is missing or not a container, the answer is `None`: the
/// interpreter's way fails there too (`Expr::run` then gives its error).
fn resolve_path<'b>(
    resolver: &'b dyn cel::context::VariableResolver,
    name: &str,
) -> Option<CowVal<'b, 'b>> {
    let (root, rest) = name.split_once('.')?;
    let mut value = resolver.resolve(root)?;
    for field in rest.split('.') {
        let key: cel::common::types::CelString = field.into();
        value = match value {
            CowVal::Borrowed(value) => value.as_indexer()?.get(&key).ok()?,
            CowVal::Owned(value) => CowVal::Owned(value.as_indexer()?.get(&key).ok()?.into_owned()),
        };
    }
    Some(value)
}

impl cel::context::VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if variable.contains('.') {
            return resolve_path(self, variable);
        }
        let value: &dyn Val = match variable {
            "request" => &**self
                .request_value
                .get_or_init(|| request_val(self.request, self.fields)),
            "token" => match self.identity {
                Some(identity) => identity_val(identity),
                None => return Some(CowVal::Owned(Box::new(cel::common::types::CelNull))),
            },
            "source" => &**self
                .source_value
                .get_or_init(|| to_val(source_value(self.request, self.certificate_header))),
            "now" => &**self.now_value.get_or_init(|| to_val(now_value())),
            FLOWS_PERMITTING => &**self
                .permitting_value
                .get_or_init(|| self.flows_allowing(true)),
            FLOWS_COVERING => &**self
                .covering_value
                .get_or_init(|| self.flows_allowing(false)),
            "flows" => &**self.flows_value.get_or_init(|| {
                // An actor expression that fails leaves `flows` unresolved, which fails
                // the rule: closed.
                match self.caller_flows() {
                    Ok((Some(actor), flows)) => {
                        let base = self.flows.as_ref().map(|f| f.base_path.clone());
                        flow_val::flows_val(&actor, base.unwrap_or_else(|| Arc::from("")), flows)
                    }
                    Ok((None, _)) => flow_val::flows_val("", Arc::from(""), Vec::new()),
                    Err(_) => Box::new(cel::common::types::CelNull),
                }
            }),
            "graphql" => match self.graphql {
                Some(graphql) => &**self.graphql_value.get_or_init(|| {
                    to_val(graphql_value(
                        graphql,
                        self.graphql_template.get().map(|t| &**t),
                        self.graphql_fields,
                    ))
                }),
                None => return Some(CowVal::Owned(Box::new(cel::common::types::CelNull))),
            },
            FHIR => match &self.fhir {
                Some(fhir) => fhir,
                None => return Some(CowVal::Owned(Box::new(cel::common::types::CelNull))),
            },
            "caller" => self.caller(),
            "data" => match self.data {
                Some(data) => &*data.0,
                None => return Some(CowVal::Owned(Box::new(cel::common::types::CelNull))),
            },
            "subject" | "action" | "resource" | "context" => {
                let Some(evaluation) = &self.request.evaluation else {
                    return Some(CowVal::Owned(Box::new(cel::common::types::CelNull)));
                };
                let (slot, part) = match variable {
                    "subject" => (0, &evaluation.subject),
                    "action" => (1, &evaluation.action),
                    "resource" => (2, &evaluation.resource),
                    _ => (3, &evaluation.context),
                };
                let cell = self.evaluation_values.get(slot)?;
                &**cell.get_or_init(|| to_val(json(part)))
            }
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

/// A request's variables plus one entry of its answer.
struct EntryScope<'v, 'a, 't> {
    vars: &'v Vars<'a>,
    entry: &'v entry_val::EntryValue<'t>,
    response: &'v dyn Val,
}

impl cel::context::VariableResolver for EntryScope<'_, '_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if variable.contains('.') {
            return resolve_path(self, variable);
        }
        match variable {
            "entry" => Some(CowVal::Borrowed(self.entry.val())),
            "response" => Some(CowVal::Borrowed(self.response)),
            other => self.vars.resolve(other),
        }
    }
}

/// A JSON value as CEL sees it (entries of an upstream answer).
pub fn json_val(value: &serde_json::Value) -> Box<dyn Val> {
    to_val(json(value))
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

/// Members of a map as the interpreter holds them.
type Members<'a> = std::collections::HashMap<cel::common::types::CelMapKey<'a>, Box<dyn Val + 'a>>;

/// `request`: the `fields` of it a policy reads, built straight as the interpreter's values
/// with their strings borrowed from the request. (Built as a `cel::Value` and converted,
/// every map was built twice, each name hashed twice, and every string copied twice.)
/// [`request_value`] is the same through `cel::Value`, kept as the tests' reference.
fn request_val<'a>(request: &'a AccessRequest, fields: RequestFields) -> Box<dyn Val + 'a> {
    use cel::common::types::{CelList, CelMap, CelMapKey, CelString};
    fn text(s: &str) -> Box<dyn Val + '_> {
        Box::new(CelString::from(s))
    }
    fn strings<'m>(pairs: impl Iterator<Item = (&'m str, &'m str)>) -> Box<dyn Val + 'm> {
        Box::new(CelMap::from(
            pairs
                .map(|(k, v)| (CelMapKey::from(k), text(v)))
                .collect::<Members>(),
        ))
    }
    let mut members = Members::with_capacity(4);
    let mut add = |name: &'static str, value: &dyn Fn() -> Box<dyn Val + 'a>| {
        if fields.has(name) {
            members.insert(CelMapKey::from(name), value());
        }
    };
    add("method", &|| text(&request.method));
    add("scheme", &|| text(&request.scheme));
    add("host", &|| text(&request.host));
    add("path", &|| text(&request.path));
    add("query_string", &|| text(&request.query));
    add("protocol", &|| text(&request.protocol));
    add("body", &|| text(&request.body));
    add("segments", &|| {
        Box::new(CelList::from(
            request
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(text)
                .collect::<Vec<_>>(),
        ))
    });
    add("context", &|| {
        strings(
            request
                .context
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    });
    add("query", &|| {
        let mut query = Members::new();
        for (key, value) in request.query_pairs() {
            query
                .entry(CelMapKey::from(key))
                .or_insert_with(|| Box::new(CelString::from(value)));
        }
        Box::new(CelMap::from(query))
    });
    add("headers", &|| strings(request.headers.iter()));
    Box::new(CelMap::from(members))
}

#[cfg(test)]
fn request_value(request: &AccessRequest, fields: RequestFields) -> Value {
    let mut entries = Vec::with_capacity(4);
    let mut add = |name: &'static str, value: &dyn Fn() -> Value| {
        if fields.has(name) {
            entries.push((name, value()));
        }
    };
    add("method", &|| text(&request.method));
    add("scheme", &|| text(&request.scheme));
    add("host", &|| text(&request.host));
    add("path", &|| text(&request.path));
    add("query_string", &|| text(&request.query));
    add("protocol", &|| text(&request.protocol));
    add("body", &|| text(&request.body));
    add("segments", &|| {
        Value::List(Arc::new(
            request
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(text)
                .collect(),
        ))
    });
    add("context", &|| {
        let context: std::collections::HashMap<cel::objects::Key, Value> = request
            .context
            .iter()
            .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.to_owned())), text(v)))
            .collect();
        Value::Map(cel::objects::Map {
            map: Arc::new(context),
        })
    });
    add("query", &|| {
        let mut query = std::collections::HashMap::new();
        for (key, value) in request.query_pairs() {
            query
                .entry(cel::objects::Key::String(Arc::new(key)))
                .or_insert_with(|| Value::String(Arc::new(value)));
        }
        Value::Map(cel::objects::Map {
            map: Arc::new(query),
        })
    });
    add("headers", &|| {
        let headers: std::collections::HashMap<cel::objects::Key, Value> = request
            .headers
            .iter()
            .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.to_owned())), text(v)))
            .collect();
        Value::Map(cel::objects::Map {
            map: Arc::new(headers),
        })
    });
    map(entries)
}

/// `source`: the peer address and its client certificate as an object (subject,
/// issuer, SANs, thumbprint, ...), or null without one. A certificate that does not parse
/// is null too: a policy that needs one denies.
fn source_value(
    request: &AccessRequest,
    header: Option<&crate::authn::settings::CertificateHeader>,
) -> Value {
    let certificate = match crate::authn::client_certificate(request, header) {
        Ok(Some(certificate)) => json(&certificate.to_json()),
        _ => Value::Null,
    };
    map(vec![
        ("address", text(&request.source.address)),
        ("certificate", certificate),
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

/// `graphql`: `operation` (`query`, ...), `name` (or null), `root_fields`, `fields` (every
/// field path, `wlzIndicatie.grondslag.grondslagID`: names, not aliases), `arguments`
/// (field path → a list with the arguments of each selection of it that has any;
/// variables as `{"$variable": "name"}`), `variables` (as sent) and `template` (the one
/// the request fits, or null). Only the `fields` asked for are built.
pub fn graphql_value(
    request: &GraphqlRequest,
    template: Option<&str>,
    fields: GraphqlFields,
) -> Value {
    let strings = |items: Vec<&str>| Value::List(Arc::new(items.into_iter().map(text).collect()));
    let mut entries = Vec::with_capacity(2);
    if fields.has("operation") {
        entries.push(("operation", text(request.operation.as_str())));
    }
    if fields.has("name") {
        entries.push(("name", opt_text(request.name.as_deref())));
    }
    if fields.has("root_fields") {
        entries.push(("root_fields", strings(request.root_fields())));
    }
    if fields.has("fields") {
        let paths = request.paths();
        entries.push((
            "fields",
            strings(paths.iter().map(String::as_str).collect()),
        ));
    }
    if fields.has("arguments") {
        let mut arguments = serde_json::Map::new();
        fn walk(
            fields: &[crate::graphql::Field],
            prefix: &str,
            out: &mut serde_json::Map<String, serde_json::Value>,
        ) {
            for field in fields {
                let path = if prefix.is_empty() {
                    field.name.clone()
                } else {
                    format!("{prefix}.{}", field.name)
                };
                if !field.arguments.is_empty() {
                    let given: serde_json::Map<String, serde_json::Value> = field
                        .arguments
                        .iter()
                        .map(|(name, value)| (name.clone(), value.to_json()))
                        .collect();
                    if let serde_json::Value::Array(list) = out
                        .entry(path.clone())
                        .or_insert_with(|| serde_json::Value::Array(Vec::new()))
                    {
                        list.push(serde_json::Value::Object(given));
                    }
                }
                walk(&field.selection, &path, out);
            }
        }
        walk(&request.fields, "", &mut arguments);
        entries.push(("arguments", json(&serde_json::Value::Object(arguments))));
    }
    if fields.has("variables") {
        entries.push((
            "variables",
            json(&serde_json::Value::Object(request.variables.clone())),
        ));
    }
    if fields.has("template") {
        entries.push(("template", opt_text(template)));
    }
    map(entries)
}

/// `caller`: each identifier of the policy's `caller` block, a string or null. A
/// conflicting identifier is left out, so reading it fails (closed).
fn caller_val(
    caller: Option<&super::caller::Caller>,
    identity: Option<&Identity>,
) -> (Box<dyn Val>, bool) {
    use super::caller::Found;
    use cel::common::types::{CelMap, CelMapKey, CelNull, CelString};
    let Some(caller) = caller else {
        return (Box::new(CelMap::from(Members::new())), false);
    };
    let mut conflict = false;
    let members = caller
        .resolve(identity)
        .into_iter()
        .filter_map(|(name, found)| {
            let value: Box<dyn Val> = match found {
                Found::Nothing => Box::new(CelNull),
                Found::Value(value) => Box::new(CelString::from(value)),
                Found::Conflict(_) => {
                    conflict = true;
                    return None;
                }
            };
            Some((CelMapKey::from(name.to_owned()), value))
        })
        .collect::<Members>();
    (Box::new(CelMap::from(members)), conflict)
}

/// [`caller_val`] through `cel::Value`, the tests' reference.
#[cfg(test)]
fn caller_value(caller: Option<&super::caller::Caller>, identity: Option<&Identity>) -> Value {
    use super::caller::Found;
    let Some(caller) = caller else {
        return map(Vec::new());
    };
    let entries = caller
        .resolve(identity)
        .into_iter()
        .filter_map(|(name, found)| match found {
            Found::Nothing => Some((name, Value::Null)),
            Found::Value(value) => Some((name, Value::String(Arc::new(value)))),
            Found::Conflict(_) => None,
        })
        .collect();
    map(entries)
}

fn now_value() -> Value {
    let now = chrono::Utc::now().fixed_offset();
    Value::Timestamp(now)
}

impl From<ExecutionError> for ExprError {
    fn from(e: ExecutionError) -> Self {
        ExprError {
            kind: DiagnosticKind::CelInvalid,
            position: None,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod source_tests;

#[cfg(test)]
mod vars_tests;

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
        expr.eval(&Vars::new(&request, None, expr.request_fields))
    }

    /// The direct read of a plain field gives what the interpreter gives.
    #[test]
    fn field_reads_agree_with_cel() {
        let request = request();
        let identity = identity();
        for source in [
            "token.issuer",
            "token.iss",
            "token.sub",
            "token.client_id",
            "request.method",
            "request.path",
            "request.host",
            "request.scheme",
            "request.protocol",
            "request.body",
        ] {
            let direct = Expr::compile(source).unwrap();
            assert!(
                matches!(direct.fast, Some(Fast::Field(_))),
                "{source} is read directly"
            );
            let mut interpreted = Expr::compile(source).unwrap();
            interpreted.fast = None;
            for identity in [Some(&identity), None] {
                let vars = Vars::new(&request, identity, RequestFields::ALL);
                let (a, b) = (direct.eval(&vars), interpreted.eval(&vars));
                assert_eq!(a.is_ok(), b.is_ok(), "{source}: {a:?} vs {b:?}");
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(a, b, "{source}");
                }
            }
        }
        for source in ["token.claims", "has(token.sub)", "token.sub + 'x'", "flows"] {
            assert!(Expr::compile(source).unwrap().fast.is_none(), "{source}");
        }
    }

    proptest::proptest! {
        /// The list functions answer as sets of their items do.
        #[test]
        fn list_functions_are_set_tests(
            list in proptest::collection::vec("[abc]", 0..5),
            other in proptest::collection::vec("[abc]", 0..5),
        ) {
            use std::collections::BTreeSet;
            let quoted = |items: &[String]| {
                let items: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
                format!("[{}]", items.join(", "))
            };
            let (a, b) = (quoted(&list), quoted(&other));
            let (set_a, set_b): (BTreeSet<_>, BTreeSet<_>) =
                (list.iter().collect(), other.iter().collect());
            for (function, expected) in [
                ("containsAll", set_b.is_subset(&set_a)),
                ("containsAny", !set_a.is_disjoint(&set_b)),
                ("sameSet", set_a == set_b),
            ] {
                proptest::prop_assert_eq!(
                    eval(&format!("{a}.{function}({b})")),
                    Ok(Value::Bool(expected)),
                    "{}.{}({})", a, function, b
                );
            }
        }
    }

    /// A dotted name answered whole by the resolver (`resolve_path`) gives what the
    /// interpreter gives when it resolves the first segment and selects the rest: the same
    /// value, or the same error, for present and missing members, presence tests,
    /// comprehension variables that shadow a variable, and `request.fhir`.
    #[test]
    fn dotted_names_answered_whole_agree_with_the_interpreter() {
        struct Segmentwise<'v, 'a>(&'v Vars<'a>);
        impl cel::context::VariableResolver for Segmentwise<'_, '_> {
            fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
                if variable.contains('.') {
                    None
                } else {
                    self.0.resolve(variable)
                }
            }
        }
        let mut request = request();
        request.set_target("/fhir/Observation/$lastn?patient=Patient/p1&category=a,b");
        request.context = [("patient_bsn", "900186021"), ("n", "m")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut identity = identity();
        identity.claims = serde_json::json!({"subject_role": "01.015", "deep": {"x": [1, 2]}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let fhir = crate::fhir::parse(
            &request,
            "/fhir",
            crate::fhir::FhirVersion::R4,
            &crate::fhir::FhirLimits::default(),
        )
        .map(Arc::new)
        .ok();
        assert!(fhir.is_some());
        let data = Data::from_yaml(
            serde_yaml_ng::from_str("{sct: 'http://snomed.info/sct|', nested: {a: {b: 2}}}")
                .unwrap(),
        )
        .unwrap();
        for source in [
            "request.context.patient_bsn",
            "request.context.n",
            "request.context.n.m",
            "request.context.missing",
            "request.context.patient_bsn.deeper",
            "has(request.context.patient_bsn)",
            "has(request.context.missing)",
            "has(request.context.n)",
            "request.headers['x-request-id']",
            "request.method.size()",
            "token.claims.subject_role",
            "token.claims.deep.x[1]",
            "token.claims.deep.missing",
            "token.sub",
            "data.sct + 'x'",
            "data.nested.a.b",
            "data.nested.a.c",
            "data.sct.nope",
            "request.fhir.type",
            "request.fhir.operation",
            "request.fhir.patient.id",
            "request.fhir.patient.bsn",
            "request.fhir.param('category')",
            "request.fhir.include.size()",
            "[{'context': 1}].exists(request, request.context == 1)",
            "[{'n': {'m': 7}}].map(data, data.n.m)",
            "request.fhir.type == 'Observation' && request.fhir.operation == 'lastn'",
        ] {
            let mut expr = Expr::compile(source).unwrap_or_else(|e| panic!("{source}: {e:?}"));
            // Through the interpreter both ways (a direct field read has its own test).
            expr.fast = None;
            for identity in [Some(&identity), None] {
                let vars = Vars::new(&request, identity, RequestFields::ALL)
                    .with_fhir(fhir.clone())
                    .with_data(Some(&data));
                let whole = expr.eval(&vars);
                let resolver = Segmentwise(&vars);
                let segmentwise = ROOT.with(|root| {
                    let root: &Context = root;
                    let mut scope = root.new_inner_scope();
                    scope.set_variable_resolver(&resolver);
                    Value::resolve(&expr.tree, &scope)
                        .map_err(|e| format!("`{}`: {e}", expr.source))
                });
                assert_eq!(whole, segmentwise, "{source}");
            }
        }
        // ... and the whole names are answered by the resolver, not by the fallback.
        use cel::context::VariableResolver;
        let vars = Vars::new(&request, Some(&identity), RequestFields::ALL)
            .with_fhir(fhir)
            .with_data(Some(&data));
        for name in [
            "request.context.patient_bsn",
            "token.claims.deep.x",
            "data.nested.a.b",
            "@fhir.patient.id",
        ] {
            assert!(vars.resolve(name).is_some(), "{name}");
        }
        assert!(vars.resolve("request.context.missing").is_none());
    }

    /// `graphql.template` read directly gives what the interpreter gives: with and without
    /// a template, and an error where the policy reads no GraphQL.
    #[test]
    fn the_graphql_template_read_agrees_with_cel() {
        let mut graphql_request = request();
        graphql_request.method = "POST".into();
        graphql_request
            .headers
            .insert("content-type".into(), "application/json".into());
        graphql_request.body = r#"{"query": "{ a { b } }"}"#.into();
        let parsed =
            crate::graphql::read(&graphql_request, &crate::graphql::Limits::default(), None)
                .unwrap();
        for source in [
            "graphql.template",
            "graphql.template == 'T'",
            "graphql.template != 'T'",
        ] {
            let direct = Expr::compile(source).unwrap();
            assert!(direct.fast.is_some(), "{source} is read directly");
            let mut interpreted = Expr::compile(source).unwrap();
            interpreted.fast = None;
            for (graphql, template) in [
                (Some(&parsed), Some("T")),
                (Some(&parsed), None),
                (None, None),
            ] {
                let vars = Vars::new(&graphql_request, None, RequestFields::ALL)
                    .with_graphql(graphql, direct.graphql_fields);
                if let Some(template) = template {
                    vars.set_graphql_template(Arc::from(template));
                }
                let (a, b) = (direct.eval(&vars), interpreted.eval(&vars));
                assert_eq!(a.is_ok(), b.is_ok(), "{source}: {a:?} vs {b:?}");
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(a, b, "{source} with {template:?}");
                }
            }
        }
        let fields =
            Expr::compile("graphql.fields.exists(f, f == 'a.b') && graphql.name == null").unwrap();
        let vars = Vars::new(&graphql_request, None, RequestFields::ALL)
            .with_graphql(Some(&parsed), fields.graphql_fields);
        assert_eq!(fields.eval(&vars), Ok(Value::Bool(true)));
        let err = Expr::compile("graphql.tempalte == 'T'").unwrap_err();
        assert!(
            err.message.contains("`graphql` has no field `tempalte`"),
            "{err:?}"
        );
    }

    /// Every shape evaluated without the interpreter gives what the interpreter gives,
    /// including on values of other types (where it must fall back to it).
    #[test]
    fn fast_shapes_agree_with_cel() {
        let request = request();
        let list = Data::from_yaml(serde_yaml_ng::from_str("[1, 2]").unwrap()).unwrap();
        let empty = Data::from_yaml(serde_yaml_ng::from_str("[]").unwrap()).unwrap();
        let map = Data::from_yaml(serde_yaml_ng::from_str("{a: 1}").unwrap()).unwrap();
        let sources = [
            "true",
            "false",
            "!true",
            "flows.size() == 0",
            "size(flows) == 0",
            "flows.size() != 0",
            "flows.size() > 0",
            "!(flows.size() == 0)",
            "data.size() == 0",
            "data.size() > 0",
            "!(data.size() == 0)",
            "request.method == 'GET'",
            "request.method != 'GET'",
            "'POST' == request.method",
            "request.path != '/nowhere'",
            "token.sub == 's-1'",
            "token.client_id == 'c'",
            "token.client_id != 'c'",
            "!(request.method == 'GET')",
        ];
        for source in sources {
            let direct = Expr::compile(source).unwrap();
            assert!(direct.fast.is_some(), "{source} is evaluated directly");
            let mut interpreted = Expr::compile(source).unwrap();
            interpreted.fast = None;
            for identity in [Some(identity()), None] {
                for data in [None, Some(&list), Some(&empty), Some(&map)] {
                    let vars =
                        Vars::new(&request, identity.as_ref(), RequestFields::ALL).with_data(data);
                    let (a, b) = (direct.eval(&vars), interpreted.eval(&vars));
                    assert_eq!(a.is_ok(), b.is_ok(), "{source}: {a:?} vs {b:?}");
                    if let (Ok(a), Ok(b)) = (a, b) {
                        assert_eq!(a, b, "{source} with {data:?}");
                    }
                }
            }
        }
        for source in ["flows.size() == 1", "request.method == 1", "!request.path"] {
            assert!(Expr::compile(source).unwrap().fast.is_none(), "{source}");
        }
    }

    /// `exists`/`all` over the caller's flows, evaluated on the flows directly, gives
    /// what CEL's comprehension gives: with and without a token, flows with and without
    /// scopes, patients and matching resources, and on lists that hold no flows (where
    /// the interpreter decides).
    #[test]
    fn flow_quantifiers_agree_with_cel() {
        let flow = |id: &str, scopes: &[&str], patient: Option<&str>, operation: &str| {
            crate::flows::Flow::from_json(serde_json::json!({
                "id": id, "purpose": "eOverdracht", "actor": "did:a", "custodian": "did:c",
                "patient": patient,
                "resources": [{"path": "Patient/123", "operations": [operation]}],
                "scopes": scopes,
            }))
            .unwrap()
        };
        let flows = [
            flow("t1", &["a", "b"], None, "read"),
            flow("t2", &[], Some("p-1"), "read"),
            flow("t3", &["c"], Some("p-2"), "update"),
        ];
        let flow_sets: Vec<Vec<&crate::flows::Flow>> = vec![
            vec![],
            vec![&flows[0]],
            vec![&flows[1]],
            vec![&flows[2]],
            flows.iter().collect(),
        ];
        let sources = [
            "!flows.permitting(request).exists(f, \
              f.scopes.size() == 0 || token.scopes.containsAny(f.scopes))",
            "flows.permitting(request).exists(f, token.scopes.containsAny(f.scopes))",
            "flows.covering(request).all(f, size(f.scopes) > 0 && token.scopes.containsAll(f.scopes))",
            "flows.exists(f, f.scopes.size() != 0 && !token.scopes.containsAny(f.scopes))",
            "flows.exists(f, 'b' in f.scopes || 'x' in token.scopes)",
            "flows.all(f, f.patient == 'p-1' || f.id != 't3')",
            "flows.exists(f, f.purpose == 'eOverdracht' && f.actor == 'did:a' \
              && f.custodian != 'did:x' && 'p-2' == f.patient)",
            "flows.exists(f, f.id == token.sub || token.client_id == 'c')",
            "flows.exists(f, f.patient == token.client_id)",
            "flows.exists(f, f.scopes.containsAny(token.aud))",
            "flows.exists(token, token.scopes.size() == 0)",
            "data.exists(f, f.scopes.size() == 0)",
            "data.all(f, f.scopes.size() == 0)",
        ];
        let data = Data::from_yaml(serde_yaml_ng::from_str("[1, 2]").unwrap()).unwrap();
        let empty = Data::from_yaml(serde_yaml_ng::from_str("[]").unwrap()).unwrap();
        let mut scoped = identity();
        scoped.scopes = vec!["b".into(), "x".into()];
        scoped.aud = vec!["c".into()];
        let mut unscoped = identity();
        unscoped.client_id = Some("c".into());
        let actor = Expr::compile("'did:a'").unwrap();
        let base: Arc<str> = Arc::from("/fhir");
        let request = request();
        for source in sources {
            let direct = Expr::compile(source).unwrap();
            assert!(direct.fast.is_some(), "{source} is evaluated directly");
            let mut interpreted = Expr::compile(source).unwrap();
            interpreted.fast = None;
            for set in &flow_sets {
                let index = FlowIndex::from_flows(set.iter().copied());
                for identity in [Some(&scoped), Some(&unscoped), None] {
                    for data in [None, Some(&data), Some(&empty)] {
                        let vars = || {
                            Vars::new(&request, identity, RequestFields::ALL)
                                .with_data(data)
                                .with_flows(Some(FlowSource {
                                    index: &index,
                                    actor: &actor,
                                    base_path: &base,
                                    purposes: &[],
                                }))
                        };
                        let (a, b) = (direct.eval(&vars()), interpreted.eval(&vars()));
                        assert_eq!(a.is_ok(), b.is_ok(), "{source}: {a:?} vs {b:?}");
                        if let (Ok(a), Ok(b)) = (a, b) {
                            assert_eq!(a, b, "{source} with {} flows", set.len());
                        }
                    }
                }
            }
        }
        for source in [
            "flows.exists(f, f.permits(request))",
            "flows.exists_one(f, f.scopes.size() == 0)",
            "flows.exists(f, f.scopes.size() == 1)",
            "flows.exists(f, f.attributes.x == 'y')",
            "[1].exists(f, f.scopes.size() == 0)",
            "flows.map(f, f.id).exists(i, i == 'x')",
            "flows.exists(f, g.scopes.size() == 0)",
        ] {
            let compiled = Expr::compile(source);
            assert!(
                compiled.is_err() || compiled.is_ok_and(|e| e.fast.is_none()),
                "{source}"
            );
        }
    }

    fn identity() -> Identity {
        Identity::for_tests("nuts", "https://idp", Some("s-1"))
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
        assert_eq!(eval("['a','b'].containsAny(['c'])"), Ok(Value::Bool(false)));
        assert_eq!(eval("[].containsAny([])"), Ok(Value::Bool(false)));
        assert_eq!(eval("[].containsAll([])"), Ok(Value::Bool(true)));
        assert_eq!(
            eval("['a','b'].sameSet(['b','a','a'])"),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("['a','b'].sameSet(['a'])"), Ok(Value::Bool(false)));
        assert_eq!(eval("['a'].sameSet(['a','c'])"), Ok(Value::Bool(false)));
        assert_eq!(
            eval("[[1, 2], 3].containsAll([[1, 2]])"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("[{'a': 1}].sameSet([{'a': 1}])"),
            Ok(Value::Bool(true))
        );
        // membership as `in` decides it
        assert_eq!(
            eval("[1, 2].containsAll([2]) == (2 in [1, 2])"),
            Ok(Value::Bool(true))
        );
        for source in [
            "'a'.containsAll(['a'])",
            "['a'].sameSet('a')",
            "[].containsAny()",
        ] {
            assert!(eval(source).is_err(), "{source}");
        }
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
    fn literal_regexes_are_compiled_at_load() {
        assert_eq!(
            eval("request.path.matches('^/fhir/Patient/[0-9]+$')"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("matches(request.path, '^/fhir/Task')"),
            Ok(Value::Bool(false))
        );
        // A dynamic pattern still works, through CEL's own `matches`.
        assert_eq!(
            eval("request.path.matches('^/' + 'fhir')"),
            Ok(Value::Bool(true))
        );
        let err = Expr::compile("request.path.matches('(unclosed')").unwrap_err();
        assert!(
            err.message.contains("invalid regular expression"),
            "{err:?}"
        );
    }

    #[test]
    fn the_regex_cache_is_bounded_across_reloads() {
        // Each reload may bring new literal patterns; the cache must not keep them all.
        for i in 0..REGEX_CACHE_CAPACITY + 200 {
            let expr = format!("request.path.matches('^/bounded-{i}/[a-z]+$')");
            Expr::compile(&expr).unwrap();
        }
        let held = regex_cache_len();
        assert!(held <= REGEX_CACHE_CAPACITY, "{held} regexes held");
        // An evicted pattern is compiled again when a policy evaluates it.
        assert_eq!(
            eval("request.path.matches('^/bounded-0/[a-z]+$')"),
            Ok(Value::Bool(false))
        );
    }

    #[test]
    fn only_read_request_fields_are_known_and_built() {
        let expr = Expr::compile("request.method == 'GET' && request.headers.size() > 0").unwrap();
        assert!(expr.request_fields.has("method") && expr.request_fields.has("headers"));
        assert!(!expr.request_fields.has("query"));
        let err = Expr::compile("request.paht == '/'").unwrap_err();
        assert!(
            err.message.contains("`request` has no field `paht`"),
            "{err:?}"
        );
        // A comprehension variable named `request` is not the request.
        assert!(Expr::compile("[{'x': 1}].exists(request, request.x == 1)").is_ok());
        assert_eq!(
            Expr::compile("size(request) > 0").unwrap().request_fields,
            RequestFields::ALL
        );
    }

    #[test]
    fn explain_shows_the_parts_and_their_values() {
        let expr = Expr::compile(
            "request.method in ['GET', 'HEAD'] && !request.path.startsWith('/admin')",
        )
        .unwrap();
        let request = request();
        let parts = expr.explain(&Vars::new(&request, None, expr.request_fields));
        assert_eq!(
            parts,
            vec![
                (
                    "request.method in ['GET', 'HEAD']".to_string(),
                    "true".to_string()
                ),
                ("request.method".to_string(), "\"GET\"".to_string()),
                (
                    "request.path.startsWith('/admin')".to_string(),
                    "false".to_string()
                ),
            ]
        );
    }

    #[test]
    fn type_names_are_not_unknown_variables() {
        assert_eq!(
            eval("type(request.method) == string"),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn flows_show_their_fields_and_test_requests() {
        let flow = crate::flows::Flow::from_json(serde_json::json!({
            "id": "t1", "purpose": "eOverdracht", "actor": "did:a",
            "resources": [{"path": "Patient/123", "operations": ["read"]}],
            "scopes": ["s"], "attributes": {"x": 1},
        }))
        .unwrap();
        let index = FlowIndex::from_flows([&flow]);
        let actor = Expr::compile("'did:a'").unwrap();
        let base: Arc<str> = Arc::from("/fhir");
        let request = request();
        let eval = |source: &str| {
            let expr = Expr::compile(source).unwrap();
            let vars = Vars::new(&request, None, RequestFields::ALL).with_flows(Some(FlowSource {
                index: &index,
                actor: &actor,
                base_path: &base,
                purposes: &[],
            }));
            expr.eval(&vars)
        };
        let yes = Ok(Value::Bool(true));
        assert_eq!(eval("flows.size()"), Ok(Value::Int(1)));
        assert_eq!(
            eval("flows[0].id == 't1' && flows[0].actor == 'did:a'"),
            yes
        );
        assert_eq!(
            eval("flows[0].scopes == ['s'] && flows[0].patient == null"),
            yes
        );
        assert_eq!(eval("flows[0].resources[0].operations == ['read']"), yes);
        assert_eq!(
            eval("flows[0].attributes.x == 1 && flows[0].valid_until == null"),
            yes
        );
        assert_eq!(eval("flows.exists(f, f.permits(request))"), yes);
        assert_eq!(
            eval("flows.exists(f, f.permits({'method': 'DELETE', 'path': '/fhir/Patient/123'}))"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            eval("flows.exists(f, f.covers({'path': '/fhir/Patient/123'}))"),
            yes
        );
        // Outside the base path nothing is covered.
        assert_eq!(
            eval("flows.exists(f, f.covers({'path': '/other/Patient/123'}))"),
            Ok(Value::Bool(false))
        );
        assert_eq!(eval("flows.permitting(request).size()"), Ok(Value::Int(1)));
        assert_eq!(
            eval("flows.permitting({'method': 'PUT', 'path': '/fhir/Patient/123'}).size()"),
            Ok(Value::Int(0))
        );
        assert_eq!(
            eval("flows.covering({'path': '/fhir/Patient/123'}).map(f, f.id)"),
            Ok(Value::List(Arc::new(vec![Value::String(Arc::new(
                "t1".into()
            ))])))
        );
        assert!(eval("[1].permitting(request)").is_err());
        assert!(eval("flows[0].colour").is_err());
        assert!(eval("'x'.permits(request)").is_err());
    }

    #[test]
    fn evaluation_variables_are_null_for_http_requests() {
        for name in ["subject", "action", "resource", "context", "data"] {
            assert_eq!(
                eval(&format!("{name} == null")),
                Ok(Value::Bool(true)),
                "{name}"
            );
        }
        let request = AccessRequest {
            evaluation: Some(crate::request::Evaluation {
                subject: serde_json::json!({"type": "user", "id": "alice", "extra": [1]}),
                action: serde_json::json!({"name": "read"}),
                resource: serde_json::json!({"type": "doc", "id": "1"}),
                context: serde_json::json!({}),
            }),
            ..Default::default()
        };
        let data =
            Data::from_yaml(serde_yaml_ng::from_str("{roles: {alice: [admin]}}").unwrap()).unwrap();
        let expr = Expr::compile(
            "subject.extra == [1] && action.name == 'read' && resource.type == 'doc' \
             && context == {} && 'admin' in data.roles[subject.id]",
        )
        .unwrap();
        let vars = Vars::new(&request, None, expr.request_fields).with_data(Some(&data));
        assert_eq!(expr.eval(&vars), Ok(Value::Bool(true)));
    }

    #[test]
    fn now_is_a_timestamp() {
        assert_eq!(
            eval("now > timestamp('2020-01-01T00:00:00Z')"),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn the_functions_named_for_suggestions_exist() {
        // Sluis's own, however called; CEL's as methods or globals, as cel 0.15 has them.
        for name in SLUIS_FUNCTIONS {
            assert!(
                is_declared(name, true) && is_declared(name, false),
                "{name}"
            );
        }
        for name in CEL_FUNCTIONS {
            let known =
                is_operator_or_macro(name) || is_declared(name, true) || is_declared(name, false);
            assert!(known, "{name}");
        }
        assert!(!is_declared("startswith", true));
        assert_eq!(nearest_function("startswith", true), Some("startsWith"));
        assert_eq!(nearest_function("sizee", false), Some("size"));
        assert_eq!(nearest_function("xyzzy", true), None);
    }

    #[test]
    fn an_unknown_function_fails_compilation_with_its_kind() {
        let error = Expr::compile("request.path.startswith('/a')").unwrap_err();
        assert_eq!(error.kind, DiagnosticKind::CelUnknownFunction);
        assert_eq!(
            error.message,
            "unknown function `startswith` (did you mean `startsWith`?)"
        );
        // Operators are calls too, and are not functions to look up.
        assert!(Expr::compile("1 + 2 == 3 && !(1 in [2]) && [1][0] == 1 ? true : false").is_ok());
    }
}
