//! Decision latency of the engine, without any network: `Engine::decide` on a prepared
//! `AccessRequest`, driven by a tokio current-thread runtime.
//!
//! - `decide/{eoverdracht,iwlz,smart}/cached-token`: the example policies of
//!   `examples/config.yaml`, an allowed request, the same token every time (verified once,
//!   then served from the token cache). `eoverdracht` is the headline figure.
//! - `decide/first-verification/{RS256,ES256,EdDSA}`: a token never verified before on
//!   every iteration: signature, claims and cache insert included.
//! - `decide/denied/missing-token`: the cheap deny path (401, no token at all).
//!
//! Run: `cargo bench --bench decision -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use sluis::config::Config;
use sluis::engine::Engine;
use sluis::request::AccessRequest;
use sluis::server::build_engine;

/// Distinct tokens per algorithm for the first-verification benchmarks. The bench config's
/// token cache holds one entry (plus at most moka's 64 pending writes), so a token is long
/// evicted by the time the cycle comes back to it.
const FRESH_TOKENS: usize = 1024;

fn manifest_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn encoding_key(pem_path: &str, alg: Algorithm) -> EncodingKey {
    let pem = std::fs::read(manifest_path(pem_path)).expect("read signing key");
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("parse signing key")
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

fn request(method: &str, target: &str, token: Option<&str>) -> AccessRequest {
    let mut request = AccessRequest {
        method: method.to_owned(),
        scheme: "https".into(),
        host: "fhir.example.org".into(),
        protocol: "HTTP/1.1".into(),
        ..AccessRequest::default()
    };
    request.set_target(target);
    request
        .headers
        .insert("accept".into(), "application/fhir+json".into());
    request
        .headers
        .insert("user-agent".into(), "sluis-bench/1".into());
    if let Some(token) = token {
        request
            .headers
            .insert("authorization".into(), format!("Bearer {token}"));
    }
    request.source.address = "10.0.0.7:53122".into();
    request
}

/// An engine with every issuer's keys loaded, so key loading is never measured.
fn engine_from(config: &Config, rt: &Runtime) -> Engine {
    let engine = build_engine(config)
        .unwrap_or_else(|errors| panic!("cannot build engine:\n{}", errors.join("\n")));
    for issuer in engine.authenticator().issuers() {
        rt.block_on(issuer.refresh())
            .unwrap_or_else(|e| panic!("cannot load keys of `{}`: {e}", issuer.name()));
    }
    assert!(engine.ready());
    engine
}

/// Decides once, outside the measurement, and checks it is the path meant to be measured.
fn check(rt: &Runtime, engine: &Engine, request: &AccessRequest, allow: bool, what: &str) {
    let decision = rt
        .block_on(engine.decide(request))
        .unwrap_or_else(|e| panic!("{what}: engine unavailable: {e}"));
    assert_eq!(
        decision.is_allow(),
        allow,
        "{what}: expected {} but got {decision:?}",
        if allow { "allow" } else { "deny" }
    );
}

fn example_policies(c: &mut Criterion) {
    let rt = runtime();
    let config = Config::load(&manifest_path("examples/config.yaml")).expect("example config");
    let engine = engine_from(&config, &rt);
    let key = encoding_key("examples/keys/dev-rsa.pem", Algorithm::RS256);
    let now = now();

    let eoverdracht = sign(
        &key,
        Algorithm::RS256,
        "dev-1",
        &json!({
            "iss": "https://nuts.example.org",
            "aud": "https://fhir.example.org",
            "sub": "did:web:receiver.example.org",
            "client_id": "did:web:receiver.example.org",
            "scope": "eOverdracht-receiver",
            "iat": now - 10,
            "exp": now + 3000,
        }),
    );
    let iwlz = sign(
        &key,
        Algorithm::RS256,
        "dev-1",
        &json!({
            "iss": "auth.nid",
            "aud": "https://koppelpunt.ciz.nl/iwlz/indicatieregister/v2/graphql",
            "sub": "zorgkantoor-5501",
            "client_id": "zorgkantoor-5501",
            "scopes": ["registers/wlzindicatieregister/indicaties/indicatie:read"],
            "iat": now - 10,
            "exp": now + 3000,
        }),
    );
    let smart = sign(
        &key,
        Algorithm::RS256,
        "dev-1",
        &json!({
            "iss": "https://auth.example.org",
            "aud": "https://fhir.example.org",
            "sub": "backend-service-1",
            "client_id": "backend-service-1",
            "scope": "system/Observation.rs system/Patient.rs",
            "iat": now - 10,
            "exp": now + 3000,
        }),
    );

    let cases = [
        (
            "eoverdracht/cached-token",
            request("GET", "/eoverdracht/fhir/Patient/123", Some(&eoverdracht)),
        ),
        (
            "iwlz/cached-token",
            request("POST", "/iwlz/indicatieregister/v2/graphql", Some(&iwlz)),
        ),
        (
            "smart/cached-token",
            request("GET", "/fhir/Observation/1", Some(&smart)),
        ),
    ];

    let mut group = c.benchmark_group("decide");
    for (name, request) in &cases {
        // Also verifies the token, so every measured iteration is a cache hit.
        check(&rt, &engine, request, true, name);
        group.bench_function(*name, |b| {
            b.iter(|| rt.block_on(engine.decide(black_box(request))))
        });
    }

    let missing = request("GET", "/eoverdracht/fhir/Patient/123", None);
    check(&rt, &engine, &missing, false, "denied/missing-token");
    let status = rt
        .block_on(engine.decide(&missing))
        .map(|d| d.status())
        .expect("decision");
    assert_eq!(status, 401, "denied/missing-token: expected a 401");
    group.bench_function("denied/missing-token", |b| {
        b.iter(|| rt.block_on(engine.decide(black_box(&missing))))
    });
    group.finish();
}

const BENCH_ISSUER: &str = "https://bench.example.org";
const BENCH_AUDIENCE: &str = "https://api.bench.example.org";

fn first_verification(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("bench.yaml"),
        r#"policies:
  - id: bench
    issuers: [bench]
    rules:
      - id: all
        allow: "true"
"#,
    )
    .expect("write policy");
    let config_path = dir.path().join("config.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"issuers:
  - name: bench
    issuer: {BENCH_ISSUER}
    audiences: [{BENCH_AUDIENCE}]
    algorithms: [ES256, EdDSA, RS256]
    jwks: {{ file: "{jwks}" }}
policies: [bench.yaml]
token_cache:
  max_entries: 1
"#,
            jwks = manifest_path("tests/fixtures/keys/jwks.json").display()
        ),
    )
    .expect("write config");
    let config = Config::load(&config_path).expect("bench config");
    let engine = engine_from(&config, &rt);
    let now = now();

    let algorithms = [
        (
            "RS256",
            Algorithm::RS256,
            "tests/fixtures/keys/rsa.pem",
            "rsa-1",
        ),
        (
            "ES256",
            Algorithm::ES256,
            "tests/fixtures/keys/ec.pem",
            "ec-1",
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            "tests/fixtures/keys/ed25519.pem",
            "ed-1",
        ),
    ];
    let mut group = c.benchmark_group("decide/first-verification");
    for (name, alg, pem, kid) in algorithms {
        let key = encoding_key(pem, alg);
        let requests: Vec<AccessRequest> = (0..FRESH_TOKENS)
            .map(|i| {
                let token = sign(
                    &key,
                    alg,
                    kid,
                    &json!({
                        "iss": BENCH_ISSUER,
                        "aud": BENCH_AUDIENCE,
                        "sub": "bench-user",
                        "client_id": "bench-client",
                        "scope": "read",
                        "jti": format!("{name}-{i}"),
                        "iat": now - 10,
                        "exp": now + 3000,
                    }),
                );
                request("GET", "/api/things/1", Some(&token))
            })
            .collect();
        // A wrong key id or algorithm would make this a cheap 401 instead of a verification.
        for (i, request) in requests.iter().take(2).enumerate() {
            check(
                &rt,
                &engine,
                request,
                true,
                &format!("first-verification/{name} #{i}"),
            );
        }
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = &requests[next % FRESH_TOKENS];
                next = next.wrapping_add(1);
                rt.block_on(engine.decide(black_box(request)))
            })
        });
        // The cache really is tiny: a token seen a cycle ago has long been evicted.
        assert!(
            engine.authenticator().cached_tokens() <= 1,
            "token cache holds {} tokens",
            engine.authenticator().cached_tokens()
        );
    }
    group.finish();
}

criterion_group!(benches, example_policies, first_verification);
criterion_main!(benches);
