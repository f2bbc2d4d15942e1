//! What each fuzz target feeds its input to. Shared, by `#[path]`, between the cargo-fuzz
//! targets in `fuzz_targets/` and `tests/it/fuzz_regressions.rs`, which replays the kept
//! inputs in `fuzz/regressions/<target>/` in the normal `cargo test`: one definition, so
//! a regression test runs exactly what the fuzzer ran. Each entry must return for any
//! input; a panic, hang or abort is the finding.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use sluis_config::Config;
use sluis_core::request::AccessRequest;

/// The repository root: `fuzz/..` for the fuzz crate, the crate itself for its tests.
fn root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if dir.join("examples").is_dir() {
        dir.to_path_buf()
    } else {
        dir.join("..")
    }
}

/// The example configuration, read once: its issuers and its policies' settings.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::load(&root().join("examples/config.yaml")).expect("the example config loads")
    })
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

struct Token {
    runtime: tokio::runtime::Runtime,
    authenticator: sluis_core::authn::Authenticator,
    issuers: Vec<Arc<str>>,
    key: jsonwebtoken::EncodingKey,
}

fn token_state() -> &'static Token {
    static STATE: OnceLock<Token> = OnceLock::new();
    STATE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let authenticator = runtime
            .block_on(async {
                sluis_core::authn::Authenticator::new(&config().authn_settings(), Arc::default())
            })
            .expect("the example issuers load");
        let pem = std::fs::read(root().join("examples/keys/dev-rsa.pem")).expect("the dev key");
        Token {
            runtime,
            authenticator,
            issuers: config()
                .issuers
                .iter()
                .map(|i| Arc::from(i.name.as_str()))
                .collect(),
            key: jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("an RSA key"),
        }
    })
}

/// The token path: the first byte chooses. Even: the rest is the `authorization` header
/// value, read and verified as a gateway's request would be. Odd: the rest is a JWT
/// payload (any bytes), signed with the example's development key (`kid` `dev-1`, which
/// every example issuer trusts), so the claim checks past the signature are reached too.
pub fn token(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let state = token_state();
    let header = if choice % 2 == 0 {
        text(rest)
    } else {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let head = b64.encode(br#"{"alg":"RS256","typ":"JWT","kid":"dev-1"}"#);
        let message = format!("{head}.{}", b64.encode(rest));
        let Ok(signature) = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &state.key,
            jsonwebtoken::Algorithm::RS256,
        ) else {
            return;
        };
        format!("Bearer {message}.{signature}")
    };
    let mut request = AccessRequest::default();
    request.headers.insert("authorization".into(), header);
    let Ok((_, token)) = sluis_core::authn::presented_token(&request) else {
        return;
    };
    let _ = state
        .runtime
        .block_on(state.authenticator.authenticate(token, &state.issuers));
}

/// The policy loader: the input as a policy file's text, compiled as a reload would
/// (beside the example policies, so relative template paths find theirs).
pub fn policy(data: &[u8]) {
    let file = root().join("policy/fuzz-input.yaml");
    let _ = sluis_core::policy::check_file_text(&file, &text(data), &config().policy_settings());
}

/// The GraphQL reader: the input as a POSTed JSON body, as the `query` of a GET, and as
/// a query template's text.
pub fn graphql(data: &[u8]) {
    let limits = sluis_core::graphql::Limits::default();
    let text = text(data);
    let mut post = AccessRequest {
        method: "POST".into(),
        body: text.clone(),
        ..Default::default()
    };
    post.set_target("/graphql");
    post.headers
        .insert("content-type".into(), "application/json".into());
    let _ = sluis_core::graphql::read(&post, &limits, None);
    let mut get = AccessRequest {
        method: "GET".into(),
        ..Default::default()
    };
    get.set_target(&format!("/graphql?query={text}"));
    let _ = sluis_core::graphql::read(&get, &limits, None);
    let _ = sluis_core::graphql::parse_template(&text);
}

/// The FHIR request classifier and SMART scopes: lines `method`, `path?query`, `base`,
/// then scopes separated by white space, then (everything after the fourth line) a body.
/// The whole request is also read as FHIR (R4 and STU3, as a form body and as JSON) and
/// checked against a real CapabilityStatement (BgZ, STU3) and our mCSD one.
pub fn fhir(data: &[u8]) {
    let text = text(data);
    let mut lines = text.splitn(5, '\n');
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let base = lines.next().unwrap_or_default();
    let scopes: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let body = lines.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let _ = sluis_core::fhir::classify(method, path, base);
    for scope in &scopes {
        let _ = sluis_core::policy::smart::Scope::parse(scope);
    }
    let _ = sluis_core::policy::smart::permits(&scopes, method, path, query, base);
    let _ = sluis_core::request::decoded_pairs(query);

    static STATEMENTS: OnceLock<Vec<sluis_core::fhir::capability::Capabilities>> = OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        ["bgz", "mcsd_directory", "stu3_composition"]
            .iter()
            .map(|name| {
                let file = root().join(format!("tests/fixtures/fhir/capabilities/{name}.json"));
                let bytes = std::fs::read(&file).expect("the fixture statement is there");
                sluis_core::fhir::capability::Capabilities::from_json(name, &bytes)
                    .expect("the fixture statement loads")
            })
            .collect()
    });
    let limits = sluis_core::fhir::FhirLimits::default();
    for content_type in ["application/x-www-form-urlencoded", "application/fhir+json"] {
        let mut request = AccessRequest {
            method: method.to_owned(),
            body: body.to_owned(),
            ..Default::default()
        };
        request.set_target(target);
        request
            .headers
            .insert("content-type".into(), content_type.into());
        for version in [
            sluis_core::fhir::FhirVersion::R4,
            sluis_core::fhir::FhirVersion::Stu3,
        ] {
            if let Ok(parsed) = sluis_core::fhir::parse(&request, base, version, &limits) {
                assert!(parsed.params.len() <= limits.max_pairs);
                for statement in statements {
                    let _ = statement.check(&parsed, false);
                    let _ = statement.check(&parsed, true);
                }
            }
        }
    }
}

/// The flows JSON: a flow as the admin API takes it (parsed, then validated), and the
/// same JSON as a NutsAuthorizationCredential. A refused flow (not a credential) names at
/// least one problem and at most the bound, plus the line counting the rest.
pub fn flows(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = sluis_core::flows::Flow::from_nuts_credential(&value);
    let credential = value.get("credentialSubject").is_some();
    match sluis_core::flows::Flow::from_json(value) {
        Ok(mut flow) => {
            let _ = flow.validate();
        }
        Err(errors) => assert!(
            credential
                || (!errors.is_empty() && errors.len() <= sluis_core::flows::MAX_FIELD_ERRORS + 1)
        ),
    }
}

/// knooppunt's `/pdp` request body, read as the door reads it (the file itself, by path).
#[path = "../src/doors/knooppunt/input.rs"]
mod knooppunt_input;

/// `knooppunt_pdp`: any bytes as a `/pdp` body. Read or refused; a read request is always
/// below the base path and never names the policy that decides.
pub fn knooppunt_pdp(data: &[u8]) {
    if let Ok(input) = knooppunt_input::parse(data, "/fhir") {
        assert!(input.request.path.starts_with("/fhir"));
        assert!(!input.request.context.contains_key("sluis_policy"));
        // The older shape's `properties` are flattened away.
        assert!(!input.claims.contains_key("properties"));
    }
}

/// The AuthZEN Search API request reader (`sluis_core::engine::search`): the input as a
/// request body, read for each kind of search, and a page of a synthetic answer taken
/// for every query read (its token must open for the same search).
pub fn authzen_search(data: &[u8]) {
    use sluis_core::engine::search::{page, read_query};
    use sluis_core::policy::search::{Candidate, SearchKind};
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(data) else {
        return;
    };
    let found: Vec<Candidate> = (0..50)
        .map(|i| Candidate {
            id: i.to_string(),
            properties: None,
        })
        .collect();
    for kind in [
        SearchKind::Subject,
        SearchKind::Resource,
        SearchKind::Action,
    ] {
        if let Ok(query) = read_query(kind, &body) {
            let (results, next) = page(&query, &found);
            assert!(results.len() <= query.limit);
            if !next.is_empty() {
                let mut again = body.clone();
                again.insert(
                    "page".into(),
                    serde_json::json!({"token": next, "limit": query.limit}),
                );
                assert!(
                    read_query(kind, &again).is_ok(),
                    "a token we gave is refused"
                );
            }
        }
    }
}

/// Mitz's answer (`sources::mitz::parse_response_details`, the bytes as they came off the
/// wire), and the same bytes read as a closed question (`parse_request`, the stand-in's
/// side). Any error must name no input: the fuzzer checks none holds a 9-digit run.
pub fn mitz_response(data: &[u8]) {
    use sluis_core::sources::mitz;
    for error in [
        mitz::parse_response_details(data).err(),
        mitz::parse_request(data).err(),
    ]
    .into_iter()
    .flatten()
    {
        let text = error.to_string();
        let digits = text
            .split(|c: char| !c.is_ascii_digit())
            .any(|run| run.len() >= 9 && run != mitz::MAX_RESPONSE_BYTES.to_string());
        assert!(!digits, "an error holds a long number: {text}");
    }
}

/// An information source's answer, read as each kind reads it: the first byte picks the
/// kind, read or search and content type; the rest is the body. Strict JSON, FHIR
/// resource and searchset checks, the userinfo `sub` check, the Mitz XML reader.
pub fn source_answer(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = ["fhir", "http", "userinfo", "mitz"][usize::from(selector & 3)];
    let search = selector & 4 != 0;
    let content_type = [
        "application/fhir+json",
        "application/json; charset=utf-8",
        "text/xml",
        "text/html",
    ][usize::from((selector >> 3) & 3)];
    let status = if selector & 0x20 != 0 { 404 } else { 200 };
    let _ = sluis_core::sources::read_answer(kind, search, status, Some(content_type), body);
}

/// The input as a request target (`path?query`), split as a door that lends it
/// (`AccessRequest::set_target`) and as one that hands it over (`take_target`): the two
/// must agree, and the path must hold no `?`.
pub fn request_target(data: &[u8]) {
    let target = text(data);
    let mut lent = AccessRequest::default();
    lent.set_target(&target);
    let mut taken = AccessRequest::default();
    taken.take_target(target.clone());
    assert_eq!(lent.path, taken.path);
    assert_eq!(lent.query, taken.query);
    assert!(!taken.path.contains('?'));
    let joined = if target.contains('?') {
        format!("{}?{}", taken.path, taken.query)
    } else {
        taken.path.clone()
    };
    assert_eq!(joined, target);
}

/// The input's lines as `name: value` headers (a line without `:` is a name with an empty
/// value), built as a door builds them, joined and replaced: every name must find what an
/// ordered map of the same lines holds, and names not given must find nothing.
pub fn headers(data: &[u8]) {
    use sluis_core::request::{HeadersBuilder, Repeats};
    use std::collections::BTreeMap;
    let input = text(data);
    let lines: Vec<(&str, String, &str)> = input
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name, name.to_ascii_lowercase(), value)
        })
        .collect();
    for repeats in [Repeats::Join, Repeats::Replace] {
        let mut builder = HeadersBuilder::default();
        let mut map = BTreeMap::<&str, String>::new();
        for (i, (raw_name, name, value)) in lines.iter().enumerate() {
            // Half the names lower-cased by the builder, half by the caller.
            if i % 2 == 0 {
                builder.push(name, value);
            } else {
                builder.push_lowercased(raw_name, value);
            }
            match (map.get_mut(name.as_str()), repeats) {
                (Some(earlier), Repeats::Join) => {
                    earlier.push(',');
                    earlier.push_str(value);
                }
                _ => {
                    map.insert(name, (*value).to_owned());
                }
            }
        }
        let headers = builder.build(repeats);
        assert_eq!(headers.len(), map.len());
        for (name, value) in &map {
            assert_eq!(headers.get(name), Some(value.as_str()), "{name}");
        }
        let mut listed: Vec<(&str, &str)> = headers.iter().collect();
        listed.sort();
        assert!(
            listed
                .into_iter()
                .eq(map.iter().map(|(n, v)| (*n, v.as_str())))
        );
        for (_, name, _) in &lines {
            let absent = format!("{name}-");
            assert_eq!(
                headers.get(&absent),
                map.get(absent.as_str()).map(String::as_str)
            );
        }
    }
}

/// The config file reader: the input as a `sluis.yaml`'s text, `sources:` and its strict
/// key check included. Read or refused, never a panic; a refusal of an unknown key beside
/// a source's kind names the key.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(text, Path::new("sluis.yaml"), PathBuf::from(".")) {
        let message = error.to_string();
        if message.contains("): unknown field `") {
            assert!(message.contains("expected one of"), "{message}");
        }
    }
}

struct Answering {
    runtime: tokio::runtime::Runtime,
    engine: sluis_core::engine::Engine,
    /// The grant of an allowed mCSD search (`policy/care-services-mcsd.yaml`, which has
    /// `response_rules`), under which every answer is judged.
    grant: String,
}

fn answering() -> &'static Answering {
    static STATE: OnceLock<Answering> = OnceLock::new();
    STATE.get_or_init(|| {
        use sluis_core::decision::Outcome;
        use sluis_core::engine::Credentials;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let engine = runtime
            .block_on(async { config().build_engine(Arc::default()) })
            .expect("the example engine builds");
        let mut request = AccessRequest {
            method: "GET".into(),
            ..AccessRequest::default()
        };
        request.set_target("/mcsd/Organization?name=x");
        let claims = serde_json::json!({"organization_ura": "24173480"});
        let claims = claims.as_object().expect("an object").clone();
        let decision = runtime
            .block_on(engine.decide_as(
                &request,
                &Credentials::Claims {
                    issuer: "nuts-node",
                    claims: &claims,
                },
                None,
            ))
            .expect("decided");
        let Outcome::Allow(allow) = decision.outcome else {
            panic!("the mCSD search is allowed: {}", decision.reason)
        };
        Answering {
            runtime,
            engine,
            grant: allow.response_grant.expect("the mCSD policy grants"),
        }
    })
}

/// `json_reader`: the input as a JSON text read by the one-pass reader of judged answers
/// (`json::reader`), checked and built, beside `json::strict_json`: both must accept the
/// same texts, refuse the others for the same first fault (a repeated name or anything
/// else) and build the same value. Then as a Bundle (`response::bundle::read`, each entry
/// built whole): each entry's text is the entry's own JSON, built the same by
/// `strict_json`. (A Bundle's entries nest from themselves, so an accepted Bundle may be
/// deeper as a whole than `strict_json` reads.) Last as one entry read by the response
/// rules' reader (`entry_val::read_entry`), whole and the members of two rules: the tree
/// is what the `strict_json` value gives of the same members, or the fault is the same.
pub fn json_reader(data: &[u8]) {
    use sluis_core::json::reader::{ReadError, Reader};
    use sluis_core::json::{StrictError, strict_json};
    use sluis_core::policy::expr::entry_val;
    use sluis_core::response::bundle::{self, Body};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = strict_json(text).map_err(|e| match e {
        StrictError::Duplicate(_) => ReadError::Duplicate,
        StrictError::Syntax => ReadError::Syntax,
    });
    let mut reader = Reader::new(text);
    let built = reader.json_value().and_then(|v| reader.end().map(|()| v));
    assert_eq!(built, strict, "built: {text:?}");
    let mut reader = Reader::new(text);
    let checked = reader.check_value().and_then(|()| reader.end());
    assert_eq!(
        checked,
        strict.as_ref().map(|_| ()).map_err(|e| *e),
        "checked: {text:?}"
    );
    if let Ok(Body::Bundle { entries, .. }) =
        bundle::read(data, 20, |reader: &mut Reader<'_>| reader.json_value())
    {
        for entry in entries {
            assert_eq!(strict_json(entry.text).ok(), Some(entry.read), "{text:?}");
        }
    }
    // The response rules' entry reader: whole, and the members of the bench's rules.
    let selected = [
        "entry.resource.meta.security.exists(s, s.code == 'R')",
        "entry.resource.identifier.exists(i, i.value == '1') && entry.fullUrl != ''",
    ];
    for fields in [entry_val::EntryFields::All, fields_of(&selected)] {
        let read = entry_val::read_entry(text, &fields).map(|entry| entry.tree.root().to_json());
        match &strict {
            Ok(value) => assert_eq!(
                read,
                Ok(entry_val::entry_of_value(value, &fields)
                    .tree
                    .root()
                    .to_json()),
                "tree: {text:?}"
            ),
            Err(fault) => assert_eq!(read.err(), Some(*fault), "tree: {text:?}"),
        }
    }
}

/// What the rules `sources` read of an entry.
fn fields_of(sources: &[&str]) -> sluis_core::policy::expr::entry_val::EntryFields {
    let mut fields = sluis_core::policy::expr::entry_val::EntryFields::default();
    for source in sources {
        let expr = sluis_core::policy::expr::Expr::compile(source).expect("a valid rule");
        fields.merge(&expr.entry_fields);
    }
    fields
}

/// `response`: an upstream's answer judged by response rules, as the ext_proc door hands
/// it to the engine. The first byte chooses the content type, a `content-encoding` and
/// the status; the rest is the body. A filtered answer must be JSON holding exactly the
/// kept entries (plus a notice entry at most) and must not keep the unfiltered body's
/// `etag` or `content-length`. The same bytes as a sealed grant are refused or opened,
/// never a panic, and never judged under.
pub fn response(data: &[u8]) {
    use sluis_core::response::{ResponseParts, ResponseVerdict};
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let state = answering();
    let content_type = [
        "application/fhir+json",
        "application/json; charset=utf-8",
        "application/fhir+xml",
        "text/plain",
    ][usize::from(first % 4)];
    let mut headers = vec![
        ("content-type".to_string(), content_type.to_string()),
        ("etag".to_string(), "W/\"1\"".to_string()),
    ];
    if first & 4 != 0 {
        headers.push(("content-encoding".into(), "gzip".into()));
    }
    let status = if first & 8 != 0 { 404 } else { 200 };
    let parts = ResponseParts {
        status,
        headers: &headers,
        body,
        from_upstream: true,
    };
    let decided = state
        .runtime
        .block_on(state.engine.judge_response(Some(&state.grant), &parts));
    match &decided.verdict {
        ResponseVerdict::Filter {
            body: filtered,
            kept,
            withheld,
            remove_headers,
            ..
        } => {
            assert!(*withheld > 0, "filtered with nothing withheld");
            assert!(remove_headers.contains(&"etag") && remove_headers.contains(&"content-length"));
            let value: serde_json::Value =
                serde_json::from_slice(filtered).expect("a filtered answer is JSON");
            let entries = value
                .get("entry")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
            assert!(
                entries == *kept || entries == kept + 1,
                "{entries} entries, {kept} kept"
            );
        }
        ResponseVerdict::Pass { .. } => assert_eq!(decided.withheld, 0),
        ResponseVerdict::Deny(deny) => assert!(deny.status >= 400),
    }
    let forged = state
        .runtime
        .block_on(state.engine.judge_response(Some(&text(data)), &parts));
    if text(data) != state.grant {
        assert!(matches!(forged.verdict, ResponseVerdict::Deny(_)));
    }
}

/// The ext_proc door's translation of a stream's messages (the file itself, by path).
#[allow(
    dead_code,
    reason = "the door's gRPC service uses what the entry does not"
)]
#[path = "../src/doors/ext_proc/exchange.rs"]
mod ext_proc_exchange;

/// The ext_authz door's translation (the file itself, by path).
#[allow(
    dead_code,
    reason = "the door's gRPC service uses what the entry does not"
)]
#[path = "../src/doors/envoy/translate.rs"]
mod envoy_translate;

/// The ext_authz door's reader of a `CheckRequest`'s bytes (the file itself, by path).
#[path = "../src/doors/envoy/read.rs"]
mod envoy_read;

/// A header name a gateway accepts from us: a lower-case RFC 9110 token.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// A header value a gateway accepts: no CR, LF or NUL (no header injection).
fn valid_header_value(value: &[u8]) -> bool {
    !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// `ext_proc`: a stream of `ProcessingRequest` messages, in any order, through the ext_proc
/// door's translation (`src/doors/ext_proc/exchange.rs`, `handle`) as the gRPC stream
/// calls it, under the example engine. First byte: bit 0 attaches the sealed grant of an
/// allowed mCSD search to the first message; bits 1-2 the `response.code_details`
/// attribute (none, `via_upstream`, `ext_authz_denied`). Then messages, each a kind byte,
/// a 2-byte big-endian length and that many bytes; kind % 8: 0-2 request headers, body,
/// trailers; 3 response headers (`name: value` lines, `:status` among them; bit 3: end of
/// stream); 4 response body (bit 3: not the end); 5 response trailers; 6 the bytes as an
/// encoded `ProcessingRequest`; 7 an empty message. Checked: every reply answers its
/// message (or ends the stream); headers set or removed are valid; without the true
/// grant an upstream answer is never let through (a deny stays a deny); a filtered body
/// comes with its own `content-length` and without the upstream's `etag`.
pub fn ext_proc(data: &[u8]) {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, body_mutation,
        processing_request::Request as Message, processing_response::Response as Reply,
    };
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    use prost::Message as _;

    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let state = answering();
    let text_value = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let one = |key: &str, value: &str| Struct {
        fields: [(key.to_owned(), text_value(value))].into_iter().collect(),
    };
    let mut messages = Vec::new();
    while let [kind, high, low, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let headers = || HttpHeaders {
            headers: Some(HeaderMap {
                headers: text(payload)
                    .lines()
                    .filter_map(|line| line.split_once(':').or(Some((line, ""))))
                    .map(|(name, value)| HeaderValue {
                        key: name.trim().to_owned(),
                        raw_value: value.trim().as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            end_of_stream: kind & 8 != 0,
            ..Default::default()
        };
        let request = match kind % 8 {
            0 => Some(Message::RequestHeaders(headers())),
            1 => Some(Message::RequestBody(HttpBody {
                body: payload.to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
            2 => Some(Message::RequestTrailers(HttpTrailers::default())),
            3 => Some(Message::ResponseHeaders(headers())),
            4 => Some(Message::ResponseBody(HttpBody {
                body: payload.to_vec(),
                end_of_stream: kind & 8 == 0,
                ..Default::default()
            })),
            5 => Some(Message::ResponseTrailers(HttpTrailers::default())),
            6 => match ProcessingRequest::decode(payload) {
                Ok(message) => {
                    messages.push(message);
                    continue;
                }
                Err(_) => continue,
            },
            _ => None,
        };
        messages.push(ProcessingRequest {
            request,
            ..Default::default()
        });
    }
    if let Some(first) = messages.first_mut() {
        if flags & 1 != 0 {
            first.metadata_context = Some(Metadata {
                filter_metadata: [(
                    ext_proc_exchange::GRANT_NAMESPACE.to_owned(),
                    one(ext_proc_exchange::GRANT_KEY, &state.grant),
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            });
        }
        let details = match (flags >> 1) & 3 {
            1 => Some("via_upstream"),
            2 => Some("ext_authz_denied"),
            _ => None,
        };
        if let Some(details) = details {
            first.attributes.insert(
                ext_proc_exchange::ATTRIBUTES_NAMESPACE.to_owned(),
                one(ext_proc_exchange::CODE_DETAILS, details),
            );
        }
    }
    let mut exchange = ext_proc_exchange::Exchange::default();
    for message in messages {
        let asked = message.request.clone();
        let reply = state.runtime.block_on(ext_proc_exchange::handle(
            &state.engine,
            64 * 1024,
            &mut exchange,
            message,
        ));
        // An error ends the stream: Envoy fails closed (`failure_mode_allow: false`).
        let Ok(reply) = reply else { return };
        let reply = reply.response.expect("every reply says something");
        let common = match &reply {
            Reply::ImmediateResponse(immediate) => {
                let status = immediate.status.as_ref().map_or(0, |s| s.code);
                assert!((400..600).contains(&status), "denied with {status}");
                for header in immediate.headers.iter().flat_map(|m| &m.set_headers) {
                    let header = header.header.as_ref().expect("a header");
                    assert!(valid_header_name(&header.key), "{:?}", header.key);
                    assert!(valid_header_value(&header.raw_value));
                }
                None
            }
            Reply::RequestHeaders(r) | Reply::ResponseHeaders(r) => r.response.as_ref(),
            Reply::RequestBody(r) | Reply::ResponseBody(r) => r.response.as_ref(),
            Reply::RequestTrailers(_) | Reply::ResponseTrailers(_) => None,
            Reply::StreamedImmediateResponse(_) => panic!("the door never streams an answer"),
        };
        // Each reply answers its message's kind, or denies.
        let matches = match (&asked, &reply) {
            (_, Reply::ImmediateResponse(_)) => {
                matches!(
                    asked,
                    Some(Message::ResponseHeaders(_) | Message::ResponseBody(_))
                )
            }
            (Some(Message::RequestHeaders(_)), Reply::RequestHeaders(_))
            | (Some(Message::RequestBody(_)), Reply::RequestBody(_))
            | (Some(Message::RequestTrailers(_)), Reply::RequestTrailers(_))
            | (Some(Message::ResponseHeaders(_)), Reply::ResponseHeaders(_))
            | (Some(Message::ResponseBody(_)), Reply::ResponseBody(_))
            | (Some(Message::ResponseTrailers(_)), Reply::ResponseTrailers(_)) => true,
            _ => false,
        };
        assert!(matches, "{asked:?} answered with {reply:?}");
        if let Some(mutation) = common.and_then(|c| c.header_mutation.as_ref()) {
            for header in &mutation.set_headers {
                let header = header.header.as_ref().expect("a header");
                assert!(valid_header_name(&header.key), "{:?}", header.key);
                assert!(valid_header_value(&header.raw_value));
            }
            for name in &mutation.remove_headers {
                assert!(valid_header_name(name), "{name:?}");
            }
        }
        let judged = match &asked {
            Some(Message::ResponseHeaders(h)) => h.end_of_stream,
            Some(Message::ResponseBody(b)) => b.end_of_stream,
            _ => false,
        };
        let from_upstream = exchange
            .code_details
            .as_deref()
            .is_none_or(|d| d == "via_upstream");
        if judged && from_upstream && exchange.grant.as_deref() != Some(state.grant.as_str()) {
            assert!(
                matches!(reply, Reply::ImmediateResponse(_)),
                "an answer without its grant went through: {reply:?}"
            );
        }
        if let Some(body_mutation::Mutation::Body(body)) = common
            .and_then(|c| c.body_mutation.as_ref())
            .and_then(|m| m.mutation.as_ref())
        {
            let mutation = common
                .and_then(|c| c.header_mutation.as_ref())
                .expect("a new body changes headers");
            let length = mutation
                .set_headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "content-length")
                .map(|h| h.raw_value.clone());
            assert_eq!(length, Some(body.len().to_string().into_bytes()));
            assert!(mutation.remove_headers.iter().any(|h| h == "etag"));
            serde_json::from_slice::<serde_json::Value>(body).expect("a filtered body is JSON");
        }
        if matches!(reply, Reply::ImmediateResponse(_)) {
            return;
        }
    }
}

/// `envoy_check`: the input as an encoded `CheckRequest`, through the ext_authz door's
/// reader (`src/doors/envoy/read.rs`) and translation (`src/doors/envoy/translate.rs`)
/// and the example engine, and the decision back. Checked: the reader never panics, and
/// where prost reads the message it reads the same request as prost and `access_request`
/// together (same fields, same body size); the request target is split at the first `?`; a deny is a denied
/// `CheckResponse` (never `OK`) with the decision's status, an allow an `OK` one; headers
/// we set overwrite the client's copy (never appended beside it) and are valid; query
/// parameters we set are encoded so that each stays one parameter and decodes back; a
/// response grant travels as ext_authz metadata under its key.
pub fn envoy_check(data: &[u8]) {
    use envoy_translate::{access_request, check_response};
    use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderAppendAction, HttpResponse};
    use prost::Message as _;
    use sluis_core::decision::{Allow, Decision, Deny, Outcome};

    let read = envoy_read::read_check(data);
    let Ok(check) = CheckRequest::decode(data) else {
        return;
    };
    let read = read.expect("prost reads the message, so the door's reader must");
    assert_eq!(read.body_len, envoy_translate::body_len(&check));
    {
        let prost = access_request(check.clone());
        let (a, b) = (&read.access, &prost);
        assert_eq!(
            (
                &a.method,
                &a.scheme,
                &a.host,
                &a.path,
                &a.query,
                &a.protocol,
                &a.body
            ),
            (
                &b.method,
                &b.scheme,
                &b.host,
                &b.path,
                &b.query,
                &b.protocol,
                &b.body
            )
        );
        assert_eq!(a.headers, b.headers);
        assert_eq!(a.context, b.context);
        assert_eq!(a.source.address, b.source.address);
        assert_eq!(a.source.certificate, b.source.certificate);
    }
    let state = answering();
    let path = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| h.path.clone())
        .unwrap_or_default();
    let too_large = envoy_translate::too_large(0);
    assert_eq!(too_large.status.as_ref().map(|s| s.code), Some(7));
    let access = access_request(check);
    assert_eq!(access.door.0, "envoy-grpc");
    let (want_path, want_query) = path.split_once('?').unwrap_or((&path, ""));
    assert_eq!(access.path, want_path);
    assert_eq!(access.query, want_query);

    let checked = |decision: Decision| {
        let expected = decision.outcome.clone();
        let answer = check_response(decision);
        let code = answer.status.as_ref().map_or(-1, |s| s.code);
        match (&expected, &answer.http_response) {
            (Outcome::Allow(allow), Some(HttpResponse::OkResponse(ok))) => {
                assert_eq!(code, 0);
                assert_eq!(ok.headers.len(), allow.set_headers.len());
                for header in &ok.headers {
                    assert_eq!(
                        header.append_action,
                        HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        "a header we set must replace the client's copy"
                    );
                }
                for (set, (key, value)) in ok.query_parameters_to_set.iter().zip(&allow.set_query) {
                    for encoded in [&set.key, &set.value] {
                        assert!(
                            encoded
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                            "{encoded:?}"
                        );
                    }
                    let decode = |s: &str| {
                        percent_encoding::percent_decode_str(s)
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    assert_eq!(&decode(&set.key), key);
                    assert_eq!(&decode(&set.value), value);
                }
                let grant = answer
                    .dynamic_metadata
                    .as_ref()
                    .and_then(|m| m.fields.get(sluis_core::response::grant::GRANT_KEY));
                assert_eq!(grant.is_some(), allow.response_grant.is_some());
            }
            (Outcome::Deny(deny), Some(HttpResponse::DeniedResponse(denied))) => {
                assert!(code == 7 || code == 16, "a deny answered with code {code}");
                assert_eq!(
                    denied.status.as_ref().map(|s| s.code),
                    Some(i32::from(deny.status))
                );
                assert_eq!(denied.body, deny.body);
            }
            other => panic!("{other:?}"),
        }
    };
    if let Ok(decision) = state.runtime.block_on(state.engine.decide(&access)) {
        checked(decision);
    }
    // The request's own headers and query as what an allow sets, and a deny carries.
    let mut headers: Vec<(String, String)> = access
        .headers
        .iter()
        .take(8)
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    headers.sort();
    checked(Decision {
        outcome: Outcome::Allow(Allow {
            set_headers: headers.clone(),
            remove_headers: headers.iter().map(|(n, _)| n.clone()).collect(),
            set_query: access.query_pairs().into_iter().take(8).collect(),
            remove_query: access
                .query_pairs()
                .into_iter()
                .map(|(k, _)| k)
                .take(8)
                .collect(),
            response_grant: (!access.body.is_empty()).then(|| access.body.clone()),
        }),
        policy: None,
        rule: Arc::from("fuzz"),
        reason: String::new(),
    });
    checked(Decision {
        outcome: Outcome::Deny(Deny {
            status: if access.method.len().is_multiple_of(2) {
                401
            } else {
                403
            },
            headers,
            body: access.body.clone(),
        }),
        policy: None,
        rule: Arc::from("fuzz"),
        reason: String::new(),
    });
}

/// The input as text bound for a log (a path, a query, a deny reason), masked as the
/// decision log and the service's own log mask it (`mask::Masker`, the defaults): nothing
/// shaped like a JWT, no BSN (a 9-digit run passing the 11-check) and no value of a
/// credential-named parameter may be left, and text with nothing to mask comes back as it
/// was.
pub fn mask(data: &[u8]) {
    use sluis_core::mask::{CREDENTIAL_MASK, CREDENTIAL_PARAMETERS, MaskConfig, Masker, is_bsn};
    use std::borrow::Cow;
    static CHECKS: OnceLock<(regex::Regex, regex::Regex)> = OnceLock::new();
    let (jwt, parameter) = CHECKS.get_or_init(|| {
        let names: Vec<String> = CREDENTIAL_PARAMETERS
            .iter()
            .map(|n| regex::escape(n))
            .collect();
        (
            regex::Regex::new(r"eyJ[A-Za-z0-9_-]*(?:(?:\.|%2[Ee])[A-Za-z0-9_-]*){2,4}").unwrap(),
            regex::Regex::new(&format!(
                r#"(?i)(?:^|[?&;/\s"'`,(\[{{])(?:{})="#,
                names.join("|")
            ))
            .unwrap(),
        )
    });
    let text = text(data);
    let masked = Masker::new(&MaskConfig::default()).mask(&text);
    assert!(!jwt.is_match(&masked), "a JWT left in {masked:?}");
    for run in masked.split(|c: char| !c.is_ascii_digit()) {
        assert!(!is_bsn(run), "a BSN left in {masked:?}");
    }
    for found in parameter.find_iter(&masked) {
        let value = masked.get(found.end()..).unwrap_or("");
        let ends = |c: char| matches!(c, '&' | ';' | '#' | '"' | '\'' | '`') || c.is_whitespace();
        assert!(
            value.starts_with(CREDENTIAL_MASK) || value.chars().next().is_none_or(ends),
            "a credential parameter's value left in {masked:?}"
        );
    }
    if let Cow::Borrowed(same) = masked {
        assert_eq!(same, text);
    }
}
