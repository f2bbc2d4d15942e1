//! Memory of `POST /v1/flows/import` in the real `sluis serve`: an oversized import is
//! refused without parsing it whole, and the largest valid one fits the Helm chart's
//! memory limit. Peak RSS is the process's `VmHWM` (Linux only; elsewhere the test
//! prints `SKIPPED`). Precise figures are in BENCHMARKS.md; the bounds here are generous.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod flows_common;

use std::time::Duration;

use common::*;
use flows_common::*;
use serde_json::Value;

const SQLITE: &str = r#"{url: "sqlite:flows.db"}"#;
const MIB: u64 = 1024 * 1024;
/// The most flows in one import (`flows::MAX_IMPORT`).
const MAX_IMPORT: usize = 100_000;

/// `sluis serve` as a child process, killed when dropped.
struct Sluis {
    process: std::process::Child,
    admin: std::net::SocketAddr,
    _setup: Setup,
}

impl Sluis {
    async fn start() -> Sluis {
        let setup = setup("");
        let (grpc, admin) = (free_port(), free_port());
        std::fs::write(
            setup.config_path(),
            config_on(&grpc.to_string(), &admin.to_string(), SQLITE, TOKEN_ADMIN),
        )
        .unwrap();
        let log = std::fs::File::create(setup.dir.path().join("sluis.log")).unwrap();
        let process = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(
            wait_ready(admin, Duration::from_secs(30)).await,
            "sluis serve did not become ready"
        );
        Sluis {
            process,
            admin,
            _setup: setup,
        }
    }

    /// `VmRSS` and `VmHWM` (peak), in bytes.
    fn memory(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    async fn import(&self, body: Vec<u8>) -> (u16, Value) {
        let reply = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap()
            .post(format!("http://{}/v1/flows/import", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let body = reply.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

impl Drop for Sluis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A JSON array of `count` distinct, valid flows.
fn flows(count: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(count * 240 + 2);
    body.push(b'[');
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(
            &mut body,
            &flow(&format!("import-{i:07}"), &format!("Patient/p{i}")),
        )
        .unwrap();
    }
    body.push(b']');
    body
}

#[tokio::test]
async fn imports_take_memory_by_the_flow_limit_not_the_body() {
    let sluis = Sluis::start().await;
    let Some((idle, _)) = sluis.memory() else {
        println!("SKIPPED: no /proc/PID/status to measure memory with");
        return;
    };
    // 440,000 flows in 100 MB (under the 128 MiB body limit): refused at the 100,001st.
    let oversized = flows(MAX_IMPORT * 44 / 10);
    let size = oversized.len();
    let (status, body) = sluis.import(oversized).await;
    let (_, peak) = sluis.memory().unwrap();
    println!(
        "oversized import ({} MB): idle RSS {} MiB, peak {} MiB",
        size / 1_000_000,
        idle / MIB,
        peak / MIB
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("more than 100000 flows in one import"),
        "{body}"
    );
    // Before streaming: 1.67 GB.
    assert!(peak < 200 * MIB, "peak RSS {} MiB", peak / MIB);
    // All or nothing: none of the first 100,000 was written.
    let first = Admin::authorized(sluis.admin)
        .get("/v1/flows/import-0000000")
        .await;
    assert_eq!(first.status, 404, "{}", first.text);
    drop(sluis);

    // The largest valid import, in a fresh process.
    let sluis = Sluis::start().await;
    let (idle, _) = sluis.memory().unwrap();
    let largest = flows(MAX_IMPORT);
    let size = largest.len();
    let (status, body) = sluis.import(largest).await;
    let (_, peak) = sluis.memory().unwrap();
    println!(
        "largest valid import ({} MB, {MAX_IMPORT} flows): idle RSS {} MiB, peak {} MiB, {} bytes a flow",
        size / 1_000_000,
        idle / MIB,
        peak / MIB,
        (peak - idle) / MAX_IMPORT as u64
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], MAX_IMPORT, "{body}");
    // The Helm chart's default limit is 512Mi: this leaves room for the index and traffic.
    assert!(peak < 300 * MIB, "peak RSS {} MiB", peak / MIB);
}
