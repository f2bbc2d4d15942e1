use std::sync::Arc;

use cel::Value;
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

fn key_of(set: &SourceSet, value: &Value) -> Key {
    let json = canonical(value).unwrap();
    set.key(0, &canonical_bytes(&json).unwrap())
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
    let big = Value::String(Arc::new("x".repeat(5000)));
    assert!(canonical_bytes(&canonical(&big).unwrap()).is_err());
    assert!(canonical(&Value::Bytes(Arc::new(vec![1]))).is_err());
}
