//! Wire types shared by every recsys component.
//!
//! Field names follow the Python tutorial API this system replaces (`user_ids_raw`,
//! `item_seq_raw`, `candidate_items_raw`), so existing clients keep working unchanged.

mod catalogue;
mod constraints;
mod error;
mod event;
mod model_server;
mod recommendations;
mod retrieve;
mod search;
mod status;

pub use catalogue::{
    Attributes, CatalogueItemResponse, ItemUpsert, ItemsUpserted, MAX_TITLE_CHARS,
};
pub use constraints::{MAX_ID_CHARS, MAX_ITEMS_PER_REQUEST, MAX_QUERY_CHARS};
pub use error::{ErrorBody, ErrorDetail};
pub use event::{
    id_problem, EventLimits, EventRef, EventRejection, EventType, InteractionEvent,
    RejectionReason, DEFAULT_MAX_EVENT_BYTES, EARLIEST_EVENT_TIME_MS, MAX_CLOCK_SKEW_MS,
};
/// Schemas of the rules the server checks, for the OpenAPI document (`schema_with`).
pub mod openapi {
    pub use crate::constraints::{id, id_list, ids, query, sessions, title};
}
pub use model_server::{
    ModelMetadata, ModelServerRequest, PredictResponse, QueryEmbeddingsResponse,
    SeqRetrieverDebugInfo, SeqRetrieverEndpoint, SeqRetrieverRequest, SeqRetrieverResponse,
    SeqRetrieverResult,
};
pub use recommendations::{
    RecommendationMetadata, RecommendationSource, RecommendationsResponse, RecommendedItem,
    RetrieveDebugInfo,
};
pub use retrieve::RetrieveContext;
pub use search::{
    ItemSearchResponse, ItemsByIdsRequest, TitleMatchInfo, TitleSearchRequest, TitleSearchResponse,
};
pub use status::{
    EventsAccepted, ItemsResponse, ReadinessResponse, UserForgotten, UserHistoryResponse,
};

/// The JSON Schema (draft 2020-12) of [`InteractionEvent`], as committed in
/// `schemas/json/interaction_event.schema.json` for producers in other languages.
pub fn event_json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(InteractionEvent)).expect("a schema is JSON")
}
