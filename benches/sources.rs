//! Information sources (issue #20), in the engine, against the test kit's data holder
//! (`sluis_test_kit::nuts::HolderFhir`).
//!
//! - `sources/cached` and `sources/none`, side by side: one anonymous policy whose rule
//!   reads `sources.holder({'read': 'Patient/' + id}).active`, every answer already in the
//!   source's cache; and the same policy and request with the look-up replaced by the
//!   literal answer. The difference is what a fully cached look-up costs a decision
//!   (target: at most 1 µs).
//! - Before those, `coalescing`: 1,000 concurrent decisions over 10 distinct patients
//!   against a stand-in answering after 20 ms, on a 2-worker runtime, with a fresh engine
//!   (empty cache) per run; prints the upstream calls (must be 10) and the p50/p99/max
//!   decision latency of each run, then the median and range over the runs (target: p99
//!   under 40 ms). `SLUIS_BENCH_COALESCING_RUNS` (default 7) sets the runs.
//!
//! Run: `cargo bench --bench sources -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use sluis_config::Config;
use sluis_core::engine::Engine;
use sluis_core::request::AccessRequest;
use sluis_test_kit::nuts::HolderFhir;

/// The server's allocator (`src/main.rs`): a decision allocates many small CEL values, and
/// its cost depends on the allocator; the figures are what `sluis serve` pays.
/// (Until session 11 the benches ran on the system allocator: BENCHMARKS.md has both.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The test kit's data holder, holding ten active Patients `p0`..`p9` and answering
/// after `delay`; its base URL, and the server to count its reads.
async fn stand_in(delay: Duration) -> (String, HolderFhir) {
    let patients = (0..10)
        .map(|i| serde_json::json!({"resourceType": "Patient", "id": format!("p{i}"), "active": true}))
        .collect();
    let holder = HolderFhir::new(patients).delayed(delay);
    (holder.start().await, holder)
}

const WITH_SOURCE: &str = r#"
policies:
  - id: read
    anonymous: true
    match: {paths: ["/patients/*"]}
    rules:
      - id: active-patient
        allow: "sources.holder({'read': 'Patient/' + request.segments[1]}).active == true"
"#;

/// The same rule over the literal answer: what is left without the look-up.
const WITHOUT_SOURCE: &str = r#"
policies:
  - id: read
    anonymous: true
    match: {paths: ["/patients/*"]}
    rules:
      - id: active-patient
        allow: "{'resourceType': 'Patient', 'id': request.segments[1], 'active': true}.active == true"
"#;

/// An engine over `policies` with the `holder` source at `url` (a long TTL, a generous
/// deadline and limit: the bench measures the mechanism, not the bounds).
fn engine(url: &str, policies: &str) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), policies).unwrap();
    let config = format!(
        "listeners: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}\npolicies: [policies]\nlookups: {{deadline: 5s}}\nsources:\n  - {{name: holder, kind: fhir, base_url: '{url}', allow_insecure_http: true, timeout: 5s, max_concurrent: 64, cache: {{ttl: 1h}}}}\n"
    );
    std::fs::write(dir.path().join("sluis.yaml"), config).unwrap();
    let config = Config::load(&dir.path().join("sluis.yaml")).unwrap();
    let engine = config
        .build_engine(Arc::default())
        .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    (dir, engine)
}

fn request(path: &str) -> AccessRequest {
    let mut request = AccessRequest {
        method: "GET".into(),
        scheme: "https".into(),
        host: "fhir.example.org".into(),
        protocol: "HTTP/1.1".into(),
        ..AccessRequest::default()
    };
    request.set_target(path);
    request
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// 1,000 concurrent decisions over 10 keys, 20 ms upstream: calls and latency per run.
fn coalescing() {
    let runs: usize = std::env::var("SLUIS_BENCH_COALESCING_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut p99s = Vec::new();
    rt.block_on(async {
        let (url, holder) = stand_in(Duration::from_millis(20)).await;
        for run in 0..runs {
            let before = holder.calls();
            let (_dir, engine) = engine(&url, WITH_SOURCE);
            let engine = Arc::new(engine);
            let tasks: Vec<_> = (0..1000)
                .map(|i| {
                    let engine = engine.clone();
                    let request = request(&format!("/patients/p{}", i % 10));
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let decision = engine.decide(&request).await.unwrap();
                        assert!(decision.is_allow(), "{}", decision.reason);
                        started.elapsed()
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.push(task.await.unwrap());
            }
            latencies.sort();
            let made = holder.calls() - before;
            let p99 = percentile(&latencies, 0.99);
            println!(
                "coalescing run {run}: 1000 decisions, 10 keys, {made} upstream calls; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms(percentile(&latencies, 0.5)),
                ms(p99),
                ms(*latencies.last().unwrap())
            );
            assert_eq!(made, 10, "one upstream call per distinct key");
            p99s.push(p99);
        }
    });
    p99s.sort();
    println!(
        "coalescing: p99 over {runs} runs: median {:.1} ms, range {:.1}-{:.1} ms",
        ms(percentile(&p99s, 0.5)),
        ms(p99s[0]),
        ms(*p99s.last().unwrap())
    );
}

fn cached_against_none(c: &mut Criterion) {
    coalescing();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, holder) = rt.block_on(stand_in(Duration::ZERO));
    let (_a, with_source) = engine(&url, WITH_SOURCE);
    let (_b, without) = engine(&url, WITHOUT_SOURCE);
    let request = request("/patients/p1");
    for engine in [&with_source, &without] {
        let decision = rt.block_on(engine.decide(&request)).unwrap();
        assert!(decision.is_allow(), "{}", decision.reason);
    }
    assert_eq!(holder.calls(), 1, "warmed: the answer is cached");
    let mut group = c.benchmark_group("sources");
    group.bench_function("cached", |b| {
        b.iter(|| black_box(rt.block_on(with_source.decide(black_box(&request)))))
    });
    group.bench_function("none", |b| {
        b.iter(|| black_box(rt.block_on(without.decide(black_box(&request)))))
    });
    group.finish();
    assert_eq!(holder.calls(), 1, "every measured decision was cached");
}

criterion_group!(benches, cached_against_none);
criterion_main!(benches);
