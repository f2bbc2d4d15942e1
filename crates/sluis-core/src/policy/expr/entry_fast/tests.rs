//! The entry fast path against the interpreter: generated response rules of every shape
//! [`EntryCond::of`] recognises (and some it does not), over generated entries, must give
//! what the interpreter alone gives, errors included.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

use super::EntryCond;
use crate::policy::expr::entry_val::{EntryValue, read_entry};
use crate::policy::expr::fast::tests::literal;
use crate::policy::expr::{EntryScope, Expr, Vars, json_val};
use crate::request::AccessRequest;

/// Strings that entries and literals share often enough to compare equal.
const TEXTS: [&str; 7] = ["R", "1", "ura", "", "Organization", "searchset", "é\"\\"];

/// Paths to maps in the generated entries (usually), for `has`.
const MAPS: [&str; 5] = [
    "entry",
    "entry.resource",
    "entry.resource.meta",
    "entry['search']",
    "response",
];

/// Paths to strings (usually).
const TEXT_PATHS: [&str; 6] = [
    "entry.resource.resourceType",
    "entry.resource['id']",
    "entry.search.mode",
    "response.bundle_type",
    "request.context['ura']",
    "request.context.ura",
];

/// Paths to lists (usually).
const LISTS: [&str; 3] = [
    "entry.resource.meta.security",
    "entry.resource.identifier",
    "entry.resource.active",
];

/// Members of the items of the entry's lists.
const ITEM_FIELDS: [&str; 4] = ["code", "system", "value", "q"];

/// One of `paths`, or (`items`) a member of a loop variable of `vars`, or (`whole`) one.
fn path(
    paths: &'static [&'static str],
    vars: &[&'static str],
    items: bool,
    whole: bool,
) -> BoxedStrategy<String> {
    let mut options = vec![
        proptest::sample::select(paths)
            .prop_map(str::to_owned)
            .boxed(),
    ];
    for &var in vars {
        if items {
            options.push(
                proptest::sample::select(&ITEM_FIELDS[..])
                    .prop_map(move |f| format!("{var}.{f}"))
                    .boxed(),
            );
        }
        if whole {
            options.push(Just(var.to_owned()).boxed());
        }
    }
    proptest::strategy::Union::new(options).boxed()
}

fn term(vars: &[&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        6 => path(&TEXT_PATHS, vars, true, false),
        4 => proptest::sample::select(&TEXTS[..]).prop_map(literal),
        1 => (proptest::sample::select(&TEXTS[..]), path(&TEXT_PATHS, vars, true, false))
            .prop_map(|(t, p)| format!("{} + {p}", literal(t))),
        // Not strings: the interpreter decides.
        1 => proptest::sample::select(&["1", "200", "true", "null", "[]", "entry.resource"][..]).prop_map(str::to_owned),
    ]
    .boxed()
}

/// A condition, `vars` being the loop variables in scope, nested `depth` deep at most.
fn cond(vars: Vec<&'static str>, depth: u32) -> BoxedStrategy<String> {
    let fields: Vec<&str> = [
        "resource",
        "meta",
        "security",
        "search",
        "bundle_type",
        "id",
    ]
    .into_iter()
    .chain(ITEM_FIELDS)
    .collect();
    let leaf = prop_oneof![
        1 => proptest::sample::select(&["true", "false"][..]).prop_map(str::to_owned),
        3 => (path(&MAPS, &vars, false, true), proptest::sample::select(fields))
            .prop_map(|(p, f)| format!("has({p}.{f})")),
        4 => (term(&vars), term(&vars)).prop_map(|(l, r)| format!("{l} == {r}")),
        2 => (term(&vars), term(&vars)).prop_map(|(l, r)| format!("{l} != {r}")),
        2 => (
            term(&vars),
            proptest::collection::vec(proptest::sample::select(&TEXTS[..]), 0..3)
        )
            .prop_map(|(t, list)| {
                let list: Vec<String> = list.into_iter().map(literal).collect();
                format!("{t} in [{}]", list.join(", "))
            }),
        // Shapes not recognised, inside recognised ones.
        1 => path(&LISTS, &vars, false, false).prop_map(|p| format!("size({p}) > 1")),
    ]
    .boxed();
    if depth == 0 {
        return leaf;
    }
    let var = ["x", "y", "entry"][vars.len().min(2)];
    let mut inner_vars = vars.clone();
    inner_vars.push(var);
    let inner = cond(vars.clone(), depth - 1);
    let within = cond(inner_vars, depth - 1);
    prop_oneof![
        4 => leaf,
        1 => inner.clone().prop_map(|c| format!("!({c})")),
        2 => (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("({l} && {r})")),
        2 => (inner.clone(), inner).prop_map(|(l, r)| format!("({l} || {r})")),
        2 => (path(&LISTS, &vars, false, false), within.clone()).prop_map(move |(p, c)| format!("{p}.exists({var}, {c})")),
        1 => (path(&LISTS, &vars, false, false), within).prop_map(move |(p, c)| format!("{p}.all({var}, {c})")),
    ]
    .boxed()
}

/// A value that is mostly of the kind the paths expect, sometimes not.
fn odd() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..3).prop_map(Value::from),
        (-2i64..0).prop_map(Value::from),
        Just(Value::from(1.5)),
        Just(json!({})),
        Just(json!([])),
    ]
    .boxed()
}

fn text() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => proptest::sample::select(&TEXTS[..]).prop_map(Value::from),
        1 => odd(),
    ]
    .boxed()
}

/// An object of some of `fields`, each made by `value`.
fn object(fields: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    proptest::collection::vec((proptest::sample::select(fields), value), 0..5)
        .prop_map(|members| {
            Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            )
        })
        .boxed()
}

fn list(item: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![
        6 => proptest::collection::vec(item, 0..4).prop_map(Value::from),
        1 => odd(),
    ]
    .boxed()
}

/// An entry shaped like a FHIR one, with members missing or of other kinds.
fn any_entry() -> BoxedStrategy<Value> {
    let item = prop_oneof![
        6 => object(&ITEM_FIELDS, text()),
        1 => odd(),
        1 => text(),
    ]
    .boxed();
    let meta = prop_oneof![
        5 => object(&["security", "lastUpdated"], list(item.clone())),
        1 => odd(),
    ]
    .boxed();
    let resource = (
        text(),
        meta,
        list(item),
        text(),
        any::<bool>(),
        proptest::collection::vec(any::<bool>(), 5),
    )
        .prop_map(|(kind, meta, identifier, id, active, drop)| {
            let mut resource = serde_json::Map::new();
            for (keep, (name, value)) in drop.into_iter().zip([
                ("resourceType", kind),
                ("meta", meta),
                ("identifier", identifier),
                ("id", id),
                ("active", Value::from(active)),
            ]) {
                if !keep {
                    resource.insert(name.to_owned(), value);
                }
            }
            Value::Object(resource)
        });
    let resource = prop_oneof![6 => resource.boxed(), 1 => odd()];
    let search = prop_oneof![3 => object(&["mode"], text()), 1 => odd()];
    (resource, search, any::<bool>())
        .prop_map(|(resource, search, has_search)| {
            let mut entry = json!({"resource": resource, "fullUrl": "u"});
            if has_search {
                entry["search"] = search;
            }
            entry
        })
        .boxed()
}

/// What the rule gives on `entry` with the fast path, checked against the interpreter
/// alone on the entry as read from its text and as converted whole; whether the fast
/// path answered.
fn same_answer(rule: &str, entry: &Value, response: &Value) -> Option<bool> {
    let Ok(expr) = Expr::compile(rule) else {
        // A loop variable used outside its loop: no rule.
        return None;
    };
    let request = AccessRequest {
        context: [("ura".to_string(), "1".to_string())].into_iter().collect(),
        ..AccessRequest::default()
    };
    let vars = Vars::new(&request, None, expr.request_fields);
    let response = json_val(response);
    let text = entry.to_string();
    let read = read_entry(&text, &expr.entry_fields).expect("generated JSON reads");
    // As read (the fast path walks the tree), and converted whole (it walks CEL values).
    let read = EntryValue::new(&read.tree);
    let whole = EntryValue::of_val(json_val(entry));
    let mut fast = None;
    for entry in [&read, &whole] {
        let scoped = EntryScope {
            vars: &vars,
            entry,
            response: &*response,
        };
        let interpreted = expr.interpret_for_entry(&vars, &scoped);
        assert_eq!(
            expr.eval_bool_for_entry(&vars, entry, &*response),
            interpreted,
            "{rule} on {text}"
        );
        let answered = expr
            .entry_fast
            .as_ref()
            .and_then(|cond| cond.holds(&scoped, None));
        if let Some(answered) = answered {
            assert_eq!(Ok(answered), interpreted, "{rule} on {text}");
        }
        fast = fast.or(answered);
    }
    fast
}

/// The rules of `benches/response.rs` and `policy/care-services-mcsd.yaml`'s design.
const RULES: [&str; 6] = [
    "has(entry.resource.meta) && has(entry.resource.meta.security) \
     && entry.resource.meta.security.exists(s, s.code == 'R')",
    "entry.resource.resourceType == 'Organization' && \
     entry.resource.identifier.exists(i, i.system == 'http://fhir.nl/fhir/NamingSystem/ura' \
     && i.value == request.context['ura'])",
    "entry.resource.resourceType in ['Organization', 'Location']",
    "!has(entry.search) || entry.search.mode != 'include'",
    "response.bundle_type == 'searchset' && entry.resource.identifier.all(i, i.system != 'x')",
    "entry.resource.resourceType == 'Location' && \
     entry.resource.managingOrganization.reference == 'Organization/' + request.context.ura",
];

#[test]
fn common_rules_are_answered_without_the_interpreter() {
    let entries = [
        json!({"fullUrl": "https://x/Organization/1", "resource": {"resourceType": "Organization",
            "id": "1", "meta": {"lastUpdated": "2026", "security": [{"system": "s", "code": "R"}]},
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "1"}]},
            "search": {"mode": "match"}}),
        json!({"resource": {"resourceType": "Organization", "meta": {"lastUpdated": "2026"},
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "2"},
                {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "2"}]}}),
        json!({"resource": {"resourceType": "Location", "identifier": [],
            "managingOrganization": {"reference": "Organization/1"}}, "search": {"mode": "include"}}),
    ];
    let response = json!({"status": 200, "bundle_type": "searchset"});
    for rule in RULES {
        let expr = Expr::compile(rule).unwrap();
        assert!(expr.entry_fast.is_some(), "{rule}");
        for entry in &entries {
            assert!(
                same_answer(rule, entry, &response).is_some(),
                "{rule} on {entry}"
            );
        }
    }
    // The bench's own rules, on its kinds of entry: kept, withheld, restricted.
    let restricted = "has(entry.resource.meta) && has(entry.resource.meta.security) \
        && entry.resource.meta.security.exists(s, s.code == 'R')";
    assert_eq!(same_answer(restricted, &entries[0], &response), Some(true));
    assert_eq!(same_answer(restricted, &entries[1], &response), Some(false));
    assert_eq!(same_answer(RULES[5], &entries[2], &response), Some(true));
    assert_eq!(same_answer(RULES[5], &entries[0], &response), Some(false));
    let own = RULES[1];
    assert_eq!(same_answer(own, &entries[0], &response), Some(true));
    assert_eq!(same_answer(own, &entries[1], &response), Some(false));
}

#[test]
fn what_is_not_recognised_is_left_to_the_interpreter() {
    for rule in [
        "entry.resource.identifier.exists_one(i, i.value == '1')",
        "entry.resource.count > 2",
        "entry.fullUrl.startsWith('https://')",
        "entry.resource.identifier[0].value == '1'",
        "entry.resource.identifier.map(i, i.value).exists(v, v == '1')",
        "entry.resource.resourceType in entry.resource.types",
    ] {
        let expr = Expr::compile(rule).unwrap();
        assert_eq!(expr.entry_fast, None, "{rule}");
    }
    // Request rules have none.
    assert_eq!(
        Expr::compile("request.path == '/x'").unwrap().entry_fast,
        None
    );
    // A loop variable shadowing `entry` is the loop's.
    let shadowed =
        Expr::compile("entry.resource.identifier.exists(entry, entry.value == '1')").unwrap();
    assert!(shadowed.entry_fast.is_some());
    let entry = json!({"resource": {"identifier": [{"value": "1"}]}, "value": "2"});
    let response = json!({"status": 200});
    assert_eq!(
        same_answer(
            "entry.resource.identifier.exists(entry, entry.value == '1')",
            &entry,
            &response
        ),
        Some(true)
    );
}

#[test]
fn values_of_other_kinds_go_to_the_interpreter() {
    let response = json!({"status": 200, "bundle_type": null});
    for (rule, entry) in [
        // A missing member: CEL's error (or `false || error`'s).
        ("entry.resource.id == 'x'", json!({"resource": {}})),
        ("has(entry.resource.meta.security)", json!({"resource": {}})),
        // A number compared with a string: false in CEL, not ours to say.
        ("entry.resource.id == 'x'", json!({"resource": {"id": 1}})),
        // A map iterated: its keys.
        (
            "entry.resource.meta.exists(k, k == 'x')",
            json!({"resource": {"meta": {"x": 1}}}),
        ),
        // `has` on a list.
        (
            "has(entry.resource.identifier.x)",
            json!({"resource": {"identifier": []}}),
        ),
        ("response.bundle_type == 'searchset'", json!({})),
        // A string and a number added: CEL's error.
        (
            "'Organization/' + entry.resource.id == 'Organization/1'",
            json!({"resource": {"id": 1}}),
        ),
    ] {
        assert_eq!(
            same_answer(rule, &entry, &response),
            None,
            "{rule} on {entry}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn entry_rules_give_what_the_interpreter_gives(
        rule in cond(Vec::new(), 3),
        entry in any_entry(),
        bundle_type in text(),
    ) {
        let response = json!({"status": 200, "bundle_type": bundle_type});
        same_answer(&rule, &entry, &response);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A rule guarded by the resource type (decided once per entry, the rest evaluated
    /// alone when it holds) gives what the interpreter gives, whichever way round the
    /// guard is written and however deep the first conjunct sits.
    #[test]
    fn guarded_rules_give_what_the_interpreter_gives(
        rest in cond(Vec::new(), 2),
        more in cond(Vec::new(), 1),
        kind in proptest::sample::select(&["'Organization'", "'Location'", "''"][..]),
        shape in 0..3usize,
        entry in any_entry(),
    ) {
        let guard = "entry.resource.resourceType";
        let rule = match shape {
            0 => format!("{guard} == {kind} && ({rest})"),
            1 => format!("{kind} == {guard} && ({rest})"),
            _ => format!("({guard} == {kind} && ({rest})) && ({more})"),
        };
        let expr = Expr::compile(&rule).unwrap();
        prop_assert!(expr.entry_type.is_some(), "{}", rule);
        let response = json!({"status": 200, "bundle_type": "searchset"});
        same_answer(&rule, &entry, &response);
    }
}

#[test]
fn the_type_guard_is_the_first_conjunct_only() {
    let guard = |rule: &str| Expr::compile(rule).unwrap().entry_type;
    let org = Some("Organization".to_owned());
    assert_eq!(guard("entry.resource.resourceType == 'Organization'"), org);
    assert_eq!(
        guard("'Organization' == entry.resource.resourceType && true"),
        org
    );
    assert_eq!(
        guard("(entry.resource.resourceType == 'Organization' && true) && false"),
        org
    );
    for rule in [
        "true && entry.resource.resourceType == 'Organization'",
        "entry.resource.resourceType != 'Organization' && true",
        "entry.resource.resourceType == 'Organization' || true",
        "entry.resource.resourceType == entry.resource.id && true",
        "entry.resource.identifier.exists(entry, entry.resource.resourceType == 'x')",
        "entry.resource['resourceType'] == 'Organization' && false",
    ] {
        let expected = (rule == "entry.resource['resourceType'] == 'Organization' && false")
            .then(|| org.clone())
            .flatten();
        assert_eq!(guard(rule), expected, "{rule}");
    }
    // An Organization's rest decides; another type is false unevaluated, even where the
    // rest would fail; a type that is no string is the interpreter's.
    let rule = "entry.resource.resourceType == 'Organization' && entry.resource.id == 'x'";
    let response = json!({"status": 200});
    let org = json!({"resource": {"resourceType": "Organization", "id": "x"}});
    let location = json!({"resource": {"resourceType": "Location"}});
    let odd = json!({"resource": {"resourceType": 1, "id": "x"}});
    assert_eq!(same_answer(rule, &org, &response), Some(true));
    assert_eq!(same_answer(rule, &location, &response), Some(false));
    same_answer(rule, &odd, &response);
}

/// Objects of more members than are searched one by one are looked up by hash: the same.
#[test]
fn large_objects_are_looked_up_alike() {
    let mut resource = serde_json::Map::new();
    for i in 0..20 {
        resource.insert(format!("k{i}"), Value::from(format!("v{i}")));
    }
    let entry = json!({"resource": resource});
    let response = json!({"status": 200});
    for (rule, holds) in [
        ("has(entry.resource.k7)", true),
        ("has(entry.resource.k20)", false),
        ("entry.resource.k3 == 'v3'", true),
        ("entry.resource['k19'] != 'v19'", false),
    ] {
        assert_eq!(same_answer(rule, &entry, &response), Some(holds), "{rule}");
    }
    assert_eq!(
        same_answer("entry.resource.k20 == 'v'", &entry, &response),
        None
    );
}

/// The generated rules reach the fast path often enough for the property to mean something.
#[test]
fn generated_rules_are_often_answered_fast() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cases = (cond(Vec::new(), 3), any_entry());
    let (mut fast, mut total) = (0, 0);
    for _ in 0..500 {
        let (rule, entry) = cases.new_tree(&mut runner).expect("a case").current();
        let response = json!({"status": 200, "bundle_type": "searchset"});
        total += 1;
        fast += usize::from(same_answer(&rule, &entry, &response).is_some());
    }
    assert!(fast * 6 > total, "{fast} of {total} answered fast");
}

/// The shapes are recognised for what they are (a smoke test of [`EntryCond::of`]).
#[test]
fn shapes_are_recognised() {
    let of = |rule: &str| {
        let program = cel::Program::compile(rule).unwrap();
        EntryCond::of(&program.expression().expr)
    };
    assert_eq!(of("true"), Some(EntryCond::Bool(true)));
    assert!(matches!(of("!has(entry.x)"), Some(EntryCond::Not(_))));
    assert!(matches!(
        of("entry.resource.identifier.all(i, i.system == 'x')"),
        Some(EntryCond::Quantified { all: true, .. })
    ));
    assert!(matches!(
        of("entry.resource.identifier.exists(i, i.system == 'x')"),
        Some(EntryCond::Quantified { all: false, .. })
    ));
    assert_eq!(of("unknown.x == 'a'"), None);
}

/// The guard against an upstream's hostile `resourceType`, read from the text as sent:
/// JSON escapes are the type they spell, look-alikes and other spellings are another
/// type, a type that is no string or is missing goes to the interpreter, and a type
/// named twice is refused by the reader before any rule runs.
#[test]
fn the_type_guard_reads_hostile_resource_types_as_the_interpreter_does() {
    let rule = "entry.resource.resourceType == 'Organization' && entry.resource.id == 'x'";
    let expr = Expr::compile(rule).unwrap();
    assert!(expr.entry_type.is_some());
    let request = AccessRequest::default();
    let vars = Vars::new(&request, None, expr.request_fields);
    let response = json_val(&json!({"status": 200}));
    let decide = |text: &str| {
        let read = read_entry(text, &expr.entry_fields).expect("valid JSON reads");
        let entry = EntryValue::new(&read.tree);
        let scoped = EntryScope {
            vars: &vars,
            entry: &entry,
            response: &*response,
        };
        let fast = expr.eval_bool_for_entry(&vars, &entry, &*response);
        assert_eq!(fast, expr.interpret_for_entry(&vars, &scoped), "{text}");
        fast
    };
    let of = |kind: &str| format!(r#"{{"resource": {{"resourceType": {kind}, "id": "x"}}}}"#);
    // Escapes spell the type: its rest decides.
    assert_eq!(decide(&of(r#""Organi\u007aation""#)), Ok(true));
    assert_eq!(decide(&of(r#""\u004frganization""#)), Ok(true));
    // Another spelling is another type: false without the rest.
    for other in [
        r#""organization""#,
        r#""Organization ""#,
        r#""Organizatіon""#, // a Cyrillic і
        r#""Organization\u0000""#,
        r#""""#,
    ] {
        assert_eq!(decide(&of(other)), Ok(false), "{other}");
    }
    // No string: what the interpreter says.
    // (`decide` holds the answer to the interpreter's; which it is does not matter here.)
    for odd in ["1", "null", "true", r#"["Organization"]"#, r#"{"x": 1}"#] {
        let _ = decide(&of(odd));
    }
    let _ = decide(r#"{"resource": {"id": "x"}}"#);
    let _ = decide(r#"{"resource": "Organization"}"#);
    // Named twice: refused, whatever the order.
    for twice in [
        r#"{"resource": {"resourceType": "Location", "resourceType": "Organization", "id": "x"}}"#,
        r#"{"resource": {"resourceType": "Organization", "id": "x", "resourceType": "Location"}}"#,
    ] {
        assert!(read_entry(twice, &expr.entry_fields).is_err(), "{twice}");
    }
}
