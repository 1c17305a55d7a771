//! The shop's catalogue on the wire: items added, changed and removed while the system runs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::event::id_problem;

pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 1_000;

/// Names answers use for their own fields, so attributes cannot take them.
const RESERVED_ATTRIBUTES: [&str; 4] = ["item_id", "title", "available", "score"];

/// One item of `POST /items` (a whole line of NDJSON, or the whole JSON body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemUpsert {
    /// The shop's id of the item, as events name it.
    #[schema(schema_with = crate::openapi::id)]
    pub item_id: String,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::title)]
    pub title: Option<String>,
    /// Anything else the shop knows (genres, year, price, ...), returned with recommendations.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Attributes,
    /// `false` removes the item from every answer at once (searches, popular lists, pushed
    /// recommendations); `true` (the default) makes it available again.
    #[serde(default = "available_by_default")]
    pub available: bool,
}

fn available_by_default() -> bool {
    true
}

impl ItemUpsert {
    /// Parses and checks one item; the error names the field and the problem.
    pub fn decode(json: &[u8]) -> Result<ItemUpsert, String> {
        let item: ItemUpsert = serde_json::from_slice(json).map_err(|error| error.to_string())?;
        item.problem().map_or(Ok(item), Err)
    }

    fn problem(&self) -> Option<String> {
        if let Some(problem) = id_problem(&self.item_id) {
            return Some(format!("item_id {problem}"));
        }
        if let Some(title) = &self.title {
            let chars = title.chars().count();
            if title.trim().is_empty() {
                return Some("title is empty (leave it out instead)".into());
            }
            if chars > MAX_TITLE_CHARS {
                return Some(format!(
                    "title is {chars} characters, the limit is {MAX_TITLE_CHARS}"
                ));
            }
        }
        RESERVED_ATTRIBUTES
            .iter()
            .find(|name| self.attributes.contains_key(**name))
            .map(|name| format!("attributes.{name} is reserved for the answer's own field"))
    }
}

/// `POST /items`: every item is stored and this replica's answers already reflect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemsUpserted {
    pub upserted: usize,
}

/// `GET /items/{item_id}`: what the shop said about the item, and whether the index holds a
/// vector for it (items without one can only appear as popular or fresh items).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogueItemResponse {
    pub item_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Attributes,
    pub available: bool,
    /// When the shop last changed it; absent for items known only from the training data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<i64>,
    pub in_index: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_checked_field_by_field() {
        let item = ItemUpsert::decode(br#"{"item_id": "sku-1", "title": "Mug"}"#).unwrap();
        assert!(item.available && item.attributes.is_empty());
        let problem = |json: &str| ItemUpsert::decode(json.as_bytes()).unwrap_err();
        assert!(problem(r#"{"item_id": ""}"#).contains("item_id is empty"));
        assert!(problem(r#"{"item_id": "a", "colour": "red"}"#).contains("unknown field `colour`"));
        assert!(problem(r#"{"title": "x"}"#).contains("missing field `item_id`"));
        assert!(problem(r#"{"item_id": "a", "available": "no"}"#).contains("invalid type"));
        assert!(problem(r#"{"item_id": "a", "title": " "}"#).contains("title is empty"));
        let long = format!(r#"{{"item_id": "a", "title": "{}"}}"#, "x".repeat(1001));
        assert!(problem(&long).contains("title is 1001 characters"));
        assert!(
            problem(r#"{"item_id": "a", "attributes": {"item_id": "b"}}"#)
                .contains("attributes.item_id is reserved")
        );
        assert!(problem(r#"{"item_id": "a", "attributes": []}"#).contains("invalid type"));
    }
}
