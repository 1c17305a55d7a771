//! Kafka as the event log: the idempotent producer every writer here uses (events, dead letters,
//! replay) and the sink `POST /events` publishes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use schemas::InteractionEvent;

use super::{EventSink, PublishError};

/// Listens to a producer's statistics for the moment it gets its idempotent producer id.
#[derive(Debug, Default)]
struct ProducerIdWatch {
    has_producer_id: Arc<AtomicBool>,
}

impl ClientContext for ProducerIdWatch {
    fn stats(&self, statistics: Statistics) {
        if statistics
            .eos
            .is_some_and(|eos| eos.idemp_state == "Assigned")
        {
            self.has_producer_id.store(true, Ordering::Relaxed);
        }
    }
}

/// The librdkafka configuration every client here starts from, for the part of a `kafka://` URL
/// after the scheme: the broker list, then optionally `?name=value&...`, librdkafka properties
/// (percent-encoded) for every producer, consumer and admin client. Connection security goes
/// there: `kafka://b1:9093,b2:9093?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512&sasl.username=recsys&sasl.password=...`.
pub fn client_config(brokers: &str) -> ClientConfig {
    let (hosts, properties) = brokers.split_once('?').unwrap_or((brokers, ""));
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", hosts);
    for (name, value) in form_urlencoded::parse(properties.as_bytes()) {
        config.set(name, value);
    }
    config
}

/// The broker list of `brokers` (see [`client_config`]) without its properties, which may hold
/// secrets: what logs and messages show.
pub fn broker_hosts(brokers: &str) -> &str {
    brokers.split_once('?').map_or(brokers, |(hosts, _)| hosts)
}

/// The producer every Kafka writer here uses (events, dead letters, replay): idempotent and
/// `acks=all`, so a retried send neither reorders nor duplicates a partition's records.
pub struct EventProducer {
    producer: FutureProducer<ProducerIdWatch>,
    has_producer_id: Arc<AtomicBool>,
}

pub fn kafka_producer(brokers: &str) -> Result<EventProducer, KafkaError> {
    let watch = ProducerIdWatch::default();
    let has_producer_id = Arc::clone(&watch.has_producer_id);
    let producer = client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "15000")
        .set("queue.buffering.max.messages", "200000")
        // Frequent enough for `wait_until_ready` to notice the producer id soon after it comes.
        .set("statistics.interval.ms", "100")
        .create_with_context(watch)?;
    Ok(EventProducer {
        producer,
        has_producer_id,
    })
}

impl EventProducer {
    /// Queues a record; the future resolves when it is acknowledged (or failed). The signature
    /// is rdkafka's own: a refused record comes back so the caller can retry it.
    #[allow(clippy::result_large_err)]
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.producer.send_result(record)
    }

    /// Queues the record `record` builds behind the client's bounded queue: while the queue is
    /// full, waits for the deliveries `in_flight` first. Returns how many deliveries that wait
    /// completed (0 when there was room).
    pub async fn send_queued<'a>(
        &self,
        in_flight: &mut Vec<DeliveryFuture>,
        record: impl Fn() -> FutureRecord<'a, [u8], [u8]>,
    ) -> Result<usize, KafkaError> {
        let mut drained = 0;
        loop {
            match self.producer.send_result(record()) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    return Ok(drained);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    drained += await_deliveries(in_flight).await?;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits until the producer has its idempotent producer id, at most `timeout`; false if it
    /// has not.
    ///
    /// librdkafka holds every record until then, and a fresh producer asks for the id before any
    /// broker connection is up, so its retry timer (500 ms) delays the first records by about
    /// half a second. Long-running writers wait here once at start-up instead of charging that
    /// to the first events they accept.
    pub async fn wait_until_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.has_producer_id.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Produces events to a topic, keyed by user id so one user's events share a partition.
pub struct KafkaSink {
    producer: EventProducer,
    topic: String,
}

impl KafkaSink {
    pub fn new(brokers: &str, topic: &str) -> Result<KafkaSink, KafkaError> {
        Ok(KafkaSink {
            producer: kafka_producer(brokers)?,
            topic: topic.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl EventSink for KafkaSink {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn wait_until_ready(&self, timeout: Duration) -> bool {
        self.producer.wait_until_ready(timeout).await
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

/// Waits for every delivery in `in_flight` (emptying it); returns how many there were, or the
/// first failure.
pub async fn await_deliveries(in_flight: &mut Vec<DeliveryFuture>) -> Result<usize, KafkaError> {
    let count = in_flight.len();
    for delivery in in_flight.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(error),
            Err(_cancelled) => return Err(KafkaError::Canceled),
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_query_becomes_client_properties_and_stays_out_of_the_broker_list() {
        let brokers = "b1:9093,b2:9093?security.protocol=SASL_SSL&sasl.username=recsys&sasl.password=s%26cr%3Dt+x";
        let config = client_config(brokers);
        assert_eq!(config.get("bootstrap.servers"), Some("b1:9093,b2:9093"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.password"), Some("s&cr=t x"));
        assert_eq!(broker_hosts(brokers), "b1:9093,b2:9093");
        assert_eq!(
            client_config("b1:9092").get("bootstrap.servers"),
            Some("b1:9092")
        );
    }
}
