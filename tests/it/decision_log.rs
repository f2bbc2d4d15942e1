//! The decision log through a real server: one JSON line per decision with the fields an
//! auditor needs, identifiers masked, never a token at any log level, and a hash chain
//! `sluis audit verify` checks.

use sluis_test_kit as kit;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kit::{POLICY, Req, Server, Setup, claims, config_yaml, sign, token};

use crate::sluis;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn with_decision_log(config: String, block: &str) -> String {
    format!("{config}decision_log:\n{block}")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn actor_token() -> String {
    let mut claims = claims();
    claims["act"] = json!({ "sub": "actor-7" });
    token(&claims)
}

/// Four decisions through the gRPC door (two allowed, two denied) and one through the
/// forward-auth door, into a chained file.
async fn logged_decisions(setup: &Setup) -> PathBuf {
    let log = setup.dir.path().join("decisions.log");
    let server = Server::start(&setup.config_path()).await;
    let allowed = server
        .check(
            Req::get("/api/Patient/111222333?subject=999999990&order=123456789&agb=agb:12345678")
                .bearer(&actor_token())
                .header("x-request-id", "req-1")
                .header("traceparent", TRACEPARENT),
        )
        .await;
    assert_eq!(allowed.status, 200);
    let denied = server
        .check(Req::get("/api/admin/x").bearer(&actor_token()))
        .await;
    assert_eq!(denied.status, 403);
    let anonymous = server.check(Req::get("/api/x")).await;
    assert_eq!(anonymous.status, 401);
    let allowed = server
        .check(Req::get("/api/y").bearer(&token(&claims())))
        .await;
    assert_eq!(allowed.status, 200);
    // An HTTP door names itself too.
    let forward = reqwest::Client::new()
        .get(format!(
            "http://{}/decisions/api/z?bsn=111222333",
            server.http
        ))
        .bearer_auth(token(&claims()))
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status(), 200);
    // Stopping flushes the queue: every line is in the file afterwards.
    server.stop().await;
    log
}

fn setup() -> Setup {
    let config = with_decision_log(
        config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        "  sink: file\n  path: decisions.log\n  chain: true\n  mask:\n    patterns: ['agb:[0-9]{8}']\n",
    );
    Setup::new(&config, &[("api.yaml", POLICY)])
}

#[tokio::test]
async fn each_decision_through_the_grpc_door_is_one_json_line() {
    let setup = setup();
    let log = logged_decisions(&setup).await;
    let lines: Vec<Value> = lines(&log)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");

    let allow = &lines[0];
    assert_eq!(allow["door"], "envoy-grpc");
    assert_eq!(allow["request_id"], "req-1");
    assert_eq!(allow["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(allow["policy"], "api");
    assert_eq!(allow["rule"], "get");
    assert_eq!(allow["outcome"], "allow");
    assert_eq!(allow["status"], 200);
    assert!(allow["reason"].is_string());
    assert_eq!(allow["caller"]["iss"], kit::ISSUER);
    assert_eq!(allow["caller"]["sub"], "user-1");
    assert_eq!(allow["caller"]["client_id"], "client-1");
    assert_eq!(allow["caller"]["act_sub"], "actor-7");
    assert!(allow["caller"]["token_hash"].is_string());
    assert_eq!(allow["request"]["method"], "GET");
    assert_eq!(allow["request"]["host"], "api.test");
    // The BSNs in path and query are masked, the order number (no BSN by the 11-check)
    // is not, the configured AGB pattern is.
    assert_eq!(allow["request"]["path"], "/api/Patient/[bsn]");
    assert_eq!(
        allow["request"]["query"],
        "subject=[bsn]&order=123456789&agb=[masked]"
    );
    assert!(allow["latency_us"].is_u64());
    let time = allow["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(time).is_ok());
    let version = allow["policy_set_version"].as_str().unwrap();
    assert!(!version.is_empty());
    assert_eq!(allow["prev"], "0".repeat(64));

    let deny = &lines[1];
    assert_eq!(deny["outcome"], "deny");
    assert_eq!(deny["status"], 403);
    assert_eq!(deny["rule"], "no-admin");
    assert_eq!(deny["caller"]["sub"], "user-1");
    assert!(deny["request_id"].is_null());
    assert!(deny["trace_id"].is_null());

    let anonymous = &lines[2];
    assert_eq!(anonymous["outcome"], "deny");
    assert_eq!(anonymous["status"], 401);
    assert_eq!(anonymous["rule"], "authentication");
    assert!(anonymous["caller"].is_null());
    assert!(lines[3]["caller"]["act_sub"].is_null());

    assert_eq!(lines[4]["door"], "forward-auth");
    assert_eq!(lines[4]["request"]["path"], "/api/z");
    assert_eq!(lines[4]["request"]["query"], "bsn=[bsn]");

    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|line| line["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "decision ids are unique");
    for line in &lines {
        assert_eq!(line["policy_set_version"], version);
    }
}

fn verify(path: &Path) -> (i32, String) {
    let (code, stdout, stderr) = sluis(&["audit", "verify", path.to_str().unwrap()]);
    (code, format!("{stdout}{stderr}"))
}

fn rewrite(path: &Path, original: &[String], change: impl FnOnce(&mut Vec<String>)) {
    let mut lines = original.to_vec();
    change(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn audit_verify_checks_the_chain_and_names_the_first_broken_line() {
    let setup = setup();
    let log = logged_decisions(&setup).await;
    let (code, output) = verify(&log);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("chain intact: 5 lines"), "{output}");
    assert!(output.contains("starting at genesis"), "{output}");
    let original = lines(&log);

    // Edited: the line after the edit no longer links to it.
    rewrite(&log, &original, |lines| {
        lines[1] = lines[1].replace("\"deny\"", "\"allow\"");
    });
    let (code, output) = verify(&log);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("decisions.log:3: chain broken"), "{output}");

    // Deleted.
    rewrite(&log, &original, |lines| {
        lines.remove(1);
    });
    let (code, output) = verify(&log);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("decisions.log:2: chain broken"), "{output}");

    // Reordered.
    rewrite(&log, &original, |lines| lines.swap(2, 3));
    let (code, output) = verify(&log);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("decisions.log:3: chain broken"), "{output}");

    // Not a log line at all.
    rewrite(&log, &original, |lines| lines.insert(2, "hello".into()));
    let (code, output) = verify(&log);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("decisions.log:3: not a decision log line"),
        "{output}"
    );

    std::fs::write(&log, original.join("\n") + "\n").unwrap();
    assert_eq!(verify(&log).0, 0);
}

#[test]
fn a_file_sink_needs_a_path() {
    let config = with_decision_log(config_yaml("127.0.0.1:0", "127.0.0.1:0"), "  sink: file\n");
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let (code, stdout, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        format!("{stdout}{stderr}").contains("decision_log: `sink: file` needs a `path`"),
        "{stdout}{stderr}"
    );
}

/// The signature part of a JWT.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

#[test]
fn no_token_appears_in_any_log_at_any_level() {
    let (grpc, admin) = (kit::free_addr(), kit::free_addr());
    let config = with_decision_log(
        config_yaml(&grpc.to_string(), &admin.to_string()),
        "  sink: stdout\n",
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let stdout_path = setup.dir.path().join("stdout");
    let stderr_path = setup.dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["serve", "--config", setup.config_path().to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
        .spawn()
        .unwrap();

    let valid = actor_token();
    let mut expired_claims = claims();
    expired_claims["iat"] = json!(kit::now() - 7200);
    expired_claims["exp"] = json!(kit::now() - 3600);
    let expired = token(&expired_claims);
    let wrong_key = sign("rsa-other", Algorithm::RS256, Some("rsa-1"), &claims());
    let mut tampered = valid.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let opaque = "opaque-secret-token-0123456789abcdef".to_string();
    let tokens = [&valid, &expired, &wrong_key, &tampered, &opaque];

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let statuses = runtime.block_on(async {
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(response) = reqwest::get(format!("http://{admin}/readyz")).await
                && response.status() == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "sluis did not become ready");
        let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for token in tokens {
            for path in ["/api/x", "/api/admin/x"] {
                let check = Req::get(path).bearer(token).into_check();
                let answer = kit::Answer::from(client.check(check).await.unwrap().into_inner());
                statuses.push(answer.status);
            }
        }
        // A BSN in the path: masked in the service's log as in the decision log.
        let check = Req::get("/api/Patient/111222333")
            .bearer(&valid)
            .into_check();
        let answer = kit::Answer::from(client.check(check).await.unwrap().into_inner());
        statuses.push(answer.status);
        statuses
    });
    assert_eq!(
        statuses,
        [200, 403, 401, 401, 401, 401, 401, 401, 401, 401, 200]
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let output = format!("{stdout}{stderr}");
    // The test means something only if the log is there and talkative.
    let decisions = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("decision_id").is_some())
        .count();
    assert_eq!(decisions, 11, "{stdout}");
    // The engine logs each decision once at debug, for every door alike, masked; in a
    // file, without terminal colours.
    assert!(!output.contains('\u{1b}'), "escape codes in a log file");
    let engine_lines: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("sluis_core::engine") && line.contains("decision"))
        .collect();
    assert_eq!(engine_lines.len(), 11, "{output}");
    assert!(
        engine_lines
            .iter()
            .all(|line| line.contains(r#"door="envoy-grpc""#)),
        "{engine_lines:#?}"
    );
    assert!(
        engine_lines
            .iter()
            .any(|line| line.contains("/api/Patient/[bsn]")),
        "{engine_lines:#?}"
    );
    assert!(
        !output.contains("111222333"),
        "a BSN reached the logs unmasked"
    );
    assert!(
        output.contains("TRACE"),
        "RUST_LOG=trace logged no trace line"
    );
    for token in tokens {
        assert!(
            !output.contains(token.as_str()),
            "a token leaked into the logs"
        );
        if token.matches('.').count() == 2 {
            assert!(
                !output.contains(signature(token)),
                "a token's signature leaked into the logs"
            );
        }
    }
}

/// An HTTP door cannot rewrite a query, so it refuses an allow that asks for one; the
/// decision log records that refusal, the answer the client got, not the engine's allow.
#[tokio::test]
async fn the_log_records_the_doors_answer_not_the_engines() {
    let config = with_decision_log(
        config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        "  sink: file\n  path: decisions.log\n",
    );
    let policy = r#"
policies:
  - id: narrowed
    match:
      paths: ["/api/**"]
    issuers: [test]
    rules:
      - id: get
        allow: request.method == "GET"
    response:
      set_query:
        owner: token.sub
"#;
    let setup = Setup::new(&config, &[("api.yaml", policy)]);
    let server = Server::start(&setup.config_path()).await;
    let forward = reqwest::Client::new()
        .get(format!(
            "http://{}/decisions/api/things?owner=someone-else",
            server.http
        ))
        .bearer_auth(token(&claims()))
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status(), 403);
    server.stop().await;
    let lines = lines(&setup.dir.path().join("decisions.log"));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["door"], "forward-auth", "{line:#}");
    assert_eq!(line["outcome"], "deny", "{line:#}");
    assert_eq!(line["status"], 403, "{line:#}");
    assert_eq!(line["rule"], "gateway-cannot-rewrite-query", "{line:#}");
}
