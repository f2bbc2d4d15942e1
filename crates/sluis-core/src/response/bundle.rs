//! FHIR answers read for judging and written back filtered.
//!
//! A body is *readable* when it is JSON (`application/fhir+json` or `application/json`,
//! utf-8, no `content-encoding` other than `identity`), strictly so (no member named
//! twice: what Sluis judged must be what the client reads) and an object: a Bundle, whose
//! `entry[].resource` are judged one by one, or a single resource. Anything else is
//! [`Unreadable`], and the policy says whether that passes (by default it is denied).
//!
//! Filtering keeps the Bundle valid and tells no more than the kept entries: `total`
//! becomes the number of kept `match` entries on a single page and is removed on a paged
//! one (the true total is unknown); the `last` link goes (its offset tells the unfiltered
//! count), `self`/`first`/`next`/`previous` stay (they come back through the same proxy,
//! filtered page by page). Only `searchset`, `collection` and `history` Bundles are
//! filtered: removing an entry from a `document` or a `transaction-response` breaks what
//! the rest says about it, so such a Bundle with a withheld entry is denied whole.

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

/// A body read for judging.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A Bundle: its members, and its entries (as sent) to judge.
    Bundle {
        members: Map<String, Value>,
        entries: Vec<Value>,
    },
    /// One resource; judged as the entry `{"resource": ...}`.
    Resource(Value),
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

/// Reads a body (headers already checked) within `max_entries`.
pub fn read(body: &[u8], max_entries: usize) -> Result<Body, Unreadable> {
    let text = std::str::from_utf8(body).map_err(|_| Unreadable::NotJson("not utf-8".into()))?;
    let value = crate::json::strict_json(text).map_err(|e| {
        Unreadable::NotJson(match e {
            // The name is the upstream's data: not echoed.
            crate::json::StrictError::Duplicate(_) => "a member is named twice".into(),
            crate::json::StrictError::Syntax => "syntax".into(),
        })
    })?;
    let Value::Object(mut members) = value else {
        return Err(Unreadable::NotObject);
    };
    if members.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Ok(Body::Resource(Value::Object(members)));
    }
    let entries = match members.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(Unreadable::BadEntries),
    };
    if entries.len() > max_entries {
        return Err(Unreadable::TooManyEntries(entries.len(), max_entries));
    }
    if !entries.iter().all(Value::is_object) {
        return Err(Unreadable::BadEntries);
    }
    Ok(Body::Bundle { members, entries })
}

/// Why a filtered Bundle cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a `{0}` Bundle cannot lose entries without breaking it")]
    NotFilterable(String),
}

/// The Bundle with only the entries `keep` marks, made consistent (see the module doc);
/// with `notice`, an OperationOutcome entry says that some were withheld.
pub fn write_filtered(
    mut members: Map<String, Value>,
    entries: Vec<Value>,
    keep: &[bool],
    notice: bool,
) -> Result<Vec<u8>, FilterError> {
    let withheld = keep.iter().any(|k| !k);
    if withheld {
        let kind = members.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "searchset" | "collection" | "history") {
            return Err(FilterError::NotFilterable(kind.to_owned()));
        }
    }
    let kept: Vec<Value> = entries
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
                let matches = kept
                    .iter()
                    .filter(|e| {
                        e.pointer("/search/mode")
                            .and_then(Value::as_str)
                            .is_none_or(|m| m == "match")
                    })
                    .count();
                members.insert("total".into(), Value::from(matches));
            }
        }
    }
    let mut kept = kept;
    if withheld && notice {
        kept.push(serde_json::json!({
            "resource": {"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "suppressed",
                "diagnostics": "some entries were withheld by policy"}]},
            "search": {"mode": "outcome"}
        }));
    }
    // FHIR has no empty lists: a Bundle with nothing kept has no `entry`.
    if !kept.is_empty() {
        members.insert("entry".into(), Value::Array(kept));
    }
    // Writing a Value cannot fail (its keys are strings).
    Ok(serde_json::to_vec(&Value::Object(members)).unwrap_or_default())
}

#[cfg(test)]
mod tests;
