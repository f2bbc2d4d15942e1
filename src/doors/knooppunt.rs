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
//! [{"code", "description"}]}}, "result": {"allow": bool, "reasons": [...]}}`, plus
//! `"error"` when no policy could be chosen. `result` is the same decision as OPA's Data
//! API wraps it, with every policy's reasons: the PEP that sends the older subject reads
//! `result.allow`. Reason
//! descriptions are masked as the decision log masks (BSNs). 400 `{"allow": false,
//! "error": "unable to parse request body: ..."}` for input that cannot be read; 503 when
//! the engine cannot decide (the PEP turns any non-200 into an error, never an allow).

mod input;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use sluis_config::KnooppuntPdpConfig;
use sluis_core::engine::{DoorCapabilities, Engine, Weighed};
use sluis_core::mask::{MaskConfig, Masker};

pub use input::{CONTEXT_KEYS, Input, parse};

/// Request bodies, at most (413 past it), as the OPA door.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

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

/// Whether `peer` is inside one of the `allow_from` blocks.
fn admitted(allow_from: &[ipnet::IpNet], peer: IpAddr) -> bool {
    // An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`.
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    allow_from.iter().any(|block| block.contains(&peer))
}

impl Pdp {
    fn admits(&self, peer: IpAddr) -> bool {
        admitted(&self.allow_from, peer)
    }

    /// knooppunt's answer for a decision.
    fn answer(&self, weighed: &Weighed) -> Value {
        // The decision log's masking when it is on, else the default (BSNs).
        let masker = self
            .engine
            .decision_log()
            .map_or(&self.masker, |log| log.masker());
        let mut policies = Map::new();
        let mut all_reasons = Vec::new();
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
            all_reasons.extend(reasons.iter().cloned());
            policies.insert(
                result.policy.to_string(),
                json!({ "allow": result.allow, "reasons": reasons }),
            );
        }
        let decision = &weighed.decision;
        // `result` repeats the decision as OPA's Data API wraps it: knooppunt's njs PEP
        // (its `authorize.js` of the `{type, id, properties}` subject) reads
        // `result.allow` and `result.reasons`, later ones read `allow`. Both get the same
        // decision, so either PEP drops in unchanged.
        let mut answer = json!({
            "allow": decision.is_allow(),
            "policies": policies,
            "result": { "allow": decision.is_allow(), "reasons": all_reasons },
        });
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
        assert_eq!(
            r.headers.get("accept"),
            Some("application/fhir+json,text/plain")
        );
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
        let admits = |ip: &str| admitted(&blocks, ip.parse().unwrap());
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
