//! The check door (`POST /v1/check`) and the Kong plugin in `kong/` that calls it.
//!
//! - The door over HTTP against a real server: what it answers a plugin, and the negative
//!   token corpus refused as the gRPC door refuses it.
//! - The plugin's pure logic with busted (`kong/spec`).
//! - The plugin's real handler inside a real NGINX with Debian's ngx_lua module, through
//!   the PDK shim `kong/spec/nginx/kong_shim.lua`, in front of a real Sluis and a recording
//!   upstream. Kong itself cannot run here; kong/README.md says what this leaves untested.
//!
//! Without NGINX's Lua module or busted (`scripts/install-nginx.sh` installs them) the
//! last two say so and pass, unless `SLUIS_REQUIRE_NGINX=1`, where that is a failure.

use sluis_test_kit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::gateway::*;
use common::*;
use serde_json::{Value, json};

/// Besides `POLICY` (`/api/**`): a query rewrite, a policy only a route names, and one
/// reading the request body.
const POLICIES: &str = r#"
policies:
  - id: query
    match: {paths: ["/q/**"]}
    issuers: [test]
    rules:
      - {id: any, allow: true}
    response:
      set_query:
        tenant: token.client_id
      remove_query: [debug]
  - id: route-b
    match: {paths: ["/matched/by/no/request"]}
    issuers: [test]
    rules:
      - {id: b, allow: true}
    response:
      set_headers:
        x-sluis-route: "'b'"
  - id: body
    match: {paths: ["/body/**", "/bigbody/**"]}
    issuers: [test]
    rules:
      - {id: says-allowed, allow: request.body.contains("allowed")}
"#;

async fn sluis() -> (Setup, Server) {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY), ("more.yaml", POLICIES)],
    );
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

async fn ask(server: &Server, question: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/check", server.http))
        .json(&question)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_check_door_answers_what_a_plugin_must_do() {
    let (_setup, server) = sluis().await;
    let token = format!("Bearer {}", token(&claims()));

    let (status, answer) = ask(
        &server,
        json!({
            "method": "GET", "scheme": "https", "host": "api.test",
            "target": "/api/things?page=2",
            "headers": {"authorization": token, "x-user": "mallory", "x-sluis-role": "admin"},
        }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["decision"], "allow", "{answer}");
    let mut set = answer["set_headers"].as_array().unwrap().clone();
    set.sort_by_key(|pair| pair[0].as_str().unwrap().to_owned());
    assert_eq!(
        set,
        [json!(["x-client", "client-1"]), json!(["x-user", "user-1"])]
    );
    assert_eq!(
        answer["remove_headers"],
        json!(["authorization", "x-sluis-role"])
    );
    assert_eq!(answer["query"], Value::Null);
    assert_eq!(answer["policy"], "api");

    // A query rewrite is carried out, not refused as on the forward-auth door.
    let (_, answer) = ask(
        &server,
        json!({"method": "GET", "target": "/q/search?name=a%2Fb&debug=1&x=%7e",
               "headers": {"authorization": token}}),
    )
    .await;
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["query"], "name=a%2Fb&x=%7e&tenant=client-1");

    // The route names the policy.
    let (_, answer) = ask(
        &server,
        json!({"method": "GET", "target": "/api/things", "headers": {"authorization": token},
               "context": {"sluis_policy": "route-b"}}),
    )
    .await;
    assert_eq!(answer["set_headers"], json!([["x-sluis-route", "b"]]));
    let (_, answer) = ask(
        &server,
        json!({"method": "GET", "target": "/api/things", "headers": {"authorization": token},
               "context": {"sluis_policy": "not-loaded"}}),
    )
    .await;
    assert_eq!(answer["decision"], "deny", "{answer}");

    // Denied: Sluis's status, challenge and body.
    let (status, answer) = ask(&server, json!({"method": "GET", "target": "/api/things"})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["status"], 401);
    assert!(
        answer["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["www-authenticate", "Bearer realm=\"sluis\""])),
        "{answer}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(answer["body"].as_str().unwrap()).unwrap(),
        json!({"error": "unauthorized", "message": "an access token is required"})
    );

    // A described request that cannot be decided on is a deny the client gets.
    let (status, answer) = ask(
        &server,
        json!({"method": "GET", "target": "/api/things", "headers": {"x": "a\u{1}b"}}),
    )
    .await;
    assert_eq!((status, &answer["status"]), (200, &json!(400)), "{answer}");

    // A plugin bug is not: 400 for the plugin, which fails closed.
    let (status, answer) = ask(
        &server,
        json!({"method": "GET", "target": "/", "policy": "route-b"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "invalid_request");
    server.stop().await;
}

fn kong_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kong")
}

#[test]
fn busted_passes_the_plugin_logic_specs() {
    let (Some(busted), Some(_)) = (
        nginx_extra("/usr/bin/busted"),
        nginx_extra("/usr/bin/luajit"),
    ) else {
        return;
    };
    // LuaJIT, the Lua Kong runs.
    let output = Command::new(busted)
        .arg("--lua=luajit")
        .arg("--output=TAP")
        .current_dir(kong_dir())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("ok 1 "), "no spec ran: {report}");
    assert!(!report.contains("not ok"), "{report}");
}

/// A CA, a server certificate for `localhost`/127.0.0.1 and a client certificate it
/// signed, as PEM files in a dir.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Sluis Test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let mut leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        let mut client = rcgen::CertificateParams::new(vec!["kong.test".to_owned()]).unwrap();
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kong");
        client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &ca).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("sluis.pem"),
            key: dir.join("sluis.key"),
            client_cert: dir.join("kong.pem"),
            client_key: dir.join("kong.key"),
        };
        std::fs::write(&pki.client_cert, client_cert.pem()).unwrap();
        std::fs::write(&pki.client_key, client_key.serialize_pem()).unwrap();
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

/// The status of `GET target` sent as written (an HTTP client would remove dot segments).
async fn raw_get(port: u16, target: &str, authorization: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nhost: api.test\r\nauthorization: {authorization}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response}"))
}

/// Accepts connections and never answers: a Sluis that hangs.
async fn hanging_listener() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}

/// A TCP relay to `to` that counts the connections made through it.
async fn counting_relay(to: std::net::SocketAddr) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(to).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, count)
}

/// One NGINX location running the plugin with `config` (a Lua table constructor).
fn route(path: &str, config: &str, upstream: u16) -> String {
    format!(
        r#"
        location {path} {{
            set $upstream_uri "";
            access_by_lua_block {{ require("kong_shim").run("{path}", {config}) }}
            proxy_pass http://127.0.0.1:{upstream}$upstream_uri;
        }}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kong_plugin_enforces_sluis_decisions_inside_nginx() {
    let Some(nginx) = nginx_extra("/usr/sbin/nginx") else {
        return;
    };
    let Some(lua_module) = nginx_extra("/usr/lib/nginx/modules/ngx_http_lua_module.so") else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (setup, server) = sluis().await;
    let sluis_url = format!("http://{}", server.http);
    let closed = free_port();
    let hanging = hanging_listener().await;
    let (relay, connections) = counting_relay(server.http).await;
    let listen = free_port();
    let dir = setup.dir.path();
    let temp = dir.join("nginx-temp");
    std::fs::create_dir(&temp).unwrap();
    // Sluis behind TLS: NGINX itself terminates it in front of Sluis's HTTP listener.
    let tls_port = free_port();
    // ... and one that requires a client certificate from the same CA.
    let mtls_port = free_port();
    let pki = Pki::new(dir);

    let routes = [
        route(
            "/api/",
            &format!(r#"{{ url = "{sluis_url}" }}"#),
            upstream_port,
        ),
        route(
            "/q/",
            &format!(r#"{{ url = "{sluis_url}/" }}"#),
            upstream_port,
        ),
        route(
            "/routes/b/",
            &format!(r#"{{ url = "{sluis_url}", policy = "route-b" }}"#),
            upstream_port,
        ),
        route(
            "/routes/missing/",
            &format!(r#"{{ url = "{sluis_url}", policy = "not-loaded" }}"#),
            upstream_port,
        ),
        route(
            "/down/",
            &format!(r#"{{ url = "http://127.0.0.1:{closed}" }}"#),
            upstream_port,
        ),
        route(
            "/down500/",
            &format!(r#"{{ url = "http://127.0.0.1:{closed}", status_on_error = 500 }}"#),
            upstream_port,
        ),
        route(
            "/hang/",
            &format!(r#"{{ url = "http://127.0.0.1:{hanging}", read_timeout = 300 }}"#),
            upstream_port,
        ),
        route(
            "/body/",
            &format!(r#"{{ url = "{sluis_url}", include_body = true, max_body_bytes = 1024 }}"#),
            upstream_port,
        ),
        route(
            "/bigbody/",
            &format!(r#"{{ url = "{sluis_url}", include_body = true }}"#),
            upstream_port,
        ),
        route(
            "/few/",
            &format!(r#"{{ url = "{sluis_url}", max_headers = 5 }}"#),
            upstream_port,
        ),
        route(
            "/pooled/",
            &format!(r#"{{ url = "http://127.0.0.1:{relay}", policy = "route-b" }}"#),
            upstream_port,
        ),
        route(
            "/tls/",
            &format!(
                r#"{{ url = "https://127.0.0.1:{tls_port}", tls_server_name = "localhost", policy = "route-b" }}"#
            ),
            upstream_port,
        ),
        route(
            "/tls-other-name/",
            &format!(
                r#"{{ url = "https://127.0.0.1:{tls_port}", tls_server_name = "other.test", policy = "route-b" }}"#
            ),
            upstream_port,
        ),
        route(
            "/tls-unverified/",
            &format!(
                r#"{{ url = "https://127.0.0.1:{tls_port}", tls_server_name = "other.test", ssl_verify = false, policy = "route-b" }}"#
            ),
            upstream_port,
        ),
        route(
            "/mtls/",
            &format!(
                r#"{{ url = "https://127.0.0.1:{mtls_port}", tls_server_name = "localhost", policy = "route-b",
                      client_cert = io.open("{cert}"):read("*a"), client_key = io.open("{key}"):read("*a") }}"#,
                cert = pki.client_cert.display(),
                key = pki.client_key.display(),
            ),
            upstream_port,
        ),
        route(
            "/mtls-without-certificate/",
            &format!(
                r#"{{ url = "https://127.0.0.1:{mtls_port}", tls_server_name = "localhost", policy = "route-b" }}"#
            ),
            upstream_port,
        ),
        route(
            "/tls-as-plain/",
            &format!(r#"{{ url = "http://127.0.0.1:{tls_port}", policy = "route-b" }}"#),
            upstream_port,
        ),
    ]
    .concat();
    let modules = lua_module.parent().unwrap();
    // One process (no master switching users), in the foreground, everything in the temp
    // dir. Debian's ngx_lua needs NDK loaded first and resty.core on the path.
    let conf = format!(
        r#"load_module {modules}/ndk_http_module.so;
load_module {lua_module};
daemon off;
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
    client_body_buffer_size 8k;
    lua_package_path "{kong}/?.lua;{kong}/spec/nginx/?.lua;/usr/share/lua/5.1/?.lua;;";
    lua_socket_log_errors off;
    # Kong's globals are set once, as Kong sets them, not per request.
    init_by_lua_block {{ require("kong_shim") }}
    lua_ssl_trusted_certificate {ca};
    server {{
        listen 127.0.0.1:{listen};
        {routes}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{sluis_http};
        }}
    }}
    server {{
        listen 127.0.0.1:{mtls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_verify_client on;
        ssl_client_certificate {ca};
        location / {{
            proxy_pass http://{sluis_http};
        }}
    }}
}}
"#,
        ca = pki.ca.display(),
        cert = pki.cert.display(),
        key = pki.key.display(),
        sluis_http = server.http,
        modules = modules.display(),
        lua_module = lua_module.display(),
        dir = dir.display(),
        temp = temp.display(),
        kong = kong_dir().display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let _nginx = Process(
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
    );
    wait_until("nginx", || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    })
    .await;

    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{listen}{path}");
    let token = token(&claims());
    let upstream_saw = || seen.lock().unwrap().len();

    // Allowed: Sluis's headers set, client copies replaced or removed, no token, the raw
    // target untouched.
    let response = client
        .get(url("/api/Patient/%31?page=2&q=a%20b"))
        .bearer_auth(&token)
        .header("x-user", "mallory")
        .header("x-sluis-role", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    let headers = &echoed["headers"];
    assert_eq!(headers["x-user"], "user-1", "{echoed}");
    assert_eq!(headers["x-client"], "client-1", "{echoed}");
    assert!(
        headers.get("authorization").is_none(),
        "token leaked: {echoed}"
    );
    assert!(headers.get("x-sluis-role").is_none(), "{echoed}");
    assert_eq!(echoed["uri"], "/api/Patient/%31?page=2&q=a%20b");
    assert_eq!(upstream_saw(), 1);

    // Decided on the path as the upstream reads it: dot segments and doubled slashes do
    // not walk around a rule; an encoded slash is refused before asking.
    let bearer = format!("Bearer {token}");
    for (target, expected) in [
        ("/api/things/../admin/users", 403),
        ("/api/things/%2e%2e/admin/users", 403),
        ("/api//admin/users", 403),
        ("/api/admin%2Fusers", 400),
    ] {
        assert_eq!(raw_get(listen, target, &bearer).await, expected, "{target}");
    }
    assert_eq!(upstream_saw(), 1);

    // The query rewritten as Sluis says, the untouched parameters byte for byte.
    let response = client
        .get(url("/q/search?name=a%2Fb&debug=1&tenant=mallory&x=%7e"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["uri"], "/q/search?name=a%2Fb&x=%7e&tenant=client-1");

    // Denied without a token: Sluis's 401, challenge and body, nothing upstream.
    let before = upstream_saw();
    let response = client.get(url("/api/things")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"sluis\""
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "unauthorized", "message": "an access token is required"})
    );
    // Denied by a rule: Sluis's 403 and body.
    let response = client
        .get(url("/api/admin/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "access_denied", "message": "admin is off limits"})
    );
    assert_eq!(upstream_saw(), before, "a denied request went upstream");

    // The route names the policy; a policy that is not loaded never allows.
    let response = client
        .get(url("/routes/b/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-sluis-route"], "b", "{echoed}");
    let response = client
        .get(url("/routes/missing/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error() || response.status().is_server_error());

    // Sluis down, failing, hanging: closed, with status_on_error.
    let before = upstream_saw();
    for (path, expected) in [("/down/x", 503), ("/down500/x", 500), ("/hang/x", 503)] {
        let started = std::time::Instant::now();
        let response = client
            .get(url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "temporarily_unavailable"
        );
        // Shown, not asserted: a hung Sluis should cost `read_timeout` (300 ms).
        eprintln!("{path}: {expected} after {:?}", started.elapsed());
    }
    assert_eq!(upstream_saw(), before);

    // Bodies: decided on when whole and under the limit; 413 otherwise, never in part.
    let post =
        |path: &str, body: Vec<u8>| client.post(url(path)).bearer_auth(&token).body(body).send();
    assert_eq!(
        post("/body/x", b"allowed".to_vec()).await.unwrap().status(),
        200
    );
    assert_eq!(
        post("/body/x", b"refused".to_vec()).await.unwrap().status(),
        403
    );
    let response = post("/body/x", vec![b'a'; 2000]).await.unwrap();
    assert_eq!(response.status(), 413);
    let refusal: Value = response.json().await.unwrap();
    assert!(
        refusal["message"].as_str().unwrap().contains("1024"),
        "refused by the plugin, not Sluis: {refusal}"
    );
    // Over NGINX's 8 KiB body buffer, so kept in a file, within max_body_bytes: read whole.
    for (start, expected) in [(&b"allowed"[..], 200), (b"refused", 403)] {
        let mut big = start.to_vec();
        big.resize(60_000, b' ');
        let response = post("/bigbody/x", big).await.unwrap();
        assert_eq!(response.status(), expected);
    }
    let response = post("/bigbody/x", vec![b'a'; 70_000]).await.unwrap();
    assert_eq!(response.status(), 413);
    let refusal: Value = response.json().await.unwrap();
    assert!(refusal["message"].as_str().unwrap().contains("65536"));

    // More headers than max_headers: refused, since the cut-off ones could be spoofed.
    let mut many = client.get(url("/few/x")).bearer_auth(&token);
    for i in 0..6 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);

    // Keep-alive: twenty requests over one pooled connection to Sluis.
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let response = client
            .get(url("/pooled/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    eprintln!(
        "20 allowed requests through the plugin: {:?}",
        started.elapsed()
    );
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&opened),
        "{opened} connections for 20 checks"
    );

    // TLS to Sluis: verified against the trusted CA and the server name; a name the
    // certificate does not carry, or plain HTTP to the TLS port, fails closed.
    for (path, expected) in [
        ("/tls/x", 200),
        ("/tls/x", 200),
        ("/tls-other-name/x", 503),
        ("/tls-unverified/x", 200),
        ("/tls-as-plain/x", 503),
        ("/mtls/x", 200),
        ("/mtls-without-certificate/x", 503),
    ] {
        let response = client
            .get(url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{path}");
        if expected == 200 {
            let echoed: Value = response.json().await.unwrap();
            assert_eq!(echoed["headers"]["x-sluis-route"], "b", "{echoed}");
        }
    }

    server.stop().await;
}

/// The negative corpus (issue #15) through the check door: every row refused with the
/// status and challenge the gRPC door gives, the valid token allowed.
#[tokio::test]
async fn every_corpus_token_is_refused_at_the_check_door() {
    use common::corpus::{authorization, cases, jwks_with_pinned_key};
    let keys = tempfile::tempdir().unwrap();
    let jwks = jwks_with_pinned_key(keys.path());
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0").replace(
        &fixture("keys/jwks.json").display().to_string(),
        &jwks.display().to_string(),
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let valid = json!({"name": "valid", "status": 200});
    let cases = cases();
    let mut failures = Vec::new();
    for case in std::iter::once(&valid).chain(&cases) {
        let name = case["name"].as_str().unwrap();
        let value = authorization(case);
        let reference = server
            .check(Req::get("/api/things").header("authorization", &value))
            .await;
        let (status, answer) = ask(
            &server,
            json!({"method": "GET", "scheme": "https", "host": "api.test",
                   "target": "/api/things", "headers": {"authorization": value}}),
        )
        .await;
        let challenge = answer["headers"].as_array().and_then(|headers| {
            headers
                .iter()
                .find(|pair| pair[0] == "www-authenticate")
                .map(|pair| pair[1].as_str().unwrap().to_owned())
        });
        let right = status == 200
            && if reference.status == 200 {
                answer["decision"] == "allow"
            } else {
                answer["decision"] == "deny"
                    && answer["status"] == reference.status
                    && challenge.as_deref() == reference.header("www-authenticate")
            };
        if !right || reference.status != case["status"].as_u64().unwrap() as u16 {
            failures.push(format!(
                "{name}: grpc door {}, check door {status} {answer}",
                reference.status
            ));
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases wrong:\n{}",
        failures.len(),
        cases.len() + 1,
        failures.join("\n")
    );
}
