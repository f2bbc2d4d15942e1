#!/usr/bin/env bash
# Instructions per Check, straight gRPC, at Sluis and at the no-op ext_authz server, each
# run under callgrind: a figure the machine's load does not change, unlike the Check/s of
# scripts/grpc-ratio.sh. Each server is warmed up (WARM calls, default 200), then counted
# over N calls (default 2000) and over 2N calls; (2N - N) / N is what one Check costs,
# without start-up and without the work a server does whatever the load (timers, the
# reloader's polling), which both counts hold alike. Keeps the callgrind files in
# tmp/grpc-callgrind/ for `callgrind_annotate --inclusive=yes`.
# The servers: the lean no-op (`sluis-noop-authz`, with NOOP_ARGS, e.g. `--runtime
# current`), the default tonic no-op (`sluis-noop-default`; NOOP_DEFAULT=0 skips it), the
# lean no-op with `sluis serve`'s gRPC listener settings (`noop-transport`), the lean
# no-op that does not decode the CheckRequest (`noop-skip`: the transport's floor),
# Sluis from BIN and, with BIN_OLD=DIR, an earlier Sluis build. The request is the
# CheckRequest captured from Envoy 1.40 (CHECK, default benches/data/check-eoverdracht.bin).
# ONLY="noop sluis" measures a subset. VALGRIND_OPTS="--cache-sim=yes" also simulates this
# CPU's caches and prints each event per Check (L1 instruction and data misses: where a
# server's CPU goes beyond its instructions, BENCHMARKS.md session 18).
# Needs: cargo build --release -p sluis -p sluis-noop-authz (or BIN=DIR with the
# binaries); valgrind; h2load
# (scripts/install-load-tools.sh). Uses ports 9190-9293.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=tmp/grpc-callgrind; mkdir -p $OUT
N=${N:-2000}; WARM=${WARM:-200}; BIN=${BIN:-target/release}; BIN_OLD=${BIN_OLD:-}
NOOP_ARGS=${NOOP_ARGS:-}; NOOP_DEFAULT=${NOOP_DEFAULT:-1}
ONLY=" ${ONLY:-noop noop-default noop-transport noop-skip sluis sluis-old} "
CHECK=${CHECK:-benches/data/check-eoverdracht.bin}
cp "$CHECK" $OUT/check.bin

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
  # Every event the run counted (more than instructions with --cache-sim=yes), per Check.
  awk -v n="$N" '/^events:/ {for (i = 2; i <= NF; i++) name[i] = $i}
    /^totals:/ {for (i = 2; i <= NF; i++) total[FILENAME, i] = $i; last = NF}
    END {line = ""; for (i = 2; i <= last; i++) line = line sprintf(" %s=%.0f", name[i], (total[ARGV[2], i] - total[ARGV[1], i]) / n); print "  per Check:" line}' \
    "$OUT/$1.n.out" "$OUT/$1.2n.out"
}

rm -f $OUT/callgrind.out.*
source scripts/load-common.sh
CONFIG=$(private_example_config $OUT)
PID=
trap 'kill $PID 2>/dev/null || true; rm -f $CONFIG' EXIT
# SLUIS_EXTRA=FILE: top-level keys appended to Sluis's config (a decision_log or tracing
# block), as in scripts/grpc-ratio.sh.
[[ -z "${SLUIS_EXTRA:-}" ]] || append_config_block "$CONFIG" "$SLUIS_EXTRA" "$BIN/sluis"
smoke() { # port
  curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @$OUT/check.bin "http://127.0.0.1:$1/envoy.service.auth.v3.Authorization/Check" -o $OUT/smoke.bin
  python3 scripts/gen-check-request.py --decode-response $OUT/smoke.bin
}
# run NAME PORT COMMAND...: the server under callgrind, measured, stopped
run() {
  local name=$1 port=$2; shift 2
  [[ "$ONLY" == *" $name "* ]] || return 0
  valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.out.%p "$@" > $OUT/$name.log 2>&1 & PID=$!
  wait_port "$port"
  if [[ "$name" == sluis* ]]; then echo "flow: $(register_load_flow 127.0.0.1:9190)"; fi
  smoke "$port"
  measure "$name" "$port" $PID
  kill $PID; wait $PID || true
}
# shellcheck disable=SC2086
run noop 9292 $BIN/sluis-noop-authz $NOOP_ARGS 127.0.0.1:9292
[[ "$NOOP_DEFAULT" == 0 ]] || run noop-default 9292 $BIN/sluis-noop-default 127.0.0.1:9292
run noop-transport 9292 $BIN/sluis-noop-authz --sluis-transport 127.0.0.1:9292
run noop-skip 9292 $BIN/sluis-noop-authz --skip-decode 127.0.0.1:9292
run sluis 9191 $BIN/sluis serve --config $CONFIG
[[ -z "$BIN_OLD" ]] || run sluis-old 9191 $BIN_OLD/sluis serve --config $CONFIG
