#!/usr/bin/env bash
# Load comparison: what does putting Sluis behind Envoy's ext_authz cost?
#
# Runs, one after the other in a single go, everything on 127.0.0.1 only and
# bounded in time/count:
#   HTTP through Envoy (wrk, HTTP/1.1, Authorization: Bearer $SLUIS_TOKEN):
#     a) envoy-only   Envoy without ext_authz -> upstream       (baseline)
#     b) envoy+noop   Envoy + ext_authz -> sluis-noop-authz    (cost of the gRPC hop)
#     c) envoy+sluis  Envoy + ext_authz -> Sluis               (cost of Sluis)
#     f) envoy-http+sluis  Envoy + ext_authz in HTTP mode -> Sluis's forward-auth door
#                     (envoy/bench-front-http.yaml.tmpl; against b, like c)
#     g) envoy-jwt-rbac  Envoy's in-process jwt_authn + rbac, same token and path rule, no
#                     ext_authz (envoy/bench-front-jwt-rbac.yaml.tmpl; against b)
#   Answers judged through Envoy's ext_proc (SCENARIOS=ext_proc, opt-in; issue #19):
#     h) envoy-extproc+noop   Envoy + ext_authz -> Sluis, ext_proc -> sluis-noop-authz
#                     ("continue" to every message), on a 100-entry mCSD Bundle (baseline)
#     i) envoy-extproc+sluis  the same, ext_proc -> Sluis's ext_proc door judging the
#                     Bundle with policy/care-services-mcsd.yaml's response_rules (against h)
#                     (the authz CPU of h is Sluis's Checks plus the no-op's ext_proc answers;
#                     of i, Sluis's Checks and judgements)
#                     (envoy/bench-front-ext-proc.yaml.tmpl, envoy/bench-upstream-bundle.yaml.tmpl)
#   gRPC straight at the authz server (h2load, no Envoy):
#     d) grpc noop    CheckRequest -> sluis-noop-authz          (baseline)
#     e) grpc sluis   CheckRequest -> Sluis
# and prints req/s, p50, p99 and the CPU per request of every process (front Envoy, the
# ext_authz server, the upstream and the load generator) for each scenario, and its ratio
# to its baseline (b to a; c, f and g to b; e to d), with medians and ranges over rounds.
#
# Method (issue #18): the front Envoy runs one worker per core (FRONT_CONCURRENCY), so it
# is not the bottleneck that hides the authz server's cost; wrk and h2load run ONE thread,
# so the load generator does not take a core of its own on a 2-core machine (its CPU per
# request is reported to show it is not the limit); the gRPC request is a CheckRequest
# captured from Envoy 1.40 (benches/data/, scripts/capture-check-request.sh).
#
# The upstream is a second Envoy process answering with a direct_response
# (envoy/bench-upstream.yaml.tmpl): no extra dependency, and a fixed 200 costs
# it next to nothing, so it is never the bottleneck. It runs in its own
# process (not as a second listener of the front Envoy) so that its work is
# not counted against the front Envoy's worker threads.
#
# Prerequisites: scripts/install-envoy.sh, scripts/install-load-tools.sh,
#   cargo build --release -p sluis -p sluis-noop-authz
#
# Environment (defaults in brackets):
#   DURATION [10s] THREADS [1] CONNECTIONS [16]   wrk settings per run
#   WARMUP [2s]                                   wrk warm-up run, not reported
#   LOAD_PATH [/eoverdracht/fhir/Patient/123]     request path (must be allowed by Sluis' policy;
#                                                 the default is allowed by examples/ for the
#                                                 default token below)
#   LOAD_HOST [127.0.0.1:$FRONT_PORT]             Host / :authority sent
#   SLUIS_TOKEN [minted]                          bearer token (sent in every scenario). When
#                                                 unset, and Sluis is run, a development token
#                                                 for the examples/ config is minted with
#                                                 `sluis dev-token` (examples/keys/dev-rsa.pem),
#                                                 the same one scripts/demo.sh uses
#   SLUIS_CMD [target/release/sluis serve --config <the example config, with its flow
#             store in OUT_DIR>]
#   SLUIS_BIN [target/release/sluis]              the binary of the default SLUIS_CMD
#   SLUIS_PORT [9191]                             gRPC port Sluis listens on (per its config)
#   SLUIS_ADMIN [127.0.0.1:9190]                  Sluis's admin listener, for registering SLUIS_FLOW
#   SLUIS_FLOW [the receiver's transfer of Patient/123]  a flow (JSON) registered before the
#                                                 load, which the eOverdracht policy needs; empty: none
#   SKIP_SLUIS [auto]                             1 = skip c) and e); 0 = run them; auto = skip
#                                                 if SLUIS_CMD's first word is not an executable
#   NOOP_BIN [target/release/sluis-noop-authz]    NOOP_PORT [9292]
#   H2LOAD_N [100000] H2LOAD_C [2] H2LOAD_M [16] H2LOAD_T [1]  h2load settings
#   CHECK_FILE [benches/data/check-eoverdracht.bin]  the gRPC request body h2load sends
#   SLUIS_HTTP_PORT [9192]                        Sluis's HTTP listener (scenario f)
#   SCENARIOS [grpc http jwt h2]                  space-separated subset of: grpc http jwt h2
#                                                 ext_proc (ext_proc runs only when named)
#   EXT_PROC_PATH [/mcsd/Organization?name=x]     the judged search (scenarios h, i)
#   EXT_PROC_TOKEN [minted]                       a nuts-node token with organization_ura
#   H2LOAD_MAX_SECONDS [60]                       hard cap per h2load run
#   ROUNDS [3]                                    b) with c), f), g), and d) with e), alternated this
#                                                 many times; each Sluis run is compared with
#                                                 the no-op run of its round, and the medians
#                                                 and ranges of the ratios are printed
#   FRONT_CONCURRENCY [$(nproc)]                  worker threads of the front Envoy
#   UPSTREAM_CONCURRENCY [1]                      worker threads of the upstream Envoy
#   FRONT_PORT [10000] FRONT_ADMIN [10001] UPSTREAM_PORT [10002] UPSTREAM_ADMIN [10003]
#   OUT_DIR [tmp/load-YYYYmmdd-HHMMSS]            logs, configs, raw tool output, results
#   ENVOY [.tools/bin/envoy]

# -e: abort on the first unexpected failure (a half-run benchmark is worse
#     than none); -u: unset variables are bugs; -o pipefail: a failing tool in
#     a pipeline (e.g. wrk | tee) fails the step instead of being masked.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ENVOY="${ENVOY:-$REPO/.tools/bin/envoy}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
THREADS="${THREADS:-1}"
CONNECTIONS="${CONNECTIONS:-16}"
LOAD_PATH="${LOAD_PATH:-/eoverdracht/fhir/Patient/123}"
SLUIS_TOKEN="${SLUIS_TOKEN:-}"
# shellcheck source=load-common.sh
source scripts/load-common.sh
SLUIS_CMD="${SLUIS_CMD:-}"
SLUIS_ADMIN="${SLUIS_ADMIN:-127.0.0.1:9190}"
SLUIS_FLOW="${SLUIS_FLOW-$LOAD_FLOW}"
SLUIS_PORT="${SLUIS_PORT:-9191}"
SKIP_SLUIS="${SKIP_SLUIS:-auto}"
NOOP_BIN="${NOOP_BIN:-target/release/sluis-noop-authz}"
NOOP_PORT="${NOOP_PORT:-9292}"
H2LOAD_N="${H2LOAD_N:-100000}"
H2LOAD_C="${H2LOAD_C:-2}"
H2LOAD_M="${H2LOAD_M:-16}"
H2LOAD_T="${H2LOAD_T:-1}"
CHECK_FILE="${CHECK_FILE:-$REPO/benches/data/check-eoverdracht.bin}"
SLUIS_HTTP_PORT="${SLUIS_HTTP_PORT:-9192}"
SCENARIOS=" ${SCENARIOS:-grpc http jwt h2} "
H2LOAD_MAX_SECONDS="${H2LOAD_MAX_SECONDS:-60}"
EXT_PROC_PATH="${EXT_PROC_PATH:-/mcsd/Organization?name=x}"
EXT_PROC_TOKEN="${EXT_PROC_TOKEN:-}"
ROUNDS="${ROUNDS:-3}"
FRONT_CONCURRENCY="${FRONT_CONCURRENCY:-$(nproc)}"
UPSTREAM_CONCURRENCY="${UPSTREAM_CONCURRENCY:-1}"
FRONT_PORT="${FRONT_PORT:-10000}"
FRONT_ADMIN="${FRONT_ADMIN:-10001}"
UPSTREAM_PORT="${UPSTREAM_PORT:-10002}"
UPSTREAM_ADMIN="${UPSTREAM_ADMIN:-10003}"
LOAD_HOST="${LOAD_HOST:-127.0.0.1:$FRONT_PORT}"
OUT_DIR="${OUT_DIR:-$REPO/tmp/load-$(date +%Y%m%d-%H%M%S)}"

mkdir -p "$OUT_DIR"
# By default Sluis serves the example config with a flow store of this run's own.
PRIVATE_CONFIG=""
if [[ -z "$SLUIS_CMD" ]]; then
  PRIVATE_CONFIG="$(private_example_config "$OUT_DIR")"
  SLUIS_CMD="${SLUIS_BIN:-target/release/sluis} serve --config $PRIVATE_CONFIG"
fi
RESULTS="$OUT_DIR/results.tsv"
: >"$RESULTS"

log() { printf '[load] %s\n' "$*" >&2; }
die() { printf '[load] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- processes
# Every process we start is recorded here and killed on exit, whatever the
# exit path (success, error under set -e, Ctrl-C).
PIDS=()
cleanup() {
  [[ -z "$PRIVATE_CONFIG" ]] || rm -f "$PRIVATE_CONFIG"
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # give each process up to ~5 s to exit, then SIGKILL it
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop PID: stop one process we started (TERM, then KILL after ~5 s) and forget it
stop() {
  local pid="$1" keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT PID NAME: until something accepts on PORT (max 20 s), failing
# early if the process died (its log is printed).
wait_port() {
  local port="$1" pid="$2" name="$3" logf="$OUT_DIR/$3.log"
  for _ in $(seq 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logf" >&2 || true
      die "$name exited before listening on 127.0.0.1:$port (log: $logf)"
    fi
    port_open "$port" && return 0
    sleep 0.1
  done
  tail -n 30 "$logf" >&2 || true
  die "$name did not listen on 127.0.0.1:$port within 20 s (log: $logf)"
}

require_free() {
  local port
  for port in "$@"; do
    if port_open "$port"; then
      die "port 127.0.0.1:$port is already in use (set the *_PORT variables to free ones)"
    fi
  done
}

# render TEMPLATE OUT ADMIN_PORT AUTHZ_PORT: substitute the {{...}} placeholders
render() {
  sed -e "s/{{LISTEN_PORT}}/$FRONT_PORT/g" -e "s/{{ADMIN_PORT}}/$3/g" \
      -e "s/{{UPSTREAM_PORT}}/$UPSTREAM_PORT/g" -e "s/{{SLUIS_PORT}}/$4/g" "$1" >"$2"
  if grep -q '{{' "$2"; then die "unsubstituted placeholder left in $2"; fi
}

# start_envoy NAME CONFIG CONCURRENCY PORT: sets STARTED_PID
start_envoy() {
  local name="$1" cfg="$2" conc="$3" port="$4"
  # --disable-hot-restart: two Envoys run side by side (front + upstream);
  # without it they would fight over the same shared-memory hot-restart region.
  "$ENVOY" -c "$cfg" --concurrency "$conc" --disable-hot-restart \
    --log-level warn >"$OUT_DIR/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_port "$port" "$STARTED_PID" "$name"
}

# ---------------------------------------------------------------- tools
command -v wrk >/dev/null || die "wrk not found: run scripts/install-load-tools.sh"
command -v h2load >/dev/null || die "h2load not found: run scripts/install-load-tools.sh"
[[ -x "$ENVOY" ]] || die "$ENVOY not found: run scripts/install-envoy.sh"
[[ -x "$NOOP_BIN" ]] || die "$NOOP_BIN not found: cargo build --release -p sluis-noop-authz"
HAVE_CURL=0
command -v curl >/dev/null && HAVE_CURL=1

read -r -a SLUIS_ARGV <<<"$SLUIS_CMD"
if [[ "$SKIP_SLUIS" == "auto" ]]; then
  if [[ -x "${SLUIS_ARGV[0]}" ]] || command -v "${SLUIS_ARGV[0]}" >/dev/null 2>&1; then
    SKIP_SLUIS=0
  else
    log "Sluis binary '${SLUIS_ARGV[0]}' not found: skipping the Sluis scenarios"
    SKIP_SLUIS=1
  fi
fi
if [[ "$SKIP_SLUIS" != "1" && -z "$SLUIS_TOKEN" && -f examples/keys/dev-rsa.pem ]]; then
  # Same claims as scripts/demo.sh: allowed by examples/policy for LOAD_PATH's default.
  SLUIS_TOKEN="$("${SLUIS_ARGV[0]}" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
    "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
    "sub": "did:web:receiver.example.org", "client_id": "did:web:receiver.example.org",
    "scope": "eOverdracht-receiver"}' 2>/dev/null || true)"
  if [[ -n "$SLUIS_TOKEN" ]]; then log "minted a development token for the examples/ config (sluis dev-token)"; fi
fi
if [[ "$SKIP_SLUIS" != "1" && "$SCENARIOS" == *" ext_proc "* && -z "$EXT_PROC_TOKEN" ]]; then
  # The requester of the mCSD example policy: a Nuts token naming its organisation (URA).
  EXT_PROC_TOKEN="$("${SLUIS_ARGV[0]}" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
    "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
    "sub": "did:web:requester.example.org", "client_id": "did:web:requester.example.org",
    "organization_ura": "24173480"}' 2>/dev/null || true)"
fi
if [[ "$SKIP_SLUIS" != "1" && -z "$SLUIS_TOKEN" ]]; then
  log "warning: SLUIS_TOKEN is empty: Sluis will most likely deny every request"
fi

require_free "$FRONT_PORT" "$FRONT_ADMIN" "$UPSTREAM_PORT" "$UPSTREAM_ADMIN" "$NOOP_PORT"
[[ "$SKIP_SLUIS" == "1" ]] || require_free "$SLUIS_PORT"

# ---------------------------------------------------------------- parsing
# to_ms VALUE: "812.00us" / "1.23ms" / "1.05s" -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "%s", v }
  }'
}

# record SCENARIO TOOL RPS P50_MS P99_MS ERRORS AUTHZ_CPU_US FRONT_CPU_US UPSTREAM_CPU_US
#   LOADGEN_CPU_US
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

# loadgen_us TIMES_FILE REQUESTS: the CPU per request of the load generator, from the
# output of `times` in the subshell that ran it (second line: its children's user and
# system time)
loadgen_us() {
  awk -v n="$2" 'NR == 2 {
    split($1, u, /[ms]/); split($2, s, /[ms]/)
    if (n > 0) printf "%.1f", ((u[1] * 60 + u[2]) + (s[1] * 60 + s[2])) * 1e6 / n; else printf "-" }' "$1"
}

# cpu_ticks "PID...": user + system CPU time the processes have used so far, in clock ticks;
# 0 for none
cpu_ticks() {
  local pid ticks=0
  for pid in ${1:-}; do
    ticks=$(( ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
  done
  echo "$ticks"
}

# per_request TICKS REQUESTS: CPU microseconds per request, "-" when not measured
per_request() {
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (t > 0 && n > 0) printf "%.1f", t * 1e6 / hz / n; else printf "-" }'
}

# run_wrk SCENARIO [FRONT_PID [AUTHZ_PID]]: load the front Envoy; with PIDs, also the CPU
# each of them used per request
run_wrk() {
  local name="$1" front="${2:-}" authz="${3:-}" out="$OUT_DIR/wrk-${1//[#+]/_}.txt"
  local rps p50 p99 non2xx sockerr requests front0 authz0 front_us authz_us up0 up_us
  local -a hdr=(-H "Authorization: Bearer ${SLUIS_TOKEN:-none}" -H "Host: $LOAD_HOST")
  local url="http://127.0.0.1:$FRONT_PORT$LOAD_PATH"
  if [[ "$HAVE_CURL" == 1 ]]; then
    local code
    code="$(curl -s -o "$OUT_DIR/smoke-$name.body" -w '%{http_code}' "${hdr[@]}" "$url" || true)"
    log "$name: smoke request $LOAD_PATH -> HTTP $code"
    [[ "$code" == 200 ]] || log "warning: $name: expected 200 (check SLUIS_TOKEN / LOAD_PATH / the policy)"
  fi
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${hdr[@]}" "$url" >/dev/null
  log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION $url"
  front0=$(cpu_ticks "$front"); authz0=$(cpu_ticks "$authz"); up0=$(cpu_ticks "$UPSTREAM_PID")
  ( wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${hdr[@]}" "$url" >"$out"
    times >"$out.times" )
  requests="$(awk '/requests in/ {print $1}' "$out")"
  front_us=$(per_request $(( $(cpu_ticks "$front") - front0 )) "$requests")
  authz_us=$(per_request $(( $(cpu_ticks "$authz") - authz0 )) "$requests")
  up_us=$(per_request $(( $(cpu_ticks "$UPSTREAM_PID") - up0 )) "$requests")
  rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")"
  sockerr="$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")"
  record "$name" wrk "$rps" "$p50" "$p99" "$(( ${non2xx:-0} + ${sockerr:-0} ))" "$authz_us" "$front_us" \
    "$up_us" "$(loadgen_us "$out.times" "$requests")"
}

# run_h2load SCENARIO PORT [AUTHZ_PID]: load a gRPC ext_authz server directly
run_h2load() {
  local name="$1" port="$2" authz="${3:-}" authz0 authz_us
  local out="$OUT_DIR/h2load-${1//[#+]/_}.txt" lat="$OUT_DIR/h2load-${1//[#+]/_}.latency.log"
  local url="http://127.0.0.1:$port/envoy.service.auth.v3.Authorization/Check"
  local -a hdr=(-H 'content-type: application/grpc' -H 'te: trailers')
  if [[ "$HAVE_CURL" == 1 ]]; then
    # one call first, decoded, so a deny-path benchmark is not mistaken for an allow-path one
    if curl -s --http2-prior-knowledge "${hdr[@]}" --data-binary "@$CHECK_FILE" \
         -o "$OUT_DIR/smoke-$name.bin" "$url"; then
      log "$name: smoke Check -> $(python3 scripts/gen-check-request.py --decode-response "$OUT_DIR/smoke-$name.bin")"
    else
      log "warning: $name: smoke Check call failed"
    fi
  fi
  log "$name: h2load -n $H2LOAD_N -c $H2LOAD_C -m $H2LOAD_M -t $H2LOAD_T $url"
  authz0=$(cpu_ticks "$authz")
  # `timeout` bounds the run even if the server stalls.
  ( timeout "$H2LOAD_MAX_SECONDS" h2load -n "$H2LOAD_N" -c "$H2LOAD_C" -m "$H2LOAD_M" -t "$H2LOAD_T" \
      --data="$CHECK_FILE" "${hdr[@]}" --log-file="$lat" "$url" >"$out" || exit 1
    times >"$out.times" ) || {
      tail -n 20 "$out" >&2 || true
      die "$name: h2load failed or exceeded ${H2LOAD_MAX_SECONDS}s"
    }
  local rps failed p50 p99
  rps="$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^req\/s/) {gsub(",", "", $i); print $i}}' "$out")"
  failed="$(awk '/^requests:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^(failed|errored|timeout)/) s += $i} END {print s + 0}' "$out")"
  # --log-file columns: start time (us), HTTP status, time to response end (us)
  read -r p50 p99 < <(awk '{print $3}' "$lat" | sort -n | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "nan nan"; exit }
      i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
      printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
    }')
  authz_us=$(per_request $(( $(cpu_ticks "$authz") - authz0 )) "$H2LOAD_N")
  record "$name" h2load "$rps" "$p50" "$p99" "$failed" "$authz_us" - - "$(loadgen_us "$out.times" "$H2LOAD_N")"
}

# ---------------------------------------------------------------- run
log "output: $OUT_DIR"
# On a 2-core box a concurrent build halves every number: say so up front.
LOADAVG="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if awk -v l="$LOADAVG" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: 1-min load average is $LOADAVG before starting: other work (a cargo build?) will skew the numbers"
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(nproc) cores, $(uname -sr)"
  echo "envoy: $("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: //p')"
  echo "wrk: $(wrk -v 2>&1 | head -n1)"
  echo "h2load: $(h2load --version 2>&1 | head -n1)"
  echo "loadavg before start: $LOADAVG"
  echo "check request: $CHECK_FILE ($(stat -c %s "$CHECK_FILE") bytes)"
  echo "settings: DURATION=$DURATION THREADS=$THREADS CONNECTIONS=$CONNECTIONS FRONT_CONCURRENCY=$FRONT_CONCURRENCY UPSTREAM_CONCURRENCY=$UPSTREAM_CONCURRENCY H2LOAD_N=$H2LOAD_N H2LOAD_C=$H2LOAD_C H2LOAD_M=$H2LOAD_M LOAD_PATH=$LOAD_PATH"
} >"$OUT_DIR/env.txt"

[[ -s "$CHECK_FILE" ]] || die "$CHECK_FILE missing: scripts/capture-check-request.sh"

render envoy/bench-upstream.yaml.tmpl "$OUT_DIR/upstream.yaml" "$UPSTREAM_ADMIN" -
render envoy/bench-front-noauthz.yaml.tmpl "$OUT_DIR/front-noauthz.yaml" "$FRONT_ADMIN" -
render envoy/envoy-test.yaml.tmpl "$OUT_DIR/front-noop.yaml" "$FRONT_ADMIN" "$NOOP_PORT"
render envoy/envoy-test.yaml.tmpl "$OUT_DIR/front-sluis.yaml" "$FRONT_ADMIN" "$SLUIS_PORT"
render envoy/bench-front-http.yaml.tmpl "$OUT_DIR/front-http-sluis.yaml" "$FRONT_ADMIN" "$SLUIS_HTTP_PORT"
render envoy/bench-front-jwt-rbac.yaml.tmpl "$OUT_DIR/front-jwt-rbac.yaml" "$FRONT_ADMIN" -

start_envoy upstream "$OUT_DIR/upstream.yaml" "$UPSTREAM_CONCURRENCY" "$UPSTREAM_PORT"
UPSTREAM_PID=$STARTED_PID

# a) Envoy alone
start_envoy front-envoy-only "$OUT_DIR/front-noauthz.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
FRONT_PID=$STARTED_PID
run_wrk envoy-only "$FRONT_PID"
stop "$FRONT_PID"

# Both ext_authz servers run throughout, so that b) and c) can alternate ROUNDS times:
# a drift in the machine's other load then falls on both, not on whichever ran last.
"$NOOP_BIN" "127.0.0.1:$NOOP_PORT" >"$OUT_DIR/noop.log" 2>&1 &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
wait_port "$NOOP_PORT" "$NOOP_PID" noop
if [[ "$SKIP_SLUIS" != "1" ]]; then
  log "starting Sluis: $SLUIS_CMD"
  # exec: the recorded PID is Sluis itself, not a wrapper shell
  bash -c "exec $SLUIS_CMD" >"$OUT_DIR/sluis.log" 2>&1 &
  SLUIS_PID=$!
  PIDS+=("$SLUIS_PID")
  wait_port "$SLUIS_PORT" "$SLUIS_PID" sluis
  if [[ -n "$SLUIS_FLOW" ]]; then
    # The eOverdracht example policy allows only resources of a registered transfer.
    code=$(curl -s -o "$OUT_DIR/flow.json" -w '%{http_code}' -X POST \
      "http://$SLUIS_ADMIN/v1/flows" -H 'content-type: application/json' -d "$SLUIS_FLOW")
    log "registered the load test's flow at $SLUIS_ADMIN -> HTTP $code"
  fi
fi

# b) + c) Envoy with each ext_authz server, alternated
for round in $(seq 1 "$ROUNDS"); do
  suffix=""
  [[ "$ROUNDS" == 1 ]] || suffix="#$round"
  start_envoy front-envoy-noop "$OUT_DIR/front-noop.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
  run_wrk "envoy+noop$suffix" "$STARTED_PID" "$NOOP_PID"
  stop "$STARTED_PID"
  if [[ "$SKIP_SLUIS" != "1" && "$SCENARIOS" == *" grpc "* ]]; then
    start_envoy front-envoy-sluis "$OUT_DIR/front-sluis.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
    run_wrk "envoy+sluis$suffix" "$STARTED_PID" "$SLUIS_PID"
    stop "$STARTED_PID"
  fi
  if [[ "$SKIP_SLUIS" != "1" && "$SCENARIOS" == *" http "* ]]; then
    start_envoy front-envoy-http-sluis "$OUT_DIR/front-http-sluis.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
    run_wrk "envoy-http+sluis$suffix" "$STARTED_PID" "$SLUIS_PID"
    stop "$STARTED_PID"
  fi
  if [[ "$SCENARIOS" == *" jwt "* ]]; then
    start_envoy front-envoy-jwt-rbac "$OUT_DIR/front-jwt-rbac.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
    run_wrk "envoy-jwt-rbac$suffix" "$STARTED_PID"
    stop "$STARTED_PID"
  fi
done

# h) + i) answers judged through ext_proc, alternated: the upstream now answers a
# 100-entry mCSD Bundle (60 of the requester's Organizations, 40 of others).
if [[ "$SKIP_SLUIS" != "1" && "$SCENARIOS" == *" ext_proc "* ]]; then
  python3 - "$OUT_DIR/bundle.json" <<'PY'
import json, sys
ura = "http://fhir.nl/fhir/NamingSystem/ura"
entries = []
for i in range(100):
    owner = "24173480" if i % 5 < 3 else "11111111"
    entries.append({"fullUrl": f"https://directory.example.org/fhir/Organization/o{i}",
                    "resource": {"resourceType": "Organization", "id": f"o{i}", "name": f"Organisation {i}",
                                 "identifier": [{"system": ura, "value": owner}]},
                    "search": {"mode": "match"}})
json.dump({"resourceType": "Bundle", "type": "searchset", "total": 100, "entry": entries}, open(sys.argv[1], "w"))
PY
  sed "s#{{BUNDLE_FILE}}#$OUT_DIR/bundle.json#g" envoy/bench-upstream-bundle.yaml.tmpl \
    >"$OUT_DIR/upstream-bundle.tmpl"
  render "$OUT_DIR/upstream-bundle.tmpl" "$OUT_DIR/upstream-bundle.yaml" "$UPSTREAM_ADMIN" -
  for target in noop sluis; do
    port="$NOOP_PORT"; [[ "$target" == noop ]] || port="$SLUIS_PORT"
    sed "s/{{EXT_PROC_PORT}}/$port/g" envoy/bench-front-ext-proc.yaml.tmpl >"$OUT_DIR/front-extproc-$target.tmpl"
    render "$OUT_DIR/front-extproc-$target.tmpl" "$OUT_DIR/front-extproc-$target.yaml" "$FRONT_ADMIN" "$SLUIS_PORT"
  done
  stop "$UPSTREAM_PID"
  start_envoy upstream-bundle "$OUT_DIR/upstream-bundle.yaml" "$UPSTREAM_CONCURRENCY" "$UPSTREAM_PORT"
  UPSTREAM_PID=$STARTED_PID
  saved_path="$LOAD_PATH"; saved_token="$SLUIS_TOKEN"
  LOAD_PATH="$EXT_PROC_PATH"; SLUIS_TOKEN="$EXT_PROC_TOKEN"
  for round in $(seq 1 "$ROUNDS"); do
    suffix=""
    [[ "$ROUNDS" == 1 ]] || suffix="#$round"
    start_envoy front-envoy-extproc-noop "$OUT_DIR/front-extproc-noop.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
    # The authorization side's CPU: Sluis's Checks and the no-op's ext_proc answers.
    run_wrk "envoy-extproc+noop$suffix" "$STARTED_PID" "$SLUIS_PID $NOOP_PID"
    stop "$STARTED_PID"
    start_envoy front-envoy-extproc-sluis "$OUT_DIR/front-extproc-sluis.yaml" "$FRONT_CONCURRENCY" "$FRONT_PORT"
    run_wrk "envoy-extproc+sluis$suffix" "$STARTED_PID" "$SLUIS_PID"
    stop "$STARTED_PID"
  done
  if [[ "$HAVE_CURL" == 1 ]]; then
    kept="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("entry", [])))' \
      "$OUT_DIR/smoke-envoy-extproc+sluis${suffix}.body" 2>/dev/null || echo "?")"
    log "envoy-extproc+sluis: the client got $kept of the Bundle's 100 entries (60 expected)"
  fi
  LOAD_PATH="$saved_path"; SLUIS_TOKEN="$saved_token"
fi

# d) + e) gRPC straight at each server, alternated
for round in $(seq 1 "$([[ "$SCENARIOS" == *" h2 "* ]] && echo "$ROUNDS" || echo 0)"); do
  suffix=""
  [[ "$ROUNDS" == 1 ]] || suffix="#$round"
  run_h2load "grpc-noop$suffix" "$NOOP_PORT" "$NOOP_PID"
  [[ "$SKIP_SLUIS" == "1" ]] || run_h2load "grpc-sluis$suffix" "$SLUIS_PORT" "$SLUIS_PID"
done
stop "$NOOP_PID"
[[ "$SKIP_SLUIS" == "1" ]] || stop "$SLUIS_PID"

# ---------------------------------------------------------------- report
# Each row against its baseline: envoy+noop against envoy-only, envoy+sluis against the
# envoy+noop of the same round, grpc-sluis against the grpc-noop of the same round.
# req/s as a ratio (1.00 = no cost), p99 as a ratio (the issue's "within 1.2x").
awk -F'\t' '
  function base(n) {
    if (n ~ /^envoy\+noop/) return "envoy-only"
    if (n ~ /^envoy\+sluis/) { sub(/^envoy\+sluis/, "envoy+noop", n); return n }
    if (n ~ /^envoy-http\+sluis/) { sub(/^envoy-http\+sluis/, "envoy+noop", n); return n }
    if (n ~ /^envoy-jwt-rbac/) { sub(/^envoy-jwt-rbac/, "envoy+noop", n); return n }
    if (n ~ /^grpc-sluis/) { sub(/^grpc-sluis/, "grpc-noop", n); return n }
    if (n ~ /^envoy-extproc\+sluis/) { sub(/^envoy-extproc\+sluis/, "envoy-extproc+noop", n); return n }
    return n
  }
  { name[NR] = $1; tool[NR] = $2; rps[NR] = $3; p50[NR] = $4; p99[NR] = $5; err[NR] = $6
    authz[NR] = $7; front[NR] = $8; up[NR] = $9; gen[NR] = $10; row[$1] = NR }
  END {
    printf "\n| scenario | tool | req/s | p50 ms | p99 ms | errors | authz CPU µs/req | front Envoy CPU µs/req | upstream CPU µs/req | load generator CPU µs/req | baseline | req/s ratio | p99 ratio |\n"
    printf "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n"
    for (i = 1; i <= NR; i++) {
      b = row[base(name[i])]
      ratio = (b && rps[b] > 0) ? sprintf("%.2f", rps[i] / rps[b]) : "n/a"
      r99 = (b && p99[b] > 0) ? sprintf("%.2fx", p99[i] / p99[b]) : "n/a"
      printf "| %s | %s | %.0f | %.3f | %.3f | %d | %s | %s | %s | %s | %s | %s | %s |\n", name[i], tool[i], rps[i], p50[i], p99[i], err[i], authz[i], front[i], up[i], gen[i], base(name[i]), ratio, r99
      if (name[i] ~ /^(envoy\+sluis|envoy-http\+sluis|envoy-jwt-rbac|grpc-sluis|envoy-extproc\+sluis)/ && b) {
        kind = name[i]; sub(/#.*/, "", kind); kind = kind " / " base(kind)
        n[kind]++; rr[kind, n[kind]] = rps[i] / rps[b]; pr[kind, n[kind]] = p99[i] / p99[b]
      }
    }
    for (kind in n) {
      printf "\n%s, %d round(s): req/s ratio median %.2f (", kind, n[kind], median(rr, kind, n[kind])
      for (j = 1; j <= n[kind]; j++) printf "%s%.2f", (j > 1 ? " " : ""), rr[kind, j]
      printf "), p99 ratio median %.2fx (", median(pr, kind, n[kind])
      for (j = 1; j <= n[kind]; j++) printf "%s%.2f", (j > 1 ? " " : ""), pr[kind, j]
      printf ")\n"
    }
  }
  function median(a, kind, count,   v, i, j, t) {
    for (i = 1; i <= count; i++) v[i] = a[kind, i]
    for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (count % 2) ? v[(count + 1) / 2] : (v[count / 2] + v[count / 2 + 1]) / 2
  }' "$RESULTS" | tee "$OUT_DIR/results.md"
echo
echo "CPU µs/req: user + system time of each process during the measured run, per request (load generator: wrk or h2load, one thread); errors = non-2xx + socket errors (wrk) or failed/errored/timeout (h2load)"
echo "raw output, configs and logs: $OUT_DIR"
