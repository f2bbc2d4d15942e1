//! Compiles the flows admin API (`proto/sluis/flows/v1/flows.proto`) with protox, a
//! protobuf compiler written in Rust, so building Sluis needs no `protoc` binary. The
//! well-known types it imports (`Timestamp`, `Struct`) come with protox and map to
//! `prost-types`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    git_commit();
    println!("cargo:rerun-if-changed=proto/sluis");
    let descriptors = protox::compile(["sluis/flows/v1/flows.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Decoded by hand, to stop decoding flows past the import limit: see the type.
        .extern_path(
            ".sluis.flows.v1.ImportFlowsRequest",
            "crate::admin::grpc::ImportFlowsRequest",
        )
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// `SLUIS_GIT_COMMIT` for `sluis version`: the build's own variable when set (a container
/// or CI build without `.git`), else `git rev-parse HEAD`, else `unknown` (a source
/// tarball). Never fails the build. No `-dirty` mark: it would need this script to rerun
/// on every source edit (and recompile the protos), or go stale.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=SLUIS_GIT_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = match std::env::var("SLUIS_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        // Only this repository's own commit: not that of a repository the sources happen
        // to sit in (a vendored copy).
        _ => match git(&["rev-parse", "--show-prefix"])
            .filter(|prefix| prefix.is_empty())
            .and_then(|_| git(&["rev-parse", "--short=12", "HEAD"]))
        {
            Some(commit) => {
                // Rebuild when HEAD moves: HEAD itself, the ref it names, packed refs (in a
                // worktree, `--git-path` finds them). Only files that exist: cargo reruns a
                // script on every build for a missing one.
                let mut files = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
                files.extend(git(&["symbolic-ref", "-q", "HEAD"]));
                for file in files {
                    if let Some(path) = git(&["rev-parse", "--git-path", &file])
                        .filter(|path| std::path::Path::new(path).exists())
                    {
                        println!("cargo:rerun-if-changed={path}");
                    }
                }
                commit
            }
            None => "unknown".to_owned(),
        },
    };
    println!("cargo:rustc-env=SLUIS_GIT_COMMIT={commit}");
}
