//! `scripts/test.sh`, the one command that runs the whole suite: with
//! `SLUIS_SKIP_SYSTEM_TOOLS=1` it installs nothing and requires no gateway, Helm or Docker,
//! whose tests then skip with a message. Checked in its dry mode (`SLUIS_TEST_DRY_RUN=1`),
//! which prints what it would install and run and runs nothing.

use std::path::Path;
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The script's dry run, with `extra` in its environment and none of the `SLUIS_REQUIRE_*`
/// switches this test process may have been started with.
fn dry_run(extra: &[(&str, &str)]) -> String {
    let mut command = Command::new("bash");
    command
        .arg(repo().join("scripts/test.sh"))
        .env("SLUIS_TEST_DRY_RUN", "1")
        .env_remove("SLUIS_SKIP_SYSTEM_TOOLS");
    for (name, _) in std::env::vars() {
        if name.starts_with("SLUIS_REQUIRE_") {
            command.env_remove(name);
        }
    }
    command.envs(extra.iter().copied());
    let output = command.output().unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    text
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn skip_system_tools_installs_nothing_and_requires_no_tool() {
    let text = dry_run(&[("SLUIS_SKIP_SYSTEM_TOOLS", "1")]);
    assert!(
        text.contains("SLUIS_SKIP_SYSTEM_TOOLS=1: installing nothing"),
        "{text}"
    );
    assert!(!text.contains("would run: scripts/install-"), "{text}");
    assert!(!text.contains("SLUIS_REQUIRE_"), "{text}");
    assert!(
        text.contains("would run: cargo test --workspace --locked"),
        "{text}"
    );
    // The container step still runs; it skips by itself where Docker is missing (below).
    assert!(
        text.contains("would run: scripts/container-test.sh"),
        "{text}"
    );
}

#[test]
fn without_the_switch_every_tool_is_installed_and_required() {
    let text = dry_run(&[]);
    for script in ["install-envoy.sh", "install-nginx.sh", "install-helm.sh"] {
        assert!(
            text.contains(&format!("would run: scripts/{script}")),
            "{script}: {text}"
        );
    }
    for tool in ["ENVOY", "NGINX", "CADDY", "HELM"] {
        assert!(
            text.contains(&format!("would set: SLUIS_REQUIRE_{tool}=1")),
            "{tool}: {text}"
        );
    }
    // A part of the suite leaves the container image out.
    let mut command = Command::new("bash");
    command
        .arg(repo().join("scripts/test.sh"))
        .arg("-p")
        .arg("sluis-core")
        .env("SLUIS_TEST_DRY_RUN", "1")
        .env("SLUIS_SKIP_SYSTEM_TOOLS", "1");
    let text = output_text(&command.output().unwrap());
    assert!(text.contains("--no-fail-fast -p sluis-core"), "{text}");
    assert!(!text.contains("container-test.sh"), "{text}");
}

#[test]
fn the_container_test_skips_with_a_message_without_docker() {
    // A PATH with only what the script needs before it looks for Docker.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["dirname", "date"] {
        let target = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|path| path.exists())
            .unwrap();
        std::os::unix::fs::symlink(target, bin.path().join(tool)).unwrap();
    }
    let output = Command::new("/bin/bash")
        .arg(repo().join("scripts/container-test.sh"))
        .env("PATH", bin.path())
        .env("SLUIS_SKIP_SYSTEM_TOOLS", "1")
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(
            "container-test: SKIPPED (SLUIS_SKIP_SYSTEM_TOOLS=1 and no Docker daemon answers)"
        ),
        "{text}"
    );
}

#[test]
fn a_missing_gateway_is_a_skip_unless_required() {
    // What the NGINX and Caddy tests call: no such tool and no SLUIS_REQUIRE_ switch for
    // it is `None` (the test returns, printing SKIPPED), not a failure.
    assert_eq!(
        sluis_test_kit::gateway::system_binary("sluis-no-such-gateway"),
        None
    );
}
