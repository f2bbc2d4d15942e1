//! Decision latency of the engine, without any network: `Engine::decide` on a prepared
//! `AccessRequest`, driven by a tokio current-thread runtime.
//!
//! - `decide/{eoverdracht,iwlz,smart}/cached-token`: the example policies of
//!   `examples/config.yaml`, an allowed request, the same token every time (verified once,
//!   then served from the token cache). `eoverdracht` is the headline figure; `iwlz`
//!   POSTs a small part of the QIR-0001-ZKi template.
//! - `decide/iwlz/qir-0001-zki`: the whole QIR-0001-ZKi template (about 150 fields, 3 KB)
//!   as the query, with a cached token: parsing, template matching with the bound
//!   UZOVI code, and the rule.
//! - `decide/iwlz/qir-0001-zki/new-text`: the same, but every query text is new (a comment
//!   with a counter), so the policy's cache of parsed queries never answers: the parse
//!   is measured.
//! - `decide/first-verification/{RS256,ES256,EdDSA}`: a token never verified before on
//!   every iteration: signature, claims and cache insert included.
//! - `decide/denied/missing-token`: the cheap deny path (401, no token at all).
//! - `decide/cached/{jwt,introspected}`: one policy, a cached JWT against a cached
//!   introspected (opaque) token from a loopback introspection endpoint: an introspected
//!   token must cost no more per decision. Before measuring, 100 distinct new tokens are
//!   each checked 10 times concurrently and the endpoint's call count is printed
//!   (coalescing: at most one call per distinct token).
//! - `decide/candidate/{off,on}`: the eOverdracht decision alone, and with the example
//!   policies as candidate set, the candidate's decision included.
//!
//! - `fhir/parse/bgz-lastn`, `fhir/parse+check/bgz-lastn`: reading the BgZ vitals query
//!   (`Observation/$lastn` with three OR-values) as FHIR, alone and with the BgZ
//!   CapabilityStatement check; no engine.
//! - `fhir/decide/mcsd-query`: a whole decision of `policy/nl/mcsd_query.yaml`
//!   (`examples/nuts/config.yaml`), cached token: FHIR read, statement check, `caller.ura`
//!   and the rules; beside it `fhir/decide/mcsd-query-no-fhir`, the same policy and request
//!   with the `fhir` block removed (and so nothing read as FHIR): the difference is what
//!   the FHIR step costs inside a decision.
//! - `fhir/decide/bgz-lastn/cached-sources`: a whole BgZ decision of `policy/nl` as a Nuts
//!   party runs it: the scope selects `bgz`, FHIR read, BgZ statement check, the Patient's
//!   BSN (data holder's FHIR server) and Mitz's consent from the sources' caches, the
//!   rules. The first decision fills the caches from the test kit's stand-ins; the bench
//!   fails if Mitz is asked again while measuring.
//!
//! - `decision-log/{off,file}`: the eOverdracht decision without and with the decision
//!   log writing to a file (issue #8: within 10%).
//!
//! Run: `cargo bench --bench decision -- --warm-up-time 1 --measurement-time 3`
//!
//! `SLUIS_BENCH_TRACING=off|on` decides the example policies under the subscriber `sluis
//! serve` installs, tracing off or on ([`install_subscriber`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::runtime::Runtime;

use sluis_config::Config;
use sluis_core::engine::Engine;
use sluis_core::request::AccessRequest;
use sluis_test_kit::mitz::MitzStandIn;
use sluis_test_kit::nuts::{HolderFhir, patient, sources_yaml};
use sluis_test_kit::{SigningKey, now, repo_path};

/// The server's allocator (`src/main.rs`): a decision allocates many small CEL values, and
/// its cost depends on the allocator; the figures are what `sluis serve` pays.
/// (Until session 11 the benches ran on the system allocator: BENCHMARKS.md has both.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct tokens per algorithm for the first-verification benchmarks. The bench config's
/// token cache holds one entry (plus at most moka's 64 pending writes), so a token is long
/// evicted by the time the cycle comes back to it.
const FRESH_TOKENS: usize = 1024;

/// The zorgkantoor's VECOZO system certificate, as the gateway that terminated mutual TLS
/// passes it on (Envoy `include_peer_certificate`): the iWlz policy refuses a request
/// without one (RFC0014 [11]). The same certificate as `policy/iwlz-indicatieregister.test.yaml`
/// (valid until 2126).
const VECOZO_CERTIFICATE: &str = "\
-----BEGIN CERTIFICATE-----
MIIB5DCCAYugAwIBAgIUcyBT5Ayw1vdffvYz6A3m9R+t/hIwCgYIKoZIzj0EAwIw
RzEZMBcGA1UECgwQWm9yZ2thbnRvb3IgNTAwMDEqMCgGA1UEAwwhdmVjb3pvLXN5
c3RlZW1jZXJ0aWZpY2FhdC5leGFtcGxlMCAXDTI2MTIwNjAxMjU1OVoYDzIxMjYx
MTEyMDEyNTU5WjBHMRkwFwYDVQQKDBBab3Jna2FudG9vciA1MDAwMSowKAYDVQQD
DCF2ZWNvem8tc3lzdGVlbWNlcnRpZmljYWF0LmV4YW1wbGUwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAATyJRmRsNH/1/ZExuSw+9soernXihDJh69LvBSO9DQx4S72
dksHpjG34A8zO+60maRwDcNthx01qt1NAkH+PtdMo1MwUTAdBgNVHQ4EFgQUoOrb
rBlRtTu/qCHtFmd2RiQfFJEwHwYDVR0jBBgwFoAUoOrbrBlRtTu/qCHtFmd2RiQf
FJEwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBIEnbnuUidU93K
lQM+SNLH85hhbmNzT1ohhQrVXBLE6gIgMcxMKVjm7WbA7kvnWgn0gdCGiAlBR8z5
vKprH662zIM=
-----END CERTIFICATE-----
";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
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

/// `request` carrying a GraphQL `query` for the zorgkantoor with UZOVI 5501, over mutual
/// TLS (its client certificate passed on by the gateway).
fn graphql(mut request: AccessRequest, query: &str) -> AccessRequest {
    request.source.certificate = Some(VECOZO_CERTIFICATE.to_owned());
    request
        .headers
        .insert("content-type".into(), "application/json".into());
    request.body = json!({
        "query": query,
        "variables": {
            "wlzIndicatieID": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "initieelVerantwoordelijkZorgkantoor": "5501"
        }
    })
    .to_string();
    request
}

/// An engine with every issuer's keys loaded, so key loading is never measured.
fn engine_from(config: &Config, rt: &Runtime) -> Engine {
    let engine = config
        .build_engine(std::sync::Arc::default())
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

/// `SLUIS_BENCH_TRACING=off`: decide under the subscriber `sluis serve` installs without a
/// `tracing` block (its log at `info`); `on`: with tracing on, every decision sampled and
/// exported over OTLP/HTTP to a loopback port nobody listens on (export fails fast, spans
/// are dropped). Unset: no subscriber at all. One per process: compare runs.
fn install_subscriber() -> Option<sluis::telemetry::Telemetry> {
    let mode = std::env::var("SLUIS_BENCH_TRACING").ok()?;
    let telemetry = match mode.as_str() {
        "off" => None,
        "on" => {
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let config: sluis_config::telemetry::TracingConfig = serde_yaml_ng::from_str(&format!(
                "otlp: {{endpoint: 'http://{closed}', protocol: http}}\nsampling_ratio: 1.0"
            ))
            .expect("tracing config");
            Some(sluis::telemetry::Telemetry::start(&config).expect("exporter"))
        }
        other => panic!("SLUIS_BENCH_TRACING: `off` or `on`, not `{other}`"),
    };
    sluis::telemetry::init_subscriber(&sluis_config::LoggingConfig::default(), telemetry.as_ref());
    eprintln!("SLUIS_BENCH_TRACING={mode}");
    telemetry
}

fn example_policies(c: &mut Criterion) {
    let _telemetry = install_subscriber();
    let rt = runtime();
    let config = Config::load(&repo_path("examples/config.yaml")).expect("example config");
    let engine = engine_from(&config, &rt);
    register_transfer(&engine);
    let key = SigningKey::example();
    let now = now();

    let eoverdracht = eoverdracht_token(&key, now);
    let iwlz = key.sign(&json!({
        "iss": "auth.nid",
        "aud": "https://koppelpunt.ciz.nl/iwlz/indicatieregister/v2/graphql",
        "sub": "uzovi:5501",
        "client_id": "uzovi:5501",
        "uzovi": "5501",
        "scopes": ["registers/wlzindicatieregister/indicaties/indicatie:read"],
        "iat": now - 10,
        "exp": now + 3000,
    }));
    let smart = key.sign(&json!({
        "iss": "https://auth.example.org",
        "aud": "https://fhir.example.org",
        "sub": "backend-service-1",
        "client_id": "backend-service-1",
        "scope": "system/Observation.rs system/Patient.rs",
        "iat": now - 10,
        "exp": now + 3000,
    }));

    let cases = [
        (
            "eoverdracht/cached-token",
            request("GET", "/eoverdracht/fhir/Patient/123", Some(&eoverdracht)),
        ),
        (
            "iwlz/cached-token",
            graphql(
                request("POST", "/iwlz/indicatieregister/v2/graphql", Some(&iwlz)),
                "query WlzIndicatie($wlzIndicatieID: UUID!, $initieelVerantwoordelijkZorgkantoor: String!) { wlzIndicatie(where: {wlzindicatieID: {eq: $wlzIndicatieID}, initieelVerantwoordelijkZorgkantoor: {eq: $initieelVerantwoordelijkZorgkantoor}}) { wlzindicatieID bsn ingangsdatum einddatum } }",
            ),
        ),
        (
            "iwlz/qir-0001-zki",
            graphql(
                request("POST", "/iwlz/indicatieregister/v2/graphql", Some(&iwlz)),
                include_str!("../policy/iwlz/indicatie/QIR-0001-ZKi.graphql"),
            ),
        ),
        (
            "smart/cached-token",
            request("GET", "/fhir/Observation/1", Some(&smart)),
        ),
    ];

    for (name, request) in &cases {
        // Also verifies the token, so every measured iteration is a cache hit.
        check(&rt, &engine, request, true, name);
    }
    // The whole template as a query text never seen before: a comment with a counter makes
    // every iteration's text new, so the policy's parsed-query cache never answers.
    let qir = include_str!("../policy/iwlz/indicatie/QIR-0001-ZKi.graphql");
    let mut sent = 0u64;
    let new_text = |sent: &mut u64| {
        *sent += 1;
        graphql(
            request("POST", "/iwlz/indicatieregister/v2/graphql", Some(&iwlz)),
            &format!("{qir}\n# {sent}"),
        )
    };
    count_mode(&rt, &engine, &cases, || new_text(&mut sent));

    let mut group = c.benchmark_group("decide");
    for (name, request) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| rt.block_on(engine.decide(black_box(request))))
        });
    }

    check(
        &rt,
        &engine,
        &new_text(&mut sent),
        true,
        "iwlz/qir-0001-zki/new-text",
    );
    group.bench_function("iwlz/qir-0001-zki/new-text", |b| {
        b.iter_batched(
            || new_text(&mut sent),
            |request| {
                let decision = rt.block_on(engine.decide(black_box(&request)));
                (decision, request)
            },
            BatchSize::SmallInput,
        )
    });

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

    // The eOverdracht decision with the example policies as a candidate set too. `off`:
    // the answer alone. `on`: the answer, then the candidate's decision of the same request
    // (waited for every iteration, so the background work is counted, not only the
    // hand-off the door waits for).
    let with_candidate = engine_from(&config, &rt);
    let with_candidate = {
        let _runtime = rt.enter();
        with_candidate.with_candidate(1024)
    };
    with_candidate.swap_candidate(
        sluis_core::policy::PolicySet::load(&config.policy_settings()).expect("candidate"),
    );
    with_candidate.set_flows(engine.flows());
    let (_, eoverdracht) = &cases[0];
    check(&rt, &with_candidate, eoverdracht, true, "candidate/on");
    let mut group = c.benchmark_group("decide/candidate");
    group.bench_function("off", |b| {
        b.iter(|| rt.block_on(engine.decide(black_box(eoverdracht))))
    });
    group.bench_function("on", |b| {
        b.iter(|| {
            rt.block_on(async {
                let decision = with_candidate.decide(black_box(eoverdracht)).await;
                with_candidate.flush_candidate().await;
                decision
            })
        })
    });
    group.finish();
}

/// `SLUIS_BENCH_COUNT=N SLUIS_BENCH_CASE=eoverdracht/cached-token`: decide that case N
/// times and exit, without criterion. Under `valgrind --tool=callgrind` the difference
/// between N and 0 is the instruction count of N decisions: repeatable on a machine whose
/// timings are not (see BENCHMARKS.md).
/// `SLUIS_BENCH_CASE=fhir/bgz-lastn` counts the BgZ decision with cached sources.
/// `iwlz/qir-0001-zki/new-text` builds its requests in the loop: subtract with
/// `callgrind_annotate --inclusive=yes`, reading `Engine::decide`, not the whole program.
fn count_mode(
    rt: &Runtime,
    engine: &Engine,
    cases: &[(&str, AccessRequest)],
    mut new_text: impl FnMut() -> AccessRequest,
) {
    let Ok(count) = std::env::var("SLUIS_BENCH_COUNT") else {
        return;
    };
    let count: usize = count.parse().expect("SLUIS_BENCH_COUNT: a number");
    let wanted = std::env::var("SLUIS_BENCH_CASE").unwrap_or_else(|_| cases[0].0.to_owned());
    if wanted == "iwlz/qir-0001-zki/new-text" {
        for _ in 0..count {
            let request = new_text();
            black_box(rt.block_on(engine.decide(black_box(&request))).ok());
        }
        std::process::exit(0);
    }
    let (_, request) = cases
        .iter()
        .find(|(name, _)| *name == wanted)
        .unwrap_or_else(|| panic!("SLUIS_BENCH_CASE: no case `{wanted}`"));
    for _ in 0..count {
        black_box(rt.block_on(engine.decide(black_box(request))).ok());
    }
    std::process::exit(0);
}

/// Generous look-up bounds: the first decision fills the caches, also under valgrind
/// (`SLUIS_BENCH_COUNT`), where a fetch takes far longer than it would.
fn bounds_for_valgrind(sources: &str) -> String {
    let sources = sources.replace("    retries: 0\n", "    retries: 0\n    timeout: 30s\n");
    format!("lookups:\n  deadline: 60s\n{sources}")
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
            jwks = repo_path("tests/fixtures/keys/jwks.json").display()
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
        let key = SigningKey::from_pem(pem, alg, Some(kid));
        let requests: Vec<AccessRequest> = (0..FRESH_TOKENS)
            .map(|i| {
                let token = key.sign(&json!({
                    "iss": BENCH_ISSUER,
                    "aud": BENCH_AUDIENCE,
                    "sub": "bench-user",
                    "client_id": "bench-client",
                    "scope": "read",
                    "jti": format!("{name}-{i}"),
                    "iat": now - 10,
                    "exp": now + 3000,
                }));
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

/// A loopback RFC 7662 endpoint: every token starting with `opaque-` is active. Runs on
/// its own thread and runtime; counts calls.
fn introspection_endpoint() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/introspect",
                axum::routing::post(move |body: String| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let active = body.contains("token=opaque-");
                        let now = now();
                        axum::Json(if active {
                            json!({"active": true, "iss": "https://opaque.bench.example.org", "client_id": "bench-client",
                                   "sub": "bench-user", "scope": "read", "exp": now + 3000})
                        } else {
                            json!({"active": false})
                        })
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    (address, calls)
}

fn introspected_vs_jwt(c: &mut Criterion) {
    use std::sync::atomic::Ordering;
    let rt = runtime();
    let (endpoint, calls) = introspection_endpoint();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("bench.yaml"),
        "policies:\n  - id: bench\n    issuers: [jwt, opaque]\n    rules:\n      - {id: all, allow: \"token.client_id == 'bench-client'\"}\n    response:\n      set_headers: {x-client: token.client_id}\n",
    )
    .expect("write policy");
    let config_path = dir.path().join("config.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"issuers:
  - name: jwt
    issuer: {BENCH_ISSUER}
    audiences: [{BENCH_AUDIENCE}]
    jwks: {{ file: "{jwks}" }}
  - name: opaque
    issuer: https://opaque.bench.example.org
    introspection:
      endpoint: http://{endpoint}/introspect
      allow_insecure_http: true
policies: [bench.yaml]
"#,
            jwks = repo_path("tests/fixtures/keys/jwks.json").display()
        ),
    )
    .expect("write config");
    let config = Config::load(&config_path).expect("bench config");
    let engine = std::sync::Arc::new(engine_from(&config, &rt));

    // Coalescing under a 100% miss workload: 100 new tokens, 10 concurrent checks each.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = calls.load(Ordering::SeqCst);
    multi.block_on(async {
        let mut tasks = Vec::new();
        for token in 0..100 {
            for _ in 0..10 {
                let engine = engine.clone();
                let request = request("GET", "/x", Some(&format!("opaque-miss-{token}")));
                tasks.push(tokio::spawn(async move { engine.decide(&request).await }));
            }
        }
        for task in tasks {
            assert!(task.await.expect("task").expect("decision").is_allow());
        }
    });
    eprintln!(
        "introspection coalescing: 1000 checks of 100 new tokens made {} upstream calls",
        calls.load(Ordering::SeqCst) - before
    );

    let key = SigningKey::fixture("rsa", Algorithm::RS256, Some("rsa-1"));
    let jwt = key.sign(&json!({"iss": BENCH_ISSUER, "aud": BENCH_AUDIENCE, "sub": "bench-user",
                "client_id": "bench-client", "scope": "read", "iat": now() - 10, "exp": now() + 3000}),
    );
    let cases = [
        ("jwt", request("GET", "/x", Some(&jwt))),
        (
            "introspected",
            request("GET", "/x", Some("opaque-cached-token")),
        ),
    ];
    let mut group = c.benchmark_group("decide/cached");
    for (name, request) in &cases {
        check(&rt, &engine, request, true, name);
        group.bench_function(*name, |b| {
            b.iter(|| rt.block_on(engine.decide(black_box(request))))
        });
    }
    group.finish();
}

/// The receiver's transfer, as the sender would register it, for the eOverdracht policy.
fn register_transfer(engine: &Engine) {
    let transfer = sluis_core::flows::Flow::from_json(json!({
        "id": "transfer-1",
        "purpose": "eOverdracht",
        "custodian": "did:web:sender.example.org",
        "actor": "did:web:receiver.example.org",
        "resources": [
            {"path": "Task/transfer-1", "operations": ["read", "update"]},
            {"path": "Composition/abc", "operations": ["read", "document"]},
            {"path": "Patient/123", "operations": ["read"]},
        ],
        "scopes": ["eOverdracht-receiver"],
    }))
    .expect("flow");
    engine.set_flows(std::sync::Arc::new(
        sluis_core::flows::FlowIndex::from_flows([&transfer]),
    ));
}

/// The receiver's access token, for the eOverdracht policy.
fn eoverdracht_token(key: &SigningKey, now: i64) -> String {
    key.sign(&json!({
        "iss": "https://nuts.example.org",
        "aud": "https://fhir.example.org",
        "sub": "did:web:receiver.example.org",
        "client_id": "did:web:receiver.example.org",
        "scope": "eOverdracht-receiver",
        "iat": now - 10,
        "exp": now + 3000,
    }))
}

/// `decision-log/{off,file}`: the eOverdracht decision with the decision log off, and
/// writing to a file (the default queue; the writer thread formats, masks and writes
/// beside the deciding thread), measured alternately in one run.
fn decision_log(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let off = Config::load(&repo_path("examples/config.yaml")).expect("example config");
    let mut on = off.clone();
    on.decision_log = Some(
        serde_yaml_ng::from_str(&format!(
            "{{sink: file, path: {}}}",
            dir.path().join("decisions.log").display()
        ))
        .expect("decision log config"),
    );
    let key = SigningKey::example();
    let token = eoverdracht_token(&key, now());
    let request = request("GET", "/eoverdracht/fhir/Patient/123", Some(&token));
    let mut group = c.benchmark_group("decision-log");
    for (name, config) in [("off", &off), ("file", &on)] {
        let engine = {
            let _runtime = rt.enter();
            engine_from(config, &rt)
        };
        register_transfer(&engine);
        check(&rt, &engine, &request, true, name);
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(engine.decide(black_box(&request))))
        });
    }
    group.finish();
}

fn fhir(c: &mut Criterion) {
    use sluis_core::fhir::{FhirLimits, FhirVersion, capability::Capabilities, parse};
    let bgz = Capabilities::from_json(
        "bgz",
        &std::fs::read(repo_path("tests/fixtures/fhir/capabilities/bgz.json")).unwrap(),
    )
    .unwrap();
    let vitals = request(
        "GET",
        "/fhir/Observation/$lastn?code=http://loinc.org|8302-2,http://loinc.org|8306-3,http://loinc.org|8308-9",
        None,
    );
    let limits = FhirLimits::default();
    let parsed = parse(&vitals, "/fhir", FhirVersion::Stu3, &limits).unwrap();
    assert_eq!(bgz.check(&parsed, false), Ok(()));
    let mut group = c.benchmark_group("fhir");
    group.bench_function("parse/bgz-lastn", |b| {
        b.iter(|| parse(black_box(&vitals), "/fhir", FhirVersion::Stu3, &limits))
    });
    group.bench_function("parse+check/bgz-lastn", |b| {
        b.iter(|| {
            let parsed = parse(black_box(&vitals), "/fhir", FhirVersion::Stu3, &limits).unwrap();
            bgz.check(&parsed, false).is_ok()
        })
    });

    // The mCSD query policy, and the same policy without its `fhir` block, side by side.
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("nl");
    std::fs::create_dir_all(policy_dir.join("capabilities")).unwrap();
    std::fs::copy(
        repo_path("policy/nl/capabilities/mcsd_query.json"),
        policy_dir.join("capabilities/mcsd_query.json"),
    )
    .unwrap();
    let policy = std::fs::read_to_string(repo_path("policy/nl/mcsd_query.yaml")).unwrap();
    std::fs::write(policy_dir.join("mcsd_query.yaml"), &policy).unwrap();
    let without = policy.replace(
        "    fhir:\n      base_path: /fhir\n      capability_statement: capabilities/mcsd_query.json\n",
        "",
    );
    assert_ne!(
        without, policy,
        "the fhir block is where the bench expects it"
    );
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::write(plain_dir.join("mcsd_query.yaml"), without).unwrap();
    let config_text = |policies: &std::path::Path| {
        format!(
            "issuers:\n  - name: nuts-node\n    issuer: https://nuts.example.org\n    audiences: [https://fhir.example.org]\n    jwks: {{ file: {} }}\npolicies:\n  - {}\n",
            repo_path("examples/keys/dev-jwks.json").display(),
            policies.display()
        )
    };
    let key = SigningKey::example();
    let now = now();
    let token = key.sign(&json!({
            "iss": "https://nuts.example.org",
            "aud": "https://fhir.example.org",
            "sub": "nuts-client",
            "organization_ura": "24173480",
            "iat": now - 10,
            "exp": now + 3000,
    }));
    let search = request(
        "GET",
        "/fhir/Organization?name:contains=Zorg&active=true&_count=20",
        Some(&token),
    );
    for (name, policies) in [
        ("decide/mcsd-query", &policy_dir),
        ("decide/mcsd-query-no-fhir", &plain_dir),
    ] {
        let file = dir.path().join(format!("{}.yaml", name.replace('/', "-")));
        std::fs::write(&file, config_text(policies)).unwrap();
        let config = Config::load(&file).unwrap();
        let engine = {
            let _runtime = rt.enter();
            engine_from(&config, &rt)
        };
        check(&rt, &engine, &search, true, name);
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(engine.decide(black_box(&search))))
        });
    }

    // BgZ as a Nuts party decides it: the token's scope selects `bgz`
    // (policy/nl/knooppunt.yaml), the request is read as FHIR and checked against the BgZ
    // statement, the Patient's BSN and Mitz's answer come from the sources' caches (filled
    // by the first decision, against the test kit's stand-ins), and the rules run.
    let (holder_url, mitz) = rt.block_on(async {
        let holder = HolderFhir::new(vec![patient("p1", "900186021")]);
        (holder.start().await, MitzStandIn::start().await)
    });
    let file = dir.path().join("bgz.yaml");
    std::fs::write(
        &file,
        format!(
            "issuers:\n  - name: nuts-node\n    issuer: https://nuts.example.org\n    audiences: [https://fhir.example.org]\n    jwks: {{ file: {} }}\npolicies:\n  - {}\n{}",
            repo_path("examples/keys/dev-jwks.json").display(),
            repo_path("policy/nl").display(),
            bounds_for_valgrind(&sources_yaml(&holder_url, &mitz))
        ),
    )
    .unwrap();
    let config = Config::load(&file).unwrap();
    let engine = {
        let _runtime = rt.enter();
        engine_from(&config, &rt)
    };
    let token = key.sign(&json!({
            "iss": "https://nuts.example.org",
            "aud": "https://fhir.example.org",
            "client_id": "https://requester.example.org",
            "scope": "bgz",
            "organization_ura": "24173480",
            "organization_facility_type": "Z3",
            "subject_role": "01.015",
            "iat": now - 10,
            "exp": now + 3000,
    }));
    let lastn = request(
        "GET",
        "/fhir/Observation/$lastn?patient=Patient/p1&category=http://snomed.info/sct|118228005,http://snomed.info/sct|384821006",
        Some(&token),
    );
    check(
        &rt,
        &engine,
        &lastn,
        true,
        "decide/bgz-lastn/cached-sources",
    );
    if std::env::var("SLUIS_BENCH_CASE").as_deref() == Ok("fhir/bgz-lastn") {
        count_mode(&rt, &engine, &[("fhir/bgz-lastn", lastn.clone())], || {
            lastn.clone()
        });
    }
    let asked = mitz.calls();
    group.bench_function("decide/bgz-lastn/cached-sources", |b| {
        b.iter(|| rt.block_on(engine.decide(black_box(&lastn))))
    });
    assert_eq!(
        mitz.calls(),
        asked,
        "Mitz was asked again: not the cached path"
    );
    group.finish();
}

criterion_group!(
    benches,
    fhir,
    example_policies,
    decision_log,
    first_verification,
    introspected_vs_jwt
);
criterion_main!(benches);
