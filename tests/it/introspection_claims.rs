//! What an `active: true` RFC 7662 answer may say and still be accepted: `active` is the
//! authorization server's word that the token is usable, not a licence to skip the claim
//! rules. An expired `exp`, an `nbf` or `iat` beyond the leeway in the future, a date that
//! is not a number, and an `aud` naming none of the configured audiences are refused,
//! against a loopback stand-in for the authorization server.

use sluis_test_kit as kit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kit::*;
use serde_json::{Value, json};

/// A stand-in answering, for each token, the document registered for it (inactive for
/// any other).
async fn auth_server(answers: HashMap<String, Value>) -> std::net::SocketAddr {
    let answers = Arc::new(Mutex::new(answers));
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move |body: String| {
            let answers = answers.clone();
            async move {
                let token = body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .unwrap_or("");
                let answer = answers
                    .lock()
                    .unwrap()
                    .get(token)
                    .cloned()
                    .unwrap_or(json!({"active": false}));
                answer.to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

const POLICY: &str = r#"
policies:
  - id: api
    match: {paths: ["/api/**"]}
    issuers: [test]
    rules:
      - {id: get, allow: request.method == "GET"}
"#;

fn active(extra: Value) -> Value {
    let mut answer = json!({
        "active": true,
        "iss": ISSUER,
        "sub": "user-1",
        "client_id": "client-1",
        "scope": "read",
        "exp": now() + 600,
        "iat": now() - 10,
    });
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            answer.as_object_mut().unwrap().remove(name);
        } else {
            answer[name] = value.clone();
        }
    }
    answer
}

#[tokio::test]
async fn active_answers_are_held_to_the_claim_rules() {
    let now = now();
    // (token, answer, expected description or None for an allow)
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("plain", active(json!({})), None),
        ("no-dates", active(json!({"exp": null, "iat": null})), None),
        ("aud-ours", active(json!({"aud": "api"})), None),
        ("aud-list", active(json!({"aud": ["other", "api"]})), None),
        ("aud-absent", active(json!({})), None),
        // Within the 30 s leeway.
        ("exp-leeway", active(json!({"exp": now - 10})), None),
        ("iat-leeway", active(json!({"iat": now + 10})), None),
        (
            "exp-fraction",
            active(json!({"exp": (now + 600) as f64 + 0.5})),
            None,
        ),
        (
            "expired",
            active(json!({"exp": now - 120})),
            Some("token has expired"),
        ),
        (
            "iat-future",
            active(json!({"iat": now + 120})),
            Some("token is issued in the future"),
        ),
        (
            "nbf-future",
            active(json!({"nbf": now + 120})),
            Some("token is not valid yet"),
        ),
        (
            "aud-other",
            active(json!({"aud": "other"})),
            Some("wrong audience"),
        ),
        (
            "aud-empty",
            active(json!({"aud": []})),
            Some("wrong audience"),
        ),
        (
            "aud-number",
            active(json!({"aud": 7})),
            Some("introspected claim `aud` must be a string or an array of strings"),
        ),
        (
            "aud-mixed",
            active(json!({"aud": ["api", 7]})),
            Some("introspected claim `aud` must be a string or an array of strings"),
        ),
        (
            "exp-text",
            active(json!({"exp": (now - 120).to_string()})),
            Some("introspected claim `exp` must be a number"),
        ),
        (
            "iat-text",
            active(json!({"iat": "soon"})),
            Some("introspected claim `iat` must be a number"),
        ),
        (
            "nbf-bool",
            active(json!({"nbf": true})),
            Some("introspected claim `nbf` must be a number"),
        ),
        (
            "iss-number",
            active(json!({"iss": 1})),
            Some("introspected claim `iss` must be a string"),
        ),
        (
            "iss-other",
            active(json!({"iss": "https://elsewhere.test"})),
            Some("wrong issuer"),
        ),
        (
            "sub-object",
            active(json!({"sub": {"id": 1}})),
            Some("introspected claim `sub` must be a string"),
        ),
    ];
    let answers = cases
        .iter()
        .map(|(token, answer, _)| (token.to_string(), answer.clone()))
        .collect();
    let address = auth_server(answers).await;
    let config = format!(
        r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [api]
    introspection:
      endpoint: http://{address}/introspect
      allow_insecure_http: true
      timeout: 1s
policies: [policies]
"#
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let mut wrong = Vec::new();
    for (token, _, expected) in &cases {
        let answer = server.check(Req::get("/api/x").bearer(token)).await;
        let got = match answer.status {
            200 => None,
            401 => Some(answer.body_json()["message"].as_str().unwrap().to_string()),
            other => Some(format!("status {other}: {}", answer.body)),
        };
        if got.as_deref() != *expected {
            wrong.push(format!("{token}: expected {expected:?}, got {got:?}"));
        }
        if answer.status == 401 {
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            if !challenge.contains("error=\"invalid_token\"") {
                wrong.push(format!("{token}: challenge {challenge}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    server.stop().await;
}
