#!/usr/bin/env bash
# The `sluis` binary as the container image ships it: a release build optimised with the
# committed profile pgo/sluis.profdata.gz (profile-guided optimisation). The profile comes
# from scripts/pgo-build.sh's training load (SAVE=1 puts it in pgo/); with it a Check
# costs about a quarter fewer instructions (BENCHMARKS.md, session 20). The build takes
# as long as a plain `cargo build --release` and needs no LLVM tools.
#
#   scripts/release-build.sh [DEST]   # -> DEST [target/release-pgo/sluis]
#   scripts/release-build.sh --check  # only check the profile (CI runs this)
#
# A profile serves only the rustc that made it (pgo/sluis.profdata.meta names it): built
# by another, every function's name differs. Then this builds without the profile and
# says so, as it does under SLUIS_PGO=0; SLUIS_PGO=1 makes that an error. When the source
# or the version changed since the profile was made, it builds with it and warns:
# functions that changed run unprofiled, the others keep their profile. A release makes
# the profile again (docs/deployment.md, "The shipped profile").
#
# --check fails when the profile is missing or damaged, or when the Dockerfile's default
# toolchain (RUST_IMAGE) is not the rustc that made it; it only warns about changed source.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pgo-common.sh

warn() { printf 'release-build: %s\n' "$*" >&2; }

# Whether this rustc can use the committed profile: 0 yes, 1 no (and why, on stderr).
# Warns when it was made from other source or another version.
profile_usable() {
  if [[ ! -f $PGO_PROFILE || ! -f $PGO_META ]]; then
    warn "no committed profile ($PGO_PROFILE and its record $PGO_META)"
    return 1
  fi
  if [[ "$(sha256sum "$PGO_PROFILE" | cut -d' ' -f1)" != "$(pgo_meta sha256)" ]]; then
    warn "$PGO_PROFILE is not the file its record names (sha256): damaged or replaced by hand"
    return 1
  fi
  if [[ "$(rustc -V)" != "$(pgo_meta rustc)" ]]; then
    warn "the profile was made by $(pgo_meta rustc), this is $(rustc -V): it names other symbols"
    return 1
  fi
  if [[ "$(pgo_version)" != "$(pgo_meta version)" ]]; then
    warn "the profile was made for version $(pgo_meta version), this is $(pgo_version):" \
      "the workspace's own crates build unprofiled; make it again (scripts/pgo-build.sh, SAVE=1)"
  elif [[ "$(pgo_source_digest)" != "$(pgo_meta source)" ]]; then
    warn "the source changed since the profile was made (at commit $(pgo_meta commit)):" \
      "functions that changed build unprofiled, and every function of a crate whose dependencies" \
      "changed; a release makes it again (scripts/pgo-build.sh, SAVE=1)"
  fi
}

# Whether this rustc's LLVM reads the profile: rustc only warns about a profile it cannot
# read, and builds as if there were none.
profile_readable() {
  local tmp ok=0
  tmp=$(mktemp -d)
  if ! pgo_unpack "$tmp/sluis.profdata" 2>"$tmp/err" ||
    ! echo 'fn main() {}' | rustc -O --crate-name pgo_check -Cprofile-use="$tmp/sluis.profdata" \
      -o "$tmp/pgo_check" - 2>"$tmp/err" || [[ -s "$tmp/err" ]]; then
    cat "$tmp/err" >&2
    warn "rustc cannot read $PGO_PROFILE"
    ok=1
  fi
  rm -rf "$tmp"
  return "$ok"
}

check() {
  local ok=0 image
  profile_usable || ok=1
  [[ -f $PGO_META ]] || return 1
  # (The image's build context leaves the Dockerfile out: there, only the profile.)
  image=$(sed -n 's/^ARG RUST_IMAGE=//p' Dockerfile 2>/dev/null || true)
  if [[ -f Dockerfile && "$image" != "rust:$(pgo_meta rustc | cut -d' ' -f2)-"* ]]; then
    warn "the Dockerfile builds with $image, the profile was made by $(pgo_meta rustc):" \
      "the image would be built without it"
    ok=1
  fi
  # Only a profile of this rustc: one of another rustc's LLVM may be unreadable to it.
  if ((ok == 0)) && ! profile_readable; then ok=1; fi
  ((ok == 0)) && echo "release-build: $PGO_PROFILE serves $(pgo_meta rustc)${image:+ and $image} (made at commit $(pgo_meta commit))"
  return "$ok"
}

build() { # dest
  local dest=$1 mode=${SLUIS_PGO:-auto} flags="" profile
  case $mode in
    0) warn "SLUIS_PGO=0: a plain release build" ;;
    1 | auto)
      if profile_usable && profile_readable; then
        mkdir -p target/pgo-profile
        pgo_unpack target/pgo-profile/sluis.profdata
        profile="$PWD/$(pgo_named_by_content target/pgo-profile/sluis.profdata sluis)"
        flags=$(pgo_use_flags "$profile")
      elif [[ $mode == 1 ]]; then
        warn "SLUIS_PGO=1 and the profile cannot be used"
        exit 1
      else
        warn "building without the profile: a plain release build"
      fi
      ;;
    *) warn "SLUIS_PGO is auto, 1 or 0, not '$mode'"; exit 2 ;;
  esac
  pgo_build sluis target "$flags"
  mkdir -p "$(dirname "$dest")"
  cp "target/$PGO_TARGET/release/sluis" "$dest"
  if [[ -n $flags ]]; then
    echo "release-build: $dest (profile-guided)"
  else
    echo "release-build: $dest (plain)"
  fi
}

case ${1:-} in
  --check) check ;;
  -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) build "${1:-target/release-pgo/sluis}" ;;
esac
