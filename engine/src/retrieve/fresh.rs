//! Cold start for items the model does not know yet. An item the shop added after training has no
//! vector, so no search can find it; it reaches answers in two ways until a retrained model
//! learns it:
//!
//! - popular lists, as soon as it collects interactions (live popularity knows every item);
//! - personalized and pushed answers, through `catalogue.fresh_slots` reserved places at the end
//!   of the list: they go to the most popular such items the user has not seen, marked
//!   `"fresh": true` and scored like the last model-ranked item they follow.
//!
//! So an item's first personalized appearance follows its first interactions by at most one
//! popular-list refresh (`popularity.refresh_interval_ms`) plus, on another replica, one
//! catalogue refresh.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{bare_payload, describe, Recommendation, Retriever};
use crate::catalogue::CatalogueView;

/// Catalogue items without a vector in the index, as of one catalogue version.
#[derive(Default)]
pub(super) struct UnindexedItems {
    cached: Mutex<Option<(u64, Arc<HashSet<String>>)>>,
}

impl Retriever {
    /// The available catalogue items the index has no vector for; recomputed (one index lookup
    /// of the catalogue) only when the catalogue has changed.
    async fn unindexed_items(&self, catalogue: &CatalogueView) -> Arc<HashSet<String>> {
        let cursor = catalogue.cursor();
        if let Some((cached_cursor, items)) = &*self.unindexed.cached.lock().expect("not poisoned")
        {
            if *cached_cursor == cursor {
                return Arc::clone(items);
            }
        }
        let described: Vec<String> = catalogue
            .items()
            .filter(|item| item.available)
            .map(|item| item.item_id.clone())
            .collect();
        let indexed = match self.index.items(&described).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot tell which catalogue items are new; none blended in");
                return Arc::default();
            }
        };
        let indexed: HashSet<String> = indexed.into_iter().map(|item| item.item_id).collect();
        let unindexed: Arc<HashSet<String>> = Arc::new(
            described
                .into_iter()
                .filter(|item_id| !indexed.contains(item_id))
                .collect(),
        );
        *self.unindexed.cached.lock().expect("not poisoned") =
            Some((cursor, Arc::clone(&unindexed)));
        unindexed
    }

    /// Puts up to `fresh_slots` of the most popular new items not in `exclude` in the last
    /// places of `recommendations` (which keeps its length, or grows to `count`).
    pub(super) async fn blend_in_fresh_items(
        &self,
        recommendations: &mut Vec<Recommendation>,
        exclude: &[&str],
        count: usize,
    ) {
        let catalogue = self.catalogue.view();
        if self.fresh_slots == 0 || catalogue.is_empty() {
            return;
        }
        let unindexed = self.unindexed_items(&catalogue).await;
        if unindexed.is_empty() {
            return;
        }
        let excluded: HashSet<&str> = exclude.iter().copied().collect();
        let picks: Vec<String> = self
            .popular
            .get()
            .iter()
            .filter(|item| {
                unindexed.contains(&item.item_id) && !excluded.contains(item.item_id.as_str())
            })
            .take(self.fresh_slots.min(count))
            .map(|item| item.item_id.clone())
            .collect();
        if picks.is_empty() {
            return;
        }
        recommendations.truncate(count.saturating_sub(picks.len()));
        let score = recommendations.last().map_or(0.0, |last| last.score);
        for item_id in picks {
            let mut payload = bare_payload(&item_id);
            payload.insert("fresh".into(), true.into());
            let mut recommendation = Recommendation {
                item_id,
                score,
                payload,
            };
            describe(&catalogue, &mut recommendation);
            recommendations.push(recommendation);
        }
        metrics::counter!("recsys_retrieve_fresh_items_total").increment(1);
    }
}
