use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::RetrieveContext;

/// Body of the model server's endpoints, as BentoML wrapped them: `{"ctx": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelServerRequest {
    pub ctx: RetrieveContext,
    /// Answer with this model version (the one the caller's index was built for): a server that
    /// swapped to a promoted bundle still answers with the one it replaced. 409 when the server
    /// holds neither. Not in the tutorial's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
}

/// Which model produced an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata {
    pub model_name: String,
    pub model_version: String,
}

/// `POST /get_query_embeddings`: one query vector per row of `item_seq_raw`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryEmbeddingsResponse {
    pub query_embedding: Vec<Vec<f32>>,
    pub metadata: ModelMetadata,
    pub ctx: RetrieveContext,
    /// Items of the sequences the model does not know; they were dropped before embedding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_items: Vec<String>,
}

/// `POST /predict`: the score of each candidate for the first sequence, in request order; `null`
/// for a candidate the model does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PredictResponse {
    pub scores: Vec<Option<f32>>,
    pub metadata: ModelMetadata,
    pub ctx: RetrieveContext,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_items: Vec<String>,
}

/// Which model-server endpoint `POST /vendor/seq_retriever` forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeqRetrieverEndpoint {
    GetQueryEmbeddings,
    Predict,
}

/// `POST /vendor/seq_retriever`: direct access to the model, for debugging, as the tutorial's API
/// offers it. The context goes to the model as sent (no stored history is merged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeqRetrieverRequest {
    pub ctx: RetrieveContext,
    pub endpoint: SeqRetrieverEndpoint,
    /// Adds `debug_info` (the model backend and how long it took) to the answer.
    #[serde(default)]
    pub debug: bool,
}

/// The model's answer for the requested endpoint, unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SeqRetrieverResult {
    QueryEmbeddings(QueryEmbeddingsResponse),
    Predict(PredictResponse),
}

/// `POST /vendor/seq_retriever`, as the tutorial's orchestrator answered it: the model server's
/// answer under `result` (the chapter reads `resp.result["query_embedding"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeqRetrieverResponse {
    pub result: SeqRetrieverResult,
    /// The request id (also the `x-request-id` header).
    pub rec_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_info: Option<SeqRetrieverDebugInfo>,
}

/// With `"debug": true`: which model answered and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeqRetrieverDebugInfo {
    /// `embedded` (in this process), `http` (a model server) or `untrained`.
    pub model_backend: String,
    pub model_micros: u64,
}
