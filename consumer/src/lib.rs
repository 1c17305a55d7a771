//! The stream path: interaction events from a Kafka topic (or the in-process bus of the embedded
//! default) applied to user state, dead letters for what cannot be applied, live popularity and
//! pushed recommendations.

pub mod admin;
pub mod bench;
pub mod bus;
pub mod health;
pub mod kafka_consumer;
pub mod record_copies;
pub mod replay;
pub mod sink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::config::Config;
use engine::events::{EventApplier, PushSettings};
use engine::popularity::DecayClock;
use engine::retrieve::Retriever;
use engine::store::UserStore;
use tokio_util::sync::CancellationToken;

pub use bus::InProcessBus;
pub use health::Health;
pub use kafka_consumer::{ConsumerProgress, ConsumerSettings, EventConsumer, RunTotals};
pub use sink::{EventSink, KafkaSink, PublishError};

/// The applier both paths share, configured from `config`. `retriever` is needed when pushing is
/// on (`consumer.push_recommendations`).
pub fn event_applier(
    config: &Config,
    store: Arc<dyn UserStore>,
    retriever: Option<Arc<Retriever>>,
) -> EventApplier {
    let push = match (config.consumer.push_recommendations, retriever) {
        (true, Some(retriever)) => Some(PushSettings {
            retriever,
            count: config.consumer.push_count,
        }),
        _ => None,
    };
    EventApplier::new(
        store,
        config.popularity.weights,
        DecayClock::new(config.popularity.half_life_hours),
        push,
    )
}

/// Where the API sends accepted events: Kafka when `events.url` names a broker, otherwise the
/// in-process bus (started here, applying with `applier`).
pub fn open_event_sink(
    config: &Config,
    applier: Arc<EventApplier>,
) -> Result<Arc<dyn EventSink>, rdkafka::error::KafkaError> {
    match config.events.kafka_brokers() {
        Some(brokers) => Ok(Arc::new(KafkaSink::new(brokers, &config.events.topic)?)),
        None => {
            let (bus, _worker) = InProcessBus::start(
                applier,
                config.events.bus_capacity,
                config.consumer.max_batch_events,
            );
            Ok(Arc::new(bus))
        }
    }
}

pub fn consumer_settings(config: &Config, brokers: &str) -> ConsumerSettings {
    ConsumerSettings {
        brokers: brokers.to_owned(),
        topic: config.events.topic.clone(),
        dead_letter_topic: config.events.dead_letter_topic.clone(),
        group_id: config.consumer.group_id.clone(),
        max_batch_events: config.consumer.max_batch_events,
        max_batch_wait: Duration::from_millis(config.consumer.max_batch_wait_ms),
        max_event_bytes: config.events.max_event_bytes,
        backoff: config.consumer.backoff(),
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
        model_server::telemetry::prometheus_handle(),
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
