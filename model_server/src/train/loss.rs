//! The training loss: cross-entropy of each position's hidden state against the item table, over
//! every item (full softmax) or over shared sampled negatives.

use tch::{Kind, Reduction, Tensor};

use super::{LossKind, TrainConfig};
use crate::model::SequenceModel;

pub(super) fn batch_loss(
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
    let table = model.embedding_table();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
