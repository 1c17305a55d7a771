#!/usr/bin/env bash
# Every test: set up (venv, data, redis-server, tansu), check the dependencies' licenses, bans
# and sources (`deny.toml`), build the torch-free `recsys` (the serving image's binary) for the
# test that runs it against `recsys model-server`, then the whole workspace's test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh" --tests

# Licenses, banned crates and sources of every dependency.
"$RECSYS_CACHE_DIR/tools/bin/cargo-deny" check licenses bans sources

# Built first and copied aside: the default build writes the same target/debug/recsys.
cargo build --locked -p recsys-cli --no-default-features
torch_free_bin="$CARGO_TARGET_DIR/torch-free/recsys"
mkdir -p "$(dirname "$torch_free_bin")"
cp "$CARGO_TARGET_DIR/debug/recsys" "$torch_free_bin"
if ldd "$torch_free_bin" | grep -q torch; then
  echo "[test] the --no-default-features build links libtorch:" >&2
  ldd "$torch_free_bin" | grep torch >&2
  exit 1
fi
export RECSYS_TORCH_FREE_BIN="$torch_free_bin"

cargo test --workspace --locked "$@"
if [[ -z "${QDRANT_URL:-}" && ! -x "$RECSYS_CACHE_DIR/tools/bin/qdrant" && -z "${QDRANT_BIN:-}" ]]; then
  echo "[test] SKIPPED: the Qdrant-server tests (no Qdrant server binary, no QDRANT_URL; the embedded Qdrant Edge contract ran)" >&2
fi
