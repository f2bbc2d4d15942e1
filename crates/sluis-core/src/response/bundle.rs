//! FHIR answers read for judging and written back filtered.
//!
//! A body is *readable* when it is JSON (`application/fhir+json` or `application/json`,
//! utf-8, no `content-encoding` other than `identity`), strictly so (no member named
//! twice: what Sluis judged must be what the client reads) and an object: a Bundle, whose
//! `entry[].resource` are judged one by one, or a single resource. Anything else is
//! [`Unreadable`], and the policy says whether that passes (by default it is denied).
//!
//! Each entry is read once, by the caller's entry reader (the response rules build only
//! the members they read, `policy::expr::entry_val`), and a kept entry is written back
//! as the upstream's own bytes: nothing is re-serialised but the Bundle's own members.
//!
//! Filtering keeps the Bundle valid and tells no more than the kept entries: `total`
//! becomes the number of kept `match` entries on a single page and is removed on a paged
//! one (the true total is unknown); the `last` link goes (its offset tells the unfiltered
//! count), `self`/`first`/`next`/`previous` stay (they come back through the same proxy,
//! filtered page by page). Only `searchset`, `collection` and `history` Bundles are
//! filtered: removing an entry from a `document` or a `transaction-response` breaks what
//! the rest says about it, so such a Bundle with a withheld entry is denied whole.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ResponseParts;

/// Why a body cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("content type `{0}` is not FHIR JSON")]
    ContentType(String),
    #[error("content encoding `{0}` cannot be read")]
    Encoding(String),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("the Bundle has {0} entries, more than {1}")]
    TooManyEntries(usize, usize),
    #[error("`entry` is not a list of objects")]
    BadEntries,
}

/// Why [`read`]'s entry reader refused an entry's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    /// A member is named twice.
    Duplicate,
    /// Not JSON.
    Syntax,
}

/// A body read for judging.
#[derive(Debug)]
pub enum Body<'a, T> {
    /// A Bundle: its members but `entry`, and its entries, each as sent and as the
    /// entry reader read it.
    Bundle {
        members: Map<String, Value>,
        entries: Vec<Entry<'a, T>>,
    },
    /// One resource; judged as the entry `{"resource": ...}`.
    Resource(Value),
}

/// One entry of a Bundle.
#[derive(Debug)]
pub struct Entry<'a, T> {
    /// Its text as sent: a kept entry is written back unchanged.
    pub text: &'a RawValue,
    /// What the entry reader made of it.
    pub read: T,
}

/// Whether the headers allow reading the body at all (checked before it arrives).
pub fn readable_headers(parts: &ResponseParts<'_>) -> Result<(), Unreadable> {
    if let Some(encoding) = parts.header("content-encoding") {
        let encoding = encoding.trim();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(Unreadable::Encoding(encoding.to_owned()));
        }
    }
    let content_type = parts.header("content-type").unwrap_or("");
    let mut pieces = content_type.split(';').map(str::trim);
    let media = pieces.next().unwrap_or("").to_ascii_lowercase();
    let charset_ok = pieces.all(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix("charset=") {
            Some(charset) => matches!(charset.trim_matches('"'), "utf-8" | "utf8"),
            // fhirVersion and other parameters do not change how it is read.
            None => true,
        }
    });
    if !(media == "application/fhir+json" || media == "application/json") || !charset_ok {
        return Err(Unreadable::ContentType(content_type.to_owned()));
    }
    Ok(())
}

/// Reads a body (headers already checked) within `max_entries`; `read_entry` reads each
/// entry's text (an object), and must refuse a member named twice anywhere in it as
/// [`crate::json::strict_json`] does: the Bundle's own members are checked here, the
/// entries' insides by it, each byte once.
pub fn read<'a, T>(
    body: &'a [u8],
    max_entries: usize,
    mut read_entry: impl FnMut(&'a str) -> Result<T, EntryError>,
) -> Result<Body<'a, T>, Unreadable> {
    let duplicate = || Unreadable::NotJson("a member is named twice".into());
    let text = std::str::from_utf8(body).map_err(|_| Unreadable::NotJson("not utf-8".into()))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let top = Top { max_entries }
        .deserialize(&mut deserializer)
        .and_then(|top| deserializer.end().map(|()| top))
        .map_err(|e| {
            // The name is the upstream's data: not echoed.
            if e.is_data() && e.to_string().starts_with(DUPLICATE) {
                duplicate()
            } else {
                Unreadable::NotJson("syntax".into())
            }
        })?;
    let Some(TopObject {
        mut members,
        entries,
    }) = top
    else {
        return Err(Unreadable::NotObject);
    };
    if members.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        if let Some(entries) = entries {
            let entry = crate::json::strict_json(entries.text.get()).map_err(|e| match e {
                crate::json::StrictError::Duplicate(_) => duplicate(),
                crate::json::StrictError::Syntax => Unreadable::NotJson("syntax".into()),
            })?;
            members.insert("entry".into(), entry);
        }
        return Ok(Body::Resource(Value::Object(members)));
    }
    let entries = match entries {
        None => Vec::new(),
        Some(Entries {
            list: Some((list, count)),
            ..
        }) => {
            if count > max_entries {
                return Err(Unreadable::TooManyEntries(count, max_entries));
            }
            list
        }
        Some(_) => return Err(Unreadable::BadEntries),
    };
    if !entries.iter().all(|e| e.get().starts_with('{')) {
        return Err(Unreadable::BadEntries);
    }
    entries
        .into_iter()
        .map(|text| match read_entry(text.get()) {
            Ok(read) => Ok(Entry { text, read }),
            Err(EntryError::Duplicate) => Err(duplicate()),
            Err(EntryError::Syntax) => Err(Unreadable::NotJson("syntax".into())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|entries| Body::Bundle { members, entries })
}

const DUPLICATE: &str = "duplicate key `";

/// The top level of a body: an object's members, `entry` apart as text.
struct Top {
    max_entries: usize,
}

struct TopObject<'a> {
    members: Map<String, Value>,
    entries: Option<Entries<'a>>,
}

/// The `entry` member: its text, and when it is a list its items' texts (no more than one
/// past the most entries) and their number.
struct Entries<'a> {
    text: &'a RawValue,
    list: Option<(Vec<&'a RawValue>, usize)>,
}

impl<'de> DeserializeSeed<'de> for Top {
    type Value = Option<TopObject<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top {
    type Value = Option<TopObject<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Checked all the same: a member named twice inside is refused as such.
        while seq.next_element::<crate::json::StrictJson>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut members = Map::new();
        let mut entries: Option<Entries<'de>> = None;
        while let Some(name) = access.next_key::<String>()? {
            if members.contains_key(&name) || (name == "entry" && entries.is_some()) {
                return Err(de::Error::custom(format!("{DUPLICATE}{name}`")));
            }
            if name == "entry" {
                let text: &'de RawValue = access.next_value()?;
                let list = list_of(text, self.max_entries);
                entries = Some(Entries { text, list });
                continue;
            }
            let crate::json::StrictJson(value) = access.next_value()?;
            members.insert(name, value);
        }
        Ok(Some(TopObject { members, entries }))
    }
}

/// The items of a JSON list's text, at most `max + 1` of them kept, and how many there
/// are; `None` when it is not a list. The text is JSON already (read as a `RawValue`).
fn list_of(text: &RawValue, max: usize) -> Option<(Vec<&RawValue>, usize)> {
    struct Items(usize);
    impl<'de> Visitor<'de> for Items {
        type Value = (Vec<&'de RawValue>, usize);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while items.len() <= self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(item) => items.push(item),
                    None => {
                        let count = items.len();
                        return Ok((items, count));
                    }
                }
            }
            // More than the most: counted, not kept.
            let mut count = items.len();
            while seq.next_element::<IgnoredAny>()?.is_some() {
                count += 1;
            }
            Ok((items, count))
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text.get());
    deserializer.deserialize_seq(Items(max)).ok()
}

/// Why a filtered Bundle cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a `{0}` Bundle cannot lose entries without breaking it")]
    NotFilterable(String),
}

/// The Bundle with only the entries `keep` marks, made consistent (see the module doc);
/// with `notice`, an OperationOutcome entry says that some were withheld. `matched`
/// tells a `match` entry (one without `search.mode` counts) from an `include` or
/// `outcome` one. Kept entries are written as they came, byte for byte.
pub fn write_filtered<T>(
    mut members: Map<String, Value>,
    entries: Vec<Entry<'_, T>>,
    keep: &[bool],
    matched: impl Fn(&T) -> bool,
    notice: bool,
) -> Result<Vec<u8>, FilterError> {
    let withheld = keep.iter().any(|k| !k);
    if withheld {
        let kind = members.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "searchset" | "collection" | "history") {
            return Err(FilterError::NotFilterable(kind.to_owned()));
        }
    }
    let kept: Vec<Entry<'_, T>> = entries
        .into_iter()
        .zip(keep.iter().copied().chain(std::iter::repeat(false)))
        .filter_map(|(entry, keep)| keep.then_some(entry))
        .collect();
    if withheld {
        let mut paged = false;
        if let Some(Value::Array(links)) = members.get_mut("link") {
            let relation = |l: &Value| l.get("relation").and_then(Value::as_str).map(str::to_owned);
            paged = links
                .iter()
                .any(|l| matches!(relation(l).as_deref(), Some("next" | "previous" | "prev")));
            links.retain(|l| relation(l).as_deref() != Some("last"));
        }
        if members.contains_key("total") {
            if paged {
                members.remove("total");
            } else {
                let matches = kept.iter().filter(|e| matched(&e.read)).count();
                members.insert("total".into(), Value::from(matches));
            }
        }
    }
    let mut items: Vec<&RawValue> = kept.iter().map(|e| e.text).collect();
    // Writing a Value cannot fail (its keys are strings).
    let outcome = (withheld && notice)
        .then(|| {
            serde_json::value::to_raw_value(&serde_json::json!({
                "resource": {"resourceType": "OperationOutcome", "issue": [{
                    "severity": "information", "code": "suppressed",
                    "diagnostics": "some entries were withheld by policy"}]},
                "search": {"mode": "outcome"}
            }))
            .ok()
        })
        .flatten();
    items.extend(outcome.as_deref());
    Ok(serde_json::to_vec(&Written {
        members: &members,
        entries: &items,
    })
    .unwrap_or_default())
}

/// A Bundle's members and its entries' texts, written as one object.
struct Written<'w, 'a> {
    members: &'w Map<String, Value>,
    entries: &'w [&'a RawValue],
}

impl serde::Serialize for Written<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.members {
            map.serialize_entry(name, value)?;
        }
        // FHIR has no empty lists: a Bundle with nothing kept has no `entry`.
        if !self.entries.is_empty() {
            map.serialize_entry("entry", self.entries)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;
