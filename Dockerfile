# The `recsys` binary (api, consumer, model server, init jobs) with the libtorch it links.
# Build: docker build -t recsys .   (compose.stream.yml builds it for every recsys service)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
# torch==2.13.0 is the libtorch tch 0.26 links; the binary finds it through an rpath into this venv.
ENV RECSYS_VENV=/opt/venv
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0 numpy safetensors
WORKDIR /src
COPY . .
RUN bash -c 'source scripts/env.sh && cargo build --release --locked -p recsys-cli' \
    && cp "${CARGO_TARGET_DIR:-/src/target}/release/recsys" /usr/local/bin/recsys

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /usr/local/bin/recsys /usr/local/bin/recsys
COPY scripts /app/scripts
ENV RECSYS_VENV=/opt/venv RECSYS_DATA_DIR=/data
WORKDIR /app
ENTRYPOINT ["recsys"]
