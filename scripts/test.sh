#!/usr/bin/env bash
# Every test: set up (venv, data, redis-server), then the whole workspace's test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh" --tests
cargo test --workspace --locked "$@"
if [[ -z "${QDRANT_URL:-}" ]]; then
  echo "[test] SKIPPED: the Qdrant-server index contract (no QDRANT_URL; the embedded Qdrant Edge contract ran)" >&2
fi
