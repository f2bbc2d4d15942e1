//! The first hour of a new user: `scripts/demo.sh` runs as the README tells them to,
//! checks every status it shows, refuses ports that are taken, and leaves nothing behind;
//! a denial is explained in the info log without the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Six consecutive free ports, as the demo uses them.
fn free_port_base() -> u16 {
    for attempt in 0..200u16 {
        let base = 20000 + (std::process::id() as u16 % 200) * 40 + attempt * 7;
        let held: Vec<_> = (base..base + 6)
            .map_while(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if held.len() == 6 {
            return base;
        }
    }
    panic!("no six consecutive free ports");
}

fn demo(base: u16) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/demo.sh"))
        .env("SLUIS", env!("CARGO_BIN_EXE_sluis"))
        .env("DEMO_PORT_BASE", base.to_string())
        .output()
        .unwrap()
}

/// Files in the tree that git does not track, ignored ones too, outside `target/`.
fn untracked() -> Vec<String> {
    let out = Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--ignored",
            "--untracked-files=all",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("??") || l.starts_with("!!"))
        .filter(|l| !l.contains(" target/") && !l.contains(" .tools"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_shows_every_answer_it_promises_and_leaves_nothing_behind() {
    if common::gateway::envoy_binary().is_none() {
        return;
    }
    let before = untracked();
    let out = demo(free_port_base());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("ok: every answer was as expected"),
        "{stdout}"
    );
    for (expected, title) in [
        ("(HTTP 200, as expected)", "allowed"),
        ("(HTTP 401, as expected)", "no token"),
        ("(HTTP 403, as expected)", "outside the transfer"),
    ] {
        assert!(stdout.contains(expected), "{title}: {stdout}");
    }

    // The printed commands paste: the token once as `export TOKEN=...`, then `$TOKEN`.
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export TOKEN="))
        .expect("the demo exports the token");
    assert_eq!(stdout.matches(token).count(), 1, "{stdout}");
    assert!(
        stdout.contains(r#"$ curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:"#),
        "{stdout}"
    );

    // Each denial is explained at info, by policy and rule, without the token or path.
    let denials: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("request denied"))
        .collect();
    assert_eq!(denials.len(), 4, "{stdout}");
    let rules = [
        "authentication",
        "resource-in-flow",
        "method-allowed",
        "receiver",
    ];
    for (line, rule) in denials.iter().zip(rules) {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(r#"policy="eoverdracht-receiver""#), "{line}");
        assert!(line.contains(&format!("rule={rule} ")), "{line}");
        assert!(!line.contains("Patient"), "{line}");
    }

    assert_eq!(untracked(), before, "the demo left files in the tree");
}

#[test]
fn the_demo_refuses_ports_that_are_taken() {
    let base = free_port_base();
    let _taken = TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let out = demo(base);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("error: port {} is in use", base + 2)),
        "{stderr}"
    );
}

/// The policy-set version `sluis validate` prints, run in `dir` with `--config config`.
fn policy_set_version(dir: &Path, config: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["validate", "--config", config])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{config}: {stdout}");
    stdout
        .split("policy set ")
        .nth(1)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no version in {stdout}"))
}

#[test]
fn the_policy_set_version_does_not_depend_on_how_the_config_path_is_typed() {
    let absolute = repo().join("examples/config.yaml");
    let versions = [
        policy_set_version(repo(), "examples/config.yaml"),
        policy_set_version(repo(), "./examples/config.yaml"),
        policy_set_version(Path::new("/"), absolute.to_str().unwrap()),
        policy_set_version(&repo().join("examples"), "config.yaml"),
    ];
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    assert_eq!(versions[0].len(), 12, "{versions:?}");
}
