//! Finding items: title search and lookup by ids, in our `GET` forms and in the `POST` shapes the
//! tutorial's web app calls.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /items/search?q=`: the matching items, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemSearchResponse {
    pub query: String,
    /// Each item's payload with the live catalogue over it, plus `score` (1.0: every word
    /// matched exactly).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /items/get_by_ids`, as the tutorial's web app sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemsByIdsRequest {
    #[schema(example = json!(["50", "181"]))]
    pub item_ids: Vec<String>,
}

/// `POST /items/search_by_title`, as the tutorial's web app sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TitleSearchRequest {
    #[schema(example = "star wars")]
    pub query: String,
    /// At most this many items (1-1000, default 10).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One match of a title search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TitleMatchInfo {
    pub item_id: String,
    pub title: String,
    pub score: f64,
}

/// `POST /items/search_by_title`: the items, best first, and each match's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TitleSearchResponse {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Map<String, serde_json::Value>>,
    pub debug_info: Vec<TitleMatchInfo>,
}
