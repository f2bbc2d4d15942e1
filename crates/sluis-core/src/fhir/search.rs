//! FHIR search parameters read the way a FHIR server reads them (R4 `search.html`
//! §3.1.1.4 "escaping", §3.1.1.5 "combining", §3.1.1.4.9 chaining, §3.1.1.4.10 `_has`;
//! STU3 reads them alike): a name with its modifier, chain or reverse chain, and the
//! value as AND-groups (one per repetition of the name) of OR-values (split at an
//! unescaped `,`).
//!
//! Prefixes (`ge2020-01-01`) stay in the value: whether `ne…` is a prefix depends on the
//! parameter's type, which only the policy author knows.

use super::FhirError;

/// One search parameter as the request names it, with every value it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParam {
    /// The name as sent (decoded): `name:contains`, `subject:Patient.identifier`.
    pub raw: String,
    /// The first link's parameter (`subject`), `_has` for a reverse chain: what a
    /// CapabilityStatement lists.
    pub name: String,
    /// The modifier of an unchained parameter, or of the last link of a chain, or of the
    /// terminal parameter of a `_has`: `exact`, `missing`, `Patient`.
    pub modifier: Option<String>,
    /// `subject:Patient.identifier` → `[subject (Patient), identifier]`; empty when the
    /// parameter is not chained.
    pub chain: Vec<ChainLink>,
    /// `_has:Observation:patient:code` → `[Observation by patient]`; empty otherwise.
    pub has: Vec<HasLink>,
    /// The parameter the `_has` chain ends in (`code`), when `has` is not empty.
    pub has_param: Option<String>,
    /// AND-groups of OR-values, in request order: `a=1,2&a=3` → `[[1, 2], [3]]`.
    pub values: Vec<Vec<String>>,
}

/// One link of a chain: `subject:Patient` is `subject` restricted to `Patient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub param: String,
    pub target_type: Option<String>,
}

/// One step of a reverse chain: `_has:Observation:patient:` is Observations whose
/// `patient` refers to the resource searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HasLink {
    pub resource_type: String,
    pub reference: String,
}

/// Bounds on one request's search, so that reading it never costs more than a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FhirLimits {
    /// Bytes of the query string plus a form body.
    pub max_bytes: usize,
    /// Name=value pairs.
    pub max_pairs: usize,
    /// OR-values in one value.
    pub max_or: usize,
    /// Repetitions (AND-groups) of one name.
    pub max_and: usize,
    /// `_include` plus `_revinclude` values.
    pub max_includes: usize,
    /// Links of a chain (`a.b.c.d`).
    pub max_chain: usize,
    /// `_has:` steps.
    pub max_has: usize,
    /// Bytes of one parameter name.
    pub max_name: usize,
    /// Bytes of a `POST [base]` bundle body read for its `type`.
    pub max_bundle_bytes: usize,
}

impl Default for FhirLimits {
    fn default() -> FhirLimits {
        FhirLimits {
            max_bytes: 16 * 1024,
            max_pairs: 100,
            max_or: 100,
            max_and: 20,
            max_includes: 20,
            max_chain: 4,
            max_has: 2,
            max_name: 128,
            max_bundle_bytes: 1024 * 1024,
        }
    }
}

/// Splits a (decoded) value at every unescaped `,`. `\,` becomes `,`; `\\`, `\|` and `\$`
/// stay escaped, because token and composite values are compared in their escaped form
/// (`system|code` with a `|` inside the code). Empty parts are kept (`a,,b` has three).
pub fn split_or(value: &str) -> Vec<String> {
    if !value.contains('\\') {
        // Nothing escaped, as in nearly every query: the commas alone split it.
        return value.split(',').map(str::to_owned).collect();
    }
    split_escaped(value)
}

/// [`split_or`] character by character, for a value with a backslash.
fn split_escaped(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(',') => {
                    current.push(',');
                    chars.next();
                }
                Some(&next @ ('\\' | '|' | '$')) => {
                    current.push('\\');
                    current.push(next);
                    chars.next();
                }
                _ => current.push('\\'),
            },
            ',' => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// The inverse of [`split_or`] for values without a backslash: escapes each `,` and joins
/// with `,`. For tests and templates.
pub fn join_or(values: &[String]) -> String {
    values
        .iter()
        .map(|v| v.replace(',', "\\,"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A parameter name, a modifier or a chain link: `[A-Za-z0-9_-]`, not empty.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bad_name(raw: &str, why: &'static str) -> FhirError {
    FhirError::BadName {
        name: raw.to_owned(),
        why,
    }
}

/// Reads a parameter name (without its values): `_has` chain, chain, or
/// `param[:modifier]`.
pub fn parse_name(raw: &str, limits: &FhirLimits) -> Result<SearchParam, FhirError> {
    if raw.len() > limits.max_name {
        return Err(FhirError::TooLarge("a parameter name"));
    }
    let mut param = SearchParam {
        raw: raw.to_owned(),
        name: String::new(),
        modifier: None,
        chain: Vec::new(),
        has: Vec::new(),
        has_param: None,
        values: Vec::new(),
    };
    if raw.starts_with("_has:") {
        let mut rest = raw;
        while let Some(after) = rest.strip_prefix("_has:") {
            if param.has.len() == limits.max_has {
                return Err(FhirError::TooLarge("`_has` steps"));
            }
            let mut parts = after.splitn(3, ':');
            let (Some(resource_type), Some(reference), Some(tail)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad_name(
                    raw,
                    "`_has` needs `_has:Type:reference:parameter`",
                ));
            };
            if !super::is_type(resource_type) || !is_token(reference) {
                return Err(bad_name(
                    raw,
                    "`_has` needs `_has:Type:reference:parameter`",
                ));
            }
            param.has.push(HasLink {
                resource_type: resource_type.to_owned(),
                reference: reference.to_owned(),
            });
            rest = tail;
        }
        let (terminal, modifier) = match rest.split_once(':') {
            Some((t, m)) => (t, Some(m)),
            None => (rest, None),
        };
        if !is_token(terminal) || modifier.is_some_and(|m| !is_token(m)) {
            return Err(bad_name(raw, "`_has` ends in `parameter[:modifier]`"));
        }
        param.name = "_has".to_owned();
        param.has_param = Some(terminal.to_owned());
        param.modifier = modifier.map(str::to_owned);
        return Ok(param);
    }
    let links: Vec<&str> = raw.split('.').collect();
    if links.len() > limits.max_chain {
        return Err(FhirError::TooLarge("chain links"));
    }
    let last = links.len() - 1;
    for (index, link) in links.iter().enumerate() {
        let (name, suffix) = match link.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (*link, None),
        };
        if !is_token(name) || suffix.is_some_and(|s| !is_token(s)) {
            return Err(bad_name(raw, "not `name[:modifier]` or a chain of them"));
        }
        if index == 0 {
            param.name = name.to_owned();
        }
        if last == 0 {
            param.modifier = suffix.map(str::to_owned);
        } else if index < last {
            if suffix.is_some_and(|s| !super::is_type(s)) {
                return Err(bad_name(
                    raw,
                    "a chain link is restricted by a resource type",
                ));
            }
            param.chain.push(ChainLink {
                param: name.to_owned(),
                target_type: suffix.map(str::to_owned),
            });
        } else {
            param.modifier = suffix.map(str::to_owned);
            param.chain.push(ChainLink {
                param: name.to_owned(),
                target_type: None,
            });
        }
    }
    Ok(param)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn commas_split_unless_escaped() {
        let cases: &[(&str, &[&str])] = &[
            ("a,b", &["a", "b"]),
            ("a", &["a"]),
            ("", &[""]),
            ("a,,b", &["a", "", "b"]),
            (r"a\,b", &["a,b"]),
            (r"a\\,b", &[r"a\\", "b"]),
            (r"sys\|code", &[r"sys\|code"]),
            (r"a\$b", &[r"a\$b"]),
            (r"a\b", &[r"a\b"]),
            ("a\\", &["a\\"]),
            (
                "http://snomed.info/sct|118228005,http://snomed.info/sct|384821006",
                &[
                    "http://snomed.info/sct|118228005",
                    "http://snomed.info/sct|384821006",
                ],
            ),
        ];
        for (value, want) in cases {
            assert_eq!(split_or(value), s(want), "{value}");
        }
    }

    #[test]
    fn names_are_read_with_modifier_chain_and_has() {
        let limits = FhirLimits::default();
        let p = parse_name("name:exact", &limits).unwrap();
        assert_eq!(
            (p.name.as_str(), p.modifier.as_deref()),
            ("name", Some("exact"))
        );
        assert!(p.chain.is_empty());
        let p = parse_name("gender:missing", &limits).unwrap();
        assert_eq!(p.modifier.as_deref(), Some("missing"));
        let p = parse_name("subject:Patient.identifier", &limits).unwrap();
        assert_eq!(p.name, "subject");
        assert_eq!(p.modifier, None);
        assert_eq!(
            p.chain,
            vec![
                ChainLink {
                    param: "subject".into(),
                    target_type: Some("Patient".into())
                },
                ChainLink {
                    param: "identifier".into(),
                    target_type: None
                }
            ]
        );
        let p = parse_name("patient.general-practitioner.name:contains", &limits).unwrap();
        assert_eq!(p.chain.len(), 3);
        assert_eq!(p.modifier.as_deref(), Some("contains"));
        let p = parse_name("_has:Observation:patient:code", &limits).unwrap();
        assert_eq!(p.name, "_has");
        assert_eq!(p.has_param.as_deref(), Some("code"));
        assert_eq!(
            p.has,
            vec![HasLink {
                resource_type: "Observation".into(),
                reference: "patient".into()
            }]
        );
        let p = parse_name(
            "_has:Observation:patient:_has:AuditEvent:entity:agent",
            &limits,
        )
        .unwrap();
        assert_eq!(p.has.len(), 2);
        assert_eq!(p.has_param.as_deref(), Some("agent"));
        assert!(matches!(
            parse_name("_has:A:b:_has:C:d:_has:E:f:g", &limits),
            Err(FhirError::TooLarge(_))
        ));
        assert!(matches!(
            parse_name("a.b.c.d.e", &limits),
            Err(FhirError::TooLarge(_))
        ));
        for bad in [
            "",
            "a b",
            "a:",
            "a..b",
            "_has:Observation:patient",
            "_has:observation:patient:code",
            "subject:patient.name",
            "x[]",
        ] {
            assert!(
                matches!(parse_name(bad, &limits), Err(FhirError::BadName { .. })),
                "{bad}"
            );
        }
    }

    proptest! {
        /// The fast path for values without a backslash splits as the character walk does.
        #[test]
        fn split_or_agrees_with_the_character_walk(value in "[a-z,|$\\\\é ]{0,16}") {
            prop_assert_eq!(split_or(&value), split_escaped(&value));
        }

        #[test]
        fn or_values_round_trip(values in proptest::collection::vec("[a-z0-9|$:,. -]{0,8}", 1..6)) {
            prop_assert_eq!(split_or(&join_or(&values)), values);
        }

        #[test]
        fn names_never_panic(name in "\\PC{0,40}") {
            let _ = parse_name(&name, &FhirLimits::default());
        }

        #[test]
        fn generated_names_are_read_back(
            links in proptest::collection::vec("[a-z][a-z-]{0,6}", 1..4),
            types in proptest::collection::vec(proptest::option::of("[A-Z][a-z]{0,6}"), 3),
            modifier in proptest::option::of("[a-z]{1,6}"),
        ) {
            let mut raw = String::new();
            for (i, link) in links.iter().enumerate() {
                if i > 0 { raw.push('.'); }
                raw.push_str(link);
                if i + 1 < links.len() && let Some(t) = &types[i] {
                    raw.push(':');
                    raw.push_str(t);
                }
            }
            if let Some(m) = &modifier {
                raw.push(':');
                raw.push_str(m);
            }
            let p = parse_name(&raw, &FhirLimits::default()).unwrap();
            prop_assert_eq!(&p.name, &links[0]);
            prop_assert_eq!(&p.modifier, &modifier);
            if links.len() > 1 {
                prop_assert_eq!(p.chain.len(), links.len());
            }
        }
    }
}
