//! A tiny synthetic data set and a model trained on it in seconds, for the tests of every crate
//! that needs a real bundle (model server, engine, API, consumer).

use std::path::Path;

use crate::model::EncoderKind;
use crate::offline::{train_bundle, OfflineError, TrainOutcome};
use crate::train::TrainConfig;
use dataset::data::synthetic::{generate, SyntheticConfig};
use dataset::data::{dataset_dir, write_atomic_files};

pub const TINY_DATASET: &str = "tiny";
/// Items of the tiny data set are `i0` .. `i39`.
pub const TINY_ITEMS: usize = 40;

pub fn write_tiny_dataset(data_dir: &Path) -> Result<(), OfflineError> {
    let dataset = generate(
        TINY_DATASET,
        &SyntheticConfig {
            num_users: 60,
            num_items: TINY_ITEMS,
            mean_events_per_user: 12,
            num_tastes: 4,
            seed: 11,
            ..SyntheticConfig::default()
        },
    );
    write_atomic_files(&dataset_dir(data_dir, TINY_DATASET), &dataset)?;
    Ok(())
}

pub fn tiny_train_config(encoder: EncoderKind) -> TrainConfig {
    TrainConfig {
        encoder,
        embedding_dim: 16,
        max_len: 8,
        num_layers: 1,
        num_heads: 2,
        dropout: 0.1,
        label_smoothing: 0.0,
        batch_size: 32,
        max_epochs: 2,
        patience: 2,
        show_progress: false,
        threads: 1,
        ..TrainConfig::default()
    }
}

/// Writes the tiny data set into `data_dir` and trains a bundle there, made current.
pub fn train_tiny_bundle(
    data_dir: &Path,
    encoder: EncoderKind,
) -> Result<TrainOutcome, OfflineError> {
    write_tiny_dataset(data_dir)?;
    train_bundle(data_dir, TINY_DATASET, &tiny_train_config(encoder), true)
}
