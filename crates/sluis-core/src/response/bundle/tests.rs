use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn parts<'a>(headers: &'a [(String, String)]) -> ResponseParts<'a> {
    ResponseParts {
        status: 200,
        headers,
        body: b"",
        from_upstream: true,
    }
}

fn h(name: &str, value: &str) -> Vec<(String, String)> {
    vec![(name.to_owned(), value.to_owned())]
}

fn bundle(entries: usize, links: &[&str]) -> Value {
    json!({
        "resourceType": "Bundle", "type": "searchset", "total": entries,
        "link": links.iter().map(|r| json!({"relation": r, "url": format!("http://fhir/Organization?page={r}")})).collect::<Vec<_>>(),
        "entry": (0..entries).map(|i| json!({
            "fullUrl": format!("http://fhir/Organization/org-{i}"),
            "resource": {"resourceType": "Organization", "id": format!("org-{i}")},
            "search": {"mode": "match"}
        })).collect::<Vec<_>>()
    })
}

mod reference;

/// Reads as the response rules do, each entry whole and strictly.
fn read_strict(body: &[u8], max: usize) -> Result<Body<'_, Value>, Unreadable> {
    read(body, max, |reader| reader.json_value())
}

/// Reads `body` as [`read_strict`] and as the reader before the one-pass one: the same
/// answer, down to which fault refused it.
fn same_as_reference(body: &[u8], max: usize) -> Result<(), TestCaseError> {
    let read = read_strict(body, max).map(|read| match read {
        Body::Bundle { members, entries } => reference::Read::Bundle {
            members,
            entries: entries
                .into_iter()
                .map(|e| (e.text.to_owned(), e.read))
                .collect(),
        },
        Body::Resource(resource) => reference::Read::Resource(resource),
    });
    prop_assert_eq!(
        read,
        reference::read(body, max),
        "{}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// Bodies near a Bundle: the members a Bundle has, now and then one twice, in any order;
/// entries that are objects or not, with names repeated at any depth, or no list at all.
fn near_bundle() -> impl Strategy<Value = String> {
    use crate::json::reader::tests::{json_text, json_text_mostly_unique};
    let resource = prop_oneof![4 => json_text_mostly_unique(), 1 => json_text()];
    let entry = prop_oneof![
        6 => resource.clone().prop_map(|resource| format!(
            r#"{{"fullUrl":"u","resource":{resource},"search":{{"mode":"match"}}}}"#
        )),
        1 => resource.prop_map(|resource| format!(r#"{{ "resource" : {resource} }}"#)),
        1 => json_text_mostly_unique(),
        // Nesting counts from the entry: 126 lists in it are read, 127 refused.
        1 => (125usize..128).prop_map(|n| format!(r#"{{"a":{}1{}}}"#, "[".repeat(n), "]".repeat(n))),
    ];
    let entries = prop_oneof![
        8 => proptest::collection::vec(entry, 0..6).prop_map(|items| format!("[{}]", items.join(","))),
        1 => json_text_mostly_unique(),
    ];
    let resource_type = prop_oneof![
        4 => Just(Some(r#""resourceType":"Bundle""#)),
        1 => Just(Some(r#""resourceType":"Patient""#)),
        1 => Just(None),
    ];
    let extra = prop_oneof![
        Just(r#""type":"searchset""#.to_string()),
        Just(r#""total":3"#.to_string()),
        Just(r#""link":[{"relation":"self","url":"x"}]"#.to_string()),
        Just(r#""resourceType":"Bundle""#.to_string()),
        json_text_mostly_unique().prop_map(|value| format!(r#""other":{value}"#)),
        json_text_mostly_unique().prop_map(|value| format!(r#""\u0074ype":{value}"#)),
    ];
    (
        resource_type,
        proptest::collection::vec(extra, 0..3),
        proptest::option::weighted(0.9, entries.clone()),
        proptest::option::weighted(0.05, entries),
    )
        .prop_flat_map(|(resource_type, extras, entries, again)| {
            let members: Vec<String> = resource_type
                .map(str::to_owned)
                .into_iter()
                .chain(extras)
                .chain(
                    entries
                        .into_iter()
                        .chain(again)
                        .map(|e| format!(r#""entry":{e}"#)),
                )
                .collect();
            Just(members).prop_shuffle()
        })
        .prop_map(|members| format!("{{{}}}", members.join(",")))
}

fn is_match(entry: &Value) -> bool {
    entry
        .pointer("/search/mode")
        .and_then(Value::as_str)
        .is_none_or(|m| m == "match")
}

fn filter_text(body: &[u8], keep: &[bool], notice: bool) -> Result<Vec<u8>, FilterError> {
    let Body::Bundle { members, entries } = read_strict(body, 1000).unwrap() else {
        panic!("not a bundle")
    };
    write_filtered(members, entries, keep, is_match, notice)
}

fn filter(value: &Value, keep: &[bool], notice: bool) -> Result<Value, FilterError> {
    let body = serde_json::to_vec(value).unwrap();
    filter_text(&body, keep, notice).map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn fhir_json_is_readable_and_other_media_or_encodings_are_not() {
    for ok in [
        "application/fhir+json",
        "application/fhir+json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/fhir+json; fhirVersion=4.0",
    ] {
        assert_eq!(
            readable_headers(&parts(&h("content-type", ok))),
            Ok(()),
            "{ok}"
        );
    }
    for bad in [
        "application/fhir+xml",
        "text/html",
        "application/json; charset=latin1",
        "",
    ] {
        assert!(
            readable_headers(&parts(&h("content-type", bad))).is_err(),
            "{bad}"
        );
    }
    let gzip = [
        h("content-type", "application/fhir+json"),
        h("content-encoding", "gzip"),
    ]
    .concat();
    assert_eq!(
        readable_headers(&parts(&gzip)),
        Err(Unreadable::Encoding("gzip".into()))
    );
}

#[test]
fn bodies_that_are_not_one_json_object_are_unreadable() {
    assert!(matches!(
        read_strict(b"<Bundle/>", 10),
        Err(Unreadable::NotJson(_))
    ));
    assert_eq!(read_strict(b"[1]", 10).err(), Some(Unreadable::NotObject));
    // A member twice: what Sluis judges must be what the client reads.
    assert!(matches!(
        read_strict(br#"{"resourceType":"Patient","id":"a","id":"b"}"#, 10),
        Err(Unreadable::NotJson(_))
    ));
    // Also inside an entry, and `entry` itself twice.
    for twice in [
        br#"{"resourceType":"Bundle","entry":[{"resource":{"id":"a","id":"b"}}]}"#.as_slice(),
        br#"{"resourceType":"Bundle","entry":[],"entry":[{"resource":{}}]}"#,
        br#"{"resourceType":"Bundle","type":"searchset","type":"document"}"#,
        br#"{"resourceType":"Patient","entry":[{"a":1,"a":2}]}"#,
    ] {
        assert_eq!(
            read_strict(twice, 10).err(),
            Some(Unreadable::NotJson("a member is named twice".into())),
            "{}",
            String::from_utf8_lossy(twice)
        );
    }
    for bad in [
        br#"{"resourceType":"Bundle","entry":{}}"#.as_slice(),
        br#"{"resourceType":"Bundle","entry":null}"#,
        br#"{"resourceType":"Bundle","entry":[{}, 1]}"#,
    ] {
        assert_eq!(read_strict(bad, 10).err(), Some(Unreadable::BadEntries));
    }
    let three = serde_json::to_vec(&bundle(3, &[])).unwrap();
    assert_eq!(
        read_strict(&three, 2).err(),
        Some(Unreadable::TooManyEntries(3, 2))
    );
    let many = serde_json::to_vec(&bundle(7, &[])).unwrap();
    assert_eq!(
        read_strict(&many, 2).err(),
        Some(Unreadable::TooManyEntries(7, 2))
    );
}

#[test]
fn a_single_page_gets_the_kept_total_and_a_paged_one_loses_total_and_last() {
    let out = filter(&bundle(4, &["self"]), &[true, false, true, false], false).unwrap();
    assert_eq!(out["total"], 2);
    assert_eq!(out["entry"].as_array().unwrap().len(), 2);
    assert_eq!(out["entry"][1]["resource"]["id"], "org-2");

    let out = filter(
        &bundle(4, &["self", "next", "last"]),
        &[true, false, true, false],
        false,
    )
    .unwrap();
    assert!(out.get("total").is_none());
    let relations: Vec<&str> = out["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["relation"].as_str().unwrap())
        .collect();
    assert_eq!(relations, ["self", "next"]);
}

#[test]
fn kept_entries_are_written_as_they_came() {
    // Member order, spacing and escapes of a kept entry are the upstream's own.
    let body = br#"{"resourceType":"Bundle","type":"searchset","total":2,"entry":[
        { "search" : {"mode":"match"}, "resource": {"resourceType":"Organization","id":"a\u0041","name":"\u00e9"} },
        {"resource":{"resourceType":"Organization","id":"b"}}]}"#;
    let out = filter_text(body, &[true, false], false).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#"{ "search" : {"mode":"match"}, "resource": {"resourceType":"Organization","id":"a\u0041","name":"\u00e9"} }"#),
        "{text}"
    );
    assert!(!text.contains(r#""b""#), "{text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["total"], 1);
}

#[test]
fn nothing_withheld_leaves_total_and_links_alone() {
    let original = bundle(2, &["self", "next", "last"]);
    assert_eq!(filter(&original, &[true, true], true).unwrap(), original);
}

#[test]
fn the_notice_is_an_operation_outcome_without_a_count() {
    let out = filter(&bundle(3, &[]), &[false, false, true], true).unwrap();
    let last = out["entry"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["resource"]["resourceType"], "OperationOutcome");
    assert_eq!(last["resource"]["issue"][0]["code"], "suppressed");
    assert_eq!(last["search"]["mode"], "outcome");
    assert!(!last.to_string().contains('2'));
    assert_eq!(out["total"], 1);
}

#[test]
fn nothing_kept_means_no_entry_member() {
    let out = filter(&bundle(2, &[]), &[false, false], false).unwrap();
    assert!(out.get("entry").is_none());
    assert_eq!(out["total"], 0);
}

#[test]
fn only_search_like_bundles_lose_entries() {
    let mut document = bundle(2, &[]);
    document["type"] = "document".into();
    assert_eq!(
        filter(&document, &[true, false], false),
        Err(FilterError::NotFilterable("document".into()))
    );
    assert!(filter(&document, &[true, true], false).is_ok());
}

proptest! {
    /// Whatever is kept, the output is a Bundle holding exactly the kept entries, and no
    /// withheld entry's id appears anywhere in it.
    #[test]
    fn filtering_never_yields_a_withheld_entry(
        keep in proptest::collection::vec(any::<bool>(), 0..40),
        links in proptest::sample::subsequence(vec!["self", "next", "previous", "last"], 0..4),
        notice in any::<bool>(),
    ) {
        let original = bundle(keep.len(), &links);
        let out = filter(&original, &keep, notice).unwrap();
        prop_assert_eq!(&out["resourceType"], "Bundle");
        let entries = out.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
        let withheld = keep.iter().any(|k| !k);
        let kept = keep.iter().filter(|k| **k).count();
        prop_assert_eq!(entries.len(), kept + usize::from(withheld && notice));
        let text = out.to_string();
        for (i, k) in keep.iter().enumerate() {
            let id = format!("\"org-{i}\"");
            prop_assert_eq!(text.contains(&id), *k, "entry {} kept={}", i, k);
        }
        if withheld {
            prop_assert!(!text.contains("page=last"));
        }
        if let Some(total) = out.get("total") {
            prop_assert_eq!(total.as_u64(), Some(kept as u64));
        }
    }

    #[test]
    fn bodies_read_as_the_reader_before_read_them(body in near_bundle(), max in 0usize..5) {
        same_as_reference(body.as_bytes(), max)?;
    }

    /// Broken bodies: the same bytes spliced with a piece of JSON syntax somewhere.
    #[test]
    fn broken_bodies_are_refused_as_the_reader_before_refused_them(
        body in near_bundle(),
        max in 0usize..5,
        cut in any::<prop::sample::Index>(),
        piece in "[{}\\[\\],:\"\\\\ 0-9a-z.eE+-]{0,3}",
    ) {
        let broken = crate::json::reader::tests::splice(&body, cut, &piece);
        same_as_reference(broken.as_bytes(), max)?;
    }

    /// Bytes that are not UTF-8, or only just are (an overlong form, an encoded surrogate,
    /// a code point past U+10FFFF, a sequence cut short, four-byte characters), anywhere in
    /// a body: read, or refused, as the standard library's check has it.
    #[test]
    fn bodies_with_any_bytes_spliced_in_are_read_as_the_reference_reads_them(
        body in near_bundle(),
        max in 0usize..5,
        cut in any::<prop::sample::Index>(),
        piece in prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..5),
            Just(vec![0xC0, 0xAF]),
            Just(vec![0xED, 0xA0, 0x80]),
            Just(vec![0xF4, 0x90, 0x80, 0x80]),
            Just(vec![0xE2, 0x82]),
            Just("é".as_bytes().to_vec()),
            Just("😀".as_bytes().to_vec()),
        ],
    ) {
        let mut bytes = body.into_bytes();
        let at = cut.index(bytes.len() + 1);
        bytes.splice(at..at, piece);
        same_as_reference(&bytes, max)?;
    }

    #[test]
    fn reading_any_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = read_strict(&body, 10);
    }
}
