//! Envoy's `CheckRequest`, read from its protobuf bytes straight into an
//! [`AccessRequest`]: the fields the door uses, nothing else built.
//!
//! prost's generated `CheckRequest::decode` builds the whole message (the destination
//! peer, the request's id and time, every metadata map), each string checked and copied,
//! and the door then moved the parts it uses into an `AccessRequest`. For the captured
//! eOverdracht Check that was 24.6k instructions of the ~111k Sluis spent per Check
//! (BENCHMARKS.md, session 14). This reader walks the wire format once with prost's own
//! rules for the fields it reads, so the result is exactly
//! `access_request(CheckRequest::decode(bytes)?)` (a property test holds it to that):
//!
//! - a string is checked to be UTF-8 and a later occurrence replaces an earlier one;
//! - a message field that occurs more than once is merged (its fields applied in order to
//!   one value), a repeated one appends, a map entry replaces an earlier entry of its key;
//! - a `oneof` member merges into the same member and replaces another;
//! - a field of the wrong wire type is an error.
//!
//! Fields the door does not use are skipped over, as prost skips unknown fields: their
//! framing is checked, their contents are not. So a message prost would refuse only for
//! a field Sluis never reads (a destination address that is not UTF-8) is read here; one
//! prost reads is read alike. Names nothing of the `sluis` crate: the fuzz target
//! `envoy_check` includes this file as it is.

use std::collections::HashMap;
use std::fmt::Write as _;

use sluis_core::request::{AccessRequest, Door, Headers, HeadersBuilder, Repeats, Source};

/// Why the bytes are not a `CheckRequest`. Envoy never sends one: the door answers it as
/// a failed call, which Envoy's filter treats as an error (closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotACheck(&'static str);

impl std::fmt::Display for NotACheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a CheckRequest: {}", self.0)
    }
}

impl std::error::Error for NotACheck {}

/// A `CheckRequest` as the door decides on it.
#[derive(Debug)]
pub struct ReadCheck {
    /// The request to decide on.
    pub access: AccessRequest,
    /// The size of the request body Envoy sent (the larger of `body` and `raw_body`),
    /// checked against `request_body.max_bytes` before deciding.
    pub body_len: usize,
}

/// Reads a `CheckRequest` (the protobuf message, without gRPC's frame prefix).
pub fn read_check(bytes: &[u8]) -> Result<ReadCheck, NotACheck> {
    let mut check = Check::default();
    let mut wire = Wire(bytes);
    while let Some((tag, kind)) = wire.key()? {
        match tag {
            1 => wire.message(kind, DEPTH, |wire, depth| check.attributes(wire, depth))?,
            _ => wire.skip(kind, tag, DEPTH)?,
        }
    }
    Ok(check.finish())
}

/// The headers of a usual request through Envoy (the captured eOverdracht Check has 11),
/// and room for their names and values (the captured ones take 1.3 KiB, most of it the
/// token).
const HEADERS: usize = 14;
const HEADER_BYTES: usize = 2048;

/// prost's recursion limit: messages (and groups) nested deeper are refused.
const DEPTH: u32 = 100;

/// The parts of a `CheckRequest` the door uses, as prost would hold them.
#[derive(Default)]
struct Check {
    context: HashMap<String, String>,
    source: Option<Peer>,
    http: Option<Http>,
}

#[derive(Default)]
struct Peer {
    address: Option<Address>,
    certificate: String,
}

/// `envoy.config.core.v3.Address`'s `oneof address`.
enum Address {
    Socket { address: String, port: Option<Port> },
    Pipe(String),
    Internal,
}

enum Port {
    Value(u32),
    Named(String),
}

#[derive(Default)]
struct Http {
    method: String,
    /// `headers`, a map: a later entry of a name replaces an earlier one.
    headers: HeadersBuilder,
    path: String,
    host: String,
    scheme: String,
    protocol: String,
    body: String,
    raw_body: Vec<u8>,
    /// `header_map`: present (possibly empty) once it occurred.
    header_map: Option<Vec<RawHeader>>,
}

#[derive(Default)]
struct RawHeader {
    key: String,
    value: String,
    raw_value: Vec<u8>,
}

impl Check {
    /// `envoy.service.auth.v3.AttributeContext`.
    fn attributes(&mut self, wire: &mut Wire<'_>, depth: u32) -> Result<(), NotACheck> {
        while let Some((tag, kind)) = wire.key()? {
            match tag {
                1 => {
                    let peer = self.source.get_or_insert_with(Peer::default);
                    wire.message(kind, depth, |wire, depth| peer.read(wire, depth))?;
                }
                4 => wire.message(kind, depth, |wire, depth| {
                    // `Request`: its `http` (2); `time` (1) is not used.
                    while let Some((tag, kind)) = wire.key()? {
                        match tag {
                            2 => {
                                let http = self.http.get_or_insert_with(Http::default);
                                wire.message(kind, depth, |wire, depth| http.read(wire, depth))?;
                            }
                            _ => wire.skip(kind, tag, depth)?,
                        }
                    }
                    Ok(())
                })?,
                10 => wire.map_entry(kind, depth, &mut self.context)?,
                _ => wire.skip(kind, tag, depth)?,
            }
        }
        Ok(())
    }

    /// `access_request` of the message prost would have built.
    fn finish(self) -> ReadCheck {
        let mut access = AccessRequest {
            door: Door("envoy-grpc"),
            ..Default::default()
        };
        access.context = self.context;
        if let Some(peer) = self.source {
            let address = match peer.address {
                Some(Address::Socket { mut address, port }) => {
                    match port {
                        // Writing to a `String` cannot fail.
                        Some(Port::Value(port)) => {
                            let _ = write!(address, ":{port}");
                        }
                        Some(Port::Named(name)) => {
                            address.push(':');
                            address.push_str(&name);
                        }
                        None => {}
                    }
                    address
                }
                Some(Address::Pipe(path)) => path,
                Some(Address::Internal) | None => String::new(),
            };
            access.source = Source {
                address,
                certificate: Source::peer_certificate(&peer.certificate),
            };
        }
        let Some(http) = self.http else {
            return ReadCheck {
                access,
                body_len: 0,
            };
        };
        let body_len = http.body.len().max(http.raw_body.len());
        access.method = http.method;
        access.scheme = http.scheme;
        access.host = http.host;
        access.protocol = http.protocol;
        access.body = if http.raw_body.is_empty() {
            http.body
        } else {
            String::from_utf8_lossy(&http.raw_body).into_owned()
        };
        // `path` is the request target as sent: path and query together.
        access.take_target(http.path);
        access.headers = if http.headers.is_empty() {
            joined(http.header_map.unwrap_or_default())
        } else {
            http.headers.build(Repeats::Replace)
        };
        ReadCheck { access, body_len }
    }
}

/// Headers sent as a `HeaderMap` (`encode_raw_headers: true`), joined like Envoy joins them.
fn joined(raw: Vec<RawHeader>) -> Headers {
    let mut headers = HeadersBuilder::default();
    for header in raw {
        if header.raw_value.is_empty() {
            headers.push_lowercased(&header.key, &header.value);
        } else {
            headers.push_lowercased(&header.key, &String::from_utf8_lossy(&header.raw_value));
        }
    }
    headers.build(Repeats::Join)
}

impl Peer {
    /// `AttributeContext.Peer`: `address` (1) and `certificate` (5).
    fn read(&mut self, wire: &mut Wire<'_>, depth: u32) -> Result<(), NotACheck> {
        while let Some((tag, kind)) = wire.key()? {
            match tag {
                1 => wire.message(kind, depth, |wire, depth| {
                    // `Address`: a `oneof` of a socket (1), a pipe (2), an internal one (3).
                    while let Some((tag, kind)) = wire.key()? {
                        match tag {
                            // A member merges into itself and replaces another (a
                            // failed read fails the whole message).
                            1 => {
                                if !matches!(self.address, Some(Address::Socket { .. })) {
                                    self.address = None;
                                }
                                let Address::Socket { address, port } =
                                    self.address.get_or_insert(Address::Socket {
                                        address: String::new(),
                                        port: None,
                                    })
                                else {
                                    unreachable!("just made a socket address");
                                };
                                wire.message(kind, depth, |wire, depth| {
                                    socket(wire, depth, address, port)
                                })?;
                            }
                            2 => {
                                if !matches!(self.address, Some(Address::Pipe(_))) {
                                    self.address = None;
                                }
                                let Address::Pipe(path) =
                                    self.address.get_or_insert(Address::Pipe(String::new()))
                                else {
                                    unreachable!("just made a pipe");
                                };
                                wire.message(kind, depth, |wire, depth| {
                                    // `Pipe`: `path` (1); `mode` (2) is not used.
                                    while let Some((tag, kind)) = wire.key()? {
                                        match tag {
                                            1 => wire.string(kind, path)?,
                                            _ => wire.skip(kind, tag, depth)?,
                                        }
                                    }
                                    Ok(())
                                })?;
                            }
                            3 => {
                                wire.message(kind, depth, |wire, depth| wire.skip_all(depth))?;
                                self.address = Some(Address::Internal);
                            }
                            _ => wire.skip(kind, tag, depth)?,
                        }
                    }
                    Ok(())
                })?,
                5 => wire.string(kind, &mut self.certificate)?,
                _ => wire.skip(kind, tag, depth)?,
            }
        }
        Ok(())
    }
}

/// `SocketAddress`: `address` (2) and the `port_specifier` oneof, `port_value` (3) or
/// `named_port` (4).
fn socket(
    wire: &mut Wire<'_>,
    depth: u32,
    address: &mut String,
    port: &mut Option<Port>,
) -> Result<(), NotACheck> {
    while let Some((tag, kind)) = wire.key()? {
        match tag {
            2 => wire.string(kind, address)?,
            3 => {
                expect(kind, VARINT)?;
                // prost reads a uint32 as a varint cut to 32 bits.
                *port = Some(Port::Value(wire.varint()? as u32));
            }
            4 => {
                // Another member is replaced (a failed read fails the whole message).
                let mut name = match port.take() {
                    Some(Port::Named(name)) => name,
                    _ => String::new(),
                };
                wire.string(kind, &mut name)?;
                *port = Some(Port::Named(name));
            }
            _ => wire.skip(kind, tag, depth)?,
        }
    }
    Ok(())
}

impl Http {
    /// `AttributeContext.HttpRequest`.
    fn read(&mut self, wire: &mut Wire<'_>, depth: u32) -> Result<(), NotACheck> {
        while let Some((tag, kind)) = wire.key()? {
            match tag {
                2 => wire.string(kind, &mut self.method)?,
                3 => {
                    // Room for a usual request's headers at once, not grown entry by entry.
                    if self.headers.is_empty() {
                        self.headers = HeadersBuilder::with_capacity(HEADERS, HEADER_BYTES);
                    }
                    let (name, value) = wire.string_pair(kind, depth)?;
                    self.headers.push(name, value);
                }
                4 => wire.string(kind, &mut self.path)?,
                5 => wire.string(kind, &mut self.host)?,
                6 => wire.string(kind, &mut self.scheme)?,
                10 => wire.string(kind, &mut self.protocol)?,
                11 => wire.string(kind, &mut self.body)?,
                12 => wire.bytes(kind, &mut self.raw_body)?,
                13 => {
                    let raw = self.header_map.get_or_insert_with(Vec::new);
                    wire.message(kind, depth, |wire, depth| {
                        // `HeaderMap`: repeated `HeaderValue` (1).
                        while let Some((tag, kind)) = wire.key()? {
                            match tag {
                                1 => {
                                    let mut header = RawHeader::default();
                                    wire.message(kind, depth, |wire, depth| {
                                        header.read(wire, depth)
                                    })?;
                                    raw.push(header);
                                }
                                _ => wire.skip(kind, tag, depth)?,
                            }
                        }
                        Ok(())
                    })?;
                }
                _ => wire.skip(kind, tag, depth)?,
            }
        }
        Ok(())
    }
}

impl RawHeader {
    /// `HeaderValue`: `key` (1), `value` (2), `raw_value` (3).
    fn read(&mut self, wire: &mut Wire<'_>, depth: u32) -> Result<(), NotACheck> {
        while let Some((tag, kind)) = wire.key()? {
            match tag {
                1 => wire.string(kind, &mut self.key)?,
                2 => wire.string(kind, &mut self.value)?,
                3 => wire.bytes(kind, &mut self.raw_value)?,
                _ => wire.skip(kind, tag, depth)?,
            }
        }
        Ok(())
    }
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

fn expect(kind: u8, expected: u8) -> Result<(), NotACheck> {
    if kind == expected {
        Ok(())
    } else {
        Err(NotACheck("a field has the wrong wire type"))
    }
}

/// The bytes of one message not read yet.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    /// A varint, as prost reads one: at most ten bytes, the tenth at most 1.
    fn varint(&mut self) -> Result<u64, NotACheck> {
        // Keys and lengths under 128, most of a CheckRequest's, are one byte.
        if let Some((&byte, rest)) = self.0.split_first()
            && byte < 0x80
        {
            self.0 = rest;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(NotACheck("a varint is malformed or cut off"))
    }

    /// The next field's tag and wire type; `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u32, u8)>, NotACheck> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| NotACheck("a field key is too large"))?;
        let kind = (key & 7) as u8;
        if kind > FIXED32 {
            return Err(NotACheck("a field has an unknown wire type"));
        }
        let tag = key >> 3;
        if tag == 0 {
            return Err(NotACheck("a field has tag 0"));
        }
        Ok(Some((tag, kind)))
    }

    /// The next `len` bytes.
    fn take(&mut self, len: u64) -> Result<&'a [u8], NotACheck> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.0.len())
            .ok_or(NotACheck("a field runs past the end of its message"))?;
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    /// A length-delimited field's bytes.
    fn delimited(&mut self, kind: u8) -> Result<&'a [u8], NotACheck> {
        expect(kind, LEN)?;
        let len = self.varint()?;
        self.take(len)
    }

    /// A `string` field: replaces `into`'s text.
    fn string(&mut self, kind: u8, into: &mut String) -> Result<(), NotACheck> {
        let bytes = self.delimited(kind)?;
        let text = std::str::from_utf8(bytes).map_err(|_| NotACheck("a string is not UTF-8"))?;
        if into.is_empty() {
            // One allocation of the right size (growing an empty `String` costs more).
            *into = text.to_owned();
        } else {
            into.clear();
            into.push_str(text);
        }
        Ok(())
    }

    /// A `string` field's text, borrowed.
    fn str(&mut self, kind: u8) -> Result<&'a str, NotACheck> {
        let bytes = self.delimited(kind)?;
        std::str::from_utf8(bytes).map_err(|_| NotACheck("a string is not UTF-8"))
    }

    /// A `bytes` field: replaces `into`'s bytes.
    fn bytes(&mut self, kind: u8, into: &mut Vec<u8>) -> Result<(), NotACheck> {
        let bytes = self.delimited(kind)?;
        if into.is_empty() {
            *into = bytes.to_vec();
        } else {
            into.clear();
            into.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// A message field: `read` applies its fields, one level deeper.
    fn message(
        &mut self,
        kind: u8,
        depth: u32,
        read: impl FnOnce(&mut Wire<'a>, u32) -> Result<(), NotACheck>,
    ) -> Result<(), NotACheck> {
        let depth = deeper(depth)?;
        let mut inner = Wire(self.delimited(kind)?);
        read(&mut inner, depth)
    }

    /// A `map<string, string>` entry, inserted (replacing an earlier one of its key).
    fn map_entry<S: std::hash::BuildHasher>(
        &mut self,
        kind: u8,
        depth: u32,
        into: &mut HashMap<String, String, S>,
    ) -> Result<(), NotACheck> {
        let (mut key, mut value) = (String::new(), String::new());
        self.message(kind, depth, |wire, depth| {
            while let Some((tag, kind)) = wire.key()? {
                match tag {
                    1 => wire.string(kind, &mut key)?,
                    2 => wire.string(kind, &mut value)?,
                    _ => wire.skip(kind, tag, depth)?,
                }
            }
            Ok(())
        })?;
        into.insert(key, value);
        Ok(())
    }

    /// A `map<string, string>` entry's key and value, borrowed (empty when absent, the
    /// last when repeated, as prost reads them).
    fn string_pair(&mut self, kind: u8, depth: u32) -> Result<(&'a str, &'a str), NotACheck> {
        let (mut key, mut value) = ("", "");
        self.message(kind, depth, |wire, depth| {
            while let Some((tag, kind)) = wire.key()? {
                match tag {
                    1 => key = wire.str(kind)?,
                    2 => value = wire.str(kind)?,
                    _ => wire.skip(kind, tag, depth)?,
                }
            }
            Ok(())
        })?;
        Ok((key, value))
    }

    /// Everything left of this message, skipped.
    fn skip_all(&mut self, depth: u32) -> Result<(), NotACheck> {
        while let Some((tag, kind)) = self.key()? {
            self.skip(kind, tag, depth)?;
        }
        Ok(())
    }

    /// A field not read, skipped as prost skips an unknown field: its framing checked.
    /// As prost's, it counts against the recursion limit: at the limit even a varint is
    /// refused, and each group goes one level deeper.
    fn skip(&mut self, kind: u8, tag: u32, depth: u32) -> Result<(), NotACheck> {
        let inner_depth = deeper(depth)?;
        match kind {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            FIXED32 => {
                self.take(4)?;
            }
            LEN => {
                self.delimited(kind)?;
            }
            START_GROUP => loop {
                let (inner, inner_kind) = self.key()?.ok_or(NotACheck("a group is not closed"))?;
                if inner_kind == END_GROUP {
                    if inner != tag {
                        return Err(NotACheck("a group is closed with another tag"));
                    }
                    break;
                }
                self.skip(inner_kind, inner, inner_depth)?;
            },
            _ => return Err(NotACheck("a group is closed that was not opened")),
        }
        Ok(())
    }
}

/// One level deeper, or an error past prost's recursion limit.
fn deeper(depth: u32) -> Result<u32, NotACheck> {
    depth
        .checked_sub(1)
        .ok_or(NotACheck("messages are nested too deeply"))
}
