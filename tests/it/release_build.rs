//! The shipped binary is built profile-guided from the committed profile
//! (`scripts/release-build.sh`, which the Dockerfile runs): the image's build context holds
//! everything the script reads, and the script refuses a profile it cannot use, saying
//! why, instead of shipping a binary built with a damaged or foreign one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn the_image_builds_with_the_release_script_and_its_context_holds_what_it_reads() {
    let dockerfile = read("Dockerfile");
    let ignore = read(".dockerignore");
    assert!(
        dockerfile.contains(r#"SLUIS_PGO="${SLUIS_PGO}" scripts/release-build.sh /out/sluis"#),
        "the build stage builds with the release script"
    );
    assert!(dockerfile.contains("ARG SLUIS_PGO=auto"));
    for path in [
        "scripts/release-build.sh",
        "scripts/pgo-common.sh",
        "pgo/sluis.profdata.gz",
        "pgo/sluis.profdata.meta",
    ] {
        assert!(
            ignore.lines().any(|l| l == format!("!{path}")),
            ".dockerignore lets {path} through"
        );
        assert!(repo().join(path).is_file(), "{path} is committed");
    }
    // An exact rustc: `rust:1.95-bookworm` would follow point releases, whose symbols the
    // profile does not name.
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_IMAGE=rust:"))
        .unwrap();
    let version = image.split('-').next().unwrap();
    assert_eq!(version.split('.').count(), 3, "{image}");
    assert!(
        read("pgo/sluis.profdata.meta").contains(&format!("rustc=rustc {version} ")),
        "the profile was made by the Dockerfile's rustc"
    );
}

/// A copy of the script and what it reads, with a profile and record of the test's own.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new(profile: &[u8], meta: impl Fn(&str) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "scripts/release-build.sh",
            "scripts/pgo-common.sh",
            "Dockerfile",
            "Cargo.toml",
        ] {
            let to = dir.path().join(path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(path), to).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("pgo")).unwrap();
        let profile_path = dir.path().join("pgo/sluis.profdata.gz");
        std::fs::write(&profile_path, gzip(profile)).unwrap();
        let sha256 = String::from_utf8(
            Command::new("sha256sum")
                .arg(&profile_path)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let sha256 = sha256.split(' ').next().unwrap();
        std::fs::write(dir.path().join("pgo/sluis.profdata.meta"), meta(sha256)).unwrap();
        Checkout { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        Command::new("bash")
            .arg(self.dir.path().join("scripts/release-build.sh"))
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout
}

fn this_rustc() -> String {
    let out = Command::new("rustc").arg("-V").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn record(rustc: &str, sha256: &str) -> String {
    format!("rustc={rustc}\nversion=0.1.0\ncommit=abc\nsource=0\nsha256={sha256}\n")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_profile_fails_the_check_and_the_required_build() {
    let checkout = Checkout::new(b"not a profile", |_| record(&this_rustc(), &"0".repeat(64)));
    let check = checkout.run(&["--check"], &[]);
    assert!(!check.status.success());
    assert!(stderr(&check).contains("damaged"), "{}", stderr(&check));
    // SLUIS_PGO=1 stops before building anything.
    let build = checkout.run(&[], &[("SLUIS_PGO", "1")]);
    assert_eq!(build.status.code(), Some(1), "{}", stderr(&build));
    assert!(stderr(&build).contains("SLUIS_PGO=1 and the profile cannot be used"));
    assert!(!checkout.path().join("target").exists());
}

#[test]
fn a_profile_of_another_rustc_is_not_used() {
    let checkout = Checkout::new(b"profile", |sha| {
        record("rustc 0.0.1 (000 2015-05-15)", sha)
    });
    let check = checkout.run(&["--check"], &[]);
    assert!(!check.status.success());
    let said = stderr(&check);
    assert!(said.contains("made by rustc 0.0.1"), "{said}");
    // The Dockerfile's default toolchain is not the profile's either.
    assert!(
        said.contains("the image would be built without it"),
        "{said}"
    );
    let build = checkout.run(&[], &[("SLUIS_PGO", "1")]);
    assert_eq!(build.status.code(), Some(1), "{}", stderr(&build));
}

#[test]
fn a_profile_this_rustc_cannot_read_fails_the_check_and_the_required_build() {
    let rustc = this_rustc();
    let checkout = Checkout::new(b"not an LLVM profile", |sha| record(&rustc, sha));
    // The check compares the Dockerfile's default with the record: let them agree.
    let version = rustc.split(' ').nth(1).unwrap();
    let dockerfile = checkout.path().join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("ARG RUST_IMAGE="))
        .unwrap();
    std::fs::write(
        &dockerfile,
        text.replace(line, &format!("ARG RUST_IMAGE=rust:{version}-bookworm")),
    )
    .unwrap();
    let check = checkout.run(&["--check"], &[]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("rustc cannot read pgo/sluis.profdata.gz"),
        "{}",
        stderr(&check)
    );
    // rustc itself only warns and builds as if there were no profile: the script does not
    // let that pass for a profile-guided build.
    let build = checkout.run(&[], &[("SLUIS_PGO", "1")]);
    assert_eq!(build.status.code(), Some(1), "{}", stderr(&build));
    assert!(!checkout.path().join("target").exists());
}

#[test]
fn an_unknown_mode_is_refused() {
    let checkout = Checkout::new(b"profile", |sha| record(&this_rustc(), sha));
    let build = checkout.run(&[], &[("SLUIS_PGO", "yes")]);
    assert_eq!(build.status.code(), Some(2));
    assert!(stderr(&build).contains("SLUIS_PGO is auto, 1 or 0, not 'yes'"));
}
