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
