//! The SASRec-style encoder: pre-layer-norm causal self-attention blocks over item embeddings
//! plus learned positions counted from the most recent item.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::ModelConfig;

pub(super) struct SelfAttentionEncoder {
    position_embedding: nn::Embedding,
    blocks: Vec<TransformerBlock>,
    final_norm: nn::LayerNorm,
    input_scale: f64,
    dropout: f64,
}

impl SelfAttentionEncoder {
    pub(super) fn new(path: nn::Path, config: &ModelConfig) -> Self {
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

    pub(super) fn forward(&self, embedded: &Tensor, not_padding: &Tensor, train: bool) -> Tensor {
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
