//! An upstream's answer as response rules judge it: the parts of the answer the engine
//! reads ([`ResponseParts`]), what it decides ([`ResponseVerdict`]), FHIR Bundles read and
//! filtered ([`bundle`]) and the sealed grant that carries a request's identity and policy
//! from the request decision to the judging of its answer ([`grant`]).

pub mod bundle;
pub mod grant;

use crate::decision::Deny;

/// The upstream's answer as a gateway hands it over.
#[derive(Debug, Clone, Copy)]
pub struct ResponseParts<'a> {
    pub status: u16,
    /// Header names lower-case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Whether the upstream answered, or the gateway itself did (a denial of the request,
    /// an upstream timeout): the gateway's own answers hold no upstream data and pass
    /// unjudged. A door that cannot tell says upstream.
    pub from_upstream: bool,
}

impl ResponseParts<'_> {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the gateway does with the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseVerdict {
    /// Forward it unchanged, less these headers.
    Pass { remove_headers: Vec<&'static str> },
    /// Forward `body` instead (a Bundle with `withheld` entries taken out).
    Filter {
        body: Vec<u8>,
        kept: usize,
        withheld: usize,
        set_headers: Vec<(String, String)>,
        remove_headers: Vec<&'static str>,
    },
    /// Answer this instead of the upstream's answer.
    Deny(Deny),
}

/// Headers that describe the exact bytes of a body: wrong once the body is replaced.
pub const BODY_HEADERS: [&str; 6] = [
    "content-length",
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// Headers a filtered answer loses: those describing the exact bytes ([`BODY_HEADERS`]),
/// and `last-modified`, which dates the unfiltered data: a withheld entry's change would
/// show in it, and a client's `If-Modified-Since` must not be weighed against it.
pub const FILTERED_HEADERS: [&str; 7] = [
    "content-length",
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "last-modified",
];
