#!/usr/bin/env bash
# Every test: set up (venv, data, redis-server), then the whole workspace's test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh" --tests
cargo test --workspace --locked "$@"
