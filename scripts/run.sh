#!/usr/bin/env bash
# The main job: set up, build, train a model if none exists, evaluate it against popularity,
# build the item index if none exists, and serve the recommendation API on embedded backends.
# A second run reuses the venv, the data, the bundle and the index, and serves within seconds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh"
cargo build --release --locked -p recsys-cli
recsys="$CARGO_TARGET_DIR/release/recsys"

if ! "$recsys" eval --data-dir "$RECSYS_DATA_DIR" --json >/dev/null 2>&1; then
  echo "[run] no usable model bundle in $RECSYS_DATA_DIR/bundles: training the default model (about 3 minutes)" >&2
  "$recsys" train --data-dir "$RECSYS_DATA_DIR"
fi
"$recsys" eval --data-dir "$RECSYS_DATA_DIR"
"$recsys" index --if-missing --data-dir "$RECSYS_DATA_DIR"
exec "$recsys" serve --data-dir "$RECSYS_DATA_DIR" "$@"
