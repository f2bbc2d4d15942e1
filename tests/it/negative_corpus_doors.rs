//! The negative corpus (issue #15) at the doors `tests/it/negative_corpus.rs` does not reach:
//! every row through the OPA Data API door (as Kong's and APISIX's `opa` plugins send it)
//! and the Care Services door (v2 search-narrowing, the token in `http_request.headers`).
//! Each must refuse every row with the status and challenge the gRPC door gives: the OPA
//! door inside its `result` (it answers 200 to the plugin, which answers the client), the
//! Care Services door as its own HTTP status.
//!
//! The AuthZEN door takes no end-user token: its `Authorization` is the calling PEP's
//! own credential, compared with `authzen.token`, and the subject is data the PEP vouches
//! for (docs/security.md says so); a corpus row has nothing to reach there.

use sluis_test_kit as kit;

use kit::corpus::{authorization, cases, jwks_with_pinned_key};
use kit::*;
use serde_json::{Value, json};

fn kong_input(authorization: &str) -> Value {
    json!({"input": {
        "request": {"http": {
            "host": "api.test", "port": "8000", "tls": {}, "method": "GET", "scheme": "https",
            "path": "/api/things", "querystring": {},
            "headers": {"authorization": authorization, "user-agent": "curl/8.0"},
        }},
        "client_ip": "127.0.0.1",
    }})
}

fn apisix_input(authorization: &str) -> Value {
    json!({"input": {
        "type": "http",
        "request": {
            "scheme": "https", "path": "/api/things", "query": {}, "port": 9080,
            "method": "GET", "host": "api.test",
            "headers": {"authorization": authorization, "host": "api.test"},
        },
        "var": {"remote_addr": "127.0.0.1", "remote_port": "40000"},
    }})
}

fn care_services_v2(authorization: &str) -> Value {
    json!({
        "introspection_result": {"active": true},
        "http_request": {
            "method": "GET",
            "path": "/api/things",
            "headers": {"authorization": authorization},
        },
    })
}

#[tokio::test]
async fn every_corpus_token_is_refused_at_the_opa_and_care_services_doors() {
    let keys = tempfile::tempdir().unwrap();
    let jwks = jwks_with_pinned_key(keys.path());
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0").replace(
        &fixture("keys/jwks.json").display().to_string(),
        &jwks.display().to_string(),
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let client = reqwest::Client::new();
    let opa = format!("http://{}/v1/data/sluis/allow", server.http);
    let care = format!("http://{}/authorization/search-narrowing", server.http);
    let mut failures = Vec::new();
    let cases = cases();
    // The builder's valid token first: each door must allow it, so every refusal below
    // is the row's doing.
    let valid = json!({"name": "valid", "status": 200});
    for case in std::iter::once(&valid).chain(&cases) {
        let name = case["name"].as_str().unwrap();
        let value = authorization(case);
        let expected = case["status"].as_u64().unwrap() as u16;
        // The gRPC door's answer is the reference (`tests/it/negative_corpus.rs` checks it
        // against the row).
        let reference = server
            .check(Req::get("/api/things").header("authorization", &value))
            .await;
        if reference.status != expected {
            failures.push(format!("{name}: grpc door gave {}", reference.status));
            continue;
        }
        let challenge = reference.header("www-authenticate").map(str::to_owned);
        let error = case["error"].as_str();
        if let (Some(error), Some(challenge)) = (error, &challenge)
            && !challenge.contains(&format!("error=\"{error}\""))
        {
            failures.push(format!("{name}: grpc door challenge `{challenge}`"));
            continue;
        }

        for (plugin, input, status_field) in [
            ("kong", kong_input(&value), "status"),
            ("apisix", apisix_input(&value), "status_code"),
        ] {
            let response = client.post(&opa).json(&input).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            let result = &body["result"];
            let right = status == 200
                && if expected == 200 {
                    result["allow"] == true
                } else {
                    result["allow"] == false
                        && result[status_field] == expected
                        && result["headers"]["www-authenticate"].as_str() == challenge.as_deref()
                };
            if !right {
                failures.push(format!("{name}: opa door ({plugin}) gave {status} {body}"));
            }
        }

        let response = client
            .post(&care)
            .json(&care_services_v2(&value))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let http_challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        if status != expected || (expected != 200 && http_challenge != challenge) {
            failures.push(format!(
                "{name}: care services door gave {status} {http_challenge:?} {body}"
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
