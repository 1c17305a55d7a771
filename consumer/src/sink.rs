//! Where accepted events go: a Kafka topic (idempotent producer, `acks=all`) or the in-process
//! bus. Either way `publish` returns only when the events are durable, and refuses rather than
//! drops when it cannot keep up.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use schemas::InteractionEvent;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Too much in flight: the client should slow down and retry (HTTP 429).
    #[error("event log overloaded: {0}")]
    Overloaded(String),
    /// The log or the store cannot take events now (HTTP 503). Nothing of the refused request is
    /// guaranteed stored; a retry is safe for state (redelivered log entries are skipped).
    #[error("event log unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// `kafka` or `embedded`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Returns once every event is durable: written to Kafka with `acks=all`, or applied to the
    /// persistent store.
    async fn publish(&self, events: Vec<InteractionEvent>) -> Result<(), PublishError>;
}

/// The producer every Kafka writer here uses (events, dead letters, replay): idempotent and
/// `acks=all`, so a retried send neither reorders nor duplicates a partition's records.
pub fn kafka_producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "15000")
        .set("queue.buffering.max.messages", "200000")
        .create()
}

/// Produces events to a topic, keyed by user id so one user's events share a partition.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    pub fn new(brokers: &str, topic: &str) -> Result<KafkaSink, KafkaError> {
        Ok(KafkaSink {
            producer: kafka_producer(brokers)?,
            topic: topic.to_owned(),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

#[async_trait::async_trait]
impl EventSink for KafkaSink {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, events: Vec<InteractionEvent>) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in &events {
            let payload = serde_json::to_vec(event).expect("events serialise");
            let record = FutureRecord::to(&self.topic)
                .key(event.user_id.as_bytes())
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(PublishError::Overloaded(
                        "the producer queue is full".to_owned(),
                    ))
                }
                Err((error, _)) => return Err(PublishError::Unavailable(error.to_string())),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(PublishError::Unavailable(error.to_string())),
                Err(_cancelled) => {
                    return Err(PublishError::Unavailable("the producer stopped".to_owned()))
                }
            }
        }
        Ok(())
    }
}

/// Waits until everything queued in `producer` is delivered (or `timeout` passed); call before
/// exiting so accepted events are not left in memory.
pub async fn flush(producer: &FutureProducer, timeout: Duration) -> Result<(), KafkaError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || rdkafka::producer::Producer::flush(&producer, timeout))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}
