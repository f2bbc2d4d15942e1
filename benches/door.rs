//! The ext_authz door's translation without any network: the CheckRequest a real Envoy 1.40
//! sent (`benches/data/check-eoverdracht.bin`, the eOverdracht token and path) read into
//! an `AccessRequest`, as the gRPC door does for every Check.
//!
//! - `door/envoy/prost`: prost's `CheckRequest::decode` of the message alone (what the
//!   generated service and every no-op on this transport pay);
//! - `door/envoy/prost+translate`: that, then `access_request` (the door before #18's cut);
//! - `door/envoy/read`: the door's own reader (`doors::envoy::read_check`), from the bytes
//!   straight to the `AccessRequest`.
//!
//! Run: `cargo bench --bench door -- --warm-up-time 1 --measurement-time 3`.
//! Instruction counts: `SLUIS_BENCH_COUNT=20000 SLUIS_BENCH_CASE=read valgrind
//! --tool=callgrind target/release/deps/door-* --bench` (cases `prost`, `translate`, `read`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use prost::Message;

/// The server's allocator (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn message() -> Vec<u8> {
    let framed = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/check-eoverdracht.bin"),
    )
    .unwrap();
    // The gRPC frame: a compression flag and a 4-byte length before the message.
    framed[5..].to_vec()
}

fn prost(bytes: &[u8]) -> CheckRequest {
    CheckRequest::decode(bytes).unwrap()
}

fn translate(bytes: &[u8]) -> sluis_core::request::AccessRequest {
    sluis::doors::envoy::access_request(prost(bytes))
}

fn read(bytes: &[u8]) -> sluis_core::request::AccessRequest {
    sluis::doors::envoy::read_check(bytes).unwrap().access
}

fn bench(c: &mut Criterion) {
    let bytes = message();
    if let Ok(count) = std::env::var("SLUIS_BENCH_COUNT") {
        let count: usize = count.parse().expect("SLUIS_BENCH_COUNT: a number");
        let case = std::env::var("SLUIS_BENCH_CASE").unwrap_or_default();
        for _ in 0..count {
            match case.as_str() {
                "prost" => drop(black_box(prost(black_box(&bytes)))),
                "translate" => drop(black_box(translate(black_box(&bytes)))),
                "read" => drop(black_box(read(black_box(&bytes)))),
                _ => panic!("SLUIS_BENCH_CASE: prost, translate or read"),
            }
        }
        std::process::exit(0);
    }
    c.bench_function("door/envoy/prost", |b| b.iter(|| prost(black_box(&bytes))));
    c.bench_function("door/envoy/prost+translate", |b| {
        b.iter(|| translate(black_box(&bytes)))
    });
    c.bench_function("door/envoy/read", |b| b.iter(|| read(black_box(&bytes))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
