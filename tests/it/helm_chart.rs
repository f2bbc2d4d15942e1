//! The Helm chart (`helm/sluis`), linted and rendered by the real Helm library.
//!
//! Helm comes from `scripts/install-helm.sh` (PyPI helm-sdkpy, a Helm 4 shared library, in
//! `.tools/helm-sdkpy`); `scripts/helm-chart.py` drives it: `lint` as `helm lint` does,
//! `render` as a real `helm install` against a loopback stand-in of the Kubernetes API, which
//! returns the objects Helm would have created. Without the library the tests skip, saying
//! so, unless `SLUIS_REQUIRE_HELM=1` (set by `scripts/test.sh`).
//!
//! What is checked: the chart lints and renders with the default values and with
//! representative production values; the pod is hardened; probes, ports and the policy
//! mount are what hot reload and Envoy need; the rendered Sluis config passes
//! `sluis validate`; a broken template and bad values fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("helm/sluis")
}

/// Whether the Helm library is installed; panics when it is required but missing.
fn helm_available() -> bool {
    let lib = repo().join(".tools/helm-sdkpy/helm_sdkpy");
    if lib.exists() {
        return true;
    }
    if std::env::var("SLUIS_REQUIRE_HELM").as_deref() == Ok("1") {
        panic!("Helm is required but missing: run scripts/install-helm.sh");
    }
    eprintln!(
        "SKIPPED: no helm-sdkpy at {} (run scripts/install-helm.sh)",
        lib.display()
    );
    false
}

/// Runs `scripts/helm-chart.py ACTION CHART VALUES`: the JSON it prints, or Helm's error.
fn helm(action: &str, chart: &Path, values: &Value) -> Result<Value, String> {
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("scripts/helm-chart.py"))
        .arg(action)
        .arg(chart)
        .arg(&values_file)
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("helm-chart.py prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn render(values: &Value) -> Rendered {
    let out = helm("render", &chart(), values)
        .unwrap_or_else(|e| panic!("the chart does not render with {values}: {e}"));
    Rendered(out)
}

fn lint_errors(chart: &Path, values: &Value) -> u64 {
    let out = helm("lint", chart, values).expect("lint runs");
    out["errors"].as_u64().expect("an error count")
}

struct Rendered(Value);

impl Rendered {
    fn objects(&self) -> &Vec<Value> {
        self.0["objects"].as_array().expect("objects")
    }

    fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self
            .objects()
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        kinds.sort_unstable();
        kinds
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects()
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", self.kinds()))
    }

    fn container(&self) -> &Value {
        &self.get("Deployment", "sluis")["spec"]["template"]["spec"]["containers"][0]
    }

    fn notes(&self) -> &str {
        self.0["notes"].as_str().unwrap_or_default()
    }
}

/// Writes the rendered config and policies as the pod sees them (the mount points under a
/// temporary directory) and runs `sluis validate` on them.
fn sluis_validate(rendered: &Rendered, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("{}/", dir.path().display());
    let config = rendered.get("ConfigMap", "sluis-config")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml in the config ConfigMap")
        .replace("/etc/sluis/", &root)
        .replace("/var/lib/sluis/", &root);
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let config_path = dir.path().join("config/config.yaml");
    std::fs::write(&config_path, config).unwrap();
    if let Some(files) = rendered.get("ConfigMap", "sluis-policies")["data"].as_object() {
        for (name, content) in files {
            let path = dir.path().join("policies").join(name);
            std::fs::write(path, content.as_str().unwrap()).unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["validate", "--config"])
        .arg(&config_path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What every rendering must hold: a hardened pod, probes on the admin port, the policy
/// directory mounted whole, the three ports.
fn assert_hardened_pod(rendered: &Rendered) {
    let pod = &rendered.get("Deployment", "sluis")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);

    let container = rendered.container();
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");

    let ports: Vec<(String, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc".to_string(), 9191),
            ("http".to_string(), 9192),
            ("admin".to_string(), 9190)
        ]
    );
    let service_ports: Vec<u64> = rendered.get("Service", "sluis")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(service_ports, [9191, 9192, 9190]);
    let headless = &rendered.get("Service", "sluis-headless")["spec"];
    assert_eq!(headless["clusterIP"], "None");
    assert_eq!(headless["ports"][0]["port"], 9191);

    // Hot reload: the policy ConfigMap mounted as a directory. A subPath mount is never
    // updated by kubelet, so it would silently freeze the policies.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let policies = mounts
        .iter()
        .find(|m| m["name"] == "policies")
        .expect("a policies mount");
    assert_eq!(policies["mountPath"], "/etc/sluis/policies");
    for mount in mounts {
        assert!(mount.get("subPath").is_none(), "subPath mount: {mount}");
        assert!(mount.get("subPathExpr").is_none(), "subPath mount: {mount}");
    }
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = volumes.iter().find(|v| v["name"] == "policies").unwrap();
    assert_eq!(volume["configMap"]["name"], "sluis-policies");
    // The root filesystem is read-only: SQLite and temporary files need volumes.
    assert!(mounts.iter().any(|m| m["mountPath"] == "/var/lib/sluis"));
    assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"));

    let strategy = &rendered.get("Deployment", "sluis")["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0);
}

#[test]
fn default_values_lint_render_and_validate() {
    if !helm_available() {
        return;
    }
    assert_eq!(
        lint_errors(&chart(), &json!({})),
        0,
        "helm lint with defaults"
    );
    let rendered = render(&json!({}));
    assert_eq!(
        rendered.kinds(),
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_hardened_pod(&rendered);
    assert_eq!(rendered.get("Deployment", "sluis")["spec"]["replicas"], 1);

    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        rendered.get("ConfigMap", "sluis-config")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    // Listeners on every interface of the pod, else nothing outside it reaches them.
    assert_eq!(config["listeners"]["grpc"], "0.0.0.0:9191");
    assert_eq!(config["listeners"]["admin"], "0.0.0.0:9190");
    assert_eq!(config["store"]["url"], "sqlite:/var/lib/sluis/flows.db");

    // Sluis refuses to start without a policy: the chart's placeholder denies everything.
    let policies = &rendered.get("ConfigMap", "sluis-policies")["data"];
    assert_eq!(
        policies.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["deny-all.yaml"]
    );
    let (ok, output) = sluis_validate(&rendered, &[]);
    assert!(ok, "sluis validate on the default config: {output}");
    assert!(output.contains("ok: 1 policies (1 rules)"), "{output}");

    let notes = rendered.notes();
    assert!(
        notes.contains("ext_authz cluster address:  sluis-headless.sluis.svc.cluster.local:9191"),
        "{notes}"
    );
    assert!(notes.contains("no policies are configured"), "{notes}");
}

/// A production shape: PostgreSQL shared by autoscaled replicas, secrets from Secrets,
/// metrics scraped, policies of our own.
fn production_values() -> Value {
    let smart = std::fs::read_to_string(repo().join("policy/smart-fhir-read.yaml")).unwrap();
    json!({
        "image": { "repository": "registry.example.org/sluis", "tag": "1.2.3" },
        "config": {
            "issuers": [{
                "name": "smart-as",
                "issuer": "https://auth.example.org",
                "audiences": ["https://fhir.example.org"],
                "jwks": { "url": "https://auth.example.org/.well-known/jwks.json" },
                "introspection": {
                    "endpoint": "https://auth.example.org/introspect",
                    "client_auth": {
                        "method": "client_secret_basic",
                        "client_id": "sluis",
                        "client_secret": { "env": "IDP_CLIENT_SECRET" }
                    }
                }
            }],
            "logging": { "level": "info", "format": "json" }
        },
        "policies": {
            "smart-fhir-read.yaml": smart,
            "public.yaml": {
                "policies": [{
                    "id": "public-status",
                    "anonymous": true,
                    "match": { "paths": ["/status"], "methods": ["GET"] },
                    "rules": [{ "id": "anyone", "allow": "true" }]
                }]
            }
        },
        "admin": { "tokenSecret": { "name": "sluis-admin", "key": "token" } },
        "store": {
            "type": "postgres",
            "postgres": {
                "url": "postgres://sluis@postgres.db.svc:5432/sluis",
                "passwordSecret": { "name": "sluis-db", "key": "password" }
            }
        },
        "secretEnv": [
            { "name": "IDP_CLIENT_SECRET", "secretName": "sluis-idp", "key": "client-secret" }
        ],
        "secretMounts": [{ "name": "idp-key", "secretName": "sluis-idp-key" }],
        "autoscaling": { "enabled": true, "minReplicas": 3, "maxReplicas": 12 },
        "serviceMonitor": { "enabled": true, "labels": { "release": "prometheus" } },
        "networkPolicy": {
            "clientsFrom": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "gateway" } } }]
        }
    })
}

#[test]
fn production_values_lint_render_and_validate() {
    if !helm_available() {
        return;
    }
    let values = production_values();
    assert_eq!(lint_errors(&chart(), &values), 0, "helm lint with {values}");
    let rendered = render(&values);
    assert_eq!(
        rendered.kinds(),
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    assert_hardened_pod(&rendered);

    let deployment = rendered.get("Deployment", "sluis");
    // The autoscaler owns the replica count: a fixed one would fight it on every upgrade.
    assert!(deployment["spec"].get("replicas").is_none());
    let hpa = rendered.get("HorizontalPodAutoscaler", "sluis");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "sluis");
    assert_eq!(hpa["spec"]["minReplicas"], 3);

    let monitor = rendered.get("ServiceMonitor", "sluis");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");

    // Secrets by reference only: names and keys in the pod spec, no secret value anywhere.
    let container = rendered.container();
    assert_eq!(container["image"], "registry.example.org/sluis:1.2.3");
    let env = container["env"].as_array().unwrap();
    let from_secret = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            .unwrap_or_else(|| panic!("no env {name} in {env:?}"))
    };
    assert_eq!(
        from_secret("SLUIS_DB_PASSWORD"),
        json!({ "name": "sluis-db", "key": "password" })
    );
    assert_eq!(
        from_secret("SLUIS_ADMIN_TOKEN"),
        json!({ "name": "sluis-admin", "key": "token" })
    );
    assert_eq!(
        from_secret("IDP_CLIENT_SECRET"),
        json!({ "name": "sluis-idp", "key": "client-secret" })
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/etc/sluis/secrets/idp-key")
    );

    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        rendered.get("ConfigMap", "sluis-config")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["store"]["url"],
        "postgres://sluis@postgres.db.svc:5432/sluis"
    );
    assert_eq!(config["store"]["password"]["env"], "SLUIS_DB_PASSWORD");
    assert_eq!(config["admin"]["token"]["env"], "SLUIS_ADMIN_TOKEN");

    let policies = rendered.get("ConfigMap", "sluis-policies")["data"].clone();
    assert!(
        policies["smart-fhir-read.yaml"]
            .as_str()
            .unwrap()
            .contains("id: smart-fhir-read")
    );
    assert!(
        policies["public.yaml"]
            .as_str()
            .unwrap()
            .contains("id: public-status")
    );

    let (ok, output) = sluis_validate(
        &rendered,
        &[
            ("SLUIS_ADMIN_TOKEN", "an-admin-token-of-some-length"),
            ("SLUIS_DB_PASSWORD", "db-password"),
            ("IDP_CLIENT_SECRET", "client-secret"),
        ],
    );
    assert!(ok, "sluis validate on the production config: {output}");
    assert!(output.contains("2 policies"), "{output}");
}

#[test]
fn a_broken_template_fails_lint_and_render() {
    if !helm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sluis");
    copy_dir(&chart(), &copy);
    // A nil pointer in a template, as a typo in a values path makes one.
    std::fs::write(
        copy.join("templates/broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  x: {{ .Values.nothing.here }}\n",
    )
    .unwrap();
    assert!(
        lint_errors(&copy, &json!({})) > 0,
        "lint passed a broken template"
    );
    let error = helm("render", &copy, &json!({})).unwrap_err();
    assert!(error.contains("broken.yaml"), "{error}");
}

#[test]
fn the_values_schema_rejects_bad_values() {
    if !helm_available() {
        return;
    }
    let cases = [
        (json!({ "replicaCount": -1 }), "replicaCount"),
        (json!({ "replicaCount": "two" }), "replicaCount"),
        (json!({ "replicas": 2 }), "replicas"),
        (json!({ "ports": { "grpc": 70000 } }), "grpc"),
        (json!({ "store": { "type": "mysql" } }), "type"),
        (json!({ "autoscaling": { "enabled": "yes" } }), "enabled"),
        // The chart owns the listeners: they must bind the pod's interfaces and match the
        // Service.
        (json!({ "config": { "listeners": {} } }), "listeners"),
        (
            json!({ "policies": { "no-extension": "policies: []" } }),
            "no-extension",
        ),
    ];
    for (values, key) in cases {
        let error = helm("render", &chart(), &values)
            .err()
            .unwrap_or_else(|| panic!("the chart accepted {values}"));
        assert!(
            error.contains("schema") && error.contains(key),
            "{values}: {error}"
        );
        assert!(lint_errors(&chart(), &values) > 0, "lint passed {values}");
    }
}

#[test]
fn the_chart_refuses_sqlite_with_several_replicas() {
    if !helm_available() {
        return;
    }
    for values in [
        json!({ "replicaCount": 3 }),
        json!({ "autoscaling": { "enabled": true } }),
    ] {
        let error = helm("render", &chart(), &values).unwrap_err();
        assert!(error.contains("store.type postgres"), "{values}: {error}");
    }
    let error = helm(
        "render",
        &chart(),
        &json!({ "store": { "type": "postgres" } }),
    )
    .unwrap_err();
    assert!(error.contains("store.postgres.url is required"), "{error}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `tls.secretName`: the Secret is mounted whole at /etc/sluis/tls, the config turns TLS on
/// for every listener (mTLS on gRPC and HTTP with `clientCA`, never on admin, whose probes
/// present no certificate), the probes use HTTPS, and the rendered config validates with
/// the Secret's files in place.
#[test]
fn tls_mounts_the_secret_renders_listeners_tls_and_probes_over_https() {
    if !helm_available() {
        return;
    }
    let values =
        json!({"tls": {"secretName": "sluis-tls", "clientCA": true, "reloadInterval": "1m"}});
    assert_eq!(lint_errors(&chart(), &values), 0, "helm lint with TLS");
    let rendered = render(&values);
    let container = rendered.container();
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the TLS Secret is mounted");
    assert_eq!(mount["mountPath"], "/etc/sluis/tls");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees a renewal"
    );
    let pod = &rendered.get("Deployment", "sluis")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("the TLS volume");
    assert_eq!(volume["secret"]["secretName"], "sluis-tls");

    let text = rendered.get("ConfigMap", "sluis-config")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let config: Value = serde_yaml_ng::from_str(&text).unwrap();
    let tls = &config["listeners"]["tls"];
    assert_eq!(tls["certificate"], "/etc/sluis/tls/tls.crt", "{text}");
    assert_eq!(tls["private_key"], "/etc/sluis/tls/tls.key", "{text}");
    assert_eq!(tls["reload_interval"], "1m", "{text}");
    for listener in ["grpc", "http"] {
        assert_eq!(
            tls[listener]["client_ca"], "/etc/sluis/tls/ca.crt",
            "{text}"
        );
    }
    assert!(
        tls.get("admin").is_none() && tls.get("client_ca").is_none(),
        "{text}"
    );

    // The config as the pod sees it, with the Secret's files: `sluis validate` loads them.
    let dir = tempfile::tempdir().unwrap();
    let root = format!("{}/", dir.path().display());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("tls/tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls/tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("tls/ca.crt"), cert.pem()).unwrap();
    if let Some(files) = rendered.get("ConfigMap", "sluis-policies")["data"].as_object() {
        for (name, content) in files {
            std::fs::write(
                dir.path().join("policies").join(name),
                content.as_str().unwrap(),
            )
            .unwrap();
        }
    }
    let config_path = dir.path().join("config/config.yaml");
    std::fs::write(
        &config_path,
        text.replace("/etc/sluis/", &root)
            .replace("/var/lib/sluis/", &root),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["validate", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
