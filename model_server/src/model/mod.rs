//! The sequence model: an item embedding table shared between input and output, and an encoder
//! (causal self-attention, SASRec-style, or a GRU) whose output at the last position is the query
//! vector. Score of an item = dot product of the query with the item's embedding.
//!
//! Sequences are left-padded with index 0, so the most recent item is always the last column.
//! Position embeddings count from the end (the most recent item has position 0), which keeps a
//! sequence's encoding independent of how far its batch was padded.

use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

pub use dataset::bundle::{EncoderKind, ModelConfig};

use crate::encoder::SequenceEncoder;
use crate::item_features::ItemFeatures;
use self_attention::SelfAttentionEncoder;

mod self_attention;
#[cfg(test)]
mod tests;

pub struct SequenceModel {
    config: ModelConfig,
    var_store: nn::VarStore,
    item_embedding: nn::Embedding,
    /// Training only: attribute embeddings added to each item's own (see `item_features`).
    attributes: Option<ItemAttributes>,
    encoder: EncoderNetwork,
}

struct ItemAttributes {
    /// `[num_items + 1, width]` attribute indices, 0 = none.
    indices: Tensor,
    embedding: nn::Embedding,
}

/// Name of the item table in the weights file; serving weights hold the attributes folded into it.
const ITEM_TABLE_WEIGHT: &str = "item_embedding.weight";
const ATTRIBUTES_PATH: &str = "item_attributes";

enum EncoderNetwork {
    SelfAttention(SelfAttentionEncoder),
    Gru(GruEncoder),
}

/// An embedding table whose row 0 is padding: no gradient, and exactly zero (`padding_idx` only
/// stops the gradient).
fn padded_embedding(path: nn::Path, rows: i64, dim: i64, init: nn::Init) -> nn::Embedding {
    let embedding = nn::embedding(
        path,
        rows,
        dim,
        nn::EmbeddingConfig {
            padding_idx: 0,
            ws_init: init,
            ..Default::default()
        },
    );
    tch::no_grad(|| {
        let _ = embedding.ws.get(0).zero_();
    });
    embedding
}

impl SequenceModel {
    /// Builds a freshly initialised model (seed with `tch::manual_seed` first for repeatability).
    pub fn new(config: ModelConfig) -> SequenceModel {
        SequenceModel::with_item_features(config, None)
    }

    /// A fresh model whose item representation is the item's embedding plus the embeddings of
    /// its attributes.
    pub fn with_item_features(
        config: ModelConfig,
        features: Option<&ItemFeatures>,
    ) -> SequenceModel {
        let var_store = nn::VarStore::new(Device::Cpu);
        let root = var_store.root();
        let embedding_init = nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0 / (config.embedding_dim as f64).sqrt(),
        };
        let item_embedding = padded_embedding(
            &root / "item_embedding",
            config.num_items + 1,
            config.embedding_dim,
            embedding_init,
        );
        let attributes = features.map(|features| {
            let embedding = padded_embedding(
                &root / ATTRIBUTES_PATH,
                features.vocabulary_size + 1,
                config.embedding_dim,
                embedding_init,
            );
            ItemAttributes {
                indices: features.indices.shallow_clone(),
                embedding,
            }
        });
        let encoder = match config.encoder {
            EncoderKind::Sasrec => {
                EncoderNetwork::SelfAttention(SelfAttentionEncoder::new(&root / "encoder", &config))
            }
            EncoderKind::Gru => EncoderNetwork::Gru(GruEncoder::new(&root / "encoder", &config)),
        };
        SequenceModel {
            config,
            var_store,
            item_embedding,
            attributes,
            encoder,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.var_store
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.var_store
    }

    /// Hidden state at every position, `[batch, len, dim]`; position `t` has read items `..=t`.
    pub fn hidden_states(&self, item_indices: &Tensor, train: bool) -> Tensor {
        let not_padding = item_indices.ne(0);
        let embedded = match &self.attributes {
            None => self.item_embedding.forward(item_indices),
            Some(_) => Tensor::embedding(&self.embedding_table(), item_indices, 0, false, false),
        };
        match &self.encoder {
            EncoderNetwork::SelfAttention(encoder) => {
                encoder.forward(&embedded, &not_padding, train)
            }
            EncoderNetwork::Gru(encoder) => encoder.forward(&embedded, train),
        }
    }

    /// The whole item table including the padding row, `[num_items + 1, dim]`: each item's
    /// embedding plus, when trained with attributes, the sum of its attributes' embeddings.
    pub fn embedding_table(&self) -> Tensor {
        match &self.attributes {
            None => self.item_embedding.ws.shallow_clone(),
            Some(attributes) => {
                &self.item_embedding.ws
                    + attributes
                        .embedding
                        .forward(&attributes.indices)
                        .sum_dim_intlist(1, false, Kind::Float)
            }
        }
    }

    /// Item vectors of the real items, `[num_items, dim]`; row `i` is model index `i + 1`.
    pub fn item_vectors(&self) -> Tensor {
        tch::no_grad(|| {
            self.embedding_table()
                .narrow(0, 1, self.config.num_items)
                .detach()
                .copy()
        })
    }

    /// The weights a bundle stores: the attributes folded into the item table, so the served
    /// model is a plain `SequenceModel` of the same `ModelConfig` that scores exactly as this one.
    pub fn serving_weights(&self) -> Vec<(String, Tensor)> {
        let item_table = tch::no_grad(|| self.embedding_table().detach().copy());
        let mut weights: Vec<(String, Tensor)> = self
            .var_store
            .variables()
            .into_iter()
            .filter(|(name, _)| !name.starts_with(ATTRIBUTES_PATH))
            .map(|(name, tensor)| {
                let tensor = if name == ITEM_TABLE_WEIGHT {
                    item_table.shallow_clone()
                } else {
                    tensor.detach()
                };
                (name, tensor)
            })
            .collect();
        weights.sort_by(|left, right| left.0.cmp(&right.0));
        weights
    }
}

impl SequenceEncoder for SequenceModel {
    fn encode(&self, item_indices: &Tensor) -> Result<Tensor, tch::TchError> {
        Ok(tch::no_grad(|| {
            self.hidden_states(item_indices, false).select(1, -1)
        }))
    }
}

struct GruEncoder {
    gru: nn::GRU,
    projection: nn::Linear,
    dropout: f64,
}

impl GruEncoder {
    fn new(path: nn::Path, config: &ModelConfig) -> Self {
        let dim = config.embedding_dim;
        // One layer: RNNConfig's dropout flag is fixed at construction, so dropout is applied
        // around the GRU instead, where train/eval can be chosen per call.
        let gru = nn::gru(
            &path / "gru",
            dim,
            dim,
            nn::RNNConfig {
                batch_first: true,
                num_layers: 1,
                ..Default::default()
            },
        );
        GruEncoder {
            gru,
            projection: nn::linear(&path / "projection", dim, dim, Default::default()),
            dropout: config.dropout,
        }
    }

    fn forward(&self, embedded: &Tensor, train: bool) -> Tensor {
        let (outputs, _) = self.gru.seq(&embedded.dropout(self.dropout, train));
        self.projection
            .forward(&outputs.dropout(self.dropout, train))
    }
}

/// Left-pads index sequences into one `[batch, max_len]` int64 tensor; longer sequences keep their
/// most recent `max_len` items.
pub fn left_padded_batch<S: AsRef<[i64]>>(sequences: &[S], max_len: usize) -> Tensor {
    // Always the full width: a GRU reads padding, so a sequence's query must not depend on how
    // long the other sequences of its batch are (training pads every window to `max_len` too).
    let width = max_len.max(1);
    let mut flat = vec![0i64; sequences.len() * width];
    for (row, sequence) in sequences.iter().enumerate() {
        let sequence = sequence.as_ref();
        let recent = &sequence[sequence.len().saturating_sub(width)..];
        let row_end = (row + 1) * width;
        flat[row_end - recent.len()..row_end].copy_from_slice(recent);
    }
    Tensor::from_slice(&flat).view([sequences.len() as i64, width as i64])
}

#[cfg(test)]
mod padding_tests {
    use super::*;

    #[test]
    fn left_pads_to_max_len_and_truncates_to_the_most_recent() {
        let batch = left_padded_batch(&[vec![1i64, 2], vec![3, 4, 5, 6, 7], vec![]], 4);
        assert_eq!(batch.size(), [3, 4]);
        let rows: Vec<i64> = Vec::try_from(batch.view([-1])).unwrap();
        assert_eq!(rows, [0, 0, 1, 2, 4, 5, 6, 7, 0, 0, 0, 0]);
        let short = left_padded_batch(&[vec![9i64]], 4);
        assert_eq!(short.size(), [1, 4]);
        assert_eq!(left_padded_batch::<Vec<i64>>(&[], 4).size(), [0, 4]);
    }
}
