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
    #[schema(schema_with = crate::openapi::ids, example = json!(["50", "181"]))]
    pub item_ids: Vec<String>,
}

/// `POST /items/search_by_title`, as the tutorial's web app sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TitleSearchRequest {
    #[schema(schema_with = crate::openapi::query, example = "star wars")]
    pub query: String,
    /// At most this many items (1-1000, default 10).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A count sent as JSON's number: `10` or `10.0` (JSON Schema's integer takes both, and clients
/// in languages without integers send the second).
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(usize::try_from(whole).unwrap_or(usize::MAX)));
    }
    match number.as_f64() {
        Some(float) if float.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&float) => {
            Ok(Some(float as usize))
        }
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a whole number from 0"
        ))),
    }
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
