//! Item-to-item answers ("more like this"): the index's nearest items to one item's vector.

use super::{before, described_hits, Recommendation, Retriever};
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
        let deadline = tokio::time::Instant::now() + self.budget;
        let vector = before(
            deadline,
            self.index.item_vector(item_id),
            IndexError::Unavailable,
        )
        .await?
        .ok_or_else(|| SimilarError::UnknownItem(item_id.to_owned()))?;
        let state = match user_id {
            None => UserState::default(),
            Some(user_id) => before(
                deadline,
                self.store.user_state(user_id),
                StoreError::Unavailable,
            )
            .await
            .unwrap_or_else(|error| {
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
        let hits = before(
            deadline,
            self.index.search(&vector, count, &exclude),
            IndexError::Unavailable,
        )
        .await?;
        Ok(described_hits(hits, &catalogue))
    }
}
