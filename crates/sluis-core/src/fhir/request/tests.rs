use proptest::prelude::*;

use super::*;
use crate::fhir::search::join_or;

fn req(method: &str, target: &str) -> AccessRequest {
    let mut request = AccessRequest {
        method: method.into(),
        ..Default::default()
    };
    request.set_target(target);
    request
}

fn post_form(target: &str, body: &str) -> AccessRequest {
    let mut request = req("POST", target);
    request.headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded; charset=utf-8".into(),
    );
    request.body = body.into();
    request
}

fn r4(request: &AccessRequest) -> Result<ParsedRequest, FhirError> {
    parse(request, "/fhir", FhirVersion::R4, &FhirLimits::default())
}

fn stu3(request: &AccessRequest) -> Result<ParsedRequest, FhirError> {
    parse(request, "/fhir", FhirVersion::Stu3, &FhirLimits::default())
}

fn groups(v: &[&[&str]]) -> Vec<Vec<String>> {
    v.iter()
        .map(|g| g.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Method, target, interaction, type, id, operation.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

#[test]
fn interactions_have_their_r4_codes() {
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("GET", "/fhir/Patient/1", "read", Some("Patient"), Some("1"), None),
        ("HEAD", "/fhir/Patient/1", "read", Some("Patient"), Some("1"), None),
        ("GET", "/fhir/Patient/1/_history/2", "vread", Some("Patient"), Some("1"), None),
        ("GET", "/fhir/Patient/1/_history", "history-instance", Some("Patient"), Some("1"), None),
        ("GET", "/fhir/Patient/_history", "history-type", Some("Patient"), None, None),
        ("GET", "/fhir/_history", "history-system", None, None, None),
        ("GET", "/fhir/Patient", "search-type", Some("Patient"), None, None),
        ("GET", "/fhir/Patient/", "search-type", Some("Patient"), None, None),
        ("POST", "/fhir/Patient/_search", "search-type", Some("Patient"), None, None),
        ("GET", "/fhir", "search-system", None, None, None),
        ("GET", "/fhir/", "search-system", None, None, None),
        ("POST", "/fhir/_search", "search-system", None, None, None),
        ("POST", "/fhir/Patient", "create", Some("Patient"), None, None),
        ("PUT", "/fhir/Task/t-1", "update", Some("Task"), Some("t-1"), None),
        ("PUT", "/fhir/Patient?identifier=x", "update", Some("Patient"), None, None),
        ("PATCH", "/fhir/Patient/1", "patch", Some("Patient"), Some("1"), None),
        ("PATCH", "/fhir/Patient?identifier=x", "patch", Some("Patient"), None, None),
        ("DELETE", "/fhir/Patient/1", "delete", Some("Patient"), Some("1"), None),
        ("DELETE", "/fhir/Patient?identifier=x", "delete", Some("Patient"), None, None),
        ("GET", "/fhir/metadata", "capabilities", None, None, None),
        ("GET", "/fhir/$export", "operation", None, None, Some("export")),
        ("POST", "/fhir/$process-message", "operation", None, None, Some("process-message")),
        ("GET", "/fhir/Observation/$lastn", "operation", Some("Observation"), None, Some("lastn")),
        ("POST", "/fhir/Composition/c.1/$document", "operation", Some("Composition"), Some("c.1"), Some("document")),
        ("PUT", "/fhir/Observation/$lastn", "unknown", None, None, None),
        ("GET", "/fhir/$", "unknown", None, None, None),
        ("GET", "/fhir/$1x", "unknown", None, None, None),
        ("GET", "/fhir/Patient/a_b/$everything", "unknown", None, None, None),
        ("GET", "/fhir/patient/1", "unknown", None, None, None),
        ("GET", "/fhir/Patient//1", "unknown", None, None, None),
        ("GET", "/fhir/Patient/%31", "unknown", None, None, None),
        ("GET", "/fhir/Patient/..", "unknown", None, None, None),
        ("GET", "/fhir/Patient/.", "unknown", None, None, None),
        ("GET", "/fhir/Patient/a_b", "unknown", None, None, None),
        ("GET", "/fhir/Patient/1/*", "unknown", None, None, None),
        ("GET", "/fhir/Observation/1/Patient", "unknown", None, None, None),
        ("OPTIONS", "/fhir/Patient", "unknown", None, None, None),
        ("GET", "/fhir/_search", "unknown", None, None, None),
    ];
    for (method, target, code, kind, id, op) in cases {
        let got = r4(&req(method, target)).unwrap();
        assert_eq!(got.interaction.code(), *code, "{method} {target}");
        assert_eq!(got.resource_type.as_deref(), *kind, "{method} {target}");
        assert_eq!(got.id.as_deref(), *id, "{method} {target}");
        assert_eq!(got.operation.as_deref(), *op, "{method} {target}");
    }
    let vread = r4(&req("GET", "/fhir/Patient/1/_history/2")).unwrap();
    assert_eq!(vread.version_id.as_deref(), Some("2"));
}

#[test]
fn compartment_searches_name_the_compartment() {
    let got = r4(&req("GET", "/fhir/Patient/123/Observation?code=x")).unwrap();
    assert_eq!(got.interaction, FhirInteraction::SearchType);
    assert_eq!(got.resource_type.as_deref(), Some("Observation"));
    assert_eq!(got.compartment, Some(("Patient".into(), "123".into())));
    assert_eq!(got.param("code").unwrap().values, groups(&[&["x"]]));
    let got = post_form("/fhir/Encounter/e1/Condition/_search", "code=y");
    let got = r4(&got).unwrap();
    assert_eq!(got.compartment, Some(("Encounter".into(), "e1".into())));
    assert_eq!(got.interaction, FhirInteraction::SearchType);
    assert_eq!(
        r4(&req("GET", "/fhir/Patient/1/*")).unwrap().compartment,
        None
    );
}

#[test]
fn a_post_to_the_base_is_judged_by_its_bundle_type() {
    let mut bundle = req("POST", "/fhir");
    bundle.body = r#"{"resourceType":"Bundle","type":"transaction","entry":[]}"#.into();
    assert_eq!(r4(&bundle).unwrap().interaction.code(), "transaction");
    bundle.body = r#"{"resourceType":"Bundle","type":"batch"}"#.into();
    assert_eq!(r4(&bundle).unwrap().interaction.code(), "batch");
    for body in [
        "",
        "not json",
        r#"{"resourceType":"Bundle","type":"document"}"#,
        r#"{"resourceType":"Patient","type":"batch"}"#,
        r#"{"resourceType":"Bundle","type":"batch","type":"transaction"}"#,
    ] {
        bundle.body = body.into();
        assert_eq!(r4(&bundle).unwrap().interaction.code(), "unknown", "{body}");
    }
}

#[test]
fn paths_outside_the_base_are_refused() {
    assert_eq!(
        r4(&req("GET", "/other/Patient")),
        Err(FhirError::NotBelowBase)
    );
    assert_eq!(
        r4(&req("GET", "/fhirx/Patient")),
        Err(FhirError::NotBelowBase)
    );
    let root = parse(
        &req("GET", "/Patient"),
        "",
        FhirVersion::R4,
        &FhirLimits::default(),
    );
    assert_eq!(root.unwrap().interaction, FhirInteraction::SearchType);
}

#[test]
fn values_are_and_groups_of_or_values() {
    let p = |target: &str, name: &str| r4(&req("GET", target)).unwrap().param(name).cloned();
    // knooppunt's test_search_params cases.
    assert_eq!(
        p("/fhir/Observation?category=a,b", "category")
            .unwrap()
            .values,
        groups(&[&["a", "b"]])
    );
    assert_eq!(
        p("/fhir/Observation?category=1&category=2", "category")
            .unwrap()
            .values,
        groups(&[&["1"], &["2"]])
    );
    assert_eq!(
        p("/fhir/Observation?category=a,b&category=1", "category")
            .unwrap()
            .values,
        groups(&[&["a", "b"], &["1"]])
    );
    // `%2C` is a comma once decoded: an OR separator. `\,` is the escape.
    assert_eq!(
        p("/fhir/Observation?code=a%2Cb", "code").unwrap().values,
        groups(&[&["a", "b"]])
    );
    assert_eq!(
        p(r"/fhir/Observation?code=a\,b", "code").unwrap().values,
        groups(&[&["a,b"]])
    );
    assert_eq!(
        p("/fhir/Observation?code=a%5C%2Cb", "code").unwrap().values,
        groups(&[&["a,b"]])
    );
    assert_eq!(
        p(r"/fhir/Observation?code=a\\,b", "code").unwrap().values,
        groups(&[&[r"a\\", "b"]])
    );
    // `+` is a space, `%2B` a plus.
    assert_eq!(
        p("/fhir/Patient?name=van+Dijk", "name").unwrap().values,
        groups(&[&["van Dijk"]])
    );
    assert_eq!(
        p("/fhir/Observation?value-quantity=%2B5", "value-quantity")
            .unwrap()
            .values,
        groups(&[&["+5"]])
    );
    // Prefixes stay.
    assert_eq!(
        p(
            "/fhir/Observation?date=ge2020-01-01&date=lt2021-01-01",
            "date"
        )
        .unwrap()
        .values,
        groups(&[&["ge2020-01-01"], &["lt2021-01-01"]])
    );
    // `%7C` is the `|` of a token.
    assert_eq!(
        p(
            "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn%7C123",
            "identifier"
        )
        .unwrap()
        .values,
        groups(&[&["http://fhir.nl/fhir/NamingSystem/bsn|123"]])
    );
}

#[test]
fn modified_chained_and_reverse_chained_names_are_distinct_params() {
    let got = r4(&req(
        "GET",
        "/fhir/Observation?subject:Patient.identifier=x&code:text=y&code=z&_has:Observation:patient:code=1234",
    ))
    .unwrap();
    let raws: Vec<&str> = got.params.iter().map(|p| p.raw.as_str()).collect();
    assert_eq!(
        raws,
        [
            "subject:Patient.identifier",
            "code:text",
            "code",
            "_has:Observation:patient:code"
        ]
    );
    let chained = got.param("subject:Patient.identifier").unwrap();
    assert_eq!(chained.name, "subject");
    assert_eq!(chained.chain[0].target_type.as_deref(), Some("Patient"));
    assert_eq!(
        got.param("code:text").unwrap().modifier.as_deref(),
        Some("text")
    );
    assert_eq!(
        got.param("_has:Observation:patient:code").unwrap().name,
        "_has"
    );
}

#[test]
fn result_parameters_are_taken_apart() {
    let got = r4(&req(
        "GET",
        "/fhir/Coverage?patient=Patient/1&_include=Coverage:payor:Patient&_include=Coverage:payor:Organization&_revinclude:iterate=Provenance:target&_elements=id,payor&_summary=count&_count=50&_sort=-date,status&_format=json&_pretty=true&_total=none",
    ))
    .unwrap();
    assert_eq!(got.params.len(), 1);
    assert_eq!(
        got.include,
        vec![
            Include {
                value: "Coverage:payor:Patient".into(),
                iterate: false
            },
            Include {
                value: "Coverage:payor:Organization".into(),
                iterate: false
            }
        ]
    );
    assert_eq!(
        got.revinclude,
        vec![Include {
            value: "Provenance:target".into(),
            iterate: true
        }]
    );
    assert_eq!(got.elements, ["id", "payor"]);
    assert_eq!(got.summary.as_deref(), Some("count"));
    assert_eq!(got.count, Some(50));
    assert_eq!(got.sort, ["-date", "status"]);
}

#[test]
fn include_iteration_is_spelled_per_version() {
    let target = "/fhir/Patient?_include:recurse=Patient:organization";
    let stu3_read = stu3(&req("GET", target)).unwrap();
    assert!(stu3_read.include[0].iterate);
    assert!(matches!(
        r4(&req("GET", target)),
        Err(FhirError::BadName { .. })
    ));
    let target = "/fhir/Patient?_include:iterate=Patient:organization";
    assert!(r4(&req("GET", target)).unwrap().include[0].iterate);
    assert!(matches!(
        stu3(&req("GET", target)),
        Err(FhirError::BadName { .. })
    ));
    assert!(matches!(
        r4(&req("GET", "/fhir/Patient?_include:x=Patient:organization")),
        Err(FhirError::BadName { .. })
    ));
}

#[test]
fn bad_result_parameters_are_errors_naming_the_parameter() {
    for (target, want) in [
        (
            "/fhir/Patient?_count=abc",
            FhirError::BadValue("_count".into()),
        ),
        (
            "/fhir/Patient?_count=-1",
            FhirError::BadValue("_count".into()),
        ),
        (
            "/fhir/Patient?_count=1&_count=2",
            FhirError::Repeated("_count".into()),
        ),
        (
            "/fhir/Patient?_summary=true&_summary=false",
            FhirError::Repeated("_summary".into()),
        ),
        (
            "/fhir/Patient?_elements=a&_elements=b",
            FhirError::Repeated("_elements".into()),
        ),
    ] {
        assert_eq!(r4(&req("GET", target)), Err(want.clone()), "{target}");
    }
    let error = r4(&req("GET", "/fhir/Patient?_count=999999999999")).unwrap_err();
    assert!(error.to_string().contains("`_count`"), "{error}");
    assert!(!error.to_string().contains("999"), "{error}");
}

#[test]
fn post_search_reads_the_form_body_with_the_url() {
    let got = r4(&post_form(
        "/fhir/Patient/_search",
        "identifier=x%7C1&name=a,b",
    ))
    .unwrap();
    assert_eq!(got.param("identifier").unwrap().values, groups(&[&["x|1"]]));
    assert_eq!(got.param("name").unwrap().values, groups(&[&["a", "b"]]));
    // URL and body are one set of parameters: a name in both is two AND groups.
    let got = r4(&post_form(
        "/fhir/Patient/_search?name=c&_count=5",
        "name=d",
    ))
    .unwrap();
    assert_eq!(got.param("name").unwrap().values, groups(&[&["c"], &["d"]]));
    assert_eq!(got.count, Some(5));
    // An empty body is fine when nothing says one was sent.
    assert!(
        r4(&post_form("/fhir/Patient/_search", ""))
            .unwrap()
            .params
            .is_empty()
    );
}

#[test]
fn post_search_without_its_form_body_is_refused() {
    let mut json = req("POST", "/fhir/Patient/_search");
    json.headers
        .insert("content-type".into(), "application/json".into());
    json.body = r#"{"name":"x"}"#.into();
    assert_eq!(r4(&json), Err(FhirError::BodyNotForm));
    let mut untyped = req("POST", "/fhir/Patient/_search");
    untyped.body = "name=x".into();
    assert_eq!(r4(&untyped), Err(FhirError::BodyNotForm));
    let mut dropped = post_form("/fhir/Patient/_search", "");
    dropped.headers.insert("content-length".into(), "12".into());
    assert_eq!(r4(&dropped), Err(FhirError::BodyMissing));
    let mut partial = post_form("/fhir/Patient/_search", "name=x");
    partial
        .headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    assert_eq!(r4(&partial), Err(FhirError::BodyMissing));
    // A POST operation's JSON body is a Parameters resource, not a query: not read.
    let mut op = req("POST", "/fhir/Observation/$lastn?code=x");
    op.headers
        .insert("content-type".into(), "application/fhir+json".into());
    op.body = r#"{"resourceType":"Parameters"}"#.into();
    assert_eq!(r4(&op).unwrap().params.len(), 1);
}

#[test]
fn limits_are_errors_not_work() {
    let many = (0..101)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        r4(&req("GET", &format!("/fhir/Patient?{many}"))),
        Err(FhirError::TooLarge("parameters"))
    );
    let wide = vec!["a"; 101].join(",");
    assert!(matches!(
        r4(&req("GET", &format!("/fhir/Patient?name={wide}"))),
        Err(FhirError::TooLarge(_))
    ));
    let deep = vec!["name=a"; 21].join("&");
    assert!(matches!(
        r4(&req("GET", &format!("/fhir/Patient?{deep}"))),
        Err(FhirError::TooLarge(_))
    ));
    let includes = vec!["_include=Patient:organization"; 21].join("&");
    assert!(matches!(
        r4(&req("GET", &format!("/fhir/Patient?{includes}"))),
        Err(FhirError::TooLarge(_))
    ));
    let long = "x".repeat(16 * 1024);
    assert!(matches!(
        r4(&req("GET", &format!("/fhir/Patient?name={long}"))),
        Err(FhirError::TooLarge(_))
    ));
}

/// Every query of the BgZ set (MedMij BgZ 2017, as knooppunt's bgz policy lists them)
/// reads as the type, operation, parameters and includes it names.
#[test]
fn the_bgz_queries_read_as_fhir() {
    let bgz: &[(&str, &str, Option<&str>, usize, usize)] = &[
        // target, type, operation, params, includes
        (
            "/fhir/Patient?_include=Patient:general-practitioner",
            "Patient",
            None,
            0,
            1,
        ),
        (
            "/fhir/Coverage?_include=Coverage:payor:Patient&_include=Coverage:payor:Organization",
            "Coverage",
            None,
            0,
            2,
        ),
        (
            "/fhir/Consent?category=http://snomed.info/sct|11291000146105",
            "Consent",
            None,
            1,
            0,
        ),
        (
            "/fhir/Consent?category=http://snomed.info/sct|11341000146107",
            "Consent",
            None,
            1,
            0,
        ),
        (
            "/fhir/Observation/$lastn?category=http://snomed.info/sct|118228005,http://snomed.info/sct|384821006",
            "Observation",
            Some("lastn"),
            1,
            0,
        ),
        (
            "/fhir/Observation/$lastn?code=http://snomed.info/sct|365508006",
            "Observation",
            Some("lastn"),
            1,
            0,
        ),
        (
            "/fhir/Observation/$lastn?code=http://loinc.org|85354-9",
            "Observation",
            Some("lastn"),
            1,
            0,
        ),
        (
            "/fhir/Observation/$lastn?code=http://loinc.org|8302-2,http://loinc.org|8306-3,http://loinc.org|8308-9",
            "Observation",
            Some("lastn"),
            1,
            0,
        ),
        (
            "/fhir/Observation/$lastn?category=http://snomed.info/sct|275711006&_include=Observation:related-target&_include=Observation:specimen",
            "Observation",
            Some("lastn"),
            1,
            2,
        ),
        ("/fhir/Condition", "Condition", None, 0, 0),
        (
            "/fhir/Observation?code=http://snomed.info/sct|228366006",
            "Observation",
            None,
            1,
            0,
        ),
        ("/fhir/NutritionOrder", "NutritionOrder", None, 0, 0),
        (
            "/fhir/MedicationStatement?category=urn:oid:2.16.840.1.113883.2.4.3.11.60.20.77.5.3|6&_include=MedicationStatement:medication",
            "MedicationStatement",
            None,
            1,
            1,
        ),
        (
            "/fhir/Immunization?status=completed",
            "Immunization",
            None,
            1,
            0,
        ),
        (
            "/fhir/Encounter?class=http://hl7.org/fhir/v3/ActCode|IMP,http://hl7.org/fhir/v3/ActCode|ACUTE,http://hl7.org/fhir/v3/ActCode|NONAC",
            "Encounter",
            None,
            1,
            0,
        ),
        (
            "/fhir/DeviceRequest?status=active&_include=DeviceRequest:device",
            "DeviceRequest",
            None,
            1,
            1,
        ),
        (
            "/fhir/Appointment?status=booked,pending,proposed",
            "Appointment",
            None,
            1,
            0,
        ),
    ];
    for (target, kind, op, params, includes) in bgz {
        let got = stu3(&req("GET", target)).unwrap();
        assert_eq!(got.resource_type.as_deref(), Some(*kind), "{target}");
        assert_eq!(got.operation.as_deref(), *op, "{target}");
        assert_eq!(got.params.len(), *params, "{target}");
        assert_eq!(got.include.len(), *includes, "{target}");
    }
    let vitals = stu3(&req("GET", bgz[7].0)).unwrap();
    assert_eq!(vitals.params[0].values[0].len(), 3);
}

fn arbitrary_request() -> impl Strategy<Value = AccessRequest> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "X"]);
    let segment = prop_oneof![
        Just("Patient".to_string()),
        Just("_search".to_string()),
        Just("_history".to_string()),
        Just("$lastn".to_string()),
        "[A-Za-z0-9.$%_*-]{0,6}",
    ];
    let path = prop::collection::vec(segment, 0..5).prop_map(|s| format!("/fhir/{}", s.join("/")));
    let query = "[a-z_:.,|\\\\=&%+A-Z0-9$-]{0,80}";
    let body = prop_oneof![
        Just(String::new()),
        "[a-z_:.,|\\\\=&%+0-9$-]{0,40}",
        Just(r#"{"resourceType":"Bundle","type":"batch"}"#.to_string())
    ];
    let content_type = prop::sample::select(vec![
        "",
        "application/x-www-form-urlencoded",
        "application/json",
    ]);
    (method, path, query, body, content_type).prop_map(|(method, path, query, body, ct)| {
        let mut request = AccessRequest {
            method: method.into(),
            path,
            query,
            body,
            ..Default::default()
        };
        if !ct.is_empty() {
            request.headers.insert("content-type".into(), ct.into());
        }
        request
    })
}

proptest! {
    /// Whatever arrives, reading it ends in an answer, and one within the limits.
    #[test]
    fn parse_never_panics(request in arbitrary_request()) {
        let limits = FhirLimits::default();
        for version in [FhirVersion::R4, FhirVersion::Stu3] {
            if let Ok(parsed) = parse(&request, "/fhir", version, &limits) {
                let groups: usize = parsed.params.iter().map(|p| p.values.len()).sum();
                prop_assert!(groups <= limits.max_pairs);
                prop_assert!(parsed.include.len() + parsed.revinclude.len() <= limits.max_includes);
            }
        }
    }

    /// A query built from names and AND/OR lists (escaped as FHIR says, then form
    /// encoded) reads back as those lists.
    #[test]
    fn generated_queries_round_trip(
        params in prop::collection::btree_map(
            "[a-z][a-z-]{0,8}(:exact|:missing)?",
            prop::collection::vec(prop::collection::vec("[a-zA-Z0-9|$:,./ +-]{0,8}", 1..4), 1..4),
            0..6,
        ),
    ) {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, and_groups) in &params {
            for or_values in and_groups {
                query.append_pair(name, &join_or(or_values));
            }
        }
        let mut request = req("GET", "/fhir/Observation");
        request.query = query.finish();
        let parsed = r4(&request).unwrap();
        prop_assert_eq!(parsed.params.len(), params.len());
        for (name, and_groups) in &params {
            prop_assert_eq!(&parsed.param(name).unwrap().values, and_groups);
        }
    }
}

/// The patient a request is about, as nuts-knooppunt's `derivePatientId` /
/// `derivePatientBSN` cases have it (and the ambiguous ones it refuses).
#[test]
fn the_patient_is_derived_from_path_parameters_and_identifier() {
    let bsn = "http://fhir.nl/fhir/NamingSystem/bsn";
    let patient = |request: AccessRequest| r4(&request).unwrap().patient();
    let known = |id: Option<&str>, bsn: Option<&str>| PatientRef {
        id: id.map(str::to_owned),
        bsn: bsn.map(str::to_owned),
        problem: None,
    };
    assert_eq!(
        patient(req("GET", "/fhir/Patient/12345")),
        known(Some("12345"), None)
    );
    assert_eq!(
        patient(req("GET", "/fhir/Patient/12345/Observation?code=x")),
        known(Some("12345"), None)
    );
    assert_eq!(
        patient(req("GET", "/fhir/Patient?_id=56789")),
        known(Some("56789"), None)
    );
    assert_eq!(
        patient(req("GET", "/fhir/Observation?patient=Patient/98765")),
        known(Some("98765"), None)
    );
    assert_eq!(
        patient(req("GET", "/fhir/Observation?patient=98765")),
        known(Some("98765"), None)
    );
    assert_eq!(
        patient(req("GET", "/fhir/Observation?code=x")),
        known(None, None)
    );
    assert_eq!(
        patient(req(
            "GET",
            &format!("/fhir/Patient?identifier={bsn}|999999990")
        )),
        known(None, Some("999999990"))
    );
    // Percent-encoded `|` is the same identifier.
    assert_eq!(
        patient(req(
            "GET",
            &format!("/fhir/Patient?identifier={bsn}%7C999999990")
        )),
        known(None, Some("999999990"))
    );
    // From a POST _search body.
    assert_eq!(
        patient(post_form(
            "/fhir/Patient/_search",
            &format!("identifier={bsn}|999999990")
        )),
        known(None, Some("999999990"))
    );
    // Ambiguous or malformed: nothing known, and why.
    for target in [
        "/fhir/Observation?patient=Patient/1&patient=Patient/2".to_owned(),
        "/fhir/Observation?patient=Patient/1,Patient/2".to_owned(),
        "/fhir/Patient?_id=1,2".to_owned(),
        "/fhir/Patient?identifier=urn:oid:1.2.3|42".to_owned(),
        "/fhir/Patient?identifier=999999990".to_owned(),
        format!("/fhir/Patient?identifier={bsn}|1,{bsn}|2"),
    ] {
        let found = patient(req("GET", &target));
        assert!(found.problem.is_some(), "{target}");
        assert_eq!((found.id, found.bsn), (None, None), "{target}");
    }
    assert_eq!(
        patient(req("GET", "/fhir/Patient?identifier=urn:oid:1|2"))
            .problem
            .as_deref(),
        Some("patient_bsn: expected identifier parameter in format 'system|value'")
    );
}
