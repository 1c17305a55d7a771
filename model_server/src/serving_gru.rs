//! The native GRU model as served: libtorch for batches, the plain-Rust kernel for single
//! sequences.

use std::sync::Arc;

use tch::Tensor;

use crate::encoder::{SequenceEncoder, SingleSequenceEncoder};
use crate::gru_kernel::GruKernel;
use crate::model::SequenceModel;

/// A native GRU model: libtorch for batches, the kernel for single sequences.
pub struct ServingGru {
    model: SequenceModel,
    kernel: Arc<GruKernel>,
}

impl ServingGru {
    pub fn new(model: SequenceModel) -> Result<ServingGru, String> {
        let config = model.config();
        let kernel = GruKernel::from_variables(
            &model.var_store().variables(),
            config.embedding_dim as usize,
            config.max_len as usize,
        )?;
        Ok(ServingGru {
            model,
            kernel: Arc::new(kernel),
        })
    }
}

impl SequenceEncoder for ServingGru {
    fn encode(&self, item_indices: &Tensor) -> Result<Tensor, tch::TchError> {
        self.model.encode(item_indices)
    }

    fn single_sequence_encoder(&self) -> Option<Arc<dyn SingleSequenceEncoder>> {
        Some(Arc::clone(&self.kernel) as Arc<dyn SingleSequenceEncoder>)
    }
}
