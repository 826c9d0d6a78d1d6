# mlpd container image.
#
#   Full image (builds the binary; needs a Rust image and crates.io):
#     docker build -t mlpd .            # or: podman build -t mlpd .
#   Runtime stage around a binary built on the host (what CI does, with no builder image):
#     cargo build --release && podman build --target prebuilt -t mlpd .
#
#   docker run -p 8080:8080 -v mlpd-data:/var/lib/mlpd/data mlpd
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, in their own cached layer: build a stub crate with the real manifest.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/train.rs \
    && cargo build --release --locked \
    && rm -rf src benches
COPY src src
COPY benches benches
# The sample datasets the binary bundles (`GET /v1/samples`).
COPY datasets/iris.csv datasets/digits.csv datasets/
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin mlpd

FROM ${BASE} AS runtime-base
RUN useradd --uid 10001 --user-group --home-dir /var/lib/mlpd --create-home mlpd \
    && mkdir -p /var/lib/mlpd/data && chown mlpd:mlpd /var/lib/mlpd/data
ENV MLPD_BIND=0.0.0.0:8080 \
    MLPD_DATA_DIR=/var/lib/mlpd/data \
    MLPD_LOG_FORMAT=json
WORKDIR /var/lib/mlpd
VOLUME ["/var/lib/mlpd/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["mlpd", "healthcheck"]
USER 10001:10001
ENTRYPOINT ["mlpd"]

# The runtime stage around a binary built on the host.
FROM runtime-base AS prebuilt
ARG BIN=target/release/mlpd
COPY --chmod=755 ${BIN} /usr/local/bin/mlpd

# The default: the runtime stage around the binary built above.
FROM runtime-base AS runtime
COPY --from=build /src/target/release/mlpd /usr/local/bin/mlpd
