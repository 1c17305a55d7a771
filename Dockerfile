# Two images from one file:
#   docker build --target serving -t recsys-serving .   the API and the consumer: a `recsys` built
#       without the in-process model, no libtorch, no Python; it calls `recsys model-server`
#       (model.url) for query vectors.
#   docker build --target full -t recsys .              everything, with libtorch: training,
#       evaluation, the model server, the compose `init` job (also the default target).
# compose.stream.yml builds each service from the target it needs.

FROM rust:1.95-bookworm AS build-serving
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p recsys-cli --no-default-features \
    && cp target/release/recsys /usr/local/bin/recsys \
    && ! ldd /usr/local/bin/recsys | grep -q torch

FROM rust:1.95-bookworm AS build-full
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
# torch==2.13.0 is the libtorch tch 0.26 links; the binary finds it through an rpath into this venv.
ENV RECSYS_VENV=/opt/venv
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0 numpy safetensors
WORKDIR /src
COPY . .
RUN bash -c 'source scripts/env.sh && cargo build --release --locked -p recsys-cli' \
    && cp "${CARGO_TARGET_DIR:-/src/target}/release/recsys" /usr/local/bin/recsys

FROM debian:bookworm-slim AS serving
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-serving /usr/local/bin/recsys /usr/local/bin/recsys
COPY scripts /app/scripts
ENV RECSYS_DATA_DIR=/data
WORKDIR /app
ENTRYPOINT ["recsys"]

FROM debian:bookworm-slim AS full
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-full /opt/venv /opt/venv
COPY --from=build-full /usr/local/bin/recsys /usr/local/bin/recsys
COPY scripts /app/scripts
ENV RECSYS_VENV=/opt/venv RECSYS_DATA_DIR=/data
WORKDIR /app
ENTRYPOINT ["recsys"]
