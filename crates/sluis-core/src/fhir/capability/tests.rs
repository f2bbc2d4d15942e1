use super::*;
use crate::fhir::{FhirLimits, parse};
use crate::request::AccessRequest;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/fhir/capabilities/",
            $name,
            ".json"
        ))
    };
}

fn load(name: &str, bytes: &[u8]) -> Capabilities {
    Capabilities::from_json(name, bytes).unwrap()
}

fn check(caps: &Capabilities, method: &str, target: &str) -> Result<(), String> {
    check_with(caps, method, target, false)
}

fn check_with(
    caps: &Capabilities,
    method: &str,
    target: &str,
    allow_iterate: bool,
) -> Result<(), String> {
    let mut request = AccessRequest {
        method: method.into(),
        ..Default::default()
    };
    request.set_target(target);
    let parsed = parse(
        &request,
        "/fhir",
        caps.version.unwrap_or_default(),
        &FhirLimits::default(),
    )
    .map_err(|e| format!("parse: {e}"))?;
    caps.check(&parsed, allow_iterate)
        .map_err(|u| u.to_string())
}

#[test]
fn the_statements_load_with_their_versions() {
    assert_eq!(
        load("bgz", fixture!("bgz")).version,
        Some(FhirVersion::Stu3)
    );
    assert_eq!(
        load("mo", fixture!("medicatieoverdracht_gf")).version,
        Some(FhirVersion::R4)
    );
    assert_eq!(
        load("pzp", fixture!("pzp_gf")).version,
        Some(FhirVersion::R4)
    );
    assert_eq!(
        load("stu3", fixture!("stu3_composition")).version,
        Some(FhirVersion::Stu3)
    );
    // Only `server` rests count: the client rest's Patient is not listed.
    let directory = load("mcsd", fixture!("mcsd_directory"));
    assert!(directory.resources.contains_key("Organization"));
    assert!(!directory.resources.contains_key("Patient"));
}

/// knooppunt's own statements, read from the shared reference copy when it is there
/// (they are not all ours to ship: see tests/fixtures/fhir/capabilities/SOURCES.txt).
#[test]
fn the_reference_statements_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../../shared/reference/nuts/knooppunt-pdp");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: no reference statements at {}", dir.display());
        return;
    };
    let mut loaded = 0;
    for entry in entries.flatten() {
        let file = entry.path().join("fhir_capabilitystatement.json");
        if let Ok(bytes) = std::fs::read(&file) {
            let name = entry.file_name().to_string_lossy().into_owned();
            Capabilities::from_json(&name, &bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            loaded += 1;
        }
    }
    assert_eq!(loaded, 7);
}

#[test]
fn bgz_allows_its_queries_and_names_what_it_does_not_list() {
    let bgz = load("bgz", fixture!("bgz"));
    for ok in [
        "/fhir/Patient?_include=Patient:general-practitioner",
        "/fhir/Coverage?_include=Coverage:payor:Patient&_include=Coverage:payor:Organization",
        "/fhir/Consent?category=http://snomed.info/sct|11291000146105",
        // `$lastn` is listed at rest level; operation parameters are the rules' to judge.
        "/fhir/Observation/$lastn?category=http://snomed.info/sct|118228005,http://snomed.info/sct|384821006",
        "/fhir/Observation/$lastn?category=http://snomed.info/sct|275711006&_include=Observation:related-target&_include=Observation:specimen",
        "/fhir/Condition",
        "/fhir/Patient?_id=1",
    ] {
        assert_eq!(check(&bgz, "GET", ok), Ok(()), "{ok}");
    }
    let denied: &[(&str, &str, &str)] = &[
        (
            "GET",
            "/fhir/Patient?name=x",
            "the CapabilityStatement `bgz` does not list search parameter `name` on `Patient`",
        ),
        (
            "GET",
            "/fhir/DocumentReference?patient=Patient/1",
            "the CapabilityStatement `bgz` does not list resource type `DocumentReference`",
        ),
        (
            "GET",
            "/fhir/Patient/1",
            "the CapabilityStatement `bgz` does not list interaction `read` on `Patient`",
        ),
        (
            "GET",
            "/fhir/Observation/$everything",
            "the CapabilityStatement `bgz` does not list operation `everything` on `Observation`",
        ),
        (
            "GET",
            "/fhir/Patient?_include=Patient:organization",
            "the CapabilityStatement `bgz` does not list include `Patient:organization` on `Patient`",
        ),
        (
            "GET",
            "/fhir/Patient?_include:recurse=Patient:general-practitioner",
            "the CapabilityStatement `bgz` does not list iterated include `Patient:general-practitioner` on `Patient`",
        ),
        (
            "GET",
            "/fhir/metadata",
            "the CapabilityStatement `bgz` does not list interaction `capabilities`",
        ),
        (
            "GET",
            "/fhir/Patient/..",
            "not a FHIR interaction, so not in the CapabilityStatement `bgz`",
        ),
        (
            "GET",
            "/fhir",
            "the CapabilityStatement `bgz` does not list interaction `search-system`",
        ),
        (
            "GET",
            "/fhir/Patient?patient:missing=true",
            "the CapabilityStatement `bgz` does not list search parameter `patient:missing` on `Patient`",
        ),
    ];
    for (method, target, reason) in denied {
        assert_eq!(
            check(&bgz, method, target),
            Err(reason.to_string()),
            "{target}"
        );
    }
}

#[test]
fn modifiers_and_chains_must_be_listed_verbatim() {
    let mcsd = load("mcsd_query", fixture!("mcsd_directory"));
    assert_eq!(
        check(&mcsd, "GET", "/fhir/Organization?name:contains=zorg"),
        Ok(())
    );
    assert_eq!(check(&mcsd, "GET", "/fhir/Organization?name=zorg"), Ok(()));
    assert_eq!(
        check(&mcsd, "GET", "/fhir/Organization?name:missing=true"),
        Err("the CapabilityStatement `mcsd_query` does not list search parameter `name:missing` on `Organization`".into())
    );
    assert_eq!(
        check(&mcsd, "GET", "/fhir/Location?organization:Organization.name=x"),
        Err("the CapabilityStatement `mcsd_query` does not list search parameter `organization:Organization.name` on `Location`".into())
    );
    assert_eq!(
        check(&mcsd, "GET", "/fhir/Organization?_has:Location:organization:name=x"),
        Err("the CapabilityStatement `mcsd_query` does not list search parameter `_has:Location:organization:name` on `Organization`".into())
    );
    // Rest-level parameters apply to every type.
    assert_eq!(check(&mcsd, "GET", "/fhir/Location?_id=1"), Ok(()));
    assert_eq!(
        check(&mcsd, "GET", "/fhir/Endpoint?_lastUpdated=ge2026-01-01"),
        Ok(())
    );
    assert_eq!(
        check(
            &mcsd,
            "GET",
            "/fhir/Organization?_revinclude=Location:organization"
        ),
        Ok(())
    );
    assert_eq!(check(&mcsd, "GET", "/fhir/Organization/o1"), Ok(()));
    // Result parameters are not search parameters.
    assert_eq!(
        check(
            &mcsd,
            "GET",
            "/fhir/Organization?_count=10&_elements=name&_summary=true"
        ),
        Ok(())
    );
    // A read's query is not a search: not checked against search parameters.
    assert_eq!(
        check(&mcsd, "GET", "/fhir/Organization/o1?_format=json"),
        Ok(())
    );
}

#[test]
fn history_interactions_and_their_parameters() {
    let update = load("mcsd_update", fixture!("mcsd_history"));
    assert_eq!(
        check(
            &update,
            "GET",
            "/fhir/Organization/_history?_since=2026-01-01T00:00:00Z"
        ),
        Ok(())
    );
    assert_eq!(
        check(&update, "GET", "/fhir/Organization/o1"),
        Err("the CapabilityStatement `mcsd_update` does not list interaction `read` on `Organization`".into())
    );
    assert_eq!(
        check(&update, "GET", "/fhir/Organization/_history?_at=2026"),
        Err("the CapabilityStatement `mcsd_update` does not list search parameter `_at` on `Organization`".into())
    );
}

#[test]
fn iterated_includes_pass_only_when_allowed() {
    let stu3 = load("stu3", fixture!("stu3_composition"));
    let target = "/fhir/Composition?patient=Patient/1&_include:recurse=Composition:subject";
    assert!(check_with(&stu3, "GET", target, false).is_err());
    assert_eq!(check_with(&stu3, "GET", target, true), Ok(()));
    assert_eq!(
        check(&stu3, "GET", "/fhir/Composition/c1/$document"),
        Ok(())
    );
    assert_eq!(
        check(&stu3, "POST", "/fhir/Composition/c1/$document"),
        Ok(())
    );
}

#[test]
fn system_interactions_come_from_the_rest_level() {
    let stu3 = load("stu3", fixture!("stu3_composition"));
    let bundle = |kind: &str| {
        let mut request = AccessRequest {
            method: "POST".into(),
            path: "/fhir".into(),
            body: format!(r#"{{"resourceType":"Bundle","type":"{kind}"}}"#),
            ..Default::default()
        };
        request.query.clear();
        let parsed = parse(&request, "/fhir", FhirVersion::Stu3, &FhirLimits::default()).unwrap();
        stu3.check(&parsed, false).map_err(|u| u.to_string())
    };
    assert_eq!(bundle("transaction"), Ok(()));
    assert_eq!(
        bundle("batch"),
        Err("the CapabilityStatement `stu3` does not list interaction `batch`".into())
    );
}

#[test]
fn what_is_not_a_statement_is_a_load_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "not JSON"),
        (
            br#"{"resourceType":"Patient"}"#,
            "not a CapabilityStatement (`resourceType`)",
        ),
        (
            br#"{"resourceType":"CapabilityStatement","rest":[{"mode":"client"}]}"#,
            "no `rest` of mode `server`",
        ),
        (
            br#"{"resourceType":"CapabilityStatement","rest":[{"mode":"server","resource":[{}]}]}"#,
            "a `rest.resource` has no `type`",
        ),
        (
            br#"{"resourceType":"CapabilityStatement","resourceType":"CapabilityStatement"}"#,
            "member `resourceType` given twice",
        ),
        (b"\xff", "not UTF-8"),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            Capabilities::from_json("x", bytes).unwrap_err(),
            *want,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}
