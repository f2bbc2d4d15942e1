#!/usr/bin/env bash
# Builds the container image from the Dockerfile and runs it as a user would: the image's
# own example config serves, as the image's non-root user (65532), with the flow store on
# a volume. Checks /readyz, registers a flow (a write to the store), decides one allowed
# and one denied request, and that a flow store the user cannot write stops the start
# with an error naming the file. Exits non-zero on any mismatch.
#
# No registry is needed: the base image is a minimal Debian bookworm root made here with
# mmdebstrap (cached in the git-ignored target/container/), used for both stages, and the
# binary is the one cargo already built (SLUIS_BINARY, else target/debug/sluis after a
# `cargo build`), passed in with the build argument SLUIS_PREBUILT rather than compiled
# again inside the image. It must be built on Debian bookworm or a system with the same or
# an older glibc.
#
# Installs Docker and mmdebstrap from Debian and starts dockerd when they are missing
# (scripts/install-container-tools.sh; root and apt). With SLUIS_SKIP_SYSTEM_TOOLS=1 it
# installs nothing and skips, with a message, when no Docker daemon answers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$(date +%s)
say() { printf 'container-test (%ss): %s\n' "$(( $(date +%s) - start ))" "$*"; }

if [ "${SLUIS_SKIP_SYSTEM_TOOLS:-}" = 1 ]; then
  if ! docker info >/dev/null 2>&1; then
    echo "container-test: SKIPPED (SLUIS_SKIP_SYSTEM_TOOLS=1 and no Docker daemon answers)"
    exit 0
  fi
else
  scripts/install-container-tools.sh
fi
# The classic builder: it uses the local base image as is (Debian's docker.io has no
# BuildKit plugin).
export DOCKER_BUILDKIT=0

cache=target/container
base_tar=$cache/debian-bookworm-runtime.tar
base_image=sluis-base:bookworm
run_id=sluis-container-test-$$
tag=$run_id:latest
tmp=$(mktemp -d)
cleanup() {
  docker rm -f "$run_id" "$run_id-readonly" >/dev/null 2>&1 || true
  docker volume rm "$run_id" >/dev/null 2>&1 || true
  docker rmi "$tag" >/dev/null 2>&1 || true
  # The build stage's intermediate images of this run.
  docker image prune -f --filter "label=org.opencontainers.image.title=sluis" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "container-test: FAILED: $1" >&2
  if docker inspect "$run_id" >/dev/null 2>&1; then
    echo "--- the container's log ---" >&2
    docker logs --tail 30 "$run_id" >&2 || true
  fi
  exit 1
}

# The base: glibc, libgcc and the CA certificates, nothing else (no apt, no docs).
mkdir -p "$cache"
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  if [ ! -f "$base_tar" ] && ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "container-test: SKIPPED (SLUIS_SKIP_SYSTEM_TOOLS=1 and no mmdebstrap to make the base image)"
    exit 0
  fi
  # A directory left by an earlier run (mmdebstrap names the format by the file's
  # extension, and `.partial` has none it knows) is not a base.
  if [ -e "$base_tar" ] && [ ! -f "$base_tar" ]; then rm -rf "$base_tar"; fi
  if [ ! -s "$base_tar" ]; then
    say "making the Debian bookworm base with mmdebstrap (once; kept in $base_tar)"
    rm -rf "$base_tar.partial"
    mmdebstrap --quiet --format=tar --variant=essential --include=ca-certificates,libgcc-s1 \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      bookworm "$base_tar.partial"
    mv "$base_tar.partial" "$base_tar"
  fi
  say "importing $base_tar as $base_image"
  docker import "$base_tar" "$base_image" >/dev/null
fi

binary=${SLUIS_BINARY:-}
if [ -z "$binary" ]; then
  cargo build --locked --quiet --bin sluis
  binary=${CARGO_TARGET_DIR:-target}/debug/sluis
fi
[ -x "$binary" ] || fail "no binary at $binary"
# Without debug information and symbols: a third of the size, so a quicker build context
# and layer.
objcopy --strip-all "$binary" "$cache/sluis" 2>/dev/null || cp "$binary" "$cache/sluis"

say "building the image $tag from $binary"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
docker build --quiet --force-rm \
  --build-arg RUST_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
  --build-arg SLUIS_PREBUILT="$cache/sluis" --build-arg SLUIS_GIT_COMMIT="$commit" \
  -t "$tag" . >/dev/null 2>"$tmp/build.log" || { cat "$tmp/build.log" >&2; fail "docker build failed"; }
say "built"

# A flow store its user cannot write (a host directory owned by root): the start stops
# with an error naming the file.
readonly_dir=$tmp/flows-readonly
mkdir -m 0755 "$readonly_dir"
status=0
timeout 60 docker run --name "$run_id-readonly" -v "$readonly_dir:/var/lib/sluis" "$tag" \
  >"$tmp/readonly.log" 2>&1 || status=$?
[ "$status" != 0 ] || fail "Sluis started with a flow store it cannot write"
[ "$status" != 124 ] || fail "Sluis neither served nor stopped with an unwritable flow store"
grep -q 'cannot open the flow store `/var/lib/sluis/flows.db`' "$tmp/readonly.log" ||
  { cat "$tmp/readonly.log" >&2; fail "the error does not name the flow store's file"; }
say "ok: an unwritable flow store stops the start, naming /var/lib/sluis/flows.db"

# The image as shipped: its own config, a named volume (which takes the image's
# ownership of /var/lib/sluis), the ports published on loopback at free host ports.
docker run -d --name "$run_id" -v "$run_id:/var/lib/sluis" \
  -p 127.0.0.1::9190 -p 127.0.0.1::9192 "$tag" >/dev/null || fail "docker run failed"
admin=http://$(docker port "$run_id" 9190/tcp | head -n 1)
http=http://$(docker port "$run_id" 9192/tcp | head -n 1)
ready=no
for _ in $(seq 1 300); do
  if curl -sf -o /dev/null "$admin/readyz"; then ready=yes; break; fi
  [ "$(docker inspect -f '{{.State.Running}}' "$run_id")" = true ] || fail "the container stopped"
  sleep 0.1
done
[ "$ready" = yes ] || fail "$admin/readyz did not answer 200 within 30 s"
say "ok: /readyz answers 200 at $admin"

uid=$(docker exec "$run_id" id -u)
[ "$uid" = 65532 ] || fail "Sluis runs as UID $uid, not 65532"

expect() { # status what curl-args...
  local expected=$1 what=$2 got; shift 2
  got=$(curl -s -o "$tmp/body" -w '%{http_code}' "$@") || fail "curl failed: $what"
  [ "$got" = "$expected" ] || { cat "$tmp/body" >&2; fail "$what: HTTP $got, expected $expected"; }
  say "ok: $what: HTTP $got"
}
expect 201 "a flow registered (written to the store on the volume as UID 65532)" \
  -X POST "$admin/v1/flows" -H 'content-type: application/json' -d '{
  "id": "transfer-1", "purpose": "eOverdracht", "actor": "did:web:receiver.example.org",
  "scopes": ["eOverdracht-receiver"],
  "resources": [{"path": "Patient/123", "operations": ["read"]}]}'
token=$("$binary" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
  "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
  "sub": "did:web:receiver.example.org", "client_id": "did:web:receiver.example.org",
  "scope": "eOverdracht-receiver"}')
expect 200 "allowed: the flow's patient" \
  -H "Authorization: Bearer $token" "$http/decisions/eoverdracht/fhir/Patient/123"
expect 403 "denied: another patient" \
  -H "Authorization: Bearer $token" "$http/decisions/eoverdracht/fhir/Patient/456"
docker logs "$run_id" 2>&1 | grep -q 'request denied' || fail "no denial in the container's log"
docker exec "$run_id" test -s /var/lib/sluis/flows.db || fail "no flow store file on the volume"

say "ok: the image serves its own config as UID 65532 with a writable flow store"
