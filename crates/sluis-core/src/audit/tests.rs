#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use super::*;

fn config(yaml: &str) -> DecisionLogConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn record(path: &str) -> DecisionRecord {
    DecisionRecord {
        time: SystemTime::now(),
        door: "test",
        request_id: Some("r-1".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        trace_id: None,
        policies: None,
        policy: Some(Arc::from("api")),
        rule: Some(Arc::from("get")),
        outcome: "allow",
        status: 200,
        reason: "rule `get` allowed".into(),
        caller: None,
        method: "GET".into(),
        host: "api.test".into(),
        path: path.into(),
        query: String::new(),
        latency: Duration::from_micros(42),
        shadow: None,
        candidate: None,
        response: None,
        search: None,
    }
}

/// A sink that holds the writer on its first line until the test lets it go.
struct Blocking {
    release: std_mpsc::Receiver<()>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sink for Blocking {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let _ = self.release.recv();
        self.lines.lock().unwrap().push(line.to_owned());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collects lines.
#[derive(Clone, Default)]
struct Memory(Arc<Mutex<Vec<String>>>);

impl Sink for Memory {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().push(line.to_owned());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_for_lines(lines: &Arc<Mutex<Vec<String>>>, count: usize) -> Vec<String> {
    for _ in 0..500 {
        if lines.lock().unwrap().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lines.lock().unwrap().clone()
}

#[tokio::test]
async fn a_full_queue_counts_drops_instead_of_waiting() {
    let (release, released) = std_mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Blocking {
        release: released,
        lines: lines.clone(),
    };
    let log = DecisionLog::with_sink(&config("queue: 2"), Box::new(sink), None).unwrap();
    // The writer takes at most one record and then hangs in the sink; the queue holds two
    // more; everything beyond is dropped. Each call returns although nothing is written.
    for n in 0..20 {
        log.record(record(&format!("/r/{n}"))).await;
    }
    assert!(log.dropped() >= 17, "dropped {}", log.dropped());
    assert!(log.dropped() <= 18, "dropped {}", log.dropped());
    let dropped = log.dropped();
    for _ in 0..20 {
        release.send(()).unwrap();
    }
    let written = wait_for_lines(&lines, 20 - dropped as usize).await;
    assert_eq!(written.len() as u64 + dropped, 20);
    assert!(written.first().unwrap().contains("/r/0"));
}

#[tokio::test]
async fn lines_carry_every_field() {
    let memory = Memory::default();
    let log = DecisionLog::with_sink(&config("{}"), Box::new(memory.clone()), None).unwrap();
    let mut record = record("/fhir/Patient/111222333");
    record.query = "subject=999999990&n=123456789".into();
    log.record(record).await;
    let lines = wait_for_lines(&memory.0, 1).await;
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["door"], "test");
    assert_eq!(line["request_id"], "r-1");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["policy"], "api");
    assert_eq!(line["rule"], "get");
    assert_eq!(line["outcome"], "allow");
    assert_eq!(line["status"], 200);
    assert_eq!(line["latency_us"], 42);
    assert_eq!(line["request"]["path"], "/fhir/Patient/[bsn]");
    assert_eq!(line["request"]["query"], "subject=[bsn]&n=123456789");
    assert!(line["caller"].is_null());
    assert!(line.get("prev").is_none(), "no chain unless asked");
    let time = line["time"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    assert!(time.ends_with('Z'), "{time}");
    let id = uuid::Uuid::parse_str(line["decision_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version(), Some(uuid::Version::Random));
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
}

proptest::proptest! {
    /// Formatting once per second gives what chrono gives for each time: times in any
    /// order, the same second again, before 1970 and past the year 9999.
    #[test]
    fn stamps_are_chronos_rfc3339_with_microseconds(
        times in proptest::collection::vec(
            (-100_000_000_000i64..300_000_000_000i64, 0u32..1_000_000_000u32, 0u8..3),
            1..20,
        ),
    ) {
        let mut stamps = Stamps::default();
        let mut last = None;
        for (secs, nanos, again) in times {
            // Now and then the previous second again, with other nanoseconds.
            let secs = if again == 0 { last.unwrap_or(secs) } else { secs };
            last = Some(secs);
            let offset = Duration::new(secs.unsigned_abs(), 0);
            let whole = if secs >= 0 { UNIX_EPOCH + offset } else { UNIX_EPOCH - offset };
            let time = whole + Duration::from_nanos(u64::from(nanos));
            let expected = chrono::DateTime::<chrono::Utc>::from(time)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            proptest::prop_assert_eq!(stamps.format(time), expected);
        }
    }
}

#[test]
fn decision_ids_are_random_uuids_and_differ_across_the_pools_draws() {
    let mut pool = IdPool::new();
    let ids: std::collections::HashSet<uuid::Uuid> =
        (0..3 * IdPool::IDS + 5).map(|_| pool.next()).collect();
    assert_eq!(ids.len(), 3 * IdPool::IDS + 5, "an id came twice");
    for id in &ids {
        assert_eq!(id.get_version(), Some(uuid::Version::Random), "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
    }
    // A second pool does not start where the first did.
    assert!(!ids.contains(&IdPool::new().next()));
}

#[test]
fn trace_ids_come_only_from_well_formed_traceparents() {
    assert_eq!(
        trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        None
    );
    assert_eq!(trace_id("00-4bf92f35-00f067aa0ba902b7-01"), None);
    assert_eq!(trace_id("garbage"), None);
}

/// The log files under `dir`, oldest first.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let path = dir.join("decisions.log");
    let mut files: Vec<PathBuf> = (1..=9)
        .rev()
        .map(|n| sink::rotated(&path, n))
        .filter(|p| p.exists())
        .collect();
    files.push(path);
    files
}

fn lines_in(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        })
        .sum()
}

/// Writes `count` more chained lines through a rotating file and returns the files,
/// oldest first.
async fn chained_files(dir: &Path, count: usize, max_size: u64) -> Vec<PathBuf> {
    let path = dir.join("decisions.log");
    let yaml = format!(
        "{{sink: file, path: {}, chain: true, max_size: {max_size}, max_files: 9}}",
        path.display()
    );
    let before = lines_in(&log_files(dir));
    let log = DecisionLog::start(&config(&yaml), dir).unwrap();
    for n in 0..count {
        log.record(record(&format!("/r/{n}"))).await;
    }
    for _ in 0..500 {
        if lines_in(&log_files(dir)) >= before + count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log_files(dir)
}

#[tokio::test]
async fn a_chain_across_rotations_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let files = chained_files(dir.path(), 12, 1200).await;
    assert!(files.len() > 2, "rotated into {files:?}");
    let verified = chain::verify(&files).unwrap();
    assert_eq!(verified.lines, 12);
    assert!(verified.from_genesis);
    // The first line of a newer file links to the last line of the older one.
    let older = std::fs::read_to_string(&files[0]).unwrap();
    let newer = std::fs::read_to_string(&files[1]).unwrap();
    let first: serde_json::Value = serde_json::from_str(newer.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["prev"],
        chain::line_hash(older.lines().last().unwrap())
    );
}

#[tokio::test]
async fn a_restarted_log_continues_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    chained_files(dir.path(), 3, 1 << 20).await;
    let files = chained_files(dir.path(), 5, 1 << 20).await;
    let verified = chain::verify(&files).unwrap();
    assert_eq!(verified.lines, 8);
    assert!(verified.from_genesis);
}

fn rewrite(path: &Path, change: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    change(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn broken_line(files: &[PathBuf]) -> usize {
    match chain::verify(files) {
        Err(chain::ChainError::Broken { line, .. }) => line,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test]
async fn verify_finds_edited_deleted_and_reordered_lines() {
    let dir = tempfile::tempdir().unwrap();
    let files = chained_files(dir.path(), 6, 1 << 20).await;
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let original = std::fs::read_to_string(file).unwrap();

    rewrite(file, |lines| lines[2] = lines[2].replace("/r/2", "/r/X"));
    assert_eq!(broken_line(&files), 4);

    std::fs::write(file, &original).unwrap();
    rewrite(file, |lines| {
        lines.remove(3);
    });
    assert_eq!(broken_line(&files), 4);

    std::fs::write(file, &original).unwrap();
    rewrite(file, |lines| lines.swap(1, 2));
    assert_eq!(broken_line(&files), 2);

    std::fs::write(file, &original).unwrap();
    assert!(chain::verify(&files).is_ok());
}

#[tokio::test]
async fn on_full_block_waits_and_loses_nothing() {
    let (release, released) = std_mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Blocking {
        release: released,
        lines: lines.clone(),
    };
    let log = DecisionLog::with_sink(&config("{queue: 1, on_full: block}"), Box::new(sink), None)
        .unwrap();
    let writer = log.clone();
    let decisions = tokio::spawn(async move {
        for n in 0..10 {
            writer.record(record(&format!("/r/{n}"))).await;
        }
    });
    for _ in 0..10 {
        release.send(()).unwrap();
    }
    decisions.await.unwrap();
    let written = wait_for_lines(&lines, 10).await;
    assert_eq!(written.len(), 10);
    assert_eq!(log.dropped(), 0);
}

#[test]
fn rotation_keeps_max_files_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut file = sink::RotatingFile::open(&path, 100, 2).unwrap();
    for n in 0..30 {
        file.write_line(&format!("{{\"line\":{n},\"pad\":\"{}\"}}", "x".repeat(30)))
            .unwrap();
    }
    file.flush().unwrap();
    assert!(sink::rotated(&path, 1).exists());
    assert!(sink::rotated(&path, 2).exists());
    assert!(!sink::rotated(&path, 3).exists());
    for file in [
        path.clone(),
        sink::rotated(&path, 1),
        sink::rotated(&path, 2),
    ] {
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 100, "{} has {size} bytes", file.display());
    }
    let newest = std::fs::read_to_string(&path).unwrap();
    assert!(newest.contains("\"line\":29"), "{newest}");
}

#[test]
fn an_undecidable_request_is_logged_with_its_typed_cause() {
    use crate::decision::{Cause, Unavailable};
    let verdict = Verdict::of(&Err(Unavailable::new(
        Cause::Introspection,
        "endpoint answered 502",
    )));
    assert_eq!(verdict.outcome, "unavailable");
    assert_eq!(verdict.status, 503);
    assert_eq!(verdict.reason, "introspection: endpoint answered 502");
}
