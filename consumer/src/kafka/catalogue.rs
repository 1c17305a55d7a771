//! The items topic: the shop's catalogue as Kafka records, applied to the same catalogue store that
//! `POST /items` writes and every process follows (`engine::catalogue`).
//!
//! A record's value is one item exactly as a line of `POST /items` (`item_id`, `title`,
//! `attributes`, `available`), keyed by its item id so that one item's changes stay in one
//! partition, in order. A record with a key and no value (a tombstone, as on a compacted topic)
//! removes the item, keeping what the catalogue says about it. Records that cannot be applied go
//! to the items' dead-letter topic with the reason, and offsets are committed only after the
//! batch's items are stored and its dead letters delivered.
//!
//! The catalogue keeps each item's latest change by time: a record carries its producer
//! timestamp, and one older than what is stored for the item is skipped. So records read again
//! (after a crash before the commit, or the rewind on assignment) never undo a later change made
//! through the topic or through `POST /items`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::clock::now_ms;
use common::retry::{retry_transient, RetryStopped};
use engine::catalogue::{CatalogueItem, CatalogueStore};
use engine::store::StoreError;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use schemas::ItemUpsert;
use tokio_util::sync::CancellationToken;

use super::dead_letters::DeadLetterWriter;
use super::decode::{DeadLetter, NextOffsets, RawRecord};
use super::outcome::Stopped;
use super::rebalance::{commit, ConsumerCallbacks};
use super::receive::receive_batch;
use super::settings::ConsumerSettings;
use crate::health::Health;
use crate::record_copies::RecordRef;

/// What a run of the items consumer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogueTotals {
    pub batches: u64,
    /// Items written to the catalogue.
    pub upserted: u64,
    /// Records older than the stored item, skipped.
    pub stale: u64,
    pub dead_letters: u64,
    pub failure: Option<String>,
}

/// The consumer group member that follows the items topic.
pub struct CatalogueConsumer {
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    dead_letters: DeadLetterWriter,
    store: Arc<dyn CatalogueStore>,
    settings: ConsumerSettings,
    max_item_bytes: usize,
    health: Arc<Health>,
    cancelled: CancellationToken,
}

impl CatalogueConsumer {
    /// `settings.topic` and `settings.dead_letter_topic` are the items topics;
    /// `settings.group_id` is a group of its own (its members share the items partitions).
    pub fn new(
        settings: ConsumerSettings,
        max_item_bytes: usize,
        store: Arc<dyn CatalogueStore>,
        health: Arc<Health>,
        cancelled: CancellationToken,
    ) -> KafkaResult<CatalogueConsumer> {
        Ok(CatalogueConsumer {
            consumer: settings.subscribed_consumer()?,
            dead_letters: settings.dead_letter_writer()?,
            store,
            settings,
            max_item_bytes,
            health,
            cancelled,
        })
    }

    /// What `/readyz` reports for this consumer.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Consumes until `cancelled`; the batch in flight is finished and committed first. Batches
    /// are received and written in turn: catalogue changes are few next to interactions.
    pub async fn run(&self) -> CatalogueTotals {
        let mut totals = CatalogueTotals::default();
        self.health.set_ready();
        while !self.cancelled.is_cancelled() {
            let mut batch = ItemBatch::default();
            let received_ms = now_ms();
            let received = receive_batch(
                &self.consumer,
                self.settings.max_batch_events,
                self.settings.max_batch_wait,
                std::future::ready(()),
                &self.cancelled,
                |message| batch.push(RecordRef::of(message), self.max_item_bytes, received_ms),
            )
            .await;
            match received {
                Ok(0) => continue,
                Ok(_) => {}
                Err(error) => {
                    // Also what a missing items topic looks like: keep waiting for it.
                    tracing::warn!(%error, topic = self.settings.topic, "kafka receive failed");
                    tokio::select! {
                        () = self.cancelled.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
            match self.process_batch(batch).await {
                Ok(outcome) => {
                    totals.batches += 1;
                    totals.upserted += outcome.upserted;
                    totals.stale += outcome.stale;
                    totals.dead_letters += outcome.dead_letters;
                }
                Err(Stopped::Cancelled) => break,
                Err(Stopped::PermanentFailure(reason)) => {
                    tracing::error!(%reason, "items consumer stopped; nothing of the batch was committed");
                    self.health
                        .set_not_ready(format!("items consumer stopped: {reason}"));
                    totals.failure = Some(reason);
                    // The whole process stops, as the events consumer does on a permanent
                    // failure: a restart redelivers what was not committed.
                    self.cancelled.cancel();
                    break;
                }
            }
        }
        totals
    }

    async fn process_batch(&self, batch: ItemBatch) -> Result<CatalogueTotals, Stopped> {
        self.dead_letters
            .send(
                &batch.dead_letters,
                &self.settings.retry,
                &self.cancelled,
                &self.health,
            )
            .await?;
        let items = latest_per_item(batch.items);
        let ids: Vec<String> = items
            .iter()
            .map(|item| item.change.item_id.clone())
            .collect();
        let stored = self
            .until_stored(|| self.store.catalogue_items(&ids))
            .await?;
        let stored: HashMap<String, CatalogueItem> = stored
            .into_iter()
            .map(|item| (item.item_id.clone(), item))
            .collect();
        let received = items.len() as u64;
        let changes: Vec<CatalogueItem> = items
            .into_iter()
            .filter_map(|item| {
                let stored = stored.get(&item.change.item_id);
                item.applied_to(stored)
            })
            .collect();
        if !changes.is_empty() {
            self.until_stored(|| self.store.upsert_items(&changes))
                .await?;
        }
        commit(&self.consumer, &self.settings.topic, &batch.next_offsets).await;
        let outcome = CatalogueTotals {
            batches: 1,
            upserted: changes.len() as u64,
            stale: received - changes.len() as u64,
            dead_letters: batch.dead_letters.len() as u64,
            failure: None,
        };
        metrics::counter!("recsys_consumer_items_total", "outcome" => "upserted")
            .increment(outcome.upserted);
        metrics::counter!("recsys_consumer_items_total", "outcome" => "stale")
            .increment(outcome.stale);
        metrics::counter!("recsys_consumer_items_total", "outcome" => "dead_letter")
            .increment(outcome.dead_letters);
        Ok(outcome)
    }

    /// Retries a store call through an outage, saying so on `/readyz`.
    async fn until_stored<T, Call>(&self, call: impl FnMut() -> Call) -> Result<T, Stopped>
    where
        Call: std::future::Future<Output = Result<T, StoreError>>,
    {
        let result = retry_transient(&self.settings.retry, &self.cancelled, call, |error, delay| {
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "catalogue write failed; retrying");
            self.health
                .set_not_ready(format!("items consumer: state store unavailable: {error}"));
        })
        .await;
        match result {
            Ok(value) => {
                self.health.set_ready();
                Ok(value)
            }
            Err(RetryStopped::Cancelled) => Err(Stopped::Cancelled),
            Err(RetryStopped::Permanent(error)) => {
                Err(Stopped::PermanentFailure(error.to_string()))
            }
        }
    }
}

/// One decoded record: the item as the record says it is now.
#[derive(Debug, Clone, PartialEq)]
struct ItemRecord {
    change: CatalogueItem,
    /// A tombstone: only availability changes, title and attributes stay as stored.
    removal_only: bool,
}

impl ItemRecord {
    /// The item to store, or `None` when the stored one is newer.
    fn applied_to(self, stored: Option<&CatalogueItem>) -> Option<CatalogueItem> {
        match stored {
            Some(stored) if stored.updated_at_ms > self.change.updated_at_ms => None,
            Some(stored) if self.removal_only => Some(CatalogueItem {
                title: stored.title.clone(),
                attributes: stored.attributes.clone(),
                ..self.change
            }),
            _ => Some(self.change),
        }
    }
}

/// A batch's records, decoded as they arrive.
#[derive(Debug, Default)]
struct ItemBatch {
    items: Vec<ItemRecord>,
    dead_letters: Vec<DeadLetter>,
    next_offsets: NextOffsets,
}

impl ItemBatch {
    fn push(&mut self, record: RecordRef<'_>, max_item_bytes: usize, received_ms: i64) {
        self.next_offsets.observe(record.partition, record.offset);
        match decode_item(record, max_item_bytes, received_ms) {
            Ok(item) => self.items.push(item),
            Err((reason, message)) => self.dead_letters.push(DeadLetter {
                record: RawRecord::from_record(record),
                reason,
                message,
            }),
        }
    }
}

/// The item a record describes, or the dead-letter reason and message.
fn decode_item(
    record: RecordRef<'_>,
    max_item_bytes: usize,
    received_ms: i64,
) -> Result<ItemRecord, (&'static str, String)> {
    let updated_at_ms = record.timestamp_ms.unwrap_or(received_ms);
    let key = record
        .key
        .map(|key| {
            std::str::from_utf8(key).map_err(|_| ("invalid_key", "the key is not UTF-8".to_owned()))
        })
        .transpose()?;
    let payload = record.payload.unwrap_or_default();
    if payload.is_empty() {
        let Some(item_id) = key.filter(|key| !key.is_empty()) else {
            return Err((
                "empty_record",
                "neither a value nor a key: a record without a value removes the item its key names"
                    .to_owned(),
            ));
        };
        if let Some(problem) = schemas::id_problem(item_id) {
            return Err(("invalid_item", format!("key: item_id {problem}")));
        }
        let item = ItemUpsert {
            item_id: item_id.to_owned(),
            title: None,
            attributes: Default::default(),
            available: false,
        };
        return Ok(ItemRecord {
            change: catalogue_item(item, updated_at_ms),
            removal_only: true,
        });
    }
    if payload.len() > max_item_bytes {
        return Err((
            "too_large",
            format!(
                "{} bytes, the limit is {max_item_bytes} (catalogue.max_item_bytes)",
                payload.len()
            ),
        ));
    }
    let item = ItemUpsert::decode(payload).map_err(|problem| ("invalid_item", problem))?;
    if let Some(key) = key {
        if key != item.item_id {
            return Err((
                "key_mismatch",
                format!(
                    "the record key must be the item id '{}' (it decides the partition, hence the order of the item's changes)",
                    item.item_id
                ),
            ));
        }
    }
    Ok(ItemRecord {
        change: catalogue_item(item, updated_at_ms),
        removal_only: false,
    })
}

fn catalogue_item(item: ItemUpsert, updated_at_ms: i64) -> CatalogueItem {
    CatalogueItem {
        item_id: item.item_id,
        title: item.title,
        attributes: item.attributes,
        available: item.available,
        updated_at_ms,
    }
}

/// Each item once, as its last record in the batch says (records of one item come in order).
fn latest_per_item(records: Vec<ItemRecord>) -> Vec<ItemRecord> {
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut latest: Vec<ItemRecord> = Vec::with_capacity(records.len());
    for record in records {
        match position.get(&record.change.item_id) {
            Some(&index) => latest[index] = record,
            None => {
                position.insert(record.change.item_id.clone(), latest.len());
                latest.push(record);
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a [u8]>, payload: Option<&'a [u8]>) -> RecordRef<'a> {
        RecordRef {
            partition: 0,
            offset: 7,
            timestamp_ms: Some(1_000),
            key,
            payload,
        }
    }

    fn decode(
        key: Option<&str>,
        payload: Option<&str>,
    ) -> Result<ItemRecord, (&'static str, String)> {
        decode_item(
            record(key.map(str::as_bytes), payload.map(str::as_bytes)),
            200,
            5_000,
        )
    }

    #[test]
    fn a_record_is_a_line_of_post_items() {
        let item = decode(
            Some("sku-1"),
            Some(r#"{"item_id": "sku-1", "title": "Mug", "attributes": {"price": 9.5}}"#),
        )
        .unwrap();
        assert!(!item.removal_only);
        assert_eq!(item.change.item_id, "sku-1");
        assert_eq!(item.change.title.as_deref(), Some("Mug"));
        assert_eq!(item.change.attributes["price"], 9.5);
        assert!(item.change.available);
        assert_eq!(item.change.updated_at_ms, 1_000, "the producer's timestamp");
        assert!(
            decode(None, Some(r#"{"item_id": "sku-1"}"#)).is_ok(),
            "the key is optional"
        );
    }

    #[test]
    fn bad_records_are_refused_with_their_reason() {
        let reason = |key: Option<&str>, payload: Option<&str>| decode(key, payload).unwrap_err().0;
        assert_eq!(
            reason(Some("a"), Some(r#"{"item_id": "b"}"#)),
            "key_mismatch"
        );
        assert_eq!(
            reason(Some("a"), Some(r#"{"item_id": "a", "colour": 1}"#)),
            "invalid_item"
        );
        assert_eq!(
            reason(Some("a"), Some(r#"{"item_id": ""}"#)),
            "invalid_item"
        );
        assert_eq!(reason(Some("a"), Some("not json")), "invalid_item");
        assert_eq!(
            reason(
                Some("a"),
                Some(&format!(
                    r#"{{"item_id": "a", "title": "{}"}}"#,
                    "x".repeat(300)
                ))
            ),
            "too_large"
        );
        assert_eq!(reason(None, None), "empty_record");
        assert_eq!(reason(Some(""), Some("")), "empty_record");
        let unknown_field = decode(Some("a"), Some(r#"{"item_id": "a", "colour": 1}"#))
            .unwrap_err()
            .1;
        assert!(unknown_field.contains("colour"), "{unknown_field}");
    }

    #[test]
    fn a_tombstone_removes_the_item_and_keeps_its_description() {
        let tombstone = decode(Some("sku-1"), None).unwrap();
        assert!(tombstone.removal_only);
        assert!(!tombstone.change.available);
        let stored = CatalogueItem {
            item_id: "sku-1".into(),
            title: Some("Mug".into()),
            attributes: serde_json::json!({"price": 9.5})
                .as_object()
                .unwrap()
                .clone(),
            available: true,
            updated_at_ms: 500,
        };
        let removed = tombstone.applied_to(Some(&stored)).unwrap();
        assert!(!removed.available);
        assert_eq!(removed.title.as_deref(), Some("Mug"));
        assert_eq!(removed.attributes, stored.attributes);
        assert_eq!(removed.updated_at_ms, 1_000);
    }

    #[test]
    fn a_record_older_than_the_stored_item_changes_nothing() {
        let record = decode(
            Some("sku-1"),
            Some(r#"{"item_id": "sku-1", "title": "Old"}"#),
        )
        .unwrap();
        let newer = CatalogueItem {
            item_id: "sku-1".into(),
            title: Some("New".into()),
            attributes: Default::default(),
            available: false,
            updated_at_ms: 2_000,
        };
        assert_eq!(record.clone().applied_to(Some(&newer)), None);
        let older = CatalogueItem {
            updated_at_ms: 999,
            ..newer
        };
        assert_eq!(
            record.applied_to(Some(&older)).unwrap().title.as_deref(),
            Some("Old")
        );
    }

    #[test]
    fn a_batch_keeps_each_items_last_record() {
        let records = ["a", "b", "a"]
            .iter()
            .zip(["1", "2", "3"])
            .map(|(id, title)| {
                let json = format!(r#"{{"item_id": "{id}", "title": "{title}"}}"#);
                decode(Some(id), Some(&json)).unwrap()
            })
            .collect();
        let latest = latest_per_item(records);
        let titles: Vec<_> = latest
            .iter()
            .map(|record| {
                (
                    record.change.item_id.as_str(),
                    record.change.title.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(titles, [("a", "3"), ("b", "2")]);
    }
}
