//! Shared fixtures: a tiny synthetic data set and a bundle trained on it in a temporary data dir.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use model_server::fixtures::train_tiny_bundle;
use model_server::model::EncoderKind;
use model_server::offline::TrainOutcome;

/// A data dir holding the tiny data set and a trained, current bundle.
pub fn trained_data_dir(encoder: EncoderKind) -> (tempfile::TempDir, TrainOutcome) {
    let data_dir = tempfile::tempdir().unwrap();
    let outcome = train_tiny_bundle(data_dir.path(), encoder).unwrap();
    (data_dir, outcome)
}

/// This crate's directory, read when the test runs (cargo sets it then too): a binary in the
/// shared target dir may have been built from another checkout of the same sources, so the
/// compile-time `env!` path can point at a tree that is gone.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// The venv's Python with torch, as `scripts/setup.sh` makes it (or `python3` on PATH).
pub fn python_with_torch() -> PathBuf {
    let venv = std::env::var_os("RECSYS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../.venv"));
    let candidate = venv.join("bin/python");
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from("python3")
    }
}

/// Copies every file of `source` into a fresh temporary directory, for tests that damage a bundle.
pub fn copy_dir(source: &Path) -> tempfile::TempDir {
    let target = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.path().join(entry.file_name())).unwrap();
    }
    target
}
