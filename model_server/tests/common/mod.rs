//! Shared fixtures: a tiny synthetic data set and a bundle trained on it in a temporary data dir.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use model_server::data::synthetic::{generate, SyntheticConfig};
use model_server::data::{dataset_dir, write_atomic_files};
use model_server::model::EncoderKind;
use model_server::offline::{train_bundle, TrainOutcome};
use model_server::train::TrainConfig;

pub const TINY_DATASET: &str = "tiny";

pub fn write_tiny_dataset(data_dir: &Path) {
    let dataset = generate(
        TINY_DATASET,
        &SyntheticConfig {
            num_users: 60,
            num_items: 40,
            mean_events_per_user: 12,
            num_tastes: 4,
            seed: 11,
            ..SyntheticConfig::default()
        },
    );
    write_atomic_files(&dataset_dir(data_dir, TINY_DATASET), &dataset).unwrap();
}

pub fn tiny_train_config(encoder: EncoderKind) -> TrainConfig {
    TrainConfig {
        encoder,
        embedding_dim: 16,
        max_len: 8,
        num_layers: 1,
        num_heads: 2,
        dropout: 0.1,
        batch_size: 32,
        max_epochs: 2,
        patience: 2,
        show_progress: false,
        threads: 1,
        ..TrainConfig::default()
    }
}

/// A data dir holding the tiny data set and a trained, current bundle.
pub fn trained_data_dir(encoder: EncoderKind) -> (tempfile::TempDir, TrainOutcome) {
    let data_dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(data_dir.path());
    let outcome = train_bundle(
        data_dir.path(),
        TINY_DATASET,
        &tiny_train_config(encoder),
        true,
    )
    .unwrap();
    (data_dir, outcome)
}

/// The venv's Python with torch, as `scripts/setup.sh` makes it (or `python3` on PATH).
pub fn python_with_torch() -> PathBuf {
    let venv = std::env::var_os("RECSYS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
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
