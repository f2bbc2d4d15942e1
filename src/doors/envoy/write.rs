//! A [`Decision`] → the bytes of its `CheckResponse`, written straight into tonic's buffer:
//! what prost writes for [`check_response`](super::translate::check_response)'s message,
//! without building that message first (its strings, vectors and header options are
//! allocated, measured, copied and dropped on every Check otherwise). Held to exactly
//! prost's bytes by `tests/it/envoy_write_props.rs` and the fuzz entry `envoy_check`, which
//! includes this file as it is: it names nothing of the `sluis` crate.
//!
//! Fields go in tag order, as prost writes them; a singular field holding its default is
//! left out, a repeated string is written even when empty, and a message that is set is
//! written even when it is empty (`status` of an allow is `0a 00`).

use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use sluis_core::decision::{Allow, Decision, Deny, Outcome};
use sluis_core::request::encode_query_part;

/// gRPC status codes (google.rpc.Code), as `translate` uses them.
const OK: u64 = 0;
const PERMISSION_DENIED: u64 = 7;
const UNAUTHENTICATED: u64 = 16;
/// `HeaderAppendAction::OverwriteIfExistsOrAdd`: a header we set replaces the client's.
const OVERWRITE_IF_EXISTS_OR_ADD: u64 = 2;

// Field tags.
const RESPONSE_STATUS: u32 = 1;
const RESPONSE_DENIED: u32 = 2;
const RESPONSE_OK: u32 = 3;
const RESPONSE_METADATA: u32 = 4;
const OK_HEADERS: u32 = 2;
const OK_REMOVE: u32 = 5;
const OK_QUERY_SET: u32 = 7;
const OK_QUERY_REMOVE: u32 = 8;
const DENIED_STATUS: u32 = 1;
const DENIED_HEADERS: u32 = 2;
const DENIED_BODY: u32 = 3;

/// Writes `decision`'s `CheckResponse` to `buf`.
pub fn write_check_response(decision: &Decision, buf: &mut impl BufMut) {
    match &decision.outcome {
        Outcome::Allow(allow) => {
            // An empty `google.rpc.Status`: code OK is the default.
            message(RESPONSE_STATUS, number_len(1, OK), buf);
            let query = Query::of(allow);
            message(RESPONSE_OK, ok_len(allow, &query), buf);
            write_ok(allow, &query, buf);
            if let Some(sealed) = &allow.response_grant {
                write_grant(sealed, buf);
            }
        }
        Outcome::Deny(deny) => {
            let code = if deny.status == 401 {
                UNAUTHENTICATED
            } else {
                PERMISSION_DENIED
            };
            message(RESPONSE_STATUS, number_len(1, code), buf);
            number(1, code, buf);
            message(RESPONSE_DENIED, denied_len(deny), buf);
            write_denied(deny, buf);
        }
    }
}

/// The encoded query parameters of an allow: computed once for measuring and writing,
/// and only when there are any.
struct Query {
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

impl Query {
    fn of(allow: &Allow) -> Query {
        Query {
            set: allow
                .set_query
                .iter()
                .map(|(key, value)| (encode_query_part(key), encode_query_part(value)))
                .collect(),
            remove: allow
                .remove_query
                .iter()
                .map(|key| encode_query_part(key))
                .collect(),
        }
    }
}

fn ok_len(allow: &Allow, query: &Query) -> usize {
    allow
        .set_headers
        .iter()
        .map(|(name, value)| field_len(OK_HEADERS, option_len(name, value)))
        .sum::<usize>()
        + allow
            .remove_headers
            .iter()
            .map(|name| field_len(OK_REMOVE, name.len()))
            .sum::<usize>()
        + query
            .set
            .iter()
            .map(|(key, value)| field_len(OK_QUERY_SET, text_len(1, key) + text_len(2, value)))
            .sum::<usize>()
        + query
            .remove
            .iter()
            .map(|key| field_len(OK_QUERY_REMOVE, key.len()))
            .sum::<usize>()
}

fn write_ok(allow: &Allow, query: &Query, buf: &mut impl BufMut) {
    for (name, value) in &allow.set_headers {
        write_option(OK_HEADERS, name, value, buf);
    }
    for name in &allow.remove_headers {
        bytes(OK_REMOVE, name, buf);
    }
    for (key, value) in &query.set {
        message(OK_QUERY_SET, text_len(1, key) + text_len(2, value), buf);
        text(1, key, buf);
        text(2, value, buf);
    }
    for key in &query.remove {
        bytes(OK_QUERY_REMOVE, key, buf);
    }
}

fn denied_len(deny: &Deny) -> usize {
    field_len(DENIED_STATUS, number_len(1, u64::from(deny.status)))
        + deny
            .headers
            .iter()
            .map(|(name, value)| field_len(DENIED_HEADERS, option_len(name, value)))
            .sum::<usize>()
        + text_len(DENIED_BODY, &deny.body)
}

fn write_denied(deny: &Deny, buf: &mut impl BufMut) {
    let status = u64::from(deny.status);
    message(DENIED_STATUS, number_len(1, status), buf);
    number(1, status, buf);
    for (name, value) in &deny.headers {
        write_option(DENIED_HEADERS, name, value, buf);
    }
    text(DENIED_BODY, &deny.body, buf);
}

/// A `HeaderValueOption` of a `HeaderValue` (key 1, value 2) that overwrites (field 3).
fn option_len(name: &str, value: &str) -> usize {
    field_len(1, text_len(1, name) + text_len(2, value)) + number_len(3, OVERWRITE_IF_EXISTS_OR_ADD)
}

fn write_option(tag: u32, name: &str, value: &str, buf: &mut impl BufMut) {
    message(tag, option_len(name, value), buf);
    message(1, text_len(1, name) + text_len(2, value), buf);
    text(1, name, buf);
    text(2, value, buf);
    number(3, OVERWRITE_IF_EXISTS_OR_ADD, buf);
}

/// `dynamic_metadata`: a `Struct` of one field, the grant key, whose `Value` is the sealed
/// grant as a string (`string_value`, field 3, written even when empty: it is a oneof).
fn write_grant(sealed: &str, buf: &mut impl BufMut) {
    let key = sluis_core::response::grant::GRANT_KEY;
    let value = field_len(3, sealed.len());
    let entry = text_len(1, key) + field_len(2, value);
    message(RESPONSE_METADATA, field_len(1, entry), buf);
    message(1, entry, buf);
    text(1, key, buf);
    message(2, value, buf);
    bytes(3, sealed, buf);
}

/// The size of a length-delimited field `tag` of `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The size of a singular string field: nothing when empty.
fn text_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        field_len(tag, value.len())
    }
}

/// The size of a singular number field: nothing when 0.
fn number_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// The key and length of a message field of `len` bytes; its fields follow.
fn message(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A string field written whatever its value (a repeated one's element).
fn bytes(tag: u32, value: &str, buf: &mut impl BufMut) {
    message(tag, value.len(), buf);
    buf.put_slice(value.as_bytes());
}

/// A singular string field: left out when empty.
fn text(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        bytes(tag, value, buf);
    }
}

/// A singular number field: left out when 0.
fn number(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}
