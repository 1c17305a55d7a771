//! `recsys consume`: the Kafka consumer group of the stream path. Interaction events from the
//! topic are applied to user state through the engine's `EventApplier` (the same one the API's
//! in-process bus uses), what cannot be applied goes to the dead-letter topic, and offsets are
//! committed only after both. Live popularity and pushed recommendations ride along.

pub mod health;
pub mod kafka;
pub mod record_copies;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::config::Config;
use engine::events::EventApplier;
use tokio_util::sync::CancellationToken;

pub use health::Health;
pub use kafka::{ConsumerProgress, ConsumerSettings, EventConsumer, RunTotals};

pub fn consumer_settings(config: &Config, brokers: &str) -> ConsumerSettings {
    ConsumerSettings {
        brokers: brokers.to_owned(),
        topic: config.events.topic.clone(),
        dead_letter_topic: config.events.dead_letter_topic.clone(),
        group_id: config.consumer.group_id.clone(),
        max_batch_events: config.consumer.max_batch_events,
        max_batch_wait: Duration::from_millis(config.consumer.max_batch_wait_ms),
        max_event_bytes: config.events.max_event_bytes,
        retry: config.consumer.retry_policy(),
        session_timeout: Duration::from_millis(config.consumer.session_timeout_ms),
        fetch_wait_max: Duration::from_millis(config.consumer.fetch_wait_max_ms),
    }
}

/// A running consumer: its listener's address and the task that ends after `shutdown` fired and
/// the batch in flight was committed.
pub struct ConsumerHandle {
    pub listener_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub progress: Arc<ConsumerProgress>,
    pub task: tokio::task::JoinHandle<RunTotals>,
}

/// Starts the consumer group and its HTTP listener (`/healthz`, `/readyz`, `/metrics`).
pub async fn start_consumer(
    config: &Config,
    brokers: &str,
    applier: Arc<EventApplier>,
    listen: SocketAddr,
) -> anyhow::Result<ConsumerHandle> {
    let health = Health::starting();
    let shutdown = CancellationToken::new();
    let (listener_addr, listener) = health::spawn_listener(
        listen,
        Arc::clone(&health),
        common::telemetry::prometheus_handle(),
    )
    .await?;
    let consumer = EventConsumer::new(
        consumer_settings(config, brokers),
        applier,
        health,
        shutdown.clone(),
    )?;
    let progress = consumer.progress();
    let task = tokio::spawn(async move {
        let totals = consumer.run().await;
        listener.abort();
        totals
    });
    Ok(ConsumerHandle {
        listener_addr,
        shutdown,
        progress,
        task,
    })
}
