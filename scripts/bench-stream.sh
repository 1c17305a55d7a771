#!/usr/bin/env bash
# Stream benchmarks on this machine: starts a Kafka-protocol broker (tansu, in memory) and a
# redis-server (AOF on, fsync every second) on free ports, then `recsys bench-stream` prints
# consumer throughput next to the consume-and-commit-only ceiling (and their ratio), Redis memory
# per user with a 50-item sequence, and freshness (event logged -> recommendations cached) with
# pushing on at a fixed rate.
#
#   scripts/bench-stream.sh [--events 2000000] [--rounds 5] [--freshness-rate 1000] [--freshness-seconds 30]
#
# RECSYS_BIN=path measures that `recsys` binary instead of building this checkout's (for A/B runs
# of two builds, alternated, on this machine whose speed drifts).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
log() { echo "[bench-stream] $*" >&2; }

"$REPO_ROOT/scripts/setup.sh" --tests
recsys="$(release_binary)"

# Freshness pushes real recommendations: it needs the ml-100k bench bundle and index that
# scripts/bench-api.sh prepares (made here if missing).
bench_dir="$RECSYS_CACHE_DIR/bench/ml-100k"
if [[ ! -s "$bench_dir/bundles/CURRENT" || ! -d "$bench_dir/index" ]]; then
  mkdir -p "$bench_dir/datasets"
  ln -sfn "$(realpath "$RECSYS_DATA_DIR/datasets/ml-100k")" "$bench_dir/datasets/ml-100k"
  "$recsys" train --data-dir "$bench_dir" --dataset ml-100k
  "$recsys" index --data-dir "$bench_dir" --if-missing
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
kafka_port=$(free_port)
redis_port=$(free_port)
work=$(mktemp -d)
cleanup() {
  kill "${tansu_pid:-}" "${redis_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
tansu broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
tansu_pid=$!
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for port in "$kafka_port" "$redis_port"; do
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
for topic in events events-freshness; do
  tansu topic create "$topic" --partitions 4 --broker "tcp://127.0.0.1:$kafka_port" >/dev/null
done

export RECSYS__EVENTS__URL="kafka://127.0.0.1:$kafka_port" RECSYS__EVENTS__TOPIC=events
export RECSYS__STATE__URL="redis://127.0.0.1:$redis_port/" RECSYS__STATE__KEY_PREFIX=bench
export RUST_LOG="${RUST_LOG:-warn}"
"$recsys" bench-stream --data-dir "$bench_dir" "$@"
