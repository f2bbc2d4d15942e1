//! SMART App Launch v2 scopes: parsing `(patient|user|system)/(Type|*).[cruds][?p=v&...]`
//! (with the v1 forms `read`, `write`, `*`), and deciding whether a token's scopes permit
//! a FHIR REST request. Policies call it as `smartPermits(token.scopes, request, base)`.
//!
//! What each letter grants follows HL7/smart-app-launch `scopes-and-launch-context.md`:
//! `c` create; `r` read, vread and instance history; `u` update and patch (also
//! conditional); `d` delete (also conditional); `s` type-level search (GET and POST
//! `_search`) and type history, and, with the type `*`, system-level search and history.
//!
//! Never wider than a valid scope: a scope that does not parse grants nothing (and is
//! logged once); a constrained scope (`?identifier=ura|123`) grants only type-level
//! searches whose query carries every one of its parameters with exactly that value, since
//! FHIR ANDs repeated parameters, the search is then confined to what the constraint
//! allows. What the request alone cannot show (whether the resource read by id matches the
//! constraint, what `_include`d resources are, what a named `_query` does, what the body of
//! a POST `_search` adds) a constrained scope does not permit. Operations (`$op`),
//! batches, `metadata` and anything unrecognisable are for the policy's own rules.
//! `patient/` scopes are read like the others: confining them to the launch patient's
//! compartment is the policy's job (e.g. by search narrowing).

use crate::request::decoded_pairs;
use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use crate::fhir::{FhirRequest, Interaction, classify, is_type};

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: LaunchContext,
    /// `None` for `*`, every type.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
    /// `?param=value&...`, percent-decoded, in order.
    pub constraints: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchContext {
    Patient,
    User,
    System,
}

/// A set of the letters `c r u d s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

const LETTERS: [char; 5] = ['c', 'r', 'u', 'd', 's'];

impl Permissions {
    pub const ALL: Permissions = Permissions(0b11111);

    fn of(letter: char) -> Permissions {
        Permissions(
            LETTERS
                .iter()
                .position(|l| *l == letter)
                .map(|i| 1 << i)
                .unwrap_or(0),
        )
    }

    pub fn has(self, letter: char) -> bool {
        let bit = Self::of(letter).0;
        bit != 0 && self.0 & bit == bit
    }

    /// `read` → `rs`, `write` → `cud`, `*` → `cruds`, else letters in `cruds` order,
    /// each at most once.
    fn parse(text: &str) -> Result<Permissions, String> {
        match text {
            "read" => return Ok(Permissions(Self::of('r').0 | Self::of('s').0)),
            "write" => {
                return Ok(Permissions(
                    Self::of('c').0 | Self::of('u').0 | Self::of('d').0,
                ));
            }
            "*" => return Ok(Self::ALL),
            "" => return Err("no permissions after the `.`".into()),
            _ => {}
        }
        let mut last: Option<usize> = None;
        let mut bits = 0;
        for letter in text.chars() {
            let Some(at) = LETTERS.iter().position(|l| *l == letter) else {
                return Err(format!("`{letter}` is not one of c, r, u, d, s"));
            };
            if last.is_some_and(|last| at <= last) {
                return Err(format!("`{text}` is not in the order c, r, u, d, s"));
            }
            last = Some(at);
            bits |= 1 << at;
        }
        Ok(Permissions(bits))
    }
}

impl Scope {
    /// Parses one SMART scope. Scopes that are not SMART resource scopes at all
    /// (`openid`, `launch/patient`, `fhirUser`) are an error too; [`permits`] ignores them.
    pub fn parse(text: &str) -> Result<Scope, String> {
        let (context, rest) = text
            .split_once('/')
            .ok_or_else(|| "no `/` after the context".to_string())?;
        let context = match context {
            "patient" => LaunchContext::Patient,
            "user" => LaunchContext::User,
            "system" => LaunchContext::System,
            other => return Err(format!("`{other}` is not patient, user or system")),
        };
        let (resource, rest) = rest
            .split_once('.')
            .ok_or_else(|| "no `.` after the resource type".to_string())?;
        let resource_type = match resource {
            "*" => None,
            name if is_type(name) => Some(name.to_owned()),
            other => return Err(format!("`{other}` is not a resource type or `*`")),
        };
        let (letters, query) = match rest.split_once('?') {
            Some((letters, query)) => (letters, Some(query)),
            None => (rest, None),
        };
        let permissions = Permissions::parse(letters)?;
        let mut constraints = Vec::new();
        if let Some(query) = query {
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some((name, value)) if !name.is_empty() && !value.is_empty() => {
                        // One `name=value` pair, no `&`: exactly one decoded pair.
                        constraints.extend(decoded_pairs(pair));
                    }
                    _ => return Err(format!("constraint `{pair}` is not `param=value`")),
                }
            }
        }
        Ok(Scope {
            context,
            resource_type,
            permissions,
            constraints,
        })
    }

    /// Whether this scope alone permits `request` with its decoded `query`.
    fn permits(&self, request: &FhirRequest, query: &[(String, String)]) -> bool {
        use Interaction::*;
        let letter = match request.interaction {
            Read | Vread | InstanceHistory => 'r',
            Search { .. } | TypeHistory | SystemSearch | SystemHistory => 's',
            Create => 'c',
            Update | Patch => 'u',
            Delete => 'd',
            Capabilities | Bundle | Operation | Unknown => return false,
        };
        if !self.permissions.has(letter) {
            return false;
        }
        let type_fits = match (&self.resource_type, request.resource_type) {
            (None, _) => true,
            (Some(scope_type), Some(request_type)) => scope_type == request_type,
            // System-level search and history need `*`.
            (Some(_), None) => false,
        };
        if !type_fits {
            return false;
        }
        if self.constraints.is_empty() {
            // Included resources are of other types: only a scope for every type covers
            // them without looking at what they are.
            return self.resource_type.is_none() || !widens(query);
        }
        matches!(request.interaction, Search { post: false })
            && request.resource_type.is_some()
            && !widens(query)
            && self
                .constraints
                .iter()
                .all(|constraint| query.iter().any(|pair| pair == constraint))
    }
}

/// Search parameters that return more than the matches of the search (included,
/// contained resources) or whose meaning the query does not show (named queries).
fn widens(query: &[(String, String)]) -> bool {
    query.iter().any(|(name, _)| {
        name.starts_with("_include")
            || name.starts_with("_revinclude")
            || name.starts_with("_contained")
            || name == "_query"
    })
}

/// Whether any of `scopes` permits `method path?query` below the FHIR base `base`.
/// Malformed SMART scopes count for nothing.
pub fn permits(scopes: &[&str], method: &str, path: &str, query: &str, base: &str) -> bool {
    let Some(request) = classify(method, path, base) else {
        return false;
    };
    let query = decoded_pairs(query);
    scopes.iter().any(|text| match Scope::parse(text) {
        Ok(scope) => scope.permits(&request, &query),
        Err(problem) => {
            if looks_like_smart(text) {
                report_malformed(text, &problem);
            }
            false
        }
    })
}

fn looks_like_smart(text: &str) -> bool {
    ["patient/", "user/", "system/"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
}

/// Malformed scopes already logged: each is logged once per process, not per request.
/// Bounded, so a stream of distinct bad scopes cannot grow it without end.
static REPORTED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
const MAX_REPORTED: usize = 1000;

fn report_malformed(scope: &str, problem: &str) {
    let Ok(mut reported) = REPORTED.lock() else {
        return;
    };
    if reported.len() < MAX_REPORTED && reported.insert(scope.to_owned()) {
        // A scope is not a credential; the token it came from is not logged.
        tracing::warn!(
            scope,
            problem,
            "malformed SMART scope ignored: grants nothing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_scopes_parse() {
        let scope = Scope::parse("patient/Observation.rs").unwrap();
        assert_eq!(scope.context, LaunchContext::Patient);
        assert_eq!(scope.resource_type.as_deref(), Some("Observation"));
        assert!(scope.permissions.has('r') && scope.permissions.has('s'));
        assert!(!scope.permissions.has('c'));
        let scope = Scope::parse("system/*.cruds").unwrap();
        assert_eq!(scope.resource_type, None);
        assert_eq!(scope.permissions, Permissions::ALL);
        let scope = Scope::parse("user/Patient.cud").unwrap();
        assert!(scope.permissions.has('u') && !scope.permissions.has('r'));
    }

    #[test]
    fn v1_forms_mean_their_v2_letters() {
        let v2 = |text: &str| Scope::parse(text).unwrap().permissions;
        assert_eq!(v2("patient/Observation.read"), v2("patient/Observation.rs"));
        assert_eq!(v2("user/Observation.write"), v2("user/Observation.cud"));
        assert_eq!(v2("system/*.*"), v2("system/*.cruds"));
    }

    #[test]
    fn constraints_are_decoded_pairs() {
        let scope =
            Scope::parse("system/Organization.rs?identifier=ura%7C24173480&active=true").unwrap();
        assert_eq!(
            scope.constraints,
            vec![
                ("identifier".to_string(), "ura|24173480".to_string()),
                ("active".to_string(), "true".to_string()),
            ]
        );
        let scope = Scope::parse(
            "system/Practitioner.rs?_has:PractitionerRole:practitioner:organization=Organization/1",
        )
        .unwrap();
        assert_eq!(
            scope.constraints[0].0,
            "_has:PractitionerRole:practitioner:organization"
        );
    }

    #[test]
    fn malformed_scopes_do_not_parse() {
        for bad in [
            "patient/Observation.dus",
            "patient/Observation.rr",
            "patient/Observation.x",
            "patient/Observation.",
            "patient/Observation",
            "patient/observation.rs",
            "patient/Obs-ervation.rs",
            "admin/Observation.rs",
            "Observation.rs",
            "patient/Observation.rs?",
            "patient/Observation.rs?identifier",
            "patient/Observation.rs?=x",
            "patient/Observation.rs?a=1&",
            "openid",
            "launch/patient",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad} parsed");
        }
    }

    /// (scopes, method, target, permitted)
    const TABLE: &[(&str, &str, &str, bool)] = &[
        // Letters and interactions.
        ("system/Observation.r", "GET", "/fhir/Observation/1", true),
        (
            "system/Observation.r",
            "GET",
            "/fhir/Observation/1/_history/2",
            true,
        ),
        (
            "system/Observation.r",
            "GET",
            "/fhir/Observation/1/_history",
            true,
        ),
        (
            "system/Observation.r",
            "GET",
            "/fhir/Observation?code=x",
            false,
        ),
        (
            "system/Observation.s",
            "GET",
            "/fhir/Observation?code=x",
            true,
        ),
        (
            "system/Observation.s",
            "POST",
            "/fhir/Observation/_search",
            true,
        ),
        (
            "system/Observation.s",
            "GET",
            "/fhir/Observation/_history",
            true,
        ),
        ("system/Observation.s", "GET", "/fhir/Observation/1", false),
        ("system/Observation.c", "POST", "/fhir/Observation", true),
        ("system/Observation.c", "PUT", "/fhir/Observation/1", false),
        ("system/Observation.u", "PUT", "/fhir/Observation/1", true),
        ("system/Observation.u", "PATCH", "/fhir/Observation/1", true),
        (
            "system/Observation.u",
            "PUT",
            "/fhir/Observation?identifier=x",
            true,
        ),
        (
            "system/Observation.d",
            "DELETE",
            "/fhir/Observation/1",
            true,
        ),
        (
            "system/Observation.rs",
            "DELETE",
            "/fhir/Observation/1",
            false,
        ),
        ("system/Observation.rs", "GET", "/fhir/Patient/1", false),
        // v1 forms.
        (
            "patient/Observation.read",
            "GET",
            "/fhir/Observation?code=x",
            true,
        ),
        (
            "patient/Observation.read",
            "POST",
            "/fhir/Observation",
            false,
        ),
        ("user/Observation.write", "POST", "/fhir/Observation", true),
        (
            "user/Observation.write",
            "GET",
            "/fhir/Observation/1",
            false,
        ),
        ("user/*.read", "GET", "/fhir/Patient/7", true),
        ("system/*.*", "DELETE", "/fhir/Patient/7", true),
        // System level needs `*`.
        ("system/*.s", "GET", "/fhir?_type=Patient", true),
        ("system/*.s", "POST", "/fhir/_search", true),
        ("system/*.s", "GET", "/fhir/_history", true),
        ("system/Patient.s", "GET", "/fhir?_type=Patient", false),
        // Includes reach other types: only `*` covers them.
        (
            "system/Organization.rs",
            "GET",
            "/fhir/Organization?_revinclude=Location:organization",
            false,
        ),
        (
            "system/*.rs",
            "GET",
            "/fhir/Organization?_include=Organization:partof",
            true,
        ),
        // Constrained: only searches carrying the constraint.
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier=ura|24173480",
            true,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier=ura%7C24173480&name=x",
            true,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?name=x&identifier=ura|24173480&identifier=ura|1",
            true,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier=ura|1",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier=ura|24173480,ura|1",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier:missing=true",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization/24173480",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "POST",
            "/fhir/Organization/_search?identifier=ura|24173480",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier=ura|24173480&_revinclude=Location:organization",
            false,
        ),
        (
            "system/Organization.rs?identifier=ura|24173480",
            "GET",
            "/fhir/Organization?identifier=ura|24173480&_query=all",
            false,
        ),
        (
            "system/Location.rs?managingOrganization=Organization/1&status=active",
            "GET",
            "/fhir/Location?managingOrganization=Organization/1",
            false,
        ),
        (
            "system/Location.rs?managingOrganization=Organization/1&status=active",
            "GET",
            "/fhir/Location?status=active&managingOrganization=Organization%2F1",
            true,
        ),
        // Several scopes: a union.
        (
            "system/Organization.rs?identifier=ura|1 system/Organization.rs?identifier=ura|2",
            "GET",
            "/fhir/Organization?identifier=ura|2",
            true,
        ),
        (
            "system/Organization.rs?identifier=ura|1 system/Location.rs",
            "GET",
            "/fhir/Location/9",
            true,
        ),
        // Malformed scopes grant nothing, whatever else they say.
        (
            "patient/Observation.dus",
            "DELETE",
            "/fhir/Observation/1",
            false,
        ),
        (
            "patient/Observation.sr",
            "GET",
            "/fhir/Observation/1",
            false,
        ),
        ("system/observation.rs", "GET", "/fhir/observation/1", false),
        ("system/*.rs?identifier", "GET", "/fhir/Patient/1", false),
        (
            "openid fhirUser launch/patient",
            "GET",
            "/fhir/Patient/1",
            false,
        ),
        (
            "patient/Observation.dus system/Observation.r",
            "GET",
            "/fhir/Observation/1",
            true,
        ),
        // Not REST interactions scopes speak of; paths that cannot be read with certainty.
        ("system/*.cruds", "POST", "/fhir", false),
        ("system/*.cruds", "GET", "/fhir/metadata", false),
        ("system/*.cruds", "POST", "/fhir/Patient/$match", false),
        ("system/*.cruds", "GET", "/fhir/Patient/%2E%2E/x", false),
        ("system/*.cruds", "GET", "/other/Patient/1", false),
        ("", "GET", "/fhir/Patient/1", false),
    ];

    #[test]
    fn policies_call_it_as_smart_permits() {
        use crate::policy::expr::{Expr, Vars};
        use crate::request::AccessRequest;
        use cel::Value;
        let mut request = AccessRequest {
            method: "GET".into(),
            ..Default::default()
        };
        request.set_target("/fhir/Organization?identifier=ura%7C1");
        let eval = |source: &str| {
            let expr = Expr::compile(source).unwrap();
            expr.eval(&Vars::new(&request, None, expr.request_fields))
        };
        let yes = Ok(Value::Bool(true));
        assert_eq!(
            eval(r#"smartPermits(["system/Organization.rs?identifier=ura|1"], request, "/fhir")"#),
            yes
        );
        assert_eq!(
            eval(r#"smartPermits(["system/Organization.sr", 7], request, "/fhir")"#),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            eval(r#"smartPermits(["user/*.r"], {"method": "GET", "path": "/Patient/1"}, "")"#),
            yes
        );
        assert!(eval(r#"smartPermits(["user/*.r"], {"path": "/Patient/1"}, "")"#).is_err());
        assert!(eval(r#"smartPermits(["user/*.r"], "GET /Patient/1", "")"#).is_err());
    }

    #[test]
    fn scopes_permit_fhir_requests_by_table() {
        for (scopes, method, target, expected) in TABLE {
            let scopes: Vec<&str> = scopes.split(' ').filter(|s| !s.is_empty()).collect();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            assert_eq!(
                permits(&scopes, method, path, query, "/fhir"),
                *expected,
                "{scopes:?} {method} {target}"
            );
        }
    }
}
