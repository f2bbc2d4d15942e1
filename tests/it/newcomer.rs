//! The first hour of a new user: `scripts/demo.sh` runs as the README tells them to,
//! checks every status it shows, refuses ports that are taken, and leaves nothing behind;
//! a denial is explained in the info log without the token.

use sluis_test_kit as common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Six consecutive free ports, as the demo uses them.
fn free_port_base() -> u16 {
    for attempt in 0..200u16 {
        let base = 20000 + (std::process::id() as u16 % 200) * 40 + attempt * 7;
        let held: Vec<_> = (base..base + 6)
            .map_while(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if held.len() == 6 {
            return base;
        }
    }
    panic!("no six consecutive free ports");
}

fn demo(base: u16) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/demo.sh"))
        .env("SLUIS", env!("CARGO_BIN_EXE_sluis"))
        .env("DEMO_PORT_BASE", base.to_string())
        .output()
        .unwrap()
}

/// Files in the tree that git does not track, ignored ones too, outside `target/`.
fn untracked() -> Vec<String> {
    let out = Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--ignored",
            "--untracked-files=all",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("??") || l.starts_with("!!"))
        .filter(|l| !l.contains(" target/") && !l.contains(" .tools"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_shows_every_answer_it_promises_and_leaves_nothing_behind() {
    if common::gateway::envoy_binary().is_none() {
        return;
    }
    let before = untracked();
    let out = demo(free_port_base());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("ok: every answer was as expected"),
        "{stdout}"
    );
    for (expected, title) in [
        ("(HTTP 200, as expected)", "allowed"),
        ("(HTTP 401, as expected)", "no token"),
        ("(HTTP 403, as expected)", "outside the transfer"),
    ] {
        assert!(stdout.contains(expected), "{title}: {stdout}");
    }

    // The printed commands paste: the token once as `export TOKEN=...`, then `$TOKEN`.
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export TOKEN="))
        .expect("the demo exports the token");
    assert_eq!(stdout.matches(token).count(), 1, "{stdout}");
    assert!(
        stdout.contains(r#"$ curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:"#),
        "{stdout}"
    );

    // Each denial is explained at info, by policy and rule, without the token or path.
    let denials: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("request denied"))
        .collect();
    assert_eq!(denials.len(), 4, "{stdout}");
    let rules = [
        "authentication",
        "resource-in-flow",
        "method-allowed",
        "receiver",
    ];
    for (line, rule) in denials.iter().zip(rules) {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(r#"policy="eoverdracht-receiver""#), "{line}");
        assert!(line.contains(&format!("rule={rule} ")), "{line}");
        assert!(!line.contains("Patient"), "{line}");
    }

    assert_eq!(untracked(), before, "the demo left files in the tree");
}

#[test]
fn the_demo_refuses_ports_that_are_taken() {
    let base = free_port_base();
    let _taken = TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let out = demo(base);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("error: port {} is in use", base + 2)),
        "{stderr}"
    );
}

/// The policy-set version `sluis validate` prints, run in `dir` with `--config config`.
fn policy_set_version(dir: &Path, config: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["validate", "--config", config])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{config}: {stdout}");
    stdout
        .split("policy set ")
        .nth(1)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no version in {stdout}"))
}

#[test]
fn the_policy_set_version_does_not_depend_on_how_the_config_path_is_typed() {
    let absolute = repo().join("examples/config.yaml");
    let versions = [
        policy_set_version(repo(), "examples/config.yaml"),
        policy_set_version(repo(), "./examples/config.yaml"),
        policy_set_version(Path::new("/"), absolute.to_str().unwrap()),
        policy_set_version(&repo().join("examples"), "config.yaml"),
    ];
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    assert_eq!(versions[0].len(), 12, "{versions:?}");
}

/// `key: value` of a top-level YAML key, as written.
fn yaml_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no `{key}:`"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_release_has_a_licence_a_changelog_a_security_policy_and_one_version() {
    let licence = read("LICENSE");
    assert!(licence.trim_start().starts_with("Apache License"));
    assert!(licence.contains("Version 2.0, January 2004"));
    assert!(licence.contains("END OF TERMS AND CONDITIONS"));
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));

    let version = env!("CARGO_PKG_VERSION");
    let changelog = read("CHANGELOG.md");
    assert!(changelog.contains("keepachangelog.com"));
    assert!(
        changelog.contains("## [Unreleased]") || changelog.contains(&format!("## [{version}]")),
        "CHANGELOG.md has no heading for {version} nor Unreleased"
    );

    let security = read("SECURITY.md");
    assert!(security.contains("security@sluis.example"));
    assert!(
        security.contains("placeholder"),
        "the address is marked as one"
    );

    // The crate, the chart's appVersion and so the default image tag: one number.
    let chart = read("helm/sluis/Chart.yaml");
    assert_eq!(yaml_value(&chart, "appVersion"), version);
    assert!(
        read("helm/sluis/templates/deployment.yaml")
            .contains(r#"image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}""#)
    );
}

#[test]
fn the_helm_chart_names_its_image_with_the_app_version() {
    if !repo().join(".tools/helm-sdkpy/helm_sdkpy").exists() {
        eprintln!("SKIPPED: no helm-sdkpy (run scripts/install-helm.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(&values, "{}").unwrap();
    let out = Command::new("python3")
        .arg(repo().join("scripts/helm-chart.py"))
        .args(["render", "helm/sluis"])
        .arg(&values)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images: Vec<&str> = rendered["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|o| {
            o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
        })
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert_eq!(images, [format!("sluis:{}", env!("CARGO_PKG_VERSION"))]);
}

#[test]
fn sluis_version_names_the_git_commit() {
    let expected = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    let line = format!("sluis {} (commit {expected})", env!("CARGO_PKG_VERSION"));
    for args in [&["version"][..], &["--version"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            line,
            "{args:?}"
        );
    }
}

/// The image's config (`examples/container/config.yaml`) with the image's paths mapped
/// into `root` (which holds what the Dockerfile puts in /usr/share/sluis) and its ports
/// into `listeners`; the store directory is `store_dir`.
fn container_config(
    root: &Path,
    listeners: &common::process::Listeners,
    store_dir: &Path,
) -> PathBuf {
    let share = root.join("usr/share/sluis");
    std::fs::create_dir_all(share.join("examples/keys")).unwrap();
    std::fs::copy(
        repo().join("examples/keys/dev-jwks.json"),
        share.join("examples/keys/dev-jwks.json"),
    )
    .unwrap();
    std::fs::create_dir_all(share.join("policy")).unwrap();
    copy_dir(&repo().join("policy"), &share.join("policy"));
    let text = read("examples/container/config.yaml")
        .replace("/usr/share/sluis/", &format!("{}/", share.display()))
        .replace("/var/lib/sluis/", &format!("{}/", store_dir.display()))
        .replace(
            "0.0.0.0:9191",
            &format!("0.0.0.0:{}", listeners.grpc.port()),
        )
        .replace(
            "0.0.0.0:9190",
            &format!("0.0.0.0:{}", listeners.admin.port()),
        )
        .replace(
            "0.0.0.0:9192",
            &format!("0.0.0.0:{}", listeners.http.port()),
        );
    let config = root.join("etc/sluis/config/config.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, text).unwrap();
    config
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_image_ships_its_config_and_everything_the_config_names() {
    let dockerfile = read("Dockerfile");
    let ignore = read(".dockerignore");
    // Copied in the build stage (`COPY` or `cp`), then into the runtime.
    assert!(
        dockerfile.contains("examples/container/config.yaml /out/etc/sluis/config/config.yaml")
    );
    // The usual images unless the build arguments name others (CI's local base).
    assert!(dockerfile.contains("ARG RUST_IMAGE=rust:"));
    assert!(dockerfile.contains("ARG RUNTIME_IMAGE=debian:bookworm-slim"));
    assert!(dockerfile.contains(r#"CMD ["serve", "--config", "/etc/sluis/config/config.yaml"]"#));
    assert!(
        ignore
            .lines()
            .any(|l| l == "!examples/container/config.yaml")
    );
    assert!(
        !dockerfile.contains("$PWD/deploy"),
        "no mount of a folder that does not exist"
    );
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("--chown=65532:65532 /out/var/lib/sluis /var/lib/sluis"));
    // Every absolute path the config names is one the image has.
    let config = read("examples/container/config.yaml");
    for (path, shipped_by) in [
        (
            "/usr/share/sluis/examples/keys/dev-jwks.json",
            "examples/keys/dev-jwks.json /out/usr/share/sluis/examples/keys/dev-jwks.json",
        ),
        (
            "/usr/share/sluis/policy",
            "policy /out/usr/share/sluis/policy",
        ),
        ("sqlite:/var/lib/sluis/flows.db", "/out/var/lib/sluis"),
    ] {
        assert!(config.contains(path), "{path}");
        assert!(dockerfile.contains(shipped_by), "{shipped_by}");
    }
    for listener in [
        "grpc: 0.0.0.0:9191",
        "admin: 0.0.0.0:9190",
        "http: 0.0.0.0:9192",
    ] {
        assert!(config.contains(listener), "{listener}");
    }
}

#[tokio::test]
async fn the_image_config_serves_on_all_interfaces_with_a_writable_store() {
    let dir = tempfile::tempdir().unwrap();
    let listeners = common::process::Listeners::free();
    let store = dir.path().join("var/lib/sluis");
    std::fs::create_dir_all(&store).unwrap();
    let config = container_config(dir.path(), &listeners, &store);
    let mut sluis =
        common::process::SluisProcess::spawn(env!("CARGO_BIN_EXE_sluis"), &config, listeners, &[]);
    sluis.wait_ready().await;
    assert!(sluis.log().contains("0.0.0.0:"), "{}", sluis.log());

    // One decision through it: a flow, a token for its receiver, allowed.
    let client = reqwest::Client::new();
    let created = client
        .post(format!("http://{}/v1/flows", listeners.admin))
        .header("content-type", "application/json")
        .body(
            r#"{"id": "t1", "purpose": "eOverdracht", "actor": "did:web:receiver.example.org",
                 "scopes": ["eOverdracht-receiver"],
                 "resources": [{"path": "Patient/123", "operations": ["read"]}]}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let token = dev_token();
    for (patient, status) in [("123", 200), ("456", 403)] {
        let answer = client
            .get(format!(
                "http://{}/decisions/eoverdracht/fhir/Patient/{patient}",
                listeners.http
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "Patient/{patient}");
    }
    assert!(store.join("flows.db").exists());
}

fn dev_token() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["dev-token", "--key"])
        .arg(repo().join("examples/keys/dev-rsa.pem"))
        .args(["--kid", "dev-1", "--claims"])
        .arg(
            r#"{"iss":"https://nuts.example.org","aud":"https://fhir.example.org","sub":"did:web:receiver.example.org","client_id":"did:web:receiver.example.org","scope":"eOverdracht-receiver"}"#,
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let listeners = common::process::Listeners::free();
    // A directory that does not exist (root could write a read-only one).
    let store = dir.path().join("no-such-volume");
    let config = container_config(dir.path(), &listeners, &store);
    let mut sluis =
        common::process::SluisProcess::spawn(env!("CARGO_BIN_EXE_sluis"), &config, listeners, &[]);
    let status = sluis.exit_status().await;
    assert!(!status.success());
    let log = sluis.log();
    let file = store.join("flows.db");
    assert!(
        log.contains(&format!("cannot open the flow store `{}`", file.display())),
        "{log}"
    );
    assert!(log.contains("may this user write to it"), "{log}");
}

// --- TLS on every listener ---

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

fn certificate_authority(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    name: &str,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> Pem {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

struct TlsServer {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    grpc: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl TlsServer {
    /// TLS on every listener with one server certificate; the admin listener requires a
    /// client certificate of the same CA.
    async fn start() -> TlsServer {
        TlsServer::start_with(
            "    admin: { certificate: tls.crt, private_key: tls.key, client_ca: ca.crt }\n",
        )
        .await
    }

    /// TLS on every listener with the server certificate in `tls.crt`, the test CA in
    /// `ca.crt`, and `more` added to `listeners.tls`.
    async fn start_with(more: &str) -> TlsServer {
        let ca = certificate_authority("Sluis test CA");
        let server = leaf(&ca, "sluis", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let setup = common::Setup::new(
            &common::config_yaml("127.0.0.1:1", "127.0.0.1:2"),
            &[("api.yaml", common::POLICY)],
        );
        let dir = setup.dir;
        std::fs::write(dir.path().join("tls.crt"), &server.cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &server.key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        let config = std::fs::read_to_string(dir.path().join("sluis.yaml"))
            .unwrap()
            .replace(
                "  admin: 127.0.0.1:2\n",
                &format!("  admin: 127.0.0.1:2\n  tls:\n    certificate: tls.crt\n    private_key: tls.key\n    reload_interval: 1s\n{more}"),
            );
        std::fs::write(dir.path().join("sluis.yaml"), config).unwrap();
        let config = sluis_config::Config::load(&dir.path().join("sluis.yaml")).unwrap();
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let (grpc, admin, http) = (bind().await, bind().await, bind().await);
        let addresses = (
            grpc.local_addr().unwrap(),
            admin.local_addr().unwrap(),
            http.local_addr().unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let bound = sluis::server::Bound {
            grpc,
            admin,
            http: Some(http),
        };
        let task = tokio::spawn(sluis::server::run(config, bound, async move {
            let _ = stopped.await;
        }));
        let server = TlsServer {
            dir,
            ca,
            grpc: addresses.0,
            admin: addresses.1,
            http: addresses.2,
            stop: Some(stop),
            task,
        };
        let client = server.https(Some(&server.client_certificate()));
        for _ in 0..100 {
            if let Ok(answer) = client
                .get(format!("https://localhost:{}/readyz", server.admin.port()))
                .send()
                .await
                && answer.status() == 200
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("sluis over TLS did not become ready");
    }

    fn client_certificate(&self) -> Pem {
        leaf(
            &self.ca,
            "admin client",
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// An HTTPS client trusting the test CA, with `identity` as its client certificate.
    fn https(&self, identity: Option<&Pem>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap())
            .resolve("localhost", "127.0.0.1:0".parse().unwrap());
        if let Some(pem) = identity {
            builder = builder.identity(
                reqwest::Identity::from_pem(format!("{}{}", pem.cert, pem.key).as_bytes()).unwrap(),
            );
        }
        builder.build().unwrap()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(
                self.ca.der().to_vec(),
            ))
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// The leaf certificate a new TLS connection to `address` is served.
    async fn served_certificate(&self, address: std::net::SocketAddr) -> Vec<u8> {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.client_config())
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// Connects tonic to the gRPC listener over TLS.
#[derive(Clone)]
struct TlsConnect {
    address: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl tonic::codegen::Service<tonic::transport::Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Self::Future {
        let (address, config) = (self.address, self.config.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect("localhost".try_into().unwrap(), tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[tokio::test]
async fn every_listener_speaks_tls_and_the_admin_one_wants_a_client_certificate() {
    let server = TlsServer::start().await;
    let token = common::token(&common::claims());

    // The HTTP door over HTTPS decides; plaintext is told TLS is required.
    let https = server.https(None);
    let url = format!(
        "https://localhost:{}/decisions/api/items",
        server.http.port()
    );
    let answer = https.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-user"], "user-1");
    let denied = https
        .get(format!(
            "https://localhost:{}/decisions/api/admin/x",
            server.http.port()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let plaintext = reqwest::get(format!("http://{}/decisions/api/items", server.http))
        .await
        .unwrap();
    assert_eq!(plaintext.status(), 400);
    assert_eq!(
        plaintext.text().await.unwrap(),
        "this listener requires TLS\n"
    );

    // The gRPC door over TLS, with a tonic client.
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(TlsConnect {
            address: server.grpc,
            config: server.client_config(),
        })
        .await
        .unwrap();
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            channel,
        );
    for (path, code) in [("/api/items", 0), ("/api/admin/x", 7)] {
        let answer = client
            .check(common::Req::get(path).bearer(&token).into_check())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status.unwrap().code, code, "{path}");
    }
    // Plaintext gRPC gets no answer.
    let plaintext = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", server.grpc),
    )
    .await;
    if let Ok(mut plaintext) = plaintext {
        assert!(
            plaintext
                .check(common::Req::get("/api/items").bearer(&token).into_check())
                .await
                .is_err()
        );
    }

    // Admin: mTLS. No client certificate, or one of another CA: no handshake.
    let readyz = format!("https://localhost:{}/readyz", server.admin.port());
    assert!(server.https(None).get(&readyz).send().await.is_err());
    let other_ca = certificate_authority("Another CA");
    let stranger = leaf(
        &other_ca,
        "stranger",
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    assert!(
        server
            .https(Some(&stranger))
            .get(&readyz)
            .send()
            .await
            .is_err()
    );
    let admin = server.https(Some(&server.client_certificate()));
    assert_eq!(admin.get(&readyz).send().await.unwrap().status(), 200);
    let plaintext = reqwest::get(format!("http://{}/v1/flows", server.admin))
        .await
        .unwrap();
    assert_eq!(plaintext.status(), 400);

    server.stop().await;
}

#[tokio::test]
async fn a_changed_certificate_is_served_to_new_connections_and_a_broken_one_is_not() {
    let server = TlsServer::start().await;
    let before = server.served_certificate(server.http).await;

    // Written beside and renamed over, as kubelet and cert-manager do.
    let renewed = leaf(
        &server.ca,
        "sluis renewed",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let write = |name: &str, text: &str| {
        let tmp = server.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, server.dir.path().join(name)).unwrap();
    };
    write("tls.key", &renewed.key);
    write("tls.crt", &renewed.cert);
    let mut after = before.clone();
    for _ in 0..60 {
        after = server.served_certificate(server.http).await;
        if after != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(
        after, before,
        "the renewed certificate was not served within 6 s"
    );

    // A key that does not belong to the certificate: the renewed one stays.
    let other = leaf(
        &server.ca,
        "other",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    write("tls.key", &other.key);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(server.served_certificate(server.http).await, after);
    server.stop().await;
}

/// SIGHUP reloads the TLS files at once, as it does the policies: with a poll interval of
/// an hour, a renewed certificate is served right after the signal.
#[tokio::test]
async fn sighup_reloads_the_certificate_without_waiting_for_the_poll() {
    let ca = certificate_authority("Sluis test CA");
    let first = leaf(&ca, "sluis", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let listeners = sluis_test_kit::process::Listeners::free();
    let config = listeners.config_yaml().replace(
        &format!("  http: {}\n", listeners.http),
        &format!(
            "  http: {}\n  tls:\n    http: {{ certificate: tls.crt, private_key: tls.key }}\n    reload_interval: 1h\n",
            listeners.http
        ),
    );
    let setup = common::Setup::new(&config, &[("api.yaml", common::POLICY)]);
    let dir = setup.dir.path();
    let write = |name: &str, text: &str| {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    write("tls.crt", &first.cert);
    write("tls.key", &first.key);
    let mut process = sluis_test_kit::process::SluisProcess::spawn(
        env!("CARGO_BIN_EXE_sluis"),
        &setup.config_path(),
        listeners,
        &[],
    );
    process.wait_ready().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca.der().to_vec()))
        .unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let served = || async {
        let tcp = tokio::net::TcpStream::connect(listeners.http)
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let before = served().await;
    let renewed = leaf(
        &ca,
        "sluis renewed",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    write("tls.key", &renewed.key);
    write("tls.crt", &renewed.cert);
    process.hangup();
    let mut after = before.clone();
    for _ in 0..100 {
        after = served().await;
        if after != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(
        after,
        before,
        "SIGHUP did not reload the certificate:\n{}",
        process.log()
    );
    assert!(
        process.log().contains("SIGHUP: reloading the TLS files"),
        "{}",
        process.log()
    );
}

/// Clients that connect to the gRPC listener with TLS and never send a ClientHello hold
/// no more than `max_connections` handshakes: one more ends the oldest, long before the
/// handshake timeout, and a real client is still served.
#[tokio::test]
async fn idle_connections_cannot_keep_a_tls_client_from_the_grpc_door() {
    let ca = certificate_authority("Sluis test CA");
    let server = leaf(&ca, "sluis", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let listeners = sluis_test_kit::process::Listeners::free();
    let config = listeners.config_yaml().replace(
        &format!("  http: {}\n", listeners.http),
        &format!(
            "  http: {}\n  limits: {{ max_connections: 4, header_read_timeout: 120s }}\n  tls:\n    grpc: {{ certificate: tls.crt, private_key: tls.key }}\n",
            listeners.http
        ),
    );
    let setup = common::Setup::new(&config, &[("api.yaml", common::POLICY)]);
    std::fs::write(setup.dir.path().join("tls.crt"), &server.cert).unwrap();
    std::fs::write(setup.dir.path().join("tls.key"), &server.key).unwrap();
    let mut process = sluis_test_kit::process::SluisProcess::spawn(
        env!("CARGO_BIN_EXE_sluis"),
        &setup.config_path(),
        listeners,
        &[],
    );
    process.wait_ready().await;

    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(
            tokio::net::TcpStream::connect(listeners.grpc)
                .await
                .unwrap(),
        );
    }
    // The oldest idle connection is ended by the newer ones (its handshake timeout is
    // two minutes away).
    let mut byte = [0u8; 1];
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::io::AsyncReadExt::read(&mut idle[0], &mut byte),
    )
    .await
    .expect("the oldest idle handshake was not ended");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca.der().to_vec()))
        .unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(listeners.grpc)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("a client after the idle ones is not served");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(idle);
}

#[test]
fn tls_files_that_do_not_load_fail_validate_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificate_authority("CA");
    let one = leaf(&ca, "one", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let two = leaf(&ca, "two", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path().join("tls.crt"), &one.cert).unwrap();
    std::fs::write(dir.path().join("wrong.key"), &two.key).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/api.yaml"), common::POLICY).unwrap();
    let base = common::config_yaml("127.0.0.1:9191", "127.0.0.1:9190");
    for (tls, expected) in [
        (
            "  tls: { certificate: tls.crt, private_key: wrong.key }\n",
            "certificate `",
        ),
        (
            "  tls: { certificate: tls.crt, private_key: missing.key }\n",
            "missing.key",
        ),
        (
            "  tls: { certificate: tls.crt }\n",
            "`listeners.tls.certificate` needs `private_key`",
        ),
        (
            "  tls: { grpc: { certificate: tls.crt, private_key: tls.crt } }\n",
            "listeners.tls (grpc): private_key",
        ),
    ] {
        let config = base.replace(
            "  admin: 127.0.0.1:9190\n",
            &format!("  admin: 127.0.0.1:9190\n{tls}"),
        );
        std::fs::write(dir.path().join("sluis.yaml"), config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["validate", "--config"])
            .arg(dir.path().join("sluis.yaml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tls}: {stderr}");
        assert!(stderr.contains(expected), "{tls}: {stderr}");
    }
}

/// The Envoy upstream TLS settings for the `sluis` cluster, with Envoy's client
/// certificate in `dir`.
fn envoy_upstream_tls(dir: &Path) -> String {
    format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificates:
          - certificate_chain: {{ filename: {dir}/envoy.crt }}
            private_key: {{ filename: {dir}/envoy.key }}
          validation_context:
            trusted_ca: {{ filename: {dir}/ca.crt }}
"#,
        dir = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_asks_the_grpc_door_over_mutual_tls() {
    let Some(envoy) = common::gateway::envoy_binary() else {
        return;
    };
    // Every listener requires a client certificate of the test CA.
    let server = TlsServer::start_with("    client_ca: ca.crt\n").await;
    let (upstream, seen) = common::gateway::upstream().await;
    let token = common::token(&common::claims());
    let client = reqwest::Client::new();

    for (name, trusted) in [("trusted", true), ("stranger", false)] {
        let dir = server.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let other_ca = certificate_authority("Another CA");
        let ca = if trusted { &server.ca } else { &other_ca };
        let envoy_cert = leaf(ca, "envoy", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(dir.join("envoy.crt"), &envoy_cert.cert).unwrap();
        std::fs::write(dir.join("envoy.key"), &envoy_cert.key).unwrap();
        std::fs::write(dir.join("ca.crt"), server.ca.pem()).unwrap();
        let (listen, admin) = (common::gateway::free_port(), common::gateway::free_port());
        let tls = envoy_upstream_tls(&dir);
        let _envoy = common::gateway::start_envoy_edited(
            &envoy,
            &dir,
            listen,
            server.grpc.port(),
            upstream,
            admin,
            |config| {
                config.replacen(
                    "  - name: sluis\n    type: STATIC\n",
                    &format!("  - name: sluis\n    type: STATIC\n{tls}"),
                    1,
                )
            },
        );
        let envoy_admin = format!("127.0.0.1:{admin}");
        common::gateway::wait_until("envoy", || common::gateway::http_ok(&envoy_admin, "/ready"))
            .await;
        let get = |path: &str| {
            client
                .get(format!("http://127.0.0.1:{listen}{path}"))
                .bearer_auth(&token)
                .send()
        };
        let allowed = get("/api/items").await.unwrap().status().as_u16();
        let denied = get("/api/admin/x").await.unwrap().status().as_u16();
        if trusted {
            assert_eq!((allowed, denied), (200, 403), "through Envoy over mTLS");
        } else {
            // No handshake, no answer: Envoy fails closed, nothing goes upstream.
            assert_eq!(
                (allowed, denied),
                (503, 503),
                "an Envoy the CA did not sign"
            );
        }
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the allowed request went upstream"
    );
    server.stop().await;
}

/// The fenced blocks of the README's Quickstart section, with their info string.
fn quickstart_blocks() -> Vec<(String, String)> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Quickstart section");
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((info.to_owned(), body.join("\n")));
        }
    }
    blocks
}

#[test]
fn the_readme_quickstart_works_as_written() {
    // The commands as a newcomer pastes them, with two changes only: the built binary
    // for `cargo run` (cargo's lock is held while tests run) and free ports for 9190-9192
    // (with the flow store in a temp dir), so the test runs beside anything else.
    let dir = tempfile::tempdir().unwrap();
    let listeners = common::process::Listeners::free();
    let ports = [
        ("127.0.0.1:9190", listeners.admin.to_string()),
        ("127.0.0.1:9191", listeners.grpc.to_string()),
        ("127.0.0.1:9192", listeners.http.to_string()),
    ];
    let mut config = read("examples/config.yaml")
        .replace(
            "{ file: keys/",
            &format!("{{ file: {}/examples/keys/", repo().display()),
        )
        .replace(
            "  - ../policy\n",
            &format!("  - {}/policy\n", repo().display()),
        )
        .replace(
            "  - ../policy/sources\n",
            &format!("  - {}/policy/sources\n", repo().display()),
        )
        .replace(
            " keys/dev-mitz-client",
            &format!(" {}/examples/keys/dev-mitz-client", repo().display()),
        )
        .replace(
            "  url: sqlite:sluis-flows.db\n",
            &format!("  url: sqlite:{}/flows.db\n", dir.path().display()),
        );
    for (from, to) in &ports {
        config = config.replace(from, to);
    }
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, &config).unwrap();
    let adapt = |command: &str| {
        let mut command = command
            .replace(
                "cargo run --quiet -- ",
                &format!("{} ", env!("CARGO_BIN_EXE_sluis")),
            )
            .replace(
                "cargo run -- ",
                &format!("{} ", env!("CARGO_BIN_EXE_sluis")),
            )
            .replace("examples/config.yaml", config_path.to_str().unwrap());
        for (from, to) in &ports {
            command = command.replace(from, to);
        }
        command
    };

    let blocks = quickstart_blocks();
    let shell: Vec<&String> = blocks
        .iter()
        .filter(|(info, body)| info == "sh" && !body.contains("scripts/"))
        .map(|(_, body)| body)
        .collect();
    let (serve, rest) = shell.split_first().expect("the quickstart has commands");
    assert!(
        serve.contains(" serve "),
        "the first command starts Sluis: {serve}"
    );
    let serve = adapt(serve);
    let log = dir.path().join("sluis.log");
    let mut sluis = Command::new("bash")
        .args(["-c", &format!("exec {serve}")])
        .current_dir(repo())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("sluis.err")).unwrap())
        .spawn()
        .unwrap();
    let ready = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        common::gateway::http_ok(&listeners.admin.to_string(), "/readyz")
    });
    // One script, as one terminal: `export TOKEN` carries over to the next commands.
    let script: String = rest
        .iter()
        .enumerate()
        .map(|(i, block)| format!("echo '=== {i}'\n{}\n", adapt(block)))
        .collect();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo())
        .output()
        .unwrap();
    let _ = sluis.kill();
    let _ = sluis.wait();
    let stderr_log = std::fs::read_to_string(dir.path().join("sluis.err")).unwrap_or_default();
    let service_log = std::fs::read_to_string(&log).unwrap_or_default() + &stderr_log;
    assert!(ready, "sluis did not become ready:\n{service_log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the README says each answers.
    let answers: Vec<&str> = stdout.split("=== ").skip(1).collect();
    let status = |i: usize| {
        answers
            .get(i)
            .and_then(|a| a.lines().find(|l| l.starts_with("HTTP/")))
            .unwrap_or_else(|| panic!("no answer to command {i}: {stdout}"))
    };
    let mut checked = 0;
    for (i, block) in rest.iter().enumerate() {
        let expected = if block.contains("/v1/flows") {
            "HTTP/1.1 201 Created"
        } else if block.contains("Patient/123") {
            "HTTP/1.1 200 OK"
        } else if block.contains("Patient/456") {
            "HTTP/1.1 403 Forbidden"
        } else {
            continue;
        };
        assert_eq!(status(i).trim(), expected, "{block}");
        checked += 1;
    }
    assert_eq!(checked, 3, "register, allowed, denied: {stdout}");

    // The log line the README shows is the one Sluis writes for the 403.
    let shown = blocks
        .iter()
        .find(|(info, body)| info == "text" && body.contains("request denied"))
        .map(|(_, body)| body.trim().to_owned())
        .expect("the README shows the denial's log line");
    let strip_colour = regex::Regex::new("\u{1b}\\[[0-9;]*m").unwrap();
    let service_log = strip_colour.replace_all(&service_log, "");
    assert!(
        service_log.lines().any(|l| l.ends_with(&shown)),
        "README shows `{shown}`; the log has:\n{service_log}"
    );
}
