//! FHIR REST: which interaction an HTTP request is, relative to a FHIR base path.
//!
//! SMART scopes (`policy::smart`) and search narrowing
//! (`policy::narrowing`) both judge a request by its FHIR interaction, so both
//! must classify it the same way, and strictly: a path this module cannot read with
//! certainty (encoded or empty segments, a type name that is not one) is
//! [`Interaction::Unknown`], which neither ever permits.
//!
//! Policies with a `fhir` block read the whole request instead ([`request::parse`]:
//! interaction by its R4 code, operation, compartment, search parameters with
//! modifiers, chains and AND/OR values, includes), which rules see as `request.fhir`
//! and a CapabilityStatement ([`capability`]) bounds.

pub mod capability;
pub mod request;
pub mod search;

pub use request::{FhirInteraction, FhirVersion, Include, ParsedRequest, PatientRef, parse};
pub use search::{ChainLink, FhirLimits, HasLink, SearchParam};

/// Why a request cannot be read as a FHIR REST call. Each names what, and the offending
/// parameter name in backticks; never a value (values may hold a BSN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    #[error("the path is not below the FHIR base path")]
    NotBelowBase,
    #[error("too many or too long: {0}")]
    TooLarge(&'static str),
    #[error("parameter `{name}`: {why}")]
    BadName { name: String, why: &'static str },
    #[error("parameter `{0}` has a value that is not what FHIR expects")]
    BadValue(String),
    #[error("parameter `{0}` may be given once")]
    Repeated(String),
    #[error("the search's form body did not reach the authorization check")]
    BodyMissing,
    #[error("a POST _search body must be application/x-www-form-urlencoded")]
    BodyNotForm,
}

/// A FHIR RESTful interaction (FHIR R4 `http.html`), as far as authorization tells them
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// `GET [base]/[type]/[id]`
    Read,
    /// `GET [base]/[type]/[id]/_history/[vid]`
    Vread,
    /// `GET [base]/[type]/[id]/_history`
    InstanceHistory,
    /// `GET [base]/[type]` or `POST [base]/[type]/_search`
    Search { post: bool },
    /// `GET [base]/[type]/_history`
    TypeHistory,
    /// `GET [base]`, `POST [base]/_search`
    SystemSearch,
    /// `GET [base]/_history`
    SystemHistory,
    /// `POST [base]/[type]`
    Create,
    /// `PUT [base]/[type]/[id]`, or conditional: `PUT [base]/[type]?search`
    Update,
    /// `PATCH [base]/[type]/[id]`, or conditional: `PATCH [base]/[type]?search`
    Patch,
    /// `DELETE [base]/[type]/[id]`, or conditional: `DELETE [base]/[type]?search`
    Delete,
    /// `GET [base]/metadata`
    Capabilities,
    /// `POST [base]`: a batch or transaction bundle, to be judged per entry.
    Bundle,
    /// `[base]/$op`, `[base]/[type]/$op`, `[base]/[type]/[id]/$op`
    Operation,
    /// Anything else: not a FHIR REST interaction we can name with certainty.
    Unknown,
}

/// A request read as a FHIR interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirRequest<'a> {
    pub interaction: Interaction,
    /// The resource type, for type- and instance-level interactions.
    pub resource_type: Option<&'a str>,
}

/// Reads `method path` as a FHIR interaction below `base` (e.g. `/fhir`, or empty for the
/// root). `None` when the path is not below `base` at all.
pub fn classify<'a>(method: &str, path: &'a str, base: &str) -> Option<FhirRequest<'a>> {
    let base = base.trim_end_matches('/');
    let rest = path.strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    // One trailing slash is common and harmless (`/fhir/Patient/`).
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let unknown = FhirRequest {
        interaction: Interaction::Unknown,
        resource_type: None,
    };
    // Encoded, empty or dot segments could mean something else to the FHIR server than
    // to us: never guess.
    if segments
        .iter()
        .any(|s| s.is_empty() || s.contains('%') || s.chars().all(|c| c == '.'))
    {
        return Some(unknown);
    }
    let method = if method == "HEAD" { "GET" } else { method };
    let at = |interaction| FhirRequest {
        interaction,
        resource_type: None,
    };
    let on = |interaction, resource_type| FhirRequest {
        interaction,
        resource_type: Some(resource_type),
    };
    use Interaction::*;
    let classified = match (method, segments.as_slice()) {
        ("GET", []) => at(SystemSearch),
        ("POST", []) => at(Bundle),
        ("POST", ["_search"]) => at(SystemSearch),
        ("GET", ["_history"]) => at(SystemHistory),
        ("GET", ["metadata"]) => at(Capabilities),
        (_, [op]) if op.starts_with('$') => at(Operation),
        (_, [t, ..]) if !is_type(t) => unknown,
        (_, [t, op]) | (_, [t, _, op]) if op.starts_with('$') => on(Operation, *t),
        ("GET", [t]) => on(Search { post: false }, *t),
        ("POST", [t]) => on(Create, *t),
        ("PUT", [t]) => on(Update, *t),
        ("PATCH", [t]) => on(Patch, *t),
        ("DELETE", [t]) => on(Delete, *t),
        ("POST", [t, "_search"]) => on(Search { post: true }, *t),
        ("GET", [t, "_history"]) => on(TypeHistory, *t),
        (_, [_, id, ..]) if !is_id(id) => unknown,
        ("GET", [t, _]) => on(Read, *t),
        ("PUT", [t, _]) => on(Update, *t),
        ("PATCH", [t, _]) => on(Patch, *t),
        ("DELETE", [t, _]) => on(Delete, *t),
        ("GET", [t, _, "_history"]) => on(InstanceHistory, *t),
        ("GET", [t, _, "_history", vid]) if is_id(vid) => on(Vread, *t),
        _ => unknown,
    };
    Some(classified)
}

/// A FHIR resource type name: `Patient`, `MedicationRequest`.
pub fn is_type(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::Interaction::*;
    use super::*;

    #[test]
    fn interactions_are_named_by_method_and_path() {
        let cases: &[(&str, &str, Interaction, Option<&str>)] = &[
            ("GET", "/fhir/Patient/1", Read, Some("Patient")),
            ("HEAD", "/fhir/Patient/1", Read, Some("Patient")),
            ("GET", "/fhir/Patient/1/_history/2", Vread, Some("Patient")),
            (
                "GET",
                "/fhir/Patient/1/_history",
                InstanceHistory,
                Some("Patient"),
            ),
            (
                "GET",
                "/fhir/Patient",
                Search { post: false },
                Some("Patient"),
            ),
            (
                "GET",
                "/fhir/Patient/",
                Search { post: false },
                Some("Patient"),
            ),
            (
                "POST",
                "/fhir/Patient/_search",
                Search { post: true },
                Some("Patient"),
            ),
            (
                "GET",
                "/fhir/Patient/_history",
                TypeHistory,
                Some("Patient"),
            ),
            ("GET", "/fhir", SystemSearch, None),
            ("POST", "/fhir/_search", SystemSearch, None),
            ("GET", "/fhir/_history", SystemHistory, None),
            ("POST", "/fhir/Patient", Create, Some("Patient")),
            ("PUT", "/fhir/Patient/1", Update, Some("Patient")),
            ("PUT", "/fhir/Patient", Update, Some("Patient")),
            ("PATCH", "/fhir/Patient/1", Patch, Some("Patient")),
            ("DELETE", "/fhir/Patient/1", Delete, Some("Patient")),
            ("DELETE", "/fhir/Patient", Delete, Some("Patient")),
            ("GET", "/fhir/metadata", Capabilities, None),
            ("POST", "/fhir", Bundle, None),
            ("POST", "/fhir/$export", Operation, None),
            (
                "GET",
                "/fhir/Patient/1/$everything",
                Operation,
                Some("Patient"),
            ),
            ("GET", "/fhir/patient/1", Unknown, None),
            ("GET", "/fhir/Patient//1", Unknown, None),
            ("GET", "/fhir/Patient/%31", Unknown, None),
            ("GET", "/fhir/Patient/..", Unknown, None),
            ("GET", "/fhir/Patient/1/Observation", Unknown, None),
            ("GET", "/fhir/Patient/a_b", Unknown, None),
            ("OPTIONS", "/fhir/Patient", Unknown, None),
        ];
        for (method, path, interaction, resource_type) in cases {
            let got = classify(method, path, "/fhir").unwrap();
            assert_eq!(got.interaction, *interaction, "{method} {path}");
            assert_eq!(got.resource_type, *resource_type, "{method} {path}");
        }
    }

    #[test]
    fn paths_outside_the_base_are_not_fhir() {
        assert_eq!(classify("GET", "/other/Patient", "/fhir"), None);
        assert_eq!(classify("GET", "/fhirx/Patient", "/fhir"), None);
        assert!(classify("GET", "/Patient", "").is_some());
        assert!(classify("GET", "/fhir/Patient", "/fhir/").is_some());
    }
}
