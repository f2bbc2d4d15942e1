# shellcheck shell=bash
# Sourced by scripts/pgo-build.sh (which makes a profile) and scripts/release-build.sh
# (which builds the shipped binary with the committed one): the profile-guided build
# itself, and what a profile records about the build it belongs to.
#
# A profile names each function by its symbol. Rust's symbols carry a hash of the crate's
# metadata, which cargo computes from the compiler's version and each package's name and
# version. So a profile serves only the rustc that made it, and after a version bump it no
# longer reaches the workspace's own crates (their dependencies keep it). Within one rustc
# and version, a function whose code changed loses its profile, the others keep theirs;
# but a crate whose dependencies or features change gets another metadata hash, and every
# function in it loses its profile (session 23: one dependency added to sluis-core cost
# 11.6k instructions per Check, 19 % more, until the profile was made again).

PGO_TARGET=$(rustc -vV | sed -n 's/^host: //p')
# Where the committed profile lives (gzip-compressed), and its record (key=value lines).
# shellcheck disable=SC2034 # used by the scripts that source this file
PGO_PROFILE=pgo/sluis.profdata.gz
PGO_META=pgo/sluis.profdata.meta

# pgo_build NAME TARGET_DIR RUSTFLAGS: a release build of the binary NAME (each binary's
# package has its name). --target keeps RUSTFLAGS off build scripts and proc macros: only
# the binary is instrumented, or optimised with the profile.
pgo_build() {
  RUSTFLAGS="$3" cargo build --release --locked --target "$PGO_TARGET" --target-dir "$2" -p "$1" --bin "$1"
}

# pgo_named_by_content FILE NAME: renames the profile FILE, in its own directory, to
# NAME-<the first 12 hex digits of its SHA-256>.profdata (removing older ones of NAME) and
# prints the new path. Cargo rebuilds a crate when its flags change, not when a file they
# name does: under a fixed name, dependencies built with an older profile would be kept.
pgo_named_by_content() {
  local dir named
  dir=$(dirname "$1")
  named="$dir/$2-$(sha256sum "$1" | cut -c1-12).profdata"
  rm -f "$dir/$2"-*.profdata
  mv "$1" "$named"
  echo "$named"
}

# pgo_use_flags PROFILE: the flags of a build optimised with PROFILE. Functions that
# changed since the profile was made are left unprofiled, without a warning for each.
#
# -icp-total-percent-threshold=90: LLVM turns an indirect call into a direct one (and may
# then inline it) only where one target takes 90 % of the calls, not LLVM's default 5 %.
# Without it, four of five profiles made from the same training load had LLVM promote
# tokio's task poll in the worker's loop and inline the door's whole future into it:
# larger futures moved on every Check, +0.5 to +1.3 µs of CPU per Check against the
# committed profile's build, code unchanged (BENCHMARKS.md, sessions 21 to 23). With it,
# the three such profiles tried kept the loop apart, and the committed profile's own build
# is equal with and without it (session 23: ±0.1 µs per Check, two sittings).
pgo_use_flags() {
  echo "-Cprofile-use=$1 -Cllvm-args=-no-pgo-warn-mismatch -Cllvm-args=-icp-total-percent-threshold=90"
}

# pgo_source_digest: a digest of what the binary is compiled from: the manifests, the lock
# file, the Rust sources and the protocol definitions, tests and benchmarks left out. It
# tells whether the source changed since a profile was made; it needs no git (the
# container build has none).
pgo_source_digest() {
  find Cargo.toml Cargo.lock build.rs src crates proto -type f \
    \( -name '*.rs' -o -name '*.proto' -o -name Cargo.toml -o -name Cargo.lock \) \
    -not -path '*/tests/*' -not -path '*/benches/*' -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

# pgo_version: the workspace's version, which is every crate's.
pgo_version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml
}

# pgo_meta KEY: a value of the committed profile's record.
pgo_meta() {
  sed -n "s/^$1=//p" "$PGO_META"
}

# pgo_unpack DEST: the committed profile, uncompressed, as rustc reads it.
pgo_unpack() {
  gzip -dc "$PGO_PROFILE" >"$1"
}
