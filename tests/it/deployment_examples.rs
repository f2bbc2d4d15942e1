//! The deployment examples in `envoy/`: the Envoy configurations load in a real Envoy
//! (`--mode validate`), and the Kubernetes examples (Istio, Envoy Gateway, the sidecar)
//! point at the Service the Helm chart creates, on its gRPC port, and fail closed.
//!
//! Envoy comes from `scripts/install-envoy.sh`; without it the Envoy test skips, saying
//! so, unless `SLUIS_REQUIRE_ENVOY=1` (set by `scripts/test.sh`).

use std::path::PathBuf;
use std::process::Command;

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// The chart's gRPC port, from its default values.
fn chart_grpc_port() -> u64 {
    let values = &yaml_documents("helm/sluis/values.yaml")[0];
    values["ports"]["grpc"].as_u64().unwrap()
}

#[test]
fn the_envoy_examples_load_in_envoy() {
    let envoy = repo().join(".tools/bin/envoy");
    if !envoy.exists() {
        if std::env::var("SLUIS_REQUIRE_ENVOY").as_deref() == Ok("1") {
            panic!("Envoy is required but missing: run scripts/install-envoy.sh");
        }
        eprintln!(
            "SKIPPED: no Envoy at {} (run scripts/install-envoy.sh)",
            envoy.display()
        );
        return;
    }
    for example in ["envoy/envoy.yaml", "envoy/envoy-sidecar.yaml"] {
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(repo().join(example))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_sidecar_asks_the_charts_headless_service_and_fails_closed() {
    let config = &yaml_documents("envoy/envoy-sidecar.yaml")[0];
    let clusters = config["static_resources"]["clusters"]
        .as_sequence()
        .unwrap();
    let sluis = clusters.iter().find(|c| c["name"] == "sluis").unwrap();
    assert_eq!(sluis["type"], "STRICT_DNS");
    let address = &sluis["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["address"], "sluis-headless.sluis.svc.cluster.local");
    assert_eq!(address["port_value"].as_u64(), Some(chart_grpc_port()));

    let filters = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"];
    let ext_authz = &filters[0]["typed_config"];
    assert_eq!(ext_authz["failure_mode_allow"], false);
    assert_eq!(ext_authz["status_on_error"]["code"], "ServiceUnavailable");
    assert_eq!(
        ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"],
        "sluis"
    );
}

#[test]
fn istio_sends_custom_checks_to_the_charts_service_and_fails_closed() {
    let mesh = &yaml_documents("envoy/istio/mesh-config.yaml")[0];
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(grpc["service"], "sluis.sluis.svc.cluster.local");
    assert_eq!(grpc["port"].as_u64(), Some(chart_grpc_port()));
    assert_eq!(grpc["failOpen"], false);
    assert_eq!(grpc["statusOnError"], "503");

    let policy = &yaml_documents("envoy/istio/authorization-policy.yaml")[0];
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
}

#[test]
fn envoy_gateway_sends_checks_to_the_charts_service_and_fails_closed() {
    let docs = yaml_documents("envoy/envoy-gateway/security-policy.yaml");
    let policy = docs.iter().find(|d| d["kind"] == "SecurityPolicy").unwrap();
    let ext_auth = &policy["spec"]["extAuth"];
    let backend = &ext_auth["grpc"]["backendRefs"][0];
    assert_eq!(backend["name"], "sluis");
    assert_eq!(backend["namespace"], "sluis");
    assert_eq!(backend["port"].as_u64(), Some(chart_grpc_port()));
    assert_eq!(ext_auth["failOpen"], false);

    // A backend in another namespace needs that namespace's consent.
    let grant = docs.iter().find(|d| d["kind"] == "ReferenceGrant").unwrap();
    assert_eq!(grant["metadata"]["namespace"], backend["namespace"]);
    assert_eq!(grant["spec"]["from"][0]["kind"], "SecurityPolicy");
    assert_eq!(
        grant["spec"]["from"][0]["namespace"],
        policy["metadata"]["namespace"]
    );
    assert_eq!(grant["spec"]["to"][0]["name"], backend["name"]);
}
