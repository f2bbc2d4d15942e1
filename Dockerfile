# syntax=docker/dockerfile:1
# Sluis container image: a Rust build stage, then a distroless runtime with only the binary
# (glibc, CA certificates, no shell, no package manager), running as a non-root user.
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

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# What `sluis version` names as its commit: the build context has no .git.
ARG SLUIS_GIT_COMMIT=unknown
ENV SLUIS_GIT_COMMIT=${SLUIS_GIT_COMMIT}
WORKDIR /src
# The workspace: the server (src/) and its crates (crates/). fuzz/ is not part of it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY crates crates
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin sluis \
 && mkdir -p /out/var/lib/sluis /out/usr/share/sluis/examples \
 && cp target/release/sluis /out/sluis
COPY examples/config.yaml /out/usr/share/sluis/examples/config.yaml
# Only the public development key set the example config reads, never a private key.
COPY examples/keys/dev-jwks.json /out/usr/share/sluis/examples/keys/dev-jwks.json
COPY policy /out/usr/share/sluis/policy
COPY examples/container/config.yaml /out/etc/sluis/config/config.yaml

# cc: glibc and libgcc, which the binary links; `nonroot`: UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluis /usr/local/bin/sluis
COPY --from=build /out/usr/share/sluis /usr/share/sluis
COPY --from=build /out/etc/sluis /etc/sluis
# The SQLite flow store's home (a volume in Kubernetes; the root filesystem can be read-only).
COPY --from=build --chown=65532:65532 /out/var/lib/sluis /var/lib/sluis
VOLUME /var/lib/sluis
USER 65532:65532
# gRPC ext_authz, HTTP doors, admin.
EXPOSE 9191 9192 9190
ENTRYPOINT ["/usr/local/bin/sluis"]
CMD ["serve", "--config", "/etc/sluis/config/config.yaml"]
