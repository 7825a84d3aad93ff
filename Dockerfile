# syntax=docker/dockerfile:1
# Portico's image: built in the Rust image, run from distroless (glibc, CA certificates, no
# shell, no package manager, user 65532). `docker build -t portico:0.1.0 .`
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# setcap, to let the non-root binary bind ports 80 and 443.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares [[bench]] targets in benches/: copied so the manifest's targets exist;
# only the binary is built.
COPY benches ./benches
# The registry and target caches survive between builds (BuildKit); the binary is copied out
# of the cache mount before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portico \
 && cp target/release/portico /portico \
 && strip /portico \
 && setcap cap_net_bind_service=+ep /portico

FROM gcr.io/distroless/cc-debian12:nonroot
# BuildKit's COPY keeps the security.capability extended attribute set above.
COPY --from=build /portico /usr/local/bin/portico
USER 65532:65532
EXPOSE 80 443 10254
ENTRYPOINT ["/usr/local/bin/portico"]
