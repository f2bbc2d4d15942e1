//! Rolling out a policy by watching, through a real server: a shadow policy lets traffic
//! through and logs what it would have answered; a candidate policy set decides every
//! request beside the enforced one, and its disagreements are counted and logged without
//! changing an enforced answer; a broken candidate never touches the enforced set, and
//! the candidate set hot-reloads on its own.

use sluis_test_kit as kit;

use std::path::Path;

use kit::{POLICY, Req, Server, Setup, claims, config_yaml, eventually, sample, sign, token};

use crate::sluis;
use jsonwebtoken::Algorithm;
use serde_json::Value;

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn readyz(server: &Server) -> Value {
    reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The line of the decision on `path`.
fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| line["request"]["path"] == path)
        .unwrap_or_else(|| panic!("no line for {path} in {lines:#?}"))
}

const DECISION_LOG: &str = "decision_log:\n  sink: file\n  path: decisions.log\n";

/// The shared test policy under another id (metrics are per process, tests run side by
/// side), in the given mode.
fn policy(id: &str, mode: &str) -> String {
    POLICY.replace("id: api\n", &format!("id: {id}\n    mode: {mode}\n"))
}

#[tokio::test]
async fn a_shadow_policy_lets_a_would_be_denial_through_and_logs_it() {
    let config = format!(
        "{}{DECISION_LOG}",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", &policy("shadow-api", "shadow"))]);
    let server = Server::start(&setup.config_path()).await;
    let bearer = token(&claims());

    // The deny rule matches: enforced, this would be a 403.
    let denied = server
        .check(
            Req::get("/api/admin/x")
                .bearer(&bearer)
                .header("x-user", "forged-admin"),
        )
        .await;
    assert_eq!(denied.status, 200, "{denied:?}");
    assert_eq!(denied.grpc_code, 0);
    // Nothing is vouched for, and the client's copy of a header the policy sets is gone.
    assert!(denied.headers.is_empty(), "{denied:?}");
    for header in ["x-user", "x-client", "authorization"] {
        assert!(
            denied.headers_to_remove.iter().any(|h| h == header),
            "{header} not removed: {denied:?}"
        );
    }

    // What it would allow gets exactly what an enforced allow gets.
    let allowed = server.check(Req::get("/api/x").bearer(&bearer)).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("x-user"), Some("user-1"));

    let text = metrics(&server).await;
    assert!(
        sample(
            &text,
            r#"sluis_shadow_decisions_total{policy="shadow-api",would="deny"} "#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"sluis_shadow_decisions_total{policy="shadow-api",would="allow"} "#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"sluis_decisions_total{policy="shadow-api",rule="shadow",outcome="allow",door="envoy-grpc"} "#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    server.stop().await;

    let lines = log_lines(&setup.dir.path().join("decisions.log"));
    let line = line_for(&lines, "/api/admin/x");
    assert_eq!(line["outcome"], "allow");
    assert_eq!(line["status"], 200);
    assert_eq!(line["rule"], "shadow");
    assert_eq!(line["mode"], "shadow");
    assert_eq!(line["would"]["outcome"], "deny");
    assert_eq!(line["would"]["status"], 403);
    assert_eq!(line["would"]["rule"], "no-admin");
    assert!(
        line["would"]["reason"]
            .as_str()
            .unwrap()
            .contains("no-admin"),
        "{line}"
    );
    let line = line_for(&lines, "/api/x");
    assert_eq!(line["mode"], "shadow");
    assert_eq!(line["rule"], "get");
    assert_eq!(line["would"]["outcome"], "allow");
}

#[tokio::test]
async fn a_shadow_policy_lets_missing_and_bad_tokens_through_and_logs_the_401() {
    let config = format!(
        "{}{DECISION_LOG}",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", &policy("shadow-tokens", "shadow"))]);
    let server = Server::start(&setup.config_path()).await;

    let missing = server.check(Req::get("/api/no-token")).await;
    assert_eq!(missing.status, 200, "{missing:?}");
    // Signed by a key the issuer does not have.
    let forged = sign("rsa-other", Algorithm::RS256, Some("rsa-1"), &claims());
    let bad = server
        .check(Req::get("/api/bad-token").bearer(&forged))
        .await;
    assert_eq!(bad.status, 200, "{bad:?}");
    assert!(bad.headers.is_empty());
    assert!(bad.headers_to_remove.iter().any(|h| h == "authorization"));

    let text = metrics(&server).await;
    assert!(
        sample(
            &text,
            r#"sluis_shadow_decisions_total{policy="shadow-tokens",would="deny"} "#
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{text}"
    );
    server.stop().await;

    let lines = log_lines(&setup.dir.path().join("decisions.log"));
    let missing = line_for(&lines, "/api/no-token");
    assert_eq!(missing["outcome"], "allow");
    assert_eq!(missing["would"]["status"], 401);
    assert_eq!(missing["would"]["rule"], "authentication");
    assert!(missing["caller"].is_null());
    let bad = line_for(&lines, "/api/bad-token");
    assert_eq!(bad["would"]["outcome"], "deny");
    assert_eq!(bad["would"]["status"], 401);
    assert!(
        bad["would"]["reason"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{bad}"
    );
    // Never the token, not even a refused one.
    let text = std::fs::read_to_string(setup.dir.path().join("decisions.log")).unwrap();
    assert!(!text.contains(&forged));
}

#[test]
fn validate_warns_that_a_shadow_policy_lets_everything_through() {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", &policy("watched", "shadow"))],
    );
    let (code, stdout, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 in shadow mode"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: policy `watched` is in shadow mode: every request it decides is let through"
        ),
        "{stderr}"
    );
    // A mode that does not exist is named.
    setup.write_policy("api.yaml", &policy("watched", "audit"));
    let (code, _, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("policy `watched`") && stderr.contains("unknown variant `audit`"),
        "{stderr}"
    );
}

/// A config with a candidate set in `dir/candidate`.
fn candidate_setup(enforced: &str, candidate: &str) -> Setup {
    let config = format!(
        "{}{DECISION_LOG}candidate:\n  policies: [candidate]\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", enforced)]);
    std::fs::create_dir(setup.dir.path().join("candidate")).unwrap();
    write_candidate(&setup, candidate);
    setup
}

fn write_candidate(setup: &Setup, text: &str) {
    let tmp = setup.dir.path().join(".candidate.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("candidate/api.yaml")).unwrap();
}

#[tokio::test]
async fn candidate_disagreements_are_counted_and_logged_and_answers_unchanged() {
    // Enforced: GET under /api/** allowed. Candidate: the same, but `/api/reports/**`
    // needs the (missing) scope `reports`, and `/other/**`, which no enforced policy
    // covers, is allowed.
    let enforced = policy("cand-api", "enforce");
    let candidate = format!(
        "{}\n  - id: cand-other\n    match:\n      paths: [\"/other/**\"]\n    issuers: [test]\n    rules:\n      - id: any\n        allow: \"true\"\n",
        enforced.replace(
            "        allow: request.method == \"GET\"",
            "        allow: request.method == \"GET\" && !request.path.startsWith(\"/api/reports\")"
        )
    );
    let setup = candidate_setup(&enforced, &candidate);
    let server = Server::start(&setup.config_path()).await;
    let status = readyz(&server).await;
    assert!(status["candidate"]["policy_set"].is_string(), "{status}");
    assert!(
        status["candidate"]["last_reload_error"].is_null(),
        "{status}"
    );
    let bearer = token(&claims());

    let same = server.check(Req::get("/api/x").bearer(&bearer)).await;
    assert_eq!(same.status, 200);
    let reports = server
        .check(Req::get("/api/reports/1").bearer(&bearer))
        .await;
    assert_eq!(reports.status, 200, "the enforced answer stands");
    assert_eq!(reports.header("x-user"), Some("user-1"));
    let other = server.check(Req::get("/other/1").bearer(&bearer)).await;
    assert_eq!(other.status, 403, "the enforced set has no policy for it");

    let outcome = r#"sluis_candidate_disagreements_total{kind="outcome",policy="cand-api",candidate_policy="cand-api"} "#;
    let uncovered = r#"sluis_candidate_disagreements_total{kind="outcome",policy="-",candidate_policy="cand-other"} "#;
    let counted = eventually(|| async {
        let text = metrics(&server).await;
        sample(&text, outcome).unwrap_or(0.0) >= 1.0
            && sample(&text, uncovered).unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(counted, "{}", metrics(&server).await);
    let text = metrics(&server).await;
    assert!(
        sample(
            &text,
            r#"sluis_candidate_decisions_total{result="agreed"} "#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    server.stop().await;

    let lines = log_lines(&setup.dir.path().join("decisions.log"));
    assert_eq!(lines.len(), 3, "one line per decision: {lines:#?}");
    let same = line_for(&lines, "/api/x");
    assert_eq!(same["outcome"], "allow");
    assert_eq!(same["candidate"]["agrees"], true);
    assert!(same["candidate"]["disagreement"].is_null());
    assert_eq!(
        same["candidate"]["policy_set_version"],
        status["candidate"]["policy_set"]
    );
    let reports = line_for(&lines, "/api/reports/1");
    assert_eq!(reports["outcome"], "allow");
    assert_eq!(reports["rule"], "get");
    assert_eq!(reports["candidate"]["agrees"], false);
    assert_eq!(reports["candidate"]["disagreement"], "outcome");
    assert_eq!(reports["candidate"]["outcome"], "deny");
    assert_eq!(reports["candidate"]["status"], 403);
    assert_eq!(reports["candidate"]["rule"], "default-deny");
    let other = line_for(&lines, "/other/1");
    assert_eq!(other["rule"], "no-policy");
    assert_eq!(other["candidate"]["outcome"], "allow");
    assert_eq!(other["candidate"]["policy"], "cand-other");
}

#[tokio::test]
async fn a_broken_candidate_never_touches_the_enforced_set_and_reloads_on_its_own() {
    let enforced = policy("reload-api", "enforce");
    let broken = enforced.replace("request.method == \"GET\"", "request.method ==");
    let setup = candidate_setup(&enforced, &broken);

    // `sluis validate` names the candidate's error with file, policy and rule.
    let (code, _, stderr) = sluis(&[
        "validate",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("candidate: ")
            && stderr.contains("candidate/api.yaml")
            && stderr.contains("policy `reload-api` rule `get`: invalid CEL"),
        "{stderr}"
    );

    // `serve` serves the enforced set regardless and says what is wrong.
    let server = Server::start(&setup.config_path()).await;
    let bearer = token(&claims());
    assert_eq!(
        server
            .check(Req::get("/api/x").bearer(&bearer))
            .await
            .status,
        200
    );
    let status = readyz(&server).await;
    assert_eq!(status["ready"], true);
    assert!(status["candidate"]["policy_set"].is_null(), "{status}");
    assert_eq!(status["candidate"]["reload_failures"], 1);
    assert!(
        status["candidate"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("policy `reload-api` rule `get`: invalid CEL"),
        "{status}"
    );

    // Fixed: the candidate loads and decides; it denies DELETE differently (405).
    let candidate = enforced.replace(
        "      - id: get\n",
        "      - id: no-delete\n        deny: request.method == \"DELETE\"\n        status: 405\n      - id: get\n",
    );
    write_candidate(&setup, &candidate);
    assert!(
        eventually(|| async { readyz(&server).await["candidate"]["policy_set"].is_string() }).await
    );
    let version = readyz(&server).await["candidate"]["policy_set"].clone();
    let delete = server
        .check(Req::get("/api/y").method("DELETE").bearer(&bearer))
        .await;
    assert_eq!(delete.status, 403, "enforced: default deny");
    let status_kind = r#"sluis_candidate_disagreements_total{kind="status",policy="reload-api",candidate_policy="reload-api"} "#;
    assert!(
        eventually(|| async { sample(&metrics(&server).await, status_kind).unwrap_or(0.0) >= 1.0 })
            .await
    );

    // Broken again: the last good candidate stays, the enforced set never notices.
    write_candidate(&setup, &broken);
    assert!(
        eventually(|| async {
            readyz(&server).await["candidate"]["reload_failures"]
                .as_u64()
                .is_some_and(|failures| failures >= 2)
        })
        .await
    );
    let status = readyz(&server).await;
    assert_eq!(status["candidate"]["policy_set"], version);
    assert!(status["last_reload_error"].is_null(), "{status}");
    assert_eq!(
        server
            .check(Req::get("/api/x").bearer(&bearer))
            .await
            .status,
        200
    );
    server.stop().await;

    let lines = log_lines(&setup.dir.path().join("decisions.log"));
    let delete = lines
        .iter()
        .find(|line| line["request"]["method"] == "DELETE")
        .unwrap();
    assert_eq!(delete["status"], 403);
    assert_eq!(delete["candidate"]["disagreement"], "status");
    assert_eq!(delete["candidate"]["status"], 405);
    assert_eq!(delete["candidate"]["rule"], "no-delete");
}
