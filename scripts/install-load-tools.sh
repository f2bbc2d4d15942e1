#!/usr/bin/env bash
# Install the HTTP load generators used by scripts/load.sh, from Debian's
# packages, only when they are missing:
#   wrk            - HTTP/1.1 load against Envoy's listener
#   nghttp2-client - provides h2load, HTTP/2 (gRPC) load straight at ext_authz
#   curl           - smoke requests before each run (optional for load.sh)
# Runs apt-get as root (or through sudo when not root).

# -e: stop on the first failing step; -u: unset variables are bugs;
# -o pipefail: failures inside pipes are not hidden.
set -euo pipefail

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || need+=(curl)

if ((${#need[@]} == 0)); then
  echo "wrk, h2load and curl already installed"
else
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  # update first: on a fresh image the package lists may be empty or stale.
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# wrk has no --version flag (it prints its version in the usage banner).
wrk -v 2>&1 | head -n1 || true
h2load --version 2>&1 | head -n1
