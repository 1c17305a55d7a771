#!/usr/bin/env bash
# Idempotent setup: a project-local venv with torch==2.13.0 (libtorch for tch), MovieLens-100k in
# the data dir, and with --tests the servers the test suite starts (redis-server, and the
# Kafka-protocol broker tansu, built once into the tool cache).
# Every step checks first and does nothing when its result is already there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

with_test_deps=false
for argument in "$@"; do
  case "$argument" in
    --tests) with_test_deps=true ;;
    *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
  esac
done

log() { echo "[setup] $*" >&2; }

torch_version="2.13.0"
if ! "$RECSYS_VENV/bin/python" -c "import torch, safetensors, numpy; assert torch.__version__.startswith('$torch_version')" 2>/dev/null; then
  log "creating venv at $RECSYS_VENV with torch==$torch_version (about 1 minute, 4.7 GB)"
  python3 -m venv "$RECSYS_VENV"
  "$RECSYS_VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$torch_version" numpy safetensors
fi

ml100k_dir="$RECSYS_DATA_DIR/datasets/ml-100k"
if [[ ! -s "$ml100k_dir/ml-100k.inter" || ! -s "$ml100k_dir/ml-100k.item" ]]; then
  log "fetching MovieLens-100k from the recbole==1.2.1 wheel into $ml100k_dir"
  wheel_dir="$RECSYS_CACHE_DIR/wheels"
  mkdir -p "$wheel_dir" "$ml100k_dir"
  if ! ls "$wheel_dir"/recbole-1.2.1-*.whl >/dev/null 2>&1; then
    "$RECSYS_VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps "recbole==1.2.1" -d "$wheel_dir"
  fi
  "$RECSYS_VENV/bin/python" - "$wheel_dir" "$ml100k_dir" <<'PY'
import glob, os, sys, zipfile
wheel_dir, target = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(os.path.join(wheel_dir, "recbole-1.2.1-*.whl")))[0]
with zipfile.ZipFile(wheel) as archive:
    for suffix in ("inter", "item", "user"):
        member = f"recbole/dataset_example/ml-100k/ml-100k.{suffix}"
        partial = os.path.join(target, f"ml-100k.{suffix}.partial")
        with archive.open(member) as source, open(partial, "wb") as sink:
            sink.write(source.read())
        os.replace(partial, os.path.join(target, f"ml-100k.{suffix}"))
PY
fi

if $with_test_deps; then
  # redis-server for the store tests; chromium and its WebDriver for the demo page's browser test;
  # prometheus for promtool, which lints the exported metrics.
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  command -v promtool >/dev/null || missing+=(prometheus)
  if (( ${#missing[@]} )); then
    log "installing ${missing[*]} (Debian packages)"
    sudo_if_needed=""
    [[ "$(id -u)" != 0 ]] && sudo_if_needed="sudo"
    $sudo_if_needed apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # Apache Kafka cannot be installed here; tansu speaks the Kafka protocol and runs in memory.
  tansu_version="0.6.0"
  if ! "$RECSYS_CACHE_DIR/tools/bin/tansu" --version 2>/dev/null | grep -q "$tansu_version"; then
    log "building tansu $tansu_version into $RECSYS_CACHE_DIR/tools (about 10 minutes, once)"
    CARGO_TARGET_DIR="$RECSYS_CACHE_DIR/tansu-build" cargo install --quiet --locked \
      tansu --version "$tansu_version" --features dynostore,libsql --root "$RECSYS_CACHE_DIR/tools"
    rm -rf "$RECSYS_CACHE_DIR/tansu-build"
  fi
  # License, ban and source checks of the dependency tree (CI runs `cargo deny check`).
  deny_version="0.20"
  if ! "$RECSYS_CACHE_DIR/tools/bin/cargo-deny" --version 2>/dev/null | grep -q "cargo-deny $deny_version"; then
    log "building cargo-deny $deny_version into $RECSYS_CACHE_DIR/tools (a few minutes, once)"
    CARGO_TARGET_DIR="$RECSYS_CACHE_DIR/deny-build" cargo install --quiet --locked \
      cargo-deny --version "~$deny_version" --root "$RECSYS_CACHE_DIR/tools"
    rm -rf "$RECSYS_CACHE_DIR/deny-build"
  fi
  # Schemathesis fuzzes the API against its OpenAPI document (tests/tests/openapi_conformance.rs),
  # in a venv of its own so that its dependencies never meet torch's.
  schemathesis_version="4.32.5"
  schemathesis_venv="$RECSYS_CACHE_DIR/tools/schemathesis"
  if ! "$schemathesis_venv/bin/st" --version 2>/dev/null | grep -q "$schemathesis_version"; then
    log "installing schemathesis $schemathesis_version into $schemathesis_venv"
    python3 -m venv "$schemathesis_venv"
    "$schemathesis_venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
  fi
  # No package registry reachable here ships a Qdrant server; a machine that has the binary built
  # from source next to the checkout (or in $RECSYS_SHARED_TOOLS) gets the remote index tests,
  # once unpacked into the tool cache; others print SKIPPED.
  qdrant_archive="${RECSYS_SHARED_TOOLS:-$REPO_ROOT/../shared/tools}/qdrant-1.16.3-x86_64-linux.gz"
  qdrant_sha256="d074ff6462d4d64830eeabdc0cc81e48e2727641668508cc5bb5d4df1b7a2ffc"
  qdrant_bin="$RECSYS_CACHE_DIR/tools/bin/qdrant"
  if [[ -f "$qdrant_archive" ]] && ! echo "$qdrant_sha256  $qdrant_bin" | sha256sum -c --status 2>/dev/null; then
    log "unpacking the Qdrant 1.16.3 server into $RECSYS_CACHE_DIR/tools"
    mkdir -p "$(dirname "$qdrant_bin")"
    gunzip -c "$qdrant_archive" > "$qdrant_bin.partial"
    echo "$qdrant_sha256  $qdrant_bin.partial" | sha256sum -c --status
    chmod +x "$qdrant_bin.partial"
    mv "$qdrant_bin.partial" "$qdrant_bin"
  fi
fi
log "ready: venv $RECSYS_VENV, data $RECSYS_DATA_DIR"
