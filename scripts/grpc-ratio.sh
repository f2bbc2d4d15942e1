#!/usr/bin/env bash
# Straight gRPC Check/s at Sluis and at the no-op ext_authz server, alternated ROUNDS
# times (default 3) in one go, N calls each (default 100000): the ratio issue #2 asks for,
# without the Envoy runs of scripts/load.sh. Needs: cargo build --release --bin sluis
# -p sluis-noop-authz; scripts/install-load-tools.sh (h2load). Uses ports 9190-9292.
# BIN=DIR takes both binaries from DIR instead of target/release (an earlier build kept
# aside, to compare two builds in one sitting).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=tmp/grpc-ratio; mkdir -p $OUT
BIN=${BIN:-target/release}
TOKEN=$($BIN/sluis dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{"iss":"https://nuts.example.org","aud":"https://fhir.example.org","sub":"did:web:receiver.example.org","client_id":"did:web:receiver.example.org","scope":"eOverdracht-receiver"}' 2>/dev/null || true)
if [[ -z "$TOKEN" ]]; then $BIN/sluis dev-token --help; exit 1; fi
python3 scripts/gen-check-request.py -o $OUT/check.bin --path /eoverdracht/fhir/Patient/123 --host 127.0.0.1:10000 --token "$TOKEN"
source scripts/load-common.sh
CONFIG=$(private_example_config $OUT)
$BIN/sluis-noop-authz 127.0.0.1:9292 > $OUT/noop.log 2>&1 & NOOP=$!
$BIN/sluis serve --config $CONFIG > $OUT/sluis.log 2>&1 & SLUIS=$!
trap 'kill $NOOP $SLUIS 2>/dev/null; rm -f $CONFIG' EXIT
sleep 3
echo "flow: $(register_load_flow 127.0.0.1:9190)"
curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @$OUT/check.bin http://127.0.0.1:9191/envoy.service.auth.v3.Authorization/Check -o $OUT/smoke.bin
python3 scripts/gen-check-request.py --decode-response $OUT/smoke.bin
for i in $(seq 1 ${ROUNDS:-3}); do
  for port in 9292 9191; do
    r=$(h2load -n ${N:-100000} -c 8 -m 16 -t 2 --data=$OUT/check.bin -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$port/envoy.service.auth.v3.Authorization/Check | awk '/^finished in/ {print $4}')
    echo "round $i port $port req/s $r"
  done
done
