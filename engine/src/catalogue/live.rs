//! A process's view of the catalogue, following the store's change log.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{CatalogueItem, CatalogueStore};
use crate::store::StoreError;

/// Changes read per round trip while catching up.
const CHANGES_PER_READ: usize = 1_000;

/// The catalogue as of the last refresh. Items the shop never described (a data set's items known
/// only to the index) are not in it and count as available.
#[derive(Debug, Default)]
pub struct CatalogueView {
    items: HashMap<String, Arc<CatalogueItem>>,
    unavailable: Vec<String>,
    cursor: u64,
}

impl CatalogueView {
    pub fn item(&self, item_id: &str) -> Option<&CatalogueItem> {
        self.items.get(item_id).map(Arc::as_ref)
    }

    pub fn is_available(&self, item_id: &str) -> bool {
        self.items.get(item_id).is_none_or(|item| item.available)
    }

    /// Every item marked unavailable, to exclude inside a search.
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }

    /// Items the shop described, available or not.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> impl Iterator<Item = &CatalogueItem> {
        self.items.values().map(Arc::as_ref)
    }

    /// The sequence number of the newest change applied.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }
}

/// The shared, refreshed view. Readers take an `Arc` of the current view and never wait for a
/// refresh, which builds a new view and swaps it in.
pub struct LiveCatalogue {
    view: RwLock<Arc<CatalogueView>>,
    store: Option<Arc<dyn CatalogueStore>>,
    /// One refresh at a time: the background task and a writer's own refresh would otherwise
    /// apply the same changes to two copies and the later swap could lose the earlier's.
    refreshing: tokio::sync::Mutex<()>,
}

impl LiveCatalogue {
    pub fn new(store: Arc<dyn CatalogueStore>) -> LiveCatalogue {
        LiveCatalogue {
            view: RwLock::new(Arc::default()),
            store: Some(store),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// A catalogue with no items and nothing to follow: every item counts as available.
    pub fn empty() -> LiveCatalogue {
        LiveCatalogue {
            view: RwLock::new(Arc::default()),
            store: None,
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn view(&self) -> Arc<CatalogueView> {
        Arc::clone(&self.view.read().expect("catalogue lock poisoned"))
    }

    /// Applies every change logged since the last refresh; returns how many items changed.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let _only_refresh = self.refreshing.lock().await;
        let current = self.view();
        let mut cursor = current.cursor;
        let mut changed: Vec<CatalogueItem> = Vec::new();
        loop {
            let page = store.catalogue_changes(cursor, CHANGES_PER_READ).await?;
            let full_page = page.len() == CHANGES_PER_READ;
            for change in page {
                cursor = cursor.max(change.sequence);
                changed.push(change.item);
            }
            if !full_page {
                break;
            }
        }
        if changed.is_empty() {
            return Ok(0);
        }
        let count = changed.len();
        // Copy on write: a refresh with changes copies the map once (pointer-sized values), which
        // keeps every read lock-free of refreshes.
        let mut items = current.items.clone();
        for item in changed {
            items.insert(item.item_id.clone(), Arc::new(item));
        }
        let mut unavailable: Vec<String> = items
            .values()
            .filter(|item| !item.available)
            .map(|item| item.item_id.clone())
            .collect();
        unavailable.sort_unstable();
        let next = Arc::new(CatalogueView {
            items,
            unavailable,
            cursor,
        });
        *self.view.write().expect("catalogue lock poisoned") = next;
        metrics::gauge!("recsys_catalogue_items").set(self.view().len() as f64);
        Ok(count)
    }

    /// Refreshes every `interval` until the task is aborted; a failed refresh keeps the last view
    /// and is tried again at the next tick.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let catalogue = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = catalogue.refresh().await {
                    metrics::counter!("recsys_catalogue_refresh_failures_total").increment(1);
                    tracing::warn!(%error, "catalogue refresh failed; keeping the last view");
                }
            }
        })
    }
}
