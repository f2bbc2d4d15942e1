//! `sources.NAME({...})` with a map literal is evaluated without building the map
//! (`@source_fields`): the same look-up, answer and errors as with the map built.

use std::sync::Arc;

use crate::request::AccessRequest;
use crate::sources::{Fixture, FixtureAnswer, Lookups, Scope, SourceSet};

use super::{Expr, Vars};

/// A set with one JSON API source, `s`.
fn source_set() -> Arc<SourceSet> {
    let settings: crate::sources::settings::SourceSettings =
        crate::sources::settings::SourceSettings {
            sources: vec![
                serde_yaml_ng::from_str(
                    "name: s\nkind: http\nurl: http://127.0.0.1:9/x\nallow_insecure_http: true\n",
                )
                .unwrap(),
            ],
            ..Default::default()
        };
    Arc::new(SourceSet::new(&settings, Arc::default()).unwrap())
}

/// What evaluating `source` gives, with a fixture answering only `{"a": [1, "two"],
/// "b": "x", "c": {"z": null}}`: its first pass (the look-up wanted), the look-up
/// fetched, the second pass, and the look-ups as explain reports them.
fn run(
    source: &str,
) -> (
    Result<cel::Value, String>,
    Result<cel::Value, String>,
    String,
) {
    let expr = Expr::compile(source).unwrap();
    let fixtures: Arc<[Fixture]> = Arc::from(vec![Fixture {
        source: "s".into(),
        args: Some(serde_json::json!({"a": [1, "two"], "b": "x", "c": {"z": null}})),
        answer: FixtureAnswer::Value(serde_json::json!({
            "decision": "Permit",
            "identifier": [{"system": "bsn", "value": "v1"}, {"system": "other", "value": "v2"}]
        })),
    }]);
    let lookups = Arc::new(Lookups::new(source_set(), None, None, Some(fixtures)));
    let mut request = AccessRequest::default();
    request.set_target("/fhir/Patient/x");
    request.context.insert("b".into(), "x".into());
    let vars = Vars::new(&request, None, expr.request_fields);
    let first = {
        let _scope = Scope::enter(Some(lookups.clone()));
        expr.eval(&vars)
    };
    let wanted = lookups.take_wanted();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(lookups.fetch_all(wanted));
    let second = {
        let _scope = Scope::enter(Some(lookups.clone()));
        expr.eval(&vars)
    };
    let report = lookups
        .report()
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {:?}",
                l.source, l.args, l.cache, l.outcome, l.value
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (first, second, report)
}

/// The error texts without the expression they quote.
fn bare(result: Result<cel::Value, String>) -> Result<cel::Value, String> {
    result.map_err(|e| {
        e.split_once("`: ")
            .map_or(e.clone(), |(_, rest)| rest.to_owned())
    })
}

#[test]
fn a_map_literal_argument_asks_what_the_built_map_asks() {
    // Each argument map once as a literal (rewritten) and once through `dyn` (built).
    let long = format!("{{'a': '{}'}}", "x".repeat(5000));
    let arguments = [
        "{'b': request.context.b, 'a': [1, 'two'], 'c': {'z': null}}",
        "{'c': {'z': null}, 'a': [1, 'two'], 'b': 'x'}",
        "{'a': [1, 'two'], 'b': 'y', 'c': {'z': null}}",
        "{'a': [1, 'two'], 'b': 'x'}",
        "{'a': [1, 'two'], 'b': 'x', 'c': {'z': null}, 'd': request.context.missing}",
        "{'a': 1 / 0, 'b': request.context.missing}",
        "{'b': request.context.missing, 'a': 1 / 0}",
        "{'a': b'bytes'}",
        &long,
        "{'a': 'é\"\\\\\\n'}",
        "{}",
    ];
    let arguments = arguments.iter().map(|a| a.to_string());
    for argument in arguments {
        for read in [
            "",
            ".decision",
            ".identifier.filter(i, i.system == 'bsn')[0].value",
        ] {
            let literal = format!("sources.s({argument}){read}");
            let built = format!("sources.s(dyn({argument})){read}");
            let (first, second, report) = run(&literal);
            let (first_built, second_built, report_built) = run(&built);
            assert_eq!(bare(first), bare(first_built), "{literal}: first pass");
            assert_eq!(bare(second), bare(second_built), "{literal}: second pass");
            assert_eq!(report, report_built, "{literal}: look-ups");
        }
    }
    // The fixture's own arguments reach it, whatever order the literal names them in.
    let (first, second, report) =
        run("sources.s({'c': {'z': null}, 'b': 'x', 'a': [1, 'two']}).decision");
    assert!(first.is_err_and(|e| e.ends_with("source `s`: not fetched yet")));
    assert_eq!(second, Ok(cel::Value::String(Arc::new("Permit".into()))));
    assert_eq!(
        report,
        r#"s {"a":[1,"two"],"b":"x","c":{"z":null}} fixture ok Some("{\"decision\":\"Permit\",\"identifier\":[{\"system\":\"bsn\",\"value\":\"v1\"},{\"system\":\"other\",\"value\":\"v2\"}]}")"#
    );
}

#[test]
fn only_literal_distinct_names_are_written_as_fields() {
    let rewritten = |source: &str| {
        let expr = Expr::compile(source).unwrap();
        format!("{:?}", expr.tree).contains(super::SOURCE_FIELDS)
    };
    assert!(rewritten("sources.s({'a': 1, 'b': request.path})"));
    assert!(rewritten("sources.s({})"));
    assert!(rewritten("sources.s()"), "no argument is an empty map");
    assert!(!rewritten("sources.s({'a': 1, 'a': 2})"));
    assert!(!rewritten("sources.s({request.path: 1})"));
    assert!(!rewritten("sources.s({1: 1})"));
    assert!(!rewritten("sources.s(dyn({'a': 1}))"));
}
