//! The reader of 58c99fb (before the one-pass reader), kept as the reference the new
//! one is compared with: serde_json's parse of the Bundle with `entry` taken as text, each
//! item as text, each item parsed again (here whole, by `strict_json`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::response::bundle::Unreadable;

/// What the reader made of a body: each entry's text and value.
#[derive(Debug, PartialEq)]
pub enum Read {
    Bundle {
        members: Map<String, Value>,
        entries: Vec<(String, Value)>,
    },
    Resource(Value),
}

pub enum EntryError {
    Duplicate,
    Syntax,
}

pub fn read(body: &[u8], max_entries: usize) -> Result<Read, Unreadable> {
    let read_entry = |text: &str| {
        crate::json::strict_json(text).map_err(|e| match e {
            crate::json::StrictError::Duplicate(_) => EntryError::Duplicate,
            crate::json::StrictError::Syntax => EntryError::Syntax,
        })
    };
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
        return Ok(Read::Resource(Value::Object(members)));
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
            Ok(read) => Ok((text.get().to_owned(), read)),
            Err(EntryError::Duplicate) => Err(duplicate()),
            Err(EntryError::Syntax) => Err(Unreadable::NotJson("syntax".into())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|entries| Read::Bundle { members, entries })
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
