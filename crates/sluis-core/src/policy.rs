//! Policies: loading and checking the YAML files ([`spec`]), compiling their CEL
//! ([`expr`]), choosing the policy for a request and evaluating its rules; the caller's
//! party identifiers ([`caller`]), SMART scopes ([`smart`]), FHIR search narrowing
//! ([`narrowing`]) and GraphQL requests and query templates ([`graphql`]).
//!
//! Semantics, in order: the policy named by the gateway (`sluis_policy` context extension)
//! or else the first whose `match` fits decides; no policy → deny. The policy's issuers and
//! scopes are checked (by the engine, see `engine`), then its rules: any deny rule
//! that is true denies (deny overrides allow), else the first allow rule that is true
//! allows, else the request is denied. A rule whose expression fails to evaluate counts as
//! true for deny rules and false for allow rules: an error never lets a request through.

pub mod caller;
pub mod diagnostic;
pub mod expr;
pub mod fhir;
pub mod graphql;
pub mod narrowing;
pub mod positions;
pub mod response;
pub mod search;
pub mod smart;
pub mod spec;
pub mod trace;

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::authn::Identity;
use crate::decision::{Allow, Decision, Deny, DenyCode, Outcome, bad_request_body, deny_body};
use crate::flows::FlowIndex;
use crate::request::{AccessRequest, Evaluation};
pub use diagnostic::{Diagnostic, DiagnosticKind, LoadError, Severity};
use expr::{Expr, ExprError, FlowSource, GraphqlFields, RequestFields, Vars};
use positions::{Position, Positions, Step};
pub use spec::MethodOverride;
use spec::{PolicyFile, PolicyMode, PolicySpec, RuleSpec};
use trace::{RuleTrace, Trace};

/// Every loaded policy, compiled, in decision order. Immutable: a reload builds a new set
/// and swaps it in whole.
#[derive(Debug)]
pub struct PolicySet {
    pub policies: Vec<Arc<Policy>>,
    by_id: HashMap<String, usize>,
    /// Files the set was loaded from, for the reload watcher.
    pub files: Vec<PathBuf>,
    /// A hash of every policy file's content: which policy set decided, for logs.
    pub version: String,
    /// Policies a `select` names: chosen only by a token's scope, never by `match`.
    scope_only: HashSet<Arc<str>>,
}

#[derive(Debug)]
pub struct Policy {
    pub id: Arc<str>,
    pub file: PathBuf,
    pub description: String,
    /// Enforced, or only watched ([`PolicyMode::Shadow`]): the engine turns a shadow
    /// policy's decision into an allow ([`Policy::pass_through`]).
    pub mode: PolicyMode,
    hosts: Vec<String>,
    paths: Vec<String>,
    /// Per entry of `paths`, how a request path is held to it ([`PathGlob`]).
    path_globs: Vec<PathGlob>,
    methods: Vec<String>,
    /// Accepted issuers (configured names); empty when the policy is anonymous.
    pub issuers: Vec<Arc<str>>,
    pub anonymous: bool,
    /// What a request with a method-override header gets.
    pub method_override: MethodOverride,
    pub scopes: Vec<String>,
    pub realm: String,
    pub rules: Vec<Rule>,
    response: Response,
    deny_response: Option<Deny>,
    /// The `request` fields any of its expressions read.
    request_fields: RequestFields,
    /// Where a client certificate comes from besides the gateway's check (config).
    certificate_header: Option<crate::authn::settings::CertificateHeader>,
    /// How the caller's flows are found, when the policy reads them.
    flows: Option<PolicyFlows>,
    /// Search parameters its allowed FHIR searches get ([`narrowing`]).
    narrowing: Option<narrowing::Narrowing>,
    /// Which evaluations it decides; `None`: it decides HTTP requests, never evaluations.
    evaluation: Option<EvaluationMatch>,
    /// The policy's `data`, converted once at load and shared by every request.
    data: Option<expr::Data>,
    /// How its requests are read as GraphQL, and the templates they must fit.
    graphql: Option<graphql::PolicyGraphql>,
    /// The `graphql` fields its rules and response read.
    graphql_fields: GraphqlFields,
    /// The caller's identifiers its expressions read as `caller` (empty: none).
    caller: caller::Caller,
    /// How its requests are read as FHIR, and the CapabilityStatement bounding them.
    fhir: Option<fhir::PolicyFhir>,
    /// Whether an expression reads `request.fhir`: only then (or with a statement) is
    /// the request read as FHIR.
    uses_fhir: bool,
    /// The answer to a token lacking a required scope, when not RFC 6750's.
    scope_response: Option<Deny>,
    /// Which resources of the upstream's answer the caller may see ([`response`]).
    response_rules: Option<response::ResponseRules>,
    /// The policies the token's scopes choose, when this policy only selects.
    pub select: Option<Selector>,
    /// Whether `match` was left out: a policy chosen by scope must have none.
    unmatched: bool,
    /// The candidates AuthZEN searches try ([`search`]); `None`: it cannot be searched.
    search: Option<search::PolicySearch>,
    /// Whether a rule calls an information source; only then does a decision get look-ups.
    pub uses_sources: bool,
    /// What a failed look-up does.
    pub on_error: spec::OnError,
}

/// `select:` compiled: the policies a token's scopes may name.
#[derive(Debug)]
pub struct Selector {
    pub by_scope: Vec<Arc<str>>,
    pub normalize: spec::ScopeNormalize,
}

/// What one pass over a policy's rules gave: a decision, or look-ups to fetch first.
#[derive(Debug)]
pub enum Pass {
    Decided(Decision),
    Needs(Vec<crate::sources::Pending>),
}

/// `match.evaluation`: empty lists match anything.
#[derive(Debug)]
struct EvaluationMatch {
    actions: Vec<String>,
    resource_types: Vec<String>,
    subject_types: Vec<String>,
}

#[derive(Debug)]
struct PolicyFlows {
    actor: Expr,
    /// Shared with every request's flow values, not copied per request.
    base_path: Arc<str>,
    purposes: Vec<String>,
}

#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub effect: Effect,
    pub condition: Expr,
    status: u16,
    message: Option<String>,
    /// The reason of an allow by this rule, written once at load: an allow clones it
    /// rather than formatting it per decision.
    allowed: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Default)]
struct Response {
    set_headers: Vec<(String, Expr)>,
    remove_headers: Vec<String>,
    /// Header names and `prefix*` patterns removed from every allowed request.
    strip_headers: Vec<String>,
    keep_authorization: bool,
    forward_claims: Option<String>,
    set_query: Vec<(String, Expr)>,
    remove_query: Vec<String>,
}

/// What a policy set is loaded with: where its files are, and what of the service the
/// policies may name. The server and the tools fill it in from the config file.
#[derive(Debug, Clone, Default)]
pub struct LoadSettings {
    /// Policy files, and directories whose `*.yaml`/`*.yml` are policy files, as the
    /// config names them (relative to [`Self::base_dir`]).
    pub policies: Vec<PathBuf>,
    /// The configured issuers' names: a policy may accept only these.
    pub issuers: Vec<String>,
    /// Where a client certificate comes from besides the gateway's check.
    pub client_certificate: Option<crate::authn::settings::CertificateHeader>,
    /// Headers every allow strips (`strip_headers`), besides what a policy injects.
    pub strip_headers: Vec<String>,
    /// The config file's directory: relative paths are resolved against it.
    pub base_dir: PathBuf,
    /// The declared information sources, name and kind: rules may call only these.
    pub sources: Vec<(String, &'static str)>,
}

impl LoadSettings {
    /// A path from the config, resolved against [`Self::base_dir`].
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

impl PolicySet {
    /// Loads every policy `config` names. All problems are reported, not just the first.
    pub fn load(config: &LoadSettings) -> Result<PolicySet, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let named = named_policy_files(config, &mut errors);
        let mut policies: Vec<Arc<Policy>> = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        // Every id seen, also of policies with errors, so duplicates are reported too.
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        // The version names the set's content, not where it was loaded from: file names
        // relative to their policy root (the directory the config names, or the file's
        // own name), each field length-framed so that moving bytes between a name and a
        // text cannot give the same digest. `examples/config.yaml`, `./examples/...`, an
        // absolute path or a run from `examples/` therefore give one version.
        let mut hasher = Sha256::new();
        hasher.update(b"sluis-policy-set/2\0");
        let mut files = Vec::with_capacity(named.len());
        for (file, name) in named {
            files.push(file.clone());
            let file = &file;
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(Diagnostic::in_file(
                        DiagnosticKind::Io,
                        file,
                        format!("cannot read: {e}"),
                    ));
                    continue;
                }
            };
            feed(&mut hasher, name.as_bytes());
            feed(&mut hasher, text.as_bytes());
            let policy_dir = file.parent().unwrap_or(Path::new(""));
            // Built at the first duplicate only.
            let positions = OnceCell::new();
            for Loaded { id, index, policy } in load_file(file, &text, config, &mut errors) {
                for (path, source) in policy
                    .iter()
                    .filter_map(|p| p.graphql.as_ref())
                    .flat_map(|g| &g.sources)
                {
                    let relative = path.strip_prefix(policy_dir).unwrap_or(path);
                    feed(&mut hasher, relative.to_string_lossy().as_bytes());
                    feed(&mut hasher, source.as_bytes());
                }
                for (path, digest) in policy
                    .iter()
                    .filter_map(|p| p.fhir.as_ref())
                    .filter_map(|f| f.statement_file.as_ref())
                {
                    hasher.update(path.to_string_lossy().as_bytes());
                    hasher.update(digest);
                }
                if let Some(first) = seen.get(&id) {
                    let at = positions.get_or_init(|| Positions::of(&text)).key(&[
                        Step::from("policies"),
                        Step::Index(index),
                        Step::from("id"),
                    ]);
                    errors.push(Diagnostic {
                        line: at.map(|p| p.line),
                        column: at.map(|p| p.column),
                        policy: Some(id.clone()),
                        ..Diagnostic::in_file(
                            DiagnosticKind::DuplicateId,
                            file,
                            format!(
                                "duplicate policy id, first defined in `{}`",
                                first.display()
                            ),
                        )
                    });
                    continue;
                }
                seen.insert(id, file.clone());
                if let Some(policy) = policy {
                    by_id.insert(policy.id.to_string(), policies.len());
                    policies.push(Arc::new(policy));
                }
            }
        }
        if errors.is_empty() && policies.is_empty() {
            errors.push(Diagnostic::in_file(
                DiagnosticKind::NoPolicies,
                &config.base_dir,
                "no policies found in the configured locations".into(),
            ));
        }
        let scope_only = check_selectors(&policies, &by_id, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let digest = hasher.finalize();
        let version = hex::encode(digest.get(..6).unwrap_or_default());
        Ok(PolicySet {
            policies,
            by_id,
            files,
            version,
            scope_only,
        })
    }

    /// The query template and CapabilityStatement files the set's policies read: a
    /// reload watches their directories too, so an edited template or statement takes
    /// effect like an edited policy.
    pub fn template_files(&self) -> impl Iterator<Item = &Path> {
        let templates = self
            .policies
            .iter()
            .filter_map(|p| p.graphql.as_ref())
            .flat_map(|g| g.sources.iter().map(|(path, _)| path.as_path()));
        let statements = self
            .policies
            .iter()
            .filter_map(|p| p.fhir.as_ref())
            .filter_map(|f| f.statement_file.as_ref().map(|(path, _)| path.as_path()));
        templates.chain(statements)
    }

    /// What an operator must know about the set's shadow policies: each lets every
    /// request it is chosen for through.
    pub fn shadow_warnings(&self) -> Vec<String> {
        self.policies
            .iter()
            .filter(|p| p.is_shadow())
            .map(|p| {
                let mut warning = format!(
                    "policy `{}` is in shadow mode: every request it decides is let through, its denials are only logged (`mode: enforce` to enforce it)",
                    p.id
                );
                if p.narrowing.is_some() {
                    warning.push_str("; its searches are not narrowed while it would deny them");
                }
                warning
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Policy>> {
        self.by_id.get(id).and_then(|&i| self.policies.get(i))
    }

    /// The policy that decides `request`: the one the gateway names, else the first match.
    pub fn select(&self, request: &AccessRequest) -> Result<&Arc<Policy>, String> {
        if let Some(name) = request.context.get(crate::request::POLICY_CONTEXT_KEY) {
            return self
                .get(name)
                .ok_or_else(|| format!("the gateway names policy `{name}`, which is not loaded"));
        }
        self.policies
            .iter()
            .filter(|policy| !self.scope_only.contains(&policy.id))
            .find(|policy| policy.matches(request))
            .ok_or_else(|| "no policy matches this request".to_string())
    }

    /// Why `chosen` decides `request`, for explain output.
    pub fn why(&self, request: &AccessRequest, chosen: &Policy) -> String {
        if request
            .context
            .contains_key(crate::request::POLICY_CONTEXT_KEY)
        {
            return format!(
                "policy `{}`, named by the gateway (context extension `{}`)",
                chosen.id,
                crate::request::POLICY_CONTEXT_KEY
            );
        }
        let skipped = self.why_not(request);
        let fits = match &chosen.evaluation {
            Some(e) => format!(
                "evaluation actions {:?}, resource types {:?}, subject types {:?}",
                e.actions, e.resource_types, e.subject_types
            ),
            None => format!(
                "methods {:?}, paths {:?}, hosts {:?}",
                chosen.methods, chosen.paths, chosen.hosts
            ),
        };
        format!(
            "policy `{}` ({}): the first whose match fits ({fits}){}",
            chosen.id,
            chosen.file.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {skipped}")
            }
        )
    }

    /// The policies before the first match, and what of theirs did not fit.
    pub fn why_not(&self, request: &AccessRequest) -> String {
        let skipped: Vec<String> = self
            .policies
            .iter()
            .map_while(|p| {
                p.mismatch(request)
                    .map(|what| format!("`{}` ({what})", p.id))
            })
            .collect();
        if skipped.is_empty() {
            String::new()
        } else {
            format!("skipped: {}", skipped.join(", "))
        }
    }
}

/// Checks every `select`: the policies it names exist, have no `match`, select nothing
/// themselves, accept the selector's issuers and are enforced. Returns the ids named.
fn check_selectors(
    policies: &[Arc<Policy>],
    by_id: &HashMap<String, usize>,
    errors: &mut Vec<Diagnostic>,
) -> HashSet<Arc<str>> {
    let mut named = HashSet::new();
    for selector_policy in policies {
        let Some(selector) = &selector_policy.select else {
            continue;
        };
        for id in &selector.by_scope {
            let problem = match by_id.get(&**id).and_then(|&i| policies.get(i)) {
                None => Some("is not loaded".to_owned()),
                Some(p) if p.select.is_some() => Some("selects policies itself".to_owned()),
                Some(p) if !p.unmatched => {
                    Some("has a `match`; a policy chosen by scope must have none".to_owned())
                }
                Some(p) if p.is_shadow() => Some("is in shadow mode".to_owned()),
                Some(p) => selector_policy
                    .issuers
                    .iter()
                    .find(|i| !p.issuers.contains(i))
                    .map(|i| format!("does not accept issuer `{i}`")),
            };
            match problem {
                Some(problem) => errors.push(Diagnostic {
                    policy: Some(selector_policy.id.to_string()),
                    ..Diagnostic::in_file(
                        DiagnosticKind::Conflict,
                        &selector_policy.file,
                        format!("`select.by_scope` names policy `{id}`, which {problem}"),
                    )
                }),
                None => {
                    named.insert(id.clone());
                }
            }
        }
    }
    named
}

/// The policy files named by the config: files as given, directories' `*.yaml`/`*.yml`
/// (sorted, not recursive, skipping `*.test.yaml` suites and hidden files).
pub fn policy_files(config: &LoadSettings, errors: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    named_policy_files(config, errors)
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// One length-framed field of the policy-set version.
fn feed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// [`policy_files`], each with its name relative to the policy root the config names (a
/// directory's entries by their file name, a file by its own name): what the version hashes.
fn named_policy_files(
    config: &LoadSettings,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(PathBuf, String)> {
    let name_of = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut files = Vec::new();
    for entry in &config.policies {
        let path = config.resolve(entry);
        if path.is_dir() {
            let mut found: Vec<PathBuf> = match std::fs::read_dir(&path) {
                Ok(dir) => dir
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| is_policy_file(p))
                    .collect(),
                Err(e) => {
                    errors.push(Diagnostic::in_file(
                        DiagnosticKind::Io,
                        &path,
                        format!("cannot list: {e}"),
                    ));
                    continue;
                }
            };
            found.sort();
            files.extend(found.into_iter().map(|p| {
                let name = name_of(&p);
                (p, name)
            }));
        } else if path.is_file() {
            let name = name_of(&path);
            files.push((path, name));
        } else {
            errors.push(Diagnostic::in_file(
                DiagnosticKind::Io,
                &path,
                "no such policy file or directory".into(),
            ));
        }
    }
    files
}

fn is_policy_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".test.yaml")
        && !name.ends_with(".test.yml")
        && path.is_file()
}

/// Checks every policy `config` names, as [`PolicySet::load`] does, and returns what is
/// wrong, located in its file; empty when the set would load. The validator of `sluis
/// validate`, editors and CI: nothing is evaluated and no set is kept.
pub fn validate(config: &LoadSettings) -> Vec<Diagnostic> {
    PolicySet::load(config).err().unwrap_or_default()
}

/// Compiles the policies in `text`, read as the policy file `file`, as [`PolicySet::load`]
/// does each file it reads: every problem, none when all compile. For the fuzz target and
/// its regression test, which feed policy text that is in no file.
pub fn check_file_text(file: &Path, text: &str, config: &LoadSettings) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    load_file(file, text, config, &mut errors);
    errors
}

/// A policy read from a file: its id, its index in the file's `policies`, and the policy
/// when it compiled without problems.
struct Loaded {
    id: String,
    index: usize,
    policy: Option<Policy>,
}

/// What kind of problem a serde message reports.
fn serde_kind(message: &str) -> DiagnosticKind {
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        DiagnosticKind::UnknownField
    } else if message.starts_with("missing field")
        || message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("invalid length")
    {
        DiagnosticKind::InvalidValue
    } else {
        DiagnosticKind::Syntax
    }
}

fn load_file(
    file: &Path,
    text: &str,
    config: &LoadSettings,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Loaded> {
    let parsed: PolicyFile = match serde_yaml_ng::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let location = e.location();
            let message = crate::yaml_error_message(&e);
            errors.push(Diagnostic {
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                ..Diagnostic::in_file(serde_kind(&message), file, message)
            });
            return Vec::new();
        }
    };
    // Built at the first problem only: a good file is parsed once.
    let positions = OnceCell::new();
    let mut loaded = Vec::new();
    for (index, value) in parsed.policies.into_iter().enumerate() {
        let id = value
            .get("id")
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        let mut report = Reporter {
            file,
            text,
            positions: &positions,
            out: errors,
            policy: id.clone().unwrap_or_else(|| format!("#{}", index + 1)),
            base: vec![Step::from("policies"), Step::Index(index)],
        };
        let before = report.out.len();
        let spec = match report.read::<PolicySpec>(value, None, &[]) {
            Read::Good(spec) => spec,
            failed => {
                if let Read::UnknownKeys(spec) = failed {
                    // Its rules' unknown keys too, in the same answer; nothing more, as
                    // the policy without the keys left out is not what its author meant.
                    for (index, value) in spec.rules.into_iter().enumerate() {
                        let name = rule_name(&value, index);
                        let at = [Step::from("rules"), Step::Index(index)];
                        report.read::<RuleSpec>(value, Some(&name), &at);
                    }
                }
                loaded.extend(id.map(|id| Loaded {
                    id,
                    index,
                    policy: None,
                }));
                continue;
            }
        };
        let spec_id = spec.id.clone();
        let policy = compile_policy(file, spec, config, &mut report);
        let policy = policy.filter(|_| report.out.len() == before);
        loaded.push(Loaded {
            id: spec_id,
            index,
            policy,
        });
    }
    loaded
}

/// Collects one policy's diagnostics, each located by the path (below the policy) of
/// the key it is about, as the YAML parser recorded it ([`positions`]).
pub(super) struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    positions: &'a OnceCell<Positions>,
    out: &'a mut Vec<Diagnostic>,
    /// The policy's id, or `#n`.
    policy: String,
    /// The policy's path in the file: `policies[n]`.
    base: Vec<Step>,
}

impl Reporter<'_> {
    fn positions(&self) -> &Positions {
        self.positions.get_or_init(|| Positions::of(self.text))
    }

    fn path(&self, at: &[Step]) -> Vec<Step> {
        self.base.iter().chain(at).cloned().collect()
    }

    /// Where `at` (below the policy) is named; else the nearest key above it that is
    /// (a value given in another form than expected, e.g. a list entry written as a
    /// string); else the policy's `id`; else the policy.
    fn locate(&self, at: &[Step]) -> Option<Position> {
        let positions = self.positions();
        (1..=at.len())
            .rev()
            .find_map(|n| {
                at.get(..n)
                    .and_then(|steps| positions.key(&self.path(steps)))
            })
            .or_else(|| positions.key(&self.path(&[Step::from("id")])))
            .or_else(|| positions.value(&self.base))
    }

    fn push(
        &mut self,
        kind: DiagnosticKind,
        rule: Option<String>,
        at: Option<Position>,
        message: String,
    ) {
        self.out.push(Diagnostic {
            kind,
            severity: Severity::Error,
            file: self.file.to_owned(),
            line: at.map(|p| p.line),
            column: at.map(|p| p.column),
            policy: Some(self.policy.clone()),
            rule,
            message,
        });
    }

    /// A problem with the key at `at`, a path below the policy.
    pub(super) fn error(&mut self, kind: DiagnosticKind, at: &[Step], message: String) {
        let position = self.locate(at);
        self.push(kind, None, position, message);
    }

    /// A problem at `at` (below the policy) that belongs to rule `rule`, when it does:
    /// for rules outside the policy's `rules` list (`response_rules.rules`).
    pub(super) fn at_error(
        &mut self,
        kind: DiagnosticKind,
        rule: Option<&str>,
        at: &[Step],
        message: String,
    ) {
        let position = self.locate(at);
        self.push(kind, rule.map(str::to_owned), position, message);
    }

    /// A problem with rule `rule` (its name) of the policy, at `at` below the rule.
    fn rule_error(
        &mut self,
        kind: DiagnosticKind,
        rule: (&str, usize),
        at: &[Step],
        message: String,
    ) {
        let (name, index) = rule;
        let path: Vec<Step> = [Step::from("rules"), Step::Index(index)]
            .into_iter()
            .chain(at.iter().cloned())
            .collect();
        let position = self.locate(&path);
        self.push(kind, Some(name.to_owned()), position, message);
    }

    /// A CEL expression at `at` (below the policy) that does not compile: located at the
    /// character the CEL parser stopped at when the expression is on one line, else at
    /// its key, with the position within the expression in the message.
    pub(super) fn cel_error(
        &mut self,
        rule: Option<&str>,
        at: &[Step],
        error: &ExprError,
        message: String,
    ) {
        let inside = error
            .position
            .and_then(|(line, column)| self.positions().inside(&self.path(at), line, column));
        let suffix = match (inside, error.position) {
            (None, Some((line, column))) => {
                format!(" (line {line}, column {column} of the expression)")
            }
            _ => String::new(),
        };
        let position = inside.or_else(|| self.locate(at));
        self.push(
            error.kind,
            rule.map(str::to_owned),
            position,
            format!("{message}{suffix}"),
        );
    }

    /// Reads the policy (or, with `rule`, one of its rules, whose path is `at`) as `T`,
    /// reporting every unknown key in it, not only the first: an unknown key is reported,
    /// taken out and the rest read again, at most [`MAX_UNKNOWN_KEYS`] times (a good
    /// policy is read once). Any other problem is reported and ends the reading.
    fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        mut value: serde_yaml_ng::Value,
        rule: Option<&str>,
        at: &[Step],
    ) -> Read<T> {
        let before = self.out.len();
        for _ in 0..=MAX_UNKNOWN_KEYS {
            let error = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(read) if self.out.len() == before => return Read::Good(read),
                Ok(read) => return Read::UnknownKeys(read),
                Err(error) => error,
            };
            let Some(unknown) = self.serde(&error, rule, at) else {
                return Read::Failed;
            };
            if !remove_key(&mut value, &unknown) {
                return Read::Failed;
            }
        }
        Read::Failed
    }

    /// A serde error deserializing the policy (or, with `rule`, one of its rules, whose
    /// path is `at`): located at the unknown key, or at the key whose value is wrong.
    /// For an unknown key, its path inside the value read.
    fn serde(
        &mut self,
        error: &serde_path_to_error::Error<serde_yaml_ng::Error>,
        rule: Option<&str>,
        at: &[Step],
    ) -> Option<Vec<Step>> {
        let message = crate::yaml_error_message(error.inner());
        let kind = serde_kind(&message);
        let mut inside: Vec<Step> = Vec::new();
        let mut complete = true;
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => inside.push(Step::Index(*index)),
                serde_path_to_error::Segment::Map { key } => inside.push(Step::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    inside.push(Step::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => {
                    complete = false;
                    break;
                }
            }
        }
        let unknown_key = kind == DiagnosticKind::UnknownField
            && (message.starts_with("unknown field `") || message.contains(": unknown field `"));
        if kind == DiagnosticKind::UnknownField
            && let Some(name) = message.split('`').nth(1)
            && inside.last() != Some(&Step::Key(name.to_owned()))
        {
            // The path names the mapping; the unknown key is in it.
            inside.push(Step::Key(name.to_owned()));
        }
        let path: Vec<Step> = at.iter().cloned().chain(inside.iter().cloned()).collect();
        let position = self.locate(&path);
        self.push(kind, rule.map(str::to_owned), position, message);
        (unknown_key && complete).then_some(inside)
    }
}

/// What [`Reporter::read`] made of a policy or rule.
enum Read<T> {
    /// No problem.
    Good(T),
    /// Unknown keys only, reported: what is left without them.
    UnknownKeys(T),
    /// Another problem, reported.
    Failed,
}

/// A rule's id for messages, or `#n`.
fn rule_name(value: &serde_yaml_ng::Value, index: usize) -> String {
    value
        .get("id")
        .and_then(|id| id.as_str())
        .map_or_else(|| format!("#{}", index + 1), str::to_owned)
}

/// Unknown keys reported for one policy or rule, at most (each costs one more reading).
const MAX_UNKNOWN_KEYS: usize = 50;

/// Takes the key at `path` out of a YAML value. False when there is none there.
fn remove_key(value: &mut serde_yaml_ng::Value, path: &[Step]) -> bool {
    use serde_yaml_ng::Value;
    let Some((Step::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut here = value;
    for step in parents {
        if let Value::Tagged(tagged) = here {
            here = &mut tagged.value;
        }
        let next = match (step, here) {
            (Step::Index(index), Value::Sequence(items)) => items.get_mut(*index),
            (Step::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str()),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        here = next;
    }
    if let Value::Tagged(tagged) = here {
        here = &mut tagged.value;
    }
    match here {
        Value::Mapping(map) => map.remove(last.as_str()).is_some(),
        _ => false,
    }
}

fn compile_policy(
    file: &Path,
    mut spec: PolicySpec,
    config: &LoadSettings,
    report: &mut Reporter,
) -> Option<Policy> {
    use DiagnosticKind as Kind;
    let key = |name: &str| [Step::from(name)];
    let unmatched = spec.matcher.hosts.is_empty()
        && spec.matcher.paths.is_empty()
        && spec.matcher.methods.is_empty()
        && spec.matcher.evaluation.is_none();
    let select = spec.select.take().map(|select| {
        let has_own = [
            ("rules", !spec.rules.is_empty()),
            ("flows", spec.flows.is_some()),
            ("narrowing", spec.narrowing.is_some()),
            ("fhir", spec.fhir.is_some()),
            ("graphql", spec.graphql.is_some()),
            ("response_rules", spec.response_rules.is_some()),
        ];
        for (name, present) in has_own {
            if present {
                report.error(
                    Kind::Conflict,
                    &key("select"),
                    format!("a policy with `select` decides through the policies it selects: it cannot have `{name}`"),
                );
            }
        }
        if select.by_scope.is_empty() {
            report.error(
                Kind::InvalidValue,
                &key("select"),
                "`select.by_scope` names no policy".into(),
            );
        }
        Selector {
            by_scope: select
                .by_scope
                .iter()
                .map(|id| Arc::from(id.as_str()))
                .collect(),
            normalize: select.normalize,
        }
    });
    let issuers: Vec<&str> = config.issuers.iter().map(String::as_str).collect();
    if spec.id.trim().is_empty() {
        report.error(Kind::InvalidValue, &key("id"), "`id` is empty".into());
    }
    if spec.anonymous && !spec.issuers.is_empty() {
        report.error(
            Kind::Conflict,
            &key("anonymous"),
            "`anonymous: true` and `issuers` exclude each other".into(),
        );
    }
    if !spec.anonymous && spec.issuers.is_empty() {
        report.error(
            Kind::Conflict,
            &key("id"),
            "names no `issuers`; set `anonymous: true` to decide without a token".into(),
        );
    }
    for (index, issuer) in spec.issuers.iter().enumerate() {
        if !issuers.contains(&issuer.as_str()) {
            report.error(
                Kind::UnknownIssuer,
                &[Step::from("issuers"), Step::Index(index)],
                format!(
                    "issuer `{issuer}` is not configured (configured: {})",
                    issuers.join(", ")
                ),
            );
        }
    }
    if spec.anonymous && (!spec.scopes.is_empty() || spec.response.forward_claims.is_some()) {
        report.error(
            Kind::Conflict,
            &key("anonymous"),
            "an anonymous policy cannot require scopes or forward claims".into(),
        );
    }
    if spec.matcher.evaluation.is_some() {
        let at = [Step::from("match"), Step::from("evaluation")];
        if !(spec.matcher.hosts.is_empty()
            && spec.matcher.paths.is_empty()
            && spec.matcher.methods.is_empty())
        {
            report.error(
                Kind::Conflict,
                &at,
                "`match.evaluation` decides evaluations, not HTTP requests: it excludes `hosts`, `paths` and `methods`".into(),
            );
        }
        // The evaluation names its subject; no end-user token comes with it.
        if !spec.anonymous {
            report.error(
                Kind::Conflict,
                &at,
                "a policy that matches evaluations reads the subject from the evaluation, not a token: set `anonymous: true`".into(),
            );
        }
    }
    let spec_has_no_graphql = spec.graphql.is_none();
    let data = spec
        .data
        .and_then(|value| match expr::Data::from_yaml(value) {
            Ok(data) => Some(data),
            Err(e) => {
                report.error(
                    Kind::InvalidValue,
                    &key("data"),
                    format!("invalid `data`: {e}"),
                );
                None
            }
        });
    for (index, method) in spec.matcher.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            report.error(
                Kind::InvalidValue,
                &[
                    Step::from("match"),
                    Step::from("methods"),
                    Step::Index(index),
                ],
                format!("`{method}` is not an HTTP method"),
            );
        }
    }
    let mut rules = Vec::new();
    let mut rule_ids: Vec<String> = Vec::new();
    for (index, value) in spec.rules.into_iter().enumerate() {
        let name = rule_name(&value, index);
        let at = [Step::from("rules"), Step::Index(index)];
        let Read::Good(rule) = report.read::<RuleSpec>(value, Some(&name), &at) else {
            continue;
        };
        let at = (name.as_str(), index);
        if rule_ids.contains(&rule.id) {
            report.rule_error(
                Kind::DuplicateId,
                at,
                &key("id"),
                "duplicate rule id".into(),
            );
            continue;
        }
        rule_ids.push(rule.id.clone());
        let (effect, source, condition_key) = match (&rule.allow, &rule.deny) {
            (Some(source), None) => (Effect::Allow, source, "allow"),
            (None, Some(source)) => (Effect::Deny, source, "deny"),
            _ => {
                report.rule_error(
                    Kind::Conflict,
                    at,
                    &[],
                    "a rule needs exactly one of `allow` or `deny`".into(),
                );
                continue;
            }
        };
        if effect == Effect::Allow && (rule.status.is_some() || rule.message.is_some()) {
            let which = if rule.status.is_some() {
                "status"
            } else {
                "message"
            };
            report.rule_error(
                Kind::Conflict,
                at,
                &key(which),
                "`status` and `message` belong to deny rules".into(),
            );
        }
        let status = rule.status.unwrap_or(403);
        if !(400..=599).contains(&status) {
            report.rule_error(
                Kind::InvalidValue,
                at,
                &key("status"),
                format!("deny status {status} is not a 4xx or 5xx"),
            );
        }
        match Expr::compile(source) {
            Ok(condition) => rules.push(Rule {
                allowed: format!("allow rule `{}` matched", rule.id),
                id: Arc::from(rule.id.as_str()),
                effect,
                condition,
                status,
                message: rule.message,
            }),
            Err(e) => report.cel_error(
                Some(&name),
                &[
                    Step::from("rules"),
                    Step::Index(index),
                    Step::from(condition_key),
                ],
                &e,
                format!("invalid CEL `{source}`: {}", e.message),
            ),
        }
    }
    let response = compile_response(spec.response, &config.strip_headers, report);
    if spec.response_rules.is_some() && spec.matcher.evaluation.is_some() {
        report.error(
            Kind::Conflict,
            &key("response_rules"),
            "`response_rules` judge HTTP answers: a policy that matches evaluations has none"
                .into(),
        );
    }
    let response_rules = spec
        .response_rules
        .map(|r| response::ResponseRules::compile(r, report));
    if spec.search.is_some() && spec.matcher.evaluation.is_none() {
        report.error(
            Kind::Conflict,
            &key("search"),
            "`search` lists candidates for evaluations: it needs `match.evaluation`".into(),
        );
    }
    let search = spec
        .search
        .map(|s| search::PolicySearch::compile(s, report));
    if rules
        .iter()
        .map(|r| &r.condition)
        .chain(response.set_headers.iter().map(|(_, e)| e))
        .chain(response.set_query.iter().map(|(_, e)| e))
        .any(|e| e.uses_response)
    {
        report.error(
            Kind::CelInvalid,
            &key("rules"),
            "only `response_rules` may read `entry` and `response`".into(),
        );
    }
    let narrowing = spec
        .narrowing
        .and_then(|n| narrowing::Narrowing::compile(n, report));
    let graphql = spec
        .graphql
        .and_then(|g| graphql::PolicyGraphql::compile(g, file, spec.anonymous, report));
    let actor_key = [Step::from("flows"), Step::from("actor")];
    let spec_has_no_fhir = spec.fhir.is_none();
    let fhir = spec
        .fhir
        .and_then(|f| fhir::PolicyFhir::compile(f, file, report));
    if fhir.is_some() && spec.matcher.evaluation.is_some() {
        report.error(
            Kind::Conflict,
            &key("fhir"),
            "`fhir` reads HTTP requests: it excludes `match.evaluation`".into(),
        );
    }
    let flows = spec.flows.and_then(|f| match Expr::compile(&f.actor) {
        Ok(actor) if actor.uses_flows => {
            report.error(
                Kind::CelInvalid,
                &actor_key,
                "`flows.actor` cannot read `flows`".into(),
            );
            None
        }
        Ok(actor) => {
            if !(f.base_path.is_empty() || f.base_path.starts_with('/')) {
                report.error(
                    Kind::InvalidValue,
                    &[Step::from("flows"), Step::from("base_path")],
                    "`flows.base_path` must start with `/`".into(),
                );
            }
            Some(PolicyFlows {
                actor,
                base_path: Arc::from(f.base_path.as_str()),
                purposes: f.purposes,
            })
        }
        Err(e) => {
            report.cel_error(
                None,
                &actor_key,
                &e,
                format!("invalid CEL in `flows.actor` `{}`: {}", f.actor, e.message),
            );
            None
        }
    });
    let mut fixed_response = |d: spec::DenyResponseSpec, key: &str| {
        if !(400..=599).contains(&d.status) {
            report.error(
                Kind::InvalidValue,
                &[Step::from(key), Step::from("status")],
                format!("{key} status {} is not a 4xx or 5xx", d.status),
            );
        }
        for name in d.headers.keys() {
            if !valid_header_name(&name.to_ascii_lowercase()) {
                report.error(
                    Kind::InvalidValue,
                    &[
                        Step::from(key),
                        Step::from("headers"),
                        Step::from(name.as_str()),
                    ],
                    format!("{key}: `{name}` is not a header name Sluis may set"),
                );
            }
        }
        Deny {
            status: d.status,
            headers: d
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body: d.body,
        }
    };
    let deny_response = spec
        .deny_response
        .map(|d| fixed_response(d, "deny_response"));
    let scope_response = spec
        .scope_response
        .map(|d| fixed_response(d, "scope_response"));
    if spec.anonymous && scope_response.is_some() {
        report.error(
            Kind::Conflict,
            &key("scope_response"),
            "an anonymous policy checks no scopes: `scope_response` is never used".into(),
        );
    }
    let caller = match caller::Caller::compile(spec.caller) {
        Ok(caller) => caller,
        Err(problems) => {
            for problem in problems {
                report.error(Kind::InvalidValue, &key("caller"), problem);
            }
            caller::Caller::default()
        }
    };
    if spec.anonymous && !caller.is_empty() {
        report.error(
            Kind::Conflict,
            &key("caller"),
            "an anonymous policy has no token to find its `caller` in".into(),
        );
    }
    let expressions = || {
        rules
            .iter()
            .map(|r| &r.condition)
            .chain(response.set_headers.iter().map(|(_, e)| e))
            .chain(response.set_query.iter().map(|(_, e)| e))
            .chain(narrowing.iter().flat_map(|n| n.expressions()))
            .chain(response_rules.iter().flat_map(|r| r.expressions()))
    };
    for rule in &rules {
        for call in &rule.condition.source_calls {
            if let Some(problem) = source_call_problem(call, &config.sources) {
                report.error(
                    Kind::CelInvalid,
                    &key("rules"),
                    format!("rule `{}`: {problem}", rule.id),
                );
            }
        }
    }
    let outside_rules = expressions()
        .skip(rules.len())
        .chain(flows.as_ref().map(|f| &f.actor))
        .chain(graphql.iter().flat_map(|g| g.expressions()))
        .any(|e| !e.source_calls.is_empty());
    if outside_rules {
        report.error(
            Kind::CelInvalid,
            &key("id"),
            "information sources may only be called in rule conditions, not in `response`, `flows`, `narrowing`, `graphql` or `response_rules`".into(),
        );
    }
    let uses_sources = rules.iter().any(|r| !r.condition.source_calls.is_empty());
    let request_fields = expressions()
        .chain(flows.as_ref().map(|f| &f.actor))
        .chain(graphql.iter().flat_map(|g| g.expressions()))
        .fold(RequestFields::default(), |fields, e| {
            fields.union(e.request_fields)
        });
    let graphql_fields = expressions().fold(GraphqlFields::default(), |fields, e| {
        fields.union(e.graphql_fields)
    });
    if graphql_fields.any() && graphql.is_none() && spec_has_no_graphql {
        report.error(
            Kind::Conflict,
            &key("id"),
            "reads `graphql` but has no `graphql` block saying how requests are read (e.g. `graphql: {}`)".into(),
        );
    }
    if flows.as_ref().is_some_and(|f| f.actor.graphql_fields.any()) {
        report.error(
            Kind::CelInvalid,
            &actor_key,
            "`flows.actor` cannot read `graphql`".into(),
        );
    }
    let readers = || {
        expressions()
            .chain(flows.as_ref().map(|f| &f.actor))
            .chain(graphql.iter().flat_map(|g| g.expressions()))
    };
    if caller.is_empty() && readers().any(|e| e.uses_caller) {
        report.error(
            Kind::Conflict,
            &key("id"),
            "reads `caller` but has no `caller` block saying where its identifiers come from (e.g. `caller: {uzovi: {prefix: \"uzovi:\", from: [client_id]}}`)".into(),
        );
    } else {
        let mut unknown: Vec<&str> = Vec::new();
        for field in readers().flat_map(|e| e.caller_fields.iter()) {
            if !caller.names().any(|n| n == field) && !unknown.contains(&field.as_str()) {
                unknown.push(field);
            }
        }
        for field in unknown {
            report.error(
                Kind::CelInvalid,
                &key("caller"),
                format!(
                    "reads `caller.{field}`, which the `caller` block does not define (defined: {})",
                    caller.names().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    let uses_fhir = readers().any(|e| e.uses_fhir);
    if uses_fhir && spec_has_no_fhir {
        report.error(
            Kind::Conflict,
            &key("id"),
            "reads `request.fhir` but has no `fhir` block saying where the FHIR base is (e.g. `fhir: {base_path: /fhir}`)".into(),
        );
    }
    if flows.is_none() && expressions().any(|e| e.uses_flows) {
        report.error(
            Kind::Conflict,
            &key("id"),
            "reads `flows` but has no `flows` block saying whose flows (e.g. `flows: {actor: token.client_id}`)".into(),
        );
    }
    Some(Policy {
        request_fields,
        fhir,
        uses_fhir,
        graphql,
        graphql_fields,
        flows,
        narrowing,
        certificate_header: config.client_certificate.clone(),
        id: Arc::from(spec.id.as_str()),
        file: file.to_owned(),
        description: spec.description,
        mode: spec.mode,
        hosts: spec
            .matcher
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        path_globs: spec.matcher.paths.iter().map(|p| PathGlob::of(p)).collect(),
        paths: spec.matcher.paths,
        methods: spec
            .matcher
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        issuers: spec.issuers.iter().map(|i| Arc::from(i.as_str())).collect(),
        anonymous: spec.anonymous,
        method_override: spec.method_override,
        scopes: spec.scopes,
        realm: spec.realm.unwrap_or_else(|| "sluis".into()),
        rules,
        response,
        deny_response,
        evaluation: spec.matcher.evaluation.map(|e| EvaluationMatch {
            actions: e.actions,
            resource_types: e.resource_types,
            subject_types: e.subject_types,
        }),
        data,
        caller,
        scope_response,
        response_rules,
        select,
        unmatched,
        search,
        uses_sources,
        on_error: spec.on_error,
    })
}

/// What is wrong with a `sources.NAME(...)` call, checked at load: an undeclared name, too
/// many arguments, or (for a map literal) keys the kind does not take.
fn source_call_problem(
    call: &expr::SourceCall,
    declared: &[(String, &'static str)],
) -> Option<String> {
    let Some((_, kind)) = declared.iter().find(|(name, _)| *name == call.name) else {
        let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
        return Some(format!(
            "calls `sources.{}`, which is not declared (declared: {})",
            call.name,
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    };
    if call.arguments > 1 {
        return Some(format!(
            "`sources.{}` takes one map argument, not {}",
            call.name, call.arguments
        ));
    }
    let keys = call.literal_keys.as_ref()?;
    let allowed: &[&str] = match *kind {
        "fhir" => &["read", "search", "params", "elements", "summary"],
        "userinfo" => &[],
        "mitz" => &crate::sources::MITZ_KEYS,
        _ => return None,
    };
    if let Some(unknown) = keys.iter().find(|k| !allowed.contains(&k.as_str())) {
        return Some(format!(
            "`sources.{}` ({kind}) takes no key `{unknown}` (keys: {})",
            call.name,
            if allowed.is_empty() {
                "none: call it as `sources.NAME()`".to_owned()
            } else {
                allowed.join(", ")
            }
        ));
    }
    if *kind == "fhir" && keys.contains(&"read".to_owned()) == keys.contains(&"search".to_owned()) {
        return Some(format!(
            "`sources.{}` (fhir) needs exactly one of `read` or `search`",
            call.name
        ));
    }
    None
}

fn compile_response(
    spec: spec::ResponseSpec,
    strip_headers: &[String],
    report: &mut Reporter,
) -> Response {
    let mut compile_all = |entries: std::collections::BTreeMap<String, String>, what: &str| {
        let block = if what == "header" {
            "set_headers"
        } else {
            "set_query"
        };
        let mut compiled = Vec::new();
        for (written, source) in entries {
            let at = [
                Step::from("response"),
                Step::from(block),
                Step::from(written.as_str()),
            ];
            // Header names are case-insensitive; query parameter names are not
            // (`managingOrganization` is not `managingorganization`).
            let name = if what == "header" {
                written.to_ascii_lowercase()
            } else {
                written
            };
            if what == "header" && !valid_header_name(&name) {
                report.error(
                    DiagnosticKind::InvalidValue,
                    &at,
                    format!("`{name}` is not a header name Sluis may set"),
                );
                continue;
            }
            match Expr::compile(&source) {
                Ok(expr) => compiled.push((name, expr)),
                Err(e) => report.cel_error(
                    None,
                    &at,
                    &e,
                    format!("invalid CEL for {what} `{name}`: `{source}`: {}", e.message),
                ),
            }
        }
        compiled
    };
    let set_headers = compile_all(spec.set_headers, "header");
    let set_query = compile_all(spec.set_query, "query parameter");
    if let Some(name) = &spec.forward_claims
        && !valid_header_name(&name.to_ascii_lowercase())
    {
        report.error(
            DiagnosticKind::InvalidValue,
            &[Step::from("response"), Step::from("forward_claims")],
            format!("`{name}` is not a header name Sluis may set"),
        );
    }
    let mut strip: Vec<String> = strip_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    strip.push("x-sluis-*".into());
    Response {
        set_headers,
        remove_headers: spec
            .remove_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        strip_headers: strip,
        keep_authorization: spec.keep_authorization,
        forward_claims: spec.forward_claims.map(|h| h.to_ascii_lowercase()),
        set_query,
        remove_query: spec.remove_query,
    }
}

/// A header name that is an HTTP token (as the `http` crate parses one) and not one the
/// gateway owns.
fn valid_header_name(name: &str) -> bool {
    const RESERVED: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
    ];
    !RESERVED.contains(&name) && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// A header value Envoy will accept and that cannot smuggle a second header.
fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

impl Policy {
    pub fn matches(&self, request: &AccessRequest) -> bool {
        self.mismatch(request).is_none()
    }

    /// The first part of `match` the request does not fit, if any.
    pub fn mismatch(&self, request: &AccessRequest) -> Option<&'static str> {
        match (&self.evaluation, &request.evaluation) {
            (None, None) => {}
            (Some(_), None) => return Some("not an evaluation"),
            (None, Some(_)) => return Some("an evaluation"),
            (Some(wanted), Some(evaluation)) => {
                let fits = |list: &[String], value: &str| {
                    list.is_empty() || list.iter().any(|v| v == value)
                };
                if !fits(&wanted.actions, evaluation.action_name()) {
                    return Some("action");
                }
                if !fits(&wanted.resource_types, evaluation.resource_type()) {
                    return Some("resource type");
                }
                if !fits(&wanted.subject_types, evaluation.subject_type()) {
                    return Some("subject type");
                }
                return None;
            }
        }
        if !(self.methods.is_empty() || self.methods.contains(&request.method)) {
            return Some("method");
        }
        if !(self.paths.is_empty()
            || self
                .paths
                .iter()
                .zip(&self.path_globs)
                .any(|(pattern, glob)| glob.matches(pattern, &request.path)))
        {
            return Some("path");
        }
        if !self.hosts.is_empty() {
            let host = host_without_port(&request.host).to_ascii_lowercase();
            if !self
                .hosts
                .iter()
                .any(|h| fast_glob::glob_match(h.as_str(), host.as_str()))
            {
                return Some("host");
            }
        }
        None
    }

    /// Whether this policy decides some evaluations a search of `kind` shaped like
    /// `template` would try: the parts the search names fit `match.evaluation` (the
    /// searched entity's type does; an action search names no action).
    pub fn fits_search(&self, kind: search::SearchKind, template: &Evaluation) -> bool {
        let Some(wanted) = &self.evaluation else {
            return false;
        };
        let fits =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        (kind == search::SearchKind::Action || fits(&wanted.actions, template.action_name()))
            && fits(&wanted.resource_types, template.resource_type())
            && fits(&wanted.subject_types, template.subject_type())
    }

    /// The candidates this policy tries for a search (see [`search`]).
    pub fn search_candidates(
        &self,
        kind: search::SearchKind,
        template: &Evaluation,
    ) -> Result<Vec<search::Candidate>, search::SearchError> {
        let Some(search) = &self.search else {
            return Err(search::SearchError::Unsupported {
                policy: self.id.to_string(),
                kind,
                why: "it has no `search` block".into(),
            });
        };
        let actions = self
            .evaluation
            .as_ref()
            .map(|e| e.actions.as_slice())
            .unwrap_or_default();
        search.candidates(&self.id, kind, template, self.data.as_ref(), actions)
    }

    /// The scopes `identity` lacks, in the policy's order.
    pub fn missing_scopes(&self, identity: &Identity) -> Vec<&str> {
        self.scopes
            .iter()
            .filter(|s| !identity.scopes.contains(s))
            .map(String::as_str)
            .collect()
    }

    /// Runs the rules and, on allow, computes the changes to the request. With a
    /// `trace`, every rule's result and the values of its parts are recorded.
    pub fn evaluate(
        &self,
        request: &AccessRequest,
        identity: Option<&Identity>,
        flows: &FlowIndex,
        trace: Option<&mut Trace>,
    ) -> Decision {
        let mut needs = Vec::new();
        self.pass(request, identity, flows, trace, None, &mut needs)
    }

    /// One pass over the rules with `lookups` reachable from `sources.NAME(...)` calls:
    /// a decision, or the look-ups the first rules that need them want fetched. Deny rules
    /// all run, so every deny rule's look-ups are fetched together; allow rules stop at the
    /// first that needs a look-up, so a source is fetched only when a rule that needs it
    /// is evaluated.
    pub fn evaluate_with(
        &self,
        request: &AccessRequest,
        identity: Option<&Identity>,
        flows: &FlowIndex,
        mut trace: Option<&mut Trace>,
        lookups: &Arc<crate::sources::Lookups>,
    ) -> Pass {
        if let Some(trace) = trace.as_deref_mut() {
            trace.rules.clear();
        }
        let mut needs = Vec::new();
        let decision = self.pass(request, identity, flows, trace, Some(lookups), &mut needs);
        if needs.is_empty() {
            Pass::Decided(decision)
        } else {
            Pass::Needs(needs)
        }
    }

    fn pass(
        &self,
        request: &AccessRequest,
        identity: Option<&Identity>,
        flows: &FlowIndex,
        mut trace: Option<&mut Trace>,
        lookups: Option<&Arc<crate::sources::Lookups>>,
        needs: &mut Vec<crate::sources::Pending>,
    ) -> Decision {
        let _scope = lookups.map(|l| crate::sources::Scope::enter(Some(l.clone())));
        let wanted = || lookups.map(|l| l.take_wanted()).unwrap_or_default();
        let parsed = match &self.graphql {
            Some(graphql) => {
                match crate::graphql::read(request, &graphql.limits, Some(&graphql.documents)) {
                    Ok(parsed) => Some(parsed),
                    Err(e) => {
                        if let Some(trace) = trace.as_deref_mut() {
                            trace.graphql = Some(format!("not read: {e}"));
                        }
                        return self.graphql_refusal(&e);
                    }
                }
            }
            None => None,
        };
        let fhir_request = match &self.fhir {
            Some(fhir) if self.uses_fhir || fhir.capabilities.is_some() => {
                match self.read_fhir(fhir, request, trace.as_deref_mut()) {
                    Ok(parsed) => Some(parsed),
                    Err(denial) => return *denial,
                }
            }
            _ => None,
        };
        let vars = Vars::new(request, identity, self.request_fields)
            .with_fhir(fhir_request)
            .with_graphql(parsed.as_ref(), self.graphql_fields)
            .with_certificate_header(self.certificate_header.as_ref())
            .with_flows(self.flows.as_ref().map(|f| FlowSource {
                index: flows,
                actor: &f.actor,
                base_path: &f.base_path,
                purposes: &f.purposes,
            }))
            .with_data(self.data.as_ref())
            .with_caller(Some(&self.caller));
        if let Some(trace) = trace.as_deref_mut()
            && !self.caller.is_empty()
        {
            trace.caller = Some(self.caller.describe(identity));
        }
        if let (Some(trace), Some(_)) = (trace.as_deref_mut(), &self.flows) {
            trace.flows = Some(match vars.caller_flows() {
                Ok((Some(actor), flows)) => format!(
                    "actor `{actor}`, active: {}",
                    if flows.is_empty() {
                        "none active".to_string()
                    } else {
                        flows
                            .iter()
                            .map(|f| f.id.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                Ok((None, _)) => "the actor expression gave no actor, so no flows".into(),
                Err(e) => format!("the actor expression failed: {e}"),
            });
        }
        if let (Some(graphql), Some(parsed)) = (&self.graphql, &parsed) {
            let judged = match graphql.refusal(parsed) {
                Some(refusal) => Err(self.deny(
                    "graphql",
                    403,
                    "this GraphQL operation is not allowed",
                    refusal,
                )),
                None => match graphql.fit(parsed, &vars, identity) {
                    Ok(template) => {
                        if let Some(template) = &template {
                            vars.set_graphql_template(template.clone());
                        }
                        Ok(template)
                    }
                    Err(reason) => Err(self.deny(
                        "graphql-template",
                        403,
                        "the query does not fit an allowed query template",
                        reason,
                    )),
                },
            };
            if let Some(trace) = trace.as_deref_mut() {
                let summary = format!(
                    "{} {}: root fields {:?}, {} field path(s)",
                    parsed.operation.as_str(),
                    parsed
                        .name
                        .as_deref()
                        .map(|n| format!("`{n}`"))
                        .unwrap_or_else(|| "(unnamed)".into()),
                    parsed.root_fields(),
                    parsed.paths().len()
                );
                trace.graphql = Some(match &judged {
                    Ok(Some(template)) => format!("{summary}; fits template `{template}`"),
                    Ok(None) => format!("{summary}; no templates to fit"),
                    Err(denial) => format!("{summary}; {}", denial.reason),
                });
            }
            if let Err(denial) = judged {
                return denial;
            }
        }
        let mut record = |rule: &Rule, result: &Result<bool, String>| {
            if let Some(trace) = trace.as_deref_mut() {
                trace.rules.push(RuleTrace {
                    rule: rule.id.to_string(),
                    effect: match rule.effect {
                        Effect::Allow => "allow",
                        Effect::Deny => "deny",
                    },
                    condition: rule.condition.source.clone(),
                    result: match result {
                        Ok(b) => b.to_string(),
                        Err(e) => format!("error: {e}"),
                    },
                    parts: rule.condition.explain(&vars),
                });
            }
        };
        for rule in self.rules.iter().filter(|r| r.effect == Effect::Deny) {
            let result = rule.condition.eval_bool(&vars);
            let pending = wanted();
            record(rule, &result);
            // Explain evaluates parts again: what they want is not asked for.
            drop(wanted());
            if result.is_err() && !pending.is_empty() {
                needs.extend(pending);
                continue;
            }
            match result {
                Ok(false) => {}
                Ok(true) => {
                    return self.deny(
                        &rule.id,
                        rule.status,
                        rule.message.as_deref().unwrap_or("access denied by policy"),
                        format!("deny rule `{}` matched", rule.id),
                    );
                }
                Err(e) => {
                    return self.deny(
                        &rule.id,
                        rule.status,
                        "access denied by policy",
                        format!(
                            "deny rule `{}` failed to evaluate, failing closed: {e}",
                            rule.id
                        ),
                    );
                }
            }
        }
        if !needs.is_empty() {
            return self.deny(
                "sources",
                403,
                "access denied by policy",
                "look-ups pending".into(),
            );
        }
        let mut failures = Vec::new();
        for rule in self.rules.iter().filter(|r| r.effect == Effect::Allow) {
            let result = rule.condition.eval_bool(&vars);
            let pending = wanted();
            record(rule, &result);
            drop(wanted());
            if result.is_err() && !pending.is_empty() {
                needs.extend(pending);
                return self.deny(
                    "sources",
                    403,
                    "access denied by policy",
                    "look-ups pending".into(),
                );
            }
            match result {
                Ok(true) => return self.allow(rule, &vars, identity, request),
                Ok(false) => {}
                Err(e) => failures.push(format!("allow rule `{}` failed: {e}", rule.id)),
            }
        }
        let reason = if failures.is_empty() {
            "no allow rule matched".to_string()
        } else {
            format!("no allow rule matched; {}", failures.join("; "))
        };
        self.deny("default-deny", 403, "access denied by policy", reason)
    }

    fn allow(
        &self,
        rule: &Rule,
        vars: &Vars,
        identity: Option<&Identity>,
        request: &AccessRequest,
    ) -> Decision {
        let response = &self.response;
        let mut allow = Allow::default();
        for (name, expr) in &response.set_headers {
            match expr.eval_text(vars) {
                Ok(Some(value)) if valid_header_value(&value) => {
                    allow.set_headers.push((name.clone(), value))
                }
                Ok(Some(_)) => {
                    return self.deny(
                        "response",
                        403,
                        "access denied by policy",
                        format!(
                            "header `{name}` would carry control or non-ASCII characters, failing closed"
                        ),
                    );
                }
                Ok(None) => allow.remove_headers.push(name.clone()),
                Err(e) => {
                    return self.deny(
                        "response",
                        403,
                        "access denied by policy",
                        format!("header `{name}` failed to evaluate, failing closed: {e}"),
                    );
                }
            }
        }
        if let (Some(name), Some(identity)) = (&response.forward_claims, identity) {
            allow
                .set_headers
                .push((name.clone(), identity.payload_json.clone()));
        }
        for (name, expr) in &response.set_query {
            match expr.eval_text(vars) {
                Ok(Some(value)) => allow.set_query.push((name.clone(), value)),
                Ok(None) => allow.remove_query.push(name.clone()),
                Err(e) => {
                    return self.deny(
                        "response",
                        403,
                        "access denied by policy",
                        format!("query parameter `{name}` failed to evaluate, failing closed: {e}"),
                    );
                }
            }
        }
        allow
            .remove_query
            .extend(response.remove_query.iter().cloned());
        if let Some(narrowing) = &self.narrowing {
            match narrowing.apply(request, vars) {
                Ok(parameters) => {
                    for (name, value) in parameters {
                        allow.set_query.retain(|(set, _)| *set != name);
                        allow.remove_query.retain(|removed| *removed != name);
                        allow.set_query.push((name, value));
                    }
                }
                Err(refusal) => {
                    let reason = format!("search narrowing: {}", refusal.message);
                    return self.deny("narrowing", refusal.status, &refusal.message, reason);
                }
            }
        }
        let extra = std::mem::take(&mut allow.remove_headers);
        allow.remove_headers = self.removals(request, &allow.set_headers, extra);
        Decision {
            outcome: Outcome::Allow(allow),
            policy: Some(self.id.clone()),
            rule: rule.id.clone(),
            reason: rule.allowed.clone(),
        }
    }

    /// The headers an allow removes: `authorization` unless kept, the policy's
    /// `remove_headers`, the configured strips (prefix patterns matched against the
    /// request's headers), then `extra`; never a name in `set`, never one twice.
    fn removals(
        &self,
        request: &AccessRequest,
        set: &[(String, String)],
        extra: Vec<String>,
    ) -> Vec<String> {
        let response = &self.response;
        let mut remove: Vec<String> = Vec::new();
        let mut push = |name: &str| {
            if !set.iter().any(|(s, _)| s == name) && !remove.iter().any(|r| r == name) {
                remove.push(name.to_owned());
            }
        };
        if !response.keep_authorization {
            push("authorization");
        }
        for name in &response.remove_headers {
            push(name);
        }
        for pattern in &response.strip_headers {
            match pattern.strip_suffix('*') {
                Some(prefix) => request
                    .headers
                    .keys()
                    .filter(|h| h.starts_with(prefix))
                    .for_each(&mut push),
                None => push(pattern),
            }
        }
        for name in extra {
            push(&name);
        }
        remove
    }

    /// Whether it judges upstream answers (`response_rules`).
    pub fn has_response_rules(&self) -> bool {
        self.response_rules.is_some()
    }

    /// What the judging of the answer to `request`, allowed for `identity`, needs; `None`
    /// when the policy has no response rules.
    pub fn response_grant(
        &self,
        request: &AccessRequest,
        identity: Option<&Identity>,
        now: i64,
    ) -> Option<crate::response::grant::ResponseGrant> {
        self.response_rules.as_ref()?;
        let mut context: Vec<(String, String)> = request
            .context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        context.sort();
        Some(crate::response::grant::ResponseGrant {
            policy: self.id.to_string(),
            issuer: identity.map(|i| i.issuer.to_string()),
            claims: identity.map(|i| i.claims.clone()).unwrap_or_default(),
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            host: request.host.clone(),
            context,
            shadow: self.is_shadow(),
            issued_at: now,
        })
    }

    /// Judges the upstream's answer to `request` (rebuilt from its grant) with the
    /// policy's response rules; an answer to a policy without any is passed.
    pub fn judge_response(
        &self,
        request: &AccessRequest,
        identity: Option<&Identity>,
        flows: &FlowIndex,
        parts: &crate::response::ResponseParts<'_>,
    ) -> response::ResponseJudgement {
        let Some(rules) = &self.response_rules else {
            return response::ResponseJudgement {
                verdict: crate::response::ResponseVerdict::Pass {
                    remove_headers: Vec::new(),
                },
                rule: Arc::from("response"),
                reason: "the policy has no response rules".into(),
                kept: 0,
                withheld: 0,
            };
        };
        let vars = self.response_vars(request, identity, flows);
        let deny = |rule: &str, status: u16, message: &str, reason: String| {
            match self.deny(rule, status, message, reason).outcome {
                Outcome::Deny(deny) => deny,
                // `deny` always denies; closed all the same.
                Outcome::Allow(_) => Deny {
                    status: 403,
                    headers: Vec::new(),
                    body: String::new(),
                },
            }
        };
        rules.judge(&vars, parts, &deny)
    }

    /// Judges each of `entries` (Bundle entries, `{"resource": ...}`) of an answer to
    /// `request` on its own ([`response::EntryVerdict`]); `response` is the answer's
    /// `{status, bundle_type}`. `None` when the policy has no response rules.
    pub fn judge_entries(
        &self,
        request: &AccessRequest,
        identity: Option<&Identity>,
        flows: &FlowIndex,
        entries: &[serde_json::Value],
        response: &serde_json::Value,
    ) -> Option<Vec<response::EntryVerdict>> {
        let rules = self.response_rules.as_ref()?;
        let vars = self.response_vars(request, identity, flows);
        Some(rules.judge_each(&vars, entries, response))
    }

    /// The ids of the policy's response rules (none without `response_rules`).
    pub fn response_rule_ids(&self) -> Vec<Arc<str>> {
        self.response_rules
            .iter()
            .flat_map(|r| r.rule_ids().cloned())
            .collect()
    }

    /// The most entries one answer may have, when the policy judges answers.
    pub fn response_max_entries(&self) -> Option<usize> {
        self.response_rules.as_ref().map(|r| r.max_entries())
    }

    /// The variables response rules read besides `entry` and `response`.
    fn response_vars<'a>(
        &'a self,
        request: &'a AccessRequest,
        identity: Option<&'a Identity>,
        flows: &'a FlowIndex,
    ) -> Vars<'a> {
        Vars::new(request, identity, self.request_fields)
            .with_certificate_header(self.certificate_header.as_ref())
            .with_flows(self.flows.as_ref().map(|f| FlowSource {
                index: flows,
                actor: &f.actor,
                base_path: &f.base_path,
                purposes: &f.purposes,
            }))
            .with_data(self.data.as_ref())
            .with_caller(Some(&self.caller))
    }

    pub fn is_shadow(&self) -> bool {
        self.mode == PolicyMode::Shadow
    }

    /// What a shadow policy lets through when it would have denied (or could not decide):
    /// the request as the client sent it, less what an allow of this policy always
    /// removes, and less any client copy of a header the policy sets, which the upstream
    /// trusts as Sluis's. Nothing is set and the query is left alone: there is no allowed
    /// identity to vouch for.
    pub fn pass_through(&self, request: &AccessRequest) -> Allow {
        let vouched: Vec<String> = self.injected_headers().map(str::to_owned).collect();
        Allow {
            remove_headers: self.removals(request, &[], vouched),
            ..Allow::default()
        }
    }

    /// A policy denial, uniform when the policy asks for it.
    pub fn deny(&self, rule: &str, status: u16, message: &str, reason: String) -> Decision {
        let deny = self.deny_response.clone().unwrap_or_else(|| Deny {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: deny_body(DenyCode::AccessDenied, message),
        });
        Decision {
            outcome: Outcome::Deny(deny),
            policy: Some(self.id.clone()),
            rule: Arc::from(rule),
            reason,
        }
    }

    /// Reads the request as FHIR and checks it against the policy's statement: the
    /// parsed request, or the denial (400 for a request FHIR cannot read, 403 for one
    /// outside the base path or the statement).
    fn read_fhir(
        &self,
        fhir: &fhir::PolicyFhir,
        request: &AccessRequest,
        trace: Option<&mut Trace>,
    ) -> Result<Arc<crate::fhir::ParsedRequest>, Box<Decision>> {
        let parsed = crate::fhir::parse(request, &fhir.base_path, fhir.version, &fhir.limits);
        // `Ok(Some(name))`: listed in the statement `name` (written out only for a trace).
        let checked = match &parsed {
            Ok(parsed) => match &fhir.capabilities {
                Some(caps) => caps
                    .check(parsed, fhir.allow_iterate)
                    .map(|()| Some(&caps.name))
                    .map_err(|u| u.to_string()),
                None => Ok(None),
            },
            Err(_) => Ok(None),
        };
        if let Some(trace) = trace {
            trace.fhir = Some(match (&parsed, &checked) {
                (Err(e), _) => format!("not read: {e}"),
                (Ok(p), checked) => format!(
                    "{} {}{}{}",
                    p.version.name(),
                    p.interaction.code(),
                    p.resource_type
                        .as_deref()
                        .map(|t| format!(" on `{t}`"))
                        .unwrap_or_default(),
                    match checked {
                        Ok(Some(name)) => format!("; listed in the CapabilityStatement `{name}`"),
                        Ok(None) => String::new(),
                        Err(reason) => format!("; {reason}"),
                    }
                ),
            });
        }
        match parsed {
            Err(crate::fhir::FhirError::NotBelowBase) => Err(Box::new(self.deny(
                "fhir-request",
                403,
                "access denied by policy",
                format!(
                    "the path is not below the FHIR base path `{}`",
                    fhir.base_path
                ),
            ))),
            Err(error) => {
                let reason = format!("not a FHIR request this policy can read: {error}");
                Err(Box::new(Decision {
                    outcome: Outcome::Deny(Deny {
                        status: 400,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: deny_body(DenyCode::InvalidRequest, &error.to_string()),
                    }),
                    policy: Some(self.id.clone()),
                    rule: Arc::from("fhir-request"),
                    reason,
                }))
            }
            Ok(parsed) => match checked {
                Ok(_) => Ok(Arc::new(parsed)),
                Err(reason) => Err(Box::new(self.deny(
                    "capability-statement",
                    403,
                    "this FHIR request is not supported here",
                    reason,
                ))),
            },
        }
    }

    /// 400 `invalid_request` for a request whose method-override header this policy does
    /// not judge, or that names no method. Never the uniform deny response: it says
    /// nothing about data or consent, only that the request is malformed.
    pub fn refuse_method_override(&self, reason: String) -> Decision {
        Decision {
            outcome: Outcome::Deny(Deny {
                status: 400,
                headers: vec![("content-type".into(), "application/json".into())],
                body: deny_body(DenyCode::InvalidRequest, &reason),
            }),
            policy: Some(self.id.clone()),
            rule: Arc::from("method-override"),
            reason,
        }
    }

    /// A request that is not GraphQL this policy will judge: 400 (405 for the method)
    /// with the RFC0014 §6.2 body. Never the uniform deny response: it says nothing about
    /// data or consent, only that the request is malformed.
    fn graphql_refusal(&self, error: &crate::graphql::RequestError) -> Decision {
        let status = error.status();
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if status == 405 {
            headers.push(("allow".into(), "GET, POST".into()));
        }
        Decision {
            outcome: Outcome::Deny(Deny {
                status,
                headers,
                body: bad_request_body(
                    if status == 405 {
                        "method_not_allowed"
                    } else {
                        "bad_request"
                    },
                    &error.client_message(),
                ),
            }),
            policy: Some(self.id.clone()),
            rule: Arc::from("graphql"),
            reason: format!("not a GraphQL request this policy judges: {error}"),
        }
    }

    /// 403 `insufficient_scope` (RFC 6750 §3.1), or the policy's `scope_response`, or
    /// uniform when the policy asks for it.
    pub fn deny_scopes(&self, missing: &[&str]) -> Decision {
        let reason = format!("token lacks scopes: {}", missing.join(" "));
        if let Some(deny) = &self.scope_response {
            return Decision {
                outcome: Outcome::Deny(deny.clone()),
                policy: Some(self.id.clone()),
                rule: Arc::from("scopes"),
                reason,
            };
        }
        if self.deny_response.is_some() {
            return self.deny("scopes", 403, "", reason);
        }
        let challenge = format!(
            "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
            self.realm,
            self.scopes.join(" ")
        );
        Decision {
            outcome: Outcome::Deny(Deny {
                status: 403,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("www-authenticate".into(), challenge),
                ],
                body: deny_body(
                    DenyCode::InsufficientScope,
                    &format!("the token lacks a required scope: {}", missing.join(" ")),
                ),
            }),
            policy: Some(self.id.clone()),
            rule: Arc::from("scopes"),
            reason,
        }
    }

    /// Whether its rules read the caller's flows.
    pub fn reads_flows(&self) -> bool {
        self.flows.is_some()
    }

    /// Whether an allow of this policy may rewrite the query string.
    pub fn rewrites_query(&self) -> bool {
        !self.response.set_query.is_empty() || !self.response.remove_query.is_empty()
    }

    /// The headers an allow of this policy removes from every request, whatever its
    /// rules compute (`authorization` unless kept, `remove_headers`, configured strips;
    /// prefix patterns end in `*`). For gateway capability checks.
    pub fn removed_headers(&self) -> Vec<&str> {
        let kept = self.response.keep_authorization.then_some("authorization");
        let mut names: Vec<&str> = Vec::new();
        for name in ["authorization"]
            .into_iter()
            .filter(|n| Some(*n) != kept)
            .chain(self.response.remove_headers.iter().map(String::as_str))
            .chain(self.response.strip_headers.iter().map(String::as_str))
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The headers this policy may set (for documentation and gateway capability checks).
    pub fn injected_headers(&self) -> impl Iterator<Item = &str> {
        self.response
            .set_headers
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.response.forward_claims.as_deref())
    }
}

/// A `match.paths` pattern as a request path is held to it. Policies are tried in order
/// on every Check, and running `fast_glob` was most of choosing one (about 0.8k
/// instructions for `/eoverdracht/fhir/**` alone); the two shapes nearly every policy
/// uses are answered by comparing text. A property test holds [`PathGlob::matches`] to
/// `fast_glob::glob_match` for every pattern.
#[derive(Debug)]
enum PathGlob {
    /// No special character: the path is the pattern.
    Exact,
    /// `literal/**`: the paths that start with `literal/` (held with its `/`).
    Below(Box<str>),
    /// Any other glob, run only on a path that starts with its literal prefix.
    Glob(Box<str>),
}

impl PathGlob {
    fn of(pattern: &str) -> PathGlob {
        let prefix = literal_prefix(pattern);
        if prefix.len() == pattern.len() && !pattern.ends_with('/') {
            return PathGlob::Exact;
        }
        match pattern.strip_suffix("/**") {
            Some(literal) if !literal.is_empty() && literal == prefix => {
                PathGlob::Below(format!("{literal}/").into())
            }
            _ => PathGlob::Glob(prefix.into()),
        }
    }

    /// Whether `path` fits `pattern`, the pattern this was made of.
    fn matches(&self, pattern: &str, path: &str) -> bool {
        match self {
            PathGlob::Exact => path == pattern,
            PathGlob::Below(below) => path.starts_with(&**below),
            PathGlob::Glob(prefix) => {
                path.starts_with(&**prefix) && fast_glob::glob_match(pattern, path)
            }
        }
    }
}

/// The text every path a `match.paths` glob matches starts with: the pattern up to its
/// first special character, less a trailing `/` (so a globstar that matched its directory
/// itself would still be tried); empty for a negated pattern.
fn literal_prefix(pattern: &str) -> &str {
    if pattern.starts_with('!') {
        return "";
    }
    let end = pattern
        .find(['*', '?', '[', ']', '{', '}', ',', '\\', '!'])
        .unwrap_or(pattern.len());
    pattern.get(..end).unwrap_or("").trim_end_matches('/')
}

fn host_without_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        // [v6]:port
        return bracketed.split(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests;
