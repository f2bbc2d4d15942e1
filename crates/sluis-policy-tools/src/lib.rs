//! Offline tools for policy authors: test suites (`sluis test`), explain and replay.
//!
//! They share one way to describe a request and its caller ([`Case`]): the request as
//! the gateway would see it, and a token given either as claims (checked by the issuer's
//! rules, but not signed) or as a raw token verified like any other. Decisions come from
//! the real [`Engine`], so a passing suite says what Sluis will do in production. A case
//! may give the upstream's answer too (`response`): it is judged under the allow's grant
//! by the policy's `response_rules`, as the ext_proc door would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use sluis_config::Config;
use sluis_core::decision::{Decision, Outcome};
use sluis_core::engine::response::{AnswerShape, ResponseDecision};
use sluis_core::engine::{Credentials, Engine, Trace};
use sluis_core::policy::response::EntryVerdict;
use sluis_core::request::{AccessRequest, Source};
use sluis_core::response::{ResponseParts, ResponseVerdict};

/// A test suite file (`*.test.yaml`) beside the policies it tests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Flows the suite's requests are decided against (as the flows API takes them, or
    /// NutsAuthorizationCredentials). Without it, policies see no flows.
    #[serde(default)]
    #[schemars(with = "Vec<sluis_core::flows::Flow>")]
    pub flows: Vec<Json>,
    pub tests: Vec<TestCase>,
}

/// One test: a request, who sends it, and what Sluis must answer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub request: RequestSpec,
    /// No token: the request has no credentials (unless its headers carry some).
    pub token: Option<TokenSpec>,
    /// What information sources answer in this test: no cache and no network; a call no
    /// fixture matches fails (closed).
    #[serde(default)]
    pub sources: Vec<SourceFixture>,
    /// The upstream's answer, judged by the policy's `response_rules` when the request
    /// is allowed (`expect.response`).
    pub response: Option<ResponseSpec>,
    pub expect: Expect,
}

/// A fixture for calls to one information source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceFixture {
    /// The declared source's name.
    pub source: String,
    /// Only calls with exactly these arguments; any call to the source when absent.
    pub args: Option<Json>,
    /// The answer as the source would give it (JSON; `null` for not found).
    pub answer: Option<Json>,
    /// A failure instead: `timeout`, `connect`, `circuit_open`, `busy`, `invalid`, or
    /// `status:503`.
    pub error: Option<String>,
}

impl SourceFixture {
    fn fixture(&self) -> Result<sluis_core::sources::Fixture, String> {
        let answer = match (&self.answer, &self.error) {
            (answer, None) => {
                sluis_core::sources::FixtureAnswer::Value(answer.clone().unwrap_or(Json::Null))
            }
            (None, Some(error)) => sluis_core::sources::FixtureAnswer::Error(error.clone()),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "the fixture for source `{}` has both `answer` and `error`",
                    self.source
                ));
            }
        };
        Ok(sluis_core::sources::Fixture {
            source: self.source.clone(),
            args: self.args.clone(),
            answer,
        })
    }
}

/// A request and its caller: the input of tests, explain and replay.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub request: RequestSpec,
    /// No token: the request has no credentials (unless its headers carry some).
    pub token: Option<TokenSpec>,
    /// The upstream's answer to the request, judged by the policy's `response_rules`
    /// when the request is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseSpec>,
}

/// An upstream's answer, for a policy's `response_rules`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The body: a Bundle or a single resource (JSON, or YAML written like it), or a
    /// string sent as it is (e.g. XML).
    pub body: Json,
}

fn default_status() -> u16 {
    200
}

fn default_content_type() -> String {
    "application/fhir+json".into()
}

impl ResponseSpec {
    fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Json::String(text) => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        }
    }

    /// The body's entries (a Bundle's `entry`, or the resource as one entry), when it is
    /// JSON.
    fn entries(&self) -> Vec<Json> {
        match &self.body {
            Json::Object(body) if body.get("resourceType") == Some(&Json::from("Bundle")) => body
                .get("entry")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default(),
            Json::Object(_) => vec![serde_json::json!({"resource": self.body})],
            _ => Vec::new(),
        }
    }

    fn shape(&self) -> AnswerShape {
        AnswerShape {
            status: self.status,
            bundle_type: match &self.body {
                Json::Object(body) if body.get("resourceType") == Some(&Json::from("Bundle")) => {
                    body.get("type").and_then(Json::as_str).map(str::to_owned)
                }
                _ => None,
            },
        }
    }
}

/// What the response rules made of a case's answer.
#[derive(Debug, Clone)]
pub struct ResponseOutcome {
    pub decided: ResponseDecision,
    /// Per entry: its label (`Type/id`) and what the rules made of it on its own.
    pub entries: Vec<(String, EntryVerdict)>,
}

/// `Type/id` of an entry's resource, or its position.
fn entry_label(index: usize, entry: &Json) -> String {
    let resource = &entry["resource"];
    match (
        resource.get("resourceType").and_then(Json::as_str),
        resource.get("id").and_then(Json::as_str),
    ) {
        (Some(kind), Some(id)) => format!("{kind}/{id}"),
        (Some(kind), None) => format!("{kind} (entry {index})"),
        _ => format!("entry {index}"),
    }
}

impl Case {
    /// Judges the case's answer (`response`) under the grant of an allowed `decision`:
    /// `None` when the case has no answer or the decision carries no grant.
    pub async fn judge_response(
        &self,
        engine: &Engine,
        decision: &Decision,
    ) -> Option<ResponseOutcome> {
        let spec = self.response.as_ref()?;
        let Outcome::Allow(allow) = &decision.outcome else {
            return None;
        };
        let grant = allow.response_grant.as_deref()?;
        let headers = vec![("content-type".to_string(), spec.content_type.clone())];
        let body = spec.body_bytes();
        let decided = engine
            .judge_response(
                Some(grant),
                &ResponseParts {
                    status: spec.status,
                    headers: &headers,
                    body: &body,
                    from_upstream: true,
                },
            )
            .await;
        let entries = spec.entries();
        let judged = engine
            .judge_entries(grant, &entries, &spec.shape(), "sluis-test")
            .await;
        let entries = entries
            .iter()
            .enumerate()
            .zip(judged.entries)
            .map(|((index, entry), verdict)| (entry_label(index, entry), verdict))
            .collect();
        Some(ResponseOutcome { decided, entries })
    }
}

/// What a case's answer must come to. Only what is given is checked.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectResponse {
    /// `pass` (unchanged), `filter` (entries withheld) or `deny` (the whole answer).
    pub outcome: Option<ResponseOutcomeKind>,
    /// The entries the client gets (`Type/id`), in order.
    pub kept: Option<Vec<String>>,
    /// The status of a denial.
    pub status: Option<u16>,
    /// The deciding rule: the deny rule, `response` for a pass or filter,
    /// `response-unreadable`, `response-withheld`.
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResponseOutcomeKind {
    Pass,
    Filter,
    Deny,
}

/// How `outcome` differs from `expect`.
pub fn response_differences(expect: &ExpectResponse, outcome: &ResponseOutcome) -> Vec<String> {
    let mut differences = Vec::new();
    let decided = &outcome.decided;
    let (kind, status) = match &decided.verdict {
        ResponseVerdict::Pass { .. } => (ResponseOutcomeKind::Pass, None),
        ResponseVerdict::Filter { .. } => (ResponseOutcomeKind::Filter, None),
        ResponseVerdict::Deny(deny) => (ResponseOutcomeKind::Deny, Some(deny.status)),
    };
    if let Some(expected) = expect.outcome
        && expected != kind
    {
        differences.push(format!(
            "response: expected {expected:?}, got {kind:?} ({})",
            decided.reason
        ));
    }
    if let Some(expected) = expect.status
        && Some(expected) != status
    {
        differences.push(format!(
            "response status: expected {expected}, got {}",
            status.map_or("none".to_string(), |s| s.to_string())
        ));
    }
    if let Some(expected) = &expect.rule
        && **expected != *decided.rule
    {
        differences.push(format!(
            "response rule: expected `{expected}`, got `{}`",
            decided.rule
        ));
    }
    if let Some(expected) = &expect.kept {
        let kept: Vec<String> = match &decided.verdict {
            ResponseVerdict::Deny(_) => Vec::new(),
            ResponseVerdict::Pass { .. } => {
                outcome.entries.iter().map(|(l, _)| l.clone()).collect()
            }
            ResponseVerdict::Filter { body, .. } => {
                let filtered: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
                filtered["entry"]
                    .as_array()
                    .map(|entries| {
                        entries
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| {
                                e["resource"]["resourceType"] != "OperationOutcome"
                                    || e["search"]["mode"] != "outcome"
                            })
                            .map(|(i, e)| entry_label(i, e))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        if *expected != kept {
            differences.push(format!(
                "response entries kept: expected {expected:?}, got {kept:?}"
            ));
        }
    }
    differences
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "default_method")]
    pub method: String,
    /// Path with an optional query string, as sent: `/fhir/Patient?name=x`. Empty for an
    /// evaluation.
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Header names are case-insensitive.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// The client as the gateway saw it.
    pub source: Option<SourceSpec>,
    /// Gateway context extensions, e.g. `sluis_policy`.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// An evaluation (subject, action, resource, context) instead of an HTTP request, as
    /// the AuthZEN door passes it on: policies with `match.evaluation` decide it.
    pub evaluation: Option<EvaluationSpec>,
}

/// The parts of an evaluation, each a JSON object as an AuthZEN request carries it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSpec {
    pub subject: Json,
    pub action: Json,
    pub resource: Json,
    /// `{}` when not given.
    #[serde(default = "empty_object")]
    pub context: Json,
}

fn empty_object() -> Json {
    Json::Object(serde_json::Map::new())
}

fn default_method() -> String {
    "GET".into()
}

fn default_scheme() -> String {
    "https".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default)]
    pub address: String,
    /// Client certificate, PEM.
    pub certificate: Option<String>,
}

/// The caller's token: claims for a configured issuer (no signing needed; `iss`, `aud`,
/// `iat` and `exp` default to the issuer's values and a fresh token), or a raw token sent
/// as `Authorization: Bearer` and verified with the issuer's (local) keys.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The configured issuer name, for `claims`.
    pub issuer: Option<String>,
    pub claims: Option<serde_json::Map<String, Json>>,
    pub raw: Option<String>,
}

/// What the answer must be. Only what is given is checked.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: Option<Verdict>,
    pub status: Option<u16>,
    /// The deciding policy's id.
    pub policy: Option<String>,
    /// The deciding rule (or step: `authentication`, `scopes`, `default-deny`, `no-policy`,
    /// `graphql`, `graphql-template`).
    pub rule: Option<String>,
    /// Text the decision's reason (what the decision log and explain show) must contain,
    /// e.g. `closest `QIR-0001-ZKi`: extra field `wlzIndicatie.x``.
    pub reason: Option<String>,
    /// Headers set on an allowed request, or sent with a denial. `null`: must not be set.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// Headers an allowed request must lose.
    #[serde(default)]
    pub removed_headers: Vec<String>,
    /// Query parameters an allowed request must get.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub removed_query: Vec<String>,
    /// The deny body: a string to match exactly, or a JSON object whose fields the body
    /// must have.
    pub body: Option<Json>,
    /// What the case's `response` comes to under the policy's `response_rules`.
    pub response: Option<ExpectResponse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Case {
    /// The request as a gateway would describe it.
    pub fn access_request(&self) -> AccessRequest {
        let spec = &self.request;
        let mut request = AccessRequest {
            method: spec.method.to_ascii_uppercase(),
            scheme: spec.scheme.clone(),
            host: spec.host.clone(),
            protocol: "HTTP/1.1".into(),
            headers: spec
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: spec.body.clone(),
            source: spec
                .source
                .as_ref()
                .map(|s| Source {
                    address: s.address.clone(),
                    certificate: s.certificate.clone(),
                })
                .unwrap_or_default(),
            context: spec.context.clone().into_iter().collect::<HashMap<_, _>>(),
            evaluation: spec
                .evaluation
                .as_ref()
                .map(|e| sluis_core::request::Evaluation {
                    subject: e.subject.clone(),
                    action: e.action.clone(),
                    resource: e.resource.clone(),
                    context: e.context.clone(),
                }),
            ..Default::default()
        };
        request.set_target(&spec.path);
        if let Some(raw) = self.token.as_ref().and_then(|t| t.raw.as_ref()) {
            request
                .headers
                .insert("authorization".into(), format!("Bearer {raw}"));
        }
        request
    }

    fn check(&self) -> Result<(), String> {
        match &self.token {
            Some(TokenSpec {
                raw: Some(_),
                claims: None,
                issuer: None,
            })
            | None => Ok(()),
            Some(TokenSpec {
                raw: None,
                claims: Some(_),
                issuer: Some(_),
            }) => Ok(()),
            Some(_) => Err("`token` needs either `raw`, or `issuer` and `claims`".to_string()),
        }
    }

    /// Decides this case with the engine, recording the trace when asked.
    pub async fn decide(
        &self,
        engine: &Engine,
        trace: Option<&mut Trace>,
    ) -> Result<Decision, String> {
        self.decide_with(engine, trace, None).await
    }

    /// [`Case::decide`] with information sources answered by `fixtures` when given.
    pub async fn decide_with(
        &self,
        engine: &Engine,
        trace: Option<&mut Trace>,
        fixtures: Option<std::sync::Arc<[sluis_core::sources::Fixture]>>,
    ) -> Result<Decision, String> {
        self.check()?;
        let request = self.access_request();
        let credentials = match &self.token {
            Some(TokenSpec {
                issuer: Some(issuer),
                claims: Some(claims),
                ..
            }) => Credentials::Claims { issuer, claims },
            _ => Credentials::Request,
        };
        engine
            .decide_with_fixtures(&request, &credentials, trace, fixtures)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Builds an engine for offline use: keys from local files are loaded; keys behind URLs
/// are not fetched (use claims tokens for those issuers).
pub async fn offline_engine(config: &Config) -> Result<Engine, Vec<String>> {
    let engine = config.build_engine(std::sync::Arc::default())?;
    for issuer in engine.authenticator().issuers() {
        if issuer.has_local_keys() {
            issuer
                .refresh()
                .await
                .map_err(|e| vec![format!("issuer `{}`: {e}", issuer.name())])?;
        }
    }
    Ok(engine)
}

/// Compares a decision with the expectation; each difference is one readable line.
pub fn differences(expect: &Expect, decision: &Decision) -> Vec<String> {
    let mut out = Vec::new();
    let mut compare = |what: &str, expected: &str, actual: &str| {
        if expected != actual {
            out.push(format!("{what}: expected {expected}, got {actual}"));
        }
    };
    let verdict = if decision.is_allow() { "allow" } else { "deny" };
    if let Some(expected) = expect.decision {
        let expected = match expected {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        compare("decision", expected, verdict);
    }
    if let Some(status) = expect.status {
        compare(
            "status",
            &status.to_string(),
            &decision.status().to_string(),
        );
    }
    if let Some(policy) = &expect.policy {
        compare(
            "policy",
            &format!("`{policy}`"),
            &decision
                .policy
                .as_deref()
                .map(|p| format!("`{p}`"))
                .unwrap_or_else(|| "none".into()),
        );
    }
    if let Some(rule) = &expect.rule {
        compare(
            "rule",
            &format!("`{rule}`"),
            &format!("`{}`", decision.rule),
        );
    }
    if let Some(reason) = &expect.reason
        && !decision.reason.contains(reason.as_str())
    {
        out.push(format!(
            "reason: expected it to contain {reason:?}, got {:?}",
            decision.reason
        ));
    }
    let (headers, removed, query, removed_query, body): Observed = match &decision.outcome {
        Outcome::Allow(allow) => (
            &allow.set_headers,
            &allow.remove_headers,
            &allow.set_query,
            &allow.remove_query,
            None,
        ),
        Outcome::Deny(deny) => (&deny.headers, &[], &[], &[], Some(deny.body.as_str())),
    };
    let lookup = |list: &[(String, String)], name: &str| {
        list.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    for (name, expected) in &expect.headers {
        let actual = lookup(headers, name);
        if actual != *expected {
            out.push(format!(
                "header `{name}`: expected {}, got {}",
                shown(expected.as_deref()),
                shown(actual.as_deref())
            ));
        }
    }
    for name in &expect.removed_headers {
        if !removed.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            out.push(format!(
                "header `{name}`: expected to be removed, removed are {removed:?}"
            ));
        }
    }
    for (name, expected) in &expect.query {
        // Query parameter names are case-sensitive, unlike header names.
        let actual = query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        if actual.as_deref() != Some(expected.as_str()) {
            out.push(format!(
                "query `{name}`: expected {}, got {}",
                shown(Some(expected)),
                shown(actual.as_deref())
            ));
        }
    }
    for name in &expect.removed_query {
        if !removed_query.contains(name) {
            out.push(format!(
                "query `{name}`: expected to be removed, removed are {removed_query:?}"
            ));
        }
    }
    if let Some(expected) = &expect.body {
        match body {
            None => out.push(format!(
                "body: expected {expected}, but the request was allowed"
            )),
            Some(actual) => {
                if let Some(problem) = body_difference(expected, actual) {
                    out.push(problem);
                }
            }
        }
    }
    out
}

/// What a decision does, in the shape expectations are checked against: headers set,
/// headers removed, query set, query removed, deny body.
type Observed<'a> = (
    &'a [(String, String)],
    &'a [String],
    &'a [(String, String)],
    &'a [String],
    Option<&'a str>,
);

fn shown(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "nothing".into(),
    }
}

fn body_difference(expected: &Json, actual: &str) -> Option<String> {
    match expected {
        Json::String(text) => {
            (text != actual).then(|| format!("body: expected {text:?}, got {actual:?}"))
        }
        Json::Object(fields) => {
            let parsed: Json = match serde_json::from_str(actual) {
                Ok(parsed) => parsed,
                Err(_) => return Some(format!("body: expected JSON, got {actual:?}")),
            };
            let wrong: Vec<String> = fields
                .iter()
                .filter(|(k, v)| parsed.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "`{k}` expected {v}, got {}",
                        parsed
                            .get(k.as_str())
                            .map(Json::to_string)
                            .unwrap_or("nothing".into())
                    )
                })
                .collect();
            (!wrong.is_empty()).then(|| format!("body: {}", wrong.join("; ")))
        }
        other => Some(format!("body: expect a string or an object, not {other}")),
    }
}

/// The result of one test case.
pub struct CaseResult {
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
    /// The deciding policy and rule, and the response rules that decided entries of
    /// the answer, for coverage.
    pub decided_by: Vec<(String, String)>,
}

/// The result of one suite file.
pub struct SuiteResult {
    pub file: PathBuf,
    /// A suite that could not be read or parsed.
    pub error: Option<String>,
    pub cases: Vec<CaseResult>,
}

/// Finds the suites: `paths` if given (files, or directories to search), else every
/// `*.test.yaml` beside the configured policies.
pub fn suite_files(config: &Config, paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = if paths.is_empty() {
        config
            .policies
            .iter()
            .map(|p| config.resolve(p))
            .map(|p| {
                if p.is_dir() {
                    p
                } else {
                    p.with_extension("test.yaml")
                }
            })
            .collect()
    } else {
        paths.to_vec()
    };
    roots.dedup();
    let mut files = BTreeSet::new();
    for root in roots {
        if root.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&root) {
                for entry in entries.filter_map(Result::ok) {
                    let path = entry.path();
                    if is_suite(&path) {
                        files.insert(path);
                    }
                }
            }
        } else if root.is_file() {
            files.insert(root);
        }
    }
    files.into_iter().collect()
}

fn is_suite(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// Runs one suite file.
pub async fn run_suite(engine: &Engine, file: &Path) -> SuiteResult {
    let mut result = SuiteResult {
        file: file.to_owned(),
        error: None,
        cases: Vec::new(),
    };
    let parsed: Result<TestFile, String> = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|text| {
            serde_yaml_ng::from_str(&text).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!("line {}: ", l.line()))
                    .unwrap_or_default();
                format!("{at}{}", sluis_core::yaml_error_message(&e))
            })
        });
    let suite = match parsed {
        Ok(suite) => suite,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    for (i, value) in suite.flows.into_iter().enumerate() {
        match sluis_core::flows::Flow::from_json(value) {
            Ok(flow) => flows.push(flow),
            Err(e) => errors.extend(e.into_iter().map(|e| {
                let e = e.at(i);
                format!("flows{}: {}", e.field, e.message)
            })),
        }
    }
    if !errors.is_empty() {
        result.error = Some(errors.join("; "));
        return result;
    }
    engine.set_flows(std::sync::Arc::new(
        sluis_core::flows::FlowIndex::from_flows(&flows),
    ));
    for test in suite.tests {
        let case = Case {
            request: test.request,
            token: test.token,
            response: test.response,
        };
        // Always fixtures, even none: a test never reaches the network.
        let fixtures = match test
            .sources
            .iter()
            .map(SourceFixture::fixture)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(fixtures) => std::sync::Arc::from(fixtures),
            Err(e) => {
                result.cases.push(CaseResult {
                    name: test.name,
                    failures: vec![e],
                    decided_by: Vec::new(),
                });
                continue;
            }
        };
        let (failures, decided_by) = match case.decide_with(engine, None, Some(fixtures)).await {
            Ok(decision) => {
                let mut failures = differences(&test.expect, &decision);
                let mut decided_by: Vec<(String, String)> = decision
                    .policy
                    .as_ref()
                    .map(|p| (p.to_string(), decision.rule.to_string()))
                    .into_iter()
                    .collect();
                match (case.judge_response(engine, &decision).await, &test.expect.response) {
                    (Some(outcome), expect) => {
                        if let Some(expect) = expect {
                            failures.extend(response_differences(expect, &outcome));
                        }
                        if let Some(policy) = &outcome.decided.policy {
                            decided_by.extend(outcome.entries.iter().filter_map(|(_, v)| {
                                v.rule().map(|r| (policy.to_string(), r.to_owned()))
                            }));
                        }
                    }
                    (None, Some(_)) => failures.push(
                        "response: no answer was judged (a `response`, and an allow of a policy with `response_rules`, are needed)".into(),
                    ),
                    (None, None) => {}
                }
                (failures, decided_by)
            }
            Err(e) => (vec![format!("no decision: {e}")], Vec::new()),
        };
        result.cases.push(CaseResult {
            name: test.name,
            failures,
            decided_by,
        });
    }
    result
}

/// Rules of the loaded policies that decided none of the cases.
pub fn uncovered(engine: &Engine, results: &[SuiteResult]) -> Vec<String> {
    let decided: BTreeSet<(String, String)> = results
        .iter()
        .flat_map(|s| s.cases.iter().flat_map(|c| c.decided_by.iter().cloned()))
        .collect();
    let mut missing = Vec::new();
    for policy in &engine.policies().policies {
        let rules = policy
            .rules
            .iter()
            .map(|r| r.id.clone())
            .chain(policy.response_rule_ids());
        for rule in rules {
            if !decided.contains(&(policy.id.to_string(), rule.to_string())) {
                missing.push(format!(
                    "{}/{} ({})",
                    policy.id,
                    rule,
                    policy.file.display()
                ));
            }
        }
    }
    missing
}

/// Runs every suite and prints a report like a test runner. Returns whether all passed.
pub async fn run_and_report(
    config: &Config,
    paths: &[PathBuf],
    coverage: bool,
    out: &mut dyn std::io::Write,
) -> std::io::Result<bool> {
    let engine = match offline_engine(config).await {
        Ok(engine) => engine,
        Err(errors) => {
            for error in errors {
                writeln!(out, "{error}")?;
            }
            writeln!(out, "0 passed, 1 failed")?;
            return Ok(false);
        }
    };
    let files = suite_files(config, paths);
    let mut results = Vec::new();
    for file in &files {
        results.push(run_suite(&engine, file).await);
    }
    let (mut passed, mut failed) = (0, 0);
    for suite in &results {
        writeln!(out, "{}", suite.file.display())?;
        if let Some(error) = &suite.error {
            writeln!(out, "  ERROR {error}")?;
            failed += 1;
        }
        for case in &suite.cases {
            if case.failures.is_empty() {
                passed += 1;
                writeln!(out, "  pass  {}", case.name)?;
            } else {
                failed += 1;
                writeln!(out, "  FAIL  {}", case.name)?;
                for failure in &case.failures {
                    writeln!(out, "        {failure}")?;
                }
            }
        }
    }
    if files.is_empty() {
        writeln!(out, "no test suites (*.test.yaml) found")?;
    }
    if coverage {
        let missing = uncovered(&engine, &results);
        if missing.is_empty() {
            writeln!(out, "coverage: every rule decided at least one case")?;
        } else {
            writeln!(out, "coverage: {} rule(s) decided no case:", missing.len())?;
            for rule in &missing {
                writeln!(out, "  {rule}")?;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(failed == 0 && !files.is_empty())
}

/// What the response rules made of a case's answer, as JSON (`sluis explain --json`).
pub fn response_explanation_json(outcome: &ResponseOutcome) -> Json {
    let decided = &outcome.decided;
    let (verdict, status) = match &decided.verdict {
        ResponseVerdict::Pass { .. } => ("pass", None),
        ResponseVerdict::Filter { .. } => ("filter", None),
        ResponseVerdict::Deny(deny) => ("deny", Some(deny.status)),
    };
    let entries: Vec<Json> = outcome
        .entries
        .iter()
        .map(|(label, verdict)| {
            let (decision, reason) = match verdict {
                EntryVerdict::Keep { .. } => ("keep", None),
                EntryVerdict::Withhold { reason, .. } => ("withhold", Some(reason)),
                EntryVerdict::Deny { reason, .. } => ("deny", Some(reason)),
            };
            serde_json::json!({
                "entry": label,
                "decision": decision,
                "rule": verdict.rule(),
                "reason": reason,
            })
        })
        .collect();
    serde_json::json!({
        "outcome": verdict,
        "status": status,
        "policy": decided.policy.as_deref(),
        "rule": &*decided.rule,
        "reason": decided.reason,
        "kept": decided.kept,
        "withheld": decided.withheld,
        "entries": entries,
    })
}

/// What the response rules made of a case's answer, per entry, for a terminal.
pub fn response_explanation_text(outcome: &ResponseOutcome) -> String {
    let decided = &outcome.decided;
    let verdict = match &decided.verdict {
        ResponseVerdict::Pass { .. } => "pass (unchanged)".to_string(),
        ResponseVerdict::Filter { .. } => format!(
            "filter ({} kept, {} withheld)",
            decided.kept, decided.withheld
        ),
        ResponseVerdict::Deny(deny) => format!("deny {}", deny.status),
    };
    let mut text = format!(
        "response: {verdict} by `{}` of policy `{}`: {}\n",
        decided.rule,
        decided.policy.as_deref().unwrap_or("-"),
        decided.reason
    );
    for (label, entry) in &outcome.entries {
        let line = match entry {
            EntryVerdict::Keep { rule } => format!("  {label}: kept by `{rule}`"),
            EntryVerdict::Withhold { reason, .. } => format!("  {label}: withheld: {reason}"),
            EntryVerdict::Deny { rule, status, .. } => {
                format!("  {label}: denies the answer ({status}) by `{rule}`")
            }
        };
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Decision and trace as one JSON document (`sluis explain --json`, the admin endpoint).
pub fn explanation_json(decision: &Result<Decision, String>, trace: &Trace) -> Json {
    let decision = match decision {
        Ok(d) => {
            let (outcome, detail) = match &d.outcome {
                Outcome::Allow(allow) => (
                    "allow",
                    serde_json::json!({
                        "set_headers": allow.set_headers,
                        "remove_headers": allow.remove_headers,
                        "set_query": allow.set_query,
                        "remove_query": allow.remove_query,
                    }),
                ),
                Outcome::Deny(deny) => (
                    "deny",
                    serde_json::json!({"headers": deny.headers, "body": deny.body}),
                ),
            };
            serde_json::json!({
                "outcome": outcome,
                "status": d.status(),
                "policy": d.policy.as_deref(),
                "rule": &*d.rule,
                "reason": d.reason,
                "response": detail,
            })
        }
        Err(e) => serde_json::json!({"outcome": "unavailable", "reason": e}),
    };
    serde_json::json!({"decision": decision, "trace": trace})
}

/// The trace as text for a terminal.
pub fn explanation_text(decision: &Result<Decision, String>, trace: &Trace) -> String {
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    match decision {
        Ok(d) => line(format!(
            "decision: {} {} (policy {}, rule `{}`)\nreason: {}",
            if d.is_allow() { "ALLOW" } else { "DENY" },
            d.status(),
            d.policy
                .as_deref()
                .map(|p| format!("`{p}`"))
                .unwrap_or("none".into()),
            d.rule,
            d.reason
        )),
        Err(e) => line(format!("decision: UNAVAILABLE ({e})")),
    }
    line(format!("policy: {}", trace.policy));
    for step in &trace.identity {
        line(format!("identity: {step}"));
    }
    if let Some(flows) = &trace.flows {
        line(format!("flows: {flows}"));
    }
    if let Some(caller) = &trace.caller {
        line(format!("caller: {caller}"));
    }
    if let Some(graphql) = &trace.graphql {
        line(format!("graphql: {graphql}"));
    }
    if let Some(fhir) = &trace.fhir {
        line(format!("fhir: {fhir}"));
    }
    if let Some(scopes) = &trace.scopes {
        line(format!(
            "scopes: required {:?}, present {:?}, missing {:?}",
            scopes.required, scopes.present, scopes.missing
        ));
    }
    for lookup in &trace.lookups {
        line(format!(
            "lookup sources.{}({}): cache {}, {} ({} ms){}",
            lookup.source,
            lookup.args,
            lookup.cache,
            lookup.outcome,
            lookup.ms,
            lookup
                .value
                .as_ref()
                .map(|v| format!("\n    = {v}"))
                .unwrap_or_default()
        ));
    }
    for rule in &trace.rules {
        line(format!(
            "rule `{}` ({}): {}\n  {}",
            rule.rule, rule.effect, rule.result, rule.condition
        ));
        for (part, value) in &rule.parts {
            line(format!("    {part} = {value}"));
        }
    }
    if let Ok(Decision {
        outcome: Outcome::Allow(allow),
        ..
    }) = decision
    {
        for (name, value) in &allow.set_headers {
            line(format!("set header {name}: {value}"));
        }
        line(format!(
            "remove headers: {}",
            allow.remove_headers.join(", ")
        ));
        for (name, value) in &allow.set_query {
            line(format!("set query {name}={value}"));
        }
    }
    if let Ok(Decision {
        outcome: Outcome::Deny(deny),
        ..
    }) = decision
    {
        for (name, value) in &deny.headers {
            line(format!("response header {name}: {value}"));
        }
        line(format!("response body: {}", deny.body));
    }
    text
}

/// One changed decision found by [`replay`].
pub struct Change {
    pub line: usize,
    pub request: String,
    pub before: String,
    pub after: String,
    /// Candidate policy and rule that now decide.
    pub now_decided_by: String,
}

/// Decides every recorded case with both engines; returns the changes and the number of
/// cases replayed. A line that cannot be read is an error naming it.
pub async fn replay(
    current: &Engine,
    candidate: &Engine,
    records: &str,
) -> Result<(Vec<Change>, usize), String> {
    let mut changes = Vec::new();
    let mut count = 0;
    for (index, text) in records.lines().enumerate() {
        let number = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(text)
            .map_err(|e| format!("line {number}: not a recorded request: {e}"))?;
        count += 1;
        let before = case.decide(current, None).await;
        let after = case.decide(candidate, None).await;
        let summary = |d: &Result<Decision, String>| match d {
            Ok(d) => format!(
                "{} {} by {}/{}",
                if d.is_allow() { "allow" } else { "deny" },
                d.status(),
                d.policy.as_deref().unwrap_or("-"),
                d.rule
            ),
            Err(e) => format!("unavailable ({e})"),
        };
        let verdict =
            |d: &Result<Decision, String>| d.as_ref().map(|d| (d.is_allow(), d.status())).ok();
        if verdict(&before) != verdict(&after) {
            changes.push(Change {
                line: number,
                request: format!("{} {}", case.request.method, case.request.path),
                before: summary(&before),
                after: summary(&after),
                now_decided_by: match &after {
                    Ok(d) => format!("{}/{}", d.policy.as_deref().unwrap_or("-"), d.rule),
                    Err(_) => "unavailable".into(),
                },
            });
        }
    }
    Ok((changes, count))
}
