//! What a deployment serves before its first model: a shop that starts collecting events has no
//! bundle yet, and the first `recsys retrain` trains one from those events. Until it is promoted
//! (and the bundle watcher swaps it in), every answer is popular items with the reason
//! `model_unavailable`, and events are accepted and archived as usual.

use schemas::ModelMetadata;

use crate::index::{IndexError, IndexedItem, ScoredItem, VectorIndex};
use crate::model::{ModelError, Query, QueryModel};

/// The model version answers report before the first bundle is promoted.
pub const UNTRAINED_VERSION: &str = "untrained";

const NOT_TRAINED: &str =
    "no model is trained yet: `recsys retrain` trains one from the events received";

/// The model slot before the first bundle.
pub struct UntrainedModel;

#[async_trait::async_trait]
impl QueryModel for UntrainedModel {
    fn backend(&self) -> &'static str {
        "untrained"
    }

    async fn metadata(&self) -> Result<ModelMetadata, ModelError> {
        Ok(ModelMetadata {
            model_name: UNTRAINED_VERSION.to_owned(),
            model_version: UNTRAINED_VERSION.to_owned(),
        })
    }

    async fn query(&self, _items: &[String]) -> Result<Query, ModelError> {
        Err(ModelError::Unavailable(NOT_TRAINED.to_owned()))
    }

    async fn score_candidates(
        &self,
        _items: &[String],
        _candidates: &[String],
    ) -> Result<(Vec<Option<f32>>, Vec<String>), ModelError> {
        Err(ModelError::Unavailable(NOT_TRAINED.to_owned()))
    }
}

/// The index slot before the first bundle: it holds no items.
pub struct EmptyIndex;

#[async_trait::async_trait]
impl VectorIndex for EmptyIndex {
    fn backend(&self) -> &'static str {
        "empty"
    }

    fn version(&self) -> &str {
        UNTRAINED_VERSION
    }

    fn bundle_version(&self) -> Option<&str> {
        None
    }

    async fn search(
        &self,
        _query: &[f32],
        _count: usize,
        _exclude: &[&str],
    ) -> Result<Vec<ScoredItem>, IndexError> {
        Err(IndexError::Unavailable(NOT_TRAINED.to_owned()))
    }

    async fn items(&self, _item_ids: &[String]) -> Result<Vec<IndexedItem>, IndexError> {
        Ok(Vec::new())
    }

    async fn all_items(&self) -> Result<Vec<IndexedItem>, IndexError> {
        Ok(Vec::new())
    }

    async fn item_vector(&self, _item_id: &str) -> Result<Option<Vec<f32>>, IndexError> {
        Ok(None)
    }

    async fn ping(&self) -> Result<(), IndexError> {
        Ok(())
    }
}
