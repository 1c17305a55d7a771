//! Training: next-item prediction at every position of every training sequence, Adam, dropout,
//! early stopping on validation NDCG@10 with the best weights kept.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Kind, Reduction, Tensor};

use crate::eval::{evaluate_encoder, validation_cases, SeenItems};
use crate::item_features::{ItemFeatureSet, ItemFeatures};
use crate::model::{left_padded_batch, EncoderKind, ModelConfig, SequenceModel};
use dataset::ranking_metrics::RankingMetrics;
use dataset::split::UserSplit;

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
    /// Multiply the learning rate by this after `lr_decay_patience` epochs without a better
    /// validation NDCG@10 (1.0 = constant learning rate).
    #[serde(default = "no_decay")]
    pub lr_decay: f64,
    #[serde(default = "default_lr_decay_patience")]
    pub lr_decay_patience: usize,
    /// `None` picks full softmax up to `FULL_SOFTMAX_MAX_ITEMS` items, sampled softmax above.
    pub loss: Option<LossKind>,
    /// Share of the target's probability mass spread over all classes of the softmax.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Each position learns to predict each of the next this-many items of its window, not only
    /// the next one (full softmax only): items rated in one sitting come in no telling order, so
    /// the next few are as good a target as the next one.
    #[serde(default = "next_item_only")]
    pub future_targets: usize,
    /// Catalogue attributes added to the item representation while training.
    #[serde(default)]
    pub item_features: ItemFeatureSet,
    /// Score against an output table of its own instead of the input embeddings.
    #[serde(default)]
    pub separate_output_embedding: bool,
    pub seed: u64,
    pub threads: i32,
    pub show_progress: bool,
}

fn next_item_only() -> usize {
    1
}

fn no_decay() -> f64 {
    1.0
}

fn default_lr_decay_patience() -> usize {
    3
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
            embedding_dim: 128,
            max_len: 50,
            num_layers: 1,
            num_heads: 1,
            dropout: 0.3,
            learning_rate: 2e-3,
            weight_decay: 0.0,
            batch_size: 128,
            max_epochs: 200,
            patience: 10,
            lr_decay: no_decay(),
            lr_decay_patience: default_lr_decay_patience(),
            loss: None,
            label_smoothing: 0.0,
            future_targets: next_item_only(),
            item_features: ItemFeatureSet::None,
            separate_output_embedding: false,
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
            separate_output_embedding: self.separate_output_embedding,
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
    let mut learning_rate = config.learning_rate;
    let mut last_decay_epoch = 0;
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
        let since_change = epoch - (*best_epoch).max(last_decay_epoch);
        if config.lr_decay != 1.0 && since_change >= config.lr_decay_patience {
            learning_rate *= config.lr_decay;
            optimizer.set_lr(learning_rate);
            last_decay_epoch = epoch;
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

fn batch_loss(
    model: &SequenceModel,
    inputs: &Tensor,
    targets: &Tensor,
    loss: LossKind,
    config: &TrainConfig,
) -> Tensor {
    let label_smoothing = config.label_smoothing;
    let batch_targets = targets;
    let hidden = model.hidden_states(inputs, true);
    let dim = hidden.size()[2];
    // Only positions with a target contribute; selecting them first saves the padded compute.
    let flat_targets = targets.view([-1]);
    let positions = flat_targets.ne(0).nonzero().squeeze_dim(1);
    let hidden = hidden.view([-1, dim]).index_select(0, &positions);
    let targets = flat_targets.index_select(0, &positions);
    let table = model.output_table();
    let num_items = table.size()[0] - 1;
    match loss {
        LossKind::FullSoftmax if config.future_targets > 1 => {
            let logits = hidden.matmul(&table.narrow(0, 1, num_items).tr());
            future_targets_loss(
                &logits,
                batch_targets,
                &positions,
                config.future_targets,
                label_smoothing,
            )
        }
        LossKind::FullSoftmax => {
            let logits = hidden.matmul(&table.narrow(0, 1, num_items).tr());
            logits.cross_entropy_loss::<Tensor>(
                &(targets - 1),
                None,
                Reduction::Mean,
                -100,
                label_smoothing,
            )
        }
        LossKind::SampledSoftmax { negatives } => {
            let negative_items = Tensor::randint_low(
                1,
                num_items + 1,
                [negatives],
                (Kind::Int64, tch::Device::Cpu),
            );
            let positive_logits =
                (&hidden * table.index_select(0, &targets)).sum_dim_intlist(-1, true, Kind::Float);
            let accidental_hits = targets.unsqueeze(1).eq_tensor(&negative_items.unsqueeze(0));
            let negative_logits = hidden
                .matmul(&table.index_select(0, &negative_items).tr())
                .masked_fill(&accidental_hits, f64::NEG_INFINITY);
            let logits = Tensor::cat(&[positive_logits, negative_logits], 1);
            let labels = Tensor::zeros([logits.size()[0]], (Kind::Int64, tch::Device::Cpu));
            logits.cross_entropy_loss::<Tensor>(
                &labels,
                None,
                Reduction::Mean,
                -100,
                label_smoothing,
            )
        }
    }
}

/// Mean cross-entropy of the `[positions, items]` logits against each of the next `horizon`
/// items of every position (`batch_targets` is `[batch, len]`, the next item at each position;
/// a position's k-th next item is the target `k - 1` columns to its right, 0 past the window).
fn future_targets_loss(
    logits: &Tensor,
    batch_targets: &Tensor,
    positions: &Tensor,
    horizon: usize,
    label_smoothing: f64,
) -> Tensor {
    let log_probs = logits.log_softmax(-1, Kind::Float);
    let smoothing_term = -log_probs.mean_dim(-1, false, Kind::Float);
    let (batch, len) = batch_targets.size2().expect("[batch, len] targets");
    let mut total = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
    let mut count = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
    for ahead in 0..(horizon as i64).min(len) {
        let shifted = Tensor::cat(
            &[
                batch_targets.narrow(1, ahead, len - ahead),
                Tensor::zeros([batch, ahead], (Kind::Int64, tch::Device::Cpu)),
            ],
            1,
        );
        let target = shifted.view([-1]).index_select(0, positions);
        let present = target.ne(0).to_kind(Kind::Float);
        let picked = log_probs
            .gather(1, &(target - 1).clamp_min(0).unsqueeze(1), false)
            .squeeze_dim(1);
        let per_target = -picked * (1.0 - label_smoothing) + &smoothing_term * label_smoothing;
        total += (per_target * &present).sum(Kind::Float);
        count += present.sum(Kind::Float);
    }
    total / count
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
    fn the_next_item_alone_is_plain_cross_entropy_and_later_items_add_targets() {
        tch::manual_seed(3);
        let logits = Tensor::randn([5, 6], (Kind::Float, tch::Device::Cpu));
        // Two windows of 3 positions; the first is left-padded by one.
        let batch_targets = Tensor::from_slice(&[0i64, 2, 5, 1, 3, 4]).view([2, 3]);
        let positions = batch_targets.view([-1]).ne(0).nonzero().squeeze_dim(1);
        let next = batch_targets.view([-1]).index_select(0, &positions);
        for smoothing in [0.0, 0.1] {
            let expected = logits.cross_entropy_loss::<Tensor>(
                &(&next - 1),
                None,
                Reduction::Mean,
                -100,
                smoothing,
            );
            let actual = future_targets_loss(&logits, &batch_targets, &positions, 1, smoothing);
            let difference = (expected - actual).abs().double_value(&[]);
            assert!(difference < 1e-6, "smoothing {smoothing}: {difference}");
        }
        // Two ahead: five next-item targets, and the item after next where the window has one
        // (rows 0, 2 and 3; the last position of each window has none).
        let log_probs = logits.log_softmax(-1, Kind::Float);
        let nll = |row: i64, item: i64| -log_probs.double_value(&[row, item - 1]);
        let next_items = nll(0, 2) + nll(1, 5) + nll(2, 1) + nll(3, 3) + nll(4, 4);
        let after_next = nll(0, 5) + nll(2, 3) + nll(3, 4);
        let expected = (next_items + after_next) / 8.0;
        let two_ahead = future_targets_loss(&logits, &batch_targets, &positions, 2, 0.0);
        assert!((two_ahead.double_value(&[]) - expected).abs() < 1e-5);
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
