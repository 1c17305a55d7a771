//! The model behind the pipeline: the in-process embedder, or `recsys model-server` over HTTP.
//! Both answer the same questions with the same types, so the pipeline cannot tell them apart.

use std::time::Duration;

use model_server::embedder::add_unknown_candidates;
use model_server::{EmbedError, Embedder};
use schemas::{
    ModelMetadata, ModelServerRequest, PredictResponse, QueryEmbeddingsResponse, RetrieveContext,
};

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
    /// Whether calls do their work on the calling thread (`run_short`), with no network in
    /// between: the retriever then runs a request's stages in one blocking section.
    fn is_in_process(&self) -> bool {
        false
    }
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
    fn is_in_process(&self) -> bool {
        // A model without the kernel waits for the batching thread: not work done in place.
        self.embedder.embeds_on_caller()
    }

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

/// `recsys model-server` (or the tutorial's BentoML service) over HTTP.
pub struct HttpModel {
    client: reqwest::Client,
    base_url: String,
}

impl HttpModel {
    pub fn new(base_url: &str, timeout: Duration) -> Result<HttpModel, ModelError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|error| ModelError::Unavailable(error.to_string()))?;
        Ok(HttpModel {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        ctx: RetrieveContext,
    ) -> Result<T, ModelError> {
        let response = self
            .client
            .post(format!("{}/{endpoint}", self.base_url))
            .json(&ModelServerRequest { ctx })
            .send()
            .await
            .map_err(|error| ModelError::Unavailable(format!("{endpoint}: {error}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            let body: schemas::ErrorBody = response
                .json()
                .await
                .map_err(|error| ModelError::Unavailable(format!("{endpoint}: {error}")))?;
            if body.error.code == "empty_sequence" {
                return Err(ModelError::EmptySequence {
                    unknown_items: Vec::new(),
                });
            }
            return Err(ModelError::Unavailable(format!(
                "{endpoint}: {}",
                body.error.message
            )));
        }
        if !status.is_success() {
            return Err(ModelError::Unavailable(format!(
                "{endpoint}: HTTP {status}"
            )));
        }
        response
            .json()
            .await
            .map_err(|error| ModelError::Unavailable(format!("{endpoint}: {error}")))
    }
}

/// The model server says only that no item was usable: then every item of the sequence was unknown.
fn all_unknown_if_empty(items: &[String]) -> impl FnOnce(ModelError) -> ModelError + '_ {
    move |error| match error {
        ModelError::EmptySequence { .. } => ModelError::EmptySequence {
            unknown_items: items.to_vec(),
        },
        other => other,
    }
}

fn context(items: &[String], candidates: &[String]) -> RetrieveContext {
    RetrieveContext {
        user_ids_raw: Vec::new(),
        item_seq_raw: vec![items.to_vec()],
        candidate_items_raw: candidates.to_vec(),
    }
}

#[async_trait::async_trait]
impl QueryModel for HttpModel {
    fn backend(&self) -> &'static str {
        "http"
    }

    async fn metadata(&self) -> Result<ModelMetadata, ModelError> {
        let response = self
            .client
            .get(format!("{}/metadata", self.base_url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| ModelError::Unavailable(format!("metadata: {error}")))?;
        response
            .json()
            .await
            .map_err(|error| ModelError::Unavailable(format!("metadata: {error}")))
    }

    async fn query(&self, items: &[String]) -> Result<Query, ModelError> {
        let response: QueryEmbeddingsResponse = self
            .post("get_query_embeddings", context(items, &[]))
            .await
            .map_err(all_unknown_if_empty(items))?;
        let vector = response.query_embedding.into_iter().next().ok_or_else(|| {
            ModelError::Unavailable("model server returned no query embedding".into())
        })?;
        Ok(Query {
            vector,
            unknown_items: response.unknown_items,
        })
    }

    async fn score_candidates(
        &self,
        items: &[String],
        candidates: &[String],
    ) -> Result<(Vec<Option<f32>>, Vec<String>), ModelError> {
        let response: PredictResponse = self
            .post("predict", context(items, candidates))
            .await
            .map_err(all_unknown_if_empty(items))?;
        Ok((response.scores, response.unknown_items))
    }
}
