use super::*;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../../../tests/fixtures/mitz/xacml-request-example.xml");
const EXAMPLE_ID: &str = "b8cb2497-a47e-48d9-907c-2b4dfbfb5697";
const BSN: &str = "900186021";

/// The inputs of the reference example.
fn example() -> MitzQuestion {
    MitzQuestion {
        patient_bsn: BSN.into(),
        author_ura: "00000659".into(),
        author_facility_type: MitzCode::facility_type("Z3"),
        event_code: MitzCode::event_code("GGC002"),
        role: MitzCode::role("01.015"),
        requesting_practitioner: Some("000095254".into()),
        mandated: None,
        requesting_ura: "00000666".into(),
        requesting_facility_type: MitzCode::facility_type("Z3"),
        purpose_of_use: MitzCode::purpose_of_use("TREAT"),
    }
}

fn settings() -> MitzRequestSettings {
    MitzRequestSettings {
        to: "http://localhost:8000/4".into(),
    }
}

fn build(q: &MitzQuestion) -> Result<String, MitzError> {
    build_request_with_id(q, &settings(), uuid::Uuid::parse_str(EXAMPLE_ID).unwrap())
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Header/><env:Body>{body}</env:Body></env:Envelope>"#
    )
}

fn answer(decision: &str) -> String {
    envelope(&format!(
        r#"<Response xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"><Result><Decision>{decision}</Decision><Status><StatusCode Value="urn:oasis:names:tc:xacml:1.0:status:ok"/></Status></Result></Response>"#
    ))
}

#[test]
fn the_example_is_built_byte_for_byte() {
    let built = build(&example()).unwrap();
    // The example's message id is in upper case; ours is the canonical lower case.
    assert_eq!(
        built,
        EXAMPLE.replace(&EXAMPLE_ID.to_uppercase(), EXAMPLE_ID)
    );
}

#[test]
fn the_example_reads_back() {
    let read = parse_request(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(read.question, example());
    assert_eq!(read.to, "http://localhost:8000/4");
    assert_eq!(
        read.message_id,
        format!("urn:uuid:{}", EXAMPLE_ID.to_uppercase())
    );
}

#[test]
fn a_mandate_goes_in_the_subject_before_the_practitioner() {
    let mut q = example();
    q.mandated = Some("000012345".into());
    let built = build(&q).unwrap();
    let mandated = built.find(ID_MANDATED).unwrap();
    let provider = built.find(ID_PROVIDER).unwrap();
    let subject = built.find(CATEGORY_SUBJECT).unwrap();
    assert!(subject < mandated && mandated < provider);
    assert_eq!(parse_request(built.as_bytes()).unwrap().question, q);
}

#[test]
fn without_a_practitioner_the_attribute_is_left_out() {
    let mut q = example();
    q.requesting_practitioner = None;
    let built = build(&q).unwrap();
    assert!(!built.contains(ID_PROVIDER));
    assert_eq!(parse_request(built.as_bytes()).unwrap().question, q);
}

#[test]
fn a_fresh_message_id_each_time() {
    let a = build_request(&example(), &settings()).unwrap();
    let b = build_request(&example(), &settings()).unwrap();
    assert_ne!(a, b);
    let id = parse_request(a.as_bytes()).unwrap().message_id;
    assert!(id.starts_with("urn:uuid:") && id.len() == 45, "{id}");
}

#[test]
fn inputs_that_are_not_what_they_claim_are_refused_by_name() {
    type Case = (fn(&mut MitzQuestion), MitzField, InputProblem);
    let cases: Vec<Case> = vec![
        (
            |q| q.patient_bsn = "900186022".into(),
            MitzField::PatientBsn,
            InputProblem::NotABsn,
        ),
        (
            |q| q.patient_bsn = "000000000".into(),
            MitzField::PatientBsn,
            InputProblem::NotABsn,
        ),
        (
            |q| q.patient_bsn = "90018602".into(),
            MitzField::PatientBsn,
            InputProblem::NotABsn,
        ),
        (
            |q| q.patient_bsn = "9001860210".into(),
            MitzField::PatientBsn,
            InputProblem::NotABsn,
        ),
        (
            |q| q.patient_bsn = "90018602\u{0}".into(),
            MitzField::PatientBsn,
            InputProblem::NotABsn,
        ),
        (
            |q| q.patient_bsn = "٩٠٠١٨٦٠٢١".into(),
            MitzField::PatientBsn,
            InputProblem::NotABsn,
        ),
        (
            |q| q.author_ura = "0000065a".into(),
            MitzField::AuthorUra,
            InputProblem::NotDigits(8),
        ),
        (
            |q| q.author_ura = "659".into(),
            MitzField::AuthorUra,
            InputProblem::NotDigits(8),
        ),
        (
            |q| q.requesting_ura = "00000666\n".into(),
            MitzField::RequestingUra,
            InputProblem::NotDigits(8),
        ),
        (
            |q| q.requesting_ura = "".into(),
            MitzField::RequestingUra,
            InputProblem::NotDigits(8),
        ),
        (
            |q| q.requesting_practitioner = Some("95254".into()),
            MitzField::RequestingPractitioner,
            InputProblem::NotDigits(9),
        ),
        (
            |q| q.mandated = Some("x00095254".into()),
            MitzField::Mandated,
            InputProblem::NotDigits(9),
        ),
        (
            |q| q.role.code = "01 015".into(),
            MitzField::Role,
            InputProblem::NotACode,
        ),
        (
            |q| q.role.code = "\"/><x".into(),
            MitzField::Role,
            InputProblem::NotACode,
        ),
        (
            |q| q.role.code = String::new(),
            MitzField::Role,
            InputProblem::NotACode,
        ),
        (
            |q| q.role.code = "A".repeat(33),
            MitzField::Role,
            InputProblem::NotACode,
        ),
        (
            |q| q.event_code.code_system = "2.16..1".into(),
            MitzField::EventCode,
            InputProblem::NotAnOid,
        ),
        (
            |q| q.event_code.code_system = "2.16.01".into(),
            MitzField::EventCode,
            InputProblem::NotAnOid,
        ),
        (
            |q| q.purpose_of_use.code_system = "urn:oid:2.16.1".into(),
            MitzField::PurposeOfUse,
            InputProblem::NotAnOid,
        ),
        (
            |q| q.author_facility_type.code = "Z3\u{7}".into(),
            MitzField::AuthorFacilityType,
            InputProblem::NotACode,
        ),
        (
            |q| q.requesting_facility_type.code_system = "2".into(),
            MitzField::RequestingFacilityType,
            InputProblem::NotAnOid,
        ),
    ];
    for (change, field, problem) in cases {
        let mut q = example();
        change(&mut q);
        assert_eq!(build(&q), Err(MitzError::Input { field, problem }), "{q:?}");
    }
}

#[test]
fn the_address_is_escaped_and_checked() {
    let mut s = settings();
    s.to = "https://mitz.example/x?a=1&b=\"<2>\"".into();
    let built =
        build_request_with_id(&example(), &s, uuid::Uuid::parse_str(EXAMPLE_ID).unwrap()).unwrap();
    assert!(
        built.contains("<wsa:To>https://mitz.example/x?a=1&amp;b=&quot;&lt;2&gt;&quot;</wsa:To>")
    );
    assert_eq!(parse_request(built.as_bytes()).unwrap().to, s.to);
    for bad in ["", "https://x/\r\nInjected: 1", &"a".repeat(2049)] {
        s.to = bad.into();
        assert_eq!(
            build_request(&example(), &s),
            Err(MitzError::Input {
                field: MitzField::To,
                problem: InputProblem::NotAnAddress
            })
        );
    }
}

#[test]
fn the_four_decisions() {
    for decision in [
        MitzDecision::Permit,
        MitzDecision::Deny,
        MitzDecision::NotApplicable,
        MitzDecision::Indeterminate,
    ] {
        assert_eq!(
            parse_response(answer(decision.as_str()).as_bytes()),
            Ok(decision)
        );
    }
    // Whitespace around the value is XML layout, not a different decision.
    assert_eq!(
        parse_response(answer("\n  Permit\n").as_bytes()),
        Ok(MitzDecision::Permit)
    );
}

#[test]
fn a_response_without_a_namespace_or_inside_a_saml_wrapper_is_read() {
    let bare = envelope("<Response><Result><Decision>Deny</Decision></Result></Response>");
    assert_eq!(parse_response(bare.as_bytes()), Ok(MitzDecision::Deny));
    let wrapped = envelope(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">
  <saml:Assertion><saml:Statement><xacml-context:Response xmlns:xacml-context="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17">
    <xacml-context:Result><xacml-context:Decision>Permit</xacml-context:Decision></xacml-context:Result>
  </xacml-context:Response></saml:Statement>
  <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignatureValue>AA==</ds:SignatureValue></ds:Signature>
  </saml:Assertion></samlp:Response>"#,
    );
    assert_eq!(
        parse_response_details(wrapped.as_bytes()),
        Ok(MitzAnswer {
            decision: MitzDecision::Permit,
            signature_present: true
        })
    );
    assert!(
        !parse_response_details(answer("Permit").as_bytes())
            .unwrap()
            .signature_present
    );
}

#[test]
fn bad_answers_are_named_errors() {
    let xacml = r#"xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17""#;
    let cases: Vec<(String, MitzError)> = vec![
        (answer("Maybe"), MitzError::UnknownDecision),
        (answer("permit"), MitzError::UnknownDecision),
        (answer(""), MitzError::UnknownDecision),
        (answer("Per&amp;mit"), MitzError::UnknownDecision),
        (answer("<x>Permit</x>"), MitzError::UnknownDecision),
        (answer("Permit&xxe;"), MitzError::Entity),
        (
            envelope(&format!("<Response {xacml}><Result><Decision>Permit</Decision></Result><Result><Decision>Deny</Decision></Result></Response>")),
            MitzError::SeveralResults,
        ),
        (
            envelope(&format!("<Response {xacml}><Result><Decision>Permit</Decision><Decision>Permit</Decision></Result></Response>")),
            MitzError::SeveralDecisions,
        ),
        (
            envelope(&format!("<Response {xacml}><Result><Decision>Permit</Decision></Result></Response><Response {xacml}><Result><Decision>Permit</Decision></Result></Response>")),
            MitzError::SeveralResponses,
        ),
        (envelope(&format!("<Response {xacml}><Result/></Response>")), MitzError::MissingDecision),
        (envelope(&format!("<Response {xacml}/>")), MitzError::MissingResult),
        (envelope(""), MitzError::MissingResponse),
        (
            envelope(r#"<Response xmlns="urn:oasis:names:tc:xacml:2.0:context:schema:os"><Result><Decision>Permit</Decision></Result></Response>"#),
            MitzError::WrongNamespace { element: "Response", expected: XACML3_NS },
        ),
        (
            envelope(r#"<Response xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"><Result><Decision xmlns="urn:other">Permit</Decision></Result></Response>"#),
            MitzError::MissingDecision,
        ),
        (
            r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>"#.into(),
            MitzError::WrongNamespace { element: "Envelope", expected: SOAP12_NS },
        ),
        (
            format!("<Response {xacml}><Result><Decision>Permit</Decision></Result></Response>"),
            MitzError::NotSoap,
        ),
        (
            r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"/>"#.into(),
            MitzError::Body,
        ),
        (
            envelope(r#"<env:Fault><env:Code><env:Value>env:Sender</env:Value></env:Code><env:Reason><env:Text xml:lang="en">BSN 900186021 unknown</env:Text></env:Reason></env:Fault>"#),
            MitzError::SoapFault { code: FaultCode::Sender },
        ),
        (
            envelope(r#"<env:Fault><env:Code><env:Value>env:Receiver</env:Value></env:Code></env:Fault>"#),
            MitzError::SoapFault { code: FaultCode::Receiver },
        ),
        (
            envelope(&format!(r#"<env:Fault><env:Code><env:Value>x:Custom</env:Value></env:Code></env:Fault><Response {xacml}><Result><Decision>Permit</Decision></Result></Response>"#)),
            MitzError::SoapFault { code: FaultCode::Other },
        ),
        (
            r#"<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>&xxe;</env:Body></env:Envelope>"#.into(),
            MitzError::Dtd,
        ),
        ("".into(), MitzError::NotSoap),
        ("garbage".into(), MitzError::Xml { at: 0 }),
        ("<html><body>Bad gateway</body></html>".into(), MitzError::NotSoap),
    ];
    for (body, expected) in cases {
        let got = parse_response(body.as_bytes());
        match (&got, &expected) {
            (Err(MitzError::Xml { .. }), MitzError::Xml { .. }) => {}
            _ => assert_eq!(got, Err(expected), "{body}"),
        }
    }
}

#[test]
fn truncated_unbalanced_and_non_utf8_answers_are_errors() {
    let full = answer("Permit");
    for cut in [10, full.len() / 2, full.len() - 1] {
        assert!(
            parse_response(&full.as_bytes()[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert_eq!(parse_response(b"\xff\xfe<a/>"), Err(MitzError::NotUtf8));
    let two_roots = format!("{full}<env:Envelope xmlns:env=\"{SOAP12_NS}\"/>");
    assert!(parse_response(two_roots.as_bytes()).is_err());
    let big = vec![b' '; MAX_RESPONSE_BYTES + 1];
    assert_eq!(parse_response(&big), Err(MitzError::TooLarge));
    let deep = envelope(&format!("{}{}", "<a>".repeat(40), "</a>".repeat(40)));
    assert_eq!(parse_response(deep.as_bytes()), Err(MitzError::TooDeep));
}

#[test]
fn no_error_text_holds_the_bsn() {
    let leaky = [
        envelope(&format!(
            r#"<env:Fault><env:Code><env:Value>{BSN}</env:Value></env:Code><env:Reason><env:Text>{BSN}</env:Text></env:Reason></env:Fault>"#
        )),
        answer(BSN),
        answer(&format!("&{BSN};")),
        format!("<{BSN}/>"),
        format!("<a{BSN}>"),
        format!("<x:Envelope xmlns:x=\"urn:{BSN}\"/>"),
    ];
    for body in leaky {
        let error = parse_response(body.as_bytes()).unwrap_err();
        assert!(!error.to_string().contains(BSN), "{error}");
        assert!(!format!("{error:?}").contains(BSN), "{error:?}");
    }
    let mut q = example();
    q.patient_bsn = "900186022".into();
    let error = build(&q).unwrap_err();
    assert!(!error.to_string().contains("900186022"));
    assert_eq!(
        error.to_string(),
        "mitz question: `patient_bsn` is not a BSN (9 digits passing the 11-check)"
    );
}

#[test]
fn a_read_back_question_refuses_repeats_and_strangers() {
    let repeated = EXAMPLE.replace(
        "urn:ihe:iti:appc:2016:author-institution:id",
        "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
    );
    assert!(matches!(
        parse_request(repeated.as_bytes()),
        Err(MitzError::Attribute {
            problem: "repeated",
            ..
        })
    ));
    let unknown = EXAMPLE.replace("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", "urn:x");
    assert!(matches!(
        parse_request(unknown.as_bytes()),
        Err(MitzError::Attribute {
            problem: "unknown",
            ..
        })
    ));
    let bad_bsn = EXAMPLE.replace(BSN, "900186022");
    assert!(matches!(
        parse_request(bad_bsn.as_bytes()),
        Err(MitzError::Input {
            field: MitzField::PatientBsn,
            ..
        })
    ));
}

/// A valid BSN from eight digits: the ninth makes the 11-check pass, or none does.
fn bsn_from(prefix: [u8; 8]) -> Option<String> {
    let weights = [9i64, 8, 7, 6, 5, 4, 3, 2];
    let sum: i64 = prefix
        .iter()
        .zip(weights)
        .map(|(d, w)| i64::from(*d) * w)
        .sum();
    let last = sum % 11;
    if last > 9 || (sum == 0) {
        return None;
    }
    let mut s: String = prefix.iter().map(|d| char::from(b'0' + d)).collect();
    s.push(char::from(b'0' + u8::try_from(last).ok()?));
    Some(s)
}

fn code() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,32}"
}

fn oid() -> impl Strategy<Value = String> {
    "[0-2](\\.(0|[1-9][0-9]{0,8})){1,12}"
}

fn mitz_code() -> impl Strategy<Value = MitzCode> {
    (code(), oid()).prop_map(|(c, s)| MitzCode::new(c, s))
}

fn question() -> impl Strategy<Value = MitzQuestion> {
    (
        proptest::array::uniform8(0u8..10).prop_filter_map("no BSN", bsn_from),
        "[0-9]{8}",
        mitz_code(),
        mitz_code(),
        mitz_code(),
        proptest::option::of("[0-9]{9}"),
        proptest::option::of("[0-9]{9}"),
        "[0-9]{8}",
        mitz_code(),
        mitz_code(),
    )
        .prop_map(
            |(bsn, author, aft, event, role, prac, mandated, req, rft, pou)| MitzQuestion {
                patient_bsn: bsn,
                author_ura: author,
                author_facility_type: aft,
                event_code: event,
                role,
                requesting_practitioner: prac,
                mandated,
                requesting_ura: req,
                requesting_facility_type: rft,
                purpose_of_use: pou,
            },
        )
}

/// Any string, mostly printable, sometimes with control characters and markup.
fn anything() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[<>&\"' a-z0-9;#]{0,40}",
        "[0-9]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_questions_round_trip_through_the_xml(q in question(), to in "[^\\p{Cc}]{1,200}") {
        let s = MitzRequestSettings { to };
        let built = build_request(&q, &s).unwrap();
        let read = parse_request(built.as_bytes()).unwrap();
        prop_assert_eq!(read.question, q);
        prop_assert_eq!(read.to, s.to);
    }

    #[test]
    fn any_input_builds_well_formed_xml_or_a_named_error(
        bsn in anything(), ura in anything(), code in anything(), system in anything(),
        uzi in proptest::option::of(anything()), to in anything(),
    ) {
        let mut q = example();
        q.patient_bsn = bsn;
        q.requesting_ura = ura;
        q.role = MitzCode::new(code, system);
        q.requesting_practitioner = uzi;
        match build_request(&q, &MitzRequestSettings { to }) {
            Ok(xml) => {
                // Well-formed: every event reads, and the inputs come back unchanged.
                let mut reader = quick_xml::Reader::from_str(&xml);
                loop {
                    match reader.read_event() {
                        Ok(quick_xml::events::Event::Eof) => break,
                        Ok(_) => {}
                        Err(e) => prop_assert!(false, "not XML: {e}"),
                    }
                }
                prop_assert_eq!(parse_request(xml.as_bytes()).unwrap().question, q);
            }
            Err(MitzError::Input { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn parse_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_response(&body);
        let _ = parse_request(&body);
    }

    #[test]
    fn parse_never_panics_on_mangled_answers(
        decision in prop_oneof![Just("Permit".to_string()), ".{0,12}".prop_map(String::from)],
        cut in 0usize..400,
        insert in "[<>&/=\"a-zA-Z: ]{0,8}",
    ) {
        let mut body = answer(&decision);
        let at = body.char_indices().map(|(i, _)| i).nth(cut % body.chars().count()).unwrap_or(0);
        body.insert_str(at, &insert);
        if let Err(e) = parse_response(body.as_bytes()) {
            prop_assert!(e.to_string().starts_with("mitz answer: "));
        }
    }

    #[test]
    fn only_the_four_decisions_are_accepted(text in "[A-Za-z]{0,16}") {
        let result = parse_response(answer(&text).as_bytes());
        match MitzDecision::from_text(&text) {
            Some(d) => prop_assert_eq!(result, Ok(d)),
            None => prop_assert_eq!(result, Err(MitzError::UnknownDecision)),
        }
    }

    #[test]
    fn no_input_error_names_its_value(bsn in "[0-9]{9}") {
        let mut q = example();
        q.patient_bsn = bsn.clone();
        if let Err(e) = build(&q) {
            prop_assert!(!e.to_string().contains(&bsn));
        }
    }
}

#[test]
fn a_byte_order_mark_and_a_declared_encoding_are_read() {
    let with_bom = format!("\u{feff}{}", answer("Permit"));
    assert_eq!(
        parse_response(with_bom.as_bytes()),
        Ok(MitzDecision::Permit)
    );
    let utf8 = answer("Deny").replace(
        r#"encoding="UTF-8""#,
        r#"encoding="utf-8" standalone="yes""#,
    );
    assert_eq!(parse_response(utf8.as_bytes()), Ok(MitzDecision::Deny));
}

#[test]
fn comments_and_processing_instructions_do_not_change_the_decision() {
    let body = answer("<!-- Permit -->Deny<?pi Permit?>");
    assert_eq!(parse_response(body.as_bytes()), Ok(MitzDecision::Deny));
    let body = answer("<![CDATA[Permit]]>");
    assert_eq!(parse_response(body.as_bytes()), Ok(MitzDecision::Permit));
    let split = answer("Per<!-- -->mit");
    assert_eq!(parse_response(split.as_bytes()), Ok(MitzDecision::Permit));
}

#[test]
fn a_decision_outside_the_body_or_the_result_does_not_count() {
    let xacml = r#"xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17""#;
    // In the header: not the answer.
    let header = format!(
        r#"<env:Envelope xmlns:env="{SOAP12_NS}"><env:Header><Response {xacml}><Result><Decision>Permit</Decision></Result></Response></env:Header><env:Body/></env:Envelope>"#
    );
    assert_eq!(
        parse_response(header.as_bytes()),
        Err(MitzError::MissingResponse)
    );
    // Deeper than Result: not the Result's decision.
    let deep = envelope(&format!(
        "<Response {xacml}><Result><Status><Decision>Permit</Decision></Status></Result></Response>"
    ));
    assert_eq!(
        parse_response(deep.as_bytes()),
        Err(MitzError::MissingDecision)
    );
    // A second Body is refused rather than choosing one.
    let two = format!(
        r#"<env:Envelope xmlns:env="{SOAP12_NS}"><env:Body/><env:Body><Response {xacml}><Result><Decision>Permit</Decision></Result></Response></env:Body></env:Envelope>"#
    );
    assert_eq!(parse_response(two.as_bytes()), Err(MitzError::Body));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A BSN planted anywhere in an answer (text, names, attributes, namespaces) never
    /// reaches an error's text.
    #[test]
    fn a_planted_bsn_never_reaches_an_error(
        prefix in proptest::array::uniform8(0u8..10).prop_filter_map("no BSN", bsn_from),
        at in 0usize..1000,
        wrap in prop_oneof![Just(""), Just("<"), Just("&"), Just("\""), Just("</"), Just("xmlns:a=\"")],
    ) {
        let mut body = answer("Permit");
        let at = body
            .char_indices()
            .map(|(i, _)| i)
            .nth(at % body.chars().count())
            .unwrap_or(0);
        body.insert_str(at, &format!("{wrap}{prefix}"));
        for error in [parse_response(body.as_bytes()).err(), parse_request(body.as_bytes()).err()]
            .into_iter()
            .flatten()
        {
            prop_assert!(!error.to_string().contains(&prefix), "{}", error);
        }
    }

    /// Changing one byte of a Permit answer yields Permit only if the Decision still reads
    /// exactly `Permit` as the only decision: never by accident from a broken answer.
    #[test]
    fn a_damaged_permit_is_never_a_different_permit(at in 0usize..400, byte in any::<u8>()) {
        let original = answer("Permit").into_bytes();
        let mut body = original.clone();
        let at = at % body.len();
        body[at] = byte;
        if let Ok(MitzDecision::Permit) = parse_response(&body) {
            // Still Permit: the Decision element and its text were not what changed, or
            // the change was inside text or attributes the reader does not consult.
            let text = String::from_utf8(body).unwrap();
            prop_assert!(text.contains(">Permit</"), "{}", text);
        }
    }
}

#[test]
fn named_arguments_make_the_example_question() {
    let args = [
        ("bsn", BSN),
        ("requester_ura", "00000666"),
        ("requester_facility_type", "Z3"),
        ("subject_role", "01.015"),
        ("provider_id", "000095254"),
        ("author_ura", "00000659"),
        ("author_facility_type", "Z3"),
        ("event_code", "GGC002"),
        ("purpose_of_use", "TREAT"),
    ];
    assert_eq!(MitzQuestion::from_args(args), Ok(example()));
    // Each required one missing is named; the optional ones may be left out.
    for (index, (key, _)) in args.iter().enumerate() {
        let fewer = args
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, kv)| *kv);
        let result = MitzQuestion::from_args(fewer);
        if *key == "provider_id" {
            assert!(result.is_ok());
        } else {
            assert_eq!(result, Err(MitzError::MissingArgument(key)));
        }
    }
    let with = |extra: (&'static str, &'static str)| {
        MitzQuestion::from_args(args.iter().copied().chain([extra]))
    };
    assert_eq!(
        with(("mandated_id", "000012345"))
            .unwrap()
            .mandated
            .as_deref(),
        Some("000012345")
    );
    assert_eq!(with((BSN, "x")), Err(MitzError::UnknownArgument));
    assert_eq!(with(("bsn", BSN)), Err(MitzError::UnknownArgument));
    assert!(!MitzError::UnknownArgument.to_string().contains(BSN));
    // Values are validated as the fields are.
    let bad = args
        .iter()
        .map(|&(k, v)| if k == "bsn" { (k, "123456789") } else { (k, v) });
    assert_eq!(
        MitzQuestion::from_args(bad),
        Err(MitzError::Input {
            field: MitzField::PatientBsn,
            problem: InputProblem::NotABsn
        })
    );
}
