//! Flows at scale, with the server's allocator (mimalloc):
//!
//! - `flows/decide/{10,1000000}`: the eOverdracht example policy deciding an allowed
//!   request of a receiver with 10 flows, when the index holds 10 flows in all and when it
//!   holds 1,000,000 (100,000 actors with 10 each). The bar: within 1.5x.
//! - Index memory per flow (printed): resident memory before and after loading 1,000,000
//!   flows of 3 resources each, divided by the count. Flows are built and applied in
//!   batches, so the figure is the index's, not the input's.
//! - Bulk import (printed): 1,000,000 flows through `Flows::import` (validation, one
//!   transaction per 100,000, then this replica's index catch-up) into a SQLite file, and
//!   into PostgreSQL at 127.0.0.1:5432 when one is reachable (a fresh database, dropped
//!   after).
//!
//! - Index under writes (printed): lookup latency (p50/p99/max) of one actor's flows
//!   while 100,000 flows of another actor are applied in catch-up batches of 10,000, and
//!   idle; and the time to apply 10k/100k/1M flows of one actor and of distinct actors
//!   (the index part of restart-to-ready). `SLUIS_BENCH_INDEX_MAX` caps the sizes.
//!
//! Run: `cargo bench --bench flows -- --warm-up-time 1 --measurement-time 3`
//! (`SLUIS_BENCH_INDEX_ONLY=1` for the index figures alone.)
//! (`SLUIS_BENCH_FLOWS=100000` for a quicker run with fewer flows.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use sluis_config::{Config, StoreConfig};
use sluis_core::engine::Engine;
use sluis_core::flows::{Flow, FlowIndex, Resource};
use sluis_core::request::AccessRequest;
use sluis_store::{Flows, Store};
use sluis_test_kit::{SigningKey, now, repo_path};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_ACTOR: usize = 10;

fn total_flows() -> usize {
    std::env::var("SLUIS_BENCH_FLOWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// The `i`-th flow: actor `i / 10`, three resources (Task, Composition, Patient).
fn flow(i: usize) -> Flow {
    Flow {
        id: format!("transfer-{i:08}"),
        purpose: "eOverdracht".into(),
        custodian: "did:web:sender.example.org".into(),
        actor: actor(i / PER_ACTOR),
        patient: Some(format!("urn:oid:2.16.840.1.113883.2.4.6.3:{:09}", i)),
        resources: vec![
            Resource {
                path: format!("/Task/task-{i}"),
                operations: vec!["read".into(), "update".into()],
            },
            Resource {
                path: format!("/Composition/comp-{i}"),
                operations: vec!["read".into(), "document".into()],
            },
            Resource {
                path: format!("/Patient/pat-{i}"),
                operations: vec!["read".into()],
            },
        ],
        scopes: vec!["eOverdracht-receiver".into()],
        valid_from: None,
        valid_until: chrono::DateTime::from_timestamp(4_102_444_800, 0),
        revoked_at: None,
        attributes: serde_json::Map::new(),
    }
}

fn actor(n: usize) -> String {
    format!("did:web:org-{n:07}.example.org")
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// An index of `count` flows, built in batches of 10,000.
fn index_of(count: usize) -> FlowIndex {
    let index = FlowIndex::new();
    for start in (0..count).step_by(10_000) {
        let batch: Vec<Flow> = (start..(start + 10_000).min(count)).map(flow).collect();
        index.apply(batch.iter().map(|f| (f, 1)));
    }
    index.mark_loaded();
    index
}

fn engine() -> Engine {
    let path = repo_path("examples/config.yaml");
    let config = Config::load(&path).expect("example config");
    let engine = config
        .build_engine(std::sync::Arc::default())
        .expect("engine");
    let rt = runtime();
    for issuer in engine.authenticator().issuers() {
        rt.block_on(issuer.refresh()).expect("keys");
    }
    engine
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A receiver's request for the Patient of one of its flows, with a cached token.
fn receiver_request(n: usize) -> AccessRequest {
    let now = now();
    let token = SigningKey::example().sign(&json!({
        "iss": "https://nuts.example.org",
        "aud": "https://fhir.example.org",
        "sub": actor(n / PER_ACTOR),
        "client_id": actor(n / PER_ACTOR),
        "scope": "eOverdracht-receiver",
        "iat": now - 10,
        "exp": now + 3000,
    }));
    let mut request = AccessRequest {
        method: "GET".into(),
        scheme: "https".into(),
        host: "fhir.example.org".into(),
        protocol: "HTTP/1.1".into(),
        ..AccessRequest::default()
    };
    // The last flow of the actor: the scan goes over all ten.
    request.set_target(&format!("/eoverdracht/fhir/Patient/pat-{n}"));
    request
        .headers
        .insert("authorization".into(), format!("Bearer {token}"));
    request
}

fn index_only() -> bool {
    std::env::var_os("SLUIS_BENCH_INDEX_ONLY").is_some()
}

fn decide_with_flows(c: &mut Criterion) {
    if index_only() {
        return;
    }
    let rt = runtime();
    let engine = engine();
    let total = total_flows();
    let mut group = c.benchmark_group("flows/decide");
    for count in [PER_ACTOR, total] {
        let before = resident_bytes();
        let index = Arc::new(index_of(count));
        let after = resident_bytes();
        if count == total {
            println!(
                "flow index: {count} flows, {} MiB resident, {} bytes per flow",
                (after - before) / (1024 * 1024),
                (after - before) / count
            );
        }
        engine.set_flows(index.clone());
        // A receiver in the middle of the index: actor n/10 with its tenth flow.
        let n = (count / 2 / PER_ACTOR) * PER_ACTOR + PER_ACTOR - 1;
        let request = receiver_request(n);
        let decision = rt.block_on(engine.decide(&request)).expect("decision");
        assert!(decision.is_allow(), "{count}: {decision:?}");
        group.bench_function(count.to_string(), |b| {
            b.iter(|| rt.block_on(engine.decide(black_box(&request))))
        });
        engine.set_flows(Arc::new(FlowIndex::new()));
        drop(index);
    }
    group.finish();
}

/// Imports `total` flows into `url`, timed, and checks the index got them all.
fn import_into(rt: &tokio::runtime::Runtime, url: &str, base: &Path, total: usize) {
    let config: StoreConfig =
        serde_yaml_ng::from_str(&format!("url: \"{url}\"")).expect("store config");
    let store = Arc::new(rt.block_on(Store::connect(&config, base)).expect("store"));
    rt.block_on(store.migrate()).expect("migrate");
    let index = Arc::new(FlowIndex::new());
    let flows = Flows::new(store, index.clone());
    let started = Instant::now();
    for start in (0..total).step_by(100_000) {
        let batch: Vec<Flow> = (start..(start + 100_000).min(total)).map(flow).collect();
        let imported = rt.block_on(flows.import(batch)).expect("import");
        assert_eq!(imported.created, (start + 100_000).min(total) - start);
    }
    let elapsed = started.elapsed();
    assert_eq!(index.len(), total);
    println!(
        "bulk import into {}: {total} flows in {:.1} s ({:.0} flows/s), index caught up",
        url.split(':').next().unwrap_or(url),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

fn bulk_import(_c: &mut Criterion) {
    if index_only() {
        return;
    }
    let rt = runtime();
    let total = total_flows();
    let dir = tempfile::tempdir().expect("temp dir");
    import_into(&rt, "sqlite:flows.db", dir.path(), total);

    let admin = "postgres://postgres@127.0.0.1:5432/test";
    let database = format!("sluis_bench_{}", std::process::id());
    let created = rt.block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(admin).await.ok()?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut connection)
            .await
            .ok()
    });
    if created.is_none() {
        println!("bulk import into postgres: skipped, no PostgreSQL at 127.0.0.1:5432");
        return;
    }
    let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    import_into(&rt, &url, dir.path(), total);
    rt.block_on(async {
        use sqlx::Connection;
        if let Ok(mut connection) = sqlx::PgConnection::connect(admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {database} WITH (FORCE)"
            )))
            .execute(&mut connection)
            .await;
        }
    });
}

/// Percentiles of `samples` (sorted in place), in microseconds.
fn percentiles(samples: &mut [std::time::Duration]) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    (at(0.5), at(0.99), at(1.0))
}

/// The `i`-th flow, all of one receiving organisation.
fn one_actor_flow(i: usize) -> Flow {
    Flow {
        actor: "did:web:big-receiver.example.org".into(),
        ..flow(i)
    }
}

/// Applies `count` flows made by `make` in catch-up batches of 10,000; returns the time.
fn apply_in_batches(index: &FlowIndex, count: usize, make: fn(usize) -> Flow) -> f64 {
    let started = Instant::now();
    for start in (0..count).step_by(10_000) {
        let batch: Vec<Flow> = (start..(start + 10_000).min(count)).map(make).collect();
        index.apply(batch.iter().map(|f| (f, 1)));
    }
    started.elapsed().as_secs_f64()
}

fn index_under_writes(c: &mut Criterion) {
    let _ = c;
    let max: usize = std::env::var("SLUIS_BENCH_INDEX_MAX")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let now = now();

    // Lookups of actor X (10 flows) on another thread, idle and during an import of
    // 100,000 flows of actor Y into the same index.
    let index = Arc::new(FlowIndex::new());
    let x: Vec<Flow> = (0..PER_ACTOR).map(flow).collect();
    index.apply(x.iter().map(|f| (f, 1)));
    let x_actor = actor(0);
    let lookups = |index: &FlowIndex, until: &std::sync::atomic::AtomicBool| {
        let mut samples = Vec::new();
        while !until.load(std::sync::atomic::Ordering::Acquire) {
            let started = Instant::now();
            let found = index.active(&x_actor, now);
            samples.push(started.elapsed());
            assert_eq!(found.len(), PER_ACTOR);
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        samples
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut idle = std::thread::scope(|s| {
        let reader = s.spawn(|| lookups(&index, &done));
        std::thread::sleep(std::time::Duration::from_secs(2));
        done.store(true, std::sync::atomic::Ordering::Release);
        reader.join().expect("reader")
    });
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut busy = Vec::new();
    let import = std::thread::scope(|s| {
        let reader = s.spawn(|| lookups(&index, &done));
        let took = apply_in_batches(&index, 100_000, one_actor_flow);
        done.store(true, std::sync::atomic::Ordering::Release);
        busy = reader.join().expect("reader");
        took
    });
    let (p50, p99, worst) = percentiles(&mut idle);
    println!(
        "index lookup, idle: p50 {p50:.1} µs, p99 {p99:.1} µs, max {worst:.1} µs ({} lookups)",
        idle.len()
    );
    let (p50, p99, worst) = percentiles(&mut busy);
    println!(
        "index lookup during a 100k one-actor import ({import:.2} s): p50 {p50:.1} µs, p99 {p99:.1} µs, max {worst:.1} µs ({} lookups)",
        busy.len()
    );
    drop(index);

    // The index part of restart-to-ready: every flow applied once, in catch-up batches.
    for count in [10_000, 100_000, 1_000_000] {
        if count > max {
            continue;
        }
        let distinct = apply_in_batches(&FlowIndex::new(), count, flow);
        let one = apply_in_batches(&FlowIndex::new(), count, one_actor_flow);
        println!(
            "index apply of {count} flows: distinct actors (10 each) {distinct:.2} s, one actor {one:.2} s, ratio {:.2}",
            one / distinct
        );
    }
}

criterion_group!(benches, decide_with_flows, bulk_import, index_under_writes);
criterion_main!(benches);
