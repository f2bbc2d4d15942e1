//! JSON in which no object names a member twice, at any depth. serde_json keeps the last
//! of duplicate members silently and has no switch for it; a server behind Sluis may keep
//! the first, and then what Sluis checked is not what is used. Tokens (`authn::jose`)
//! and GraphQL bodies (`graphql`) are read through this one `Deserialize`; an upstream's
//! FHIR answer, mostly passed over and copied out, through [`reader`], which checks the
//! same in one pass without building what it does not need.

pub mod reader;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

/// A JSON value read strictly: a member named twice is an error, `duplicate key `name``.
#[derive(Debug)]
pub struct StrictJson(pub Json);

/// Why [`strict_json`] refused a text.
#[derive(Debug, PartialEq, Eq)]
pub enum StrictError {
    /// An object names this member twice.
    Duplicate(String),
    /// Not JSON at all.
    Syntax,
}

/// Parses `text` strictly, telling a repeated member from other faults.
pub fn strict_json(text: &str) -> Result<Json, StrictError> {
    match serde_json::from_str::<StrictJson>(text) {
        Ok(StrictJson(value)) => Ok(value),
        Err(e) if e.is_data() => {
            // The message is ours (see `visit_map`), followed by serde_json's position;
            // the name runs to the last backtick before it, whatever it holds itself.
            let message = e.to_string();
            match message
                .strip_prefix(DUPLICATE)
                .and_then(|rest| rest.rsplit_once("` at line"))
            {
                Some((name, _)) => Err(StrictError::Duplicate(name.to_owned())),
                None => Err(StrictError::Syntax),
            }
        }
        Err(_) => Err(StrictError::Syntax),
    }
}

const DUPLICATE: &str = "duplicate key `";

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StrictJson, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Json, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE}{key}`")));
            }
            let StrictJson(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Json::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_named_twice_is_named_at_any_depth() {
        assert_eq!(
            strict_json(r#"{"a": 1, "b": {"c": 1, "c": 2}}"#),
            Err(StrictError::Duplicate("c".into()))
        );
        assert_eq!(
            strict_json(r#"{"x`` at line": 1, "x`` at line": 2}"#),
            Err(StrictError::Duplicate("x`` at line".into()))
        );
        assert_eq!(strict_json(r#"{"a": 1,"#), Err(StrictError::Syntax));
        assert_eq!(
            strict_json(r#"[{"a": 1}, {"a": 2}]"#).map(|v| v.to_string()),
            Ok(r#"[{"a":1},{"a":2}]"#.to_string())
        );
    }
}
