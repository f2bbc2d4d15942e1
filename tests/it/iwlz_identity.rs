//! iWlz RFC0014 callers against a real server, asked over gRPC as Envoy asks and over the
//! forward-auth door: the caller's UZOVI/AGB code from prefixed ids and from aggregated
//! claims (vouched for by the issuer, or verified with a shared secret, never trusted by
//! default), and the rows of the RFC0014 §6.2 error table Sluis answers itself: scope not
//! allowed (400), no or a bad token (401), an invalid client certificate (403), a body
//! too large to decide on (413).

use sluis_test_kit as kit;

use base64::Engine as _;
use kit::*;
use serde_json::{Value, json};

const AUDIENCE_IWLZ: &str = "https://koppelpunt.test/iwlz/indicatieregister/v2/graphql";
const READ: &str = "registers/wlzindicatieregister/indicaties/indicatie:read";
const SECRET: &[u8] = b"claims-provider-secret-for-tests-only";

/// The embedded claim JWTs of the RFC0014 example tokens (§4.1.4.1, §4.1.4.2, §4.2).
const SEED_PARTY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhZ2IiOiIwMTIzNDUxMjMiLCJ1em92aSI6bnVsbH0.Y6XJZI7Ri0gV8Xqh6HZ0kk97oLu6sixc3T2v2K2GKfU";
const SEED_ACTOR: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhZ2IiOm51bGwsInV6b3ZpIjoiNTAwMCJ9.9mRf50AuhkVfGwIcqYA4I_8fChcXg_N9h-VHhMo2MlE";
const SEED_PEP: &str = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJhZ2IiOiBudWxsLCAidXpvdmkiOiAiNTUyOSJ9.4YmLNTMhftIz7jL3_BOuJG0uBVHA2MobjsbMXJ9hctw";

const POLICIES: &str = r#"
policies:
  - id: indicatieregister
    match: {paths: ["/iwlz/**"]}
    issuers: [vouched, unvouched, secret]
    scopes: ["registers/wlzindicatieregister/indicaties/indicatie:read"]
    caller:
      uzovi: {prefix: "uzovi:", from: [client_id, sub, claims]}
      agb: {prefix: "agbcode:", from: [client_id, sub, claims]}
    scope_response:
      status: 400
      headers: {content-type: application/json}
      body: '{"ErrorCode":"bad_request","Error":"Scope is not allowed"}'
    rules:
      - id: graphql-body
        deny: '!request.body.contains("query")'
        status: 400
        message: a GraphQL query is required
      - id: known-party
        allow: caller.uzovi != null || caller.agb != null
    response:
      forward_claims: claims
      set_headers:
        x-sluis-uzovi: caller.uzovi
        x-sluis-agb: caller.agb
  - id: mtls
    match: {paths: ["/mtls/**"]}
    issuers: [vouched]
    rules:
      - id: client-certificate
        deny: source.certificate == null || int(now) > source.certificate.not_after || int(now) < source.certificate.not_before
        status: 403
        message: Invalid Client Certificate
      - {id: any, allow: true}
"#;

fn config() -> String {
    let jwks = fixture("keys/jwks.json");
    let issuer = |name: &str, iss: &str, extra: &str| {
        format!(
            "  - name: {name}\n    issuer: {iss}\n    audiences: [{AUDIENCE_IWLZ}]\n    single_audience: true\n    scope_claim: scopes\n    jwks: {{ file: {} }}\n{extra}",
            jwks.display()
        )
    };
    format!(
        "listeners: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}\nissuers:\n{}{}{}request_body: {{max_bytes: 1024}}\npolicies: [policies]\n",
        issuer(
            "vouched",
            "auth.nid",
            "    aggregated_claims: {vouched_by_issuer: true}\n"
        ),
        issuer("unvouched", "auth.plain", ""),
        issuer(
            "secret",
            "auth.secret",
            "    aggregated_claims: {shared_secret: {file: claims.secret}}\n"
        ),
    )
}

async fn start() -> (Setup, Server) {
    let setup = Setup::new(&config(), &[("iwlz.yaml", POLICIES)]);
    std::fs::write(setup.dir.path().join("claims.secret"), SECRET).unwrap();
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

/// An RFC0014-shaped access token of `iss`, carrying `embedded` as aggregated claims.
fn iwlz_token(iss: &str, client_id: &str, embedded: Option<&str>, scopes: &[&str]) -> String {
    let mut claims = json!({
        "iss": iss,
        "sub": client_id,
        "aud": AUDIENCE_IWLZ,
        "iat": now() - 10,
        "exp": now() + 600,
        "client_id": client_id,
        "scopes": scopes,
        "subjects": null,
    });
    if let Some(jwt) = embedded {
        claims["_claim_names"] = json!({"agb": "localhost", "uzovi": "localhost"});
        claims["_claim_sources"] = json!({"localhost": {"jwt": jwt}});
    }
    token(&claims)
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn graphql(token: &str) -> Req {
    Req::get("/iwlz/indicatieregister/v2/graphql")
        .method("POST")
        .header("content-type", "application/json")
        .body(br#"{"query":"query { wlzindicatie { id } }"}"#)
        .bearer(token)
}

#[tokio::test]
async fn the_issuer_can_vouch_for_the_rfc0014_aggregated_claims() {
    let (_setup, server) = start().await;
    // §4.1.4.1: the party itself; its AGB code only in the aggregated claims.
    let party = iwlz_token("auth.nid", "20001000001131", Some(SEED_PARTY), &[READ]);
    let answer = server.check(graphql(&party)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-sluis-agb"), Some("012345123"));
    assert_eq!(answer.header("x-sluis-uzovi"), None);
    assert!(answer.headers_to_remove.contains(&"x-sluis-uzovi".into()));
    // The claims header is the token as issued, aggregated claims included.
    let forwarded: Value = serde_json::from_str(answer.header("claims").unwrap()).unwrap();
    assert_eq!(forwarded["_claim_sources"]["localhost"]["jwt"], SEED_PARTY);

    // §4.1.4.2: acting for uzovi 5000; client_id and the aggregated claim agree.
    let actor = iwlz_token("auth.nid", "uzovi:5000", Some(SEED_ACTOR), &[READ]);
    let answer = server.check(graphql(&actor)).await;
    assert_eq!(answer.header("x-sluis-uzovi"), Some("5000"), "{answer:?}");

    // §4.2: the PEP's example, uzovi 5529.
    let pep = iwlz_token("auth.nid", "uzovi:5529", Some(SEED_PEP), &[READ]);
    let answer = server.check(graphql(&pep)).await;
    assert_eq!(answer.header("x-sluis-uzovi"), Some("5529"), "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn aggregated_claims_are_not_trusted_by_default() {
    let (_setup, server) = start().await;
    // The same token from an issuer without `aggregated_claims`: no AGB code, no party.
    let party = iwlz_token("auth.plain", "20001000001131", Some(SEED_PARTY), &[READ]);
    let answer = server.check(graphql(&party)).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.body_json()["error"], "access_denied");
    // Its prefixed client id still names the caller.
    let actor = iwlz_token("auth.plain", "uzovi:5000", Some(SEED_ACTOR), &[READ]);
    let answer = server.check(graphql(&actor)).await;
    assert_eq!(answer.header("x-sluis-uzovi"), Some("5000"), "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn embedded_jwts_are_verified_with_the_configured_secret() {
    let (_setup, server) = start().await;
    let signed = hs256(&json!({"agb": "012345123", "uzovi": null}), SECRET);
    let token = iwlz_token("auth.secret", "20001000001131", Some(&signed), &[READ]);
    let answer = server.check(graphql(&token)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-sluis-agb"), Some("012345123"));

    // Signed with another secret (the published examples), tampered with after signing,
    // or not signed at all: the claims are not used, so there is no party.
    let parts: Vec<&str> = signed.split('.').collect();
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(r#"{"agb":"999999999"}"#),
        parts[2]
    );
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none"}"#),
        b64(r#"{"agb":"012345123"}"#)
    );
    for embedded in [SEED_PARTY, tampered.as_str(), unsigned.as_str()] {
        let token = iwlz_token("auth.secret", "20001000001131", Some(embedded), &[READ]);
        let answer = server.check(graphql(&token)).await;
        assert_eq!(answer.status, 403, "{embedded}: {answer:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_token_that_contradicts_itself_names_no_caller() {
    let (_setup, server) = start().await;
    // client_id says uzovi 5000, the aggregated claim 5529.
    let token = iwlz_token("auth.nid", "uzovi:5000", Some(SEED_PEP), &[READ]);
    let answer = server.check(graphql(&token)).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_rfc0014_error_table_rows_sluis_answers() {
    let (_setup, server) = start().await;
    // [09] the token's scope is not one this register allows: 400, RFC0014's body.
    let other_register = iwlz_token(
        "auth.nid",
        "uzovi:5000",
        None,
        &["registers/wlzbemiddelingsregister/bemiddelingen/bemiddeling:read"],
    );
    let answer = server.check(graphql(&other_register)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        r#"{"ErrorCode":"bad_request","Error":"Scope is not allowed"}"#
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));

    // [10] no token, or a bad one: 401.
    let answer = server
        .check(
            Req::get("/iwlz/indicatieregister/v2/graphql")
                .method("POST")
                .body(b"{\"query\":\"{}\"}"),
        )
        .await;
    assert_eq!(answer.status, 401);
    let answer = server.check(graphql("not-a-token")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body_json()["error"], "invalid_token");

    // [13] a policy denial: 403 (here: no GraphQL query in the body, the rule's 400).
    let token = iwlz_token("auth.nid", "uzovi:5000", None, &[READ]);
    let answer = server
        .check(
            Req::get("/iwlz/indicatieregister/v2/graphql")
                .method("POST")
                .body(b"{}")
                .bearer(&token),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body_json()["message"], "a GraphQL query is required");
    server.stop().await;
}

fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> String {
    let mut params = rcgen::CertificateParams::new(vec!["client.example".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn an_invalid_client_certificate_is_403() {
    let (_setup, server) = start().await;
    let token = iwlz_token("auth.nid", "uzovi:5000", None, &[READ]);
    let request = || Req::get("/mtls/x").bearer(&token);
    // [11] missing, expired or not yet valid: 403.
    for answer in [
        server.check(request()).await,
        server
            .check(request().certificate(&certificate((2020, 1, 1), (2021, 1, 1))))
            .await,
        server
            .check(request().certificate(&certificate((2090, 1, 1), (2091, 1, 1))))
            .await,
    ] {
        assert_eq!(answer.status, 403, "{answer:?}");
        assert_eq!(
            answer.body_json()["message"],
            "Invalid Client Certificate",
            "{answer:?}"
        );
    }
    let answer = server
        .check(request().certificate(&certificate((2020, 1, 1), (2090, 1, 1))))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn request_bodies_are_decided_on_whole_or_refused() {
    let (_setup, server) = start().await;
    let token = iwlz_token("auth.nid", "uzovi:5000", None, &[READ]);
    // A query padded with spaces to exactly `size` bytes.
    let query = |size: usize| {
        let mut body = br#"{"query":"query { wlzindicatie { id } }"}"#.to_vec();
        body.resize(size, b' ');
        body
    };
    let at_limit = query(1024);
    let over = query(1025);

    // gRPC (Envoy `with_request_body`): the body is decided on, up to the limit.
    let request = |body: &[u8]| {
        Req::get("/iwlz/indicatieregister/v2/graphql")
            .method("POST")
            .body(body)
            .bearer(&token)
    };
    assert_eq!(server.check(request(&at_limit)).await.status, 200);
    let answer = server.check(request(&over)).await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        answer.body_json(),
        json!({"error": "invalid_request", "message": "the request body is larger than 1024 bytes"})
    );

    // Forward-auth (Envoy `http_service` with a body): the same.
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}/decisions/iwlz/indicatieregister/v2/graphql",
        server.http
    );
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .body(at_limit.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluis-uzovi"], "5000");
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .body(over.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "invalid_request", "message": "the request body is larger than 1024 bytes"})
    );
    // Without a body there is no query: the policy denies.
    let response = client.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}
