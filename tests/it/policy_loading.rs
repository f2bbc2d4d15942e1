//! Policy loading as an operator meets it: `sluis validate` messages and exit codes,
//! `serve` refusing a bad set, and hot reload keeping the last good set.

use sluis_test_kit as kit;

use std::process::Command;
use std::time::Duration;

use kit::*;

use crate::sluis;

fn validate(policy: &str) -> (i32, String, String) {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("bad.yaml", policy)],
    );
    let config = setup.config_path();
    sluis(&["validate", "--config", config.to_str().unwrap()])
}

#[test]
fn validate_accepts_the_examples() {
    let (code, stdout, stderr) = sluis(&["validate", "--config", "examples/config.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ok: 8 policies"), "{stdout}");
}

#[test]
fn validate_names_file_policy_rule_and_position() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "yaml syntax",
            "policies:\n  - id: p\n    issuers: [test\n",
            "bad.yaml:4:1: ",
        ),
        (
            "cel syntax",
            "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r\n        allow: request.method ==\n",
            "bad.yaml:6:33: policy `p` rule `r`: invalid CEL `request.method ==`: Syntax error",
        ),
        (
            "unknown variable",
            "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r\n        allow: requst.method == 'GET'\n",
            "bad.yaml:6:9: policy `p` rule `r`: invalid CEL `requst.method == 'GET'`: unknown variable `requst`",
        ),
        (
            "unknown key",
            "policies:\n  - id: p\n    issuers: [test]\n    scope: [read]\n",
            "bad.yaml:4:5: policy `p`: unknown field `scope` (did you mean `scopes`?), expected one of",
        ),
        (
            "duplicate id",
            "policies:\n  - id: p\n    issuers: [test]\n  - id: p\n    issuers: [test]\n",
            "bad.yaml:4:5: policy `p`: duplicate policy id, first defined in",
        ),
        (
            "unknown function",
            "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r\n        allow: request.path.startswith('/api')\n",
            "bad.yaml:6:9: policy `p` rule `r`: invalid CEL `request.path.startswith('/api')`: unknown function `startswith` (did you mean `startsWith`?)",
        ),
    ];
    for (what, policy, expected) in cases {
        let (code, _stdout, stderr) = validate(policy);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: expected `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn unknown_config_keys_are_named() {
    let setup = Setup::new(
        &format!(
            "{}\ntoken_cahce: {{max_entries: 5}}\n",
            config_yaml("127.0.0.1:0", "127.0.0.1:0")
        ),
        &[("api.yaml", POLICY)],
    );
    let (code, _, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    // The key's own line (the config is written with a leading blank line), and the
    // nearest known key.
    let line = config_yaml("127.0.0.1:0", "127.0.0.1:0").lines().count() + 2;
    assert!(
        stderr.contains(&format!(
            "sluis.yaml:{line}:1: unknown field `token_cahce` (did you mean `token_cache`?)"
        )),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_to_start_with_a_bad_policy() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[(
            "bad.yaml",
            "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - {id: r, allow: '1 +'}\n",
        )],
    );
    let (code, _, stderr) = sluis(&["serve", "--config", setup.config_path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("policy `p` rule `r`: invalid CEL"),
        "{stderr}"
    );
}

async fn readyz(server: &Server) -> serde_json::Value {
    reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn hot_reload_swaps_good_sets_and_keeps_the_last_good_one() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    let token = token(&claims());
    let delete = || Req::get("/api/things").method("DELETE").bearer(&token);
    assert_eq!(server.check(delete()).await.status, 403);

    // A good edit: DELETE becomes allowed.
    setup.write_policy(
        "api.yaml",
        &POLICY.replace("request.method == \"GET\"", "true"),
    );
    assert!(eventually(|| async { server.check(delete()).await.status == 200 }).await);

    // A bad edit: the last good set stays in force and the failure is visible.
    setup.write_policy(
        "api.yaml",
        &POLICY.replace("request.method == \"GET\"", "true &&"),
    );
    assert!(eventually(|| async { !readyz(&server).await["last_reload_error"].is_null() }).await);
    let status = readyz(&server).await;
    assert!(
        status["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("policy `api` rule `get`: invalid CEL"),
        "{status}"
    );
    assert_eq!(
        status["ready"], true,
        "a failed reload does not make Sluis unready"
    );
    assert_eq!(server.check(delete()).await.status, 200);

    // Fixed again: the error clears.
    setup.write_policy("api.yaml", POLICY);
    assert!(eventually(|| async { server.check(delete()).await.status == 403 }).await);
    assert!(readyz(&server).await["last_reload_error"].is_null());
    server.stop().await;
}

/// Query templates are part of the set: editing one reloads like editing a policy, in a
/// folder below the policies (watched with them) and in one beside them (watched once a
/// set reading a template there is in place).
#[tokio::test]
async fn hot_reload_follows_query_template_edits() {
    const GRAPHQL_POLICY: &str = r#"
policies:
  - id: register
    match: {paths: ["/graphql"]}
    issuers: [test]
    graphql:
      templates:
        - file: templates/below.graphql
        - file: ../beside/beside.graphql
    rules:
      - id: fits
        allow: graphql.template != null
"#;
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("register.yaml", GRAPHQL_POLICY)],
    );
    let below = setup.dir.path().join("policies/templates");
    let beside = setup.dir.path().join("beside");
    std::fs::create_dir(&below).unwrap();
    std::fs::create_dir(&beside).unwrap();
    std::fs::write(below.join("below.graphql"), "query { a }").unwrap();
    std::fs::write(beside.join("beside.graphql"), "query { b }").unwrap();
    let server = Server::start(&setup.config_path()).await;
    let token = token(&claims());
    let query = |text: &str| {
        Req::get("/graphql")
            .method("POST")
            .header("content-type", "application/json")
            .body(serde_json::json!({ "query": text }).to_string().as_bytes())
            .bearer(&token)
    };
    assert_eq!(server.check(query("{ a }")).await.status, 200);
    assert_eq!(server.check(query("{ a c }")).await.status, 403);
    assert_eq!(server.check(query("{ b d }")).await.status, 403);

    std::fs::write(below.join("below.graphql"), "query { a c }").unwrap();
    assert!(eventually(|| async { server.check(query("{ a c }")).await.status == 200 }).await);
    std::fs::write(beside.join("beside.graphql"), "query { b d }").unwrap();
    assert!(eventually(|| async { server.check(query("{ b d }")).await.status == 200 }).await);
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn hot_reload_follows_a_kubernetes_configmap_symlink_swap() {
    // A mounted ConfigMap: policies/api.yaml -> ..data/api.yaml, ..data -> ..v1; an update
    // writes ..v2 and atomically renames a new ..data link over the old one.
    use std::os::unix::fs::symlink;
    let setup = Setup::new(&config_yaml("127.0.0.1:0", "127.0.0.1:0"), &[]);
    let policies = setup.dir.path().join("policies");
    std::fs::create_dir(policies.join("..v1")).unwrap();
    std::fs::write(policies.join("..v1/api.yaml"), POLICY).unwrap();
    symlink("..v1", policies.join("..data")).unwrap();
    symlink("..data/api.yaml", policies.join("api.yaml")).unwrap();

    let server = Server::start(&setup.config_path()).await;
    let token = token(&claims());
    let delete = || Req::get("/api/things").method("DELETE").bearer(&token);
    assert_eq!(server.check(delete()).await.status, 403);

    std::fs::create_dir(policies.join("..v2")).unwrap();
    std::fs::write(
        policies.join("..v2/api.yaml"),
        POLICY.replace("request.method == \"GET\"", "true"),
    )
    .unwrap();
    symlink("..v2", policies.join("..data_tmp")).unwrap();
    std::fs::rename(policies.join("..data_tmp"), policies.join("..data")).unwrap();
    assert!(eventually(|| async { server.check(delete()).await.status == 200 }).await);
    server.stop().await;
}

#[cfg(unix)]
#[test]
fn sighup_reloads_a_running_server() {
    use std::io::{BufRead, BufReader};
    // Fixed ports would collide between parallel runs: take free ones.
    let (grpc, admin) = (kit::free_addr(), kit::free_addr());
    let setup = Setup::new(
        &config_yaml(&grpc.to_string(), &admin.to_string()),
        &[("api.yaml", POLICY)],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["serve", "--config", setup.config_path().to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read the log on its own thread, so a silent process cannot hang the test.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(text) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    assert!(wait_for("sluis serving"));
    // SIGHUP must reload, not kill (its default action).
    let pid = child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let reloaded = wait_for("SIGHUP: reloading policies");
    let alive = child.try_wait().unwrap().is_none();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(alive, "SIGHUP killed the server: {status:?}");
    assert!(reloaded, "no reload logged after SIGHUP");
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
}
