//! Dead letters: records that cannot be applied go to the dead-letter topic with headers saying
//! why and where they came from, and their offsets are committed only once that topic has them.
//!
//! A dead letter is always deliverable, or its partition would never move again: a record the
//! broker took from a producer with a larger `message.max.bytes` cannot be written back as it
//! came. Every dead letter carries the size and SHA-256 of the original payload; a payload too
//! large for this producer is cut to fit (`payload_truncated: true`), and one the broker still
//! refuses as too large is sent without a payload. Keys longer than [`MAX_KEY_BYTES`]
//! (`key_truncated: true`) and error messages longer than [`MAX_MESSAGE_BYTES`] are cut too.

use common::retry::{retry_transient, RetryPolicy, RetryStopped};
use engine::event_log::EventProducer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use common::retry::Transience;

use super::decode::DeadLetter;
use super::outcome::Stopped;
use crate::health::Health;

/// librdkafka's default `message.max.bytes`, which the producer keeps: the most a record's key,
/// payload and headers may take together.
const MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room left for the record's framing next to key, payload and headers.
const FRAMING_BYTES: usize = 1_024;
pub(super) const MAX_KEY_BYTES: usize = 1_024;
pub(super) const MAX_MESSAGE_BYTES: usize = 4_096;

/// Produces dead letters for one source topic.
pub struct DeadLetterWriter {
    pub(super) producer: EventProducer,
    pub(super) source_topic: String,
    pub(super) dead_letter_topic: String,
}

/// One dead letter as it is written: its key and payload cut to fit, and its headers.
struct Envelope<'a> {
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: OwnedHeaders,
    payload_truncated: bool,
    key_truncated: bool,
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
            let envelope = self.envelope(dead_letter, true);
            let delivery = match self.producer.send_result(self.record(&envelope)) {
                Ok(delivery) => Some(delivery),
                Err((error, _)) if is_too_large(&error) => None,
                Err((error, _)) => return Err(error),
            };
            let truncated = envelope.payload_truncated || envelope.key_truncated;
            deliveries.push((dead_letter, truncated, delivery));
        }
        for (dead_letter, mut truncated, delivery) in deliveries {
            let too_large = match delivery {
                None => true,
                Some(delivery) => match delivery.await {
                    Ok(Ok(_)) => false,
                    Ok(Err((error, _))) if is_too_large(&error) => true,
                    Ok(Err((error, _))) => return Err(error),
                    Err(_cancelled) => return Err(KafkaError::Canceled),
                },
            };
            if too_large {
                // The broker's limit for the topic is below ours: what is left always fits.
                let envelope = self.envelope(dead_letter, false);
                truncated = true;
                match self.producer.send_result(self.record(&envelope)) {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((error, _))) => return Err(error),
                        Err(_cancelled) => return Err(KafkaError::Canceled),
                    },
                    Err((error, _)) => return Err(error),
                }
            }
            if truncated {
                metrics::counter!(
                    "recsys_consumer_dead_letters_truncated_total",
                    "topic" => self.source_topic.clone()
                )
                .increment(1);
            }
        }
        Ok(())
    }

    fn record<'a>(&'a self, envelope: &'a Envelope<'a>) -> FutureRecord<'a, [u8], [u8]> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.dead_letter_topic).headers(envelope.headers.clone());
        if let Some(key) = envelope.key {
            record = record.key(key);
        }
        if let Some(payload) = envelope.payload {
            record = record.payload(payload);
        }
        record
    }

    /// The dead letter cut to fit this producer's limit, or with no payload at all when
    /// `with_payload` is false.
    fn envelope<'a>(&'a self, dead_letter: &'a DeadLetter, with_payload: bool) -> Envelope<'a> {
        let record = &dead_letter.record;
        let payload = record.payload.as_deref();
        let key = record
            .key
            .as_deref()
            .map(|key| &key[..key.len().min(MAX_KEY_BYTES)]);
        let original_size = payload.map_or(0, <[u8]>::len).to_string();
        let original_sha256 = format!("{:x}", Sha256::digest(payload.unwrap_or_default()));
        let message = cut_at_char(&dead_letter.message, MAX_MESSAGE_BYTES);
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let mut headers = OwnedHeaders::new();
        let mut headers_len = 0;
        for (name, value) in [
            ("reason", dead_letter.reason),
            ("error", message),
            ("source_topic", self.source_topic.as_str()),
            ("source_partition", partition.as_str()),
            ("source_offset", offset.as_str()),
            ("original_size", original_size.as_str()),
            ("original_sha256", original_sha256.as_str()),
        ] {
            headers_len += name.len() + value.len();
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let room = MESSAGE_MAX_BYTES
            - FRAMING_BYTES
            - headers_len
            - key.map_or(0, <[u8]>::len)
            - "payload_truncated".len()
            - "key_truncated".len()
            - 2 * "true".len();
        let kept = match payload {
            Some(payload) if with_payload => Some(&payload[..payload.len().min(room)]),
            _ => None,
        };
        let payload_truncated = kept.map_or(0, <[u8]>::len) < payload.map_or(0, <[u8]>::len);
        let key_truncated = record
            .key
            .as_ref()
            .is_some_and(|full| full.len() > MAX_KEY_BYTES);
        for (name, cut) in [
            ("payload_truncated", payload_truncated),
            ("key_truncated", key_truncated),
        ] {
            if cut {
                headers = headers.insert(Header {
                    key: name,
                    value: Some("true"),
                });
            }
        }
        Envelope {
            key,
            payload: kept,
            headers,
            payload_truncated,
            key_truncated,
        }
    }
}

fn is_too_large(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// At most `limit` bytes of `text`, ending on a character boundary.
fn cut_at_char(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A failed delivery to the dead-letter topic; the broker may come back, so it is retried.
struct DeliveryFailure(KafkaError);

impl Transience for DeliveryFailure {
    fn is_transient(&self) -> bool {
        true
    }
}
