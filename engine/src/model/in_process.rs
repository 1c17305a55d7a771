//! The embedder in this process: no network between the pipeline and the model.

use dataset::id_map::add_unknown_candidates;
use model_server::{EmbedError, Embedder};
use schemas::ModelMetadata;

use super::{ModelError, Query, QueryModel};

pub struct InProcessModel {
    embedder: Embedder,
}

impl InProcessModel {
    pub fn new(embedder: Embedder) -> InProcessModel {
        InProcessModel { embedder }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }
}

fn from_embed_error(error: EmbedError) -> ModelError {
    match error {
        EmbedError::EmptySequence { unknown_items } => ModelError::EmptySequence { unknown_items },
        other => ModelError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl QueryModel for InProcessModel {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn metadata(&self) -> Result<ModelMetadata, ModelError> {
        Ok(ModelMetadata {
            model_name: self.embedder.model_name().to_owned(),
            model_version: self.embedder.model_version().to_owned(),
        })
    }

    async fn query(&self, items: &[String]) -> Result<Query, ModelError> {
        let embedding = self.embedder.embed(items).await.map_err(from_embed_error)?;
        Ok(Query {
            vector: embedding.vector,
            unknown_items: embedding.unknown_items,
        })
    }

    async fn query_many(&self, sequences: &[Vec<String>]) -> Vec<Result<Query, ModelError>> {
        self.embedder
            .embed_each(sequences)
            .await
            .into_iter()
            .map(|embedding| {
                embedding.map_err(from_embed_error).map(|embedding| Query {
                    vector: embedding.vector,
                    unknown_items: embedding.unknown_items,
                })
            })
            .collect()
    }

    async fn score_candidates(
        &self,
        items: &[String],
        candidates: &[String],
    ) -> Result<(Vec<Option<f32>>, Vec<String>), ModelError> {
        let query = self.query(items).await?;
        let scores = self.embedder.score_candidates(&query.vector, candidates);
        // Unknown candidates are reported next to unknown sequence items, as the model server does.
        let mut unknown_items = query.unknown_items;
        add_unknown_candidates(candidates, &scores, &mut unknown_items);
        Ok((scores, unknown_items))
    }
}
