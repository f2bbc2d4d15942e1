//! The fast paths against the interpreter on generated expressions and values: every
//! shape [`Fast::of`] and [`Cond::of`] recognise, over requests, tokens, `data` and flows
//! of random content (unicode, empty, long, missing, of other types), must give what CEL
//! gives, or an error where CEL gives one. The hand-picked cases are in `expr.rs`'s
//! tests (`fast_shapes_agree_with_cel`, `flow_quantifiers_agree_with_cel`); this test
//! looks for the ones nobody picked.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as Runner, TestRunner};

use super::super::{Data, Expr, FlowSource, RequestFields, Vars};
use crate::authn::Identity;
use crate::flows::{Flow, FlowIndex};
use crate::request::AccessRequest;

/// Stands for the loop variable in a generated condition: no generated text holds it.
const ITEM: &str = "\u{1}";

/// Strings that values and literals share often enough to compare equal.
const POOL: &[&str] = &[
    "", "a", "b", "c", "GET", "POST", "s-1", "did:a", "did:c", "p-1", "t1", "zé🙂", " ",
];

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => proptest::sample::select(&["", "a", "b"][..]).prop_map(str::to_owned),
        4 => proptest::sample::select(POOL).prop_map(str::to_owned),
        // Compiled once here: a `&str` strategy compiles its regex for every value.
        2 => regex("\\PC{0,12}"),
        1 => regex("[a-z'\"\\\\]{0,6}"),
        1 => Just("x".repeat(2_000)),
    ]
    .boxed()
}

fn regex(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .boxed()
}

/// `text` as a CEL string literal.
pub(in crate::policy::expr) fn literal(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn field() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(
        &[
            "token.issuer",
            "token.iss",
            "token.sub",
            "token.client_id",
            "request.method",
            "request.scheme",
            "request.host",
            "request.path",
            "request.protocol",
            "request.body",
            "graphql.template",
        ][..],
    )
}

/// The variables a size test or quantifier ranges over: flows, memoized flows, and
/// `data` (which may hold anything).
fn variable() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(
        &[
            "flows",
            "data",
            "flows.permitting(request)",
            "flows.covering(request)",
        ][..],
    )
}

fn condition() -> BoxedStrategy<String> {
    let list = || proptest::sample::select(&["@.scopes", "token.scopes", "token.aud"][..]);
    let string = proptest::sample::select(
        &[
            "@.id",
            "@.purpose",
            "@.custodian",
            "@.actor",
            "@.patient",
            "token.issuer",
            "token.iss",
            "token.sub",
            "token.client_id",
        ][..],
    );
    let term = prop_oneof![
        string.prop_map(str::to_owned),
        text().prop_map(|t| literal(&t))
    ];
    let size = proptest::sample::select(&["== 0", "!= 0", "> 0"][..]);
    let leaf = prop_oneof![
        (list(), any::<bool>(), size).prop_map(|(l, method, op)| if method {
            format!("{l}.size() {op}")
        } else {
            format!("size({l}) {op}")
        }),
        (list(), list(), any::<bool>()).prop_map(|(l, w, all)| format!(
            "{l}.{}({w})",
            if all { "containsAll" } else { "containsAny" }
        )),
        (text(), list()).prop_map(|(t, l)| format!("{} in {l}", literal(&t))),
        (term.clone(), term, any::<bool>())
            .prop_map(|(a, b, eq)| format!("{a} {} {b}", if eq { "==" } else { "!=" })),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
    .prop_map(|c| c.replace('@', ITEM))
    .boxed()
}

/// An expression of one of the fast shapes, possibly negated.
fn expression() -> BoxedStrategy<String> {
    let size = proptest::sample::select(&["== 0", "!= 0", "> 0"][..]);
    let shape = prop_oneof![
        field().prop_map(str::to_owned),
        any::<bool>().prop_map(|b| b.to_string()),
        (variable(), any::<bool>(), size).prop_map(|(v, method, op)| if method {
            format!("{v}.size() {op}")
        } else {
            format!("size({v}) {op}")
        }),
        (field(), text(), any::<bool>(), any::<bool>()).prop_map(|(f, t, eq, flip)| {
            let op = if eq { "==" } else { "!=" };
            if flip {
                format!("{} {op} {f}", literal(&t))
            } else {
                format!("{f} {op} {}", literal(&t))
            }
        }),
        (
            variable(),
            any::<bool>(),
            proptest::sample::select(&["f", "token", "x"][..]),
            condition()
        )
            .prop_map(|(v, all, item, cond)| format!(
                "{v}.{}({item}, {})",
                if all { "all" } else { "exists" },
                cond.replace(ITEM, item)
            )),
    ];
    (shape, 0..3usize)
        .prop_map(|(e, nots)| format!("{}{e}", "!".repeat(nots)))
        .boxed()
}

/// Any JSON value, for `data`.
fn json() -> BoxedStrategy<serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..3)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

#[derive(Debug, Clone)]
struct Case {
    source: String,
    /// Each expression is judged in several environments: compiling costs more than
    /// evaluating, and a divergence needs the right expression and the right values.
    envs: Vec<Env>,
}

/// A token's `sub`, `client_id`, `scopes` and `aud`.
type Token = (Option<String>, Option<String>, Vec<String>, Vec<String>);

/// A flow's id, whether its actor is the caller, its scopes and its patient.
type FlowSpec = (String, bool, Vec<String>, Option<String>);

#[derive(Debug, Clone)]
struct Env {
    /// Method, host, body, protocol; whether the path is the flows' resource.
    request: (String, String, String, String, bool),
    token: Option<Token>,
    data: Option<serde_json::Value>,
    /// The caller's flows (`None`: the policy reads none): id, actor, scopes, patient.
    flows: Option<Vec<FlowSpec>>,
    template: Option<Option<String>>,
}

fn case() -> impl Strategy<Value = Case> {
    (expression(), proptest::collection::vec(env(), 1..6))
        .prop_map(|(source, envs)| Case { source, envs })
}

fn env() -> impl Strategy<Value = Env> {
    let strings = || proptest::collection::vec(text(), 0..3);
    let request = (text(), text(), text(), text(), any::<bool>());
    let token = proptest::option::weighted(
        0.8,
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            strings(),
            strings(),
        ),
    );
    let flow = (
        proptest::sample::select(&["t1", "t2", "t3"][..]).prop_map(str::to_owned),
        any::<bool>(),
        strings(),
        proptest::option::of(text()),
    );
    let flows = proptest::option::weighted(0.8, proptest::collection::vec(flow, 0..4));
    (
        request,
        token,
        proptest::option::of(json()),
        flows,
        proptest::option::of(proptest::option::of(text())),
    )
        .prop_map(|(request, token, data, flows, template)| Env {
            request,
            token,
            data,
            flows,
            template,
        })
}

/// The fast path's and the interpreter's answer to `source` (compiled twice, `direct`
/// and `interpreted`) in `env`; `None` where the environment cannot be built.
fn both(
    direct: &Expr,
    interpreted: &Expr,
    env: &Env,
) -> Option<(Result<cel::Value, String>, Result<cel::Value, String>)> {
    let (method, host, body, protocol, fhir) = env.request.clone();
    let request = AccessRequest {
        method,
        host,
        body,
        protocol,
        path: if fhir {
            "/fhir/Patient/123"
        } else {
            "/elsewhere"
        }
        .into(),
        ..Default::default()
    };
    let identity = env.token.as_ref().map(|(sub, client_id, scopes, aud)| {
        let mut identity = Identity::for_tests("iwlz", "https://idp", sub.as_deref());
        identity.client_id = client_id.clone();
        identity.scopes = scopes.clone();
        identity.aud = aud.clone();
        identity
    });
    let data = match &env.data {
        Some(json) => Some(Data::from_yaml(serde_yaml_ng::to_value(json).ok()?).ok()?),
        None => None,
    };
    let flows: Option<Vec<Flow>> = env.flows.as_ref().map(|flows| {
        flows
            .iter()
            .filter_map(|(id, ours, scopes, patient)| {
                Flow::from_json(serde_json::json!({
                    "id": id, "purpose": "eOverdracht", "custodian": "did:c",
                    "actor": if *ours { "did:a" } else { "did:b" },
                    "patient": patient, "scopes": scopes,
                    "resources": [{"path": "Patient/123", "operations": ["read"]}],
                }))
                .ok()
            })
            .collect()
    });
    let index = FlowIndex::from_flows(flows.iter().flatten());
    let actor = Expr::compile("'did:a'").ok()?;
    let base: Arc<str> = Arc::from("/fhir");
    let graphql_request = {
        let mut request = AccessRequest {
            method: "POST".into(),
            body: r#"{"query": "{ a }"}"#.into(),
            ..Default::default()
        };
        request
            .headers
            .insert("content-type".into(), "application/json".into());
        request
    };
    let graphql = match env.template {
        Some(_) => Some(
            crate::graphql::read(&graphql_request, &crate::graphql::Limits::default(), None)
                .ok()?,
        ),
        None => None,
    };
    let vars = || {
        let vars = Vars::new(&request, identity.as_ref(), RequestFields::ALL)
            .with_data(data.as_ref())
            .with_flows(flows.as_ref().map(|_| FlowSource {
                index: &index,
                actor: &actor,
                base_path: &base,
                purposes: &[],
            }))
            .with_graphql(graphql.as_ref(), direct.graphql_fields);
        if let Some(Some(template)) = &env.template {
            vars.set_graphql_template(Arc::from(template.as_str()));
        }
        vars
    };
    Some((direct.eval(&vars()), interpreted.eval(&vars())))
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let Ok(direct) = Expr::compile(&case.source) else {
        return Ok(());
    };
    if direct.fast.is_none() {
        return Ok(());
    }
    let Ok(mut interpreted) = Expr::compile(&case.source) else {
        return Ok(());
    };
    interpreted.fast = None;
    for env in &case.envs {
        if let Some((fast, cel)) = both(&direct, &interpreted, env) {
            match (&fast, &cel) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{} in {:?}", case.source, env),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{}: fast {fast:?}, cel {cel:?}", case.source),
            }
        }
    }
    Ok(())
}

/// A thousand generated expressions, each in up to five environments, a run (about
/// twenty seconds in a debug build).
#[test]
fn fast_paths_agree_with_the_interpreter() {
    let mut runner = TestRunner::new(Runner {
        cases: 1_000,
        failure_persistence: None,
        ..Runner::default()
    });
    let result = runner.run(&case(), |case| check(&case));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Most generated expressions are of the fast shapes, or the property tests little.
#[test]
fn the_generator_makes_fast_shapes() {
    let mut runner = TestRunner::deterministic();
    let strategy = expression();
    let mut fast = 0;
    for _ in 0..500 {
        let source = strategy.new_tree(&mut runner).unwrap().current();
        if Expr::compile(&source).is_ok_and(|e| e.fast.is_some()) {
            fast += 1;
        }
    }
    assert!(fast > 300, "only {fast} of 500 are fast shapes");
}

/// The FHIR and context shapes (`request.fhir.type == 'X'`, `request.fhir.patient.id ==
/// null`, `'k' in request.context`, and `&&` opened by one of them) against the
/// interpreter, over FHIR requests of every interaction and contexts with and without the
/// key: the same value, or the same error (the fast path only ever answers false for an
/// `&&`, and leaves the rest to the interpreter).
mod fhir_shapes {
    use super::*;

    const TARGETS: &[&str] = &[
        "/fhir/Patient?_id=p1&_include=Patient:general-practitioner",
        "/fhir/Patient/p1",
        "/fhir/Patient/p1/_history/2",
        "/fhir/Patient/p1/Observation?code=a",
        "/fhir/Observation/$lastn?patient=Patient/p1&category=a,b",
        "/fhir/Observation?patient=p1&patient=p2",
        "/fhir/Coverage?patient=p1",
        "/fhir/$everything",
        "/fhir/metadata",
        "/fhir",
        "/elsewhere",
    ];

    const CONTEXTS: &[&[(&str, &str)]] = &[&[], &[("patient_bsn", "1")], &[("x", "")]];

    fn operand() -> BoxedStrategy<String> {
        let field = proptest::sample::select(
            &[
                "request.fhir.type",
                "request.fhir.interaction",
                "request.fhir.operation",
                "request.fhir.id",
                "request.fhir.version_id",
                "request.fhir.version",
                "request.fhir.summary",
                "request.fhir.count",
                "request.fhir.include",
                "request.fhir.patient",
                "request.fhir.patient.id",
                "request.fhir.patient.bsn",
                "request.fhir.patient.missing",
                "request.fhir.compartment.type",
                "request.fhir.type.x",
                "request.fhir.missing",
            ][..],
        );
        let value = prop_oneof![
            proptest::sample::select(
                &[
                    "'Patient'",
                    "'Observation'",
                    "'search-type'",
                    "'read'",
                    "'lastn'",
                    "'p1'",
                    "'R4'",
                    "''",
                    "null",
                    "1",
                    "['a']",
                ][..]
            )
            .prop_map(str::to_owned),
            text().prop_map(|t| literal(&t)),
        ];
        let comparison =
            (field, value, any::<bool>(), any::<bool>()).prop_map(|(f, v, eq, flip)| {
                let op = if eq { "==" } else { "!=" };
                if flip {
                    format!("{v} {op} {f}")
                } else {
                    format!("{f} {op} {v}")
                }
            });
        let context = proptest::sample::select(&["patient_bsn", "x", ""][..])
            .prop_map(|key| format!("'{key}' in request.context"));
        prop_oneof![3 => comparison, 1 => context].boxed()
    }

    /// `a && b && ...`, grouped and negated at random; the rest of a conjunction is
    /// anything (an error, a look-up the test has no sources for, a non-bool).
    fn expression() -> BoxedStrategy<String> {
        let rest = proptest::sample::select(
            &[
                "true",
                "false",
                "request.fhir.hasOnly(['patient'])",
                "request.context.missing == 'x'",
                "sources.nothing({'a': 1}).b",
                "1",
                "request.fhir.patient.id.size() > 0",
            ][..],
        );
        let conjunction = (
            operand(),
            proptest::collection::vec(prop_oneof![operand(), rest.prop_map(str::to_owned)], 0..3),
        )
            .prop_map(|(first, rest)| {
                std::iter::once(first)
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join(" && ")
            });
        (conjunction, any::<bool>(), any::<bool>(), operand())
            .prop_map(|(c, not, nest, other)| match (not, nest) {
                (true, _) => format!("!({c})"),
                (false, true) => format!("({c}) && {other}"),
                (false, false) => c,
            })
            .boxed()
    }

    fn run(expr: &Expr, target: &str, context: &[(&str, &str)]) -> Result<cel::Value, String> {
        let mut request = AccessRequest {
            method: "GET".into(),
            ..Default::default()
        };
        request.set_target(target);
        for (key, value) in context {
            request.context.insert((*key).into(), (*value).into());
        }
        let parsed = crate::fhir::parse(
            &request,
            "/fhir",
            crate::fhir::FhirVersion::R4,
            &crate::fhir::FhirLimits::default(),
        )
        .ok()
        .map(Arc::new);
        let vars = Vars::new(&request, None, RequestFields::ALL).with_fhir(parsed);
        expr.eval(&vars)
    }

    proptest! {
        #![proptest_config(Runner { cases: 300, failure_persistence: None, ..Runner::default() })]
        #[test]
        fn fhir_and_context_shapes_agree_with_the_interpreter(
            source in expression(),
            target in proptest::sample::select(TARGETS),
            context in proptest::sample::select(CONTEXTS),
        ) {
            let Ok(direct) = Expr::compile(&source) else {
                return Ok(());
            };
            let mut interpreted = Expr::compile(&source).unwrap();
            interpreted.fast = None;
            prop_assert_eq!(
                run(&direct, target, context),
                run(&interpreted, target, context),
                "{}", source
            );
        }
    }

    #[test]
    fn the_use_case_rules_open_with_fast_shapes() {
        for source in [
            "request.fhir.patient.id == null",
            "'patient_bsn' in request.context && request.context.patient_bsn != ''",
            "request.fhir.type == 'Patient' && request.fhir.interaction == 'search-type' \
             && request.fhir.hasOnly(['_id'])",
            "request.fhir.type == 'Observation' && request.fhir.operation == 'lastn' \
             && request.fhir.param('code') == [['x']]",
        ] {
            let expr = Expr::compile(source).unwrap();
            assert!(expr.fast.is_some(), "{source}");
        }
        // A false first test decides; a true one leaves the rest to the interpreter.
        let expr = Expr::compile("request.fhir.type == 'Patient' && 1").unwrap();
        assert_eq!(
            run(&expr, "/fhir/Coverage?patient=p1", &[]),
            Ok(cel::Value::Bool(false))
        );
        assert!(run(&expr, "/fhir/Patient/p1", &[]).is_err());
    }
}
