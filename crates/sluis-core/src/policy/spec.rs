//! The policy file format as policy authors write it (YAML). These types only describe
//! the file; [`super::PolicySet::load`] checks and compiles them into a [`super::PolicySet`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// A policy file: a list of policies.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Deserialized one by one, so an error names its policy.
    #[schemars(with = "Vec<PolicySpec>")]
    pub policies: Vec<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Unique across all loaded files; names the policy in decisions and logs.
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// `enforce` (the default): the gateway is told what the policy decides. `shadow`:
    /// the policy decides in full (token, scopes, rules) and the decision log and metrics
    /// say what it would have answered, but the gateway is told allow, so a new policy
    /// can be watched on real traffic before it is enforced.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Which requests this policy decides. A request is decided by the first policy (in
    /// load order: files sorted by name, policies in file order) whose `match` fits, or by
    /// the policy the gateway names in the `sluis_policy` context extension.
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    /// Names of configured issuers whose tokens this policy accepts.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Decide without any token: `token` is null in rules. Must be said explicitly.
    #[serde(default)]
    pub anonymous: bool,
    /// What a request carrying a method-override header (`X-HTTP-Method-Override`,
    /// `X-HTTP-Method`, `X-Method-Override`) gets: `refuse` (the default), 400
    /// `invalid_request`; or `judge`: it is decided as the method the header asks for,
    /// which is what an upstream that honours the header performs, and the header is
    /// passed on.
    #[serde(default)]
    pub method_override: MethodOverride,
    /// Scopes the token must all carry; otherwise 403 `insufficient_scope`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The `realm` of `WWW-Authenticate` challenges.
    pub realm: Option<String>,
    /// Allow and deny rules. Any matching deny rule denies; otherwise the first matching
    /// allow rule allows; otherwise the request is denied.
    #[serde(default)]
    #[schemars(with = "Vec<RuleSpec>")]
    pub rules: Vec<serde_yaml_ng::Value>,
    /// Where the caller's registered flows come from: rules then see them as `flows`.
    pub flows: Option<FlowsSpec>,
    /// The caller's party identifiers (e.g. iWlz UZOVI and AGB codes) and where each comes
    /// from: identifier name → its sources. Rules read them as `caller.<name>`, a string
    /// or null (see [`super::caller`]).
    #[serde(default)]
    pub caller: BTreeMap<String, CallerIdentifierSpec>,
    /// What to do to an allowed request.
    #[serde(default)]
    pub response: ResponseSpec,
    /// Rules over the upstream's answer to an allowed request, judged per FHIR resource
    /// (each `entry` of a Bundle, or the single resource) by the ext_proc door.
    pub response_rules: Option<ResponseRulesSpec>,
    /// FHIR search narrowing: search parameters added to allowed searches, per resource
    /// type (see [`super::narrowing`]).
    pub narrowing: Option<NarrowingSpec>,
    /// One answer for every policy denial (rules, default deny, missing scopes), so that
    /// e.g. "no such data" and "no consent" cannot be told apart (MedMij). Token errors
    /// keep their 401 so clients can renew tokens.
    pub deny_response: Option<DenyResponseSpec>,
    /// The answer when the token lacks a scope in `scopes`, instead of RFC 6750's 403
    /// `insufficient_scope`: e.g. iWlz RFC0014 error 09, 400
    /// `{"ErrorCode":"bad_request","Error":"Scope is not allowed"}`. Takes precedence over
    /// `deny_response` for that case.
    pub scope_response: Option<DenyResponseSpec>,
    /// What a failed information source look-up does: `rule` (the default) fails the rule
    /// that read it, as any evaluation error does (a deny rule denies, an allow rule does
    /// not allow); `unavailable` makes the whole decision unavailable, so the gateway's
    /// failure mode decides (gRPC UNAVAILABLE, HTTP 503).
    #[serde(default)]
    pub on_error: OnError,
    /// Facts the rules read as `data`: any YAML value (e.g. users and their roles),
    /// checked and converted once at load.
    #[schemars(with = "Option<serde_json::Value>")]
    pub data: Option<serde_yaml_ng::Value>,
    /// The request is GraphQL: it is parsed (limits, allowed operation types,
    /// introspection), rules read it as `graphql`, and with `templates` it must fit one.
    pub graphql: Option<GraphqlSpec>,
    /// The requests are FHIR REST calls below `base_path`: rules read them as
    /// `request.fhir`, and with a `capability_statement` whatever it does not list is
    /// denied before any rule runs.
    pub fhir: Option<FhirSpec>,
    /// Chooses the policies that decide by the token's scopes, as the Nuts reference PDP
    /// does: each scope names a policy, every named one is evaluated and the first (in
    /// name order) that allows decides. A selecting policy has no rules of its own.
    pub select: Option<SelectSpec>,
    /// How the AuthZEN Search API enumerates what this policy decides over: the
    /// candidates each search tries, each then decided by the rules. Only with
    /// `match.evaluation`; a policy without it cannot be searched.
    pub search: Option<SearchSpec>,
}

/// `select:`: policies chosen by the token's scopes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    /// The policies a scope may name (by id). Each must have no `match` (it is chosen only
    /// by a scope) and accept this policy's issuers.
    pub by_scope: Vec<String>,
    /// How a scope is turned into a policy id: `exact` (the default), or `knooppunt`:
    /// lower case, `-` read as `_` (`MCSD-Update` names `mcsd_update`).
    #[serde(default)]
    pub normalize: ScopeNormalize,
}

/// How scopes name policies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeNormalize {
    #[default]
    Exact,
    Knooppunt,
}

impl ScopeNormalize {
    /// The policy id `scope` names.
    pub fn apply(self, scope: &str) -> String {
        match self {
            ScopeNormalize::Exact => scope.to_owned(),
            ScopeNormalize::Knooppunt => scope.to_lowercase().replace('-', "_"),
        }
    }
}

/// The candidates of AuthZEN searches (see [`super::search`]).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Subject type → a CEL expression giving the candidate subjects: a list of ids, or
    /// of objects with an `id` and the `properties` the rules should see. Reads `data`,
    /// `subject`, `action`, `resource` and `context` of the search.
    #[serde(default)]
    pub subjects: BTreeMap<String, String>,
    /// Resource type → a CEL expression giving the candidate resources, as `subjects`.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// The action names an action search tries, in this order. By default
    /// `match.evaluation.actions`; with neither, actions cannot be searched.
    pub actions: Option<Vec<String>>,
}

/// How a policy reads FHIR requests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FhirSpec {
    /// The FHIR base path requests are below, e.g. `/fhir`; empty for the root. A
    /// request not below it is denied.
    pub base_path: String,
    /// `R4` or `STU3`: which release's search rules apply (`_include:iterate` or
    /// `:recurse`). By default the statement's `fhirVersion`, else R4.
    pub version: Option<FhirVersionSpec>,
    /// A CapabilityStatement (JSON), relative to the policy file: a request whose
    /// resource type, interaction, search parameters, includes or operation it does not
    /// list is denied (403) before any rule runs.
    pub capability_statement: Option<String>,
    /// `deny` (the default) or `allow` iterated includes (`_include:iterate`) the
    /// statement lists without iteration.
    #[serde(default)]
    pub iterate: IterateSpec,
}

/// A FHIR release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum FhirVersionSpec {
    R4,
    #[serde(rename = "STU3")]
    Stu3,
}

/// Whether iterated includes may pass a CapabilityStatement.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IterateSpec {
    #[default]
    Deny,
    Allow,
}

/// How a policy reads GraphQL requests (POST `application/json` or GET).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlSpec {
    /// Query templates (`.graphql` files). When given, a request that fits none is
    /// denied (403) before any rule runs, with the closest template and why in the
    /// decision's reason; rules see the one it fits as `graphql.template`.
    #[serde(default)]
    pub templates: Vec<TemplateSpec>,
    /// Operation types allowed: `query` (the default), `mutation`, `subscription`.
    /// Others are denied (403).
    #[serde(default = "default_operations")]
    pub operations: Vec<crate::graphql::OperationType>,
    /// Allow the introspection fields `__schema` and `__type` (denied, 403, by default).
    #[serde(default)]
    pub introspection: bool,
    /// Bounds on what one request may cost to read; beyond them it is a 400.
    #[serde(default)]
    pub limits: GraphqlLimitsSpec,
}

fn default_operations() -> Vec<crate::graphql::OperationType> {
    vec![crate::graphql::OperationType::Query]
}

/// One query template a request may fit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The `.graphql` file, relative to the policy file. It holds one operation.
    pub file: String,
    /// What decisions and rules call it; by default the file name without `.graphql`
    /// (`QIR-0001-ZKi`).
    pub name: Option<String>,
    /// Template variable (with or without `$`) → CEL expression: the request's value of
    /// that variable must equal the expression's (e.g. the caller's own UZOVI code), or
    /// the request does not fit. A null result fits no request.
    #[serde(default)]
    pub bind: BTreeMap<String, String>,
    /// Scopes the token must also carry for a request to fit this template.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Limits on a GraphQL request. The defaults fit the largest iWlz templates with room.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlLimitsSpec {
    /// Bytes of the POST body (or GET query string). Default 65536.
    pub max_body_bytes: usize,
    /// Lexical tokens of the query. Default 20000.
    pub max_tokens: usize,
    /// Nesting of fields, a root field being 1. Default 15, at most 100.
    pub max_depth: usize,
    /// Fields (and fragment spreads) selected once fragments are expanded. Default 1000.
    pub max_fields: usize,
    /// Aliased fields. Default 30.
    pub max_aliases: usize,
}

impl Default for GraphqlLimitsSpec {
    fn default() -> GraphqlLimitsSpec {
        let limits = crate::graphql::Limits::default();
        GraphqlLimitsSpec {
            max_body_bytes: limits.max_body_bytes,
            max_tokens: limits.max_tokens,
            max_depth: limits.max_depth,
            max_fields: limits.max_fields,
            max_aliases: limits.max_aliases,
        }
    }
}

/// `on_error`: what a failed information source look-up does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Rule,
    Unavailable,
}

/// Whether a policy's decisions are enforced or only watched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// The gateway is told what the policy decides.
    #[default]
    Enforce,
    /// The gateway is told allow whatever the policy decides; the would-be answer is only
    /// logged and counted. A would-be denial lets the request through untouched apart from
    /// the headers the policy always removes (the bearer token unless kept, its
    /// `remove_headers`, the configured `strip_headers`, `x-sluis-*`, client copies of the
    /// headers it sets): nothing is set, the query is not rewritten.
    Shadow,
}

/// `method_override`: what a request carrying a method-override header gets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MethodOverride {
    /// 400 `invalid_request`: the upstream might perform a method no policy judged.
    #[default]
    Refuse,
    /// Decided as the overriding method; the header reaches the upstream.
    Judge,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Host globs, e.g. `api.example.org`, `*.example.org`. A port in the request's host is
    /// ignored. Empty matches every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path globs: `*` matches within one segment, `**` across segments. Empty matches
    /// every path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods. Empty matches every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Decide evaluations (subject, action, resource: the AuthZEN door) instead of HTTP
    /// requests. A policy decides either kind, never both: without this key it never
    /// decides an evaluation; with it, it never decides an HTTP request and cannot also
    /// name `hosts`, `paths` or `methods`.
    pub evaluation: Option<EvaluationMatchSpec>,
}

/// Which evaluations a policy decides. Each list, when not empty, must contain the
/// evaluation's value; `evaluation: {}` decides every evaluation.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationMatchSpec {
    /// `action.name` values, e.g. `can_read_todos`.
    #[serde(default)]
    pub actions: Vec<String>,
    /// `resource.type` values, e.g. `todo`.
    #[serde(default)]
    pub resource_types: Vec<String>,
    /// `subject.type` values, e.g. `user`.
    #[serde(default)]
    pub subject_types: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// A CEL condition that allows the request when true. YAML `true` is the condition
    /// `true`.
    #[serde(default, deserialize_with = "condition")]
    #[schemars(with = "Option<ConditionSchema>")]
    pub allow: Option<String>,
    /// A CEL condition that denies the request when true.
    #[serde(default, deserialize_with = "condition")]
    #[schemars(with = "Option<ConditionSchema>")]
    pub deny: Option<String>,
    /// Status of a deny (default 403).
    pub status: Option<u16>,
    /// Message in the deny body (default: a generic one).
    pub message: Option<String>,
}

/// How a condition may be written, for the JSON Schema.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "only describes the JSON Schema; never built")]
enum ConditionSchema {
    /// A CEL expression.
    Cel(String),
    /// `true` or `false`.
    Literal(bool),
}

/// A condition written as a string, or as a YAML boolean (`allow: true`), which an author
/// means as the CEL literal.
fn condition<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Condition {
        Text(String),
        Bool(bool),
    }
    Ok(Some(
        match Condition::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "a condition must be a CEL expression (a string) or true/false",
            )
        })? {
            Condition::Text(text) => text,
            Condition::Bool(b) => b.to_string(),
        },
    ))
}

/// How a policy finds the caller's flows.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowsSpec {
    /// A CEL expression giving the caller's actor key, compared with each flow's `actor`:
    /// e.g. `token.client_id`, `token.sub`, `token.claims.organization_ura`. Null means
    /// no flows.
    pub actor: String,
    /// The part of request paths above the flows' resource paths, e.g. `/fhir` when
    /// flows name `/Patient/123` and requests go to `/fhir/Patient/123`.
    #[serde(default)]
    pub base_path: String,
    /// Only flows of these purposes count; all when empty.
    #[serde(default)]
    pub purposes: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Headers to set on the upstream request: name → CEL expression. A null result
    /// sets nothing but still removes any client-supplied header of that name.
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// Headers to remove from the upstream request.
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// Keep the `Authorization` header for the upstream (removed by default).
    #[serde(default)]
    pub keep_authorization: bool,
    /// Set this header to the verified token's payload as JSON (iWlz RFC0014 `claims`).
    pub forward_claims: Option<String>,
    /// Query parameters to set: name → CEL expression.
    #[serde(default)]
    pub set_query: BTreeMap<String, String>,
    /// Query parameters to remove.
    #[serde(default)]
    pub remove_query: Vec<String>,
}

/// One identifier of the caller: where it is found and how it is written there.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerIdentifierSpec {
    /// What marks this kind of identifier in `client_id`, `sub` and `act.sub`, e.g.
    /// `uzovi:` in `uzovi:5000`; it is stripped (`5000`). A value there without it does not
    /// count. Claims hold the identifier itself; a prefix there is stripped too. Empty:
    /// every value counts as is.
    #[serde(default)]
    pub prefix: String,
    /// Where to look: `client_id`, `sub`, `act` (the actor's `act.sub`, RFC 8693),
    /// `claims` (an aggregated claim, OIDC Core §5.6.2, trusted as the issuer's
    /// `aggregated_claims` says) or `claim:NAME` (a plain claim of the token). Every
    /// source that holds a value must agree: when two disagree, reading the identifier is
    /// an error, so deny rules deny and allow rules do not allow.
    pub from: Vec<String>,
    /// The aggregated claim `claims` reads. Default: the identifier's name.
    pub claim: Option<String>,
}

/// Search narrowing: once a rule allows, a search on a listed resource type gets these
/// parameters set, so the FHIR server returns only what the caller may see. Requests on a
/// listed type that cannot be narrowed this way are denied.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NarrowingSpec {
    /// The FHIR base path resource types are below, e.g. `/fhir` (empty: the root).
    #[serde(default)]
    pub base_path: String,
    /// The Care Services Proxy `use_case` values this policy answers for.
    #[serde(default)]
    pub use_cases: Vec<String>,
    /// A client parameter that names a narrowing parameter: `deny` it (400, the
    /// default) or `replace` it. Modified, chained or encoded forms are denied either way.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Resource type → search parameter → CEL expression giving its value. Kept in the
    /// order written: the Care Services Proxy's scopes list the types, and each scope its
    /// parameters, in this order.
    #[schemars(with = "BTreeMap<String, BTreeMap<String, String>>")]
    pub resources: Ordered<Ordered<String>>,
}

/// A YAML map whose order is kept, a key given twice refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Ordered<V> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V> IntoIterator for Ordered<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered<V>, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("`{key}` is given twice")));
                    }
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    #[default]
    Deny,
    Replace,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyResponseSpec {
    #[serde(default = "default_deny_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_deny_status() -> u16 {
    403
}

/// `response_rules`: which resources of an upstream answer the caller may see.
/// Per entry: a `resource_types` miss withholds it; any `deny` rule true (or failing)
/// denies the whole response; any `withhold` rule true (or failing) withholds it; else the
/// first `keep` rule true keeps it; none: withheld.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRulesSpec {
    /// Resource types that may be kept at all; empty: any.
    #[serde(default)]
    pub resource_types: Vec<String>,
    /// `keep`, `withhold` and `deny` rules over `entry` (and every request variable).
    #[schemars(with = "Vec<ResponseRuleSpec>")]
    pub rules: Vec<serde_yaml_ng::Value>,
    /// How the client learns that entries were withheld: `none` (the default),
    /// `operation_outcome` (an OperationOutcome entry, `suppressed`) or `header`
    /// (`x-sluis-withheld: true`).
    #[serde(default)]
    pub withheld_notice: WithheldNotice,
    /// A body that cannot be judged (not JSON, compressed, too many entries): `deny`
    /// (the default) or `pass` it unchanged.
    #[serde(default)]
    pub unreadable: Unreadable,
    /// Status of the denial of an unreadable body (default 502).
    #[serde(default = "default_unreadable_status")]
    pub unreadable_status: u16,
    /// More entries than this make the body unreadable (default 1000, at most 10000).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

fn default_unreadable_status() -> u16 {
    502
}

fn default_max_entries() -> usize {
    1000
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithheldNotice {
    #[default]
    None,
    OperationOutcome,
    Header,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unreadable {
    #[default]
    Deny,
    Pass,
}

/// One response rule: exactly one of `keep`, `withhold`, `deny`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRuleSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// Keeps the entry when true (and no withhold or deny rule is).
    #[serde(default, deserialize_with = "condition")]
    #[schemars(with = "Option<ConditionSchema>")]
    pub keep: Option<String>,
    /// Withholds the entry when true.
    #[serde(default, deserialize_with = "condition")]
    #[schemars(with = "Option<ConditionSchema>")]
    pub withhold: Option<String>,
    /// Denies the whole response when true for any entry.
    #[serde(default, deserialize_with = "condition")]
    #[schemars(with = "Option<ConditionSchema>")]
    pub deny: Option<String>,
    /// Status of a deny (default 403).
    pub status: Option<u16>,
    /// Message in the deny body (default: a generic one).
    pub message: Option<String>,
}
