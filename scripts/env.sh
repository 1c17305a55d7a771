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

# The `recsys` a benchmark measures: $RECSYS_BIN when set (A/B runs of two builds, alternated),
# otherwise this checkout's release build, built now. Prints its path.
release_binary() {
  if [[ -n "${RECSYS_BIN:-}" ]]; then
    echo "$RECSYS_BIN"
    return
  fi
  echo "[bench] building the release binary" >&2
  (cd "$REPO_ROOT" && cargo build --quiet --release --locked -p recsys-cli) >&2
  echo "$CARGO_TARGET_DIR/release/recsys"
}
