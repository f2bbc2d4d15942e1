//! Flows: registered grants that policies consult.
//!
//! A flow says "actor X may do these operations on these resources, for this purpose,
//! from then until then": an eOverdracht transfer, a NutsAuthorizationCredential. The
//! resource owner's system registers a flow when a transfer starts and revokes it when it
//! ends; policies read the caller's active flows (`flows` in CEL) on every request.
//!
//! - [`Flow`]: the model as the admin API and import files carry it, with validation
//!   that names every bad field, and import of a NutsAuthorizationCredential.
//! - [`index`]: the in-memory index per actor that decisions read; never a database
//!   round trip on the hot path.
//!
//! The durable store (SQLite or PostgreSQL) and the API both admin doors call live in the
//! `sluis-store` crate: they write flows, and keep an index current through its write
//! methods.

pub mod index;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use index::FlowIndex;

/// A registered grant. JSON field names are the API's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Unique; creating a flow again with the same id and content changes nothing.
    pub id: String,
    /// The use case, e.g. `eOverdracht` (Nuts `purposeOfUse`).
    pub purpose: String,
    /// The resource owner (e.g. the sending organisation's DID or URA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub custodian: String,
    /// Who may use the flow: the identifier a policy compares with a token field (a DID,
    /// URA or client_id).
    pub actor: String,
    /// The patient the flow is about, when it is about one (e.g. `urn:oid:...:BSN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// What the actor may touch.
    pub resources: Vec<Resource>,
    /// Scopes the caller's token may use with this flow; empty means the policy decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// Set by a revoke; a revoked flow permits nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Anything else policies may read (`f.attributes.x`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A resource of a flow and what may be done to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// A path relative to the policy's `flows.base_path`: `/Composition/abc`, a glob
    /// (`/Observation/*`, `*` within a segment, `**` across), or a FHIR reference
    /// `Composition/abc` (stored as `/Composition/abc`).
    pub path: String,
    /// HTTP methods (`GET`, `POST`, ...) on exactly this path, or Nuts/FHIR operations:
    /// `read`, `vread`, `update`, `patch`, `delete`, `history`, `create`, `search`,
    /// `document`.
    pub operations: Vec<String>,
}

/// A problem with one field of a flow, for 400 answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where, e.g. `resources[1].operations[0]`; with a `[n].` prefix in bulk imports.
    pub field: String,
    pub message: String,
}

/// The top-level field of a path such as `resources[0].operations[1]`.
fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// A time that cannot be read says which form is expected.
fn time_hint(field: &str, message: String) -> String {
    if ["valid_from", "valid_until", "revoked_at"].contains(&field) {
        format!("{message}: expected an RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
    } else {
        message
    }
}

/// A flow's fields as the API names them, in the model's order.
const FLOW_FIELDS: [&str; 11] = [
    "id",
    "purpose",
    "custodian",
    "actor",
    "patient",
    "resources",
    "scopes",
    "valid_from",
    "valid_until",
    "revoked_at",
    "attributes",
];

/// The fields a flow cannot be without.
const REQUIRED_FIELDS: [&str; 4] = ["id", "purpose", "actor", "resources"];

/// Reads a flow's fields one by one, collecting what cannot be read.
struct FieldReader {
    errors: FieldErrors,
    /// The top-level fields that could not be read: validation does not report them again.
    bad: Vec<&'static str>,
}

impl FieldReader {
    /// Reads `value` into `into`, or records why it cannot be read, at the path inside
    /// it (`resources[1].operations`).
    fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        field: &'static str,
        value: serde_json::Value,
        into: &mut T,
    ) {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(read) => *into = read,
            Err(failure) => {
                let inner = failure.path().to_string();
                let path = match inner.as_str() {
                    "." => field.to_owned(),
                    _ if inner.starts_with('[') => format!("{field}{inner}"),
                    _ => format!("{field}.{inner}"),
                };
                let message = time_hint(field, failure.into_inner().to_string());
                self.errors.push(FieldError::new(path, message));
                self.bad.push(field);
            }
        }
    }
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for the `index`-th item of a list.
    pub fn at(self, index: usize) -> FieldError {
        let field = if self.field.is_empty() {
            format!("[{index}]")
        } else {
            format!("[{index}].{}", self.field)
        };
        FieldError { field, ..self }
    }
}

/// Problems listed for one flow, at most; the rest are counted in one last entry. A flow
/// of a megabyte of empty operations would otherwise yield some 350,000 messages (about
/// 70 MB) that all say the same.
pub const MAX_FIELD_ERRORS: usize = 20;

/// Problems listed for one import, at most; the rest are counted in one last entry, so a
/// body of bad flows costs memory by this bound, not by the body.
pub const MAX_IMPORT_ERRORS: usize = 1000;

/// Field errors up to a bound, the rest only counted.
#[derive(Debug)]
pub struct FieldErrors {
    listed: Vec<FieldError>,
    unlisted: usize,
    max: usize,
}

impl FieldErrors {
    /// At most `max` listed.
    pub fn new(max: usize) -> FieldErrors {
        FieldErrors {
            listed: Vec::new(),
            unlisted: 0,
            max,
        }
    }

    pub fn push(&mut self, error: FieldError) {
        if self.listed.len() < self.max {
            self.listed.push(error);
        } else {
            self.unlisted += 1;
        }
    }

    /// Like [`FieldErrors::push`], building the error only when it will be listed: a
    /// megabyte of bad entries must not format a message for each.
    pub fn push_with(&mut self, error: impl FnOnce() -> FieldError) {
        if self.listed.len() < self.max {
            self.listed.push(error());
        } else {
            self.unlisted += 1;
        }
    }

    /// The problems of the `index`th flow of an import.
    pub fn add_flow(&mut self, index: usize, errors: Vec<FieldError>) {
        for error in errors {
            self.push(error.at(index));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.unlisted == 0
    }

    /// The listed errors, and one more saying how many were left out.
    pub fn into_vec(mut self) -> Vec<FieldError> {
        if self.unlisted > 0 {
            let more = self.unlisted;
            self.listed.push(FieldError::new(
                "",
                format!("and {more} more problems not listed"),
            ));
        }
        self.listed
    }
}

/// Limits on what one flow may hold: a flow is read on every request of its actor.
pub const MAX_ID: usize = 200;
pub const MAX_IDENTIFIER: usize = 500;
pub const MAX_RESOURCES: usize = 100;
pub const MAX_PATH: usize = 1000;
pub const MAX_SCOPES: usize = 50;
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// What an operation allows: the methods, and what follows the resource's path.
struct OperationRule {
    name: &'static str,
    methods: &'static [&'static str],
    suffix: Suffix,
}

#[derive(Clone, Copy)]
enum Suffix {
    /// The path itself.
    None,
    /// The path followed by exactly this.
    Exact(&'static str),
    /// The path followed by this and one more segment (`/_history` + `/{vid}`).
    OneSegment(&'static str),
}

/// Every operation a resource may list. HTTP methods allow exactly the resource's path;
/// Nuts/FHIR operations follow the FHIR REST API (read `GET [type]/[id]`, vread
/// `GET [type]/[id]/_history/[vid]`, search `GET [type]` or `POST [type]/_search`, ...).
const OPERATIONS: [OperationRule; 16] = [
    op("GET", &["GET", "HEAD"], Suffix::None),
    op("HEAD", &["HEAD"], Suffix::None),
    op("POST", &["POST"], Suffix::None),
    op("PUT", &["PUT"], Suffix::None),
    op("PATCH", &["PATCH"], Suffix::None),
    op("DELETE", &["DELETE"], Suffix::None),
    op("OPTIONS", &["OPTIONS"], Suffix::None),
    op("read", &["GET", "HEAD"], Suffix::None),
    op("vread", &["GET", "HEAD"], Suffix::OneSegment("/_history")),
    op("history", &["GET", "HEAD"], Suffix::Exact("/_history")),
    op("update", &["PUT"], Suffix::None),
    op("patch", &["PATCH"], Suffix::None),
    op("delete", &["DELETE"], Suffix::None),
    op("create", &["POST"], Suffix::None),
    op("search", &["GET", "HEAD"], Suffix::None),
    op(
        "document",
        &["GET", "HEAD", "POST"],
        Suffix::Exact("/$document"),
    ),
];

/// The position of `search` in [`OPERATIONS`]: matching a request against a flow asks
/// whether a resource allows it on every Check, and looking the name up each time cost
/// more than the match.
const SEARCH: usize = 14;

/// `search` also allows `POST [type]/_search`.
const SEARCH_POST: OperationRule = op("search", &["POST"], Suffix::Exact("/_search"));

const fn op(name: &'static str, methods: &'static [&'static str], suffix: Suffix) -> OperationRule {
    OperationRule {
        name,
        methods,
        suffix,
    }
}

/// A set of operations, one bit per entry of `OPERATIONS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Operations(u16);

impl Operations {
    pub fn parse(name: &str) -> Option<Operations> {
        OPERATIONS
            .iter()
            .position(|o| o.name == name)
            .map(|i| Operations(1 << i))
    }

    pub fn union(self, other: Operations) -> Operations {
        Operations(self.0 | other.0)
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        OPERATIONS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, o)| o.name)
    }

    fn rules(self) -> impl Iterator<Item = &'static OperationRule> {
        let search = self.0 & (1 << SEARCH) != 0;
        OPERATIONS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, o)| o)
            .chain(search.then_some(&SEARCH_POST))
    }
}

/// Whether `path` (relative to the policy's base path) is `pattern` followed by what
/// one of `operations` allows, for `method` (or any method when `None`).
pub fn resource_permits(
    pattern: &str,
    operations: Operations,
    path: &str,
    method: Option<&str>,
) -> bool {
    operations.rules().any(|rule| {
        if method.is_some_and(|m| !rule.methods.contains(&m)) {
            return false;
        }
        let root = match rule.suffix {
            Suffix::None => Some(path),
            Suffix::Exact(suffix) => path.strip_suffix(suffix),
            Suffix::OneSegment(before) => path
                .rsplit_once('/')
                .filter(|(_, last)| !last.is_empty())
                .and_then(|(rest, _)| rest.strip_suffix(before)),
        };
        root.is_some_and(|root| !root.is_empty() && path_matches(pattern, root))
    })
}

/// A resource pattern against a path: plain paths (the usual case) by comparison, globs
/// by `fast_glob`.
fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern.contains(['*', '?', '[', '{']) {
        fast_glob::glob_match(pattern, path)
    } else {
        pattern == path
    }
}

/// The part of a request path a flow's resources are matched against: the path below
/// `base` (which must end at a segment boundary), or `None` outside it.
pub fn relative_path<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(base)?;
    rest.starts_with('/').then_some(rest)
}

impl Flow {
    /// Checks every field and puts references in their stored form. All problems are
    /// reported, each with its field.
    pub fn validate(&mut self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::new(MAX_FIELD_ERRORS);
        let mut identifier = |field: &str, value: &str, max: usize, required: bool| {
            if required && value.trim().is_empty() {
                errors.push(FieldError::new(field, "is required"));
            } else if value.len() > max {
                errors.push(FieldError::new(
                    field,
                    format!("is longer than {max} bytes"),
                ));
            } else if value.chars().any(char::is_control) {
                errors.push(FieldError::new(field, "contains control characters"));
            }
        };
        identifier("id", &self.id, MAX_ID, true);
        identifier("purpose", &self.purpose, MAX_IDENTIFIER, true);
        identifier("actor", &self.actor, MAX_IDENTIFIER, true);
        identifier("custodian", &self.custodian, MAX_IDENTIFIER, false);
        if let Some(patient) = &self.patient {
            identifier("patient", patient, MAX_IDENTIFIER, true);
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            identifier(&format!("scopes[{i}]"), scope, MAX_IDENTIFIER, true);
        }
        if self.scopes.len() > MAX_SCOPES {
            errors.push(FieldError::new(
                "scopes",
                format!("has more than {MAX_SCOPES} entries"),
            ));
        }
        if self.resources.is_empty() {
            errors.push(FieldError::new("resources", "needs at least one resource"));
        }
        if self.resources.len() > MAX_RESOURCES {
            errors.push(FieldError::new(
                "resources",
                format!("has more than {MAX_RESOURCES} entries"),
            ));
        }
        for (i, resource) in self.resources.iter_mut().enumerate() {
            if let Err(message) = normalize_path(&mut resource.path) {
                errors.push(FieldError::new(format!("resources[{i}].path"), message));
            }
            if resource.operations.is_empty() {
                errors.push(FieldError::new(
                    format!("resources[{i}].operations"),
                    "needs at least one operation",
                ));
            }
            for (j, operation) in resource.operations.iter().enumerate() {
                if Operations::parse(operation).is_none() {
                    errors.push_with(|| {
                        FieldError::new(
                            format!("resources[{i}].operations[{j}]"),
                            format!(
                                "unknown operation `{operation}` (known: {})",
                                OPERATIONS
                                    .iter()
                                    .map(|o| o.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    });
                }
            }
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until)
            && until <= from
        {
            errors.push(FieldError::new("valid_until", "is not after valid_from"));
        }
        let attributes = serde_json::to_vec(&self.attributes).map_or(0, |a| a.len());
        if attributes > MAX_ATTRIBUTES_BYTES {
            errors.push(FieldError::new(
                "attributes",
                format!("is larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON"),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.into_vec())
        }
    }

    /// Parses one flow from JSON, with field-level errors for malformed input, and
    /// validates it. A NutsAuthorizationCredential (an object with `credentialSubject`)
    /// is imported as a flow.
    pub fn from_json(value: serde_json::Value) -> Result<Flow, Vec<FieldError>> {
        let mut flow = if value.get("credentialSubject").is_some() {
            Flow::from_nuts_credential(&value)?
        } else {
            Flow::read_every_field(value)?
        };
        flow.validate()?;
        Ok(flow)
    }

    /// Reads a flow in one pass over its fields, naming every field that cannot be read,
    /// not only the first: each field's value is read on its own, unknown fields and
    /// missing required ones are named too. When any was bad, the fields that were read
    /// are validated as well, so one answer lists every problem.
    fn read_every_field(value: serde_json::Value) -> Result<Flow, Vec<FieldError>> {
        let object = match value {
            serde_json::Value::Object(object) => object,
            // Not an object: serde's own message ("invalid type: ..., expected struct Flow").
            other => {
                return serde_json::from_value::<Flow>(other)
                    .map_err(|e| vec![FieldError::new("", e.to_string())]);
            }
        };
        let mut reader = FieldReader {
            errors: FieldErrors::new(MAX_FIELD_ERRORS),
            bad: Vec::new(),
        };
        let mut flow = Flow {
            id: String::new(),
            purpose: String::new(),
            custodian: String::new(),
            actor: String::new(),
            patient: None,
            resources: Vec::new(),
            scopes: Vec::new(),
            valid_from: None,
            valid_until: None,
            revoked_at: None,
            attributes: serde_json::Map::new(),
        };
        let mut present: Vec<&str> = Vec::new();
        for (key, value) in object {
            let Some(field) = FLOW_FIELDS.iter().copied().find(|field| *field == key) else {
                reader.errors.push_with(|| {
                    let known = FLOW_FIELDS
                        .iter()
                        .map(|field| format!("`{field}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    FieldError::new(
                        key.as_str(),
                        crate::did_you_mean(&format!(
                            "unknown field `{key}`, expected one of {known}"
                        )),
                    )
                });
                continue;
            };
            present.push(field);
            let r = &mut reader;
            match field {
                "id" => r.read("id", value, &mut flow.id),
                "purpose" => r.read("purpose", value, &mut flow.purpose),
                "custodian" => r.read("custodian", value, &mut flow.custodian),
                "actor" => r.read("actor", value, &mut flow.actor),
                "patient" => r.read("patient", value, &mut flow.patient),
                "resources" => r.read("resources", value, &mut flow.resources),
                "scopes" => r.read("scopes", value, &mut flow.scopes),
                "valid_from" => r.read("valid_from", value, &mut flow.valid_from),
                "valid_until" => r.read("valid_until", value, &mut flow.valid_until),
                "revoked_at" => r.read("revoked_at", value, &mut flow.revoked_at),
                _ => r.read("attributes", value, &mut flow.attributes),
            }
        }
        for field in REQUIRED_FIELDS {
            if !present.contains(&field) {
                reader
                    .errors
                    .push(FieldError::new(field, format!("missing field `{field}`")));
                reader.bad.push(field);
            }
        }
        let FieldReader { mut errors, bad } = reader;
        if errors.is_empty() {
            return Ok(flow);
        }
        if let Err(more) = flow.validate() {
            for error in more {
                if !bad.contains(&top_field(&error.field)) {
                    errors.push(error);
                }
            }
        }
        Err(errors.into_vec())
    }

    /// A NutsAuthorizationCredential (Nuts RFC014) as a flow: the credential's id is the
    /// flow's, `credentialSubject.id` the actor, the issuer the custodian, `purposeOfUse`
    /// the purpose, `subject` the patient, `resources` the resources, and
    /// `issuanceDate`/`expirationDate` the validity. `legalBase` is kept as an attribute.
    pub fn from_nuts_credential(credential: &serde_json::Value) -> Result<Flow, Vec<FieldError>> {
        let text =
            |value: Option<&serde_json::Value>| value.and_then(|v| v.as_str()).map(str::to_owned);
        let time = |field: &str| -> Result<Option<DateTime<Utc>>, FieldError> {
            match credential.get(field).and_then(|v| v.as_str()) {
                None => Ok(None),
                Some(t) => DateTime::parse_from_rfc3339(t)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(|e| {
                        FieldError::new(
                            field,
                            format!(
                                "is not an RFC 3339 time ({e}): expected e.g. 2026-01-31T12:00:00Z"
                            ),
                        )
                    }),
            }
        };
        let subject = &credential["credentialSubject"];
        let mut errors = Vec::new();
        let types = &credential["type"];
        let is_nuts = types.as_str() == Some("NutsAuthorizationCredential")
            || types.as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t.as_str() == Some("NutsAuthorizationCredential"))
            });
        if !is_nuts {
            errors.push(FieldError::new(
                "type",
                "a credential must be a NutsAuthorizationCredential",
            ));
        }
        let resources: Vec<Resource> =
            match serde_json::from_value::<Vec<NutsResource>>(subject["resources"].clone()) {
                Ok(resources) => resources
                    .into_iter()
                    .map(|r| Resource {
                        path: r.path,
                        operations: r.operations,
                    })
                    .collect(),
                Err(e) => {
                    errors.push(FieldError::new(
                        "credentialSubject.resources",
                        e.to_string(),
                    ));
                    Vec::new()
                }
            };
        let valid_from = time("issuanceDate").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let valid_until = time("expirationDate").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let mut attributes = serde_json::Map::new();
        if let Some(legal_base) = subject.get("legalBase") {
            attributes.insert("legalBase".into(), legal_base.clone());
        }
        attributes.insert(
            "source".into(),
            serde_json::Value::String("NutsAuthorizationCredential".into()),
        );
        let flow = Flow {
            id: text(credential.get("id")).unwrap_or_default(),
            purpose: text(subject.get("purposeOfUse")).unwrap_or_default(),
            custodian: text(credential.get("issuer")).unwrap_or_default(),
            actor: text(subject.get("id")).unwrap_or_default(),
            patient: text(subject.get("subject")),
            resources,
            scopes: Vec::new(),
            valid_from,
            valid_until,
            revoked_at: None,
            attributes,
        };
        // Name the credential's fields, not the flow's, in errors.
        if let Err(more) = flow.clone().validate() {
            errors.extend(more.into_iter().map(|e| FieldError {
                field: match e.field.as_str() {
                    "id" => "id".into(),
                    "purpose" => "credentialSubject.purposeOfUse".into(),
                    "actor" => "credentialSubject.id".into(),
                    "custodian" => "issuer".into(),
                    "patient" => "credentialSubject.subject".into(),
                    other => format!("credentialSubject.{other}"),
                },
                ..e
            }));
        }
        if errors.is_empty() {
            Ok(flow)
        } else {
            Err(errors)
        }
    }

    /// Active at `now`: not revoked, and within its validity.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none()
            && self.valid_from.is_none_or(|from| from <= now)
            && self.valid_until.is_none_or(|until| now < until)
    }
}

#[derive(Deserialize)]
struct NutsResource {
    path: String,
    operations: Vec<String>,
    // `userContext` says whether a user must be present; Sluis leaves it to policy.
    #[serde(default, rename = "userContext")]
    _user_context: Option<bool>,
}

/// Checks a resource path and stores FHIR references (`Type/id`) as paths.
fn normalize_path(path: &mut String) -> Result<(), String> {
    if path.is_empty() {
        return Err("is required".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("is longer than {MAX_PATH} bytes"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '?' || c == '#')
    {
        return Err("must be a path without spaces, control characters, query or fragment".into());
    }
    if !path.starts_with('/') {
        if path.starts_with(|c: char| c.is_ascii_uppercase()) {
            path.insert(0, '/');
        } else {
            return Err("must start with `/`, or be a FHIR reference such as `Patient/123`".into());
        }
    }
    if path.split('/').skip(1).any(|segment| segment.is_empty()) && path != "/" {
        return Err("has an empty segment".into());
    }
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err("has a `.` or `..` segment".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named_not_only_the_first() {
        let errors = Flow::from_json(serde_json::json!({
            "id": 7,
            "purpose": "eOverdracht",
            "actor": ["not", "a", "string"],
            "resources": [{"path": "Patient/1", "operations": ["read"]}],
            "valid_from": "yesterday",
            "colour": "blue",
            "scopes": "one"
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for field in ["id", "actor", "valid_from", "colour", "scopes"] {
            assert!(fields.contains(&field), "{field} not named: {errors:?}");
        }
        let time = errors.iter().find(|e| e.field == "valid_from").unwrap();
        assert!(
            time.message.contains("RFC 3339") && time.message.contains("2026-01-31T12:00:00Z"),
            "{time:?}"
        );
        // Missing required fields are all named too, and a good flow still reads.
        let errors = Flow::from_json(serde_json::json!({"resources": []})).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for field in ["id", "purpose", "actor"] {
            assert!(fields.contains(&field), "{field} not named: {errors:?}");
        }
        assert!(errors.len() <= MAX_FIELD_ERRORS + 1);
        assert!(
            Flow::from_json(serde_json::json!({"id": "f", "purpose": "p", "actor": "a",
            "resources": [{"path": "Task/1", "operations": ["read"]}]}))
            .is_ok()
        );
    }

    #[test]
    fn a_flow_with_several_bad_fields_names_them_all_at_their_paths() {
        let errors = Flow::from_json(serde_json::json!({
            "id": "",
            "actor": false,
            "resources": [
                {"path": "Patient/1", "operations": ["read"]},
                {"path": "Patient/2", "operations": "read"},
                {"path": "Patient/3", "operations": ["read"], "colour": "blue"}
            ],
            "scope": ["a"],
            "valid_until": "tomorrow",
            "revoked_at": 5,
            "attributes": []
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for field in [
            "actor",
            "attributes",
            "resources[1].operations",
            "revoked_at",
            "scope",
            "valid_until",
            "purpose",
            "id",
        ] {
            assert!(fields.contains(&field), "{field} not named: {errors:?}");
        }
        // Each field once: a field that could not be read is not validated again.
        let mut unique = fields.clone();
        unique.dedup();
        assert_eq!(unique.len(), fields.len(), "{errors:?}");
        let unknown = errors.iter().find(|e| e.field == "scope").unwrap();
        assert!(
            unknown.message.starts_with(
                "unknown field `scope` (did you mean `scopes`?), expected one of `id`"
            ),
            "{unknown:?}"
        );
        let missing = errors.iter().find(|e| e.field == "purpose").unwrap();
        assert_eq!(missing.message, "missing field `purpose`");
        // Not an object at all: one error for the whole flow.
        let errors = Flow::from_json(serde_json::json!("a flow")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("expected struct Flow"),
            "{errors:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_json_object_is_answered_with_bounded_errors(
            entries in proptest::collection::btree_map("[a-z_]{1,12}", proptest::prelude::any::<i64>(), 0..30)
        ) {
            let object: serde_json::Map<String, serde_json::Value> =
                entries.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
            if let Err(errors) = Flow::from_json(serde_json::Value::Object(object)) {
                proptest::prop_assert!(!errors.is_empty() && errors.len() <= MAX_FIELD_ERRORS + 1);
            }
        }
    }

    fn ops(names: &[&str]) -> Operations {
        names
            .iter()
            .map(|n| Operations::parse(n).unwrap())
            .fold(Operations::default(), Operations::union)
    }

    #[test]
    fn search_is_where_its_constant_says() {
        assert_eq!(OPERATIONS[SEARCH].name, "search");
        assert_eq!(Operations::parse("search"), Some(Operations(1 << SEARCH)));
    }

    #[test]
    fn operations_follow_the_fhir_rest_api() {
        let read = ops(&["read"]);
        assert!(resource_permits(
            "/Patient/1",
            read,
            "/Patient/1",
            Some("GET")
        ));
        assert!(resource_permits(
            "/Patient/1",
            read,
            "/Patient/1",
            Some("HEAD")
        ));
        assert!(!resource_permits(
            "/Patient/1",
            read,
            "/Patient/1",
            Some("PUT")
        ));
        assert!(!resource_permits(
            "/Patient/1",
            read,
            "/Patient/12",
            Some("GET")
        ));
        assert!(!resource_permits(
            "/Patient/1",
            read,
            "/Patient/1/_history/2",
            Some("GET")
        ));
        let vread = ops(&["vread"]);
        assert!(resource_permits(
            "/Patient/1",
            vread,
            "/Patient/1/_history/2",
            Some("GET")
        ));
        assert!(!resource_permits(
            "/Patient/1",
            vread,
            "/Patient/1/_history",
            Some("GET")
        ));
        assert!(!resource_permits(
            "/Patient/1",
            vread,
            "/Patient/1/_history/",
            Some("GET")
        ));
        let history = ops(&["history"]);
        assert!(resource_permits(
            "/Patient/1",
            history,
            "/Patient/1/_history",
            Some("GET")
        ));
        let search = ops(&["search"]);
        assert!(resource_permits(
            "/Observation",
            search,
            "/Observation",
            Some("GET")
        ));
        assert!(resource_permits(
            "/Observation",
            search,
            "/Observation/_search",
            Some("POST")
        ));
        assert!(!resource_permits(
            "/Observation",
            search,
            "/Observation",
            Some("POST")
        ));
        let create = ops(&["create"]);
        assert!(resource_permits(
            "/Observation",
            create,
            "/Observation",
            Some("POST")
        ));
        let document = ops(&["document"]);
        assert!(resource_permits(
            "/Composition/9",
            document,
            "/Composition/9/$document",
            Some("GET")
        ));
        assert!(!resource_permits(
            "/Composition/9",
            document,
            "/Composition/9",
            Some("GET")
        ));
        let get = ops(&["GET"]);
        assert!(resource_permits(
            "/Observation/*",
            get,
            "/Observation/7",
            Some("GET")
        ));
        assert!(!resource_permits(
            "/Observation/*",
            get,
            "/Observation/7/x",
            Some("GET")
        ));
        assert!(resource_permits(
            "/Observation/**",
            get,
            "/Observation/7/x",
            Some("GET")
        ));
        // Without a method: does the flow cover the path at all?
        assert!(resource_permits("/Patient/1", read, "/Patient/1", None));
    }

    #[test]
    fn relative_paths_stop_at_segment_boundaries() {
        assert_eq!(
            relative_path("/fhir/Patient/1", "/fhir"),
            Some("/Patient/1")
        );
        assert_eq!(
            relative_path("/fhir/Patient/1", "/fhir/"),
            Some("/Patient/1")
        );
        assert_eq!(relative_path("/fhirx/Patient/1", "/fhir"), None);
        assert_eq!(relative_path("/Patient/1", ""), Some("/Patient/1"));
    }

    fn flow() -> serde_json::Value {
        serde_json::json!({
            "id": "transfer-1",
            "purpose": "eOverdracht",
            "custodian": "did:web:sender.example",
            "actor": "did:web:receiver.example",
            "resources": [
                {"path": "Composition/abc", "operations": ["read", "document"]},
                {"path": "/Patient/123", "operations": ["read"]},
            ],
            "scopes": ["eOverdracht-receiver"],
            "valid_until": "2030-01-01T00:00:00Z",
        })
    }

    #[test]
    fn references_are_stored_as_paths() {
        let flow = Flow::from_json(flow()).unwrap();
        assert_eq!(flow.resources[0].path, "/Composition/abc");
    }

    #[test]
    fn a_flow_lists_a_bounded_number_of_problems_and_counts_the_rest() {
        let mut value = flow();
        value["resources"][0]["operations"] = vec![""; 100_000].into();
        let errors = Flow::from_json(value).unwrap_err();
        assert_eq!(errors.len(), MAX_FIELD_ERRORS + 1, "{:?}", errors.last());
        assert_eq!(
            errors[MAX_FIELD_ERRORS].message,
            format!(
                "and {} more problems not listed",
                100_000 - MAX_FIELD_ERRORS
            )
        );
    }

    #[test]
    fn an_import_lists_a_bounded_number_of_problems_and_counts_the_rest() {
        let mut errors = FieldErrors::new(MAX_IMPORT_ERRORS);
        for index in 0..3 * MAX_IMPORT_ERRORS {
            errors.add_flow(index, vec![FieldError::new("id", "is required")]);
        }
        let errors = errors.into_vec();
        assert_eq!(errors.len(), MAX_IMPORT_ERRORS + 1);
        assert_eq!(errors[0].field, "[0].id");
        assert_eq!(
            errors[MAX_IMPORT_ERRORS].message,
            format!("and {} more problems not listed", 2 * MAX_IMPORT_ERRORS)
        );
        assert!(FieldErrors::new(1).is_empty());
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut value = flow();
        value["id"] = "".into();
        value["resources"][0]["operations"][1] = "steal".into();
        value["resources"][1]["path"] = "patient/../x".into();
        value["valid_from"] = "2031-01-01T00:00:00Z".into();
        let errors = Flow::from_json(value).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "id",
                "resources[0].operations[1]",
                "resources[1].path",
                "valid_until"
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn malformed_json_names_the_field() {
        let mut value = flow();
        value["resources"][1]["operations"] = "read".into();
        let errors = Flow::from_json(value).unwrap_err();
        assert_eq!(errors[0].field, "resources[1].operations", "{errors:?}");
        let mut value = flow();
        value["colour"] = "blue".into();
        let errors = Flow::from_json(value).unwrap_err();
        assert!(errors[0].message.contains("colour"), "{errors:?}");
    }

    #[test]
    fn a_nuts_authorization_credential_is_a_flow() {
        // The example credential of the Nuts documentation (seeds/nuts-authorization-credentials.txt).
        let credential = serde_json::json!({
            "@context": ["https://www.w3.org/2018/credentials/v1", "https://nuts.nl/credentials/v1"],
            "credentialSubject": {
                "id": "did:nuts:JCJEi3waNGNhkmwVvFB3wdUsmDYPnTcZxYiWThZqgWKv",
                "legalBase": {"consentType": "implied"},
                "purposeOfUse": "test-service",
                "resources": [{
                    "operations": ["read"],
                    "path": "/patient/2250f7ab-6517-4923-ac00-88ed26f85843",
                    "userContext": true
                }],
                "subject": "urn:oid:2.16.840.1.113883.2.4.6.3:123456780"
            },
            "id": "did:nuts:JCJEi3waNGNhkmwVvFB3wdUsmDYPnTcZxYiWThZqgWKv#314542e8-c8cc-4502-a7df-a815ac47c06b",
            "issuanceDate": "2021-07-26T14:36:10.163463+02:00",
            "issuer": "did:nuts:JCJEi3waNGNhkmwVvFB3wdUsmDYPnTcZxYiWThZqgWKv",
            "type": ["NutsAuthorizationCredential", "VerifiableCredential"]
        });
        let flow = Flow::from_json(credential.clone()).unwrap();
        assert_eq!(flow.purpose, "test-service");
        assert_eq!(
            flow.actor,
            "did:nuts:JCJEi3waNGNhkmwVvFB3wdUsmDYPnTcZxYiWThZqgWKv"
        );
        assert_eq!(
            flow.patient.as_deref(),
            Some("urn:oid:2.16.840.1.113883.2.4.6.3:123456780")
        );
        assert_eq!(flow.resources[0].operations, ["read"]);
        assert_eq!(flow.attributes["legalBase"]["consentType"], "implied");
        assert!(flow.valid_from.is_some());

        let mut wrong = credential;
        wrong["type"] = serde_json::json!(["VerifiableCredential"]);
        wrong["credentialSubject"]["purposeOfUse"] = serde_json::Value::Null;
        let errors = Flow::from_json(wrong).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["type", "credentialSubject.purposeOfUse"]);
    }

    #[test]
    fn activity_follows_validity_and_revocation() {
        let mut flow = Flow::from_json(flow()).unwrap();
        let now = Utc::now();
        assert!(flow.active_at(now));
        flow.valid_until = Some(now);
        assert!(!flow.active_at(now));
        flow.valid_until = None;
        flow.revoked_at = Some(now);
        assert!(!flow.active_at(now));
    }
}
