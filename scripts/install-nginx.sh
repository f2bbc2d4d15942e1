#!/usr/bin/env bash
# Install NGINX from Debian (package `nginx-light`, else `nginx`) when it is missing, for
# the end-to-end test of the forward-auth door (tests/gateways_http.rs). The test runs its
# own NGINX on loopback with a temporary config; the system service is not used.
# Needs root (CI runs as root); does nothing when `nginx` is already on the PATH.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1 \
    || apt-get install -y --no-install-recommends nginx >/dev/null
fi
# The package starts the system service; the tests do not want it.
if command -v service >/dev/null 2>&1; then
  service nginx stop >/dev/null 2>&1 || true
fi
echo "nginx installed: $(/usr/sbin/nginx -v 2>&1)"
