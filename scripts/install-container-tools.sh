#!/usr/bin/env bash
# Install what scripts/container-test.sh needs from Debian when it is missing: Docker
# (`docker.io`) and `mmdebstrap` (which makes the image's Debian base locally, as no
# registry image is needed), and start the Docker daemon when none answers.
# Needs root and apt (CI runs as root); does nothing for what is already there.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
missing=()
# The daemon, not only a client: a machine may carry a docker CLI alone (seen: a static
# client in /usr/local/bin and no dockerd).
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if (( ${#missing[@]} )); then
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (its log: /tmp/dockerd.log)" >&2
  nohup dockerd >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
  done
  echo "error: dockerd did not answer within 30 s; the end of /tmp/dockerd.log:" >&2
  tail -n 20 /tmp/dockerd.log >&2 || true
  exit 1
fi
