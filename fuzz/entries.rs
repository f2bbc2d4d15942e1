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
