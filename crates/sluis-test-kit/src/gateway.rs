//! Helpers for end-to-end tests through real gateways: finding Envoy, NGINX and Caddy,
//! starting them on the shipped configs, free ports, child processes that die with the
//! test, a recording upstream, readiness probes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// The Envoy of `scripts/install-envoy.sh`. Without it the caller should skip (saying
/// so), unless `SLUIS_REQUIRE_ENVOY=1` (set by `.ci/run`), where that is a failure.
pub fn envoy_binary() -> Option<PathBuf> {
    let path = crate::root().join(".tools/bin/envoy");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("SLUIS_REQUIRE_ENVOY").as_deref() == Ok("1") {
        panic!("Envoy is required but missing: run scripts/install-envoy.sh");
    }
    eprintln!(
        "SKIPPED: no Envoy at {} (run scripts/install-envoy.sh)",
        path.display()
    );
    None
}

pub use crate::free_port;

/// Kills the child when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The upstream: answers 200 with what it received, and remembers it.
pub async fn upstream() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let headers: serde_json::Map<String, Value> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                .collect();
            let seen = json!({
                "method": request.method().as_str(),
                "uri": request.uri().to_string(),
                "headers": headers,
            });
            // Read the body before answering: a reply to an unread body makes the gateway's
            // write fail (EPIPE) and answer 502, a flake under load.
            let _ = axum::body::to_bytes(request.into_body(), 16 * 1024 * 1024).await;
            record.lock().unwrap().push(seen.clone());
            axum::Json(seen)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

/// A plain HTTP/1.1 GET answering 200, without an async client in a sync closure.
pub fn http_ok(address: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Envoy on `envoy/envoy-test.yaml.tmpl`: listening on `listen`, asking Sluis's gRPC
/// port `sluis`, forwarding to `upstream`, its admin on `admin`. Its config is written
/// into `dir`.
pub fn start_envoy(
    envoy: &std::path::Path,
    dir: &std::path::Path,
    listen: u16,
    sluis: u16,
    upstream: u16,
    admin: u16,
) -> Process {
    start_envoy_edited(envoy, dir, listen, sluis, upstream, admin, |config| config)
}

/// [`start_envoy`], with the config text changed by `edit` first (a setting the example
/// only describes in a comment, a shorter timeout).
pub fn start_envoy_edited(
    envoy: &std::path::Path,
    dir: &std::path::Path,
    listen: u16,
    sluis: u16,
    upstream: u16,
    admin: u16,
    edit: impl FnOnce(String) -> String,
) -> Process {
    let template =
        std::fs::read_to_string(crate::root().join("envoy/envoy-test.yaml.tmpl")).unwrap();
    let template = edit(template);
    let config = dir.join("envoy.yaml");
    std::fs::write(
        &config,
        template
            .replace("{{LISTEN_PORT}}", &listen.to_string())
            .replace("{{SLUIS_PORT}}", &sluis.to_string())
            .replace("{{UPSTREAM_PORT}}", &upstream.to_string())
            .replace("{{ADMIN_PORT}}", &admin.to_string()),
    )
    .unwrap();
    Process(
        std::process::Command::new(envoy)
            .args(["-c", config.to_str().unwrap(), "--disable-hot-restart"])
            .args(["--log-level", "warning", "--concurrency", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Polls `ready` every 50 ms for up to 10 s.
pub async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not become ready");
}

/// A Debian-installed tool (`nginx`, `caddy`), or `None`: the caller should skip (saying
/// so), unless `SLUIS_REQUIRE_<TOOL>=1` (set by `scripts/test.sh`), where that is a
/// failure.
pub fn system_binary(name: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        let require = format!("SLUIS_REQUIRE_{}", name.to_ascii_uppercase());
        if std::env::var(&require).as_deref() == Ok("1") {
            panic!("{name} is required but missing: run scripts/install-nginx.sh");
        }
        eprintln!("SKIPPED: no {name} (run scripts/install-nginx.sh)");
    }
    found
}

/// A file the NGINX tests need beside NGINX itself (a module such as njs, the Kong
/// plugin's `busted`), or `None`: the caller should skip (saying so), unless
/// `SLUIS_REQUIRE_NGINX=1` (set by `scripts/test.sh`), where that is a failure.
pub fn nginx_extra(path: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("SLUIS_REQUIRE_NGINX").as_deref() == Ok("1") {
        panic!(
            "{} is required but missing: run scripts/install-nginx.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: no {} (run scripts/install-nginx.sh)",
        path.display()
    );
    None
}

/// Waits (up to 10 s) until something accepts connections on loopback `port`.
pub async fn wait_for_port(what: &str, port: u16) {
    wait_until(what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
}

/// The shipped example's text with its addresses moved: the gateway's own `8080` to
/// `listen`, Sluis's HTTP doors `9192` to `sluis`, the upstream `8000` to `upstream`.
pub fn example_on(path: &str, listen: u16, sluis: SocketAddr, upstream: u16) -> String {
    std::fs::read_to_string(crate::repo_path(path))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:9192", &sluis.to_string())
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{upstream}"))
}

/// NGINX on `examples/nginx/sluis.conf` (`auth_request` to Sluis's HTTP doors at
/// `sluis`), listening on `listen`, forwarding to `upstream`; everything it writes in
/// `dir`. Wait for it with [`wait_for_port`].
pub fn start_nginx(
    nginx: &Path,
    dir: &Path,
    listen: u16,
    sluis: SocketAddr,
    upstream: u16,
) -> Process {
    start_nginx_on(
        nginx,
        "examples/nginx/sluis.conf",
        dir,
        listen,
        sluis,
        upstream,
    )
}

/// [`start_nginx`] on another shipped server block (`examples/nuts/nginx.conf`), with the
/// same three addresses replaced.
pub fn start_nginx_on(
    nginx: &Path,
    example: &str,
    dir: &Path,
    listen: u16,
    sluis: SocketAddr,
    upstream: u16,
) -> Process {
    let server_block = example_on(example, listen, sluis, upstream);
    start_nginx_with(nginx, &server_block, dir, &[])
}

/// NGINX with `server_block` (the `http` context's contents) and the dynamic `modules`
/// (paths of `.so` files, `load_module`ed in that order); everything it writes in `dir`.
pub fn start_nginx_with(
    nginx: &Path,
    server_block: &str,
    dir: &Path,
    modules: &[&Path],
) -> Process {
    std::fs::write(dir.join("sluis.conf"), server_block).unwrap();
    let temp = dir.join("nginx-temp");
    std::fs::create_dir(&temp).unwrap();
    let modules: String = modules
        .iter()
        .map(|module| format!("load_module {};\n", module.display()))
        .collect();
    // One process (no master switching to `nobody`), in the foreground, everything in
    // the temp dir: no root needed, nothing outside it touched.
    let conf = format!(
        r#"{modules}daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {dir}/sluis.conf;
}}
"#,
        dir = dir.display(),
        temp = temp.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    Process(
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Caddy on `examples/caddy/Caddyfile` (`forward_auth` to Sluis's HTTP doors at
/// `sluis`), listening on `listen`, forwarding to `upstream`; its data and config in
/// `dir`. Wait for it with [`wait_for_port`].
pub fn start_caddy(
    caddy: &Path,
    dir: &Path,
    listen: u16,
    sluis: SocketAddr,
    upstream: u16,
) -> Process {
    let path = dir.join("Caddyfile");
    std::fs::write(
        &path,
        example_on("examples/caddy/Caddyfile", listen, sluis, upstream),
    )
    .unwrap();
    Process(
        Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            // Caddy's data and config (certificates, autosave) in the temp dir.
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}
