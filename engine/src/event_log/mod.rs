//! The event log: where accepted events go and where the stream path reads them. Chosen by
//! `events.url` like the store and the index: `kafka://brokers` (a topic keyed by user id, read by
//! `recsys consume`) or `embedded` (a bounded in-process bus that applies events in the API's own
//! process). Either way `publish` returns only when the events are durable, and refuses rather
//! than drops when it cannot keep up.
//!
//! Also here: topic creation and replaying a data set as live events, the two other writers of
//! the log.

mod archiving;
mod bus;
pub mod items;
mod kafka;
pub mod replay;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use schemas::InteractionEvent;

use crate::config::Config;
use crate::events::{EventApplier, PushSettings};
use crate::popularity::DecayClock;
use crate::serving::ServedRetriever;
use crate::store::UserStore;

pub use archiving::ArchiveWriter;
pub use bus::InProcessBus;
pub use kafka::{broker_hosts, client_config, kafka_producer, EventProducer, KafkaSink};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Too much in flight: the client should slow down and retry (HTTP 429).
    #[error("event log overloaded: {0}")]
    Overloaded(String),
    /// The log or the store cannot take events now (HTTP 503). Nothing of the refused request is
    /// guaranteed stored; a retry is safe for state (an event is applied once per `event_id`).
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// Retrying cannot help: the store holds state it cannot read for a user of the request
    /// (HTTP 500; the other users' events were stored).
    #[error("event not stored: {0}")]
    Internal(String),
}

#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// `kafka` or `embedded`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Returns once every event is durable: written to Kafka with `acks=all`, or applied to the
    /// persistent store.
    async fn publish(&self, events: Vec<InteractionEvent>) -> Result<(), PublishError>;

    /// Waits (at most `timeout`) until a publish would not be held back by start-up work; false
    /// if it is still not ready.
    async fn wait_until_ready(&self, _timeout: Duration) -> bool {
        true
    }

    /// At shutdown, after the last request: finishes what was accepted (the embedded bus applies
    /// its queue and writes the event archive once more).
    async fn close(&self) {}
}

/// The applier both paths share (the in-process bus and `recsys consume`), configured from
/// `config`. `retriever` is needed when pushing is on (`consumer.push_recommendations`).
pub fn event_applier(
    config: &Config,
    store: Arc<dyn UserStore>,
    retriever: Option<Arc<ServedRetriever>>,
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
            let archive = config.archive.enabled.then(|| {
                let archive = archive::EventArchive::new(config.archive_dir(), "api");
                ArchiveWriter::start(Arc::new(archive), &config.archive)
            });
            Ok(Arc::new(InProcessBus::start(
                applier,
                config.events.bus_capacity,
                config.consumer.max_batch_events,
                archive,
            )))
        }
    }
}
