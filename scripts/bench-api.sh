#!/usr/bin/env bash
# Load benchmark of the release API: open-loop load at a fixed rate (oha, latency-corrected) with
# realistic bodies (a stored user + 1-5 of their next items), then GET /healthz at the same rate
# as the floor. Prints p50/p99/p99.9, throughput, errors, and retrieve p99 / floor p99.
#
#   scripts/bench-api.sh [--store embedded|redis] [--dataset ml-100k|synthetic-100k|synthetic-1m]
#                        [--rate 1000] [--duration 30s] [--after-idle MINUTES | --fresh]
#
# --after-idle: after the warm-up the server idles that long, then the first 100 requests (one
# at a time) are timed instead: what a user meets after a quiet spell, on a machine that may page
# out idle memory (RECSYS__LOCK_MEMORY=false shows it without the lock).
# --fresh: a server that has only seen 5 s at 1,000 req/s, then --rate for --duration, reported
# second by second: whether the first seconds at full load stall (threads made under the burst,
# pages touched for the first time).
#
# Everything it makes (bench data dirs, bundles, indexes, the oha binary) lives under
# $RECSYS_CACHE_DIR, apart from the main command's data dir. RECSYS_BIN=path measures that
# `recsys` binary instead of building this checkout's (for A/B runs of two builds).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

store=embedded
dataset=ml-100k
rate=1000
duration=30s
after_idle=""
fresh=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --store) store="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --after-idle) after_idle="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    *) echo "usage: $0 [--store embedded|redis] [--dataset ml-100k|synthetic-100k|synthetic-1m] [--rate N] [--duration 30s] [--after-idle MINUTES | --fresh]" >&2; exit 2 ;;
  esac
done
log() { echo "[bench-api] $*" >&2; }

"$REPO_ROOT/scripts/setup.sh" $([[ $store == redis ]] && echo --tests)

tools="$RECSYS_CACHE_DIR/tools"
oha="$tools/bin/oha"
if [[ ! -x "$oha" ]]; then
  log "installing oha (load generator) into $tools (a few minutes, once)"
  CARGO_TARGET_DIR="$RECSYS_CACHE_DIR/tools-target" cargo install --quiet --locked oha --version 1.16.0 --root "$tools"
fi

recsys="$(release_binary)"

bench_dir="$RECSYS_CACHE_DIR/bench/$dataset"
mkdir -p "$bench_dir/datasets"
case "$dataset" in
  ml-100k)
    ln -sfn "$(realpath "$RECSYS_DATA_DIR/datasets/ml-100k")" "$bench_dir/datasets/ml-100k"
    train_args=() ;;
  synthetic-100k|synthetic-1m)
    items=$([[ $dataset == synthetic-1m ]] && echo 1000000 || echo 100000)
    if [[ ! -s "$bench_dir/datasets/$dataset/$dataset.inter" ]]; then
      # 10k users: the catalogue size is what is measured, and full-ranking evaluation at the
      # end of training costs users x items.
      "$recsys" synth --data-dir "$bench_dir" --name "$dataset" --items "$items" --users 10000
    fi
    # Latency does not depend on how long the model trained: one epoch makes a real bundle.
    train_args=(--max-epochs 1) ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
if [[ ! -s "$bench_dir/bundles/CURRENT" ]]; then
  log "training a bundle on $dataset"
  "$recsys" train --data-dir "$bench_dir" --dataset "$dataset" "${train_args[@]}"
fi
"$recsys" index --data-dir "$bench_dir" --if-missing

run_dir="$(mktemp -d)"
server_pid=""
redis_pid=""
cleanup() {
  local status=$?
  for pid in $server_pid $redis_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$run_dir"
  exit "$status"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

export RECSYS__STATE__URL=embedded
if [[ $store == redis ]]; then
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$run_dir" >/dev/null &
  redis_pid=$!
  export RECSYS__STATE__URL="redis://127.0.0.1:$redis_port/"
  export RECSYS__STATE__KEY_PREFIX="bench"
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
else
  # A fresh embedded store per run, so every run stores the same histories.
  rm -rf "$bench_dir/state"
fi

"$recsys" bench-prepare --data-dir "$bench_dir" --out "$run_dir/bodies.ndjson"

port="$(free_port)"
RUST_LOG=warn,qdrant_edge=error "$recsys" serve --data-dir "$bench_dir" --listen "127.0.0.1:$port" >"$run_dir/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$run_dir/serve.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { log "the API did not become ready"; cat "$run_dir/serve.log" >&2; exit 1; }

load() { # name, output, extra oha arguments...
  local name="$1" output="$2"; shift 2
  # -w: requests in flight at the deadline are waited for, not counted as errors.
  "$oha" --no-tui --output-format json -q "$rate" --latency-correction -c 64 -z "$duration" -w \
    --worker-threads 1 "$@" >"$output"
  log "$name done"
}
retrieve_args=(-m POST -T application/json -Z "$run_dir/bodies.ndjson" "http://127.0.0.1:$port/recs/retrieve?count=10")
warm_up_rate=$([[ -n "$fresh" ]] && echo 1000 || echo "$rate")
log "warm-up (5 s at $warm_up_rate/s)"
"$oha" --no-tui --output-format quiet -q "$warm_up_rate" -c 64 -z 5s --worker-threads 1 "${retrieve_args[@]}"
if [[ -n "$fresh" ]]; then
  log "POST /recs/retrieve at $rate/s for $duration, right after the warm-up"
  "$oha" --no-tui --output-format csv -q "$rate" --latency-correction -c 64 -z "$duration" -w \
    --worker-threads 1 "${retrieve_args[@]}" >"$run_dir/fresh.csv"
  "$RECSYS_VENV/bin/python" - "$run_dir/fresh.csv" "$rate" "$duration" "$dataset" <<'PY'
import csv, sys
from collections import defaultdict
path, rate, duration, dataset = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000
latencies = [float(r["request-duration"]) for r in rows]
errors = sum(1 for r in rows if not r["status"].startswith("2"))
by_second = defaultdict(list)
for r in rows:
    by_second[int(float(r["request-start"]))].append(float(r["request-duration"]))
print(f"fresh server ({dataset}): 5 s at 1000/s, then {rate}/s for {duration} (oha, open loop, latency-corrected)")
print(f"whole run: {len(rows)} requests, p50 {p(latencies, 0.5):.3f} ms, p99 {p(latencies, 0.99):.3f} ms, "
      f"p99.9 {p(latencies, 0.999):.3f} ms, max {max(latencies) * 1000:.3f} ms, errors {errors}")
print("p99 by second: " + " ".join(f"{p(by_second[s], 0.99):.1f}" for s in sorted(by_second)) + " ms")
PY
  exit 0
fi
if [[ -n "$after_idle" ]]; then
  log "idling $after_idle minutes"
  sleep "$(( after_idle * 60 ))"
  "$oha" --no-tui --output-format json -n 100 -c 1 --worker-threads 1 "${retrieve_args[@]}" >"$run_dir/first.json"
  "$RECSYS_VENV/bin/python" - "$run_dir/first.json" "$after_idle" "$dataset" <<'PY'
import json, sys
report, idle, dataset = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
p = report["latencyPercentiles"]
statuses = report.get("statusCodeDistribution", {})
errors = sum(n for s, n in statuses.items() if not s.startswith("2")) + sum(report.get("errorDistribution", {}).values())
print(f"first 100 requests after {idle} idle minutes ({dataset}): p50 {p['p50'] * 1000:.3f} ms, "
      f"p99 {p['p99'] * 1000:.3f} ms, max {report['summary']['slowest'] * 1000:.3f} ms, errors {errors}")
PY
  exit 0
fi
log "POST /recs/retrieve at $rate/s for $duration ($store store, $dataset)"
load retrieve "$run_dir/retrieve.json" "${retrieve_args[@]}"
log "GET /healthz at $rate/s for $duration (the floor)"
load healthz "$run_dir/healthz.json" "http://127.0.0.1:$port/healthz"

"$RECSYS_VENV/bin/python" - "$run_dir" "$store" "$dataset" "$rate" "$duration" <<'PY'
import json, sys
run_dir, store, dataset, rate, duration = sys.argv[1:]

def summary(name):
    with open(f"{run_dir}/{name}.json") as handle:
        report = json.load(handle)
    percentiles = report["latencyPercentiles"]
    statuses = report.get("statusCodeDistribution", {})
    non_2xx = sum(count for status, count in statuses.items() if not status.startswith("2"))
    failures = sum(report.get("errorDistribution", {}).values())
    return {
        "p50": percentiles["p50"] * 1000, "p99": percentiles["p99"] * 1000,
        "p99.9": percentiles["p99.9"] * 1000,
        "rps": report["summary"]["requestsPerSec"],
        "ok": sum(count for status, count in statuses.items() if status.startswith("2")),
        "errors": non_2xx + failures,
    }

retrieve, floor = summary("retrieve"), summary("healthz")
print(f"store={store} dataset={dataset} rate={rate}/s duration={duration} (oha, open loop, latency-corrected)")
print(f"{'':16} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'req/s':>8} {'ok':>8} {'errors':>7}")
for name, row in (("/recs/retrieve", retrieve), ("/healthz", floor)):
    print(f"{name:16} {row['p50']:8.3f} {row['p99']:8.3f} {row['p99.9']:9.3f} {row['rps']:8.1f} {row['ok']:8d} {row['errors']:7d}")
print(f"retrieve p99 / floor p99 = {retrieve['p99'] / floor['p99']:.2f}")
PY
