//! Answers of the API's operational and lookup routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /readyz`: each dependency's state, `"ok"` or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessResponse {
    pub ready: bool,
    /// `store`, `index` and `model`, each `"ok"`, the error, or `"timed out"`.
    pub dependencies: BTreeMap<String, String>,
}

/// `GET /users/{user_id}/history`: what the store keeps for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserHistoryResponse {
    pub user_id: String,
    /// The recent sequence, oldest first.
    pub recent_items: Vec<String>,
    /// How many distinct items count as seen (excluded from recommendations).
    pub seen_items: usize,
    /// Event time of the newest applied event, when events came from the stream.
    pub newest_event_time_ms: Option<i64>,
}

/// `DELETE /users/{user_id}`: what an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserForgotten {
    pub user_id: String,
    /// Whether the store held a history or a pushed list of the user.
    pub state_removed: bool,
    /// Events of the user taken out of the event archive.
    pub archived_events_removed: usize,
}

/// `GET /items?ids=a,b`: item metadata in request order; ids the index does not hold are listed apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemsResponse {
    /// Each item's payload (title, year, genres, popularity) with its `item_id`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Map<String, serde_json::Value>>,
    pub unknown_items: Vec<String>,
}

/// `POST /events`: every event of the request is durable (in Kafka with `acks=all`, or applied
/// to the persistent store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventsAccepted {
    pub accepted: usize,
    /// Where they went: `kafka` or `embedded`.
    pub log: String,
}
