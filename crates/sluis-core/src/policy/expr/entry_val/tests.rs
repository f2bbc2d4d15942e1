use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::policy::expr::{Expr, json_val};

fn fields(sources: &[&str]) -> EntryFields {
    let mut fields = EntryFields::default();
    for source in sources {
        fields.merge(&Expr::compile(source).unwrap().entry_fields);
    }
    fields
}

fn some(pairs: &[(&str, Option<&[&str]>)]) -> EntryFields {
    EntryFields::Some(
        pairs
            .iter()
            .map(|(top, sub)| {
                (
                    top.to_string(),
                    sub.map(|s| s.iter().map(|f| f.to_string()).collect()),
                )
            })
            .collect(),
    )
}

#[test]
fn the_members_a_rule_selects_are_found() {
    assert_eq!(
        fields(&[
            "has(entry.resource.meta) && entry.resource.meta.security.exists(s, s.code == 'R')",
            "entry.resource.identifier.exists(i, i.value == request.context['ura'])",
        ]),
        some(&[("resource", Some(&["identifier", "meta"]))])
    );
    // A member used whole, or `entry` itself: all of what it names.
    assert_eq!(
        fields(&["entry.resource.size() > 0", "entry.resource.id == 'x'"]),
        some(&[("resource", None)])
    );
    assert_eq!(fields(&["entry.fullUrl != ''"]), some(&[("fullUrl", None)]));
    assert_eq!(fields(&["size(entry) > 0"]), EntryFields::All);
    assert_eq!(fields(&["entry['resource'].id == 'x'"]), EntryFields::All);
    assert_eq!(fields(&["[entry][0].resource.id == 'x'"]), EntryFields::All);
    assert_eq!(fields(&["response.status == 200"]), some(&[]));
}

/// What a rule sees of the entry built with only what it reads must be what it saw of
/// the whole entry converted.
fn same_answer(rule: &str, entry: &Value) {
    let expr = Expr::compile(rule).unwrap();
    let request = crate::request::AccessRequest {
        context: [("ura".to_string(), "1".to_string())].into_iter().collect(),
        ..Default::default()
    };
    let vars = crate::policy::expr::Vars::new(&request, None, expr.request_fields);
    let response = json_val(&json!({"status": 200, "bundle_type": "searchset"}));
    let whole = EntryValue::of_val(json_val(entry));
    let text = entry.to_string();
    let read = read_entry(&text, &expr.entry_fields).unwrap();
    let of_value = entry_of_value(entry, &expr.entry_fields);
    let expected = expr.eval_bool_for_entry(&vars, &whole, &*response);
    for entry in [&read, &of_value] {
        // Through the fast path on the tree, and by the interpreter on its CEL value.
        let value = EntryValue::new(&entry.tree);
        assert_eq!(
            expr.eval_bool_for_entry(&vars, &value, &*response),
            expected,
            "{rule} on {text}"
        );
        let converted = EntryValue::of_val(entry.tree.to_val());
        assert_eq!(
            expr.eval_bool_for_entry(&vars, &converted, &*response),
            expected,
            "{rule} on {text}"
        );
    }
}

const RULES: [&str; 16] = [
    "has(entry.resource.meta) && has(entry.resource.meta.security) && entry.resource.meta.security.exists(s, s.code == 'R')",
    "entry.resource.identifier.exists(i, i.system == 'ura' && i.value == request.context['ura'])",
    "entry.resource.resourceType == 'Organization'",
    "entry.resource.active",
    "entry.resource.count > 2",
    "has(entry.resource.partOf)",
    "entry.fullUrl.startsWith('https://')",
    "size(entry.resource) > 3",
    // Objects in lists are shared by their copies (`SharedMap`): still maps in every way.
    "{'code': 'R'} in entry.resource.meta.security",
    "entry.resource.identifier[0] == {'system': 'ura', 'value': '1'}",
    "{'system': 'ura', 'value': '1'} == entry.resource.identifier[0]",
    "entry.resource.identifier.filter(i, true) == entry.resource.identifier",
    "entry.resource.identifier.map(i, i).exists(i, i.value == '1' && type(i) == map)",
    "entry.resource.identifier.all(i, size(i) > 1 && 'value' in i)",
    "entry.resource.identifier.exists(i, i.exists(k, k == 'system'))",
    "[entry.resource.identifier[0]][0].value == request.context['ura']",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zR1 é\"\\\\]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("meta".to_string()),
                    Just("security".to_string()),
                    Just("code".to_string()),
                    Just("identifier".to_string()),
                    Just("system".to_string()),
                    Just("value".to_string()),
                    Just("active".to_string()),
                    Just("count".to_string()),
                    Just("partOf".to_string()),
                    "[a-z]{1,3}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn rules_see_the_same_on_known_entries() {
    let entries = [
        json!({"fullUrl": "https://x/Organization/1", "resource": {"resourceType": "Organization", "id": "1",
            "meta": {"security": [{"code": "R"}]}, "identifier": [{"system": "ura", "value": "1"}],
            "active": true, "count": 3, "name": "é\"x"}}),
        json!({"resource": {"resourceType": "Organization", "identifier": [{"system": "ura", "value": "2"}]}}),
        json!({"resource": {"resourceType": "Organization", "meta": {}, "identifier": "ura|1"}}),
        json!({"resource": []}),
        json!({"resource": {"resourceType": "Location", "meta": {"security": "R"}, "count": -4}}),
        json!({}),
        json!({"resource": {"identifier": [{"value": "1", "system": "ura"}, {"system": "x"}, "ura", [1]],
            "meta": {"security": [{"code": "R"}, {"code": "R", "system": "s"}]}}}),
    ];
    for entry in &entries {
        for rule in RULES {
            same_answer(rule, entry);
        }
    }
}

proptest! {
    #[test]
    fn rules_see_the_same_on_any_entry(resource in any_json(), url in any_json()) {
        let entry = json!({"fullUrl": url, "resource": resource, "search": {"mode": "match"}});
        for rule in RULES {
            same_answer(rule, &entry);
        }
    }

    /// Reading checks all of the text as `strict_json` does, also what is not built.
    #[test]
    fn reading_refuses_what_strict_json_refuses(text in "[{}\\[\\]\"a:,1 ]{0,24}") {
        let strict = crate::json::strict_json(&text);
        let read = read_entry(&text, &EntryFields::default());
        match strict {
            Ok(_) => prop_assert!(read.is_ok(), "{}", text),
            Err(crate::json::StrictError::Duplicate(_)) => {
                prop_assert_eq!(read.err(), Some(ReadError::Duplicate), "{}", text)
            }
            Err(crate::json::StrictError::Syntax) => {
                prop_assert_eq!(read.err(), Some(ReadError::Syntax), "{}", text)
            }
        }
    }
}

#[test]
fn a_member_named_twice_is_refused_where_nothing_is_built() {
    let fields = fields(&["entry.resource.id == 'x'"]);
    for text in [
        r#"{"search":{"mode":"match","mode":"include"},"resource":{"id":"x"}}"#,
        r#"{"resource":{"id":"x","name":[{"a":1,"a":2}]}}"#,
        r#"{"resource":{"id":"x"},"resource":{"id":"y"}}"#,
        r#"{"other":[[{"b":1,"\u0062":2}]],"resource":{"id":"x"}}"#,
    ] {
        assert_eq!(
            read_entry(text, &fields).err(),
            Some(ReadError::Duplicate),
            "{text}"
        );
    }
    let many: String = (0..40).map(|i| format!(r#""k{i}":1,"#)).collect();
    let text = format!(r#"{{"resource":{{{many}"k7":2}}}}"#);
    assert_eq!(read_entry(&text, &fields).err(), Some(ReadError::Duplicate));
}

/// A tree's values nested, as `serde_json` would hold them.
#[derive(Debug, PartialEq)]
enum Nested<'t> {
    Scalar(Scalar<'t>),
    List(Vec<Nested<'t>>),
    Object(Vec<(&'t str, Nested<'t>)>),
}

/// `tree` nested, each object's members in name order (a `serde_json` object's order).
fn sorted(tree: TreeRef<'_>) -> Nested<'_> {
    match tree.kind() {
        None => Nested::Scalar(Scalar::Null),
        Some(Kind::Scalar(scalar)) => Nested::Scalar(scalar.clone()),
        Some(Kind::List(first)) => Nested::List(
            tree.children(*first)
                .map(|(_, item)| sorted(item))
                .collect(),
        ),
        Some(Kind::Object(first)) => {
            let mut members: Vec<_> = tree
                .children(*first)
                .map(|(name, value)| (name, sorted(value)))
                .collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            Nested::Object(members)
        }
    }
}

#[test]
fn an_entry_is_one_list_of_values_linked_in_reading_order() {
    let text = r#"{"resource":{"resourceType":"Organization","id":"x",
        "identifier":[{"system":"s","value":"1"},{"system":"t","value":"2"}],"meta":{}},
        "search":{"mode":"match","score":1},"fullUrl":"u"}"#;
    let fields = some(&[
        ("resource", Some(&["identifier", "meta", "resourceType"])),
        ("search", Some(&["mode"])),
    ]);
    let read = read_entry(text, &fields).unwrap();
    // entry, resource, resourceType, identifier, 2 × (object, system, value), meta,
    // search, mode: nothing unselected, nothing twice.
    assert_eq!(read.tree.nodes.len(), 13);
    let root = read.tree.root();
    let resource = root.member("resource").unwrap();
    assert_eq!(
        resource.member("resourceType").unwrap().text(),
        Some("Organization")
    );
    assert!(resource.member("id").is_none());
    assert!(resource.member("meta").unwrap().is_object());
    assert!(resource.member("meta").unwrap().member("x").is_none());
    let values: Vec<_> = resource
        .member("identifier")
        .unwrap()
        .items()
        .unwrap()
        .map(|i| i.member("value").unwrap().text().unwrap())
        .collect();
    assert_eq!(values, ["1", "2"]);
    assert!(resource.items().is_none());
    assert!(
        resource
            .member("resourceType")
            .unwrap()
            .member("x")
            .is_none()
    );
    assert_eq!(
        root.member("search")
            .unwrap()
            .member("mode")
            .unwrap()
            .text(),
        Some("match")
    );
    assert!(root.member("search").unwrap().member("score").is_none());
    // The same from the parsed value.
    let value: Value = serde_json::from_str(text).unwrap();
    let of_value = entry_of_value(&value, &fields);
    assert_eq!(sorted(read.tree.root()), sorted(of_value.tree.root()));
    // Nothing selected: the entry, empty.
    let read = read_entry(text, &EntryFields::default()).unwrap();
    assert_eq!(sorted(read.tree.root()), Nested::Object(Vec::new()));
}

/// Member selections over the names `json_text` generates (decoded: `ab` is also spelt
/// `a\u0062`, `é` also `\u00e9`).
fn any_fields() -> impl Strategy<Value = EntryFields> {
    prop_oneof![
        Just(EntryFields::All),
        Just(EntryFields::default()),
        Just(some(&[("a", None)])),
        Just(some(&[("ab", Some(&["a", "é"])), ("b", None)])),
        Just(some(&[("meta", Some(&["security"])), ("é", Some(&["ab"]))])),
        Just(some(&[("a\"", None), ("😀", Some(&["x", "id"]))])),
    ]
}

/// Reading `text` gives the tree `strict_json`'s value gives of `fields`, or the same
/// fault.
fn tree_as_strict(text: &str, fields: &EntryFields) -> Result<(), TestCaseError> {
    let read = read_entry(text, fields);
    match crate::json::strict_json(text) {
        Ok(value) => {
            let expected = entry_of_value(&value, fields);
            match &read {
                Ok(read) => prop_assert_eq!(
                    sorted(read.tree.root()),
                    sorted(expected.tree.root()),
                    "{}",
                    text
                ),
                Err(e) => prop_assert!(false, "refused ({:?}): {}", e, text),
            }
        }
        Err(crate::json::StrictError::Duplicate(_)) => {
            prop_assert_eq!(read.err(), Some(ReadError::Duplicate), "{}", text)
        }
        Err(crate::json::StrictError::Syntax) => {
            prop_assert_eq!(read.err(), Some(ReadError::Syntax), "{}", text)
        }
    }
    Ok(())
}

proptest! {
    /// The tree read from a text is what reading the text whole with `strict_json` and
    /// keeping the selected members gives (escapes, unicode, repeated names, nesting),
    /// and a text `strict_json` refuses is refused for the same fault.
    #[test]
    fn the_tree_read_is_what_strict_json_reads(
        text in prop_oneof![
            crate::json::reader::tests::json_text(),
            crate::json::reader::tests::json_text_mostly_unique(),
        ],
        fields in any_fields(),
    ) {
        let object = format!("{{\"a\":{text},\"ab\":{text},\"\\u00e9\":[{text}]}}");
        tree_as_strict(&text, &fields)?;
        tree_as_strict(&object, &fields)?;
    }

    /// Broken and deeply nested texts are refused as `strict_json` refuses them.
    #[test]
    fn mangled_entries_are_refused_as_strict_json_refuses_them(
        text in crate::json::reader::tests::json_text(),
        cut in any::<prop::sample::Index>(),
        piece in "[{}\\[\\],:\"\\\\ 0-9a-z.eE+-]{0,3}",
        depth in prop_oneof![Just(0usize), 120usize..130],
        fields in any_fields(),
    ) {
        let mangled = crate::json::reader::tests::splice(&text, cut, &piece);
        let nested = format!("{}{mangled}{}", "{\"a\":[".repeat(depth / 2), "]}".repeat(depth / 2));
        tree_as_strict(&format!("{{\"a\":{nested}}}"), &fields)?;
    }
}

proptest! {
    /// A Bundle's entries read one after another into one list ([`BundleTrees`]) are each
    /// the tree read alone gives, whatever was read before them (an entry refused halfway
    /// included: it leaves nothing behind).
    #[test]
    fn entries_in_one_list_are_each_the_tree_read_alone(
        entries in proptest::collection::vec(
            prop_oneof![
                4 => crate::json::reader::tests::json_text_mostly_unique()
                    .prop_map(|text| format!("{{\"resource\":{text},\"search\":{{\"mode\":\"match\"}}}}")),
                1 => crate::json::reader::tests::json_text(),
            ],
            0..6,
        ),
        fields in any_fields(),
    ) {
        let mut trees = BundleTrees::new();
        let mut read = Vec::new();
        for text in &entries {
            let mut reader = Reader::new(text);
            let at = trees.read_entry(&mut reader, &fields).and_then(|at| reader.end().map(|()| at));
            let alone = read_entry(text, &fields);
            prop_assert_eq!(at.as_ref().err(), alone.as_ref().err(), "{}", text);
            if let (Ok(at), Ok(alone)) = (at, alone) {
                read.push((at, alone));
            }
        }
        let tree = trees.finish();
        for (at, alone) in &read {
            prop_assert_eq!(sorted(tree.entry(*at)), sorted(alone.tree.root()));
        }
    }
}
