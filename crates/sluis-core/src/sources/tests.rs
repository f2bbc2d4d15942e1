use std::sync::Arc;

use cel::Value;
use cel::common::value::{CowVal, Val};
use cel::objects::{Key as CelKey, Map};
use proptest::prelude::*;

use super::*;

fn set() -> SourceSet {
    SourceSet::new(&SourceSettings::default(), Arc::default()).unwrap()
}

fn map(pairs: &[(String, String)]) -> Value {
    let map: std::collections::HashMap<CelKey, Value> = pairs
        .iter()
        .map(|(k, v)| {
            (
                CelKey::String(Arc::new(k.clone())),
                Value::String(Arc::new(v.clone())),
            )
        })
        .collect();
    Value::Map(Map { map: Arc::new(map) })
}

/// The key a rule's call with argument `value` gets: written as the interpreter holds it.
fn key_of(set: &SourceSet, value: &Value) -> Key {
    let val = Box::<dyn Val>::try_from(value.clone()).unwrap();
    let mut bytes = Vec::new();
    write_canonical(val.as_ref(), &mut bytes).unwrap();
    set.key(0, &bytes)
}

/// A CEL value of the kinds an argument or an answer holds: nested string-keyed maps and
/// lists of strings (with escapes and non-ASCII), numbers, booleans and null; sometimes
/// a map with a number key.
fn cel_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0)
        ]
        .prop_map(Value::Float),
        "[a-zé\"\\\n\u{1}/ ]{0,12}".prop_map(|s| Value::String(Arc::new(s))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(|v| Value::List(Arc::new(v))),
            (
                proptest::collection::hash_map("[a-z\"é]{0,6}", inner.clone(), 0..5),
                proptest::bool::weighted(0.1)
            )
                .prop_map(|(entries, number_key)| {
                    let mut map: std::collections::HashMap<CelKey, Value> = entries
                        .into_iter()
                        .map(|(k, v)| (CelKey::String(Arc::new(k)), v))
                        .collect();
                    if number_key {
                        map.insert(CelKey::Int(1), Value::Null);
                    }
                    Value::Map(Map { map: Arc::new(map) })
                }),
        ]
    })
}

proptest! {
    /// Written straight from the interpreter's value, an argument has the bytes (or the
    /// refusal) the long way through `cel::Value` and `serde_json::Value` gives.
    #[test]
    fn canonical_writing_matches_the_long_way(value in cel_value()) {
        let long_way = canonical(&value).and_then(|json| canonical_bytes(&json));
        let val = Box::<dyn Val>::try_from(value).unwrap();
        let mut bytes = Vec::new();
        let written = write_canonical(val.as_ref(), &mut bytes).map(|()| bytes);
        match (long_way, written) {
            (Ok(expected), Ok(bytes)) => prop_assert_eq!(expected, bytes),
            (Err(_), Err(_)) => {}
            (expected, written) => prop_assert!(false, "{expected:?} against {written:?}"),
        }
    }
}

proptest! {
    /// A map literal's fields written without building the map: the bytes (or the
    /// refusal) of the map built.
    #[test]
    fn fields_are_written_as_their_map(
        fields in proptest::collection::hash_map("[a-z\"é]{0,6}", cel_value(), 0..6),
    ) {
        let map = Value::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (CelKey::String(Arc::new(k.clone())), v.clone()))
                    .collect(),
            ),
        });
        let map = Box::<dyn Val>::try_from(map).unwrap();
        let mut expected = Vec::new();
        let expected = write_canonical(map.as_ref(), &mut expected).map(|()| expected);
        let values: Vec<(String, Box<dyn Val>)> = fields
            .into_iter()
            .map(|(k, v)| (k, Box::<dyn Val>::try_from(v).unwrap()))
            .collect();
        let mut pairs: Vec<(&str, &dyn Val)> =
            values.iter().map(|(k, v)| (k.as_str(), v.as_ref())).collect();
        let mut written = Vec::new();
        let written = write_canonical_fields(&mut pairs, &mut written).map(|()| written);
        prop_assert_eq!(expected, written);
    }
}

proptest! {
    /// Equal maps, in whatever order their entries were written, have one key; maps
    /// that differ have different keys; and the key never holds an argument in clear.
    #[test]
    fn keys_depend_on_content_only(
        pairs in proptest::collection::btree_map("[a-z]{1,8}", "[0-9]{9}", 1..6),
        other in "[0-9]{9}",
    ) {
        let set = set();
        let forward: Vec<(String, String)> = pairs.clone().into_iter().collect();
        let mut backward = forward.clone();
        backward.reverse();
        prop_assert_eq!(key_of(&set, &map(&forward)), key_of(&set, &map(&backward)));
        let mut changed = forward.clone();
        if let Some(first) = changed.first_mut() && first.1 != other {
            first.1 = other.clone();
            prop_assert_ne!(key_of(&set, &map(&forward)), key_of(&set, &map(&changed)));
        }
        let key = key_of(&set, &map(&forward));
        for (_, value) in &forward {
            let hex = hex::encode(key);
            prop_assert!(!hex.contains(value.as_str()));
        }
    }
}

#[test]
fn keys_differ_by_type_source_and_process() {
    let a = set();
    let b = set();
    let text = Value::String(Arc::new("1".into()));
    let number = Value::Int(1);
    assert_ne!(key_of(&a, &text), key_of(&a, &number));
    assert_ne!(a.key_of("a", b"x"), a.key_of("b", b"x"));
    assert_ne!(
        a.key(0, b"x"),
        b.key(0, b"x"),
        "the key is secret per process"
    );
}

#[test]
fn arguments_are_bounded_and_typed() {
    let write = |value: Value| {
        let val = Box::<dyn Val>::try_from(value).unwrap();
        write_canonical(val.as_ref(), &mut Vec::new())
    };
    let big = Value::String(Arc::new("x".repeat(5000)));
    assert!(canonical_bytes(&canonical(&big).unwrap()).is_err());
    assert_eq!(
        write(big),
        Err("arguments larger than 4096 bytes".to_owned())
    );
    let many = Value::List(Arc::new(vec![Value::Int(1); 3000]));
    assert!(write(many).is_err());
    assert!(canonical(&Value::Bytes(Arc::new(vec![1]))).is_err());
    assert_eq!(
        write(Value::Bytes(Arc::new(vec![1]))),
        Err("a bytes cannot be an argument".to_owned())
    );
}

/// Every failure kind is listed, so a removed source's error series are all forgotten.
#[test]
fn every_failure_kind_is_listed() {
    let all = [
        LookupFailure::Timeout,
        LookupFailure::Connect,
        LookupFailure::Status(503),
        LookupFailure::ContentType("application/json"),
        LookupFailure::Invalid("x"),
        LookupFailure::TooLarge,
        LookupFailure::CircuitOpen,
        LookupFailure::Busy,
        LookupFailure::Arguments(String::new()),
        LookupFailure::NoFixture(String::new()),
        LookupFailure::TooMany,
        LookupFailure::TooDeep,
        LookupFailure::Other(String::new()),
    ];
    let kinds: Vec<&str> = all.iter().map(LookupFailure::kind).collect();
    assert_eq!(kinds, LookupFailure::KINDS);
}

/// A rule reading a shared answer sees what it would see reading the answer itself:
/// fields, indexing, comprehensions, `in`, `size`, `has`, equality both ways,
/// the answer put in a list or a map, and passed to a function as a whole; the same
/// value, or the same error.
#[test]
fn a_shared_answer_reads_as_the_answer_itself() {
    let json = serde_json::json!({
        "resourceType": "Patient",
        "id": "p1",
        "active": true,
        "count": 3,
        "ratio": 0.5,
        "identifier": [
            {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "900186021"},
            {"system": "urn:other", "value": "x"}
        ],
        "nothing": null
    });
    let expressions = [
        "$A.active",
        "$A.id + '/x'",
        "$A.count * 2",
        "$A.ratio < 1.0",
        "$A['resourceType']",
        "$A.identifier.filter(i, i.system == 'http://fhir.nl/fhir/NamingSystem/bsn')[0].value",
        "$A.identifier.map(i, i.value)",
        "$A.identifier[1]",
        "$A.identifier.size()",
        "size($A)",
        "'id' in $A",
        "'missing' in $A",
        "has($A.id)",
        "has($A.missing)",
        "$A.exists(k, k == 'id')",
        "$A.nothing == null",
        "$A.all(k, k != '')",
        "$A == $S",
        "$S == $A",
        "$A != {'id': 'p1'}",
        "[$A][0].id",
        "{'x': $A}.x.id",
        "$A.identifier.exists(i, i.value == 'x')",
        "type($A) == map",
        "$A.missing",
        "$A.id.missing",
        "$A[1]",
        // An object of a list: owned after `[0]` or `filter`, shared in the answer.
        "$A.identifier[0].value",
        "$A.identifier[0]['value']",
        "$A.identifier[0].missing",
        "$A.identifier[0][1]",
        "$A.identifier[0][1.5]",
        "$A.identifier[0][[1]]",
        "$A.identifier.filter(i, true)[1].system",
        "$A.identifier.filter(i, true)[0][true]",
        "has($A.identifier[0].value)",
        "has($A.identifier[0].missing)",
        "$A.identifier[0] == {'system': 'http://fhir.nl/fhir/NamingSystem/bsn', 'value': '900186021'}",
        "{'value': 'x', 'system': 'urn:other'} in $A.identifier",
        "$A.identifier.map(i, i)[1] == $S.identifier[1]",
        "type($A.identifier[0]) == map && size($A.identifier[0]) == 2",
        "$A.identifier[0].exists(k, k == 'value') && $A.identifier[0].all(k, k != '')",
        "$A.identifier + [1]",
        "[$A.identifier[0]][0].system",
        "$A.identifier[0] + $A.identifier[1]",
    ];
    for expression in expressions {
        same_through_a_shared_answer(&json, expression).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `expression` (`$A`, `$S` standing for the answer) on `json` as the interpreter's own
/// value, and on a [`SharedAnswer`] of it, held in a variable and returned by a function.
fn same_through_a_shared_answer(json: &serde_json::Value, expression: &str) -> Result<(), String> {
    type Raw = Box<
        dyn for<'c, 'cl> Fn(
                &mut cel::FunctionContext<'c, 'cl>,
            ) -> Result<CowVal<'c, 'cl>, cel::ExecutionError>
            + Send
            + Sync,
    >;
    let value = kinds::to_cel(json).unwrap();
    let shared = SharedAnswer(Arc::new(Answer::new(value.clone(), false).unwrap()));
    let plain_text = expression.replace("$A", "a").replace("$S", "same");
    let mut plain = cel::Context::default();
    plain.add_variable_as_val("a", Box::<dyn Val>::try_from(value.clone()).unwrap());
    plain.add_variable_as_val("same", Box::<dyn Val>::try_from(value.clone()).unwrap());
    let expected = cel::Program::compile(&plain_text).unwrap().execute(&plain);
    // Held in a variable (borrowed by the interpreter).
    let mut through = cel::Context::default();
    through.add_variable_as_val("a", Box::new(shared.clone()));
    through.add_variable_as_val("same", Box::new(shared.clone()));
    let held = cel::Program::compile(&plain_text)
        .unwrap()
        .execute(&through);
    // Returned by a function, as `sources.NAME(...)` returns it (owned).
    let mut returned = cel::Context::default();
    let answer = shared.clone();
    let call: Raw = Box::new(move |_| Ok(CowVal::owned(answer.clone())));
    let _ = returned.add_function("answer", call);
    let call_text = expression
        .replace("$A", "answer()")
        .replace("$S", "answer()");
    let called = cel::Program::compile(&call_text)
        .unwrap()
        .execute(&returned);
    for (how, got) in [("held", held), ("returned", called)] {
        if got != expected {
            return Err(format!(
                "{expression} ({how}): {expected:?} against {got:?}"
            ));
        }
    }
    Ok(())
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-3i64..3).prop_map(serde_json::Value::from),
        prop::sample::select(vec!["a", "b", "x", ""]).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "x"]).prop_map(str::to_owned),
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Any answer, read by selections, indexing and comprehensions over its lists of
    /// objects: the same value or the same error through the shared answer. (Lists only
    /// are iterated: a map's keys come in the order of its table, which two copies of
    /// one map need not share, shared or not.)
    #[test]
    fn any_shared_answer_reads_as_the_answer_itself(
        a in prop::collection::vec(any_json(), 0..4),
        b in prop::collection::vec(any_json(), 0..4),
        expression in prop::sample::select(vec![
            "$A.x.filter(i, true)[0].a",
            "$A.x.filter(i, has(i.a))[0]['b']",
            "$A.x.map(i, i)[0][0]",
            "$A.x.exists(i, i.a == 'a')",
            "$A.x.all(i, 'a' in i)",
            "$A.x[0].a.b",
            "$A.x[1].x[0].a",
            "$A.a.filter(i, i.b == null).map(i, i.x)",
            "$A.x.filter(i, type(i) == map).size()",
            "$A.x == $S.x",
            "$A.x[0] == $S.a",
            "$A.x.filter(i, i == i)",
            "$A.x[0].exists(k, k == 'a')",
            "has($A.x[0].b)",
            "$A.x + $S.a",
            "$A.b in $A.x",
            "$A.x.exists(i, i == $S.b)",
        ]),
    ) {
        let json = serde_json::json!({"x": a, "a": b, "b": {"a": "x"}});
        prop_assert_eq!(same_through_a_shared_answer(&json, expression), Ok(()));
    }
}
