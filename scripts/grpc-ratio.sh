#!/usr/bin/env bash
# Straight gRPC at Sluis and at the no-op baselines, no Envoy: Check/s and CPU per Check
# of each server and of the load generator, in ROUNDS alternated rounds, then the median
# and range of each ratio to the lean no-op.
#
# Method (issue #18):
# - The baseline is `sluis-noop-authz`, the leanest no-op on Sluis's transport (tonic, the
#   envoy-types service); `sluis-noop-default` (NOOP_DEFAULT=1) is an off-the-shelf tonic
#   no-op, the stretch comparison.
# - The request is a CheckRequest captured from Envoy 1.40 (benches/data/, made by
#   scripts/capture-check-request.sh): the eOverdracht token and path, allowed by the
#   example policy once the run's flow is registered.
# - h2load runs ONE thread (-t1): on a 2-core machine a second load thread takes the
#   server's core, starves every server alike and pulls the ratio toward 1. Its own CPU per
#   Check is printed so you can see it is not the bottleneck (well under the server's).
# - CPU per Check = (utime + stime) of the process over the run (/proc/PID/stat, h2load's
#   from the shell's `times`) / calls. It is what a gateway host pays per Check, whatever
#   the machine's other load; Check/s is not (BENCHMARKS.md: quiet machine only).
#
# Environment: ROUNDS [5] N [100000] C [2] M [16] (h2load -c/-m);
#   BIN [target/release] (sluis, sluis-noop-authz, sluis-noop-default);
#   BIN_OLD [unset]: a directory holding an earlier `sluis` build, run beside BIN's (its
#     listeners shifted by 200), so two builds are compared in one sitting;
#   NOOP_OLD [0]: 1 also runs BIN_OLD's `sluis-noop-authz` as `noop-old`, and compares
#     sluis-old with it: two builds of both, e.g. with and without PGO
#     (scripts/pgo-build.sh), each Sluis against the no-op built the same way;
#   NOOP_DEFAULT [1]: 0 skips the default tonic no-op;
#   NOOP_SKIP [1]: 0 skips `noop-skip`, the lean no-op that does not decode the
#     CheckRequest at all (`--skip-decode`): the floor of the transport itself;
#   NOOP_TRANSPORT [1]: 0 skips `noop-transport`, the lean no-op with `sluis serve`'s gRPC
#     listener settings (keep-alives, stream limit, the per-Check timeout): what Sluis's
#     transport costs apart from deciding;
#   NOOP_ANSWER [unset]: a file holding a CheckResponse (e.g. Sluis's answer as curl saves
#     it, tmp/grpc-ratio/smoke-sluis.bin after a run): also runs `noop-answer`, the lean
#     no-op answering that instead of an empty OK (`--answer`): what the bigger answer
#     costs the transport, apart from deciding;
#   SLUIS_EXTRA [unset]: a YAML file of top-level keys the example config does not set,
#     appended to BIN's Sluis's config only (e.g. a decision_log or tracing block): with
#     BIN_OLD=BIN, "sluis / sluis-old" is then what that block costs, paired by round;
#   SLUIS_EXTRA_OLD [unset]: the same for BIN_OLD's Sluis (two builds, each with the block);
#   CHECK [benches/data/check-eoverdracht.bin]; OUT [tmp/grpc-ratio].
# Also printed per server: minor page faults per Check (kernel time no system call shows).
# Needs: cargo build --release -p sluis -p sluis-noop-authz; h2load
# (scripts/install-load-tools.sh). Uses ports 9190-9192, 9292-9297, 9390-9392.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-tmp/grpc-ratio}; mkdir -p "$OUT"
BIN=${BIN:-target/release}; BIN_OLD=${BIN_OLD:-}
ROUNDS=${ROUNDS:-5}; N=${N:-100000}; C=${C:-2}; M=${M:-16}
NOOP_DEFAULT=${NOOP_DEFAULT:-1}; NOOP_TRANSPORT=${NOOP_TRANSPORT:-1}; NOOP_SKIP=${NOOP_SKIP:-1}
CHECK=${CHECK:-benches/data/check-eoverdracht.bin}
source scripts/load-common.sh

PIDS=(); CONFIGS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "${CONFIGS[@]}"' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
# Context switches of all the process's threads (voluntary: it slept waiting for work).
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'; }
# Minor page faults of the process (a fault is kernel time that no system call shows).
faults() { awk '{print $10}' "/proc/$1/stat"; }
smoke() { # name port
  curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary "@$CHECK" "http://127.0.0.1:$2/envoy.service.auth.v3.Authorization/Check" -o "$OUT/smoke-$1.bin"
  local code; code=$(python3 scripts/gen-check-request.py --decode-response "$OUT/smoke-$1.bin")
  echo "$1: smoke Check -> $code"
  [[ "$code" == "status.code=0 http_response=ok_response" ]] || { echo "$1 does not allow the request: not the path meant to be measured" >&2; exit 1; }
}

# name port pid
SERVERS=()
start() { # name port command...
  local name=$1 port=$2; shift 2
  "$@" > "$OUT/$name.log" 2>&1 & PIDS+=($!)
  SERVERS+=("$name $port $!")
  wait_listening "$port"
}
start noop 9292 "$BIN/sluis-noop-authz" 127.0.0.1:9292
[[ "$NOOP_DEFAULT" == 0 ]] || start noop-default 9293 "$BIN/sluis-noop-default" 127.0.0.1:9293
[[ "$NOOP_TRANSPORT" == 0 ]] || start noop-transport 9294 "$BIN/sluis-noop-authz" --sluis-transport 127.0.0.1:9294
[[ "$NOOP_SKIP" == 0 ]] || start noop-skip 9295 "$BIN/sluis-noop-authz" --skip-decode 127.0.0.1:9295
[[ "${NOOP_OLD:-0}" == 0 || -n "$BIN_OLD" ]] || { echo "NOOP_OLD=1 needs BIN_OLD" >&2; exit 2; }
[[ "${NOOP_OLD:-0}" == 0 ]] || start noop-old 9297 "$BIN_OLD/sluis-noop-authz" 127.0.0.1:9297
[[ -z "${NOOP_ANSWER:-}" ]] || start noop-answer 9296 "$BIN/sluis-noop-authz" --answer "$NOOP_ANSWER" 127.0.0.1:9296
CONFIG=$(private_example_config "$OUT"); CONFIGS+=("$CONFIG")
[[ -z "${SLUIS_EXTRA:-}" ]] || append_config_block "$CONFIG" "$SLUIS_EXTRA" "$BIN/sluis"
start sluis 9191 "$BIN/sluis" serve --config "$CONFIG"
echo "flow at sluis: HTTP $(register_load_flow 127.0.0.1:9190)"
if [[ -n "$BIN_OLD" ]]; then
  CONFIG_OLD=$(private_example_config "$OUT" 200); CONFIGS+=("$CONFIG_OLD")
  [[ -z "${SLUIS_EXTRA_OLD:-}" ]] || append_config_block "$CONFIG_OLD" "$SLUIS_EXTRA_OLD" "$BIN_OLD/sluis"
  start sluis-old 9391 "$BIN_OLD/sluis" serve --config "$CONFIG_OLD"
  echo "flow at sluis-old: HTTP $(register_load_flow 127.0.0.1:9390)"
fi
for s in "${SERVERS[@]}"; do read -r name port _ <<<"$s"; smoke "$name" "$port"; done

HZ=$(getconf CLK_TCK)
RESULTS=$OUT/results.tsv; : > "$RESULTS"
echo "h2load -t1 -c$C -m$M -n$N, $ROUNDS rounds, request $CHECK ($(stat -c %s "$CHECK") bytes); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-13s %10s %16s %14s %14s %14s %17s %7s\n' round server Check/s "server µs/Check" "of which sys" "sleeps/Check" "faults/Check" "h2load µs/Check" failed
for round in $(seq "$ROUNDS"); do
  for s in "${SERVERS[@]}"; do
    read -r name port pid <<<"$s"
    h2load -t1 -c1 -m1 -n 200 --data="$CHECK" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$port/envoy.service.auth.v3.Authorization/Check" > /dev/null # warm-up
    before=$(cpu_ticks "$pid"); sys_before=$(sys_ticks "$pid"); sw_before=$(switches "$pid"); flt_before=$(faults "$pid")
    # `times` in the subshell: the user and system time of its child, h2load.
    ( h2load -n "$N" -t1 -c"$C" -m"$M" --data="$CHECK" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$port/envoy.service.auth.v3.Authorization/Check" > "$OUT/h2load-$name-$round.txt"
      times > "$OUT/times-$name-$round.txt" )
    after=$(cpu_ticks "$pid"); sys_after=$(sys_ticks "$pid"); sw_after=$(switches "$pid"); flt_after=$(faults "$pid")
    rps=$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^req\/s/) {gsub(",", "", $i); print $i}}' "$OUT/h2load-$name-$round.txt")
    failed=$(awk '/^requests:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^(failed|errored|timeout)/) s += $i} END {print s + 0}' "$OUT/h2load-$name-$round.txt")
    server_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$N" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    sys_us=$(awk -v t=$((sys_after - sys_before)) -v hz="$HZ" -v n="$N" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    wakes=$(awk -v t=$((sw_after - sw_before)) -v n="$N" 'BEGIN {printf "%.3f", t / n}')
    flts=$(awk -v t=$((flt_after - flt_before)) -v n="$N" 'BEGIN {printf "%.3f", t / n}')
    h2load_us=$(awk -v n="$N" 'NR == 2 {
        split($1, u, /[ms]/); split($2, s, /[ms]/)
        printf "%.1f", ((u[1] * 60 + u[2]) + (s[1] * 60 + s[2])) * 1e6 / n }' "$OUT/times-$name-$round.txt")
    printf '%-6s %-13s %10.0f %16s %14s %14s %14s %17s %7s\n' "$round" "$name" "$rps" "$server_us" "$sys_us" "$wakes" "$flts" "$h2load_us" "$failed"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$rps" "$server_us" "$h2load_us" "$sys_us" "$wakes" "$flts" >> "$RESULTS"
  done
done

# Per round, each server against the lean no-op of the same round; then median and range.
echo
awk -F'\t' '
  { rps[$1, $2] = $3; cpu[$1, $2] = $4; if (!($2 in seen)) { seen[$2] = 1; names[++k] = $2 }; rounds = $1 }
  function summary(a, n,   v, i, j, t) {
    for (i = 1; i <= n; i++) v[i] = a[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return sprintf("median %.2f (range %.2f-%.2f)", (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2, v[1], v[n])
  }
  END {
    for (s = 1; s <= k; s++) {
      name = names[s]; if (name == "noop") continue
      for (r = 1; r <= rounds; r++) { ratio[r] = rps[r, name] / rps[r, "noop"]; extra[r] = cpu[r, name] - cpu[r, "noop"] }
      printf "%s / noop: Check/s ratio %s; CPU µs/Check above noop %s\n", name, summary(ratio, rounds), summary(extra, rounds)
      if (name == "sluis" && ("1", "noop-skip") in rps) {
        for (r = 1; r <= rounds; r++) { ratio[r] = rps[r, "sluis"] / rps[r, "noop-skip"]; extra[r] = cpu[r, "sluis"] - cpu[r, "noop-skip"] }
        printf "sluis / noop-skip (the transport floor): Check/s ratio %s; CPU µs/Check above it %s\n", summary(ratio, rounds), summary(extra, rounds)
      }
      if (name == "sluis" && ("1", "noop-answer") in rps) {
        for (r = 1; r <= rounds; r++) { ratio[r] = rps[r, "sluis"] / rps[r, "noop-answer"]; extra[r] = cpu[r, "sluis"] - cpu[r, "noop-answer"] }
        printf "sluis / noop-answer (a no-op giving the same answer): Check/s ratio %s; CPU µs/Check above it %s\n", summary(ratio, rounds), summary(extra, rounds)
      }
      if (name == "sluis-old" && ("1", "noop-old") in rps) {
        for (r = 1; r <= rounds; r++) { ratio[r] = rps[r, "sluis-old"] / rps[r, "noop-old"]; extra[r] = cpu[r, "sluis-old"] - cpu[r, "noop-old"] }
        printf "sluis-old / noop-old (both from BIN_OLD): Check/s ratio %s; CPU µs/Check above it %s\n", summary(ratio, rounds), summary(extra, rounds)
      }
      if (name == "sluis" && ("1", "sluis-old") in rps) {
        for (r = 1; r <= rounds; r++) { ratio[r] = rps[r, "sluis"] / rps[r, "sluis-old"]; extra[r] = cpu[r, "sluis"] - cpu[r, "sluis-old"] }
        printf "sluis / sluis-old: Check/s ratio %s; CPU µs/Check above sluis-old, paired by round, %s\n", summary(ratio, rounds), summary(extra, rounds)
      }
    }
  }' "$RESULTS" | tee "$OUT/summary.txt"
echo "raw output: $OUT"
