//! The recommendation API's answers: `POST /recs/retrieve` and `GET /recs/popular`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::RetrieveContext;

/// One recommended item: its id, its score and its metadata from the index (title, year, genres,
/// popularity, ...), flattened as the tutorial's API returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendedItem {
    pub item_id: String,
    pub score: f64,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationSource {
    Personalized,
    Popular,
    Cache,
    /// `GET /items/{item_id}/similar`: nearest items to one item.
    Similar,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendationMetadata {
    /// The request id, also sent as the `x-request-id` header.
    pub rec_id: String,
    /// The model that produced the list; absent for popular items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The bundle whose item vectors the served index holds; equal to the serving model's
    /// version, or the answer is popular items with `model_index_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_bundle: Option<String>,
    pub source: RecommendationSource,
    /// Why the answer is popular items: `no_history`, `unknown_items`, `store_unavailable`,
    /// `model_unavailable`, `index_unavailable`, `timeout` or `model_index_mismatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Items of the request or the history that the model does not know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_items: Vec<String>,
    /// Per-stage timings in microseconds, with `debug=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub timings: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendationsResponse {
    pub recommendations: Vec<RecommendedItem>,
    /// The request context as received (empty for `GET /recs/popular`).
    pub ctx: RetrieveContext,
    pub metadata: RecommendationMetadata,
    /// With `debug=true`, as the tutorial's API answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_info: Option<RetrieveDebugInfo>,
}

/// How an answer was made: stage timings and the sequence the model embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetrieveDebugInfo {
    /// Microseconds per stage (`state_micros`, `embed_micros`, `search_micros`,
    /// `payload_micros`, `total_micros`), as `metadata.timings`.
    #[schema(value_type = Object)]
    pub timings: serde_json::Value,
    /// The stored history merged with the session, most recent last, as it went to the model;
    /// empty when no model was asked (a popular answer, a pushed list).
    pub merged_sequence: Vec<String>,
}
