#!/usr/bin/env bash
# Soak: the whole stream deployment under steady load for a long time, to show that nothing
# grows without bound and nothing starts failing. A Kafka-protocol broker (tansu), redis-server,
# `recsys serve` (events to Kafka, state in Redis) and `recsys consume` on free ports; the API
# takes POST /recs/retrieve at a fixed rate (oha, open loop) while `recsys replay` produces events
# to the broker at another. Every minute it prints each process's RSS, that minute's retrieve p99
# and errors, and the consumer's lag; at the end, RSS at the last minute against minute 5.
#
#   scripts/soak.sh [--minutes 30] [--request-rate 500] [--event-rate 2000]
#
# RECSYS_BIN=path soaks that `recsys` binary instead of building this checkout's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
log() { echo "[soak] $*" >&2; }

minutes=30
request_rate=500
event_rate=2000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --request-rate) request_rate="$2"; shift 2 ;;
    --event-rate) event_rate="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes 30] [--request-rate 500] [--event-rate 2000]" >&2; exit 2 ;;
  esac
done

"$REPO_ROOT/scripts/setup.sh" --tests
recsys="$(release_binary)"
oha="$RECSYS_CACHE_DIR/tools/bin/oha"
[[ -x "$oha" ]] || { log "oha is missing: scripts/bench-api.sh installs it"; exit 1; }

# The API serves the ml-100k bench bundle (scripts/bench-api.sh makes it); the events come from a
# synthetic data set big enough for the whole run without repeating an event id.
bench_dir="$RECSYS_CACHE_DIR/bench/ml-100k"
[[ -s "$bench_dir/bundles/CURRENT" && -d "$bench_dir/index" ]] || {
  log "no ml-100k bench bundle: run scripts/bench-api.sh once"; exit 1; }
events_needed=$(( event_rate * 60 * minutes + event_rate * 60 ))
# Users have 25-74 events (49.5 on average): 40 per user leaves a margin.
users=$(( events_needed / 40 + 1 ))
events_dir="$RECSYS_CACHE_DIR/soak/events-$users"
if [[ ! -s "$events_dir/datasets/soak/soak.inter" ]]; then
  log "generating $users users x ~50 events (once per size)"
  "$recsys" synth --data-dir "$events_dir" --name soak --users "$users" --items 1682 --events-per-user 50
  # Synthetic items are i0..i1681; the served catalogue's (ml-100k) are 1..1682. Renamed, the
  # events reach the model and the index as real traffic would, instead of unknown items.
  awk 'BEGIN { FS = OFS = "\t" } NR == 1 { print; next } { $2 = substr($2, 2) + 1; print }' \
    "$events_dir/datasets/soak/soak.inter" >"$events_dir/datasets/soak/soak.inter.tmp"
  mv "$events_dir/datasets/soak/soak.inter.tmp" "$events_dir/datasets/soak/soak.inter"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; return 1; }

kafka_port=$(free_port); redis_port=$(free_port); api_port=$(free_port); consumer_port=$(free_port)
"$RECSYS_CACHE_DIR/tools/bin/tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ \
  >"$work/tansu.log" 2>&1 &
tansu_pid=$!; pids+=("$tansu_pid")
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")
wait_for_port "$kafka_port"; wait_for_port "$redis_port"

export RECSYS__EVENTS__URL="kafka://127.0.0.1:$kafka_port" RECSYS__EVENTS__TOPIC=soak-events
export RECSYS__EVENTS__DEAD_LETTER_TOPIC=soak-dead-letters
export RECSYS__STATE__URL="redis://127.0.0.1:$redis_port/" RECSYS__STATE__KEY_PREFIX=soak
export RUST_LOG="${RUST_LOG:-warn,qdrant_edge=error}"
# The bench data dir is shared with the other benchmarks: its archive and embedded state stay
# untouched (state is in Redis; archiving is off for the run).
export RECSYS__ARCHIVE__ENABLED=false
# tansu answers a fetch only when its wait ends, and polling its log costs it CPU: at 2,000
# events/s the default 5 ms wait (for Kafka, which answers as soon as a record arrives) kept it
# at 86 % of a core against 30 % at 500 ms, and a broker at its limit stalls the consumer.
export RECSYS__CONSUMER__FETCH_WAIT_MAX_MS=500
# Every topic the processes read, the catalogue's too: a missing one is retried against the broker.
"$recsys" create-topics --partitions 4 >/dev/null

"$recsys" bench-prepare --data-dir "$bench_dir" --out "$work/bodies.ndjson"
"$recsys" serve --data-dir "$bench_dir" --listen "127.0.0.1:$api_port" >"$work/serve.log" 2>&1 &
serve_pid=$!; pids+=("$serve_pid")
"$recsys" consume --data-dir "$bench_dir" --listen "127.0.0.1:$consumer_port" >"$work/consume.log" 2>&1 &
consume_pid=$!; pids+=("$consume_pid")
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && curl -sf "http://127.0.0.1:$consumer_port/readyz" >/dev/null && break
  sleep 0.1
done

log "$minutes minutes: POST /recs/retrieve at $request_rate/s, events at $event_rate/s"
"$recsys" replay --data-dir "$events_dir" --dataset soak --to kafka --rate "$event_rate" \
  >"$work/replay.log" 2>&1 &
replay_pid=$!; pids+=("$replay_pid")

rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"; }
consumer_lag() {
  curl -sf "http://127.0.0.1:$consumer_port/metrics" \
    | awk '/^recsys_consumer_lag_messages[{ ]/ { lag += $NF } END { printf "%d", lag }'
}
printf "%6s %10s %10s %10s %10s %9s %7s %9s\n" minute "serve MB" "consume MB" "redis MB" "tansu MB" "p99 ms" errors lag
for minute in $(seq 1 "$minutes"); do
  "$oha" --no-tui --output-format json -q "$request_rate" --latency-correction -c 64 -z 60s -w \
    --worker-threads 1 -m POST -T application/json -Z "$work/bodies.ndjson" \
    "http://127.0.0.1:$api_port/recs/retrieve?count=10" >"$work/minute-$minute.json"
  read -r p99 errors < <("$RECSYS_VENV/bin/python" - "$work/minute-$minute.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
statuses = report.get("statusCodeDistribution", {})
errors = sum(n for status, n in statuses.items() if not status.startswith("2"))
errors += sum(report.get("errorDistribution", {}).values())
print(f"{report['latencyPercentiles']['p99'] * 1000:.3f} {errors}")
PY
)
  printf "%6d %10s %10s %10s %10s %9s %7s %9s\n" "$minute" "$(rss_mb "$serve_pid")" \
    "$(rss_mb "$consume_pid")" "$(rss_mb "$redis_pid")" "$(rss_mb "$tansu_pid")" "$p99" "$errors" \
    "$(consumer_lag)" | tee -a "$work/table.txt"
  kill -0 "$replay_pid" 2>/dev/null || { log "the event producer stopped early:"; tail -5 "$work/replay.log" >&2; exit 1; }
done

dead_letters=$(curl -sf "http://127.0.0.1:$consumer_port/metrics" \
  | awk '/^recsys_consumer_dead_letters_total[{ ]/ { n += $NF } END { printf "%d", n }')
awk -v minutes="$minutes" -v dead="$dead_letters" '
  { serve[$1] = $2; consume[$1] = $3; errors += $7 }
  END {
    first = minutes >= 5 ? 5 : 1
    printf "errors %d, dead letters %s; RSS at minute %d against minute %d: serve %+.1f %%, consume %+.1f %%\n",
      errors, dead, minutes, first,
      100 * (serve[minutes] / serve[first] - 1), 100 * (consume[minutes] / consume[first] - 1)
  }' "$work/table.txt"
