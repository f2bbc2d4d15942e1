# syntax=docker/dockerfile:1
# Sluis container image: a Rust build stage, then a distroless runtime with only the binary
# (glibc, CA certificates, no shell, no package manager), running as a non-root user.
#
#   docker build -t sluis:dev .
#   docker run --rm -p 9191:9191 -p 9190:9190 -v "$PWD/deploy:/etc/sluis/config:ro" sluis:dev
#
# The default command serves /etc/sluis/config/config.yaml, which the Helm chart (or a
# bind mount) supplies; its listeners must bind 0.0.0.0 to be reachable from outside the
# container. The example config and policies are in the image, under /usr/share/sluis, to
# try it out:  docker run --rm sluis:dev validate --config /usr/share/sluis/examples/config.yaml

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
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

# cc: glibc and libgcc, which the binary links; `nonroot`: UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluis /usr/local/bin/sluis
COPY --from=build /out/usr/share/sluis /usr/share/sluis
# The SQLite flow store's home (a volume in Kubernetes; the root filesystem can be read-only).
COPY --from=build --chown=65532:65532 /out/var/lib/sluis /var/lib/sluis
USER 65532:65532
# gRPC ext_authz, HTTP doors, admin.
EXPOSE 9191 9192 9190
ENTRYPOINT ["/usr/local/bin/sluis"]
CMD ["serve", "--config", "/etc/sluis/config/config.yaml"]
