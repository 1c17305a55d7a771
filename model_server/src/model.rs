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

pub struct SequenceModel {
    config: ModelConfig,
    var_store: nn::VarStore,
    item_embedding: nn::Embedding,
    /// Training only: attribute embeddings added to each item's own (see `item_features`).
    attributes: Option<ItemAttributes>,
    /// The table items are scored against, when it is not the input table.
    output_embedding: Option<nn::Embedding>,
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
        let item_embedding = nn::embedding(
            &root / "item_embedding",
            config.num_items + 1,
            config.embedding_dim,
            nn::EmbeddingConfig {
                padding_idx: 0,
                ws_init: embedding_init,
                ..Default::default()
            },
        );
        // `padding_idx` only stops gradients; make the padding row exactly zero as well.
        tch::no_grad(|| {
            let _ = item_embedding.ws.get(0).zero_();
        });
        let attributes = features.map(|features| {
            let embedding = nn::embedding(
                &root / ATTRIBUTES_PATH,
                features.vocabulary_size + 1,
                config.embedding_dim,
                nn::EmbeddingConfig {
                    padding_idx: 0,
                    ws_init: embedding_init,
                    ..Default::default()
                },
            );
            tch::no_grad(|| {
                let _ = embedding.ws.get(0).zero_();
            });
            ItemAttributes {
                indices: features.indices.shallow_clone(),
                embedding,
            }
        });
        let output_embedding = config.separate_output_embedding.then(|| {
            let table = nn::embedding(
                &root / "output_embedding",
                config.num_items + 1,
                config.embedding_dim,
                nn::EmbeddingConfig {
                    padding_idx: 0,
                    ws_init: embedding_init,
                    ..Default::default()
                },
            );
            tch::no_grad(|| {
                let _ = table.ws.get(0).zero_();
            });
            table
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
            output_embedding,
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

    /// The table queries are scored against, `[num_items + 1, dim]` with the padding row.
    pub fn output_table(&self) -> Tensor {
        match &self.output_embedding {
            Some(output) => output.ws.shallow_clone(),
            None => self.embedding_table(),
        }
    }

    /// Item vectors of the real items, `[num_items, dim]`; row `i` is model index `i + 1`.
    pub fn item_vectors(&self) -> Tensor {
        tch::no_grad(|| {
            self.output_table()
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

struct SelfAttentionEncoder {
    position_embedding: nn::Embedding,
    blocks: Vec<TransformerBlock>,
    final_norm: nn::LayerNorm,
    input_scale: f64,
    dropout: f64,
}

impl SelfAttentionEncoder {
    fn new(path: nn::Path, config: &ModelConfig) -> Self {
        let dim = config.embedding_dim;
        let position_embedding = nn::embedding(
            &path / "position_embedding",
            config.max_len,
            dim,
            nn::EmbeddingConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
                ..Default::default()
            },
        );
        let blocks = (0..config.num_layers)
            .map(|layer| TransformerBlock::new(&path / format!("block_{layer}"), config))
            .collect();
        SelfAttentionEncoder {
            position_embedding,
            blocks,
            final_norm: nn::layer_norm(&path / "final_norm", vec![dim], Default::default()),
            input_scale: (dim as f64).sqrt(),
            dropout: config.dropout,
        }
    }

    fn forward(&self, embedded: &Tensor, not_padding: &Tensor, train: bool) -> Tensor {
        let sequence_len = embedded.size()[1];
        let max_len = self.position_embedding.ws.size()[0];
        assert!(
            sequence_len <= max_len,
            "sequence of {sequence_len} items exceeds max_len {max_len}; callers truncate"
        );
        let positions_from_end =
            Tensor::arange(sequence_len, (Kind::Int64, embedded.device())).flip([0]);
        let keep = not_padding.unsqueeze(-1).to_kind(Kind::Float);
        let mut hidden = (embedded * self.input_scale
            + self.position_embedding.forward(&positions_from_end))
        .dropout(self.dropout, train)
            * &keep;
        let blocked = blocked_attention(not_padding);
        for block in &self.blocks {
            hidden = block.forward(&hidden, &blocked, train) * &keep;
        }
        self.final_norm.forward(&hidden)
    }
}

/// `[batch, 1, len, len]`, true where query position `i` must not attend to key position `j`:
/// future positions and padding. A position may always attend to itself, so a padded query row is
/// never fully blocked (which would make its softmax NaN); its output is ignored anyway.
fn blocked_attention(not_padding: &Tensor) -> Tensor {
    let sequence_len = not_padding.size()[1];
    let device = not_padding.device();
    let causal = Tensor::ones([sequence_len, sequence_len], (Kind::Float, device))
        .tril(0)
        .gt(0.5);
    let diagonal = Tensor::eye(sequence_len, (Kind::Float, device)).gt(0.5);
    let key_allowed = not_padding.unsqueeze(1).logical_or(&diagonal.unsqueeze(0));
    causal
        .unsqueeze(0)
        .logical_and(&key_allowed)
        .logical_not()
        .unsqueeze(1)
}

struct TransformerBlock {
    attention_norm: nn::LayerNorm,
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attention_output: nn::Linear,
    feed_forward_norm: nn::LayerNorm,
    feed_forward_in: nn::Linear,
    feed_forward_out: nn::Linear,
    num_heads: i64,
    dropout: f64,
}

impl TransformerBlock {
    fn new(path: nn::Path, config: &ModelConfig) -> Self {
        let dim = config.embedding_dim;
        let linear = |name: &str, input: i64, output: i64| {
            nn::linear(&path / name, input, output, Default::default())
        };
        TransformerBlock {
            attention_norm: nn::layer_norm(&path / "attention_norm", vec![dim], Default::default()),
            query: linear("query", dim, dim),
            key: linear("key", dim, dim),
            value: linear("value", dim, dim),
            attention_output: linear("attention_output", dim, dim),
            feed_forward_norm: nn::layer_norm(
                &path / "feed_forward_norm",
                vec![dim],
                Default::default(),
            ),
            feed_forward_in: linear("feed_forward_in", dim, 4 * dim),
            feed_forward_out: linear("feed_forward_out", 4 * dim, dim),
            num_heads: config.num_heads,
            dropout: config.dropout,
        }
    }

    fn forward(&self, input: &Tensor, blocked: &Tensor, train: bool) -> Tensor {
        let attended = self.attention(&self.attention_norm.forward(input), blocked, train);
        let hidden = input + attended.dropout(self.dropout, train);
        let feed_forward = self
            .feed_forward_out
            .forward(
                &self
                    .feed_forward_in
                    .forward(&self.feed_forward_norm.forward(&hidden))
                    .gelu("none")
                    .dropout(self.dropout, train),
            )
            .dropout(self.dropout, train);
        hidden + feed_forward
    }

    fn attention(&self, input: &Tensor, blocked: &Tensor, train: bool) -> Tensor {
        let (batch, sequence_len, dim) = input.size3().expect("[batch, len, dim]");
        let head_dim = dim / self.num_heads;
        let split_heads = |projected: Tensor| {
            projected
                .view([batch, sequence_len, self.num_heads, head_dim])
                .transpose(1, 2)
        };
        let query = split_heads(self.query.forward(input));
        let key = split_heads(self.key.forward(input));
        let value = split_heads(self.value.forward(input));
        let scores = query.matmul(&key.transpose(-2, -1)) / (head_dim as f64).sqrt();
        let weights = scores
            .masked_fill(blocked, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float)
            .dropout(self.dropout, train);
        let merged =
            weights
                .matmul(&value)
                .transpose(1, 2)
                .contiguous()
                .view([batch, sequence_len, dim]);
        self.attention_output.forward(&merged)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(encoder: EncoderKind) -> ModelConfig {
        ModelConfig {
            encoder,
            num_items: 20,
            embedding_dim: 8,
            max_len: 6,
            num_layers: 2,
            num_heads: 2,
            dropout: 0.0,
            separate_output_embedding: false,
        }
    }

    #[test]
    fn padding_does_not_change_the_query() {
        for encoder in [EncoderKind::Sasrec, EncoderKind::Gru] {
            tch::manual_seed(3);
            let model = SequenceModel::new(config(encoder));
            let short = Tensor::from_slice(&[4i64, 9, 2]).view([1, 3]);
            let padded = Tensor::from_slice(&[0i64, 0, 0, 4, 9, 2]).view([1, 6]);
            let difference = (model.encode(&short).unwrap() - model.encode(&padded).unwrap())
                .abs()
                .max()
                .double_value(&[]);
            match encoder {
                // Masking makes self-attention blind to padding.
                EncoderKind::Sasrec => assert!(difference < 1e-5, "{encoder}: {difference}"),
                // A GRU reads the zero padding vectors; it is only approximately invariant.
                EncoderKind::Gru => assert!(difference.is_finite()),
            }
        }
    }

    #[test]
    fn serving_weights_fold_attributes_into_the_item_table() {
        let items: Vec<dataset::data::ItemMetadata> = (1..=20)
            .map(|item| dataset::data::ItemMetadata {
                item_id: item.to_string(),
                title: String::new(),
                year: Some(1980 + item),
                genres: vec![format!("g{}", item % 3)],
            })
            .collect();
        let id_map = dataset::id_map::IdMap::from_raw_ids(
            items.iter().map(|item| item.item_id.clone()).collect(),
        )
        .unwrap();
        let features = ItemFeatures::build(
            crate::item_features::ItemFeatureSet::GenresYear,
            &items,
            &id_map,
        )
        .unwrap();
        for encoder in [EncoderKind::Sasrec, EncoderKind::Gru] {
            tch::manual_seed(11);
            let trained = SequenceModel::with_item_features(config(encoder), Some(&features));
            let served = SequenceModel::new(config(encoder));
            let weights: std::collections::HashMap<String, Tensor> =
                trained.serving_weights().into_iter().collect();
            let variables = served.var_store().variables();
            assert_eq!(
                weights.len(),
                variables.len(),
                "{encoder}: no attribute tables"
            );
            tch::no_grad(|| {
                for (name, mut variable) in variables {
                    variable.copy_(&weights[&name]);
                }
            });
            let attribute_part = (trained.item_vectors()
                - trained.item_embedding.ws.narrow(0, 1, 20))
            .abs()
            .max()
            .double_value(&[]);
            assert!(
                attribute_part > 1e-3,
                "{encoder}: attributes change the vectors"
            );
            let sequence = Tensor::from_slice(&[0i64, 0, 4, 9, 2, 17]).view([1, 6]);
            let difference = (trained.encode(&sequence).unwrap()
                - served.encode(&sequence).unwrap())
            .abs()
            .max()
            .double_value(&[])
                + (trained.item_vectors() - served.item_vectors())
                    .abs()
                    .max()
                    .double_value(&[]);
            assert!(difference < 1e-6, "{encoder}: {difference}");
        }
    }

    #[test]
    fn attention_is_causal_future_items_do_not_leak() {
        tch::manual_seed(5);
        let model = SequenceModel::new(config(EncoderKind::Sasrec));
        let first = Tensor::from_slice(&[0i64, 3, 7, 11, 5, 1]).view([1, 6]);
        let second = Tensor::from_slice(&[0i64, 3, 7, 11, 19, 20]).view([1, 6]);
        let hidden_first = model.hidden_states(&first, false);
        let hidden_second = model.hidden_states(&second, false);
        // Positions 0..=3 saw the same prefix, so they must be equal; position 4 differs.
        let prefix_difference = (hidden_first.narrow(1, 0, 4) - hidden_second.narrow(1, 0, 4))
            .abs()
            .max()
            .double_value(&[]);
        assert!(prefix_difference < 1e-5, "{prefix_difference}");
        let last_difference = (hidden_first.select(1, 5) - hidden_second.select(1, 5))
            .abs()
            .max()
            .double_value(&[]);
        assert!(last_difference > 1e-4);
    }

    #[test]
    fn padding_row_is_zero_and_outputs_are_finite() {
        tch::manual_seed(1);
        let model = SequenceModel::new(config(EncoderKind::Sasrec));
        let padding_norm = model
            .embedding_table()
            .get(0)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(padding_norm, 0.0);
        let all_padding_but_one = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 3]).view([1, 6]);
        let hidden = model.hidden_states(&all_padding_but_one, false);
        assert!(bool::try_from(hidden.isfinite().all()).unwrap());
        assert_eq!(model.item_vectors().size(), [20, 8]);
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
