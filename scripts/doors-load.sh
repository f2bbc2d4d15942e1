#!/usr/bin/env bash
# Decisions per second through each front door, side by side in one go, straight at
# Sluis (no gateway): what does a door's translation cost next to the decision?
#
#   grpc          Envoy ext_authz gRPC Check (h2load, the captured CheckRequest of load.sh)
#   forward-auth  GET /decisions/<path> on the HTTP doors' listener, as Envoy's
#                 http_service sends it (h2load --h1, same token, same path, same policy)
#   authzen       POST /access/v1/evaluation with the AuthZEN Todo policy (another policy:
#                 AuthZEN evaluations are decided by evaluation policies), for reference
#
# Each scenario runs ROUNDS times, alternating, so drift on a shared machine spreads over
# all of them. Prerequisites: cargo build --release --bin sluis; scripts/install-load-tools.sh.
#
# Environment: N [100000] requests per run, C [8] connections, M [16] streams per HTTP/2
# connection (gRPC only), ROUNDS [3].
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

N="${N:-100000}"
C="${C:-8}"
M="${M:-16}"
ROUNDS="${ROUNDS:-3}"
SLUIS=target/release/sluis
OUT="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$OUT"' EXIT

log() { printf '== %s\n' "$*" >&2; }

source scripts/load-common.sh
config="$(private_example_config "$OUT")"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$OUT" "$config"' EXIT
"$SLUIS" serve --config "$config" >"$OUT/sluis.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf localhost:9190/readyz >/dev/null && break; sleep 0.2; done

[[ "$(register_load_flow 127.0.0.1:9190)" == 20[01] ]] || { echo "cannot register the flow" >&2; exit 1; }
token="$(load_flow_token "$SLUIS")"
path=/eoverdracht/fhir/Patient/123

python3 scripts/gen-check-request.py -o "$OUT/check.bin" --path "$path" --host 127.0.0.1:10000 --token "$token" >/dev/null
printf '%s' "$AUTHZEN_EVALUATION" >"$OUT/evaluation.json"

# Each door must allow before it is measured: a deny path is cheaper and would flatter it.
status=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "http://127.0.0.1:9192/decisions$path")
[[ "$status" == 200 ]] || { echo "forward-auth does not allow ($status)" >&2; exit 1; }
curl -s -H 'content-type: application/json' --data @"$OUT/evaluation.json" http://127.0.0.1:9192/access/v1/evaluation | grep -q '"decision":true' ||
  { echo "authzen does not allow" >&2; exit 1; }

run() {
  local name=$1
  shift
  h2load -n "$N" -c "$C" -t 2 "$@" 2>&1 | awk -v name="$name" '
    /finished in/ { rps = $4 }
    /^requests:/ { failed = $8 }
    /status codes:/ { ok = $3 }
    END { printf "%s %s %s %s\n", name, rps, ok, failed }'
}

results="$OUT/results"
for round in $(seq "$ROUNDS"); do
  log "round $round"
  run grpc -m "$M" --data="$OUT/check.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    http://127.0.0.1:9191/envoy.service.auth.v3.Authorization/Check >>"$results"
  run forward-auth --h1 -H "authorization: Bearer $token" "http://127.0.0.1:9192/decisions$path" >>"$results"
  run authzen --h1 --data="$OUT/evaluation.json" -H 'content-type: application/json' \
    http://127.0.0.1:9192/access/v1/evaluation >>"$results"
done

echo "| door | decisions/s per run | median | vs grpc |"
echo "|---|---|---:|---:|"
awk '
  { rps[$1] = rps[$1] (rps[$1] ? " / " : "") int($2); all[$1, ++n[$1]] = $2 }
  END {
    split("grpc forward-auth authzen", order, " ")
    for (i = 1; i <= 3; i++) {
      d = order[i]; k = n[d]
      for (a = 1; a <= k; a++) v[a] = all[d, a]
      for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (v[b] < v[a]) { t = v[a]; v[a] = v[b]; v[b] = t }
      med[d] = v[int((k + 1) / 2)]
    }
    for (i = 1; i <= 3; i++) {
      d = order[i]
      printf "| %s | %s | %d | %.2f |\n", d, rps[d], med[d], med[d] / med["grpc"]
    }
  }' "$results"
