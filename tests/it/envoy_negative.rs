//! Issue #15 through a real Envoy 1.40: one sample of each class of the negative corpus
//! (`tests/it/negative_corpus.rs`) sent by a client through Envoy's ext_authz gRPC filter to
//! a real `sluis serve`. The client must see Sluis's 401/400 and the upstream must never
//! see the request.
//!
//! Without the Envoy binary the test says so and passes, unless `SLUIS_REQUIRE_ENVOY=1`.

use sluis_test_kit as kit;

use std::process::{Command, Stdio};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use kit::gateway::*;
use kit::*;
use serde_json::json;

/// A token of exactly this header and payload text, signed with the fixture RSA key.
fn raw_token(header: &str, payload: &str) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let message = format!("{}.{}", b64(header), b64(payload));
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("keys/rsa.pem")).unwrap()).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_every_class_of_the_negative_corpus() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let (upstream_port, seen) = upstream().await;
    let (grpc, admin, listen, envoy_admin) = (free_port(), free_port(), free_port(), free_port());
    let setup = Setup::new(
        &config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")),
        &[("api.yaml", POLICY)],
    );
    let _sluis = Process(
        Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _envoy = start_envoy(
        &envoy,
        setup.dir.path(),
        listen,
        grpc,
        upstream_port,
        envoy_admin,
    );
    let sluis_admin = format!("127.0.0.1:{admin}");
    wait_until("sluis", || http_ok(&sluis_admin, "/readyz")).await;
    let envoy_admin = format!("127.0.0.1:{envoy_admin}");
    wait_until("envoy", || http_ok(&envoy_admin, "/ready")).await;

    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    let mut future_iat = claims();
    future_iat["iat"] = json!(now() + 3600);
    let duplicate = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"user-1","scope":"none","scope":"read","iat":{},"exp":{}}}"#,
        now() - 10,
        now() + 600
    );
    let good = token(&claims());
    let samples: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "aud missing",
            vec![format!("Bearer {}", token(&no_aud))],
            401,
            "token has no `aud`",
        ),
        (
            "crit",
            vec![format!(
                "Bearer {}",
                raw_token(
                    r#"{"alg":"RS256","kid":"rsa-1","crit":["x-unknown"],"x-unknown":1}"#,
                    &claims().to_string()
                )
            )],
            401,
            "header `crit` lists `x-unknown`",
        ),
        (
            "future iat",
            vec![format!("Bearer {}", token(&future_iat))],
            401,
            "token is issued in the future",
        ),
        (
            "duplicate member",
            vec![format!(
                "Bearer {}",
                raw_token(r#"{"alg":"RS256","kid":"rsa-1"}"#, &duplicate)
            )],
            401,
            "token payload has member `scope` twice",
        ),
        (
            "huge kid",
            vec![format!(
                "Bearer {}",
                sign(
                    "rsa",
                    Algorithm::RS256,
                    Some(&"k".repeat(10_000)),
                    &claims()
                )
            )],
            401,
            "unknown key id `kkkk",
        ),
        (
            "empty bearer",
            vec!["Bearer ".into()],
            400,
            "empty access token",
        ),
        (
            "basic and bearer as two headers",
            vec!["Basic dXNlcjpwdw==".into(), format!("Bearer {good}")],
            400,
            "more than one authorization header",
        ),
    ];
    let client = reqwest::Client::new();
    for (name, values, status, description) in samples {
        let mut request = client.get(format!("http://127.0.0.1:{listen}/api/things"));
        for value in &values {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(description) && challenge.len() < 300,
            "{name}: {challenge}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused request reached the upstream: {:?}",
        seen.lock().unwrap()
    );
    // The same Envoy lets a good token through, so the refusals above are Sluis's.
    let response = client
        .get(format!("http://127.0.0.1:{listen}/api/things"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
