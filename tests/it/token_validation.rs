//! Token validation through the real gRPC door: each way a token can be wrong, with the
//! exact status, `WWW-Authenticate` challenge and body a client gets (RFC 6750).

use sluis_test_kit as kit;

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use kit::*;
use serde_json::json;

async fn server() -> (Setup, Server) {
    let setup = Setup::new(
        &config_yaml("127.0.0.1:0", "127.0.0.1:0"),
        &[("api.yaml", POLICY)],
    );
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Asserts a 401 `invalid_token` with this description.
fn assert_invalid(answer: &Answer, description: &str) {
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.grpc_code, 16, "UNAUTHENTICATED");
    assert_eq!(
        answer.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"sluis\", error=\"invalid_token\", error_description=\"{description}\""
            )
            .as_str()
        ),
        "{answer:?}"
    );
    assert_eq!(
        answer.body_json(),
        json!({"error": "invalid_token", "message": description})
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn valid_tokens_of_every_default_algorithm_are_allowed() {
    let (_setup, server) = server().await;
    for (key, alg, kid) in [
        ("rsa", Algorithm::RS256, "rsa-1"),
        ("rsa", Algorithm::PS256, "rsa-1"),
        ("ec", Algorithm::ES256, "ec-1"),
        ("ed25519", Algorithm::EdDSA, "ed-1"),
    ] {
        let token = sign(key, alg, Some(kid), &claims());
        let answer = server.check(Req::get("/api/things").bearer(&token)).await;
        assert_eq!(answer.status, 200, "{alg:?}: {answer:?}");
        assert_eq!(answer.grpc_code, 0);
        assert_eq!(answer.header("x-user"), Some("user-1"));
        assert_eq!(answer.header("x-client"), Some("client-1"));
        assert!(
            answer
                .headers_to_remove
                .contains(&"authorization".to_string())
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_missing_token_gets_a_challenge_without_error() {
    let (_setup, server) = server().await;
    let answer = server.check(Req::get("/api/things")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"sluis\"")
    );
    assert_eq!(
        answer.body_json(),
        json!({"error": "unauthorized", "message": "an access token is required"})
    );
    // Another scheme is not a bearer token either.
    let answer = server
        .check(Req::get("/api/things").header("authorization", "Basic dXNlcjpwYXNz"))
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"sluis\"")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let (_setup, server) = server().await;
    let token = token(&claims());
    let answer = server
        .check(Req::get("/api/things").header("authorization", &format!("bEaReR {token}")))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens() {
    let (_setup, server) = server().await;
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&expired)))
        .await;
    assert_invalid(&answer, "token has expired");

    let mut early = claims();
    early["nbf"] = json!(now() + 3600);
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&early)))
        .await;
    assert_invalid(&answer, "token is not valid yet");

    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&no_exp)))
        .await;
    assert_invalid(&answer, "token has no `exp`");
    server.stop().await;
}

#[tokio::test]
async fn wrong_issuer_and_audience() {
    let (_setup, server) = server().await;
    let mut other_iss = claims();
    other_iss["iss"] = json!("https://evil.test");
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&other_iss)))
        .await;
    assert_invalid(&answer, "issuer `https://evil.test` is not accepted here");

    let mut other_aud = claims();
    other_aud["aud"] = json!("https://other-api.test");
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&other_aud)))
        .await;
    assert_invalid(&answer, "wrong audience");
    server.stop().await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (_setup, server) = server().await;
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    for unsigned in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        let answer = server.check(Req::get("/api/x").bearer(&unsigned)).await;
        assert_invalid(&answer, "algorithm `none` is not accepted");
    }
    server.stop().await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic key-confusion attack: the attacker uses the published RSA public key as
    // an HMAC secret and hopes the verifier picks the algorithm from the token.
    let (_setup, server) = server().await;
    let public_pem = std::fs::read(fixture("keys/rsa.pub.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let answer = server.check(Req::get("/api/x").bearer(&forged)).await;
    assert_invalid(&answer, "algorithm `HS256` is not accepted");
    server.stop().await;
}

#[tokio::test]
async fn unknown_kid_and_bad_signature() {
    let (_setup, server) = server().await;
    let unknown = sign("rsa", Algorithm::RS256, Some("no-such-key"), &claims());
    let answer = server.check(Req::get("/api/x").bearer(&unknown)).await;
    assert_invalid(&answer, "unknown key id `no-such-key`");

    // Signed by another key, claiming to be ours.
    let forged = sign("rsa-other", Algorithm::RS256, Some("rsa-1"), &claims());
    let answer = server.check(Req::get("/api/x").bearer(&forged)).await;
    assert_invalid(&answer, "signature is invalid");

    // A valid token with one payload byte changed.
    let good = token(&claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload = claims();
    payload["sub"] = json!("admin");
    parts[1] = b64(payload.to_string().as_bytes());
    let tampered = parts.join(".");
    let answer = server.check(Req::get("/api/x").bearer(&tampered)).await;
    assert_invalid(&answer, "signature is invalid");
    server.stop().await;
}

#[tokio::test]
async fn malformed_tokens() {
    let (_setup, server) = server().await;
    let header = b64(br#"{"alg":"RS256","kid":"rsa-1"}"#);
    let cases = [
        ("not-a-jwt".to_string(), "token is malformed"),
        ("a.b".to_string(), "token is malformed"),
        ("a.b.c.d".to_string(), "token is malformed"),
        (format!("{header}.!!!.sig"), "token is not valid base64url"),
        (
            format!("{header}.{}.sig", b64(b"{not json")),
            "token payload is not valid JSON",
        ),
        (
            format!("{header}.{}.sig", b64(b"[1,2]")),
            "token payload must be a JSON object",
        ),
        (
            format!(
                "{}.{}.sig",
                b64(b"{oops"),
                b64(claims().to_string().as_bytes())
            ),
            "token header is not valid JSON",
        ),
    ];
    for (token, description) in cases {
        let answer = server.check(Req::get("/api/x").bearer(&token)).await;
        assert_invalid(&answer, description);
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_tokens_are_refused_unparsed() {
    let (_setup, server) = server().await;
    let mut big = claims();
    big["padding"] = json!("x".repeat(20_000));
    let answer = server.check(Req::get("/api/x").bearer(&token(&big))).await;
    assert_invalid(&answer, "token is larger than 16384 bytes");
    server.stop().await;
}

#[tokio::test]
async fn missing_scope_is_insufficient_scope() {
    let (_setup, server) = server().await;
    let mut narrow = claims();
    narrow["scope"] = json!("write");
    let answer = server
        .check(Req::get("/api/x").bearer(&token(&narrow)))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.grpc_code, 7, "PERMISSION_DENIED");
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"sluis\", error=\"insufficient_scope\", scope=\"read\"")
    );
    assert_eq!(
        answer.body_json(),
        json!({"error": "insufficient_scope", "message": "the token lacks a required scope: read"})
    );
    server.stop().await;
}

#[tokio::test]
async fn two_tokens_are_an_invalid_request() {
    let (_setup, server) = server().await;
    let token = token(&claims());
    let answer = server
        .check(
            Req::get("/api/x").header("authorization", &format!("Bearer {token},Bearer {token}")),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(
            "Bearer realm=\"sluis\", error=\"invalid_request\", error_description=\"more than one authorization header\""
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn policy_denials_name_no_token_details() {
    let (_setup, server) = server().await;
    let token = token(&claims());
    let answer = server
        .check(Req::get("/api/admin/users").bearer(&token))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.header("www-authenticate"), None);
    assert_eq!(
        answer.body_json(),
        json!({"error": "access_denied", "message": "admin is off limits"})
    );
    let answer = server
        .check(Req::get("/api/x").method("DELETE").bearer(&token))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.body_json(),
        json!({"error": "access_denied", "message": "access denied by policy"})
    );
    let answer = server.check(Req::get("/elsewhere").bearer(&token)).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.body_json(),
        json!({"error": "access_denied", "message": "no policy allows this request"})
    );
    server.stop().await;
}

#[tokio::test]
async fn rfc9068_issuers_require_the_at_jwt_type() {
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0").replace(
        "    audiences: [https://api.test]\n",
        "    audiences: [https://api.test]\n    rfc9068: true\n",
    );
    assert!(config.contains("rfc9068: true"));
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let sign_typ = |typ: &str| {
        let pem = std::fs::read(fixture("keys/rsa.pem")).unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(
            &header,
            &claims(),
            &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap()
    };
    for typ in ["at+jwt", "application/at+jwt"] {
        let answer = server
            .check(Req::get("/api/x").bearer(&sign_typ(typ)))
            .await;
        assert_eq!(answer.status, 200, "{typ}: {answer:?}");
    }
    let answer = server
        .check(Req::get("/api/x").bearer(&sign_typ("JWT")))
        .await;
    assert_invalid(
        &answer,
        "token is not an RFC 9068 access token (`typ` must be `at+jwt`)",
    );
    server.stop().await;
}
