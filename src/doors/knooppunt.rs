//! nuts-knooppunt's PDP protocol (`POST /pdp`), so Sluis can stand behind knooppunt's
//! NGINX PEP (and anything else written against that PDP) unchanged.
//!
//! The PEP introspects the token at the Nuts node, has the node check DPoP, answers 401 to
//! an inactive token and only then asks its PDP, sending the introspection answer as
//! `subject`. This door takes those claims as the PEP's word (the engine checks `active`,
//! `exp`, `iss`, `aud` again, but no signature or sender binding): it is off unless
//! `doors.knooppunt_pdp` is configured, and answers only peers in its `allow_from`
//! (loopback by default). It must only be reachable from the PEP.
//!
//! Input: `{"input": {"subject": {...}, "request": {...}, "context": {...}}}`.
//! - `subject`: the introspection answer, flat (`active`, `exp`, `scope`, `client_id`,
//!   `organization_ura`, ...); or the older `{type, id, properties: {client_qualifications,
//!   ...}}`, whose `properties` are the claims and whose qualifications are the scopes.
//! - `request`: `method`, `path` (relative to the FHIR base, `/Patient`; a `?` in it
//!   starts the query), and the query as a raw string `query` (the PEP's `authorize.js`)
//!   or a map `query_params` (name → values; the Go struct), not both; `header` (name →
//!   values), `body`, `protocol`.
//! - `context`: `data_holder_organization_id`, `data_holder_facility_type`,
//!   `patient_bsn`, `connection_type_code`: the request's context under the same keys,
//!   which policies read as `request.context.<key>`. Nothing else is copied, so no input
//!   can name the policy that decides.
//!
//! Answer (200): `{"allow": bool, "policies": {"<id>": {"allow": bool, "reasons":
//! [{"code", "description"}]}}}`, plus `"error"` when no policy could be chosen. Reason
//! descriptions are masked as the decision log masks (BSNs). 400 `{"allow": false,
//! "error": "unable to parse request body: ..."}` for input that cannot be read; 503 when
//! the engine cannot decide (the PEP turns any non-200 into an error, never an allow).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use sluis_config::KnooppuntPdpConfig;
use sluis_core::engine::{DoorCapabilities, Engine, Weighed};
use sluis_core::mask::{MaskConfig, Masker};
use sluis_core::request::{AccessRequest, Door};

/// Request bodies, at most (413 past it), as the OPA door.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// The context keys copied into the request's context.
pub const CONTEXT_KEYS: [&str; 4] = [
    "connection_type_code",
    "data_holder_organization_id",
    "data_holder_facility_type",
    "patient_bsn",
];

/// At most this many request headers are read.
const MAX_HEADERS: usize = 100;

struct Pdp {
    engine: Arc<Engine>,
    issuer: String,
    base_path: String,
    allow_from: Vec<ipnet::IpNet>,
    /// Used when the decision log (whose masking applies otherwise) is off.
    masker: Masker,
}

/// The door's routes, when configured.
pub fn router(engine: Arc<Engine>, config: &KnooppuntPdpConfig) -> Result<Router, String> {
    let masker = Masker::new(&MaskConfig::default());
    let pdp = Arc::new(Pdp {
        engine,
        issuer: config.issuer.clone(),
        base_path: config.fhir_base_path.trim_end_matches('/').to_owned(),
        allow_from: config.allowed_peers()?,
        masker,
    });
    Ok(Router::new()
        .route("/pdp", post(decide))
        .route("/pdp/v1/data/{package}/{rule}", post(decide_at))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(pdp))
}

async fn decide_at(
    State(pdp): State<Arc<Pdp>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path((package, rule)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if package != "knooppunt" || rule != "authz" {
        return answer_error(
            StatusCode::BAD_REQUEST,
            "invalid policy: only `knooppunt/authz` is served",
        );
    }
    decide(State(pdp), peer, body).await
}

async fn decide(
    State(pdp): State<Arc<Pdp>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let allowed = peer.is_some_and(|Extension(ConnectInfo(peer))| pdp.admits(peer.ip()));
    if !allowed {
        return answer_error(StatusCode::FORBIDDEN, "this peer may not ask");
    }
    let input = match parse(&body, &pdp.base_path) {
        Ok(input) => input,
        Err(message) => {
            return answer_error(
                StatusCode::BAD_REQUEST,
                &format!("unable to parse request body: {message}"),
            );
        }
    };
    let capabilities = DoorCapabilities {
        can_rewrite_query: false,
    };
    match pdp
        .engine
        .decide_relayed(&input.request, &pdp.issuer, &input.claims, capabilities)
        .await
    {
        Ok(weighed) => axum::Json(pdp.answer(&weighed)).into_response(),
        Err(_) => answer_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the authorization service cannot decide now",
        ),
    }
}

impl Pdp {
    fn admits(&self, peer: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.allow_from.iter().any(|block| block.contains(&peer))
    }

    /// knooppunt's answer for a decision.
    fn answer(&self, weighed: &Weighed) -> Value {
        // The decision log's masking when it is on, else the default (BSNs).
        let masker = self
            .engine
            .decision_log()
            .map_or(&self.masker, |log| log.masker());
        let mut policies = Map::new();
        for result in &weighed.evaluated {
            let reasons: Vec<Value> = result
                .reasons
                .iter()
                .map(|reason| {
                    json!({
                        "code": reason.code,
                        "description": masker.mask(&reason.description),
                    })
                })
                .collect();
            policies.insert(
                result.policy.to_string(),
                json!({ "allow": result.allow, "reasons": reasons }),
            );
        }
        let decision = &weighed.decision;
        let mut answer = json!({ "allow": decision.is_allow(), "policies": policies });
        let error = match &*decision.rule {
            "no-scope" | "no-policy" => Some("no policy defined".to_owned()),
            "fhir-request" => Some(format!(
                "invalid request: {}",
                masker.mask(&decision.reason)
            )),
            _ => None,
        };
        if let (Some(error), Some(object)) = (error, answer.as_object_mut()) {
            object.insert("error".into(), Value::String(error));
        }
        answer
    }
}

fn answer_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "allow": false, "error": message })),
    )
        .into_response()
}

/// The request document, read.
#[derive(Debug)]
pub struct Input {
    pub request: AccessRequest,
    /// The token's claims as the PEP's introspection gave them.
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Document {
    input: InputSpec,
}

#[derive(Deserialize)]
struct InputSpec {
    subject: Map<String, Value>,
    request: RequestSpec,
    #[serde(default)]
    context: Map<String, Value>,
}

#[derive(Deserialize)]
struct RequestSpec {
    method: String,
    path: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    query_params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    header: BTreeMap<String, Value>,
    #[serde(default)]
    body: String,
}

/// Reads a `/pdp` request body into the request the engine decides (`base_path` put in
/// front of its path) and the relayed claims.
pub fn parse(body: &[u8], base_path: &str) -> Result<Input, String> {
    let document: Document = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let InputSpec {
        subject,
        request,
        context,
    } = document.input;
    let method = request.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("`request.method` must be an HTTP method".into());
    }
    if !request.path.starts_with('/') {
        return Err("`request.path` must start with `/`".into());
    }
    let (path, inline_query) = match request.path.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (request.path.clone(), String::new()),
    };
    let given = [
        !inline_query.is_empty(),
        !request.query.is_empty(),
        !request.query_params.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err("the query is given more than once (`path`, `query`, `query_params`)".into());
    }
    let query = if !request.query_params.is_empty() {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (name, values) in &request.query_params {
            for value in values {
                serializer.append_pair(name, value);
            }
        }
        serializer.finish()
    } else if !request.query.is_empty() {
        request.query.trim_start_matches('?').to_owned()
    } else {
        inline_query
    };
    if request.header.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} headers"));
    }
    let mut headers = HashMap::new();
    for (name, value) in &request.header {
        let joined = match value {
            Value::String(text) => text.clone(),
            Value::Array(values) => values
                .iter()
                .map(|v| v.as_str().ok_or(()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|()| format!("header `{name}` has a value that is not a string"))?
                .join(","),
            _ => return Err(format!("header `{name}` is not a string or a list")),
        };
        headers.insert(name.to_ascii_lowercase(), joined);
    }
    // The token is the PEP's business: what it verified comes as `subject`.
    headers.remove("authorization");
    headers.remove("dpop");
    let mut copied = HashMap::new();
    for key in CONTEXT_KEYS {
        match context.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                copied.insert(key.to_owned(), text.clone());
            }
            Some(_) => return Err(format!("`context.{key}` must be a string")),
        }
    }
    let full_path = if path == "/" && !base_path.is_empty() {
        base_path.to_owned()
    } else {
        format!("{base_path}{path}")
    };
    let request = AccessRequest {
        method,
        scheme: "https".into(),
        path: full_path,
        query,
        protocol: request.protocol,
        headers,
        body: request.body,
        context: copied,
        door: Door("knooppunt-pdp"),
        ..AccessRequest::default()
    };
    Ok(Input {
        request,
        claims: claims(subject)?,
    })
}

/// The token's claims from `subject`: flat, or the older `{type, id, properties}` whose
/// `client_qualifications` are the scopes.
fn claims(mut subject: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let Some(properties) = subject.remove("properties") else {
        return Ok(subject);
    };
    let Value::Object(mut claims) = properties else {
        return Err("`subject.properties` must be an object".into());
    };
    if let Some(qualifications) = claims.remove("client_qualifications") {
        let Value::Array(list) = qualifications else {
            return Err("`client_qualifications` must be a list".into());
        };
        let scopes: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
        let scopes = scopes.ok_or("`client_qualifications` must be strings")?;
        claims.insert("scope".into(), Value::String(scopes.join(" ")));
    }
    // The older shape predates `active` and `exp` in it: what the PEP relays is its word
    // that the token is active, and it must still say until when.
    for key in ["active", "exp", "iss", "aud", "iat"] {
        if let Some(value) = subject.remove(key) {
            claims.entry(key).or_insert(value);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(request: Value) -> Vec<u8> {
        json!({"input": {
            "subject": {"active": true, "exp": 4_000_000_000u64, "scope": "mcsd_query"},
            "request": request,
            "context": {"data_holder_organization_id": "00000666", "patient_bsn": "", "other": "x"}
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_pep_shape_is_read() {
        let input = parse(
            &body(json!({"method": "get", "protocol": "HTTP/1.1", "path": "/Organization",
                "query": "name=a%20b&_count=5", "header": {"Accept": ["application/fhir+json", "text/plain"], "Authorization": ["Bearer x"]}, "body": ""})),
            "/fhir",
        )
        .unwrap();
        let r = &input.request;
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/fhir/Organization");
        assert_eq!(r.query, "name=a%20b&_count=5");
        assert_eq!(r.headers["accept"], "application/fhir+json,text/plain");
        assert!(!r.headers.contains_key("authorization"));
        assert_eq!(r.context["data_holder_organization_id"], "00000666");
        assert!(!r.context.contains_key("other"));
        assert_eq!(input.claims["scope"], "mcsd_query");
    }

    #[test]
    fn query_params_and_inline_queries_are_read() {
        let input = parse(
            &body(json!({"method": "GET", "path": "/Patient",
                "query_params": {"identifier": ["http://fhir.nl/fhir/NamingSystem/bsn|1"], "_include": ["Patient:general-practitioner"]}})),
            "/fhir",
        )
        .unwrap();
        assert_eq!(
            input.request.query,
            "_include=Patient%3Ageneral-practitioner&identifier=http%3A%2F%2Ffhir.nl%2Ffhir%2FNamingSystem%2Fbsn%7C1"
        );
        let input = parse(
            &body(json!({"method": "POST", "path": "/Patient/_search?"})),
            "/fhir",
        )
        .unwrap();
        assert_eq!(input.request.path, "/fhir/Patient/_search");
        assert_eq!(input.request.query, "");
        // The base itself.
        let input = parse(&body(json!({"method": "POST", "path": "/"})), "/fhir").unwrap();
        assert_eq!(input.request.path, "/fhir");
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        for (request, expected) in [
            (
                json!({"method": "GET", "path": "/a?x=1", "query": "y=2"}),
                "more than once",
            ),
            (
                json!({"method": "GET", "path": "/a", "query": "y=2", "query_params": {"x": ["1"]}}),
                "more than once",
            ),
            (json!({"method": "GET", "path": "a"}), "start with `/`"),
            (json!({"method": "", "path": "/a"}), "HTTP method"),
            (
                json!({"method": "GET", "path": "/a", "header": {"x": 1}}),
                "header `x`",
            ),
        ] {
            let error = parse(&body(request), "/fhir").unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        assert!(parse(b"{", "").is_err());
        assert!(parse(br#"{"input": {}}"#, "").is_err());
        let context = json!({"input": {"subject": {}, "request": {"method": "GET", "path": "/"},
            "context": {"patient_bsn": 123}}});
        assert!(
            parse(context.to_string().as_bytes(), "")
                .unwrap_err()
                .contains("patient_bsn")
        );
    }

    #[test]
    fn the_legacy_subject_is_flattened() {
        let document = json!({"input": {
            "subject": {"type": "organization", "id": "x", "active": true, "exp": 4_000_000_000u64,
                "properties": {"client_qualifications": ["mcsd_query", "bgz"], "subject_organization_id": "00000001"}},
            "request": {"method": "GET", "path": "/Organization"}
        }});
        let input = parse(document.to_string().as_bytes(), "").unwrap();
        assert_eq!(input.claims["scope"], "mcsd_query bgz");
        assert_eq!(input.claims["subject_organization_id"], "00000001");
        assert_eq!(input.claims["active"], true);
        assert!(!input.claims.contains_key("type"));
    }

    #[test]
    fn peers_outside_allow_from_are_told_apart() {
        let config = KnooppuntPdpConfig {
            issuer: "x".into(),
            fhir_base_path: String::new(),
            allow_from: vec!["127.0.0.1/32".into(), "10.0.0.0/8".into()],
        };
        let blocks = config.allowed_peers().unwrap();
        let admits = |ip: &str| {
            let peer: IpAddr = ip.parse().unwrap();
            let peer = match peer {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
                v4 => v4,
            };
            blocks.iter().any(|b| b.contains(&peer))
        };
        assert!(admits("127.0.0.1"));
        assert!(admits("::ffff:10.1.2.3"));
        assert!(!admits("192.168.1.1"));
        assert!(!admits("::1"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any body: an input or a reason, never a panic.
        #[test]
        fn any_body_is_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, "/fhir");
        }

        /// Any strings in the documented fields: read or refused, and a read request's
        /// path is always below the base.
        #[test]
        fn any_fields_are_read_or_refused(
            method in "[A-Za-z]{0,8}",
            path in "\\PC{0,40}",
            query in "\\PC{0,40}",
            header in "\\PC{0,20}",
            bsn in "\\PC{0,12}",
        ) {
            let document = json!({"input": {
                "subject": {"active": true, "scope": query.clone()},
                "request": {"method": method, "path": path, "query": query, "header": {header: [""]}},
                "context": {"patient_bsn": bsn}
            }});
            if let Ok(input) = parse(document.to_string().as_bytes(), "/fhir") {
                prop_assert!(input.request.path.starts_with("/fhir"));
                prop_assert!(!input.request.context.contains_key("sluis_policy"));
            }
        }
    }
}
