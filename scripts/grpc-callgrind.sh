#!/usr/bin/env bash
# Instructions per Check, straight gRPC, at Sluis and at the no-op ext_authz server, each
# run under callgrind: a figure the machine's load does not change, unlike the Check/s of
# scripts/grpc-ratio.sh. Each server is warmed up (WARM calls, default 200), then counted
# over N calls (default 2000) and over 2N calls; (2N - N) / N is what one Check costs,
# without start-up and without the work a server does whatever the load (timers, the
# reloader's polling), which both counts hold alike. Keeps the callgrind files in
# tmp/grpc-callgrind/ for `callgrind_annotate --inclusive=yes`.
# Needs: cargo build --release --bin sluis -p sluis-noop-authz (or BIN=DIR with both
# binaries); valgrind; h2load
# (scripts/install-load-tools.sh). Uses ports 9190-9292.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=tmp/grpc-callgrind; mkdir -p $OUT
N=${N:-2000}; WARM=${WARM:-200}; BIN=${BIN:-target/release}
TOKEN=$($BIN/sluis dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{"iss":"https://nuts.example.org","aud":"https://fhir.example.org","sub":"did:web:receiver.example.org","client_id":"did:web:receiver.example.org","scope":"eOverdracht-receiver"}')
python3 scripts/gen-check-request.py -o $OUT/check.bin --path /eoverdracht/fhir/Patient/123 --host 127.0.0.1:10000 --token "$TOKEN"

load() { # port calls
  h2load -n "$2" -c 8 -m 16 -t 1 --data=$OUT/check.bin -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1/envoy.service.auth.v3.Authorization/Check" | awk '/^requests:/ {print "  " $0}'
}
# The instructions counted since the last zeroing, from a fresh dump.
counted() { # pid name
  callgrind_control --dump="$2" "$1" > /dev/null 2>&1
  sleep 1
  local file; file=$(ls -t $OUT/callgrind.out.$1.* | head -1)
  cp "$file" "$OUT/$3.$2.out"
  awk '/^(summary|totals):/ {print $2; exit}' "$file"
}
wait_port() { # port
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$1/"; then return 0; fi
    sleep 1
  done
  echo "nothing listens on $1"; exit 1
}

measure() { # name port pid
  load "$2" "$WARM"
  callgrind_control -z "$3" > /dev/null 2>&1
  load "$2" "$N"
  local one; one=$(counted "$3" n "$1")
  callgrind_control -z "$3" > /dev/null 2>&1
  load "$2" $((2 * N))
  local two; two=$(counted "$3" 2n "$1")
  echo "$1: $one instructions for $N checks, $two for $((2 * N)): $(( (two - one) / N )) per Check"
}

rm -f $OUT/callgrind.out.*
valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.out.%p \
  $BIN/sluis-noop-authz 127.0.0.1:9292 > $OUT/noop.log 2>&1 & NOOP=$!
source scripts/load-common.sh
CONFIG=$(private_example_config $OUT)
trap 'kill $NOOP ${SLUIS:-} 2>/dev/null || true; rm -f $CONFIG' EXIT
wait_port 9292
measure noop 9292 $NOOP
kill $NOOP; wait $NOOP || true

valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.out.%p \
  $BIN/sluis serve --config $CONFIG > $OUT/sluis.log 2>&1 & SLUIS=$!
wait_port 9191
echo "flow: $(register_load_flow 127.0.0.1:9190)"
curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @$OUT/check.bin http://127.0.0.1:9191/envoy.service.auth.v3.Authorization/Check -o $OUT/smoke.bin
python3 scripts/gen-check-request.py --decode-response $OUT/smoke.bin
measure sluis 9191 $SLUIS
kill $SLUIS; wait $SLUIS || true
