//! Wire types shared by every recsys component.
//!
//! Field names follow the Python tutorial API this system replaces (`user_ids_raw`,
//! `item_seq_raw`, `candidate_items_raw`), so existing clients keep working unchanged.

mod error;
mod model_server;
mod recommendations;
mod retrieve;
mod status;

pub use error::{ErrorBody, ErrorDetail};
pub use model_server::{
    ModelMetadata, ModelServerRequest, PredictResponse, QueryEmbeddingsResponse,
    SeqRetrieverEndpoint, SeqRetrieverRequest, SeqRetrieverResponse,
};
pub use recommendations::{
    RecommendationMetadata, RecommendationSource, RecommendationsResponse, RecommendedItem,
};
pub use retrieve::RetrieveContext;
pub use status::{ItemsResponse, ReadinessResponse, UserHistoryResponse};
