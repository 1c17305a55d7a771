# Sourced by the other scripts: where things live, and the environment libtorch builds need.
# Every path can be overridden from the environment; CI points the heavy caches outside the checkout.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RECSYS_CACHE_DIR="${RECSYS_CACHE_DIR:-$HOME/.cache/recsys}"
export RECSYS_VENV="${RECSYS_VENV:-$REPO_ROOT/.venv}"
export RECSYS_DATA_DIR="${RECSYS_DATA_DIR:-$REPO_ROOT/data}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

# torch-sys finds libtorch through the `python3` first on PATH (the venv's torch==2.13.0).
export PATH="$RECSYS_VENV/bin:$RECSYS_CACHE_DIR/tools/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
