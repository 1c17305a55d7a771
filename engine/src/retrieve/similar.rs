//! Item-to-item answers ("more like this"): the index's nearest items to one item's vector.

use super::{describe, Recommendation, Retriever};
use crate::index::IndexError;
use crate::store::{StoreError, UserState};

#[derive(Debug, thiserror::Error)]
pub enum SimilarError {
    #[error("item '{0}' is not in the index")]
    UnknownItem(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl Retriever {
    /// The `count` items whose vectors score highest against `item_id`'s (the dot product the
    /// model scores with), never the item itself nor an unavailable one, and, for a user, none
    /// they have seen. A store that cannot say what the user has seen leaves that exclusion out
    /// rather than failing the answer.
    pub async fn similar_items(
        &self,
        item_id: &str,
        count: usize,
        user_id: Option<&str>,
    ) -> Result<Vec<Recommendation>, SimilarError> {
        let vector = tokio::time::timeout(self.budget, self.index.item_vector(item_id))
            .await
            .map_err(|_| IndexError::Unavailable("no answer within the request budget".into()))??
            .ok_or_else(|| SimilarError::UnknownItem(item_id.to_owned()))?;
        let state = match user_id {
            None => UserState::default(),
            Some(user_id) => self.seen_by(user_id).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "similar items answered without the user's seen items");
                UserState::default()
            }),
        };
        let catalogue = self.catalogue.view();
        let exclude: Vec<&str> = std::iter::once(item_id)
            .chain(state.seen_items.iter().map(String::as_str))
            .chain(state.recent_items.iter().map(String::as_str))
            .chain(catalogue.unavailable().iter().map(String::as_str))
            .collect();
        let hits = tokio::time::timeout(self.budget, self.index.search(&vector, count, &exclude))
            .await
            .map_err(|_| IndexError::Unavailable("no answer within the request budget".into()))??;
        Ok(hits
            .into_iter()
            .map(|hit| {
                let mut recommendation = Recommendation {
                    item_id: hit.item_id,
                    score: f64::from(hit.score),
                    payload: hit.payload,
                };
                describe(&catalogue, &mut recommendation);
                recommendation
            })
            .collect())
    }

    async fn seen_by(&self, user_id: &str) -> Result<UserState, StoreError> {
        tokio::time::timeout(self.budget, self.store.user_state(user_id))
            .await
            .map_err(|_| StoreError::Unavailable("no answer within the request budget".into()))?
    }
}
