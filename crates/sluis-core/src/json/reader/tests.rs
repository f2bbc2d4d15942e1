use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::json::{StrictError, strict_json};

/// What `strict_json` makes of `text`: the value, or which fault.
fn strict(text: &str) -> Result<Value, ReadError> {
    strict_json(text).map_err(|e| match e {
        StrictError::Duplicate(_) => ReadError::Duplicate,
        StrictError::Syntax => ReadError::Syntax,
    })
}

fn checked(text: &str) -> Result<(), ReadError> {
    let mut reader = Reader::new(text);
    reader.check_value()?;
    reader.end()
}

fn built(text: &str) -> Result<Value, ReadError> {
    let mut reader = Reader::new(text);
    let value = reader.json_value()?;
    reader.end().map(|()| value)
}

/// The reader refuses what `strict_json` refuses, for the same first fault, and builds
/// the same value.
fn same_as_strict(text: &str) {
    let expected = strict(text);
    assert_eq!(built(text), expected, "built: {text:?}");
    assert_eq!(checked(text), expected.map(|_| ()), "checked: {text:?}");
}

#[test]
fn members_named_twice_are_refused_at_any_depth_and_escaped_names_decoded() {
    for text in [
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"b":{"c":[{"d":1,"d":1}]}}"#,
        r#"[[[{"x":{},"y":1,"x":null}]]]"#,
        r#"{"ab":1,"a\u0062":2}"#,
        r#"{"\u0061b":1,"a\u0062":2}"#,
        r#"{"é":1,"\u00e9":2}"#,
        r#"{"\ud83d\ude00":1,"😀":2}"#,
    ] {
        assert_eq!(checked(text), Err(ReadError::Duplicate), "{text}");
        same_as_strict(text);
    }
    // The same name in different objects, or nested, is no repetition.
    for text in [
        r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#,
        r#"[{"a":1},{"a":2}]"#,
        r#"{"a\"":1,"a":2,"a\\":3}"#,
    ] {
        assert_eq!(checked(text), Ok(()), "{text}");
        same_as_strict(text);
    }
    // Past the names compared one by one, a set takes over.
    let many: String = (0..40)
        .map(|i| format!(r#""k{i}":{{"k{i}":1}},"#))
        .collect();
    for (last, expected) in [("k39", Err(ReadError::Duplicate)), ("k40", Ok(()))] {
        let text = format!(r#"{{{many}"{last}":2}}"#);
        assert_eq!(checked(&text), expected);
        same_as_strict(&text);
    }
}

#[test]
fn names_as_spelt_and_names_decoded_are_one_set_per_object() {
    // A plain name before, after and between escaped ones; past 16 names too.
    let plain: String = (0..20).map(|i| format!(r#""p{i}":1,"#)).collect();
    for (text, expected) in [
        (
            r#"{"x":1,"ab":2,"a\u0062":3}"#.to_string(),
            Err(ReadError::Duplicate),
        ),
        (
            r#"{"a\u0062":1,"x":2,"ab":3}"#.to_string(),
            Err(ReadError::Duplicate),
        ),
        (
            r#"{"a\u0062":1,"x":2,"a\u0063":3,"ac":4}"#.to_string(),
            Err(ReadError::Duplicate),
        ),
        (
            r#"{"a\u0062":1,"x":2,"abc":3,"y":{"ab":1}}"#.to_string(),
            Ok(()),
        ),
        (
            format!(r#"{{{plain}"p\u0031":2}}"#),
            Err(ReadError::Duplicate),
        ),
        (
            format!(r#"{{"p\u0031":2,{plain}"z":1}}"#),
            Err(ReadError::Duplicate),
        ),
        (format!(r#"{{"p\u0031":2,"q":{{{plain}"z":1}}}}"#), Ok(())),
        (
            r#"{"":1,"\u0000":2,"\"":3,"":4}"#.to_string(),
            Err(ReadError::Duplicate),
        ),
        (r#"{"":1,"\u0000":2,"\"":3}"#.to_string(), Ok(())),
    ] {
        assert_eq!(checked(&text), expected, "{text}");
        same_as_strict(&text);
    }
}

#[test]
fn what_serde_json_refuses_is_refused() {
    for text in [
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "[,1]",
        r#"{"a":1,}"#,
        r#"{,"a":1}"#,
        r#"{"a" 1}"#,
        r#"{"a":1 "b":2}"#,
        "[1 2]",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "1e400",
        "-1e400",
        "tru",
        "nul",
        "nullx",
        "truefalse",
        r#""a"#,
        "\"\u{1}\"",
        r#""\x""#,
        r#""\u12""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800x""#,
        r#"{1:2}"#,
        "[] []",
        "{}}",
        "[\"a\"]]",
        "\u{feff}{}",
    ] {
        assert!(checked(text).is_err(), "{text:?}");
        same_as_strict(text);
    }
    for text in [
        "0",
        "-0",
        "-0.0",
        "1e5",
        "1E-5",
        "123456789012345678901234567890",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1.7976931348623157e308",
        "0e999999",
        "1e-400",
        r#""\ud83d\ude00""#,
        r#""\u00e9\n\t\/\b\f\r\"\\""#,
        "\"\u{7f}é\"",
        " [ 1 , { \"a\" : [ ] } ] ",
        "true",
        "false",
        "null",
        "{}",
        "[]",
    ] {
        assert_eq!(checked(text), Ok(()), "{text:?}");
        same_as_strict(text);
    }
}

#[test]
fn nesting_stops_where_serde_json_stops() {
    for depth in [1, 126, 127, 128, 129, 300] {
        for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
            let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            same_as_strict(&text);
        }
    }
    assert!(checked(&format!("{}{}", "[".repeat(127), "]".repeat(127))).is_ok());
    assert!(checked(&format!("{}{}", "[".repeat(128), "]".repeat(128))).is_err());
}

#[test]
fn a_fresh_depth_reads_a_value_as_a_text_of_its_own() {
    // An entry of a list read as if it were the whole text: 127 levels of its own.
    let inner = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let text = format!("[{inner}]");
    let mut reader = Reader::new(&text);
    let mut array = reader.begin_array().unwrap();
    assert!(reader.next_item(&mut array).unwrap());
    let outer = reader.fresh_depth();
    reader.check_value().unwrap();
    reader.restore_depth(outer);
    assert!(!reader.next_item(&mut array).unwrap());
    reader.end().unwrap();
}

#[test]
fn reset_forgets_the_names_of_what_was_refused() {
    // The entry's names must not count against its parent's once it is passed over.
    let text = r#"{"list":[{"x":1,"x":2}],"x":3}"#;
    let mut reader = Reader::new(text);
    let mut object = reader.begin_object().unwrap();
    assert_eq!(
        reader.next_name(&mut object).unwrap().as_deref(),
        Some("list")
    );
    let mut array = reader.begin_array().unwrap();
    assert!(reader.next_item(&mut array).unwrap());
    let mark = reader.mark();
    assert_eq!(reader.check_value(), Err(ReadError::Duplicate));
    reader.reset(mark);
    reader.skip_value().unwrap();
    assert_eq!(
        reader.slice(mark.pos, reader.position()),
        r#"{"x":1,"x":2}"#
    );
    assert!(!reader.next_item(&mut array).unwrap());
    assert_eq!(reader.next_name(&mut object).unwrap().as_deref(), Some("x"));
    reader.check_value().unwrap();
    assert!(reader.next_name(&mut object).unwrap().is_none());
    reader.end().unwrap();
}

#[test]
fn skipping_checks_syntax_alone_as_serde_json_ignores_a_value() {
    for (text, ok) in [
        (r#"{"a":1,"a":2} "#, true),
        (r#""\ud800""#, true),
        ("1e400", true),
        (r#"{"a":1,}"#, false),
        (r#""\x""#, false),
        ("[1 2]", false),
    ] {
        let mut reader = Reader::new(text);
        assert_eq!(reader.skip_value().is_ok(), ok, "{text}");
        if ok {
            reader.end().unwrap();
        }
    }
}

/// JSON text with names that repeat, also in escaped spellings, and random spacing.
pub(crate) fn json_text() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just(r#""a""#),
        Just(r#""b""#),
        Just(r#""ab""#),
        Just(r#""a\u0062""#),
        Just(r#""\u0061b""#),
        Just(r#""é""#),
        Just(r#""\u00e9""#),
        Just(r#""a\"""#),
        Just(r#""\ud83d\ude00""#),
    ];
    let space = prop_oneof![Just(""), Just(""), Just(" "), Just("\n\t ")];
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
        "\"([a-z é]|\\\\[nt\"\\\\/]|\\\\u00[0-7][0-9a-f]|\\\\ud83d\\\\ude00){0,5}\"",
    ];
    leaf.prop_recursive(5, 48, 5, move |inner| {
        prop_oneof![
            (
                proptest::collection::vec(inner.clone(), 0..5),
                space.clone()
            )
                .prop_map(|(items, s)| format!("[{s}{}{s}]", items.join(&format!("{s},{s}")))),
            (
                proptest::collection::vec((name.clone(), inner), 0..5),
                space.clone()
            )
                .prop_map(|(members, s)| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(n, v)| format!("{n}{s}:{s}{v}"))
                        .collect();
                    format!("{{{s}{}{s}}}", members.join(","))
                }),
        ]
    })
}

/// JSON text whose objects mostly name each member once; now and then one ends with
/// `"\u0061"`, which is a second `"a"` if it has one.
pub(crate) fn json_text_mostly_unique() -> impl Strategy<Value = String> {
    const NAMES: [&str; 10] = [
        r#""a""#,
        r#""b""#,
        r#""ab""#,
        r#""é""#,
        r#""a\"""#,
        r#""\ud83d\ude00""#,
        r#""meta""#,
        r#""security""#,
        r#""id""#,
        r#""x""#,
    ];
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
        "\"([a-z é]|\\\\[nt\"\\\\/]|\\\\u00[0-7][0-9a-f]){0,5}\"",
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(","))),
            (
                proptest::sample::subsequence(NAMES.to_vec(), 0..5),
                proptest::collection::vec(inner, 5),
                proptest::bool::weighted(0.1),
            )
                .prop_map(|(names, values, again)| {
                    let mut members: Vec<String> = names
                        .iter()
                        .zip(&values)
                        .map(|(n, v)| format!("{n}:{v}"))
                        .collect();
                    if again {
                        members.push(r#""\u0061":1"#.to_string());
                    }
                    format!("{{{}}}", members.join(","))
                }),
        ]
    })
}

/// `text` with `piece` put in at `cut` (on a character boundary).
pub(crate) fn splice(text: &str, cut: prop::sample::Index, piece: &str) -> String {
    let at = cut.index(text.len() + 1);
    let (head, tail) = (0..=at)
        .rev()
        .find_map(|at| text.split_at_checked(at))
        .unwrap_or(("", text));
    format!("{head}{piece}{tail}")
}

proptest! {
    /// Names compared word by word are the same exactly when they are equal.
    #[test]
    fn same_name_is_equality(
        a in "[ab\u{e9}]{0,19}",
        b in "[ab\u{e9}]{0,19}",
        at in any::<prop::sample::Index>(),
        with in "[ab\u{e9}]",
    ) {
        prop_assert_eq!(same_name(&a, &b), a == b);
        // One character replaced: often the same length, differing at any byte.
        let mut chars: Vec<char> = a.chars().collect();
        if !chars.is_empty() {
            let i = at.index(chars.len());
            chars[i] = with.chars().next().unwrap_or('a');
        }
        let c: String = chars.into_iter().collect();
        prop_assert_eq!(same_name(&a, &c), a == c);
        prop_assert!(same_name(&a, &a.clone()));
    }

    #[test]
    fn generated_json_reads_as_strict_json_reads_it(
        text in prop_oneof![json_text(), json_text_mostly_unique()],
    ) {
        let expected = strict(&text);
        prop_assert_eq!(built(&text), expected.clone(), "{}", text);
        prop_assert_eq!(checked(&text), expected.map(|_| ()), "{}", text);
    }

    /// Broken texts: the same bytes spliced, cut and repeated.
    #[test]
    fn mangled_json_is_refused_as_strict_json_refuses_it(
        text in json_text(),
        cut in any::<prop::sample::Index>(),
        piece in "[{}\\[\\],:\"\\\\ 0-9a-z.eE+-]{0,3}",
    ) {
        let mangled = splice(&text, cut, &piece);
        let expected = strict(&mangled);
        prop_assert_eq!(built(&mangled), expected.clone(), "{}", mangled);
        prop_assert_eq!(checked(&mangled), expected.map(|_| ()), "{}", mangled);
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them(
        text in "-?[0-9]{1,24}(\\.[0-9]{0,4})?([eE][+-]?[0-9]{0,4})?",
    ) {
        same_as_strict(&text);
    }

    #[test]
    fn strings_read_as_serde_json_reads_them(
        pieces in proptest::collection::vec(prop_oneof![
            Just("a"), Just("é"), Just("\\n"), Just("\\u0041"), Just("\\ud800"), Just("\\udc00"),
            Just("\\ud83d\\ude00"), Just("\\ud83d"), Just("\\u00"), Just("\\q"), Just("\u{1}"),
            Just("\u{7f}"), Just("\\\""), Just("\\\\"), Just("\\/"), Just("\\uDBFF\\uDFFF"),
        ], 0..10),
    ) {
        let text = format!("\"{}\"", pieces.concat());
        same_as_strict(&text);
        let object = format!("{{{text}:1,\"a\":2}}");
        same_as_strict(&object);
    }
}
