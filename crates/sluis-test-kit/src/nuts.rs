//! Stand-ins for what a Nuts party's Sluis talks to, besides Mitz ([`crate::mitz`]): the
//! Nuts node's introspection endpoint and the data holder's FHIR server, both on loopback
//! port 0, plus the `sources:` block that points the national use-case policies
//! (`policy/nl`) at them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The Nuts node's introspection path (what knooppunt's PEP calls).
pub const INTROSPECTION_PATH: &str = "/internal/auth/v2/accesstoken/introspect";
/// The Nuts node's DPoP check (what a PEP calls for a token with `cnf.jkt`).
pub const DPOP_VALIDATE_PATH: &str = "/internal/auth/v2/dpop/validate";

/// The Nuts node's introspection endpoint: each registered token gets its claims, any
/// other is inactive. It counts the calls it answered. Its DPoP check
/// ([`DPOP_VALIDATE_PATH`], `{dpop_proof, method, thumbprint, token, url}` → `{valid,
/// reason}`) verifies the proof as a resource server does, each `jti` once.
#[derive(Clone, Default)]
pub struct NutsNode {
    /// token → introspection answer.
    pub answers: Arc<Mutex<HashMap<String, Value>>>,
    calls: Arc<AtomicUsize>,
    validated: Arc<Mutex<Vec<String>>>,
}

impl NutsNode {
    /// A node answering from `answers` (token → introspection answer).
    pub fn with_answers(answers: Arc<Mutex<HashMap<String, Value>>>) -> NutsNode {
        NutsNode {
            answers,
            calls: Arc::default(),
            validated: Arc::default(),
        }
    }

    /// Starts it on `127.0.0.1:0`; returns its address.
    pub async fn start(&self) -> SocketAddr {
        let node = self.clone();
        let validator = self.clone();
        let app = axum::Router::new()
            .route(
                DPOP_VALIDATE_PATH,
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                    let node = validator.clone();
                    async move { axum::Json(node.validate(&body)) }
                }),
            )
            .route(
                INTROSPECTION_PATH,
                axum::routing::post(move |body: String| {
                    let node = node.clone();
                    async move {
                        node.calls.fetch_add(1, Ordering::SeqCst);
                        let token = body
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("token="))
                            .unwrap_or("");
                        let answer = node.answers.lock().unwrap().get(token).cloned();
                        axum::Json(answer.unwrap_or(json!({"active": false})))
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    /// The node's answer to a DPoP check.
    fn validate(&self, body: &Value) -> Value {
        let field = |name: &str| body[name].as_str().unwrap_or("");
        let check = sluis_core::authn::dpop::ProofCheck {
            proof: field("dpop_proof"),
            method: field("method"),
            url: field("url"),
            access_token: field("token"),
            now: crate::now(),
            max_age: 300,
            leeway: 5,
            algorithms: &[
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::RS256,
            ],
            nonce: None,
        };
        let verified = match sluis_core::authn::dpop::verify_proof(&check) {
            Ok(verified) => verified,
            Err(e) => return json!({"valid": false, "reason": e.to_string()}),
        };
        if verified.jkt != field("thumbprint") {
            return json!({"valid": false, "reason": "jkt mismatch"});
        }
        let mut validated = self.validated.lock().unwrap();
        if validated.contains(&verified.jti) {
            return json!({"valid": false, "reason": "jti already used"});
        }
        validated.push(verified.jti);
        json!({"valid": true})
    }

    /// DPoP proofs the node accepted so far.
    pub fn dpop_validated(&self) -> usize {
        self.validated.lock().unwrap().len()
    }

    /// From now on `token` introspects as `claims`.
    pub fn register(&self, token: &str, claims: Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), claims);
    }

    /// Introspection calls answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The data holder's FHIR server (below `/fhir`): reads of the given resources (404 for
/// any other), and every search answered with the given resources of that type as a
/// searchset, whatever its parameters, so that a policy's own check of what comes back is
/// what decides.
#[derive(Clone, Default)]
pub struct HolderFhir {
    resources: Arc<Mutex<Vec<Value>>>,
    calls: Arc<AtomicUsize>,
    /// How long each answer waits (a slow data holder, for coalescing benches).
    delay: std::time::Duration,
}

impl HolderFhir {
    /// Holds `resources` (each with `resourceType` and `id`, or at least `resourceType`).
    pub fn new(resources: Vec<Value>) -> HolderFhir {
        HolderFhir {
            resources: Arc::new(Mutex::new(resources)),
            calls: Arc::default(),
            delay: std::time::Duration::ZERO,
        }
    }

    /// The same server answering each request after `delay`.
    pub fn delayed(self, delay: std::time::Duration) -> HolderFhir {
        HolderFhir { delay, ..self }
    }

    /// Starts it on `127.0.0.1:0`; returns its base URL (`http://127.0.0.1:port/fhir`).
    pub async fn start(&self) -> String {
        let holder = self.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let holder = holder.clone();
            async move {
                holder.calls.fetch_add(1, Ordering::SeqCst);
                if !holder.delay.is_zero() {
                    tokio::time::sleep(holder.delay).await;
                }
                let path = request.uri().path().to_owned();
                let segments: Vec<&str> = path
                    .trim_start_matches("/fhir/")
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .collect();
                let resources = holder.resources.lock().unwrap().clone();
                let of_type = |kind: &str| {
                    resources
                        .iter()
                        .filter(|r| r["resourceType"] == kind)
                        .cloned()
                        .collect::<Vec<_>>()
                };
                let fhir = [("content-type", "application/fhir+json")];
                match segments.as_slice() {
                    [kind, "_search"] | [kind] => {
                        let entry: Vec<Value> = of_type(kind)
                            .into_iter()
                            .map(|r| json!({"resource": r}))
                            .collect();
                        let bundle = json!({"resourceType": "Bundle", "type": "searchset",
                            "total": entry.len(), "entry": entry});
                        (StatusCode::OK, fhir, bundle.to_string()).into_response()
                    }
                    [kind, id] => match of_type(kind).into_iter().find(|r| r["id"] == *id) {
                        Some(resource) => {
                            (StatusCode::OK, fhir, resource.to_string()).into_response()
                        }
                        None => (StatusCode::NOT_FOUND, fhir, "{}".to_owned()).into_response(),
                    },
                    _ => StatusCode::BAD_REQUEST.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}/fhir")
    }

    /// Requests answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Holds `resource` too, from now on.
    pub fn add(&self, resource: Value) {
        self.resources.lock().unwrap().push(resource);
    }
}

/// A Patient with a BSN identifier.
pub fn patient(id: &str, bsn: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}]})
}

/// An active local Consent with scope `eoverdracht` granting the organisation `ura` the
/// resources `data` (`Task/t1`, ...).
pub fn eoverdracht_consent(id: &str, ura: &str, data: &[&str]) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system":
            "http://nuts-foundation.github.io/nl-generic-functions-ig/CodeSystem/nl-gf-consent-scope",
            "code": "eoverdracht"}]},
        "provision": {"type": "permit",
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                "code": "access"}]}],
            "actor": [{"reference": {"identifier":
                {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": ura}}}],
            "data": data.iter().map(|d| json!({"meaning": "instance", "reference": {"reference": d}}))
                .collect::<Vec<_>>()}})
}

/// The `sources:` block `policy/nl` calls (`holder_fhir`, `mitz`), pointed at the
/// stand-ins, with the data holder's Mitz defaults (URA `00000659`, facility type `Z3`).
pub fn sources_yaml(holder_base_url: &str, mitz: &crate::mitz::MitzStandIn) -> String {
    format!(
        r#"sources:
  - name: holder_fhir
    kind: fhir
    base_url: {holder_base_url}
    allow_insecure_http: true
    retries: 0
  - name: mitz
    kind: mitz
    endpoint: {url}
    ca_certificate: {ca}
    client_auth: {{method: mtls, certificate: {cert}, private_key: {{file: {key}}}}}
    retries: 0
    defaults: {{author_ura: "00000659", author_facility_type: Z3, event_code: GGC002, purpose_of_use: TREAT}}
"#,
        url = mitz.url,
        ca = mitz.certs.ca.display(),
        cert = mitz.certs.client_cert.display(),
        key = mitz.certs.client_key.display(),
    )
}
