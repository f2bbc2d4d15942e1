//! `fhir` blocks: `request.fhir` in rules, and CapabilityStatements denying before them.

use super::*;

fn fixture(name: &str) -> String {
    format!(
        "{}/../../tests/fixtures/fhir/capabilities/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A policy allowing what `condition` holds for, below `/fhir`.
fn judge(condition: &str, method: &str, target: &str) -> Decision {
    let policies = format!(
        "policies:\n  - id: p\n    issuers: [test]\n    fhir: {{base_path: /fhir}}\n    rules:\n      - {{id: cond, allow: {condition:?}}}\n"
    );
    let set = set(&policies).unwrap_or_else(|e| panic!("{condition}: {e:?}"));
    set.get("p").unwrap().evaluate(
        &request(method, target),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    )
}

fn holds(condition: &str, target: &str) -> bool {
    judge(condition, "GET", target).is_allow()
}

#[test]
fn rules_read_the_request_as_fhir() {
    let search = "/fhir/Observation?category=a,b&category=c&code:text=x&subject:Patient.identifier=s%7C1&date=ge2020-01-01&_include=Observation:specimen&_include=Observation:related-target&_include:iterate=Observation:patient&_revinclude=Provenance:target&_elements=id,code&_summary=data&_count=10&_sort=date";
    for condition in [
        "request.fhir.version == 'R4'",
        "request.fhir.interaction == 'search-type'",
        "request.fhir.type == 'Observation'",
        "request.fhir.id == null",
        "request.fhir.version_id == null",
        "request.fhir.operation == null",
        "request.fhir.compartment == null",
        "request.fhir.params['category'] == [['a', 'b'], ['c']]",
        "request.fhir.params['code:text'] == [['x']]",
        "request.fhir.param('category') == [['a', 'b'], ['c']]",
        "request.fhir.param('nope') == []",
        "request.fhir.values('category') == ['a', 'b', 'c']",
        "request.fhir.param('subject:Patient.identifier')[0][0] == 's|1'",
        "request.fhir.param_names == ['category', 'code:text', 'subject:Patient.identifier', 'date']",
        "request.fhir.search.exists(p, p.name == 'subject' && p.chain[0].type == 'Patient' && p.chain[1].param == 'identifier')",
        "request.fhir.search.exists(p, p.raw == 'code:text' && p.modifier == 'text' && p.name == 'code')",
        "request.fhir.include.sameSet(['Observation:related-target', 'Observation:specimen'])",
        "request.fhir.include_iterate == ['Observation:patient']",
        "request.fhir.revinclude == ['Provenance:target']",
        "request.fhir.revinclude_iterate == []",
        "request.fhir.elements == ['id', 'code']",
        "request.fhir.summary == 'data'",
        "request.fhir.count == 10",
        "request.fhir.sort == ['date']",
        "request.fhir.hasOnly(['category', 'code:text', 'subject:Patient.identifier', 'date'])",
        "!request.fhir.hasOnly(['category'])",
        "request.fhir.param('date')[0][0].fhirPrefix() == 'ge'",
        "request.fhir.param('date')[0][0].fhirUnprefixed() == '2020-01-01'",
        "'apple'.fhirPrefix() == 'eq' && 'apple'.fhirUnprefixed() == 'apple'",
        "'lt-5'.fhirPrefix() == 'lt'",
        "['a', 'b'].sameSet(['b', 'a', 'b']) && !['a'].sameSet(['a', 'b'])",
        "type(request.fhir) != type(1)",
    ] {
        assert!(holds(condition, search), "{condition}");
    }
    let compartment = "/fhir/Patient/p1/Observation?code=x";
    assert!(holds(
        "request.fhir.compartment == {'type': 'Patient', 'id': 'p1'}",
        compartment
    ));
    let vread = "/fhir/Patient/p1/_history/3";
    assert!(holds(
        "request.fhir.interaction == 'vread' && request.fhir.id == 'p1' && request.fhir.version_id == '3'",
        vread
    ));
    assert!(holds(
        "request.fhir.operation == 'lastn' && request.fhir.interaction == 'operation'",
        "/fhir/Observation/$lastn?code=x"
    ));
    assert!(holds(
        "request.fhir.search[0].has[0].type == 'Observation' && request.fhir.search[0].has_param == 'code'",
        "/fhir/Patient?_has:Observation:patient:code=1234"
    ));
    assert!(holds(
        "request.fhir.patient == {'id': 'p1', 'bsn': null, 'problem': null}",
        compartment
    ));
    assert!(holds(
        "request.fhir.patient.bsn == '999999990' && request.fhir.patient.id == null",
        "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999999990"
    ));
    assert!(holds(
        "request.fhir.patient.problem != null && request.fhir.patient.id == null",
        "/fhir/Observation?patient=Patient/1,Patient/2"
    ));
}

#[test]
fn helpers_on_the_wrong_receiver_fail_closed() {
    for condition in [
        "'x'.param('a') == []",
        "request.fhir.param(1) == []",
        "[1].hasOnly(['a'])",
    ] {
        let decision = judge(condition, "GET", "/fhir/Patient");
        assert!(!decision.is_allow(), "{condition}");
    }
}

#[test]
fn a_request_fhir_cannot_read_is_a_400_naming_the_parameter() {
    let decision = judge("true", "GET", "/fhir/Patient?_count=x");
    // Only read when a rule or a statement needs it: `true` needs nothing.
    assert!(decision.is_allow());
    let decision = judge(
        "request.fhir.type == 'Patient'",
        "GET",
        "/fhir/Patient?_count=x",
    );
    assert_eq!(decision.status(), 400);
    assert_eq!(&*decision.rule, "fhir-request");
    assert!(decision.reason.contains("`_count`"), "{}", decision.reason);
    let decision = judge("request.fhir.type == 'Patient'", "GET", "/other/Patient");
    assert_eq!(decision.status(), 403);
    assert_eq!(&*decision.rule, "fhir-request");
}

#[test]
fn mistakes_with_request_fhir_fail_the_load() {
    let no_block = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - {id: r, allow: \"request.fhir.type == 'Patient'\"}\n",
    );
    assert!(
        no_block.iter().any(|e| e.contains("no `fhir` block")),
        "{no_block:?}"
    );
    let bad_field = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    fhir: {base_path: /fhir}\n    rules:\n      - {id: r, allow: \"request.fhir.resource == 'Patient'\"}\n",
    );
    assert!(
        bad_field
            .iter()
            .any(|e| e.contains("`request.fhir` has no field `resource`")),
        "{bad_field:?}"
    );
    let missing = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    fhir: {base_path: /fhir, capability_statement: nope.json}\n    rules:\n      - {id: r, allow: \"true\"}\n",
    );
    assert!(
        missing
            .iter()
            .any(|e| e.contains("`fhir.capability_statement` `nope.json`")),
        "{missing:?}"
    );
    let base = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    fhir: {base_path: fhir}\n    rules:\n      - {id: r, allow: \"true\"}\n",
    );
    assert!(
        base.iter().any(|e| e.contains("must start with `/`")),
        "{base:?}"
    );
}

fn bgz_policy(extra: &str) -> PolicySet {
    set(&format!(
        "policies:\n  - id: bgz\n    issuers: [test]\n    fhir: {{base_path: /fhir, capability_statement: {:?}{extra}}}\n    rules:\n      - {{id: all, allow: \"true\"}}\n",
        fixture("bgz")
    ))
    .unwrap()
}

#[test]
fn the_statement_denies_before_the_rules_run() {
    let set = bgz_policy("");
    let policy = set.get("bgz").unwrap();
    let judge = |target: &str| {
        let mut trace = Trace::default();
        let decision = policy.evaluate(
            &request("GET", target),
            Some(&identity(&[])),
            &FlowIndex::new(),
            Some(&mut trace),
        );
        (decision, trace)
    };
    let (allowed, trace) = judge("/fhir/Patient?_include=Patient:general-practitioner");
    assert!(allowed.is_allow(), "{allowed:?}");
    // The statement is STU3: the policy reads requests as STU3.
    assert_eq!(
        trace.fhir.as_deref(),
        Some("STU3 search-type on `Patient`; listed in the CapabilityStatement `bgz`")
    );
    let (denied, trace) = judge("/fhir/Patient?name=x");
    assert_eq!(denied.status(), 403);
    assert_eq!(&*denied.rule, "capability-statement");
    assert_eq!(
        denied.reason,
        "the CapabilityStatement `bgz` does not list search parameter `name` on `Patient`"
    );
    assert!(trace.rules.is_empty(), "no rule ran: {:?}", trace.rules);
    let (lastn, _) = judge("/fhir/Observation/$lastn?code=http://loinc.org|85354-9");
    assert!(lastn.is_allow(), "{lastn:?}");
}

#[test]
fn iterated_includes_follow_the_policy() {
    let target = "/fhir/Patient?_include:recurse=Patient:general-practitioner";
    let denied = bgz_policy("").get("bgz").unwrap().evaluate(
        &request("GET", target),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(&*denied.rule, "capability-statement");
    let allowed = bgz_policy(", iterate: allow").get("bgz").unwrap().evaluate(
        &request("GET", target),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert!(allowed.is_allow(), "{allowed:?}");
    // An explicit version overrides the statement's: R4 spells it `:iterate`.
    let r4 = bgz_policy(", version: R4").get("bgz").unwrap().evaluate(
        &request("GET", target),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(r4.status(), 400);
}

#[test]
fn a_changed_statement_is_a_new_policy_set_watched_for_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let statement = dir.path().join("caps.json");
    std::fs::copy(fixture("stu3_composition"), &statement).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "policies:\n  - id: p\n    issuers: [test]\n    fhir: {base_path: /fhir, capability_statement: caps.json}\n    rules:\n      - {id: r, allow: \"true\"}\n",
    )
    .unwrap();
    let config = LoadSettings {
        policies: vec!["p.yaml".into()],
        issuers: vec!["test".into()],
        base_dir: dir.path().to_owned(),
        ..LoadSettings::default()
    };
    let before = PolicySet::load(&config).unwrap();
    assert!(before.template_files().any(|f| f == statement));
    std::fs::copy(fixture("mcsd_history"), &statement).unwrap();
    let after = PolicySet::load(&config).unwrap();
    assert_ne!(before.version, after.version);
}
