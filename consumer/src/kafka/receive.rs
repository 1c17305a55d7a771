//! Receiving: batches that close on size or time (growing while the writer is busy, so a backlog
//! coalesces into large writes), and the task that copies each batch's records out of
//! librdkafka's buffers for the decoder.
//!
//! The batching loop is a `select!` rather than a stream combinator such as tokio-stream's
//! `chunks_timeout`: a batch here closes on a condition no combinator expresses (time passed *and*
//! the writer free *and* nothing more waiting in the client or, by the last fetch's watermarks, in
//! the log).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::clock::now_ms;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use tokio_util::sync::CancellationToken;

use super::decode::{NextOffsets, ReceivedBatch};
use super::outcome::ConsumerProgress;
use super::rebalance::ConsumerCallbacks;
use super::settings::ConsumerSettings;
use crate::record_copies::{RecordCopies, RecordRef};

/// Receives one batch, handing each record to `on_record` while it is still in librdkafka's
/// buffer. The batch closes at `max_events` records, or once `max_wait` has passed since its
/// first record, `ready` has completed *and* nothing is waiting: neither in librdkafka's queue
/// nor, as far as its last fetches tell, in the log in numbers that would fill the batch. A
/// consumer passes "the previous batch is taken" as `ready`. So at a low or steady rate a batch
/// closes after `max_wait`, while under a backlog it fills up to `max_events`: a user's many
/// events coalesce into one store write, where closing whenever the writer is free would make
/// the batches, and the events per write, smaller the faster the writer gets. Returns how many
/// were received: 0 when `cancelled` fired first. Used by the consumer and by the benchmark's
/// consume-only client, so the two batch alike.
pub async fn receive_batch<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    max_events: usize,
    max_wait: Duration,
    ready: impl Future<Output = ()>,
    cancelled: &CancellationToken,
    mut on_record: impl FnMut(&BorrowedMessage<'_>),
) -> KafkaResult<usize> {
    let mut positions = ReadPositions::default();
    tokio::select! {
        biased;
        () = cancelled.cancelled() => return Ok(0),
        received = consumer.recv() => {
            let message = received?;
            positions.observe(&message);
            on_record(&message);
        }
    }
    let mut count = 1;
    let waited = tokio::time::sleep(max_wait);
    // How long a batch waits for the next fetch once the log was seen to hold more.
    let fetch_grace = tokio::time::sleep(max_wait);
    tokio::pin!(waited, ready, fetch_grace);
    let mut max_wait_passed = false;
    let mut writer_ready = false;
    let mut waiting_for_fetch = false;
    while count < max_events {
        tokio::select! {
            biased;
            () = cancelled.cancelled() => break,
            () = &mut waited, if !max_wait_passed => max_wait_passed = true,
            () = &mut ready, if max_wait_passed && !writer_ready => writer_ready = true,
            received = consumer.recv() => match received {
                Ok(message) => {
                    positions.observe(&message);
                    on_record(&message);
                    count += 1;
                    waiting_for_fetch = false;
                }
                // What was received is handled; the next batch meets the error again.
                Err(error) => {
                    tracing::warn!(%error, "kafka receive failed");
                    break;
                }
            },
            () = &mut fetch_grace, if waiting_for_fetch => break,
            // Polled only after `recv` found nothing in the queue.
            () = std::future::ready(()), if writer_ready && !waiting_for_fetch => {
                if positions.records_in_log(consumer) < (max_events - count) as i64 {
                    break;
                }
                waiting_for_fetch = true;
                fetch_grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + max_wait);
            }
        }
    }
    Ok(count)
}

/// The next offset to read of each partition a batch has records from, and their topic.
#[derive(Debug, Default)]
struct ReadPositions {
    topic: std::ffi::CString,
    next_offsets: NextOffsets,
}

impl ReadPositions {
    fn observe(&mut self, message: &BorrowedMessage<'_>) {
        if self.topic.is_empty() {
            self.topic = std::ffi::CString::new(message.topic()).unwrap_or_default();
        }
        self.next_offsets
            .observe(message.partition(), message.offset());
    }

    /// Records in the log past those read, by the high watermarks of the client's last fetch
    /// responses.
    fn records_in_log<C: ConsumerContext + 'static>(&self, consumer: &StreamConsumer<C>) -> i64 {
        self.next_offsets
            .iter()
            .map(|(&partition, &next)| {
                cached_high_watermark(consumer, &self.topic, partition)
                    .map_or(0, |high| (high - next).max(0))
            })
            .sum()
    }
}

/// The high watermark of a partition as of the client's last fetch response, if known:
/// librdkafka keeps it, so no request is made (rdkafka wraps only the variant that asks the
/// broker).
#[allow(unsafe_code)]
fn cached_high_watermark<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    topic: &std::ffi::CStr,
    partition: i32,
) -> Option<i64> {
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer`, `topic` is NUL-terminated, and
    // librdkafka only writes the two integers it is given.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Receives batches until `cancelled` (or until the decoding side is gone), copying each record
/// into a reused buffer and handing full batches to `copies`. `written` is the writer's channel,
/// only watched for room.
pub(super) async fn receive_batches(
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    settings: ConsumerSettings,
    cancelled: CancellationToken,
    progress: Arc<ConsumerProgress>,
    mut recycled: tokio::sync::mpsc::Receiver<RecordCopies>,
    copies: tokio::sync::mpsc::Sender<RecordCopies>,
    written: tokio::sync::mpsc::Sender<ReceivedBatch>,
) {
    while !cancelled.is_cancelled() {
        let mut batch = recycled.try_recv().unwrap_or_default();
        let received = receive_batch(
            &consumer,
            settings.max_batch_events,
            settings.max_batch_wait,
            // The previous batch is decoded and the writer has taken the one before it (both
            // channels have room; dropping the permits leaves the room to the senders): a
            // batch keeps growing while the writer is busy, so at a low rate a slow write
            // makes the next batch larger, not a queue of small ones.
            async {
                let _ = copies.reserve().await;
                let _ = written.reserve().await;
            },
            &cancelled,
            |message| {
                if batch.is_empty() {
                    batch.received_ms = now_ms();
                    progress
                        .first_record_at
                        .get_or_init(std::time::Instant::now);
                }
                batch.push(RecordRef::of(message));
            },
        )
        .await;
        match received {
            Ok(0) => {}
            Ok(_) => {
                if copies.send(batch).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "kafka receive failed");
                tokio::select! {
                    () = cancelled.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}
