//! Dead letters: records that cannot be applied go to the dead-letter topic with headers saying
//! why and where they came from, and their offsets are committed only once that topic has them.

use common::retry::{retry_transient, RetryPolicy, RetryStopped};
use engine::event_log::EventProducer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

use common::retry::Transience;

use super::decode::DeadLetter;
use super::outcome::Stopped;
use crate::health::Health;

/// Produces dead letters for one source topic.
pub struct DeadLetterWriter {
    pub(super) producer: EventProducer,
    pub(super) source_topic: String,
    pub(super) dead_letter_topic: String,
}

impl DeadLetterWriter {
    /// Produces every dead letter and waits for their delivery, retrying with backoff: their
    /// offsets must not be committed before they are safe in the dead-letter topic.
    pub(super) async fn send(
        &self,
        dead_letters: &[DeadLetter],
        retry: &RetryPolicy,
        cancelled: &CancellationToken,
        health: &Health,
    ) -> Result<(), Stopped> {
        if dead_letters.is_empty() {
            return Ok(());
        }
        retry_transient(
            retry,
            cancelled,
            || async { self.produce(dead_letters).await.map_err(DeliveryFailure) },
            |DeliveryFailure(error), _| {
                tracing::warn!(%error, "dead letters not delivered; retrying");
                health.set_not_ready(format!("dead-letter topic unavailable: {error}"));
            },
        )
        .await
        .map_err(|stopped| match stopped {
            RetryStopped::Cancelled => Stopped::Cancelled,
            RetryStopped::Permanent(DeliveryFailure(error)) => {
                Stopped::PermanentFailure(error.to_string())
            }
        })?;
        for dead_letter in dead_letters {
            tracing::info!(
                topic = self.source_topic,
                reason = dead_letter.reason,
                partition = dead_letter.record.partition,
                offset = dead_letter.record.offset,
                message = %dead_letter.message,
                "record dead-lettered"
            );
            metrics::counter!(
                "recsys_consumer_dead_letters_total",
                "topic" => self.source_topic.clone(),
                "reason" => dead_letter.reason
            )
            .increment(1);
        }
        Ok(())
    }

    async fn produce(&self, dead_letters: &[DeadLetter]) -> Result<(), KafkaError> {
        let mut deliveries = Vec::with_capacity(dead_letters.len());
        for dead_letter in dead_letters {
            let partition = dead_letter.record.partition.to_string();
            let offset = dead_letter.record.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(dead_letter.reason),
                })
                .insert(Header {
                    key: "error",
                    value: Some(dead_letter.message.as_str()),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(self.source_topic.as_str()),
                })
                .insert(Header {
                    key: "source_partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "source_offset",
                    value: Some(offset.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dead_letter_topic).headers(headers);
            if let Some(key) = &dead_letter.record.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &dead_letter.record.payload {
                record = record.payload(payload.as_slice());
            }
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(error),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(error),
                Err(_cancelled) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }
}

/// A failed delivery to the dead-letter topic; the broker may come back, so it is retried.
struct DeliveryFailure(KafkaError);

impl Transience for DeliveryFailure {
    fn is_transient(&self) -> bool {
        true
    }
}
