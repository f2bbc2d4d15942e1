#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use serde_json::json;

use super::template::Template;
use super::*;

const QIR: &str = include_str!("../../../../policy/iwlz/indicatie/QIR-0001-ZKi.graphql");

fn post(body: &str) -> AccessRequest {
    let mut request = AccessRequest {
        method: "POST".into(),
        body: body.into(),
        ..Default::default()
    };
    request.headers.insert(
        "content-type".into(),
        "application/json; charset=utf-8".into(),
    );
    request.set_target("/graphql");
    request
}

fn query(query: &str, variables: serde_json::Value) -> AccessRequest {
    post(&json!({"query": query, "variables": variables}).to_string())
}

fn read_default(request: &AccessRequest) -> Result<GraphqlRequest, RequestError> {
    read(request, &Limits::default(), None)
}

fn read_limited(request: &AccessRequest, limits: &Limits) -> Result<GraphqlRequest, RequestError> {
    read(request, limits, None)
}

#[test]
fn the_cache_keeps_a_query_seen_twice_and_keeps_refusals() {
    let cache = DocumentCache::new(1 << 20);
    let limits = Limits::default();
    let reads: Vec<GraphqlRequest> = (0..3)
        .map(|x| {
            read(
                &query("{ a { b } }", json!({ "x": x })),
                &limits,
                Some(&cache),
            )
            .unwrap()
        })
        .collect();
    // Seen once: parsed, not kept. Seen again: kept. From then on: the kept parse.
    assert!(!Arc::ptr_eq(&reads[0].parsed, &reads[1].parsed));
    assert!(
        Arc::ptr_eq(&reads[1].parsed, &reads[2].parsed),
        "parsed again"
    );
    assert_eq!(reads[2].variables.get("x"), Some(&json!(2)));
    for _ in 0..3 {
        let error = read(&query("{ a(", json!(null)), &limits, Some(&cache)).unwrap_err();
        assert!(matches!(error, RequestError::Syntax(_)), "{error:?}");
    }
    // The operation name is part of the key.
    let document = "query A { a } query B { b }";
    let a = post(&json!({"query": document, "operationName": "A"}).to_string());
    let b = post(&json!({"query": document, "operationName": "B"}).to_string());
    assert_eq!(
        read(&a, &limits, Some(&cache)).unwrap().root_fields(),
        vec!["a"]
    );
    assert_eq!(
        read(&b, &limits, Some(&cache)).unwrap().root_fields(),
        vec!["b"]
    );
    // A cached mutation is still refused over GET.
    let mut get = AccessRequest {
        method: "GET".into(),
        ..Default::default()
    };
    get.set_target("/graphql?query=mutation%20%7B%20a%20%7D");
    let _ = read(
        &post(&json!({"query": "mutation { a }"}).to_string()),
        &limits,
        Some(&cache),
    );
    assert_eq!(read(&get, &limits, Some(&cache)).unwrap_err().status(), 405);
}

fn malformed_message(request: &AccessRequest) -> String {
    match read_default(request) {
        Err(RequestError::Malformed(message)) => message,
        other => panic!("expected a malformed request, got {other:?}"),
    }
}

#[test]
fn a_post_is_read_with_fragments_expanded_and_aliases_resolved() {
    let request = query(
        "query Q($id: UUID!) { a: wlzIndicatie(where: {id: {eq: $id}}) { ...F ... on X { bsn } } }
         fragment F on WlzIndicatie { grondslag { grondslagID } }",
        json!({"id": "x-1"}),
    );
    let read = read_default(&request).unwrap();
    assert_eq!(read.operation, OperationType::Query);
    assert_eq!(read.name.as_deref(), Some("Q"));
    assert_eq!(read.root_fields(), vec!["wlzIndicatie"]);
    assert_eq!(
        read.paths(),
        vec![
            "wlzIndicatie",
            "wlzIndicatie.grondslag",
            "wlzIndicatie.grondslag.grondslagID",
            "wlzIndicatie.bsn"
        ]
    );
    let root = &read.fields[0];
    assert_eq!(root.alias.as_deref(), Some("a"));
    assert_eq!(
        root.arguments,
        vec![(
            "where".to_string(),
            ArgValue::Object(vec![(
                "id".into(),
                ArgValue::Object(vec![("eq".into(), ArgValue::Variable("id".into()))])
            )])
        )]
    );
    assert_eq!(
        root.arguments[0].1.to_json(),
        json!({"id": {"eq": {"$variable": "id"}}})
    );
    assert_eq!(read.variable("id"), Some(json!("x-1")));
    assert_eq!(read.variable_definitions[0].ty, "UUID!");
    assert!(read.variable_definitions[0].required());
    assert!(!read.introspection);
}

#[test]
fn a_get_is_read_from_percent_decoded_parameters() {
    let mut request = AccessRequest {
        method: "GET".into(),
        ..Default::default()
    };
    request.set_target(
        "/graphql?query=query%20A%20%7B%20a%20%7D%20query%20B%20%7B%20b%20%7D&operationName=B&variables=%7B%22x%22%3A1%7D",
    );
    let read = read_default(&request).unwrap();
    assert_eq!(read.name.as_deref(), Some("B"));
    assert_eq!(read.root_fields(), vec!["b"]);
    assert_eq!(read.variables.get("x"), Some(&json!(1)));

    request.set_target("/graphql?query=mutation%20%7B%20a%20%7D");
    assert_eq!(read_default(&request).unwrap_err().status(), 405);

    request.set_target("/graphql?query=%7Ba%7D&query=%7Bb%7D");
    assert!(malformed_message(&request).contains("`query` is given more than once"));
}

#[test]
fn no_operation_is_its_own_error() {
    for body in [
        json!({}),
        json!({"query": "   "}),
        json!({"query": null}),
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}),
        json!({"query": "fragment F on X { a }"}),
        json!({"query": "query A { a }", "operationName": "B"}),
    ] {
        let error = read_default(&post(&body.to_string())).unwrap_err();
        assert!(
            matches!(error, RequestError::NoOperation(_)),
            "{body}: {error:?}"
        );
        assert_eq!(error.client_message(), "No operation found to evaluate");
        assert_eq!(error.status(), 400);
    }
}

#[test]
fn several_operations_need_an_operation_name() {
    let request = query("query A { a } query B { b }", json!(null));
    assert!(malformed_message(&request).contains("operationName"));
    let request =
        post(&json!({"query": "query A { a } query A { b }", "operationName": "A"}).to_string());
    assert!(malformed_message(&request).contains("operation `A` is defined twice"));
}

#[test]
fn syntax_errors_are_reported() {
    let error = read_default(&query("query { a(", json!(null))).unwrap_err();
    assert!(matches!(error, RequestError::Syntax(_)), "{error:?}");
    assert!(error.client_message().starts_with("invalid GraphQL syntax"));
    // Type definitions are valid GraphQL but not a request.
    let message = malformed_message(&query("type T { a: Int } query { a }", json!(null)));
    assert!(message.contains("operations and fragments"), "{message}");
}

#[test]
fn strange_string_escapes_never_crash() {
    for literal in [
        r#""\u{FFFFFFFFFFFF}""#,
        r#""\uD800""#,
        r#""\uD800\u0041""#,
        r#""\u{110000}""#,
        r#""\u{}""#,
        r#""\x""#,
        r#""""unterminated"#,
    ] {
        let request = query(&format!("{{ a(x: {literal}) }}"), json!(null));
        // Either read or refused: the point is no panic escapes.
        let _ = read_default(&request);
    }
}

#[test]
fn fragment_cycles_and_unknown_fragments_are_refused() {
    let message = malformed_message(&query(
        "{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }",
        json!(null),
    ));
    assert!(message.contains("cycle: A → B → A"), "{message}");
    let message = malformed_message(&query("{ ...Nope }", json!(null)));
    assert!(message.contains("`Nope` is not defined"), "{message}");
    let message = malformed_message(&query(
        "{ ...A } fragment A on Q { a } fragment A on Q { b }",
        json!(null),
    ));
    assert!(message.contains("defined twice"), "{message}");
}

#[test]
fn a_fragment_bomb_stops_at_the_field_limit() {
    // Each level doubles: 2^30 fields if expanded naively.
    let mut document = String::from("{ ...F0 }");
    for i in 0..30 {
        document.push_str(&format!(
            " fragment F{i} on Q {{ ...F{} ...F{} }}",
            i + 1,
            i + 1
        ));
    }
    document.push_str(" fragment F30 on Q { a }");
    let message = malformed_message(&query(&document, json!(null)));
    assert!(message.contains("more than 1000 fields"), "{message}");
}

#[test]
fn depth_aliases_tokens_and_size_are_bounded() {
    let deep = format!("{}{}", "{ a ".repeat(20), "}".repeat(20));
    let message = malformed_message(&query(&deep, json!(null)));
    assert!(message.contains("deeper than 15"), "{message}");

    // Far deeper than the parser may recurse: refused by its limit, not a stack overflow.
    let abyss = format!("{}{}", "{ a ".repeat(5_000), "}".repeat(5_000));
    let limits = Limits {
        max_body_bytes: 1 << 20,
        ..Limits::default()
    };
    let error = read_limited(&query(&abyss, json!(null)), &limits).unwrap_err();
    assert!(
        error.to_string().contains("too large or too deeply nested"),
        "{error}"
    );

    let aliases: String = (0..10_000).map(|i| format!("a{i}: bsn ")).collect();
    let limits = Limits {
        max_body_bytes: 1 << 20,
        max_tokens: 100_000,
        max_fields: 100_000,
        ..Limits::default()
    };
    let error =
        read_limited(&query(&format!("{{ {aliases} }}"), json!(null)), &limits).unwrap_err();
    assert!(
        error.to_string().contains("more than 30 aliases"),
        "{error}"
    );

    let fields: String = (0..30_000).map(|_| "a ").collect();
    let limits = Limits {
        max_body_bytes: 1 << 20,
        ..Limits::default()
    };
    let error = read_limited(&query(&format!("{{ {fields} }}"), json!(null)), &limits).unwrap_err();
    assert!(error.to_string().contains("too large"), "{error}");

    let big = query(
        &format!("{{ a(x: \"{}\") }}", "x".repeat(70_000)),
        json!(null),
    );
    let message = malformed_message(&big);
    assert!(message.contains("exceeds 65536 bytes"), "{message}");
}

#[test]
fn ambiguous_json_is_refused() {
    let message = malformed_message(&post(r#"{"query": "{ a }", "query": "{ b }"}"#));
    assert!(message.contains("duplicate field `query`"), "{message}");
    let message = malformed_message(&post(
        r#"{"query": "query($x: String) { a(x: $x) }", "variables": {"x": "1", "x": "2"}}"#,
    ));
    assert!(message.contains("duplicate key `x`"), "{message}");
    let message = malformed_message(&post(r#"[{"query": "{ a }"}, {"query": "{ b }"}]"#));
    assert!(message.contains("batches"), "{message}");
    let message = malformed_message(&post(r#"{"id": "stored-1"}"#));
    assert!(message.contains("unknown field `id`"), "{message}");
    let message = malformed_message(&post(r#"{"query": "{ a }", "variables": [1]}"#));
    assert!(
        message.contains("`variables` must be a JSON object"),
        "{message}"
    );
    let message = malformed_message(&post("not json"));
    assert!(message.contains("one JSON object"), "{message}");
    let message = malformed_message(&post(r#"{"query": 1}"#));
    assert!(message.contains("not a GraphQL request"), "{message}");

    let mut in_url = post(r#"{"query": "{ a }"}"#);
    in_url.set_target("/graphql?query=%7Bb%7D");
    assert!(malformed_message(&in_url).contains("not the URL"));

    let mut form = post(r#"{"query": "{ a }"}"#);
    form.headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    assert!(malformed_message(&form).contains("application/json"));
}

#[test]
fn other_methods_are_refused_with_405() {
    let mut request = post(r#"{"query": "{ a }"}"#);
    request.method = "PUT".into();
    let error = read_default(&request).unwrap_err();
    assert_eq!(error.status(), 405);
}

#[test]
fn introspection_and_mutations_are_recognised() {
    let read = read_default(&query("{ __schema { types { name } } }", json!(null))).unwrap();
    assert!(read.introspection);
    let read = read_default(&query(
        "{ a { b { __type(name: \"X\") { name } } } }",
        json!(null),
    ))
    .unwrap();
    assert!(read.introspection);
    let read = read_default(&query("mutation M { delete(id: 1) }", json!(null))).unwrap();
    assert_eq!(read.operation, OperationType::Mutation);
}

/// The exact QIR-0001-ZKi template as a request.
fn qir_request(variables: serde_json::Value) -> GraphqlRequest {
    read_default(&query(QIR, variables)).unwrap()
}

fn qir() -> Template {
    Template::parse("QIR-0001-ZKi", QIR).unwrap()
}

fn misfit(template: &Template, request: &str, variables: serde_json::Value) -> String {
    let request = read_default(&query(request, variables)).unwrap();
    match template.check(&request) {
        Ok(fit) => panic!("expected no fit, got {fit:?}"),
        Err(misfit) => misfit.describe(),
    }
}

const VARS: &str = "$wlzIndicatieID: UUID!, $initieelVerantwoordelijkZorgkantoor: String!";
const WHERE: &str = "where: {wlzindicatieID: {eq: $wlzIndicatieID}, initieelVerantwoordelijkZorgkantoor: {eq: $initieelVerantwoordelijkZorgkantoor}}";

fn both() -> serde_json::Value {
    json!({"wlzIndicatieID": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "initieelVerantwoordelijkZorgkantoor": "5000"})
}

#[test]
fn the_exact_template_fits_and_names_its_variables() {
    let fit = qir().check(&qir_request(both())).unwrap();
    // Arguments are compared by name, so they are listed in name order.
    assert_eq!(
        fit.variables,
        vec!["initieelVerantwoordelijkZorgkantoor", "wlzIndicatieID"]
    );
}

#[test]
fn a_subset_with_aliases_fragments_and_typename_fits() {
    let request = read_default(&query(
        &format!(
            "query Mine({VARS}) {{ ind: wlzIndicatie({WHERE}) {{ id: wlzindicatieID ...G __typename }} }}
             fragment G on WlzIndicatie {{ grondslag {{ grondslagID }} }}"
        ),
        both(),
    ))
    .unwrap();
    assert!(qir().check(&request).is_ok());
}

#[test]
fn misfits_say_what_differs() {
    let template = qir();
    let cases = [
        (
            format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn wachtwoord }} }}"),
            "extra field `wlzIndicatie.wachtwoord`",
        ),
        (
            format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn }} client {{ bsn }} }}"),
            "extra root field `client`",
        ),
        // An alias cannot rename a field into the template.
        (
            format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn: geheim }} }}"),
            "extra field `wlzIndicatie.geheim`",
        ),
        // Nor can a fragment smuggle one in.
        (
            format!(
                "query({VARS}) {{ wlzIndicatie({WHERE}) {{ ...S }} }} fragment S on W {{ client {{ wachtwoord }} }}"
            ),
            "extra field `wlzIndicatie.client.wachtwoord`",
        ),
        (
            format!(
                "query({VARS}) {{ wlzIndicatie({WHERE}) {{ ... on W {{ stoornis {{ geheim }} }} }} }}"
            ),
            "extra field `wlzIndicatie.stoornis.geheim`",
        ),
        (
            "query($wlzIndicatieID: UUID!) { wlzIndicatie(where: {wlzindicatieID: {eq: $wlzIndicatieID}}) { bsn } }".to_string(),
            "`where.initieelVerantwoordelijkZorgkantoor` is missing",
        ),
        (
            "query($wlzIndicatieID: UUID!) { wlzIndicatie(where: {wlzindicatieID: {eq: $wlzIndicatieID}, initieelVerantwoordelijkZorgkantoor: {eq: \"5000\"}}) { bsn } }".to_string(),
            "`where.initieelVerantwoordelijkZorgkantoor.eq` is a literal where the template has `$initieelVerantwoordelijkZorgkantoor`",
        ),
        (
            "query { wlzIndicatie { bsn } }".to_string(),
            "`where` is missing",
        ),
        (
            format!("query({VARS}) {{ wlzIndicatie({WHERE}, first: 100) {{ bsn }} }}"),
            "`first` is not in the template",
        ),
        (
            format!(
                "query({VARS}) {{ wlzIndicatie(where: {{wlzindicatieID: {{eq: $initieelVerantwoordelijkZorgkantoor}}, initieelVerantwoordelijkZorgkantoor: {{eq: $initieelVerantwoordelijkZorgkantoor}}}}) {{ bsn }} }}"
            ),
            "is `$initieelVerantwoordelijkZorgkantoor` where the template has `$wlzIndicatieID`",
        ),
        (
            format!(
                "query($wlzIndicatieID: UUID!, $initieelVerantwoordelijkZorgkantoor: String) {{ wlzIndicatie({WHERE}) {{ bsn }} }}"
            ),
            "variable `$initieelVerantwoordelijkZorgkantoor` is declared `String`, the template declares `String!`",
        ),
        (
            format!("query({VARS}, $extra: Int) {{ wlzIndicatie({WHERE}) {{ bsn }} }}"),
            "variable `$extra` is not in the template",
        ),
        (
            format!("mutation({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn }} }}"),
            "the request is a mutation, the template a query",
        ),
        (
            format!("query({VARS}) {{ wlzIndicatie({WHERE}) @custom {{ bsn }} }}"),
            "directives on `wlzIndicatie` differ",
        ),
    ];
    for (request, expected) in cases {
        let described = misfit(&template, &request, both());
        assert!(
            described.contains(expected),
            "{request}\n  expected: {expected}\n  got: {described}"
        );
    }
    let described = misfit(
        &template,
        &format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn }} }}"),
        json!({"wlzIndicatieID": "x"}),
    );
    assert!(
        described.contains("missing required variable `$initieelVerantwoordelijkZorgkantoor`"),
        "{described}"
    );
    let described = misfit(
        &template,
        &format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ bsn }} }}"),
        json!({"wlzIndicatieID": "x", "initieelVerantwoordelijkZorgkantoor": null}),
    );
    assert!(
        described.contains("missing required variable"),
        "{described}"
    );
}

#[test]
fn many_problems_are_counted_not_all_listed() {
    let described = misfit(
        &qir(),
        &format!("query({VARS}) {{ wlzIndicatie({WHERE}) {{ a b c d e }} }}"),
        both(),
    );
    assert!(described.ends_with("(and 2 more)"), "{described}");
}

#[test]
fn every_reference_template_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy/iwlz");
    let mut seen = 0;
    for sub in ["indicatie", "bemiddeling"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let template =
                Template::parse("t", &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Each template, sent as it is, fits itself within the default limits.
            let request = read_default(&query(&text, json!({}))).unwrap();
            let variables: serde_json::Map<String, serde_json::Value> = template
                .variables
                .iter()
                .map(|d| (d.name.clone(), json!("v")))
                .collect();
            let request = GraphqlRequest {
                variables,
                parsed: request.parsed,
            };
            template
                .check(&request)
                .unwrap_or_else(|m| panic!("{}: {}", path.display(), m.describe()));
            seen += 1;
        }
    }
    assert_eq!(seen, 11);
}

#[test]
fn templates_must_declare_what_they_use() {
    let error = Template::parse("t", "query { a(x: $undeclared) { b } }").unwrap_err();
    assert!(
        error.contains("`$undeclared` without declaring it"),
        "{error}"
    );
    let error = Template::parse("t", "query A { a } query B { b }").unwrap_err();
    assert!(error.contains("exactly one operation"), "{error}");
    let error = Template::parse("t", "query { a(").unwrap_err();
    assert!(error.contains("line 1"), "{error}");
}

/// The fast reader must read every document it answers for exactly as apollo-parser does
/// (`plain.rs`): on the iWlz templates, on odd but valid documents, and on thousands of
/// damaged copies of a template, where it mostly gives up and must never disagree.
#[test]
fn the_fast_reader_agrees_with_apollo_parser() {
    let limits = Limits::default();
    let agree = |text: &str| -> bool {
        let fast = plain::read(text, &limits);
        if let Some(document) = &fast {
            assert_eq!(
                Ok(document),
                apollo::read(text, &limits).as_ref(),
                "the readers disagree on {text:?}"
            );
        }
        fast.is_some()
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy/iwlz");
    let mut templates = Vec::new();
    for sub in ["indicatie", "bemiddeling"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            templates.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
    }
    for text in &templates {
        assert!(
            agree(text),
            "the fast reader gave up on a template:\n{text}"
        );
    }
    let plain = [
        "{a}",
        "query { a }",
        "query query { query mutation fragment on true: false null }",
        "# a comment\n{ a # another\r\n, b,,, c\t}",
        r#"query Q($a: Int = 1, $b: [String!]! = ["x", "y"], $c: Boolean) @d(x: 1) {
            a(x: $a, y: {b: [1, 2.5e3, -0, "s\n\"\\\/\b\f\r\t", []], c: null, d: ENUM, e: true})
              @skip(if: false) @other {
              ...F
              ... on T { b }
              ... @include(if: $c) { c }
              ... { d }
            }
          }
          fragment F on T @x { x: y(z: {}) }"#,
        "{ a(x: \"héllo 😀 €\", y: \"a\tb\") }",
        "{ a(x: 0, y: -1, z: 1.0, w: 1e10, v: 1E-5, u: -0.5e+3, t: 123456789012345678901234567890) }",
        "mutation M { a } subscription S { b } query { c }",
        "{ a(b: $ c) @ d ... F } fragment F on T { e }",
        "query Q($v: [[Int!]!] = [[1], [2, 3]], $w: In = {a: {b: [{c: ENUM}]}}) { a }",
        "{ a(z: 1, a: 2) { b(y: {d: 1, c: 2}) } }",
    ];
    for text in plain {
        assert!(agree(text), "the fast reader gave up on {text:?}");
    }
    let left_to_apollo = [
        r#"{ a(x: """block""") }"#,
        r#"{ a(x: "\u0041") }"#,
        "\u{feff}{ a }",
        "{ a\u{1} }",
        "{ a(x: 01) }",
        "{ a(x: 1.) }",
        "{ a(x: 1a) }",
        "{ a(x: 1.5e) }",
        "{ a(x: -) }",
        "{ a(x: .5) }",
        "{}",
        "{ a() }",
        "{ a { } }",
        "query Q() { a }",
        "query ($v: Int = $w) { a }",
        "query ($v: Int @d) { a }",
        "fragment on on T { a }",
        "fragment F T { a }",
        "{ ...on }",
        "{ ... }",
        "{ a } garbage",
        "{ a }}",
        "{ a",
        "query",
        "",
        "   # nothing\n",
        "type T { a: Int }",
        "schema { query: Q }",
        "extend type T { a: Int }",
        "{ a(x: 1, x: 2) }",
        "{ a(x: {y: 1, y: 2}) }",
        "{ a(x: \"unterminated) }",
        "{ a(x: \"new\nline\") }",
        "{ a | b }",
        "{ a & b }",
        "{ a(x: [1 2 3) }",
    ];
    for text in left_to_apollo {
        assert!(
            !agree(text),
            "the fast reader should leave {text:?} to apollo"
        );
    }
    // Damaged copies: insert a token or drop a few bytes at pseudo-random places.
    let pieces = [
        "{", "}", "(", ")", "[", "]", ":", "$", "@", "...", "\"", "\\", "#", ",", " ", "\n", "0",
        "-", ".", "e", "on", "!", "=", "\"\"\"", "é", "\t", "\u{1}", "1.5", "fragment", "query",
        "\\u", "a:", "null",
    ];
    let base = templates.iter().min_by_key(|t| t.len()).unwrap().clone();
    let mut seed: u64 = 0x5eed;
    let mut next = |bound: usize| -> usize {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % bound.max(1)
    };
    let mut answered = 0;
    for round in 0..1500 {
        let mut text = base.clone();
        for _ in 0..=(round % 3) {
            let mut at = next(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if next(2) == 0 {
                text.insert_str(at, pieces[next(pieces.len())]);
            } else {
                let mut end = (at + 1 + next(3)).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, "");
            }
        }
        if agree(&text) {
            answered += 1;
        }
    }
    // Both kinds of outcome are exercised.
    assert!(
        answered > 100 && answered < 1400,
        "answered {answered} of 1500"
    );
}

/// QIR-0001-ZKi with a comment numbered `i`: a text of its own, read through `cache`.
fn read_numbered_qir(i: usize, cache: &DocumentCache) -> GraphqlRequest {
    let text = format!("{QIR}\n# {i}");
    read(&query(&text, json!({})), &Limits::default(), Some(cache)).unwrap()
}

/// The cache is bounded by memory, not by text alone: a parsed template weighs several
/// times its text, and the cache's total stays within its capacity.
#[test]
fn the_cache_weighs_the_parsed_operation_too() {
    let parsed = read_default(&query(QIR, json!({}))).unwrap();
    let weight = parsed.approximate_bytes();
    assert!(
        weight > 3 * QIR.len(),
        "{weight} bytes for {} of text",
        QIR.len()
    );

    let capacity = 64 * 1024;
    let cache = DocumentCache::new(capacity);
    for i in 0..40 {
        for _ in 0..2 {
            read_numbered_qir(i, &cache);
        }
    }
    let kept = cache.settled();
    assert!(kept.weighted_size() <= capacity, "{}", kept.weighted_size());
    assert!(kept.entry_count() > 0);
    assert!(kept.entry_count() < 40 * QIR.len() as u64 / capacity + 1);
}

/// Texts sent once are parsed but not kept, so a client sending ever new texts neither
/// pays for caching them nor pushes out the texts that are sent again and again.
#[test]
fn texts_sent_once_do_not_push_out_texts_sent_again() {
    let limits = Limits::default();
    let cache = DocumentCache::new(64 * 1024);
    let again = || read(&query(QIR, json!({})), &limits, Some(&cache)).unwrap();
    again();
    let kept = again();
    for i in 0..300 {
        read_numbered_qir(i, &cache);
    }
    assert_eq!(cache.settled().entry_count(), 1);
    assert!(Arc::ptr_eq(&kept.parsed, &again().parsed), "pushed out");
}
