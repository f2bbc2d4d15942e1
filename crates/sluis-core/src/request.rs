//! The gateway-neutral question every front door asks: [`AccessRequest`].
//!
//! A door fills one in from whatever its gateway sends (an Envoy `CheckRequest`, NGINX
//! `auth_request` headers, an AuthZEN evaluation) and hands it to
//! `engine::Engine::decide`. Nothing here knows about a particular gateway.

use std::collections::HashMap;

mod headers;

pub use headers::{Headers, HeadersBuilder, Repeats};

/// One request to authorize, as the gateway saw it.
///
/// Its `Debug` output redacts credentials (credential headers, and credential-named
/// parameters and JWTs in the path and query), so a request can be logged without its
/// token.
#[derive(Clone, Default)]
pub struct AccessRequest {
    /// Upper-case HTTP method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`, as the gateway received the request.
    pub scheme: String,
    /// The `Host`/`:authority`, without changes.
    pub host: String,
    /// The path without the query string, as sent (not decoded).
    pub path: String,
    /// The raw query string, without the leading `?`.
    pub query: String,
    /// e.g. `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// Request headers, names lower-cased. Repeated headers are joined with `,` as
    /// Envoy does.
    pub headers: Headers,
    pub source: Source,
    /// The request body, when the gateway sends it (Envoy `with_request_body`).
    pub body: String,
    /// Per-route settings the gateway passes along (Envoy `context_extensions`). The key
    /// `sluis_policy` names the policy that must decide.
    pub context: HashMap<String, String>,
    /// A question asked as subject, action and resource (an AuthZEN evaluation) rather
    /// than as an HTTP request: then the HTTP fields above are empty, and only policies
    /// that `match` evaluations decide it.
    pub evaluation: Option<Evaluation>,
    /// Which front door asked, for the decision log; each door sets its own.
    pub door: Door,
}

/// The name of a front door, e.g. `envoy-grpc` or `authzen`: `unknown` unless a door says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Door(pub &'static str);

impl Default for Door {
    fn default() -> Door {
        Door("unknown")
    }
}

/// Who wants to do what to which thing, in the words of the application that asks: the
/// 4-tuple of an authorization question that is not an HTTP request. Each part is a JSON
/// object as the caller sent it (unknown fields kept), which policies read as `subject`,
/// `action`, `resource` and `context`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// At least `type` and `id`.
    pub subject: serde_json::Value,
    /// At least `name`.
    pub action: serde_json::Value,
    /// At least `type` and `id`.
    pub resource: serde_json::Value,
    /// Anything else the caller says about the circumstances; `{}` when nothing.
    pub context: serde_json::Value,
}

impl Evaluation {
    /// `action.name`, for matching policies.
    pub fn action_name(&self) -> &str {
        self.action
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
    }

    /// `resource.type`, for matching policies.
    pub fn resource_type(&self) -> &str {
        self.resource
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
    }

    /// `subject.type`, for matching policies.
    pub fn subject_type(&self) -> &str {
        self.subject
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
    }
}

impl std::fmt::Debug for AccessRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequest")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("path", &crate::mask::mask_credentials(&self.path))
            .field("query", &crate::mask::mask_credentials(&self.query))
            .field("protocol", &self.protocol)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .field("source", &self.source)
            .field("context", &self.context)
            .field("evaluation", &self.evaluation)
            .field("door", &self.door.0)
            .finish()
    }
}

/// The peer that sent the request.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `ip:port` of the client as the gateway saw it.
    pub address: String,
    /// The client certificate in PEM, when the gateway terminated mutual TLS and passed it.
    pub certificate: Option<String>,
}

impl Source {
    /// A peer certificate as Envoy sends it (URL-encoded PEM; empty: none), decoded.
    pub fn peer_certificate(encoded: &str) -> Option<String> {
        (!encoded.is_empty()).then(|| {
            percent_encoding::percent_decode_str(encoded)
                .decode_utf8_lossy()
                .into_owned()
        })
    }
}

/// Headers with which a client asks the upstream to perform another method than the
/// request's own; frameworks that honour them (Rails, Laravel, ASP.NET, Express's
/// `method-override`, ...) would perform a method Sluis never judged.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The context key naming the policy that must decide this request.
pub const POLICY_CONTEXT_KEY: &str = "sluis_policy";

impl AccessRequest {
    /// A header by its lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The method a method-override header asks for, upper-cased: `None` without such a
    /// header; an error when one is not an HTTP method (RFC 9110 token, repeated headers
    /// included) or two disagree.
    pub fn method_override(&self) -> Option<Result<String, String>> {
        // Nearly every request has none: one pass over the names, compared by length
        // first, says so without hashing the three names (0.8k instructions a Check).
        if !self
            .headers
            .keys()
            .any(|name| METHOD_OVERRIDE_HEADERS.contains(&name))
        {
            return None;
        }
        let mut found: Option<(&str, String)> = None;
        for name in METHOD_OVERRIDE_HEADERS {
            let Some(value) = self.header(name) else {
                continue;
            };
            let method = value.trim().to_ascii_uppercase();
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if method.is_empty() || method.len() > 32 || !method.bytes().all(token) {
                return Some(Err(format!(
                    "the method-override header `{name}` names no HTTP method"
                )));
            }
            match &found {
                Some((first, earlier)) if *earlier != method => {
                    return Some(Err(format!(
                        "the method-override headers `{first}` and `{name}` disagree"
                    )));
                }
                Some(_) => {}
                None => found = Some((name, method)),
            }
        }
        found.map(|(_, method)| Ok(method))
    }

    /// Splits a request target (`/a/b?x=1`) into path and query.
    pub fn set_target(&mut self, target: &str) {
        match target.split_once('?') {
            Some((path, query)) => {
                self.path = path.to_owned();
                self.query = query.to_owned();
            }
            None => {
                self.path = target.to_owned();
                self.query.clear();
            }
        }
    }

    /// [`AccessRequest::set_target`] for a target the door owns: the path keeps its
    /// text, so only the query is copied.
    pub fn take_target(&mut self, mut target: String) {
        match target.split_once('?') {
            Some((path, query)) => {
                let at = path.len();
                self.query = query.to_owned();
                target.truncate(at);
            }
            None => self.query.clear(),
        }
        self.path = target;
    }

    /// The query string's parameters, percent-decoded, in order: form encoding (`+` is a
    /// space), as FHIR servers and most frameworks read a query.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        decoded_pairs(&self.query)
    }
}

/// A query string's parameters, percent-decoded, as a FHIR server reads them: form
/// encoding, so `+` is a space and `%2B` a plus. The one query parser of Sluis.
pub fn decoded_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `text` with every character but RFC 3986's unreserved ones percent-encoded: a query
/// parameter's name or value that a gateway puts in a query string as it is.
pub fn encode_query_part(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// `query` (raw, without `?`) after an allow's query changes, for a door whose gateway sets
/// the whole query string it is handed (a Kong plugin): parameters neither removed nor set
/// keep their bytes exactly as the client sent them, since re-encoding could change what a
/// server reads; removed ones and earlier values of set ones are dropped, whatever their
/// encoding, compared decoded as [`decoded_pairs`] reads them; set ones are appended,
/// form-encoded, so a value with `&`, `=` or `#` stays one value.
pub fn rewrite_query(query: &str, set: &[(String, String)], remove: &[String]) -> String {
    let mut kept: Vec<String> = query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .filter(|piece| {
            let name = decoded_pairs(piece)
                .into_iter()
                .next()
                .map(|(name, _)| name)
                .unwrap_or_default();
            !remove.contains(&name) && !set.iter().any(|(n, _)| *n == name)
        })
        .map(str::to_owned)
        .collect();
    for (name, value) in set {
        kept.push(
            form_urlencoded::Serializer::new(String::new())
                .append_pair(name, value)
                .finish(),
        );
    }
    kept.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_credentials() {
        let mut request = AccessRequest::default();
        request
            .headers
            .insert("authorization".into(), "Bearer secret-token".into());
        request.headers.insert("x-request-id".into(), "r-1".into());
        request.set_target("/a/eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln?access_token=secret-query");
        let shown = format!("{request:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(!shown.contains("secret-query"), "{shown}");
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("r-1"));
    }

    #[test]
    fn a_method_override_is_read_checked_and_compared() {
        let with = |pairs: &[(&str, &str)]| {
            let mut request = AccessRequest::default();
            for (name, value) in pairs {
                request.headers.insert((*name).into(), (*value).into());
            }
            request.method_override()
        };
        assert_eq!(with(&[]), None);
        assert_eq!(
            with(&[("x-http-method", " delete ")]),
            Some(Ok("DELETE".into()))
        );
        assert_eq!(
            with(&[
                ("x-http-method-override", "PUT"),
                ("x-method-override", "put")
            ]),
            Some(Ok("PUT".into()))
        );
        for bad in ["", "DE LETE", "DELETE,PUT", "GET\u{e9}"] {
            assert!(
                matches!(with(&[("x-method-override", bad)]), Some(Err(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            with(&[
                ("x-http-method-override", "PUT"),
                ("x-http-method", "DELETE")
            ]),
            Some(Err(_))
        ));
    }

    #[test]
    fn target_splits_into_path_and_query() {
        let mut request = AccessRequest::default();
        request.set_target("/fhir/Patient?name=de%20Vries&active=true&flag");
        assert_eq!(request.path, "/fhir/Patient");
        assert_eq!(
            request.query_pairs(),
            vec![
                ("name".to_string(), "de Vries".to_string()),
                ("active".to_string(), "true".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
    }

    /// The parser `query_pairs` had before it was `form_urlencoded::parse`, kept as the
    /// reference the library must equal: `+` is a space, then percent-decoding, lossy.
    fn hand_written(query: &str) -> Vec<(String, String)> {
        fn decode(raw: &str) -> String {
            percent_encoding::percent_decode_str(&raw.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        }
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Pieces that stress a query parser: separators, `+`, good, bad and partial
        /// escapes (`%C3` alone is half a UTF-8 character), and non-ASCII text.
        #[test]
        fn query_pairs_are_form_urlencoded_as_before(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "&", "=", "+", "%", "%2", "%20", "%2B", "%26", "%3D", "%C3", "%A9",
                    "%c3%a9", "%zz", "%FF", "a", "Z", "0", "_.-~", "\u{e9}", "\u{1f600}", " ",
                ]),
                0..24,
            )
        ) {
            let query = pieces.concat();
            let mut request = AccessRequest::default();
            request.query.clone_from(&query);
            proptest::prop_assert_eq!(request.query_pairs(), hand_written(&query));
            proptest::prop_assert_eq!(
                decoded_pairs(&query),
                hand_written(&query)
            );
        }
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_query_rewrite_keeps_untouched_parameters_byte_for_byte() {
        let rewritten = rewrite_query(
            "name=a%2Fb&debug=1&x=%7e+y&tenant=mallory&d%65bug=2",
            &owned(&[("tenant", "ura|1&evil=1")]),
            &["debug".to_owned()],
        );
        assert_eq!(rewritten, "name=a%2Fb&x=%7e+y&tenant=ura%7C1%26evil%3D1");
        assert_eq!(rewrite_query("", &owned(&[("a", "b c")]), &[]), "a=b+c");
        assert_eq!(rewrite_query("a=1", &[], &["a".to_owned()]), "");
        assert_eq!(rewrite_query("a=1&&b", &[], &[]), "a=1&b");
    }

    proptest::proptest! {
        #[test]
        fn a_query_rewrite_never_keeps_a_removed_name_and_keeps_the_rest(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a=1", "b=%20", "c", "d%65bug=x", "debug=1", "tenant=m", "t%65nant=n",
                    "%zz=1", "x=%C3%A9", "a+b=c", "=v", "q=a&b", "",
                ]),
                0..12,
            ),
            value in "[ -~]{0,12}",
        ) {
            let query = pieces.join("&");
            let set = owned(&[("tenant", value.as_str())]);
            let remove = ["debug".to_owned()];
            let rewritten = rewrite_query(&query, &set, &remove);
            let after = decoded_pairs(&rewritten);
            proptest::prop_assert!(after.iter().all(|(n, _)| n != "debug"));
            let tenants: Vec<(String, String)> =
                after.into_iter().filter(|(n, _)| n == "tenant").collect();
            proptest::prop_assert_eq!(tenants, vec![("tenant".to_owned(), value.clone())]);
            let untouched: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = decoded_pairs(p).into_iter().next().map(|(n, _)| n).unwrap_or_default();
                    name != "debug" && name != "tenant"
                })
                .collect();
            let kept: Vec<&str> = rewritten.split('&').filter(|p| !p.is_empty()).collect();
            proptest::prop_assert_eq!(&kept[..kept.len() - 1], &untouched[..]);
        }
    }

    proptest::proptest! {
        /// A door that hands over its target splits it exactly as one that lends it.
        #[test]
        fn taking_a_target_splits_it_as_setting_it(
            target in "(/|[a-z?=&%#]|\\?|\\PC){0,40}",
            earlier in "[a-z?=&]{0,8}",
        ) {
            let mut lent = AccessRequest::default();
            let mut taken = AccessRequest::default();
            lent.set_target(&earlier);
            taken.set_target(&earlier);
            lent.set_target(&target);
            taken.take_target(target.clone());
            proptest::prop_assert_eq!(&lent.path, &taken.path);
            proptest::prop_assert_eq!(&lent.query, &taken.query);
        }
    }
}
