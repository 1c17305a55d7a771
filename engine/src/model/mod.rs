//! The model behind the pipeline: the in-process embedder (the `in-process-model` feature, which
//! links libtorch), or `recsys model-server` over HTTP (no libtorch). Both answer the same
//! questions with the same types, so the pipeline cannot tell them apart.

mod http;
#[cfg(feature = "in-process-model")]
mod in_process;

use schemas::ModelMetadata;

pub use http::HttpModel;
#[cfg(feature = "in-process-model")]
pub use in_process::InProcessModel;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// No item of the sequence is known to the model: answer with popular items.
    #[error("no item of the sequence is known to the model")]
    EmptySequence { unknown_items: Vec<String> },
    /// The model cannot answer now (stopped, failed, unreachable, timed out).
    #[error("model unavailable: {0}")]
    Unavailable(String),
}

/// A query vector and the items the model did not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub vector: Vec<f32>,
    pub unknown_items: Vec<String>,
}

#[async_trait::async_trait]
pub trait QueryModel: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    /// The served model's name and version (responses report the version).
    async fn metadata(&self) -> Result<ModelMetadata, ModelError>;
    async fn query(&self, items: &[String]) -> Result<Query, ModelError>;
    /// Queries for many sequences at once (the consumer's pushes); backends that can batch do.
    async fn query_many(&self, sequences: &[Vec<String>]) -> Vec<Result<Query, ModelError>> {
        let mut queries = Vec::with_capacity(sequences.len());
        for sequence in sequences {
            queries.push(self.query(sequence).await);
        }
        queries
    }
    /// Scores of `candidates` for the query of `items`, in order; `None` for unknown candidates.
    /// Also returns every unknown item, of the sequence and of the candidates.
    async fn score_candidates(
        &self,
        items: &[String],
        candidates: &[String],
    ) -> Result<(Vec<Option<f32>>, Vec<String>), ModelError>;
}
