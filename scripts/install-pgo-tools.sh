#!/usr/bin/env bash
# Install the LLVM tools scripts/pgo-build.sh uses, only when missing:
#   llvm-profdata  must read the profiles of rustc's own LLVM, so its major version must be
#                  rustc's (`rustc -vV`, "LLVM version"): rustup's llvm-tools component
#                  when installed, otherwise Debian's llvm-N (Debian 12 carries recent
#                  LLVMs in bookworm-security, for its browsers)
#   llvm-bolt      for BOLT=1: Debian's bolt-N of the same version (optional: without it
#                  only BOLT=1 fails)
# Runs apt-get as root (or through sudo when not root).
set -euo pipefail

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
tools="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
need=()
if [[ ! -x "$tools/llvm-profdata" ]] && ! command -v "llvm-profdata-$major" >/dev/null 2>&1; then
  need+=("llvm-$major")
fi
command -v "llvm-bolt-$major" >/dev/null 2>&1 || need+=("bolt-$major")
if ((${#need[@]} == 0)); then
  echo "llvm-profdata and llvm-bolt for LLVM $major already installed"
  exit 0
fi
SUDO=()
[[ "$(id -u)" -eq 0 ]] || SUDO=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
for package in "${need[@]}"; do
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$package"; then
    case $package in
      llvm-*) echo "no Debian package $package: try \`rustup component add llvm-tools\`" >&2; exit 1 ;;
      bolt-*) echo "no Debian package $package: scripts/pgo-build.sh works, BOLT=1 does not" >&2 ;;
    esac
  fi
done
