//! No BSN and no token leaves a real `sluis serve` at `RUST_LOG=trace`: decisions that
//! carry a BSN (to a FHIR server that echoes it back in an error, to Mitz over mutual TLS,
//! to a JSON API with a bearer token from the environment) are made, and the process's
//! whole output, the spans it exports and `/metrics` are searched. A separate process
//! has its own global subscriber, so nothing depends on what other tests run at once.

use sluis_test_kit as kit;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use kit::mitz::MitzStandIn;
use kit::process::{Listeners, SluisProcess};
use kit::{Req, Setup};

use super::sources::{Reply, StandIn};
use super::tracing_otlp::grpc_receiver;

/// Valid by the 11-check, so every source takes it.
const BSN: &str = "900186021";
/// The JSON API's bearer token, from the environment.
const API_TOKEN: &str = "consent-api-secret-4f9d1c";

const POLICY: &str = r#"
policies:
  - id: consent
    issuers: [test]
    match: {paths: ["/consent/*"]}
    rules:
      - id: patient-found
        deny: >-
          sources.holder({'search': 'Patient', 'params':
            {'identifier': 'http://fhir.nl/fhir/NamingSystem/bsn|' + request.headers['x-bsn']}}).entry.size() == 0
      - id: mitz-and-api
        allow: >-
          sources.mitz({'bsn': request.headers['x-bsn'], 'requester_ura': '00000666',
            'requester_facility_type': 'Z3', 'subject_role': '01.015'}).decision == 'Permit'
            && sources.consent({'patient': request.headers['x-bsn']}).consent == true
  - id: observations
    issuers: [test]
    match: {paths: ["/observations"]}
    rules:
      - id: has-observations
        allow: >-
          sources.holder({'search': 'Observation', 'params':
            {'patient.identifier': 'http://fhir.nl/fhir/NamingSystem/bsn|' + request.headers['x-bsn']}}).entry.size() > 0
  - id: read
    issuers: [test]
    match: {paths: ["/patients/*"]}
    rules:
      - id: bsn-of-patient
        allow: >-
          sources.holder({'read': 'Patient/' + request.segments[1]}).identifier[0].value
            == request.headers['x-bsn']
"#;

/// A FHIR server whose Patient/1 has the BSN and that fails anything but Patient reads
/// and searches with an error echoing the request, and a consent API wanting `API_TOKEN`.
fn script(target: &str, body: &str, auth: Option<&str>) -> Reply {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/fhir/Patient/_search" => Reply::json(serde_json::json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": {"resourceType": "Patient", "id": "1",
                "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN}]}}]
        })),
        "/fhir/Patient/1" => Reply::json(serde_json::json!({
            "resourceType": "Patient", "id": "1",
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN}]
        })),
        _ if path.starts_with("/v1/patients/") => {
            if auth == Some(&format!("Bearer {API_TOKEN}")[..]) {
                Reply {
                    content_type: "application/json",
                    ..Reply::json(serde_json::json!({"consent": true, "patient": BSN}))
                }
            } else {
                Reply::status(401)
            }
        }
        // Anything else: an error page echoing the request, BSN and all.
        _ => Reply {
            status: 500,
            content_type: "text/plain",
            body: format!("cannot answer {target} {body}"),
            headers: Vec::new(),
        },
    }
}

#[tokio::test]
async fn no_bsn_or_token_leaves_the_process_at_trace_level() {
    let fhir = StandIn::start(script).await;
    let mitz = MitzStandIn::start().await;
    let (endpoint, received) = grpc_receiver().await;
    let listeners = Listeners::free();
    let config = format!(
        r#"{listeners}
tracing:
  otlp: {{endpoint: '{endpoint}', protocol: grpc, timeout: 3s}}
  sampling_ratio: 1.0
sources:
  - name: holder
    kind: fhir
    base_url: {fhir}/fhir
    allow_insecure_http: true
  - name: mitz
    kind: mitz
    endpoint: {mitz_url}
    ca_certificate: {ca}
    client_auth: {{method: mtls, certificate: {cert}, private_key: {{file: {key}}}}}
    defaults: {{author_ura: "00000659", author_facility_type: Z3, event_code: GGC002, purpose_of_use: TREAT}}
  - name: consent
    kind: http
    url: {fhir}/v1/patients/{{patient}}/consent
    allow_insecure_http: true
    client_auth: {{method: bearer, token: {{env: SLUIS_TEST_CONSENT_TOKEN}}}}
"#,
        listeners = listeners.config_yaml(),
        fhir = fhir.url(),
        mitz_url = mitz.url,
        ca = mitz.certs.ca.display(),
        cert = mitz.certs.client_cert.display(),
        key = mitz.certs.client_key.display(),
    );
    let setup = Setup::new(&config, &[("p.yaml", POLICY)]);
    let mut process = SluisProcess::spawn(
        env!("CARGO_BIN_EXE_sluis"),
        &setup.config_path(),
        listeners,
        &[
            ("RUST_LOG", "trace"),
            ("SLUIS_TEST_CONSENT_TOKEN", API_TOKEN),
        ],
    );
    process.wait_ready().await;
    let token = kit::token(&kit::claims());
    let mut client = AuthorizationClient::connect(format!("http://{}", listeners.grpc))
        .await
        .unwrap();
    let mut ask = async |path: &str| {
        let request = Req::get(path).bearer(&token).header("x-bsn", BSN);
        kit::Answer::from(
            client
                .check(request.into_check())
                .await
                .unwrap()
                .into_inner(),
        )
    };
    // FHIR search, Mitz and the JSON API, all with the BSN: allowed.
    let answer = ask("/consent/1").await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, process.log());
    // A read whose answer holds the BSN: allowed.
    assert_eq!(ask("/patients/1").await.status, 200);
    // A search the FHIR server fails, echoing the BSN it was asked: denied, closed.
    assert_eq!(ask("/observations").await.status, 403);
    assert!(fhir.calls() >= 4);
    assert_eq!(mitz.calls(), 1);
    assert_eq!(
        mitz.last_request().unwrap().question.patient_bsn,
        BSN,
        "the BSN did reach Mitz"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", listeners.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluis_source_calls_total{source=\"mitz\"}"),
        "{metrics}"
    );
    process.terminate();
    let status = process.exit_status().await;
    let output = process.log();
    assert!(status.success(), "{status:?}\n{output}");
    // The capture is real: trace-level lines from the look-ups' HTTP clients, and the
    // look-up spans (exported, as decision spans are, not logged).
    assert!(output.contains("TRACE"), "{output}");
    assert!(output.contains("reqwest"), "{output}");
    assert!(
        kit::eventually(|| async { received.spans().iter().any(|s| s.name == "sluis.lookup") })
            .await,
        "no look-up span exported"
    );
    let spans: Vec<String> = received.spans().into_iter().map(|s| s.text).collect();
    for (what, text) in [
        ("the output", output.as_str()),
        ("/metrics", metrics.as_str()),
        ("the spans", &spans.join("\n")),
    ] {
        for secret in [BSN, token.as_str(), API_TOKEN] {
            assert!(
                !text.contains(secret),
                "{what} holds `{secret}`:\n{}",
                text.lines()
                    .filter(|line| line.contains(secret))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
