//! A request read in full as a FHIR REST call: the interaction with its FHIR name, the
//! resource type, id, version, operation, compartment, and the search parameters
//! ([`super::search`]) with the result parameters (`_include`, `_elements`, ...) taken
//! apart. What `request.fhir` shows policies and CapabilityStatements are checked
//! against.
//!
//! Path rules are [`super::classify`]'s (and must stay as strict): an encoded, empty or
//! dot segment, a type that is not one, a bad id is `unknown`, which no statement lists.

use crate::request::AccessRequest;

use super::FhirError;
use super::search::{FhirLimits, SearchParam, parse_name, split_or};

/// Which FHIR release's search rules apply (`_include:recurse` in STU3 is R4's
/// `_include:iterate`; the rest reads alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FhirVersion {
    Stu3,
    #[default]
    R4,
}

impl FhirVersion {
    /// From a CapabilityStatement's `fhirVersion`: `3.0.x` is STU3, `4.0.x` R4.
    pub fn from_release(version: &str) -> Option<FhirVersion> {
        if version.starts_with("3.0") {
            Some(FhirVersion::Stu3)
        } else if version.starts_with("4.0") {
            Some(FhirVersion::R4)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FhirVersion::Stu3 => "STU3",
            FhirVersion::R4 => "R4",
        }
    }

    /// The `_include` modifier that follows includes of includes.
    fn iterate_modifier(self) -> &'static str {
        match self {
            FhirVersion::Stu3 => "recurse",
            FhirVersion::R4 => "iterate",
        }
    }
}

/// A FHIR RESTful interaction, by its R4 code (`TypeRestfulInteraction`,
/// `SystemRestfulInteraction`; knooppunt uses the same strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FhirInteraction {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    Capabilities,
    Transaction,
    Batch,
    Operation,
    /// Not a FHIR interaction we can name with certainty: never listed, never allowed by
    /// a statement.
    Unknown,
}

impl FhirInteraction {
    /// The R4 code: `search-type`, `history-instance`, ...
    pub fn code(self) -> &'static str {
        use FhirInteraction::*;
        match self {
            Read => "read",
            Vread => "vread",
            Update => "update",
            Patch => "patch",
            Delete => "delete",
            HistoryInstance => "history-instance",
            HistoryType => "history-type",
            HistorySystem => "history-system",
            Create => "create",
            SearchType => "search-type",
            SearchSystem => "search-system",
            Capabilities => "capabilities",
            Transaction => "transaction",
            Batch => "batch",
            Operation => "operation",
            Unknown => "unknown",
        }
    }

    /// Whether its query is a search whose parameters a statement must list.
    pub fn searches(self) -> bool {
        use FhirInteraction::*;
        matches!(
            self,
            SearchType
                | SearchSystem
                | HistoryType
                | HistoryInstance
                | HistorySystem
                | Update
                | Patch
                | Delete
        )
    }
}

/// An `_include` or `_revinclude` value: `Coverage:payor:Patient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub value: String,
    /// `:iterate` (R4) or `:recurse` (STU3).
    pub iterate: bool,
}

/// A request read as a FHIR REST call. Owned, so it can be shared (`Arc`) with the CEL
/// values built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub version: FhirVersion,
    pub interaction: FhirInteraction,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub version_id: Option<String>,
    /// The operation's name without `$`: `lastn`.
    pub operation: Option<String>,
    /// `Patient/123/Observation`: `(Patient, 123)`.
    pub compartment: Option<(String, String)>,
    /// Search parameters in request order (first appearance of each raw name), result
    /// parameters removed.
    pub params: Vec<SearchParam>,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    pub elements: Vec<String>,
    pub summary: Option<String>,
    pub count: Option<u32>,
    pub sort: Vec<String>,
}

impl ParsedRequest {
    fn new(version: FhirVersion, interaction: FhirInteraction) -> ParsedRequest {
        ParsedRequest {
            version,
            interaction,
            resource_type: None,
            id: None,
            version_id: None,
            operation: None,
            compartment: None,
            params: Vec::new(),
            include: Vec::new(),
            revinclude: Vec::new(),
            elements: Vec::new(),
            summary: None,
            count: None,
            sort: Vec::new(),
        }
    }

    /// The parameter named exactly `raw` (`category`, `name:contains`).
    pub fn param(&self, raw: &str) -> Option<&SearchParam> {
        self.params.iter().find(|p| p.raw == raw)
    }

    /// The patient the request is about, as nuts-knooppunt's PDP derives it: the id from
    /// `Patient/[id]` (any interaction), a `Patient/[id]/...` compartment, a single `_id`
    /// on a Patient search or a single `patient` (`Patient/x` or `x`); the BSN from a
    /// single `identifier` of a Patient search in the BSN system. Several values, or an
    /// identifier in another form, leave both unknown and say why in `problem`.
    pub fn patient(&self) -> PatientRef {
        let mut patient = PatientRef::default();
        let single = |raw: &str| -> Result<Option<&str>, ()> {
            match self.param(raw).map(|p| p.values.as_slice()) {
                None => Ok(None),
                Some([group]) => match group.as_slice() {
                    [value] => Ok(Some(value.as_str())),
                    _ => Err(()),
                },
                Some(_) => Err(()),
            }
        };
        let is_patient = self.resource_type.as_deref() == Some("Patient");
        if is_patient && let Some(id) = &self.id {
            patient.id = Some(id.clone());
        } else if let Some((kind, id)) = &self.compartment
            && kind == "Patient"
        {
            patient.id = Some(id.clone());
        } else if is_patient && self.interaction.searches() {
            match single("_id") {
                Ok(id) => patient.id = id.map(str::to_owned),
                Err(()) => patient.problem = Some("patient_id: expected one `_id` value".into()),
            }
        } else {
            match single("patient") {
                Ok(reference) => {
                    patient.id = reference
                        .and_then(|r| r.rsplit('/').next())
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned);
                }
                Err(()) => {
                    patient.problem = Some("patient_id: expected one `patient` value".into());
                }
            }
        }
        if is_patient && self.interaction.searches() {
            match single("identifier") {
                Ok(None) => {}
                Ok(Some(identifier)) => match identifier.split_once('|') {
                    Some((BSN_SYSTEM, bsn)) if !bsn.is_empty() => {
                        patient.bsn = Some(bsn.to_owned());
                    }
                    _ => patient.problem = Some(BSN_FORMAT.into()),
                },
                Err(()) => patient.problem = Some(BSN_FORMAT.into()),
            }
        }
        if patient.problem.is_some() {
            patient.id = None;
            patient.bsn = None;
        }
        patient
    }
}

/// The Dutch citizen service number's naming system.
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";

/// Why a Patient search's identifier names no BSN (knooppunt's words).
const BSN_FORMAT: &str = "patient_bsn: expected identifier parameter in format 'system|value'";

/// The patient a request is about ([`ParsedRequest::patient`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientRef {
    pub id: Option<String>,
    pub bsn: Option<String>,
    /// Why neither is known although the request names a patient ambiguously.
    pub problem: Option<String>,
}

/// The compartments a search may be made in (R4 `compartmentdefinition.html`).
const COMPARTMENTS: [&str; 5] = [
    "Patient",
    "Encounter",
    "RelatedPerson",
    "Practitioner",
    "Device",
];

/// Reads `request` as a FHIR REST call below `base` (`/fhir`, or empty for the root).
pub fn parse(
    request: &AccessRequest,
    base: &str,
    version: FhirVersion,
    limits: &FhirLimits,
) -> Result<ParsedRequest, FhirError> {
    let base = base.trim_end_matches('/');
    let rest = request
        .path
        .strip_prefix(base)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .ok_or(FhirError::NotBelowBase)?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let mut parsed = locate(&request.method, &segments, version);
    if parsed.interaction == FhirInteraction::Transaction {
        parsed.interaction = bundle_type(request, limits);
    }
    let body = form_body(request, &parsed)?;
    if request.query.len() + body.map_or(0, str::len) > limits.max_bytes {
        return Err(FhirError::TooLarge("the query"));
    }
    read_query(&mut parsed, &request.query, body, limits)?;
    Ok(parsed)
}

/// The interaction, type, id, version, operation and compartment a path names.
fn locate(method: &str, segments: &[&str], version: FhirVersion) -> ParsedRequest {
    use FhirInteraction::*;
    let unknown = ParsedRequest::new(version, Unknown);
    // Encoded, empty or dot segments could mean something else to the FHIR server than
    // to us: never guess.
    if segments
        .iter()
        .any(|s| s.is_empty() || s.contains('%') || s.chars().all(|c| c == '.'))
    {
        return unknown;
    }
    let method = if method == "HEAD" { "GET" } else { method };
    let get_or_post = matches!(method, "GET" | "POST");
    let at = |interaction| ParsedRequest::new(version, interaction);
    let on = |interaction, resource_type: &str, id: Option<&str>| {
        let mut parsed = ParsedRequest::new(version, interaction);
        parsed.resource_type = Some(resource_type.to_owned());
        parsed.id = id.map(str::to_owned);
        parsed
    };
    let operation = |mut parsed: ParsedRequest, op: &str| match op
        .strip_prefix('$')
        .filter(|name| is_operation(name))
    {
        Some(name) if get_or_post => {
            parsed.operation = Some(name.to_owned());
            parsed
        }
        _ => ParsedRequest::new(version, Unknown),
    };
    match (method, segments) {
        ("GET", []) => at(SearchSystem),
        // The body says which; see `bundle_type`.
        ("POST", []) => at(Transaction),
        ("POST", ["_search"]) => at(SearchSystem),
        ("GET", ["_history"]) => at(HistorySystem),
        ("GET", ["metadata"]) => at(Capabilities),
        (_, [op]) if op.starts_with('$') => operation(at(Operation), op),
        (_, [t, ..]) if !super::is_type(t) => unknown,
        (_, [t, op]) if op.starts_with('$') => operation(on(Operation, t, None), op),
        (_, [t, id, op]) if op.starts_with('$') && is_id(id) => {
            operation(on(Operation, t, Some(id)), op)
        }
        ("GET", [t]) => on(SearchType, t, None),
        ("POST", [t]) => on(Create, t, None),
        ("PUT", [t]) => on(Update, t, None),
        ("PATCH", [t]) => on(Patch, t, None),
        ("DELETE", [t]) => on(Delete, t, None),
        ("POST", [t, "_search"]) => on(SearchType, t, None),
        ("GET", [t, "_history"]) => on(HistoryType, t, None),
        (_, [_, id, ..]) if !is_id(id) => unknown,
        ("GET", [t, id]) => on(Read, t, Some(id)),
        ("PUT", [t, id]) => on(Update, t, Some(id)),
        ("PATCH", [t, id]) => on(Patch, t, Some(id)),
        ("DELETE", [t, id]) => on(Delete, t, Some(id)),
        ("GET", [t, id, "_history"]) => on(HistoryInstance, t, Some(id)),
        ("GET", [t, id, "_history", vid]) if is_id(vid) => {
            let mut parsed = on(Vread, t, Some(id));
            parsed.version_id = Some((*vid).to_owned());
            parsed
        }
        ("GET", [c, id, t]) | ("POST", [c, id, t, "_search"])
            if COMPARTMENTS.contains(c) && super::is_type(t) =>
        {
            let mut parsed = on(SearchType, t, None);
            parsed.compartment = Some(((*c).to_owned(), (*id).to_owned()));
            parsed
        }
        _ => unknown,
    }
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An operation name after `$`: `[A-Za-z][A-Za-z0-9\-\._]{0,63}`.
fn is_operation(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `POST [base]`: a Bundle whose `type` is `transaction` or `batch`; anything else
/// (no body, not JSON, too large to read here, another type) is `unknown`.
fn bundle_type(request: &AccessRequest, limits: &FhirLimits) -> FhirInteraction {
    if request.body.is_empty() || request.body.len() > limits.max_bundle_bytes {
        return FhirInteraction::Unknown;
    }
    let Ok(bundle) = crate::json::strict_json(&request.body) else {
        return FhirInteraction::Unknown;
    };
    if bundle.get("resourceType").and_then(|t| t.as_str()) != Some("Bundle") {
        return FhirInteraction::Unknown;
    }
    match bundle.get("type").and_then(|t| t.as_str()) {
        Some("transaction") => FhirInteraction::Transaction,
        Some("batch") => FhirInteraction::Batch,
        _ => FhirInteraction::Unknown,
    }
}

/// The form body whose parameters count as the query's: POST `_search` (where a
/// missing or unreadable body is an error, since its parameters decide) and POST
/// operations (whose body may as well be a `Parameters` resource, which is not read).
fn form_body<'r>(
    request: &'r AccessRequest,
    parsed: &ParsedRequest,
) -> Result<Option<&'r str>, FhirError> {
    if request.method != "POST" {
        return Ok(None);
    }
    let searching = matches!(
        parsed.interaction,
        FhirInteraction::SearchType | FhirInteraction::SearchSystem
    );
    if !searching && parsed.interaction != FhirInteraction::Operation {
        return Ok(None);
    }
    let is_form = request.headers.get("content-type").is_some_and(|t| {
        t.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !searching {
        return Ok(is_form.then_some(request.body.as_str()));
    }
    // The gateway did not forward (all of) the body: its parameters cannot be judged.
    let partial = request
        .headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let announced = request
        .headers
        .get("content-length")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if partial || (request.body.is_empty() && announced > 0) {
        return Err(FhirError::BodyMissing);
    }
    if request.body.is_empty() {
        return Ok(None);
    }
    if !is_form {
        return Err(FhirError::BodyNotForm);
    }
    Ok(Some(&request.body))
}

/// Reads the URL query and a form body (FHIR treats their parameters alike) into
/// search and result parameters.
fn read_query(
    parsed: &mut ParsedRequest,
    query: &str,
    body: Option<&str>,
    limits: &FhirLimits,
) -> Result<(), FhirError> {
    let mut pairs = 0usize;
    let (mut seen_count, mut seen_summary, mut seen_elements) = (false, false, false);
    let sources = [query, body.unwrap_or("")];
    for (name, value) in sources
        .iter()
        .flat_map(|s| form_urlencoded::parse(s.as_bytes()))
    {
        pairs += 1;
        if pairs > limits.max_pairs {
            return Err(FhirError::TooLarge("parameters"));
        }
        let once = |seen: &mut bool| {
            if std::mem::replace(seen, true) {
                Err(FhirError::Repeated(name.to_string()))
            } else {
                Ok(())
            }
        };
        match name.as_ref() {
            "_include" | "_revinclude" => {
                include(parsed, &name, &value, false, limits)?;
                continue;
            }
            "_count" => {
                once(&mut seen_count)?;
                parsed.count = Some(
                    value
                        .parse()
                        .map_err(|_| FhirError::BadValue("_count".into()))?,
                );
                continue;
            }
            "_summary" => {
                once(&mut seen_summary)?;
                parsed.summary = Some(value.into_owned());
                continue;
            }
            "_elements" => {
                once(&mut seen_elements)?;
                parsed.elements = split_or(&value);
                continue;
            }
            "_sort" => {
                parsed.sort.extend(split_or(&value));
                continue;
            }
            // How the answer is written, not what it holds.
            "_format" | "_pretty" | "_total" => continue,
            _ => {}
        }
        if let Some((base, modifier)) = name.split_once(':')
            && matches!(base, "_include" | "_revinclude")
        {
            if modifier == parsed.version.iterate_modifier() {
                include(parsed, base, &value, true, limits)?;
                continue;
            }
            return Err(FhirError::BadName {
                name: name.to_string(),
                why: if matches!(modifier, "iterate" | "recurse") {
                    "this FHIR version spells it the other way (`:iterate` R4, `:recurse` STU3)"
                } else {
                    "an include's only modifier is `:iterate` (R4) or `:recurse` (STU3)"
                },
            });
        }
        let values = split_or(&value);
        if values.len() > limits.max_or {
            return Err(FhirError::TooLarge("OR-values of one parameter"));
        }
        match parsed.params.iter_mut().find(|p| p.raw == name) {
            Some(param) => {
                if param.values.len() == limits.max_and {
                    return Err(FhirError::TooLarge("repetitions of one parameter"));
                }
                param.values.push(values);
            }
            None => {
                let mut param = parse_name(&name, limits)?;
                param.values.push(values);
                parsed.params.push(param);
            }
        }
    }
    Ok(())
}

fn include(
    parsed: &mut ParsedRequest,
    name: &str,
    value: &str,
    iterate: bool,
    limits: &FhirLimits,
) -> Result<(), FhirError> {
    if parsed.include.len() + parsed.revinclude.len() >= limits.max_includes {
        return Err(FhirError::TooLarge("includes"));
    }
    let include = Include {
        value: value.to_owned(),
        iterate,
    };
    if name == "_include" {
        parsed.include.push(include);
    } else {
        parsed.revinclude.push(include);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
