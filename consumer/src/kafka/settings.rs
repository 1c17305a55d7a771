//! The group consumer's settings and the librdkafka configuration built from them.

use std::sync::Arc;
use std::time::Duration;

use common::retry::RetryPolicy;
use engine::event_log::{client_config, kafka_producer};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;

use super::dead_letters::DeadLetterWriter;
use super::rebalance::ConsumerCallbacks;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub max_batch_events: usize,
    pub max_batch_wait: Duration,
    pub max_event_bytes: usize,
    /// Retries of the store and of dead-letter delivery.
    pub retry: RetryPolicy,
    /// How long the group waits for a silent member (a crashed consumer) before reassigning
    /// its partitions.
    pub session_timeout: Duration,
    /// `group.instance.id`: static membership, so a restarted member takes its partitions back
    /// at once. `None` for a dynamic member.
    pub instance_id: Option<String>,
    /// librdkafka's `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
    /// librdkafka's `fetch.wait.max.ms`.
    pub fetch_wait_max: Duration,
}

impl ConsumerSettings {
    /// A member of `group_id` subscribed to `topic`, with the callbacks every consumer here
    /// shares (commit on revoke, rewind on assign, lag).
    pub(super) fn subscribed_consumer(
        &self,
    ) -> KafkaResult<Arc<StreamConsumer<ConsumerCallbacks>>> {
        let consumer: StreamConsumer<ConsumerCallbacks> = self
            .client_config()
            .create_with_context(ConsumerCallbacks {
                topic: self.topic.clone(),
            })?;
        consumer.subscribe(&[&self.topic])?;
        Ok(Arc::new(consumer))
    }

    /// The writer of `topic`'s dead letters to `dead_letter_topic`.
    pub(super) fn dead_letter_writer(&self) -> KafkaResult<DeadLetterWriter> {
        Ok(DeadLetterWriter {
            producer: kafka_producer(&self.brokers)?,
            source_topic: self.topic.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
        })
    }

    /// The group consumer's librdkafka configuration. The benchmark's consume-only client is
    /// built from it too, so the two differ only in what they do with the records.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = client_config(&self.brokers);
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval.as_millis().to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_max.as_millis().to_string(),
            );
        // A default that a property in the broker URL overrides, as the URL can also set what
        // is not here, such as a bounded prefetch queue (BENCHMARKS.md, "What was tried"). When
        // more is queued locally than `queued.min.messages`, librdkafka postpones the
        // partition's next fetch by this long (default 1 s): a consumer slower than the fetcher
        // then drains its queue and sits idle for the rest of the second.
        if config.get("fetch.queue.backoff.ms").is_none() {
            config.set("fetch.queue.backoff.ms", "10");
        }
        if let Some(instance_id) = &self.instance_id {
            config.set("group.instance.id", instance_id);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_settings() -> ConsumerSettings {
        ConsumerSettings {
            brokers: "127.0.0.1:1?security.protocol=SSL".into(),
            topic: "events".into(),
            dead_letter_topic: "events-dead".into(),
            group_id: "group-7".into(),
            max_batch_events: 10,
            max_batch_wait: Duration::from_millis(5),
            max_event_bytes: 1024,
            retry: RetryPolicy {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            session_timeout: Duration::from_millis(6_500),
            instance_id: Some("host-1".into()),
            max_poll_interval: Duration::from_millis(60_000),
            fetch_wait_max: Duration::from_millis(7),
        }
    }

    #[test]
    fn the_consumer_passes_its_settings_to_librdkafka() {
        let settings = test_settings();
        let config = settings.client_config();
        assert_eq!(config.get("group.id"), Some("group-7"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:1"));
        assert_eq!(config.get("security.protocol"), Some("SSL"));
        assert_eq!(config.get("session.timeout.ms"), Some("6500"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("7"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(config.get("group.instance.id"), Some("host-1"));
        assert_eq!(config.get("max.poll.interval.ms"), Some("60000"));
    }

    #[test]
    fn the_broker_url_overrides_the_consumers_tuning() {
        let settings = ConsumerSettings {
            brokers: "127.0.0.1:1?fetch.queue.backoff.ms=250&queued.min.messages=20000".into(),
            ..test_settings()
        };
        let config = settings.client_config();
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(config.get("queued.min.messages"), Some("20000"));
    }
}
