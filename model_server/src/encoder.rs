//! What turns item index sequences into query vectors, as the embedder sees it.

use std::sync::Arc;

use tch::Tensor;

/// Anything that turns left-padded item index sequences `[batch, len]` (int64) into query vectors
/// `[batch, dim]` (float): the native model, or a TorchScript module exported from Python.
pub trait SequenceEncoder: Send {
    fn encode(&self, item_indices: &Tensor) -> Result<Tensor, tch::TchError>;

    /// A libtorch-free path for single sequences, for encoders that have one.
    fn single_sequence_encoder(&self) -> Option<Arc<dyn SingleSequenceEncoder>> {
        None
    }
}

/// Encodes one sequence without libtorch. It must equal [`SequenceEncoder::encode`] of the
/// sequence left-padded to `max_len`. Unlike the encoder it can be shared by threads, so callers
/// run it where they are instead of queueing for the batching thread.
pub trait SingleSequenceEncoder: Send + Sync {
    /// The query of one sequence of model indices (most recent last; the last `max_len` count).
    fn encode(&self, item_indices: &[i64]) -> Vec<f32>;
}
