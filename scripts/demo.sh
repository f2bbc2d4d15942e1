#!/usr/bin/env bash
# Sluis behind a real Envoy, on this machine only: starts Sluis with the example config,
# a demo upstream that echoes what it receives, and Envoy (envoy/envoy.yaml), then sends
# registers an eOverdracht transfer (a flow), sends one allowed and a few denied requests,
# revokes the transfer and shows what happened. Stops everything on exit.
#
#   scripts/demo.sh            # needs cargo and python3; installs Envoy into .tools/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-envoy.sh >/dev/null
cargo build --quiet --bin sluis
SLUIS=target/debug/sluis

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_for() { # url
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "error: $1 did not come up" >&2
  exit 1
}

"$SLUIS" serve --config examples/config.yaml >tmp-demo-sluis.log 2>&1 & pids+=($!)
python3 scripts/demo-upstream.py 8081 & pids+=($!)
.tools/bin/envoy -c envoy/envoy.yaml --disable-hot-restart --log-level warning >tmp-demo-envoy.log 2>&1 & pids+=($!)
wait_for http://127.0.0.1:9190/readyz
wait_for http://127.0.0.1:8081/
wait_for http://127.0.0.1:9901/ready

token=$("$SLUIS" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
  "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
  "sub": "did:web:receiver.example.org", "client_id": "did:web:receiver.example.org",
  "scope": "eOverdracht-receiver"}')

show() { # title, curl args...
  local title=$1; shift
  local shown="$*"
  printf '\n### %s\n$ curl %s\n' "$title" "${shown//$token/\$TOKEN}"
  curl -s -i "$@" | sed 's/^/  /'
  echo
}

# The sender registers the transfer (a flow) over the admin API: which resources the
# receiver may read. A new id each run, so a transfer revoked by an earlier run stays so.
flow="transfer-demo-$(date +%s)"
printf '\n### the sender registers flow %s\n' "$flow"
curl -s -X POST http://127.0.0.1:9190/v1/flows -H 'content-type: application/json' -d '{
  "id": "'"$flow"'", "purpose": "eOverdracht", "custodian": "did:web:sender.example.org",
  "actor": "did:web:receiver.example.org", "scopes": ["eOverdracht-receiver"],
  "resources": [{"path": "Patient/123", "operations": ["read"]},
                {"path": "Task/'"$flow"'", "operations": ["read", "update"]}]}' | sed 's/^/  /'
echo

show "allowed: the receiver reads a Patient of the transfer (note the injected x-sluis-* headers, no Authorization upstream, the spoofed header replaced)" \
  -H "Authorization: Bearer $token" -H "x-sluis-client-id: spoofed" http://127.0.0.1:8080/eoverdracht/fhir/Patient/123
show "denied: no token" http://127.0.0.1:8080/eoverdracht/fhir/Patient/123
show "denied: a resource outside the transfer (the answer is the same for every policy denial)" -H "Authorization: Bearer $token" http://127.0.0.1:8080/eoverdracht/fhir/Patient/456
show "denied: the transfer does not allow deleting" -X DELETE -H "Authorization: Bearer $token" http://127.0.0.1:8080/eoverdracht/fhir/Patient/123
printf '\n### the sender revokes the transfer\n'
curl -s -X POST "http://127.0.0.1:9190/v1/flows/$flow/revoke" | sed 's/^/  /'
echo
show "denied: the transfer is revoked" -H "Authorization: Bearer $token" http://127.0.0.1:8080/eoverdracht/fhir/Patient/123
rm -f tmp-demo-sluis.log tmp-demo-envoy.log
