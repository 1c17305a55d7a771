#!/usr/bin/env bash
# The one-shot `init` service of compose.stream.yml: topics, data, model bundle, item index.
# Each step is idempotent, so a re-run of the deployment reuses what exists.
set -euo pipefail
data_dir="${RECSYS_DATA_DIR:-/data}"

# The events topic and its dead-letter topic (existing topics are left as they are). Events are
# keyed by user id, so the partition count bounds the consumer group's parallelism.
recsys create-topics --partitions 6

RECSYS_DATA_DIR="$data_dir" RECSYS_VENV=/opt/venv /app/scripts/setup.sh
if [[ ! -f "$data_dir/bundles/CURRENT" ]]; then
  recsys train --data-dir "$data_dir" --dataset ml-100k
fi
recsys index --if-missing
