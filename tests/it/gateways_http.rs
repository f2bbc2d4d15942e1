//! End to end through real gateways asking the forward-auth door over HTTP: NGINX
//! `auth_request` with `examples/nginx/sluis.conf`, Caddy `forward_auth` with
//! `examples/caddy/Caddyfile` and Envoy's ext_authz `http_service` with
//! `envoy/envoy-http.yaml`, each run as is with only their ports replaced, in front of a
//! recording upstream.
//!
//! Without NGINX or Caddy (`scripts/install-nginx.sh` installs both from Debian) or Envoy
//! (`scripts/install-envoy.sh`) a test says so and passes, unless `SLUIS_REQUIRE_NGINX=1`,
//! `SLUIS_REQUIRE_CADDY=1` or `SLUIS_REQUIRE_ENVOY=1` (`scripts/test.sh` sets them), where
//! that is a failure.

use sluis_test_kit as kit;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use kit::gateway::*;
use kit::*;
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Sluis with the test policy, its HTTP doors on an ephemeral port.
async fn sluis() -> (Setup, Server) {
    // Server::start binds its own ephemeral ports, whatever the config says.
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0");
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

/// The cases every gateway must get right, through `listen`.
async fn allow_and_deny_through(listen: u16, seen: &Arc<Mutex<Vec<Value>>>) {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{listen}{path}");
    let token = token(&claims());

    // Allowed: the upstream gets Sluis's headers, a client copy replaced, no token.
    let response = client
        .get(url("/api/things?page=2"))
        .bearer_auth(&token)
        .header("x-user", "mallory")
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
    assert_eq!(echoed["uri"], "/api/things?page=2");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Denied without a token: Sluis's 401, challenge and body.
    let response = client.get(url("/api/things")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenges: Vec<_> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .collect();
    assert_eq!(challenges, ["Bearer realm=\"sluis\""]);
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

    // Missing scope: 403 with the insufficient_scope challenge.
    let mut narrow = claims();
    narrow["scope"] = json!("write");
    let response = client
        .get(url("/api/things"))
        .bearer_auth(kit::token(&narrow))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let challenges: Vec<_> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .collect();
    assert_eq!(
        challenges,
        ["Bearer realm=\"sluis\", error=\"insufficient_scope\", scope=\"read\""]
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "insufficient_scope"
    );

    // A client naming another path or method in the headers Sluis reads does not get
    // its request decided as that one: each gateway sets its own convention's headers,
    // and Sluis refuses two conventions that disagree.
    let response = client
        .delete(url("/api/admin/users"))
        .bearer_auth(&token)
        .header("x-original-uri", "/api/things")
        .header("x-original-method", "GET")
        .header("x-forwarded-uri", "/api/things")
        .header("x-forwarded-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(
        [400, 403].contains(&response.status().as_u16()),
        "{}",
        response.status()
    );

    // A method-override header on an allowed GET never reaches the upstream: Sluis
    // must see it (Envoy's `allowed_headers` lists it) and refuses it with 400, which
    // NGINX, passing only 401 and 403, turns into a 500.
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let response = client
            .get(url("/api/things"))
            .bearer_auth(&token)
            .header(name, "DELETE")
            .send()
            .await
            .unwrap();
        assert!(
            [400, 500].contains(&response.status().as_u16()),
            "{name}: {}",
            response.status()
        );
    }

    // The method is the client's: POST is not allowed by the policy.
    let response = client
        .post(url("/api/things"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a denied request went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_enforces_sluis_decisions() {
    let Some(nginx) = system_binary("nginx") else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (setup, sluis) = sluis().await;
    let listen = free_port();
    let _nginx = start_nginx(&nginx, setup.dir.path(), listen, sluis.http, upstream_port);
    wait_for_port("nginx", listen).await;
    allow_and_deny_through(listen, &seen).await;
    sluis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_service_enforces_sluis_decisions() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (setup, sluis) = sluis().await;
    let (listen, admin) = (free_port(), free_port());
    let config = repo_file("envoy/envoy-http.yaml")
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 8080", &format!("port_value: {listen}"))
        .replace(
            "uri: http://127.0.0.1:9192",
            &format!("uri: http://{}", sluis.http),
        )
        .replace(
            "port_value: 9192",
            &format!("port_value: {}", sluis.http.port()),
        )
        .replace("port_value: 8000", &format!("port_value: {upstream_port}"));
    let path = setup.dir.path().join("envoy-http.yaml");
    std::fs::write(&path, config).unwrap();
    let _envoy = Process(
        Command::new(envoy)
            .args(["-c", path.to_str().unwrap(), "--disable-hot-restart"])
            .args(["--log-level", "warning", "--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let envoy_admin = format!("127.0.0.1:{admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;
    allow_and_deny_through(listen, &seen).await;

    // Envoy removes what Sluis names in `x-envoy-auth-headers-to-remove`: a client's
    // `x-sluis-*` header does not reach the upstream.
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{listen}/api/things"))
        .bearer_auth(token(&claims()))
        .header("x-sluis-role", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert!(
        echoed["headers"].get("x-sluis-role").is_none(),
        "spoofed x-sluis-* passed: {echoed}"
    );
    sluis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_enforces_sluis_decisions() {
    let Some(caddy) = system_binary("caddy") else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (setup, sluis) = sluis().await;
    let listen = free_port();
    let _caddy = start_caddy(&caddy, setup.dir.path(), listen, sluis.http, upstream_port);
    wait_for_port("caddy", listen).await;
    allow_and_deny_through(listen, &seen).await;
    sluis.stop().await;
}
