//! Training: next-item prediction at every position of every training sequence, Adam, dropout,
//! early stopping on validation NDCG@10 with the best weights kept.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

mod loss;

use crate::eval::{evaluate_encoder, validation_cases, SeenItems};
use crate::item_features::{ItemFeatureSet, ItemFeatures};
use crate::model::{left_padded_batch, EncoderKind, ModelConfig, SequenceModel};
use dataset::ranking_metrics::RankingMetrics;
use dataset::split::UserSplit;
use loss::batch_loss;

/// Full softmax over the catalogue is exact and cheap up to tens of thousands of items; beyond
/// that a sampled softmax keeps an epoch's cost independent of the catalogue size.
pub const FULL_SOFTMAX_MAX_ITEMS: i64 = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LossKind {
    /// Cross-entropy over every item.
    FullSoftmax,
    /// Cross-entropy over the target and `negatives` uniformly sampled items shared by the batch
    /// (accidental hits masked).
    SampledSoftmax { negatives: i64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub encoder: EncoderKind,
    pub embedding_dim: i64,
    pub max_len: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub dropout: f64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch_size: i64,
    pub max_epochs: usize,
    /// Epochs without a better validation NDCG@10 before training stops.
    pub patience: usize,
    /// `None` picks full softmax up to `FULL_SOFTMAX_MAX_ITEMS` items, sampled softmax above.
    pub loss: Option<LossKind>,
    /// Share of the target's probability mass spread over all classes of the softmax.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Catalogue attributes added to the item representation while training.
    #[serde(default)]
    pub item_features: ItemFeatureSet,
    pub seed: u64,
    pub threads: i32,
    pub show_progress: bool,
}

impl Default for TrainConfig {
    /// The default encoder with its best configuration on ml-100k (MODEL.md lists what was tried).
    fn default() -> Self {
        TrainConfig::for_encoder(EncoderKind::Gru)
    }
}

impl TrainConfig {
    /// The best configuration found on ml-100k for each encoder.
    pub fn for_encoder(encoder: EncoderKind) -> TrainConfig {
        let shared = TrainConfig {
            encoder,
            embedding_dim: 256,
            max_len: 50,
            num_layers: 1,
            num_heads: 1,
            dropout: 0.4,
            learning_rate: 2e-3,
            weight_decay: 0.0,
            batch_size: 128,
            max_epochs: 200,
            patience: 10,
            loss: None,
            label_smoothing: 0.2,
            item_features: ItemFeatureSet::None,
            seed: 42,
            threads: std::thread::available_parallelism()
                .map(|cores| cores.get() as i32)
                .unwrap_or(2),
            show_progress: true,
        };
        match encoder {
            EncoderKind::Gru => shared,
            EncoderKind::Sasrec => TrainConfig {
                embedding_dim: 64,
                label_smoothing: 0.0,
                num_layers: 2,
                num_heads: 2,
                dropout: 0.2,
                learning_rate: 1e-3,
                patience: 20,
                ..shared
            },
        }
    }

    pub fn model_config(&self, num_items: i64) -> ModelConfig {
        ModelConfig {
            encoder: self.encoder,
            num_items,
            embedding_dim: self.embedding_dim,
            max_len: self.max_len,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            dropout: self.dropout,
        }
    }

    pub fn loss_for(&self, num_items: i64) -> LossKind {
        self.loss.unwrap_or(if num_items <= FULL_SOFTMAX_MAX_ITEMS {
            LossKind::FullSoftmax
        } else {
            LossKind::SampledSoftmax { negatives: 2048 }
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub valid_ndcg_at_10: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingReport {
    pub loss: LossKind,
    pub training_windows: usize,
    pub training_targets: usize,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub best_valid: RankingMetrics,
    pub seconds_per_epoch: f64,
    /// Wall time from the start until the end of the best epoch (what a rerun with
    /// `max_epochs = best_epoch` would take).
    pub seconds_to_best_epoch: f64,
    pub total_seconds: f64,
    pub history: Vec<EpochRecord>,
}

/// Trains on the training part of `splits` and returns the model with its best validation weights.
/// `item_features` are the catalogue's attributes for `config.item_features` (ignored when that
/// is `None`).
pub fn train(
    splits: &[UserSplit],
    num_items: i64,
    item_features: Option<&ItemFeatures>,
    config: &TrainConfig,
) -> Result<(SequenceModel, TrainingReport), tch::TchError> {
    tch::set_num_threads(config.threads);
    tch::manual_seed(config.seed as i64);
    let started = Instant::now();
    let loss_kind = config.loss_for(num_items);
    let item_features = item_features.filter(|_| config.item_features != ItemFeatureSet::None);
    let mut model =
        SequenceModel::with_item_features(config.model_config(num_items), item_features);
    let windows = TrainingWindows::build(splits, config.max_len as usize);
    let validation = validation_cases(splits);
    let mut optimizer = nn::Adam {
        wd: config.weight_decay,
        ..Default::default()
    }
    .build(model.var_store(), config.learning_rate)?;

    let progress = progress_bar(config);
    let mut best: Option<(usize, RankingMetrics, HashMap<String, Tensor>, f64)> = None;
    let mut history = Vec::new();
    for epoch in 1..=config.max_epochs {
        let epoch_started = Instant::now();
        let mut loss_sum = 0.0;
        let mut batches = 0usize;
        let order = Tensor::randperm(windows.count() as i64, (Kind::Int64, tch::Device::Cpu));
        let mut start = 0;
        while start < windows.count() as i64 {
            let size = config.batch_size.min(windows.count() as i64 - start);
            let rows = order.narrow(0, start, size);
            let inputs = windows.inputs.index_select(0, &rows);
            let targets = windows.targets.index_select(0, &rows);
            let loss = batch_loss(&model, &inputs, &targets, loss_kind, config);
            optimizer.backward_step(&loss);
            loss_sum += loss.double_value(&[]);
            batches += 1;
            start += size;
        }
        let valid = evaluate_encoder(
            &model,
            &model.item_vectors(),
            &validation,
            config.max_len as usize,
            SeenItems::Ranked,
        )?;
        let record = EpochRecord {
            epoch,
            loss: loss_sum / batches.max(1) as f64,
            valid_ndcg_at_10: valid.ndcg_at_10,
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        let improved = best
            .as_ref()
            .is_none_or(|(_, best_valid, _, _)| valid.ndcg_at_10 > best_valid.ndcg_at_10);
        if improved {
            best = Some((
                epoch,
                valid,
                snapshot(model.var_store()),
                started.elapsed().as_secs_f64(),
            ));
        }
        let (best_epoch, best_valid, _, _) = best.as_ref().expect("set on the first epoch");
        progress.set_message(format!(
            "loss {:.4} valid ndcg@10 {:.4} (best {:.4} at epoch {best_epoch})",
            record.loss, record.valid_ndcg_at_10, best_valid.ndcg_at_10
        ));
        progress.inc(1);
        // Without a terminal the bar is hidden; log lines keep CI runs and redirected output informed.
        if progress.is_hidden() {
            tracing::info!(
                epoch,
                loss = format_args!("{:.4}", record.loss),
                valid_ndcg_at_10 = format_args!("{:.4}", record.valid_ndcg_at_10),
                seconds = format_args!("{:.2}", record.seconds),
                "epoch done"
            );
        }
        history.push(record);
        if epoch - best_epoch >= config.patience {
            break;
        }
    }
    progress.finish_and_clear();

    let (best_epoch, best_valid, best_weights, seconds_to_best_epoch) =
        best.expect("max_epochs is at least one");
    restore(model.var_store_mut(), &best_weights);
    let epochs_run = history.len();
    let report = TrainingReport {
        loss: loss_kind,
        training_windows: windows.count(),
        training_targets: windows.target_count,
        best_epoch,
        epochs_run,
        best_valid,
        seconds_per_epoch: history.iter().map(|record| record.seconds).sum::<f64>()
            / epochs_run.max(1) as f64,
        seconds_to_best_epoch,
        total_seconds: started.elapsed().as_secs_f64(),
        history,
    };
    Ok((model, report))
}

fn progress_bar(config: &TrainConfig) -> ProgressBar {
    if !config.show_progress {
        return ProgressBar::hidden();
    }
    let progress = ProgressBar::new(config.max_epochs as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} epoch {pos}/{len} (eta {eta}) {msg}",
        )
        .expect("static template"),
    );
    progress.set_prefix(format!("training {}", config.encoder));
    progress
}

/// Every training sequence cut into windows of `max_len + 1` items from its end, so each item
/// after the first is a prediction target exactly once: inputs are the window minus its last
/// item, targets the window minus its first, both left-padded with 0 (no target).
struct TrainingWindows {
    inputs: Tensor,
    targets: Tensor,
    target_count: usize,
}

impl TrainingWindows {
    fn build(splits: &[UserSplit], max_len: usize) -> TrainingWindows {
        let mut inputs: Vec<Vec<i64>> = Vec::new();
        let mut targets: Vec<Vec<i64>> = Vec::new();
        let mut target_count = 0;
        for split in splits {
            let items: Vec<i64> = split.train.iter().map(|&index| index as i64).collect();
            let mut end = items.len();
            while end >= 2 {
                let start = end.saturating_sub(max_len + 1);
                let window = &items[start..end];
                inputs.push(window[..window.len() - 1].to_vec());
                targets.push(window[1..].to_vec());
                target_count += window.len() - 1;
                end = start + 1;
                if start == 0 {
                    break;
                }
            }
        }
        TrainingWindows {
            inputs: left_padded_batch(&inputs, max_len),
            targets: left_padded_batch(&targets, max_len),
            target_count,
        }
    }

    fn count(&self) -> usize {
        self.inputs.size()[0] as usize
    }
}

fn snapshot(var_store: &nn::VarStore) -> HashMap<String, Tensor> {
    tch::no_grad(|| {
        var_store
            .variables()
            .into_iter()
            .map(|(name, tensor)| (name, tensor.detach().copy()))
            .collect()
    })
}

fn restore(var_store: &mut nn::VarStore, weights: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, mut variable) in var_store.variables() {
            variable.copy_(&weights[&name]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_position_once() {
        let splits = [UserSplit {
            user_id: "u".into(),
            train: (1..=9).collect(),
            valid: None,
            test: None,
        }];
        let windows = TrainingWindows::build(&splits, 4);
        // 9 items -> 8 targets: windows [5..=9] (4 targets), [1..=5] (4 targets).
        assert_eq!(windows.target_count, 8);
        let inputs: Vec<i64> = Vec::try_from(windows.inputs.view([-1])).unwrap();
        let targets: Vec<i64> = Vec::try_from(windows.targets.view([-1])).unwrap();
        assert_eq!(inputs, [5, 6, 7, 8, 1, 2, 3, 4]);
        assert_eq!(targets, [6, 7, 8, 9, 2, 3, 4, 5]);
    }

    #[test]
    fn short_sequences_are_padded_on_the_left() {
        let splits = [UserSplit {
            user_id: "u".into(),
            train: vec![3, 1, 2],
            valid: None,
            test: None,
        }];
        let windows = TrainingWindows::build(&splits, 4);
        let targets: Vec<i64> = Vec::try_from(windows.targets.view([-1])).unwrap();
        assert_eq!(targets, [0, 0, 1, 2]);
        assert_eq!(windows.target_count, 2);
    }

    #[test]
    fn learns_a_deterministic_cycle() {
        // Every user walks the cycle 1 -> 2 -> ... -> 8 -> 1; the next item is always predictable.
        let splits: Vec<UserSplit> = (0..40)
            .map(|user| {
                let items: Vec<u32> = (0..30).map(|step| ((user + step) % 8) as u32 + 1).collect();
                UserSplit {
                    user_id: format!("u{user}"),
                    train: items[..28].to_vec(),
                    valid: Some(items[28]),
                    test: Some(items[29]),
                }
            })
            .collect();
        for (encoder, loss) in [
            (EncoderKind::Sasrec, LossKind::FullSoftmax),
            (EncoderKind::Gru, LossKind::FullSoftmax),
            (
                EncoderKind::Sasrec,
                LossKind::SampledSoftmax { negatives: 4 },
            ),
        ] {
            let config = TrainConfig {
                encoder,
                embedding_dim: 16,
                max_len: 10,
                num_layers: 1,
                num_heads: 1,
                dropout: 0.0,
                learning_rate: 1e-2,
                batch_size: 16,
                max_epochs: 30,
                patience: 30,
                loss: Some(loss),
                show_progress: false,
                threads: 1,
                ..TrainConfig::default()
            };
            let (_, report) = train(&splits, 8, None, &config).unwrap();
            assert!(
                report.best_valid.mrr_at_10 > 0.9,
                "{encoder} {loss:?}: {:?}",
                report.best_valid
            );
        }
    }
}
