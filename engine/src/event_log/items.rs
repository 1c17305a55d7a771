//! Publishing a catalogue to the items topic (`recsys publish-items`): one record per item, its
//! value the item as a line of `POST /items`, keyed by the item id so that one item's changes
//! stay in order. `recsys consume` applies them (`consumer::kafka::CatalogueConsumer`).

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use schemas::ItemUpsert;

use super::kafka::await_deliveries;
use super::kafka_producer;

/// Sends every item and waits until the broker has them all; returns how many were sent.
pub async fn publish_items(
    brokers: &str,
    topic: &str,
    items: &[ItemUpsert],
) -> Result<usize, KafkaError> {
    let producer = kafka_producer(brokers)?;
    if !producer.wait_until_ready(Duration::from_secs(10)).await {
        tracing::warn!("the producer has no producer id after 10 s; sending anyway");
    }
    let mut deliveries: Vec<DeliveryFuture> = Vec::new();
    let mut delivered = 0;
    for item in items {
        let payload = serde_json::to_vec(item).expect("items serialise");
        delivered += producer
            .send_queued(&mut deliveries, || {
                FutureRecord::to(topic)
                    .key(item.item_id.as_bytes())
                    .payload(payload.as_slice())
            })
            .await?;
    }
    delivered += await_deliveries(&mut deliveries).await?;
    Ok(delivered)
}
