#!/usr/bin/env bash
# Sluis behind a real Envoy, on this machine only: starts its own Sluis (the example
# policies, a fresh flow store), a demo upstream that echoes what it receives, and Envoy
# (envoy/envoy.yaml), registers an eOverdracht transfer (a flow), sends one allowed and a
# few denied requests, revokes the transfer, and checks every answer: a status other than
# the one shown as expected stops the demo with exit 1. Stops everything on exit and
# leaves no file behind (all of it lives in a temporary directory).
#
#   scripts/demo.sh            # needs cargo, python3 and curl; installs Envoy into .tools/
#
# It uses its own ports, six from DEMO_PORT_BASE (default 19190): Sluis admin, gRPC and
# HTTP, the upstream, Envoy and Envoy's admin; when one is taken it says which and exits 2,
# so it never talks to another Sluis (such as the README's quickstart on 9190-9192).
# SLUIS=path/to/sluis uses that binary instead of building one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

base="${DEMO_PORT_BASE:-19190}"
admin=$base grpc=$((base + 1)) http=$((base + 2)) upstream=$((base + 3))
edge=$((base + 4)) envoy_admin=$((base + 5))
for port in "$admin" "$grpc" "$http" "$upstream" "$edge" "$envoy_admin"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: port $port is in use (the demo needs $base-$envoy_admin; DEMO_PORT_BASE=N picks others)" >&2
    exit 2
  fi
done

scripts/install-envoy.sh >/dev/null
if [[ -z "${SLUIS:-}" ]]; then
  cargo build --quiet --bin sluis
  # Wherever cargo puts it: target/, $CARGO_TARGET_DIR or a configured build.target-dir.
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  SLUIS="$target/debug/sluis"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluis-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# The example config with the demo's ports, a flow store in $tmp, and absolute paths
# (the copy does not live beside the keys and policies).
sed -e "s|127.0.0.1:9190|127.0.0.1:$admin|; s|127.0.0.1:9191|127.0.0.1:$grpc|; s|127.0.0.1:9192|127.0.0.1:$http|" \
  -e "s|{ file: keys/|{ file: $repo/examples/keys/|" \
  -e "s|^  - \.\./policy\$|  - $repo/policy|" \
  -e "s|^  - \.\./policy/sources\$|  - $repo/policy/sources|" \
  -e "s| keys/dev-mitz-client| $repo/examples/keys/dev-mitz-client|g" \
  -e "s|^  url: sqlite:sluis-flows.db\$|  url: sqlite:$tmp/flows.db|" \
  examples/config.yaml >"$tmp/config.yaml"
sed -e "s|port_value: 9901|port_value: $envoy_admin|; s|port_value: 8080|port_value: $edge|" \
  -e "s|port_value: 9191|port_value: $grpc|; s|port_value: 8081|port_value: $upstream|" \
  envoy/envoy.yaml >"$tmp/envoy.yaml"
grep -q "sqlite:$tmp/flows.db" "$tmp/config.yaml" || { echo "error: could not rewrite examples/config.yaml" >&2; exit 1; }

fail() { # message
  echo "error: $1" >&2
  echo "--- last lines of the Sluis log ($tmp is removed on exit) ---" >&2
  tail -n 20 "$tmp/sluis.log" >&2 || true
  exit 1
}

wait_for() { # url
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  fail "$1 did not come up"
}

"$SLUIS" serve --config "$tmp/config.yaml" >"$tmp/sluis.log" 2>&1 & pids+=($!)
python3 scripts/demo-upstream.py "$upstream" >"$tmp/upstream.log" 2>&1 & pids+=($!)
.tools/bin/envoy -c "$tmp/envoy.yaml" --disable-hot-restart --log-level warning >"$tmp/envoy.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$admin/readyz"
wait_for "http://127.0.0.1:$upstream/"
wait_for "http://127.0.0.1:$envoy_admin/ready"

token=$("$SLUIS" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
  "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
  "sub": "did:web:receiver.example.org", "client_id": "did:web:receiver.example.org",
  "scope": "eOverdracht-receiver"}')
printf '### a development token for the receiver (the key in examples/keys/ is public)\n'
printf 'export TOKEN=%s\n' "$token"

# Prints a curl line that pastes (the token as $TOKEN), runs it, and checks the status.
show() { # expected-status title curl-args...
  local expected=$1 title=$2; shift 2
  local shown="curl -i" arg
  for arg in "$@"; do
    if [[ "$arg" == *"$token"* ]]; then
      shown+=" \"${arg//$token/\$TOKEN}\""
    else
      shown+=" $(printf '%q' "$arg")"
    fi
  done
  printf '\n### %s\n$ %s\n' "$title" "$shown"
  local status
  status=$(curl -s -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$@") || fail "curl failed: $shown"
  sed 's/^/  /' "$tmp/headers" "$tmp/body"
  echo
  [[ "$status" == "$expected" ]] || fail "expected HTTP $expected, got $status: $shown"
  echo "  (HTTP $status, as expected)"
}

# The sender registers the transfer (a flow) over the admin API: which resources the
# receiver may read.
flow=transfer-demo
show 201 "the sender registers flow $flow" -X POST "http://127.0.0.1:$admin/v1/flows" \
  -H 'content-type: application/json' -d '{"id": "'"$flow"'", "purpose": "eOverdracht",
  "custodian": "did:web:sender.example.org", "actor": "did:web:receiver.example.org",
  "scopes": ["eOverdracht-receiver"],
  "resources": [{"path": "Patient/123", "operations": ["read"]},
                {"path": "Task/'"$flow"'", "operations": ["read", "update"]}]}'

url="http://127.0.0.1:$edge/eoverdracht/fhir"
show 200 "allowed: the receiver reads a Patient of the transfer (note the injected x-sluis-* headers, no Authorization upstream, the spoofed header replaced)" \
  -H "Authorization: Bearer $token" -H "x-sluis-client-id: spoofed" "$url/Patient/123"
grep -qi '"x-sluis-client-id": "did:web:receiver.example.org"' "$tmp/body" ||
  fail "the upstream did not get x-sluis-client-id from the token"
if grep -qi '"authorization"' "$tmp/body"; then fail "the token reached the upstream"; fi
show 401 "denied: no token" "$url/Patient/123"
show 403 "denied: a resource outside the transfer (the answer is the same for every policy denial)" \
  -H "Authorization: Bearer $token" "$url/Patient/456"
show 403 "denied: the transfer does not allow deleting" -X DELETE -H "Authorization: Bearer $token" "$url/Patient/123"
show 200 "the sender revokes the transfer" -X POST "http://127.0.0.1:$admin/v1/flows/$flow/revoke"
show 403 "denied: the transfer is revoked" -H "Authorization: Bearer $token" "$url/Patient/123"

# Why each was denied: Sluis's info log names policy, rule and reason (never the token
# or the path, which may name a patient).
printf '\n### why: the denials in the Sluis log\n'
grep 'request denied' "$tmp/sluis.log" | sed 's/^/  /' || fail "no denial in the Sluis log"
printf '\nok: every answer was as expected\n'
