#!/usr/bin/env bash
# Install Helm, as a library, into the repo's git-ignored .tools/ folder: the PyPI package
# helm-sdkpy ships Helm 4 built as a shared library with Python bindings, which the chart
# test (tests/it/helm_chart.rs, through scripts/helm-chart.py) uses to lint and render
# helm/sluis. PyYAML comes along for the lint of the chart with other values.
#
# helm-sdkpy declares Python >= 3.12 but works on 3.11, hence --ignore-requires-python.
# Installed with `pip install --target`, so nothing touches the system Python.
#
# Idempotent: if .tools/helm-sdkpy already holds the wanted version, it only says so.
# Override the version with HELM_SDKPY_VERSION=0.1.x.
set -euo pipefail

HELM_SDKPY_VERSION="${HELM_SDKPY_VERSION:-0.1.32}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
PKG_DIR="$TOOLS/helm-sdkpy"
PYTHON="${PYTHON:-python3}"

installed_version() {
  ls -d "$PKG_DIR"/helm_sdkpy-*.dist-info 2>/dev/null | sed -n 's|.*/helm_sdkpy-\(.*\)\.dist-info|\1|p' | head -n1
}

if [[ -f "$PKG_DIR/helm_sdkpy/__init__.py" && -d "$PKG_DIR/yaml" && "$(installed_version)" == "$HELM_SDKPY_VERSION" ]]; then
  echo "helm-sdkpy $HELM_SDKPY_VERSION already installed in $PKG_DIR"
  exit 0
fi

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "error: '$PYTHON -m pip' does not work; install python3-pip" >&2
  exit 1
fi
mkdir -p "$TOOLS"
# Fresh target dir: `pip install --target` over an old one leaves stale files.
rm -rf "$PKG_DIR.tmp"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet \
  --ignore-requires-python --target "$PKG_DIR.tmp" "helm-sdkpy==$HELM_SDKPY_VERSION" pyyaml

# Check that the library loads before swapping it in.
PYTHONPATH="$PKG_DIR.tmp" "$PYTHON" -c 'import helm_sdkpy, yaml; print("helm", helm_sdkpy.get_version())'

rm -rf "$PKG_DIR"
mv "$PKG_DIR.tmp" "$PKG_DIR"
echo "installed helm-sdkpy $HELM_SDKPY_VERSION in $PKG_DIR"
