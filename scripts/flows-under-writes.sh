#!/usr/bin/env bash
# The flow index under writes, measured on whole servers (issue 16). `benches/flows.rs`
# measures the index in process; this script measures what an operator sees:
#
#   ready    restart-to-ready: import N flows (SIZES, in imports of 100,000) into a fresh
#            SQLite store, once all of one actor and once 10 per actor, stop the server,
#            start it again and time until /readyz answers 200 (the index is rebuilt from
#            the store before that).
#   replicas two replicas on one PostgreSQL database: decision latency (wrk, forward-auth
#            door, an allowed eOverdracht request of actor X) on replica B, idle and while
#            IMPORT flows of one other actor are imported through replica A; and the same
#            on replica A itself (the importing replica).
#
# Prerequisites: cargo build --release --bin sluis; wrk (apt-get install wrk); python3;
# for `replicas`, PostgreSQL at 127.0.0.1:5432 where user `postgres` may create databases.
#
# Environment: SIZES ["10000 100000 1000000"], IMPORT [100000], DURATION [10] seconds of
# wrk per phase, C [4] connections.
# Usage: scripts/flows-under-writes.sh [ready|replicas|all]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

WHAT="${1:-all}"
SIZES="${SIZES:-10000 100000 1000000}"
IMPORT="${IMPORT:-100000}"
DURATION="${DURATION:-10}"
C="${C:-4}"
SLUIS="${CARGO_TARGET_DIR:-target}/release/sluis"
[[ -x "$SLUIS" ]] || { echo "build first: cargo build --release --bin sluis" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

OUT="$(mktemp -d)"
pids=()
db=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n "$db" ]] && psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null
  rm -rf "$OUT" examples/.flows-under-writes-$$-*.yaml
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

# config NAME STORE_URL PORT_BASE: the example config with its own flow store and ports
# PORT_BASE+0 (admin), +1 (gRPC), +2 (HTTP doors); prints its path. It stays in examples/
# because the config's other paths are relative to it.
config() {
  local path="examples/.flows-under-writes-$$-$1.yaml"
  sed -e "s|sqlite:sluis-flows.db|$2|" \
      -e "s|127.0.0.1:9190|127.0.0.1:$(($3))|" \
      -e "s|127.0.0.1:9191|127.0.0.1:$(($3 + 1))|" \
      -e "s|127.0.0.1:9192|127.0.0.1:$(($3 + 2))|" examples/config.yaml >"$path"
  grep -q "$2" "$path" || { echo "cannot move the example config's flow store" >&2; return 1; }
  echo "$path"
}

# stop PID: stops a server and waits until it is gone (it is not this shell's child, so
# `wait` cannot), so the next one cannot be mistaken for it.
stop() {
  kill "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.02; done
}

# start CONFIG LOG: starts a server, prints its pid.
start() {
  "$SLUIS" serve --config "$1" >>"$2" 2>&1 &
  echo $!
}

# ready ADMIN: waits for /readyz, prints the seconds it took.
ready() {
  python3 - "$1" <<'EOF'
import sys, time, urllib.request
start = time.monotonic()
while True:
    try:
        if urllib.request.urlopen(f"http://{sys.argv[1]}/readyz", timeout=1).status == 200:
            break
    except Exception:
        pass
    if time.monotonic() - start > 600:
        sys.exit("not ready after 600 s")
    time.sleep(0.01)
print(f"{time.monotonic() - start:.2f}")
EOF
}

# import ADMIN COUNT SHAPE PREFIX: imports COUNT flows in imports of at most 100,000;
# SHAPE `one` gives them all one actor, `distinct` 10 flows per actor.
import_flows() {
  python3 - "$@" <<'EOF'
import json, sys, urllib.request
admin, count, shape, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for start in range(0, count, 100_000):
    flows = []
    for i in range(start, min(count, start + 100_000)):
        actor = "did:web:big.example.org" if shape == "one" else f"did:web:org-{i // 10}.example.org"
        flows.append({"id": f"{prefix}-{i}", "purpose": "eOverdracht", "actor": actor,
                      "scopes": ["eOverdracht-receiver"],
                      "resources": [{"path": f"Patient/{i}", "operations": ["read"]},
                                    {"path": f"Task/{i}", "operations": ["read", "update"]},
                                    {"path": f"Composition/{i}", "operations": ["read"]}]})
    request = urllib.request.Request(f"http://{admin}/v1/flows/import", data=json.dumps(flows).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=600) as answer:
        if answer.status != 200:
            sys.exit(f"import answered {answer.status}")
EOF
}

if [[ "$WHAT" == ready || "$WHAT" == all ]]; then
  echo "| flows | shape | import (s) | restart to ready (s) |"
  echo "|---:|---|---:|---:|"
  for n in $SIZES; do
    for shape in one distinct; do
      dir="$OUT/ready-$n-$shape"
      mkdir -p "$dir"
      cfg="$(config "ready-$n-$shape" "sqlite:$dir/flows.db" 19190)"
      pid=$(start "$cfg" "$dir/sluis.log"); pids+=("$pid")
      ready 127.0.0.1:19190 >/dev/null
      t0=$(date +%s.%N)
      import_flows 127.0.0.1:19190 "$n" "$shape" "f"
      t1=$(date +%s.%N)
      stop "$pid"
      # From before the process starts, so a fast start is not hidden behind python's own.
      t2=$(date +%s.%N)
      pid=$(start "$cfg" "$dir/sluis.log"); pids+=("$pid")
      ready 127.0.0.1:19190 >/dev/null
      t3=$(date +%s.%N)
      stop "$pid"
      printf '| %s | %s | %.2f | %.2f |\n' "$n" "$shape" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        "$(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }')"
    done
  done
fi

if [[ "$WHAT" == replicas || "$WHAT" == all ]]; then
  db="sluis_under_writes_$$"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $db"
  url="postgres://postgres@127.0.0.1:5432/$db"
  a=$(start "$(config a "$url" 19190)" "$OUT/a.log"); pids+=("$a")
  ready 127.0.0.1:19190 >/dev/null
  b=$(start "$(config b "$url" 29190)" "$OUT/b.log"); pids+=("$b")
  ready 127.0.0.1:29190 >/dev/null

  source scripts/load-common.sh
  [[ "$(register_load_flow 127.0.0.1:19190)" == 20[01] ]] || { echo "cannot register the flow" >&2; exit 1; }
  token="$("$SLUIS" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
    "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
    "sub": "did:web:receiver.example.org", "client_id": "did:web:receiver.example.org",
    "scope": "eOverdracht-receiver"}')"
  path=/eoverdracht/fhir/Patient/123
  for port in 19192 29192; do
    for _ in $(seq 100); do
      [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "http://127.0.0.1:$port/decisions$path")" == 200 ]] && break
      sleep 0.1
    done
    [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "http://127.0.0.1:$port/decisions$path")" == 200 ]] ||
      { echo "replica on $port does not allow" >&2; exit 1; }
  done

  # measure PORT LABEL [import]: wrk against one replica, optionally while importing.
  measure() {
    local port=$1 label=$2 importing=${3:-}
    local out="$OUT/wrk-$label"
    wrk -t1 -c"$C" -d"${DURATION}s" --latency -H "authorization: Bearer $token" \
      "http://127.0.0.1:$port/decisions$path" >"$out" &
    local w=$!
    if [[ -n "$importing" ]]; then
      sleep 1
      import_flows 127.0.0.1:19190 "$IMPORT" one "$label"
    fi
    wait "$w"
    awk -v label="$label" '
      /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 } /Latency/ && !max { max = $4 }
      /Non-2xx/ { bad = $NF } /requests in/ { n = $1 }
      END { printf "| %s | %s | %s | %s | %s | %s |\n", label, n, p50, p99, max, bad ? bad : 0 }' "$out"
  }
  echo
  echo "| phase | requests | p50 | p99 | max | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|"
  measure 29192 "replica-B-idle"
  measure 29192 "replica-B-while-A-imports" import
  measure 19192 "replica-A-idle"
  measure 19192 "replica-A-while-A-imports" import
fi
