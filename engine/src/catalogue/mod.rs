//! The live catalogue: what the shop says about its items (title, attributes, availability) while
//! the system runs. It lives in the state store (Redis when configured, so every API replica and
//! consumer shares it; the embedded store otherwise) as one record per item plus a change log
//! numbered by a counter. Each process follows the log into an in-memory view
//! ([`LiveCatalogue`]), so answers never wait for the store and a replica sees a change within one
//! refresh interval (`catalogue.refresh_interval_ms`) of its write.
//!
//! Items are never deleted from the store, only marked unavailable: a removal must reach every
//! replica through the same log, and the item may come back.

mod live;
pub mod search;
mod served_search;

use serde::{Deserialize, Serialize};

pub use live::{CatalogueView, LiveCatalogue};
pub use served_search::CatalogueSearch;

use crate::store::StoreError;

pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// One item as the shop described it last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogueItem {
    pub item_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Whatever else the shop has (genres, year, price, ...), returned with recommendations.
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
    /// False once removed or sold out: then the item is in no answer at all.
    pub available: bool,
    pub updated_at_ms: i64,
}

/// A change of the log: the item as it is after the change numbered `sequence`.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueChange {
    pub sequence: u64,
    pub item: CatalogueItem,
}

#[async_trait::async_trait]
pub trait CatalogueStore: Send + Sync + 'static {
    /// Writes the items (replacing what was stored for each), each with a new sequence number
    /// above every earlier one, in one atomic step.
    async fn upsert_items(&self, items: &[CatalogueItem]) -> Result<(), StoreError>;

    /// The stored records of these items, in request order; unknown ids are left out.
    async fn catalogue_items(&self, item_ids: &[String]) -> Result<Vec<CatalogueItem>, StoreError>;

    /// Up to `limit` changes numbered above `after`, oldest first: each changed item once, at
    /// its latest change.
    async fn catalogue_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CatalogueChange>, StoreError>;
}
