#!/usr/bin/env bash
# Profile-guided release build of `sluis` (and, for a fair baseline, of the lean no-op):
# build an instrumented binary, run a training load through it, merge the profile, build
# again with it. The profile tells LLVM which code a decision runs, so it lays that code
# out together and inlines along it; BENCHMARKS.md ("Session 19") has what it changes.
#
#   scripts/pgo-build.sh              # target/pgo/bin/sluis
#   scripts/pgo-build.sh sluis noop   # and target/pgo/bin/sluis-noop-authz
#
# Training (train_sluis below) is not the benchmark's request alone. It is a mix of
# what a deployment sees: Envoy gRPC Checks allowed with a cached token, denied for want
# of a flow, without a token and with a forged one; forward-auth; AuthZEN evaluations;
# flow registration and the admin API. Each with fresh tokens and requests made here,
# not the captured CheckRequest in benches/data that the benchmarks send. Then the test
# suites of every example policy, and of your own configs (TRAIN_CONFIGS), through
# `sluis test`.
#
# Two release builds per binary: about 20 minutes for `sluis` on two cores, 24 for both
# with BOLT=1. The profile belongs to this source: build again after changing the code.
#
# Needs llvm-profdata of rustc's LLVM major version (and llvm-bolt for BOLT=1): rustup's
# llvm-tools component, or Debian's llvm-N and bolt-N (scripts/install-pgo-tools.sh);
# h2load and curl (scripts/install-load-tools.sh). Uses ports 9190-9192 and 9292.
# Environment: OUT [target/pgo]; N [40000] the size of the training load's largest part;
#   BOLT [0]: 1 also lays each binary out with BOLT, trained the same way;
#   TRAIN_CONFIGS [unset]: space-separated configs whose policy test suites (`sluis test
#     --config`) join the training: your own policies;
#   GEN_BIN [unset]: a directory holding instrumented binaries already built (skips that
#   build);
#   SAVE [0]: 1 also makes `sluis`'s profile the one the image ships (pgo/sluis.profdata
#     and its record, read by scripts/release-build.sh): a release does this, on the
#     default training (TRAIN_CONFIGS unset), then commits pgo/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT=${OUT:-target/pgo}; N=${N:-40000}
source scripts/pgo-common.sh
TARGET=$PGO_TARGET
LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
WHAT=("$@"); ((${#WHAT[@]})) || WHAT=(sluis)
for what in "${WHAT[@]}"; do
  [[ $what == sluis || $what == noop ]] || { echo "unknown binary '$what' (sluis, noop)" >&2; exit 2; }
done

log() { printf '== %s\n' "$*" >&2; }
source scripts/load-common.sh
PIDS=(); CONFIGS=()
# shellcheck disable=SC2154 # p is the trap's own loop variable
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "${CONFIGS[@]}"' EXIT

profdata() {
  local tools
  tools="$(rustc --print sysroot)/lib/rustlib/$TARGET/bin"
  for candidate in "$tools/llvm-profdata" "llvm-profdata-$LLVM_MAJOR" "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata"; do
    command -v "$candidate" >/dev/null 2>&1 && { echo "$candidate"; return; }
  done
  echo "no llvm-profdata for LLVM $LLVM_MAJOR (rustc's): run scripts/install-pgo-tools.sh" >&2
  return 1
}
PROFDATA=$(profdata)
for tool in h2load curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "the training load needs $tool: run scripts/install-load-tools.sh" >&2; exit 1; }
done
# BOLT=1: also lay the binary out with BOLT (llvm-bolt of the same LLVM, Debian's bolt-N),
# which needs the relocations kept at link time.
USE_RUSTFLAGS=""
if [[ "${BOLT:-0}" == 1 ]]; then
  BOLT_BIN=$(command -v "llvm-bolt-$LLVM_MAJOR" || command -v llvm-bolt) ||
    { echo "no llvm-bolt: run scripts/install-pgo-tools.sh" >&2; exit 1; }
  MERGE_FDATA=$(command -v "merge-fdata-$LLVM_MAJOR" || command -v merge-fdata)
  USE_RUSTFLAGS="-Clink-arg=-Wl,--emit-relocs"
fi
mkdir -p "$OUT/bin"
OUT="$(cd "$OUT" && pwd)"

# The binary (and its package: each is named after it) of sluis or noop.
bin_name() { [[ $1 == sluis ]] && echo sluis || echo sluis-noop-authz; }

build() { # what target-dir rustflags
  pgo_build "$(bin_name "$1")" "$2" "$3"
}

# SAVE=1: the profile becomes the committed one, with its record: what made it and from
# what source (scripts/release-build.sh checks both before using it).
save_profile() { # profile
  mkdir -p "$(dirname "$PGO_PROFILE")"
  gzip -9 -n -c "$1" >"$PGO_PROFILE"
  {
    echo "# The profile beside this file: made by scripts/pgo-build.sh (SAVE=1), read by"
    echo "# scripts/release-build.sh. Do not edit: make it again."
    echo "rustc=$(rustc -V)"
    echo "version=$(pgo_version)"
    echo "commit=$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
    echo "source=$(pgo_source_digest)"
    echo "sha256=$(sha256sum "$PGO_PROFILE" | cut -d' ' -f1)"
    echo "made=$(date -u +%Y-%m-%d)"
    echo "training=N=$N${TRAIN_CONFIGS:+ TRAIN_CONFIGS=$TRAIN_CONFIGS}"
  } >"$PGO_META"
  log "saved as $PGO_PROFILE ($(du -h "$PGO_PROFILE" | cut -f1)): commit it with $PGO_META"
}

grpc() { # count request-file port
  h2load -n "$1" -t1 -c2 -m16 --data="$2" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$3/envoy.service.auth.v3.Authorization/Check" | grep -E '^requests:' >&2
}

train_sluis() { # instrumented-binary work-dir
  local sluis=$1 work=$2 config token pid path=/eoverdracht/fhir/Patient/123
  config=$(private_example_config "$work"); CONFIGS+=("$config")
  token="$(load_flow_token "$sluis")"
  "$sluis" serve --config "$config" >"$work/sluis.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_listening 9191
  for _ in $(seq 50); do curl -sf localhost:9190/readyz >/dev/null && break; sleep 0.2; done
  [[ "$(register_load_flow 127.0.0.1:9190)" == 20[01] ]] || { echo "cannot register the flow" >&2; return 1; }
  local gen=scripts/gen-check-request.py
  python3 $gen -o "$work/allow.bin" --path "$path" --host fhir.example.org --token "$token" >/dev/null
  python3 $gen -o "$work/no-flow.bin" --path /eoverdracht/fhir/Patient/456 --host fhir.example.org --token "$token" >/dev/null
  python3 $gen -o "$work/no-token.bin" --path "$path" --host fhir.example.org >/dev/null
  python3 $gen -o "$work/forged.bin" --path "$path" --host fhir.example.org --token "${token%?????}AAAAA" >/dev/null
  python3 $gen -o "$work/post.bin" --method POST --path /eoverdracht/fhir/Task --host fhir.example.org \
    --token "$token" --header 'content-type:application/fhir+json' >/dev/null
  log "training: gRPC Checks"
  grpc "$N" "$work/allow.bin" 9191
  grpc $((N / 4)) "$work/no-flow.bin" 9191
  grpc $((N / 4)) "$work/no-token.bin" 9191
  grpc $((N / 8)) "$work/forged.bin" 9191
  grpc $((N / 8)) "$work/post.bin" 9191
  log "training: forward-auth and AuthZEN"
  h2load -n $((N / 4)) -t1 -c2 --h1 -H "authorization: Bearer $token" \
    "http://127.0.0.1:9192/decisions$path" | grep -E '^requests:' >&2
  printf '%s' "$AUTHZEN_EVALUATION" >"$work/evaluation.json"
  h2load -n $((N / 8)) -t1 -c2 --h1 --data="$work/evaluation.json" -H 'content-type: application/json' \
    http://127.0.0.1:9192/access/v1/evaluation | grep -E '^requests:' >&2
  log "training: admin API"
  for i in $(seq 20); do
    curl -s -o /dev/null -X POST http://127.0.0.1:9190/v1/flows -H 'content-type: application/json' \
      -d "{\"id\": \"train-$i\", \"purpose\": \"eOverdracht\", \"actor\": \"did:web:other-$i.example.org\",
           \"scopes\": [\"eOverdracht-receiver\"], \"resources\": [{\"path\": \"Patient/$i\", \"operations\": [\"read\"]}]}"
    curl -s -o /dev/null http://127.0.0.1:9190/metrics
    curl -s -o /dev/null -X DELETE "http://127.0.0.1:9190/v1/flows/train-$i"
  done
  # A clean exit writes the profile; a killed process writes none.
  kill -TERM "$pid"; wait "$pid" || true
  # Every example policy, and the operator's (TRAIN_CONFIGS), through `sluis test`: their
  # rules' code then counts as run, not as cold code LLVM would optimise for size.
  log "training: policy test suites"
  local suite
  for suite in examples/config.yaml examples/cookbook/config.yaml examples/nuts/config.yaml ${TRAIN_CONFIGS:-}; do
    for _ in $(seq 10); do
      "$sluis" test --config "$suite" >/dev/null ||
        { echo "warning: the test suites of $suite fail: trained on them as they are" >&2; break; }
    done
  done
}

train_noop() { # instrumented-binary work-dir
  local noop=$1 work=$2 pid
  "$noop" 127.0.0.1:9292 >"$work/noop.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_listening 9292
  python3 scripts/gen-check-request.py -o "$work/check.bin" --path /eoverdracht/fhir/Patient/123 \
    --host fhir.example.org --token not-checked >/dev/null
  log "training: gRPC Checks at the no-op"
  grpc $((N * 2)) "$work/check.bin" 9292
  kill -TERM "$pid"; wait "$pid" || true
}

# The PGO binary, laid out again by BOLT from a second training run: functions in the
# order a decision calls them, each function's cold blocks moved out of its hot ones.
bolt() { # what name
  local what=$1 name=$2 fdata="$OUT/profile/$1-bolt" work
  rm -rf "$fdata"; mkdir -p "$fdata"
  "$BOLT_BIN" "$OUT/bin/$name" -o "$OUT/bolt-$name.inst" -instrument -instrumentation-file-append-pid \
    -instrumentation-file="$fdata/$what.fdata" >"$OUT/bolt-$what.log" 2>&1
  work=$(mktemp -d)
  "train_$what" "$OUT/bolt-$name.inst" "$work"
  rm -rf "$work" "$OUT/bolt-$name.inst"
  "$MERGE_FDATA" "$fdata"/*.fdata* >"$OUT/profile/$what.fdata" 2>>"$OUT/bolt-$what.log"
  "$BOLT_BIN" "$OUT/bin/$name" -o "$OUT/bin/$name.bolt" -data="$OUT/profile/$what.fdata" \
    -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
    -split-eh -icf=all -use-gnu-stack -update-debug-sections -dyno-stats >>"$OUT/bolt-$what.log" 2>&1
  mv "$OUT/bin/$name.bolt" "$OUT/bin/$name"
}

main() {
  for what in "${WHAT[@]}"; do
    name=$(bin_name "$what")
    raw="$OUT/profile/$what"; rm -rf "$raw"; mkdir -p "$raw"
    if [[ -n "${GEN_BIN:-}" ]]; then
      instrumented="$GEN_BIN/$name"
    else
      log "$what: instrumented build"
      build "$what" "$OUT/gen-$what" "-Cprofile-generate=$raw"
      instrumented="$OUT/gen-$what/$TARGET/release/$name"
    fi
    log "$what: training"
    work=$(mktemp -d)
    LLVM_PROFILE_FILE="$raw/$what-%p-%m.profraw" "train_$what" "$instrumented" "$work"
    rm -rf "$work"
    ls "$raw"/*.profraw >/dev/null 2>&1 || { echo "$what wrote no profile" >&2; exit 1; }
    "$PROFDATA" merge -o "$OUT/profile/$what.profdata" "$raw"
    profile=$(pgo_named_by_content "$OUT/profile/$what.profdata" "$what")
    log "$what: optimised build with the profile"
    if [[ "${SAVE:-0}" == 1 && $what == sluis ]]; then save_profile "$profile"; fi
    build "$what" "$OUT/use-$what" "$(pgo_use_flags "$profile") $USE_RUSTFLAGS"
    cp "$OUT/use-$what/$TARGET/release/$name" "$OUT/bin/$name"
    if [[ "${BOLT:-0}" == 1 ]]; then
      log "$what: BOLT"
      bolt "$what" "$name"
    fi
    log "$what: $OUT/bin/$name"
  done
}

main
