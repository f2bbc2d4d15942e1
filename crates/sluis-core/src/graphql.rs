//! GraphQL requests as policies judge them: [`read`] takes the query, operation name and
//! variables out of an [`AccessRequest`] (POST with a JSON body, or GET with query
//! parameters), parses the document and builds a [`GraphqlRequest`]: the chosen operation
//! with its fragments expanded, aliases kept beside the field names they stand for, each
//! field's arguments (variables kept as references), and the variables. [`template`] holds
//! query templates and decides whether a request fits one.
//!
//! Two readers turn the text into a `document::Document`: a fast one for the plain
//! documents clients send (`plain`), and apollo-parser for everything else and for every
//! error (`apollo`). They must agree wherever the fast one answers; `tests.rs` checks.
//!
//! Everything a client sends is bounded by [`Limits`] before or while it is looked at:
//! the body's size, the parser's tokens and nesting, the fields selected after fragments
//! are expanded (so a "fragment bomb" stops at the limit instead of growing), aliases and
//! depth. Where a GraphQL server and Sluis could read one request two ways, the request is
//! refused instead: duplicate JSON keys, unknown keys in the body (persisted-query ids a
//! server would look up), batches, GraphQL parameters in a POST's URL, several operations
//! without `operationName`, duplicate operation or fragment names.

mod apollo;
mod document;
mod plain;
pub mod template;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use self::document::{FragmentDefinition, Selection};
use crate::json::StrictJson;
use crate::request::AccessRequest;

/// Bounds on the work one request may cause. The defaults fit the iWlz templates (the
/// largest, QBR-0005-ZKu, has about 200 fields, depth 6 and 1,500 tokens) with room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the POST body, or of the GET query string.
    pub max_body_bytes: usize,
    /// Lexical tokens of the query document.
    pub max_tokens: usize,
    /// Nesting of fields (a root field is depth 1), after fragments are expanded.
    pub max_depth: usize,
    /// Fields, fragment spreads and inline fragments visited while expanding the
    /// operation: a fragment used twice counts twice.
    pub max_fields: usize,
    /// Aliased fields, after fragments are expanded.
    pub max_aliases: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 64 * 1024,
            max_tokens: 20_000,
            max_depth: 15,
            max_fields: 1_000,
            max_aliases: 30,
        }
    }
}

impl Limits {
    /// The parser's own recursion limit: selection sets, but also nested argument values
    /// (`where: {and: [{or: [...]}]}`) and list types count, so it is looser than
    /// `max_depth`; it keeps the parser's stack bounded whatever the input.
    fn parser_recursion(&self) -> usize {
        self.max_depth.saturating_mul(4).saturating_add(32).min(500)
    }
}

/// `query`, `mutation` or `subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationType {
    Query,
    Mutation,
    Subscription,
}

impl OperationType {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        }
    }
}

/// One GraphQL request: the operation that will run, and the variables it is sent with.
/// The operation is shared: the same query text, parsed once, serves every request that
/// sends it ([`DocumentCache`]). It reads as the [`Operation`] it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphqlRequest {
    pub parsed: Arc<Operation>,
    /// The `variables` object as sent; empty when none.
    pub variables: Map<String, Json>,
}

impl std::ops::Deref for GraphqlRequest {
    type Target = Operation;

    fn deref(&self) -> &Operation {
        &self.parsed
    }
}

/// The operation a query document asks to run, as a tree of fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub operation: OperationType,
    /// The operation's name, if it has one.
    pub name: Option<String>,
    pub variable_definitions: Vec<VariableDefinition>,
    /// Directives on the operation itself.
    pub directives: Vec<Directive>,
    /// The root fields, with fragments expanded in place.
    pub fields: Vec<Field>,
    /// Whether any field is `__schema` or `__type`.
    pub introspection: bool,
}

/// A selected field. Fragments are gone: their fields sit where they were spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub alias: Option<String>,
    /// Sorted by name; names are unique.
    pub arguments: Vec<(String, ArgValue)>,
    pub directives: Vec<Directive>,
    pub selection: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    /// Sorted by name; names are unique.
    pub arguments: Vec<(String, ArgValue)>,
}

/// `$name: Type = default` of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableDefinition {
    pub name: String,
    /// The type as written, without whitespace: `UUID!`, `[String!]`.
    pub ty: String,
    pub default: Option<ArgValue>,
}

impl VariableDefinition {
    /// Non-null without a default: the request must give a value.
    pub fn required(&self) -> bool {
        self.ty.ends_with('!') && self.default.is_none()
    }
}

/// An argument value as written: a variable reference stays a reference.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Variable(String),
    Null,
    Bool(bool),
    /// Int and Float literals, as written.
    Number(String),
    String(String),
    Enum(String),
    List(Vec<ArgValue>),
    /// Sorted by key; keys are unique.
    Object(Vec<(String, ArgValue)>),
}

/// The key a variable reference gets in JSON ([`ArgValue::to_json`]): GraphQL object keys
/// are names, which cannot start with `$`, so it cannot be confused with a literal.
pub const VARIABLE_KEY: &str = "$variable";

impl ArgValue {
    /// The value as JSON: literals as themselves (enums as strings), a variable as
    /// `{"$variable": "name"}`.
    pub fn to_json(&self) -> Json {
        match self {
            ArgValue::Variable(name) => {
                let mut map = Map::new();
                map.insert(VARIABLE_KEY.into(), Json::String(name.clone()));
                Json::Object(map)
            }
            ArgValue::Null => Json::Null,
            ArgValue::Bool(b) => Json::Bool(*b),
            ArgValue::Number(text) => serde_json::from_str(text)
                .ok()
                .filter(Json::is_number)
                .unwrap_or_else(|| Json::String(text.clone())),
            ArgValue::String(text) | ArgValue::Enum(text) => Json::String(text.clone()),
            ArgValue::List(items) => Json::Array(items.iter().map(ArgValue::to_json).collect()),
            ArgValue::Object(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Calls `f` with every variable this value references.
    pub fn variables<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            ArgValue::Variable(name) => f(name),
            ArgValue::List(items) => items.iter().for_each(|i| i.variables(f)),
            ArgValue::Object(entries) => entries.iter().for_each(|(_, v)| v.variables(f)),
            _ => {}
        }
    }
}

/// Why a request is not a GraphQL request Sluis will judge. Each kind has its answer:
/// see [`RequestError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No query, or no operation in it (RFC0014 §6.2 \[08\]).
    #[error("no operation: {0}")]
    NoOperation(String),
    /// Not parseable as GraphQL (RFC0014 §6.2 \[07\]).
    #[error("invalid GraphQL syntax: {0}")]
    Syntax(String),
    /// Anything else wrong with the request: limits, JSON, variables, ambiguity.
    #[error("{0}")]
    Malformed(String),
    /// Neither GET nor POST (GraphQL over HTTP).
    #[error("{0}")]
    Method(String),
}

/// The message RFC0014 §6.2 \[08\] prescribes.
pub const NO_OPERATION: &str = "No operation found to evaluate";

impl RequestError {
    /// 405 for the method, 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Method(_) => 405,
            _ => 400,
        }
    }

    /// What the client is told, in the RFC0014 error body.
    pub fn client_message(&self) -> String {
        match self {
            RequestError::NoOperation(_) => NO_OPERATION.to_string(),
            other => other.to_string(),
        }
    }
}

fn malformed(message: impl Into<String>) -> RequestError {
    RequestError::Malformed(message.into())
}

/// The parts of a GraphQL-over-HTTP request.
struct Parts {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Json>,
}

/// The POST body. Unknown keys are refused: some servers run a stored document named by
/// `id`, `documentId` or `extensions.persistedQuery` instead of `query`, which Sluis could
/// not judge. `extensions` without `query` is therefore also "no operation".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<StrictJson>,
    #[allow(
        dead_code,
        reason = "accepted so a body with `extensions` parses; never read"
    )]
    extensions: Option<StrictJson>,
}

/// The parameters GraphQL over HTTP reads, which a POST must not carry in its URL too.
const PARAMETERS: [&str; 4] = ["query", "operationName", "variables", "extensions"];

/// Parsed query documents of one policy, by query text and operation name, so that the
/// same template-shaped query sent again and again is parsed once: a look-up is a hash of
/// the text, a parse of the 4.8 KB QIR-0001-ZKi some 50 µs. Refusals are kept too.
/// Bounded by the memory it holds: each entry weighs its text and its parsed operation
/// ([`Operation::approximate_bytes`]: 19.7 KB for the 4.8 KB QIR-0001-ZKi text).
///
/// A text is kept the second time it is seen, not the first: a client sending ever new
/// texts then pays neither the insert nor the eviction, and cannot push the texts that are
/// sent again and again out of the cache. `seen` remembers a hash of each recent text in a
/// slot of its own; two texts sharing a slot only delay each other's caching.
pub struct DocumentCache {
    parsed: moka::sync::Cache<(Option<String>, String), Parsed>,
    seen: Box<[AtomicU64]>,
    hasher: foldhash::quality::RandomState,
}

type Parsed = Result<Arc<Operation>, RequestError>;

impl DocumentCache {
    /// A cache holding about `bytes` of queries and their parsed operations in all.
    pub fn new(bytes: u64) -> DocumentCache {
        // One slot per KiB of capacity: room for many more texts than the cache holds.
        let slots = (bytes / 1024).clamp(64, 1 << 16).next_power_of_two();
        DocumentCache {
            parsed: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|key: &(Option<String>, String), parsed: &Parsed| {
                    let operation = parsed.as_ref().map_or(0, |o| o.approximate_bytes());
                    let key = key.1.len() + key.0.as_ref().map_or(0, String::len);
                    u32::try_from(key + operation).unwrap_or(u32::MAX).max(1)
                })
                .build(),
            seen: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// The cached parse of `key`, else `parse`'s, which is kept if `key` was seen before.
    fn get_or_parse(
        &self,
        key: &(Option<String>, String),
        parse: impl FnOnce() -> Parsed,
    ) -> Parsed {
        if let Some(parsed) = self.parsed.get(key) {
            return parsed;
        }
        let hash = self.hasher.hash_one(key);
        let slot = (hash as usize) & (self.seen.len() - 1);
        let seen_before = self
            .seen
            .get(slot)
            .is_some_and(|s| s.swap(hash, Ordering::Relaxed) == hash);
        if !seen_before {
            return parse();
        }
        // Concurrent requests with the same text wait for one parse.
        self.parsed
            .entry_by_ref(key)
            .or_insert_with(parse)
            .into_value()
    }

    #[cfg(test)]
    fn settled(&self) -> &moka::sync::Cache<(Option<String>, String), Parsed> {
        self.parsed.run_pending_tasks();
        &self.parsed
    }
}

impl std::fmt::Debug for DocumentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DocumentCache({} entries)", self.parsed.entry_count())
    }
}

/// Reads, parses and expands the GraphQL request in `request`; with a `cache`, a query
/// text parsed before is not parsed again.
pub fn read(
    request: &AccessRequest,
    limits: &Limits,
    cache: Option<&DocumentCache>,
) -> Result<GraphqlRequest, RequestError> {
    let parts = parts(request, limits)?;
    let variables = match parts.variables {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(map)) => map,
        Some(_) => return Err(malformed("`variables` must be a JSON object")),
    };
    let query = parts
        .query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| RequestError::NoOperation("the request has no query".into()))?;
    // The parser is a dependency fed hostile input: a panic in it must deny this request,
    // not take a worker down.
    let parse_safely = |query: &str, operation_name: Option<&str>| -> Parsed {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            parse(query, operation_name, limits)
        }))
        .map_err(|_| malformed("the query could not be parsed"))?
        .map(Arc::new)
    };
    let parsed = match cache {
        Some(cache) => {
            let key = (parts.operation_name, query);
            cache.get_or_parse(&key, || parse_safely(&key.1, key.0.as_deref()))
        }
        None => parse_safely(&query, parts.operation_name.as_deref()),
    }?;
    // GraphQL over HTTP: a GET must not change anything, whatever a policy allows.
    if request.method == "GET" && parsed.operation == OperationType::Mutation {
        return Err(RequestError::Method(
            "a mutation is sent with POST, not GET".into(),
        ));
    }
    Ok(GraphqlRequest { parsed, variables })
}

fn parts(request: &AccessRequest, limits: &Limits) -> Result<Parts, RequestError> {
    match request.method.as_str() {
        "GET" => {
            if request.query.len() > limits.max_body_bytes {
                return Err(malformed(format!(
                    "the query string exceeds {} bytes",
                    limits.max_body_bytes
                )));
            }
            let mut found: HashMap<&str, String> = HashMap::new();
            for (key, value) in request.query_pairs() {
                if let Some(name) = PARAMETERS.iter().find(|p| **p == key)
                    && found.insert(name, value).is_some()
                {
                    return Err(malformed(format!("`{name}` is given more than once")));
                }
            }
            let variables = match found.remove("variables") {
                Some(text) if !text.is_empty() => Some(strict_json(&text, "variables")?),
                _ => None,
            };
            Ok(Parts {
                query: found.remove("query"),
                operation_name: found.remove("operationName").filter(|n| !n.is_empty()),
                variables,
            })
        }
        "POST" => {
            let content_type = request
                .header("content-type")
                .and_then(|c| c.split(';').next())
                .map(|c| c.trim().to_ascii_lowercase());
            if content_type.as_deref() != Some("application/json") {
                return Err(malformed(
                    "a GraphQL POST must have content-type application/json",
                ));
            }
            if request.body.len() > limits.max_body_bytes {
                return Err(malformed(format!(
                    "the body exceeds {} bytes",
                    limits.max_body_bytes
                )));
            }
            if request
                .query_pairs()
                .iter()
                .any(|(key, _)| PARAMETERS.contains(&key.as_str()))
            {
                return Err(malformed(
                    "a POST carries its GraphQL parameters in the body, not the URL",
                ));
            }
            // A struct also deserializes from a JSON array; a batch of operations must
            // not pass as one.
            if !request.body.trim_start().starts_with('{') {
                return Err(malformed(
                    "the body must be one JSON object (batches are not accepted)",
                ));
            }
            let body: PostBody = serde_json::from_str(&request.body)
                .map_err(|e| malformed(format!("the body is not a GraphQL request: {e}")))?;
            Ok(Parts {
                query: body.query,
                operation_name: body.operation_name,
                variables: body.variables.map(|v| v.0),
            })
        }
        other => Err(RequestError::Method(format!(
            "GraphQL is sent with GET or POST, not {other}"
        ))),
    }
}

/// `text` as JSON in which no object has a key twice ([`crate::json`]).
fn strict_json(text: &str, what: &str) -> Result<Json, RequestError> {
    serde_json::from_str::<StrictJson>(text)
        .map(|v| v.0)
        .map_err(|e| malformed(format!("`{what}` is not valid JSON: {e}")))
}

/// Parses `query` and expands the operation to run.
fn parse(
    query: &str,
    operation_name: Option<&str>,
    limits: &Limits,
) -> Result<Operation, RequestError> {
    let document = match plain::read(query, limits) {
        Some(document) => document,
        None => apollo::read(query, limits)?,
    };
    let mut fragments: HashMap<String, FragmentDefinition> = HashMap::new();
    for fragment in document.fragments {
        let name = fragment.name.clone();
        if fragments.insert(name.clone(), fragment).is_some() {
            return Err(malformed(format!("fragment `{name}` is defined twice")));
        }
    }
    let operations = document.operations;
    for (i, operation) in operations.iter().enumerate() {
        if let Some(name) = &operation.name
            && operations
                .iter()
                .skip(i + 1)
                .any(|o| o.name.as_ref() == Some(name))
        {
            return Err(malformed(format!("operation `{name}` is defined twice")));
        }
    }
    let chosen = match operation_name {
        Some(wanted) => operations
            .iter()
            .position(|o| o.name.as_deref() == Some(wanted))
            .ok_or_else(|| {
                RequestError::NoOperation(format!("the query has no operation `{wanted}`"))
            })?,
        None => match operations.len() {
            0 => {
                return Err(RequestError::NoOperation(
                    "the query defines no operation".into(),
                ));
            }
            1 => 0,
            _ => {
                return Err(malformed(
                    "the query has several operations: name the one to run in `operationName`",
                ));
            }
        },
    };
    let operation = operations
        .into_iter()
        .nth(chosen)
        .ok_or_else(|| RequestError::NoOperation("the query defines no operation".into()))?;
    let mut variable_definitions: Vec<VariableDefinition> = Vec::new();
    for definition in operation.variable_definitions {
        if variable_definitions
            .iter()
            .any(|d| d.name == definition.name)
        {
            return Err(malformed(format!(
                "variable `${}` is defined twice",
                definition.name
            )));
        }
        variable_definitions.push(definition);
    }
    let mut expansion = Expansion {
        fragments: &fragments,
        limits,
        visited: 0,
        aliases: 0,
        spreads: Vec::new(),
        introspection: false,
    };
    let mut fields = Vec::with_capacity(operation.selection.len());
    if !operation.selection.is_empty() {
        expansion.expand(Cow::Owned(operation.selection), 1, &mut fields)?;
    }
    Ok(Operation {
        operation: operation.operation,
        name: operation.name,
        variable_definitions,
        directives: operation.directives,
        fields,
        introspection: expansion.introspection,
    })
}

/// Expanding an operation's selection: fragments inlined, limits counted as we go.
struct Expansion<'a> {
    fragments: &'a HashMap<String, FragmentDefinition>,
    limits: &'a Limits,
    visited: usize,
    aliases: usize,
    /// The fragments being expanded, outermost first: a spread of one of them is a cycle.
    spreads: Vec<String>,
    introspection: bool,
}

impl<'a> Expansion<'a> {
    fn count(&mut self) -> Result<(), RequestError> {
        self.visited += 1;
        if self.visited > self.limits.max_fields {
            return Err(malformed(format!(
                "the query selects more than {} fields",
                self.limits.max_fields
            )));
        }
        Ok(())
    }

    /// Appends the fields of `set` (at `depth`) to `out`. The operation's own selections
    /// are moved into the field tree; a fragment's are borrowed and copied field by field
    /// at each spread, so a fragment spread many times is not first cloned whole.
    fn expand(
        &mut self,
        set: Cow<'a, [Selection]>,
        depth: usize,
        out: &mut Vec<Field>,
    ) -> Result<(), RequestError> {
        if depth > self.limits.max_depth {
            return Err(malformed(format!(
                "the query nests fields deeper than {}",
                self.limits.max_depth
            )));
        }
        match set {
            Cow::Owned(set) => {
                for selection in set {
                    self.selection(Cow::Owned(selection), depth, out)?;
                }
            }
            Cow::Borrowed(set) => {
                for selection in set {
                    self.selection(Cow::Borrowed(selection), depth, out)?;
                }
            }
        }
        Ok(())
    }

    /// Appends the fields one selection stands for.
    fn selection(
        &mut self,
        selection: Cow<'a, Selection>,
        depth: usize,
        out: &mut Vec<Field>,
    ) -> Result<(), RequestError> {
        self.count()?;
        match selection {
            Cow::Owned(Selection::Field(field)) => self.field(
                Field {
                    name: field.name,
                    alias: field.alias,
                    arguments: field.arguments,
                    directives: field.directives,
                    selection: Vec::new(),
                },
                Cow::Owned(field.selection),
                depth,
                out,
            )?,
            Cow::Borrowed(Selection::Field(field)) => self.field(
                Field {
                    name: field.name.clone(),
                    alias: field.alias.clone(),
                    arguments: field.arguments.clone(),
                    directives: field.directives.clone(),
                    selection: Vec::new(),
                },
                Cow::Borrowed(&field.selection),
                depth,
                out,
            )?,
            Cow::Owned(Selection::Inline {
                directives,
                selection,
            }) => {
                refuse_directives(directives, "an inline fragment")?;
                self.expand(Cow::Owned(selection), depth, out)?;
            }
            Cow::Borrowed(Selection::Inline {
                directives,
                selection,
            }) => {
                refuse_directives(*directives, "an inline fragment")?;
                self.expand(Cow::Borrowed(selection), depth, out)?;
            }
            Cow::Owned(Selection::Spread { name, directives }) => {
                self.spread(&name, directives, depth, out)?
            }
            Cow::Borrowed(Selection::Spread { name, directives }) => {
                self.spread(name, *directives, depth, out)?
            }
        }
        Ok(())
    }

    /// Appends `field`, its own selection `children` expanded, to `out`.
    fn field(
        &mut self,
        mut field: Field,
        children: Cow<'a, [Selection]>,
        depth: usize,
        out: &mut Vec<Field>,
    ) -> Result<(), RequestError> {
        if field.name == "__schema" || field.name == "__type" {
            self.introspection = true;
        }
        if field.alias.is_some() {
            self.aliases += 1;
            if self.aliases > self.limits.max_aliases {
                return Err(malformed(format!(
                    "the query has more than {} aliases",
                    self.limits.max_aliases
                )));
            }
        }
        if !children.is_empty() {
            field.selection.reserve_exact(children.len());
            self.expand(children, depth + 1, &mut field.selection)?;
        }
        out.push(field);
        Ok(())
    }

    /// Appends the fields of the fragment `name` spread here.
    fn spread(
        &mut self,
        name: &str,
        directives: bool,
        depth: usize,
        out: &mut Vec<Field>,
    ) -> Result<(), RequestError> {
        refuse_directives(directives, "a fragment spread")?;
        if let Some(at) = self.spreads.iter().position(|s| *s == name) {
            let mut cycle = self.spreads.get(at..).unwrap_or_default().to_vec();
            cycle.push(name.to_owned());
            return Err(malformed(format!(
                "fragments spread each other in a cycle: {}",
                cycle.join(" → ")
            )));
        }
        let fragments = self.fragments;
        let fragment = fragments
            .get(name)
            .ok_or_else(|| malformed(format!("fragment `{name}` is not defined")))?;
        refuse_directives(fragment.directives, "a fragment definition")?;
        self.spreads.push(name.to_owned());
        self.expand(Cow::Borrowed(&fragment.selection), depth, out)?;
        self.spreads.pop();
        Ok(())
    }
}

/// Directives on fragments would make a field conditional in ways the flat field tree
/// cannot show: refused.
fn refuse_directives(directives: bool, on: &str) -> Result<(), RequestError> {
    match directives {
        true => Err(malformed(format!("directives on {on} are not accepted"))),
        false => Ok(()),
    }
}

impl Operation {
    /// About how many bytes the operation holds in memory, its own struct included: what
    /// the parsed-query cache weighs it by.
    pub fn approximate_bytes(&self) -> usize {
        fn value(given: &ArgValue) -> usize {
            match given {
                ArgValue::Variable(text)
                | ArgValue::Number(text)
                | ArgValue::String(text)
                | ArgValue::Enum(text) => text.len(),
                ArgValue::List(items) => items
                    .iter()
                    .map(|i| std::mem::size_of::<ArgValue>() + value(i))
                    .sum(),
                ArgValue::Object(entries) => arguments(entries),
                ArgValue::Null | ArgValue::Bool(_) => 0,
            }
        }
        fn arguments(entries: &[(String, ArgValue)]) -> usize {
            entries
                .iter()
                .map(|(name, v)| std::mem::size_of::<(String, ArgValue)>() + name.len() + value(v))
                .sum()
        }
        fn directives(directives: &[Directive]) -> usize {
            directives
                .iter()
                .map(|d| std::mem::size_of::<Directive>() + d.name.len() + arguments(&d.arguments))
                .sum()
        }
        fn fields(selection: &[Field]) -> usize {
            selection
                .iter()
                .map(|f| {
                    std::mem::size_of::<Field>()
                        + f.name.len()
                        + f.alias.as_ref().map_or(0, String::len)
                        + arguments(&f.arguments)
                        + directives(&f.directives)
                        + fields(&f.selection)
                })
                .sum()
        }
        let variables: usize = self
            .variable_definitions
            .iter()
            .map(|d| {
                std::mem::size_of::<VariableDefinition>()
                    + d.name.len()
                    + d.ty.len()
                    + d.default.as_ref().map_or(0, value)
            })
            .sum();
        std::mem::size_of::<Operation>()
            + self.name.as_ref().map_or(0, String::len)
            + variables
            + directives(&self.directives)
            + fields(&self.fields)
    }

    /// Every field path (`wlzIndicatie.grondslag.grondslagID`: field names, not aliases),
    /// each once, in document order.
    pub fn paths(&self) -> Vec<String> {
        fn walk(
            fields: &[Field],
            prefix: &str,
            out: &mut Vec<String>,
            seen: &mut std::collections::HashSet<String>,
        ) {
            for field in fields {
                let path = if prefix.is_empty() {
                    field.name.clone()
                } else {
                    format!("{prefix}.{}", field.name)
                };
                if seen.insert(path.clone()) {
                    out.push(path.clone());
                }
                walk(&field.selection, &path, out, seen);
            }
        }
        let mut out = Vec::new();
        walk(&self.fields, "", &mut out, &mut Default::default());
        out
    }

    /// The root fields' names, each once, in document order.
    pub fn root_fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for field in &self.fields {
            if !out.contains(&field.name.as_str()) {
                out.push(&field.name);
            }
        }
        out
    }
}

impl GraphqlRequest {
    /// The effective value of a variable: sent, else the definition's default.
    pub fn variable(&self, name: &str) -> Option<Json> {
        self.variables.get(name).cloned().or_else(|| {
            self.variable_definitions
                .iter()
                .find(|d| d.name == name)
                .and_then(|d| d.default.as_ref())
                .map(ArgValue::to_json)
        })
    }
}

/// Parses a query template (a `.graphql` file an operator wrote): one operation, maybe
/// with fragments. Limits are generous: the file is trusted, but still parsed safely.
pub fn parse_template(text: &str) -> Result<Operation, String> {
    let limits = Limits {
        max_body_bytes: usize::MAX,
        max_tokens: 1_000_000,
        max_depth: 64,
        max_fields: 100_000,
        max_aliases: 100_000,
    };
    let operations = {
        let tree = apollo_parser::Parser::new(text)
            .recursion_limit(200)
            .parse();
        if let Some(error) = tree.errors().next() {
            let line = text
                .get(..error.index())
                .map(|before| before.matches('\n').count() + 1)
                .unwrap_or(1);
            return Err(format!(
                "invalid GraphQL at line {line}: {}",
                error.message()
            ));
        }
        tree.document()
            .definitions()
            .filter(|d| matches!(d, apollo_parser::cst::Definition::OperationDefinition(_)))
            .count()
    };
    if operations != 1 {
        return Err(format!(
            "a template holds exactly one operation, this one {operations}"
        ));
    }
    std::panic::catch_unwind(|| parse(text, None, &limits))
        .map_err(|_| "the template could not be parsed".to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
