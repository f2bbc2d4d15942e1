//! The command line as a person meets it: `--help` with examples, a pipe closed early, a
//! missing config file.

use std::io::Read as _;
use std::process::{Command, Stdio};

fn sluis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_command_helps_with_an_example() {
    let top = String::from_utf8(sluis(&["--help"]).stdout).unwrap();
    assert!(top.contains("Examples:"), "{top}");
    for command in [
        "serve",
        "validate",
        "test",
        "explain",
        "replay",
        "schema",
        "dev-token",
    ] {
        let out = sluis(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(
            help.contains("Example") && help.contains(&format!("sluis {command}")),
            "`sluis {command} --help` shows no example:\n{help}"
        );
        if command != "schema" && command != "dev-token" {
            assert!(
                help.contains("-c, --config <FILE>") && help.contains("The config file"),
                "`sluis {command} --help` does not explain --config:\n{help}"
            );
        }
    }
    let audit = String::from_utf8(sluis(&["audit", "verify", "--help"]).stdout).unwrap();
    assert!(audit.contains("sluis audit verify"), "{audit}");
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // `sluis schema | head -1`: the reader closes the pipe after its first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
}

#[test]
fn a_missing_config_is_named_with_its_cause_once() {
    let out = sluis(&["serve", "--config", "nope.yaml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot read config `nope.yaml`"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause is printed more than once:\n{stderr}"
    );
    let out = sluis(&["validate", "--config", "nope.yaml"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}
