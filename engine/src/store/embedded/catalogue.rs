//! The catalogue in the embedded store: a record per item and the change log, written in one
//! transaction per upsert.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{unavailable, EmbeddedStore};
use crate::catalogue::{CatalogueChange, CatalogueItem, CatalogueStore};
use crate::store::StoreError;

/// item id -> JSON `StoredItem`.
const CATALOGUE_ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("catalogue_items");
/// sequence number -> item id, one entry per item (its latest change).
const CATALOGUE_CHANGES: TableDefinition<u64, &str> = TableDefinition::new("catalogue_changes");

#[derive(Serialize, Deserialize)]
struct StoredItem {
    sequence: u64,
    item: CatalogueItem,
}

pub(super) fn create_tables(transaction: &redb::WriteTransaction) -> Result<(), StoreError> {
    transaction
        .open_table(CATALOGUE_ITEMS)
        .map_err(unavailable)?;
    transaction
        .open_table(CATALOGUE_CHANGES)
        .map_err(unavailable)?;
    Ok(())
}

fn decode(item_id: &str, bytes: &[u8]) -> Result<StoredItem, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        key: format!("catalogue_items/{item_id}"),
        problem: error.to_string(),
    })
}

#[async_trait::async_trait]
impl CatalogueStore for EmbeddedStore {
    async fn upsert_items(&self, items: &[CatalogueItem]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let items = items.to_vec();
        self.blocking(move |database| {
            let transaction = database.begin_write().map_err(unavailable)?;
            {
                let mut records = transaction
                    .open_table(CATALOGUE_ITEMS)
                    .map_err(unavailable)?;
                let mut changes = transaction
                    .open_table(CATALOGUE_CHANGES)
                    .map_err(unavailable)?;
                let mut sequence = changes
                    .last()
                    .map_err(unavailable)?
                    .map_or(0, |(sequence, _)| sequence.value());
                for item in items {
                    let previous = records
                        .get(item.item_id.as_str())
                        .map_err(unavailable)?
                        .map(|bytes| decode(&item.item_id, bytes.value()))
                        .transpose()?;
                    if let Some(previous) = previous {
                        changes.remove(previous.sequence).map_err(unavailable)?;
                    }
                    sequence += 1;
                    changes
                        .insert(sequence, item.item_id.as_str())
                        .map_err(unavailable)?;
                    let stored = serde_json::to_vec(&StoredItem {
                        sequence,
                        item: item.clone(),
                    })
                    .expect("catalogue items serialise");
                    records
                        .insert(item.item_id.as_str(), stored.as_slice())
                        .map_err(unavailable)?;
                }
            }
            transaction.commit().map_err(unavailable)
        })
        .await
    }

    async fn catalogue_items(&self, item_ids: &[String]) -> Result<Vec<CatalogueItem>, StoreError> {
        let item_ids = item_ids.to_vec();
        self.blocking(move |database| {
            let transaction = database.begin_read().map_err(unavailable)?;
            let records = transaction
                .open_table(CATALOGUE_ITEMS)
                .map_err(unavailable)?;
            let mut found = Vec::with_capacity(item_ids.len());
            for item_id in &item_ids {
                if let Some(bytes) = records.get(item_id.as_str()).map_err(unavailable)? {
                    found.push(decode(item_id, bytes.value())?.item);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn catalogue_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CatalogueChange>, StoreError> {
        self.blocking(move |database| {
            let transaction = database.begin_read().map_err(unavailable)?;
            let changes = transaction
                .open_table(CATALOGUE_CHANGES)
                .map_err(unavailable)?;
            let records = transaction
                .open_table(CATALOGUE_ITEMS)
                .map_err(unavailable)?;
            let mut found = Vec::new();
            let start = after.saturating_add(1);
            for entry in changes.range(start..).map_err(unavailable)?.take(limit) {
                let (sequence, item_id) = entry.map_err(unavailable)?;
                let item_id = item_id.value();
                let bytes = records.get(item_id).map_err(unavailable)?.ok_or_else(|| {
                    StoreError::Corrupt {
                        key: format!("catalogue_changes/{}", sequence.value()),
                        problem: format!("names item {item_id}, which has no record"),
                    }
                })?;
                found.push(CatalogueChange {
                    sequence: sequence.value(),
                    item: decode(item_id, bytes.value())?.item,
                });
            }
            Ok(found)
        })
        .await
    }
}
