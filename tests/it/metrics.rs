//! `/metrics` on the admin listener of a real server: decisions by policy, rule, outcome
//! and door, the latency histogram, the token cache and the decision log's queue, in
//! Prometheus's text format. Counters are process-wide, so every check is "at least".

use sluis_test_kit as kit;

use kit::{POLICY, Req, Server, Setup, claims, config_yaml, sample, token};

#[tokio::test]
async fn decisions_and_caches_are_counted() {
    let config = format!(
        "{}decision_log:\n  sink: file\n  path: decisions.log\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let bearer = token(&claims());
    for _ in 0..3 {
        assert_eq!(
            server
                .check(Req::get("/api/x").bearer(&bearer))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        server
            .check(Req::get("/api/admin/x").bearer(&bearer))
            .await
            .status,
        403
    );
    let forward = reqwest::Client::new()
        .get(format!("http://{}/decisions/api/z", server.http))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status(), 200);

    let response = reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let at_least = |prefix: &str, min: f64| {
        let value = sample(&text, prefix).unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
        assert!(value >= min, "{prefix} = {value}, want ≥ {min}");
    };
    at_least(
        r#"sluis_decisions_total{policy="api",rule="get",outcome="allow",door="envoy-grpc"}"#,
        3.0,
    );
    at_least(
        r#"sluis_decisions_total{policy="api",rule="no-admin",outcome="deny",door="envoy-grpc"}"#,
        1.0,
    );
    at_least(
        r#"sluis_decisions_total{policy="api",rule="get",outcome="allow",door="forward-auth"}"#,
        1.0,
    );
    at_least(
        r#"sluis_decision_duration_seconds_count{door="envoy-grpc"}"#,
        4.0,
    );
    at_least(r#"sluis_token_cache_lookups_total{result="hit"}"#, 3.0);
    at_least(r#"sluis_token_cache_lookups_total{result="miss"}"#, 1.0);
    at_least("sluis_token_cache_entries", 1.0);
    at_least(
        r#"sluis_jwks_fetches_total{issuer="test",result="ok"}"#,
        1.0,
    );
    at_least(r#"sluis_policy_reloads_total{result="success"}"#, 1.0);
    at_least("sluis_policy_last_reload_success_timestamp_seconds", 1.0);
    at_least("sluis_decision_log_queue_depth", 0.0);
    assert!(text.contains("sluis_flows_indexed"), "{text}");
    // Nothing a caller sent is a label: no paths, no subjects, no tokens.
    assert!(!text.contains("/api/"), "{text}");
    assert!(!text.contains(&bearer), "{text}");
    assert!(!text.contains(claims()["sub"].as_str().unwrap()), "{text}");
    server.stop().await;
}
