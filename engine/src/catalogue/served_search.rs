//! The title search of what is served now: the index's items with the live catalogue over them
//! (the shop's titles win, unavailable items are left out, items newer than the index are in).
//! Built on the first search after either changes (a swapped index, a catalogue write), off the
//! runtime, and shared by every request until the next change.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::search::{SearchableItem, TitleMatch, TitleSearch};
use super::CatalogueView;
use crate::index::{IndexError, IndexedItem};
use crate::retrieve::Retriever;

struct Built {
    index_version: String,
    catalogue_cursor: u64,
    search: Arc<TitleSearch>,
}

#[derive(Default)]
pub struct CatalogueSearch {
    built: ArcSwapOption<Built>,
}

impl CatalogueSearch {
    /// The best `limit` titles for `query` among what `retriever` serves.
    pub async fn search(
        &self,
        retriever: &Retriever,
        query: &str,
        limit: usize,
    ) -> Result<Vec<TitleMatch>, IndexError> {
        let search = self.current(retriever).await?;
        Ok(search.search(query, limit))
    }

    async fn current(&self, retriever: &Retriever) -> Result<Arc<TitleSearch>, IndexError> {
        let view = retriever.catalogue().view();
        let index_version = retriever.index().version();
        if let Some(built) = self.built.load_full() {
            if built.index_version == index_version && built.catalogue_cursor == view.cursor() {
                return Ok(Arc::clone(&built.search));
            }
        }
        let indexed = retriever.index().all_items().await?;
        let catalogue_cursor = view.cursor();
        let search = tokio::task::spawn_blocking(move || {
            Arc::new(TitleSearch::new(searchable(indexed, &view)))
        })
        .await
        .map_err(|error| IndexError::Unavailable(error.to_string()))?;
        self.built.store(Some(Arc::new(Built {
            index_version: index_version.to_owned(),
            catalogue_cursor,
            search: Arc::clone(&search),
        })));
        Ok(search)
    }
}

/// The items to search: each indexed item under the shop's title if it has one, then the shop's
/// items the index does not hold; unavailable and untitled ones left out.
fn searchable(indexed: Vec<IndexedItem>, view: &CatalogueView) -> Vec<SearchableItem> {
    let mut seen = HashSet::with_capacity(indexed.len());
    let mut items = Vec::with_capacity(indexed.len());
    for item in indexed {
        let described = view.item(&item.item_id);
        seen.insert(item.item_id.clone());
        if described.is_some_and(|described| !described.available) {
            continue;
        }
        let title = described
            .and_then(|described| described.title.clone())
            .or_else(|| item.payload.get("title")?.as_str().map(str::to_owned));
        let popularity = item
            .payload
            .get("popularity")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        if let Some(title) = title {
            items.push(SearchableItem {
                item_id: item.item_id,
                title,
                popularity,
            });
        }
    }
    for described in view.items() {
        if described.available && !seen.contains(&described.item_id) {
            if let Some(title) = &described.title {
                items.push(SearchableItem {
                    item_id: described.item_id.clone(),
                    title: title.clone(),
                    popularity: 0.0,
                });
            }
        }
    }
    items
}
