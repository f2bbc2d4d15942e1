# Sluis container image: a Rust build stage, then a slim Debian runtime with only the
# binary, the example config and the CA certificates, running as a non-root user
# (UID/GID 65532).
#
#   docker build --build-arg SLUIS_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t sluis:dev .
#   docker run --rm -p 9190-9192:9190-9192 -v sluis-flows:/var/lib/sluis sluis:dev
#
# The default command serves /etc/sluis/config/config.yaml. The image ships one to try it
# out (examples/container/config.yaml: the example policies and development key, listeners
# on 0.0.0.0, flows in the volume /var/lib/sluis, an admin API open to anyone who reaches
# it). For anything else replace it: the Helm chart mounts its own, or bind-mount a
# directory holding your config.yaml:  -v "$PWD/my-sluis:/etc/sluis/config:ro"
# Its listeners must bind 0.0.0.0 to be reachable from outside the container, and a SQLite
# flow store must be in a directory the image's user (65532) may write, such as
# /var/lib/sluis.
#
# Build arguments (the defaults pull the usual images from Docker Hub):
#   RUST_IMAGE     the build stage: a Rust toolchain on the runtime's Debian release.
#   RUNTIME_IMAGE  the runtime: Debian bookworm or newer; it needs no shell.
#   SLUIS_PREBUILT empty: build the release binary in the build stage. A path in the
#                  build context: take that binary instead, built for the runtime's Debian
#                  release (glibc). scripts/container-test.sh builds the image this way
#                  from a locally made Debian root, with no registry and no second build.
#   SLUIS_PGO      auto: the binary built here is optimised with the committed profile
#                  pgo/sluis.profdata.gz (scripts/release-build.sh) when RUST_IMAGE's rustc
#                  is the one that made it, plain otherwise; 1: that or fail; 0: plain.
#
# RUST_IMAGE names an exact rustc: a profile serves only the compiler that made it, and
# `scripts/release-build.sh --check` (in CI) fails when this default and the profile's
# record disagree.

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
LABEL org.opencontainers.image.title=sluis
# What `sluis version` names as its commit: the build context has no .git.
ARG SLUIS_GIT_COMMIT=unknown
ENV SLUIS_GIT_COMMIT=${SLUIS_GIT_COMMIT}
ARG SLUIS_PREBUILT=
ARG SLUIS_PGO=auto
WORKDIR /src
# Only what .dockerignore lets through: the workspace (fuzz/ is not part of it), the
# release build's script and profile, the container's example config and what it reads,
# and a prebuilt binary if there is one.
COPY . .
RUN set -eu; \
    mkdir -p /out/var/lib/sluis /out/usr/share/sluis/examples/keys /out/etc/sluis/config \
             /out/etc/ssl/certs; \
    if [ -n "${SLUIS_PREBUILT}" ]; then \
        cp "${SLUIS_PREBUILT}" /out/sluis; \
    else \
        SLUIS_PGO="${SLUIS_PGO}" scripts/release-build.sh /out/sluis; \
    fi; \
    chmod 0755 /out/sluis; \
    cp examples/config.yaml /out/usr/share/sluis/examples/config.yaml; \
    # Only the public development key set the example config reads, never a private key.
    cp examples/keys/dev-jwks.json /out/usr/share/sluis/examples/keys/dev-jwks.json; \
    cp -r policy /out/usr/share/sluis/policy; \
    cp examples/container/config.yaml /out/etc/sluis/config/config.yaml; \
    # The runtime needs no package manager: the CA bundle (JWKS and introspection over
    # HTTPS) comes from here.
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

# The runtime stage runs nothing at build time, so any base with glibc will do.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title=sluis \
      org.opencontainers.image.licenses=Apache-2.0
COPY --from=build /out/sluis /usr/local/bin/sluis
COPY --from=build /out/usr/share/sluis /usr/share/sluis
COPY --from=build /out/etc/ /etc/
# The SQLite flow store's home (a volume in Kubernetes; the root filesystem can be read-only).
COPY --from=build --chown=65532:65532 /out/var/lib/sluis /var/lib/sluis
VOLUME /var/lib/sluis
USER 65532:65532
# gRPC ext_authz, HTTP doors, admin.
EXPOSE 9191 9192 9190
ENTRYPOINT ["/usr/local/bin/sluis"]
CMD ["serve", "--config", "/etc/sluis/config/config.yaml"]
