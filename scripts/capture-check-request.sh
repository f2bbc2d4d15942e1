#!/usr/bin/env bash
# Captures the CheckRequest a real Envoy sends for the load scripts' eOverdracht request,
# as the exact gRPC request body (5-byte frame prefix + protobuf bytes) for `h2load --data`:
#   Envoy 1.40 (envoy/envoy-test.yaml.tmpl, the example front config) -> ext_authz ->
#   `sluis-noop-authz --capture FILE`, which writes the first Check's bytes untouched.
# One request goes through Envoy: GET $LOAD_PATH with Host $LOAD_HOST and
# `Authorization: Bearer <token>`, the token minted from examples/keys/dev-rsa.pem with the
# eOverdracht receiver's claims and an expiry of 2036-01-01 (EXP), so the committed capture
# keeps verifying: its signature, issuer, audience and dates are checked like any token's.
# Envoy's own per-request values (x-request-id, request time, the client's port) differ
# from capture to capture; their sizes do not.
#
# Usage: scripts/capture-check-request.sh [OUT]   (default benches/data/check-eoverdracht.bin)
# Needs: scripts/install-envoy.sh; cargo build --release -p sluis -p sluis-noop-authz
# (or BIN=DIR with both binaries). Uses ports 10090-10093.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benches/data/check-eoverdracht.bin}
BIN=${BIN:-target/release}
ENVOY=${ENVOY:-.tools/bin/envoy}
EXP=${EXP:-2082758400}
LOAD_PATH=${LOAD_PATH:-/eoverdracht/fhir/Patient/123}
LOAD_HOST=${LOAD_HOST:-127.0.0.1:10000}
LISTEN=10090 ADMIN=10091 AUTHZ=10092 UPSTREAM=10093
WORK=$(mktemp -d)
TOKEN=$($BIN/sluis dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims "{\"iss\":\"https://nuts.example.org\",\"aud\":\"https://fhir.example.org\",\"sub\":\"did:web:receiver.example.org\",\"client_id\":\"did:web:receiver.example.org\",\"scope\":\"eOverdracht-receiver\",\"exp\":$EXP}")
sed -e "s/{{LISTEN_PORT}}/$LISTEN/g" -e "s/{{ADMIN_PORT}}/$ADMIN/g" \
  -e "s/{{UPSTREAM_PORT}}/$UPSTREAM/g" -e "s/{{SLUIS_PORT}}/$AUTHZ/g" \
  envoy/envoy-test.yaml.tmpl > "$WORK/envoy.yaml"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
$BIN/sluis-noop-authz --capture "$OUT" 127.0.0.1:$AUTHZ > "$WORK/noop.log" 2>&1 & NOOP=$!
$ENVOY -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart -l warning > "$WORK/envoy.log" 2>&1 & ENVOY_PID=$!
trap 'kill $NOOP $ENVOY_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$ADMIN/ready" && break
  sleep 0.1
done
# Nothing listens upstream: Envoy answers 503 after the Check; only the Check matters.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $LOAD_HOST" -H "Authorization: Bearer $TOKEN" \
  -H 'User-Agent: curl/8' -H 'Accept: */*' "http://127.0.0.1:$LISTEN$LOAD_PATH" || true)
for _ in $(seq 50); do [[ -s "$OUT" ]] && break; sleep 0.1; done
[[ -s "$OUT" ]] || { cat "$WORK/noop.log" "$WORK/envoy.log" >&2; echo "no Check captured (HTTP $code)" >&2; exit 1; }
echo "captured $(stat -c %s "$OUT") bytes from $($ENVOY --version | sed -n 's/.*version: //p') into $OUT (HTTP $code through Envoy)"
