//! FHIR answers read for judging and written back filtered.
//!
//! A body is *readable* when it is JSON (`application/fhir+json` or `application/json`,
//! utf-8, no `content-encoding` other than `identity`), strictly so (no member named
//! twice: what Sluis judged must be what the client reads) and an object: a Bundle, whose
//! `entry[].resource` are judged one by one, or a single resource. Anything else is
//! [`Unreadable`], and the policy says whether that passes (by default it is denied).
//!
//! The body is read in one pass ([`crate::json::reader`]): the Bundle's own members are
//! built, each entry is read by the caller's entry reader (the response rules build only
//! the members they read, `policy::expr::entry_val`) where it lies, and its place in the
//! text is kept, so that a kept entry is written back as the upstream's own bytes:
//! nothing is re-serialised but the Bundle's own members.
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
use crate::json::reader::{ReadError, Reader};

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
    pub text: &'a str,
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
/// entry (an object) where it lies, and must read or check all of it: the reader refuses
/// a member named twice anywhere, as [`crate::json::strict_json`] does.
///
/// What is refused, and why, is what reading the Bundle whole and then each entry on its
/// own would say: a syntax error anywhere, or a member of the Bundle's own named twice,
/// first; then a body that is no object; then an `entry` that is no list, one of more than
/// `max_entries`, one holding anything but objects; then the first entry `read_entry`
/// refuses, each entry read as a text of its own (its nesting counts from itself).
pub fn read<'a, T>(
    body: &'a [u8],
    max_entries: usize,
    mut read_entry: impl FnMut(&mut Reader<'a>) -> Result<T, ReadError>,
) -> Result<Body<'a, T>, Unreadable> {
    // With SIMD: a body is tens of kilobytes, and the standard library's check cost 31k
    // instructions of a judged 100-entry Bundle.
    let text =
        simdutf8::basic::from_utf8(body).map_err(|_| Unreadable::NotJson("not utf-8".into()))?;
    let mut reader = Reader::new(text);
    let (mut members, entries) = match reader.peek() {
        Some(b'{') => read_top(&mut reader, max_entries, &mut read_entry).map_err(unreadable)?,
        _ => {
            reader
                .check_value()
                .and_then(|()| reader.end())
                .map_err(unreadable)?;
            return Err(Unreadable::NotObject);
        }
    };
    if members.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        if let Some(entries) = entries {
            // Not a Bundle's entries after all: a member like any other (rare, read again).
            let entry = crate::json::strict_json(entries.text).map_err(|e| match e {
                crate::json::StrictError::Duplicate(_) => unreadable(ReadError::Duplicate),
                crate::json::StrictError::Syntax => unreadable(ReadError::Syntax),
            })?;
            members.insert("entry".into(), entry);
        }
        return Ok(Body::Resource(Value::Object(members)));
    }
    let Some(entries) = entries else {
        return Ok(Body::Bundle {
            members,
            entries: Vec::new(),
        });
    };
    let Some(count) = entries.count else {
        return Err(Unreadable::BadEntries);
    };
    if count > max_entries {
        return Err(Unreadable::TooManyEntries(count, max_entries));
    }
    if entries.not_objects {
        return Err(Unreadable::BadEntries);
    }
    if let Some(refused) = entries.refused {
        return Err(unreadable(refused));
    }
    Ok(Body::Bundle {
        members,
        entries: entries.read,
    })
}

fn unreadable(error: ReadError) -> Unreadable {
    match error {
        // The name is the upstream's data: not echoed.
        ReadError::Duplicate => Unreadable::NotJson("a member is named twice".into()),
        ReadError::Syntax => Unreadable::NotJson("syntax".into()),
    }
}

/// The `entry` member as read.
struct Entries<'a, T> {
    /// Its text.
    text: &'a str,
    /// How many items it has, if it is a list.
    count: Option<usize>,
    /// The items read, no more than the most allowed.
    read: Vec<Entry<'a, T>>,
    /// Whether an item is no object.
    not_objects: bool,
    /// Why the entry reader refused the first item it refused.
    refused: Option<ReadError>,
}

/// The members of a top-level object but `entry`, and `entry` read apart.
type Top<'a, T> = (Map<String, Value>, Option<Entries<'a, T>>);

/// Reads the top-level object: its members but `entry` built, `entry` read apart. Only
/// syntax errors and the object's own faults count here; the entries' own are kept for
/// [`read`] to weigh.
fn read_top<'a, T>(
    reader: &mut Reader<'a>,
    max_entries: usize,
    read_entry: &mut impl FnMut(&mut Reader<'a>) -> Result<T, ReadError>,
) -> Result<Top<'a, T>, ReadError> {
    let mut members = Map::new();
    let mut entries = None;
    let mut object = reader.begin_object()?;
    while let Some(name) = reader.next_name(&mut object)? {
        if name == "entry" {
            entries = Some(read_entries(reader, max_entries, read_entry)?);
        } else {
            let value = reader.json_value()?;
            members.insert(name.into_owned(), value);
        }
    }
    reader.end()?;
    Ok((members, entries))
}

/// Reads `entry`: a list's items each by `read_entry` where they lie (up to the most
/// allowed), anything else only checked for syntax.
fn read_entries<'a, T>(
    reader: &mut Reader<'a>,
    max_entries: usize,
    read_entry: &mut impl FnMut(&mut Reader<'a>) -> Result<T, ReadError>,
) -> Result<Entries<'a, T>, ReadError> {
    let start = reader.value_start();
    let mut entries = Entries {
        text: "",
        count: None,
        read: Vec::new(),
        not_objects: false,
        refused: None,
    };
    if reader.peek() != Some(b'[') {
        reader.skip_value()?;
        entries.text = reader.slice(start, reader.position());
        return Ok(entries);
    }
    // The list is no part of an entry's nesting: each counts from itself.
    let outer = reader.fresh_depth();
    let mut list = reader.begin_array()?;
    let mut count = 0;
    while reader.next_item(&mut list)? {
        count += 1;
        let mark = reader.mark();
        let object = reader.peek() == Some(b'{');
        entries.not_objects |= !object;
        if !object || count > max_entries || entries.not_objects || entries.refused.is_some() {
            // Refused whatever it holds (too many, no object, after a refused one): only
            // its syntax counts, as when the list is read whole.
            reader.skip_value()?;
            continue;
        }
        let depth = reader.fresh_depth();
        let read = read_entry(reader);
        reader.restore_depth(depth);
        match read {
            Ok(read) => {
                let text = reader.slice(mark.pos, reader.position());
                if entries.read.is_empty() {
                    // Room for as many entries as the rest would hold of this one's size:
                    // the list grows once instead of doubling seven times for a hundred.
                    let likely = reader.remaining() / text.len().max(1) + 1;
                    entries.read.reserve(likely.min(max_entries));
                }
                entries.read.push(Entry { text, read });
            }
            Err(refused) => {
                entries.refused = Some(refused);
                reader.reset(mark);
                reader.skip_value()?;
            }
        }
    }
    reader.restore_depth(outer);
    entries.count = Some(count);
    entries.text = reader.slice(start, reader.position());
    Ok(entries)
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
    let notice = (withheld && notice).then_some(WITHHELD_NOTICE);
    let items = kept.iter().map(|e| e.text).chain(notice);
    let size: usize = kept.iter().map(|e| e.text.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 256 + WITHHELD_NOTICE.len());
    // Writing a Map cannot fail (its keys are strings).
    if serde_json::to_writer(&mut out, &members).is_err() {
        return Ok(Vec::new());
    }
    // FHIR has no empty lists: a Bundle with nothing kept has no `entry`.
    let mut items = items.peekable();
    if items.peek().is_some() && out.pop() == Some(b'}') {
        if !members.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(br#""entry":["#);
        for (index, item) in items.enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item.as_bytes());
        }
        out.extend_from_slice(b"]}");
    }
    Ok(out)
}

/// The entry that says some were withheld (and not how many).
const WITHHELD_NOTICE: &str = concat!(
    r#"{"resource":{"issue":[{"code":"suppressed","#,
    r#""diagnostics":"some entries were withheld by policy","severity":"information"}],"#,
    r#""resourceType":"OperationOutcome"},"search":{"mode":"outcome"}}"#
);

#[cfg(test)]
mod tests;
