//! The Kafka consumer group: batches of records → decode → dead letters → state store → pushed
//! recommendations → offsets. Three tasks form a pipeline: one receives batches (copying the
//! records out of librdkafka's buffers), one decodes them, one writes them, so on a multi-core
//! machine the next batch is read and decoded while the previous one is written; under a
//! backlog a batch fills up to `max_batch_events`, so a user's many events become one write.
//!
//! Why nothing is lost and nothing is applied twice ("effectively once"):
//! - Records are keyed by user id, so one user's events are in one partition, in order.
//! - Every applied interaction carries its (partition, offset); the store writes a user's new
//!   items together with that user's last applied offset per partition, atomically (a
//!   compare-and-set of the user's record on Redis, one transaction embedded), and skips anything
//!   at or below it. Applying a
//!   record again (a crash before the commit, a rebalance) therefore changes nothing.
//! - Offsets are stored for commit only after the batch's state write (and its dead letters'
//!   delivery) succeeded, and committed synchronously after each batch and on partition
//!   revocation. A crash loses at most the uncommitted tail, which is redelivered and skipped.
//! - On every assignment the consumer starts each partition [`REWIND_RECORDS`] before its
//!   committed offset: re-reading is free (the store skips what it has), while a broker that
//!   serves a fetch from inside a record batch starting at the *next* batch (tansu 0.6 does)
//!   would otherwise skip the rest of the batch the commit fell into.
//! - If the topic's partition count grows, a user's later events may hash to another partition.
//!   Their offsets are tracked per partition, so nothing is skipped wrongly, but the order between
//!   the old partition's unconsumed tail and the new one's records is not defined: drain the
//!   topic (or pause producers) before repartitioning.
//!
//! A store outage stops consumption: the batch is retried with backoff and nothing is committed
//! meanwhile; behind it at most four more batches fill (one waiting for the writer, one held by
//! the decoder, one waiting for the decoder, one being received), then the receiving task stops
//! polling (librdkafka's prefetch queue is bounded, so fetching stops too); the
//! process stays up and `/readyz` says why it is not ready. Partitions are not `pause`d: resuming
//! refetches from the last record handed to us, which may sit inside a record batch (see above).
//! A consumer stalled longer than `max.poll.interval.ms` leaves the group and rejoins when the
//! store is back; its uncommitted records are redelivered and skipped where already applied.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use engine::events::{Backoff, BatchOutcome, EventApplier, EventBatch};
use engine::popularity::now_ms;
use engine::store::SourcePosition;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use schemas::{EventLimits, EventRef};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::record_copies::{RecordCopies, RecordRef};
use crate::sink::{kafka_producer, EventProducer};

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub max_batch_events: usize,
    pub max_batch_wait: Duration,
    pub max_event_bytes: usize,
    pub backoff: Backoff,
    /// How long the group waits for a silent member (a crashed consumer) before reassigning
    /// its partitions.
    pub session_timeout: Duration,
    /// librdkafka's `fetch.wait.max.ms`.
    pub fetch_wait_max: Duration,
}

impl ConsumerSettings {
    /// The group consumer's librdkafka configuration. The benchmark's consume-only client is
    /// built from it too, so the two differ only in what they do with the records.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
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
                "fetch.wait.max.ms",
                self.fetch_wait_max.as_millis().to_string(),
            )
            // When more is queued locally than `queued.min.messages`, librdkafka postpones the
            // partition's next fetch by this long (default 1 s): a consumer slower than the
            // fetcher then drains its queue and sits idle for the rest of the second.
            .set("fetch.queue.backoff.ms", "10");
        config
    }
}

/// A refused record's bytes, copied out of librdkafka's buffers (only dead letters need them).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp (producer create time), ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl RawRecord {
    pub fn from_record(record: RecordRef<'_>) -> RawRecord {
        RawRecord {
            partition: record.partition,
            offset: record.offset,
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.map(<[u8]>::to_vec),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// The offset to commit for each partition of a batch: one past its last record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextOffsets(BTreeMap<i32, i64>);

impl NextOffsets {
    pub fn observe(&mut self, partition: i32, offset: i64) {
        let next = self.0.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
    }

    pub fn to_list(&self, topic: &str) -> TopicPartitionList {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &self.0 {
            if let Err(error) =
                offsets.add_partition_offset(topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(%error, partition, "cannot record an offset");
            }
        }
        offsets
    }
}

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
            .0
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

/// A record refused, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub record: RawRecord,
    /// A stable label: a `RejectionReason` or `key_mismatch`.
    pub reason: &'static str,
    pub message: String,
}

/// A received batch, decoded as it arrived: valid events grouped by user with their log
/// positions, dead letters, and the offsets to commit once all of them are handled.
#[derive(Debug)]
pub struct ReceivedBatch {
    pub records: usize,
    pub events: EventBatch,
    pub dead_letters: Vec<DeadLetter>,
    pub next_offsets: NextOffsets,
    /// When its first record arrived (ms since the epoch).
    pub received_ms: i64,
}

impl ReceivedBatch {
    pub fn new(events: EventBatch) -> ReceivedBatch {
        ReceivedBatch {
            records: 0,
            events,
            dead_letters: Vec::new(),
            next_offsets: NextOffsets::default(),
            received_ms: 0,
        }
    }

    /// Decodes `record` into an event or a dead letter. A valid event must also be keyed by its
    /// own user id: that key is what keeps a user's events in one partition, in order.
    pub fn push(&mut self, record: RecordRef<'_>, max_event_bytes: usize) {
        self.records += 1;
        self.next_offsets.observe(record.partition, record.offset);
        let limits = EventLimits {
            max_event_bytes,
            now_ms: self.received_ms,
        };
        let event = match EventRef::decode(record.payload.unwrap_or_default(), limits) {
            Ok(event) => event,
            Err(rejection) => {
                self.dead_letters.push(DeadLetter {
                    record: RawRecord::from_record(record),
                    reason: rejection.reason.as_str(),
                    message: rejection.message,
                });
                return;
            }
        };
        if record.key != Some(event.user_id.as_bytes()) {
            self.dead_letters.push(DeadLetter {
                record: RawRecord::from_record(record),
                reason: "key_mismatch",
                message: format!(
                    "the record key must be the user id '{}' (it decides the partition, hence the order of the user's events)",
                    event.user_id
                ),
            });
            return;
        }
        self.events.push(
            &event,
            Some(SourcePosition {
                partition: record.partition,
                offset: record.offset,
            }),
            record.timestamp_ms.unwrap_or(self.received_ms),
        );
    }
}

/// How far before its committed offset a newly assigned partition is read again: at least one
/// record batch (librdkafka's `batch.num.messages` is at most 10,000 by default).
pub const REWIND_RECORDS: i64 = 10_000;

/// librdkafka callbacks: commit applied offsets when partitions are revoked, rewind newly
/// assigned partitions, and export lag.
pub struct ConsumerCallbacks {
    topic: String,
}

/// `assignment` with each partition's start moved [`REWIND_RECORDS`] before its committed offset
/// (partitions without a commit keep `auto.offset.reset`).
fn rewound(
    consumer: &BaseConsumer<ConsumerCallbacks>,
    assignment: &TopicPartitionList,
) -> KafkaResult<TopicPartitionList> {
    let committed = consumer.committed_offsets(assignment.clone(), Duration::from_secs(10))?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(committed) => Offset::Offset((committed - REWIND_RECORDS).max(0)),
            other => other,
        };
        start.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    Ok(start)
}

impl ClientContext for ConsumerCallbacks {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
            if *partition < 0 || stats.consumer_lag < 0 {
                continue;
            }
            metrics::gauge!("recsys_consumer_lag_messages", "partition" => partition.to_string())
                .set(stats.consumer_lag as f64);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for ConsumerCallbacks {
    /// Eager rebalancing (the default `range,roundrobin` assignors) with two additions: applied
    /// offsets are committed before partitions go, and new partitions start rewound.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let start = rewound(consumer, partitions).unwrap_or_else(|error| {
                    // Without the committed offsets, start where librdkafka would.
                    tracing::warn!(%error, "cannot read committed offsets; not rewinding");
                    partitions.clone()
                });
                if let Err(error) = consumer.assign(&start) {
                    tracing::error!(%error, "partition assignment failed");
                }
                tracing::info!(partitions = start.count(), "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Offsets are stored only after their batch was applied, so this commits nothing
                // that is not in the store.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(error) => tracing::warn!(%error, "commit on revoke failed"),
                }
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "partition revocation failed");
                }
                tracing::info!(partitions = partitions.count(), "partitions revoked");
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

/// What a run did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub batches: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub pushed: u64,
}

/// How far the consumer got, readable while it runs (benchmarks, tests, operators).
#[derive(Debug, Default)]
pub struct ConsumerProgress {
    /// Records handled and committed: applied, skipped as duplicates, or dead-lettered.
    pub committed_records: std::sync::atomic::AtomicU64,
    /// When the first record of this run arrived.
    pub first_record_at: std::sync::OnceLock<std::time::Instant>,
}

/// The batch could not be finished because shutdown was requested during an outage; its offsets
/// were not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

pub struct EventConsumer {
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    dead_letter_producer: EventProducer,
    applier: Arc<EventApplier>,
    settings: ConsumerSettings,
    health: Arc<Health>,
    cancelled: CancellationToken,
    progress: Arc<ConsumerProgress>,
}

impl EventConsumer {
    pub fn new(
        settings: ConsumerSettings,
        applier: Arc<EventApplier>,
        health: Arc<Health>,
        cancelled: CancellationToken,
    ) -> KafkaResult<EventConsumer> {
        let consumer: StreamConsumer<ConsumerCallbacks> = settings
            .client_config()
            .create_with_context(ConsumerCallbacks {
                topic: settings.topic.clone(),
            })?;
        consumer.subscribe(&[&settings.topic])?;
        Ok(EventConsumer {
            consumer: Arc::new(consumer),
            dead_letter_producer: kafka_producer(&settings.brokers)?,
            applier,
            settings,
            health,
            cancelled,
            progress: Arc::default(),
        })
    }

    pub fn progress(&self) -> Arc<ConsumerProgress> {
        Arc::clone(&self.progress)
    }

    /// Consumes until `cancelled`; the batch in flight is finished and committed first.
    ///
    /// Batches are received, decoded and written by three tasks, so on a multi-core runtime
    /// they run side by side. Between stages at most one batch waits (channels of one); the
    /// batch being received keeps growing until the decoder takes the one before it, and the
    /// decoder takes one only when the writer has taken the one before that, so a backlog fills
    /// batches. A received batch that was not written when shutdown came is simply not
    /// committed, and is redelivered.
    pub async fn run(&self) -> RunTotals {
        let mut totals = RunTotals::default();
        self.health.set_ready();
        let (copies, copied) = tokio::sync::mpsc::channel(1);
        let (emptied, recycled) = tokio::sync::mpsc::channel(2);
        let (batches, mut received) = tokio::sync::mpsc::channel(1);
        let receiver = tokio::spawn(receive_batches(
            Arc::clone(&self.consumer),
            self.settings.clone(),
            self.cancelled.clone(),
            Arc::clone(&self.progress),
            recycled,
            copies,
            batches.clone(),
        ));
        let decoder = tokio::spawn(decode_batches(
            Arc::clone(&self.applier),
            self.settings.max_event_bytes,
            copied,
            emptied,
            batches,
        ));
        while let Some(mut batch) = received.recv().await {
            match self.process_batch(&mut batch).await {
                Ok((outcome, dead_letters)) => {
                    totals.batches += 1;
                    totals.applied += outcome.applied as u64;
                    totals.duplicates += outcome.duplicates as u64;
                    totals.pushed += outcome.pushed as u64;
                    totals.dead_letters += dead_letters as u64;
                }
                Err(Stopped) => break,
            }
            if self.cancelled.is_cancelled() {
                break;
            }
        }
        // The receiver stops at cancellation; dropping our end also ends the decoder if it
        // waits to send, and with it the receiver.
        drop(received);
        for (task, stage) in [(receiver, "receiver"), (decoder, "decoder")] {
            if let Err(error) = task.await {
                tracing::error!(%error, stage, "a batch stage failed");
            }
        }
        self.health.set_not_ready("shutting down");
        totals
    }

    /// Dead letters out, valid events into the store, recommendations pushed, offsets committed.
    /// Returns the store outcome and the number of dead letters.
    pub async fn process_batch(
        &self,
        batch: &mut ReceivedBatch,
    ) -> Result<(BatchOutcome, usize), Stopped> {
        let started = std::time::Instant::now();
        metrics::histogram!("recsys_consumer_batch_size").record(batch.records as f64);
        self.send_dead_letters(&batch.dead_letters).await?;

        let outcome = self
            .applier
            .apply_until_stored(
                &mut batch.events,
                &self.settings.backoff,
                &self.cancelled,
                |failure| match failure {
                    Some(error) => self
                        .health
                        .set_not_ready(format!("state store unavailable: {error}")),
                    None => self.health.set_ready(),
                },
            )
            .await
            .ok_or(Stopped)?;
        let applied_at = std::time::Instant::now();
        let pushed = self.applier.push_recommendations(&batch.events).await;
        let pushed_at = std::time::Instant::now();
        self.commit(&batch.next_offsets).await;
        if tracing::enabled!(tracing::Level::DEBUG) {
            // How old the batch's events were when it was received: time spent before this
            // process.
            let (oldest, newest) = batch
                .events
                .logged_at_ms()
                .iter()
                .copied()
                .fold(None, |range: Option<(i64, i64)>, time| {
                    Some(range.map_or((time, time), |(oldest, newest)| {
                        (oldest.min(time), newest.max(time))
                    }))
                })
                .unwrap_or((batch.received_ms, batch.received_ms));
            tracing::debug!(
                records = batch.records,
                oldest_age_ms = batch.received_ms - oldest,
                newest_age_ms = batch.received_ms - newest,
                apply_ms = (applied_at - started).as_secs_f64() * 1e3,
                push_ms = (pushed_at - applied_at).as_secs_f64() * 1e3,
                commit_ms = pushed_at.elapsed().as_secs_f64() * 1e3,
                "batch done"
            );
        }
        self.progress
            .committed_records
            .fetch_add(batch.records as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((BatchOutcome { pushed, ..outcome }, batch.dead_letters.len()))
    }

    /// Produces every dead letter and waits for their delivery, retrying with backoff: their
    /// offsets must not be committed before they are safe in the dead-letter topic.
    async fn send_dead_letters(&self, dead_letters: &[DeadLetter]) -> Result<(), Stopped> {
        if dead_letters.is_empty() {
            return Ok(());
        }
        let mut delay = self.settings.backoff.initial;
        loop {
            match self.produce_dead_letters(dead_letters).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "dead letters not delivered; retrying");
                    self.health
                        .set_not_ready(format!("dead-letter topic unavailable: {error}"));
                }
            }
            if !self
                .settings
                .backoff
                .wait(&mut delay, &self.cancelled)
                .await
            {
                return Err(Stopped);
            }
        }
        for dead_letter in dead_letters {
            tracing::info!(
                reason = dead_letter.reason,
                partition = dead_letter.record.partition,
                offset = dead_letter.record.offset,
                message = %dead_letter.message,
                "event dead-lettered"
            );
            metrics::counter!("recsys_consumer_dead_letters_total", "reason" => dead_letter.reason)
                .increment(1);
            metrics::counter!("recsys_consumer_events_total", "outcome" => "dead_letter")
                .increment(1);
        }
        Ok(())
    }

    async fn produce_dead_letters(&self, dead_letters: &[DeadLetter]) -> Result<(), KafkaError> {
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
                    value: Some(self.settings.topic.as_str()),
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
                FutureRecord::to(&self.settings.dead_letter_topic).headers(headers);
            if let Some(key) = &dead_letter.record.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &dead_letter.record.payload {
                record = record.payload(payload.as_slice());
            }
            match self.dead_letter_producer.send_result(record) {
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

    /// Stores the next offset of every partition of the batch and commits synchronously. A
    /// failed commit is not fatal: the offsets stay stored and go with the next commit (or the
    /// one on revocation), and anything redelivered meanwhile is skipped by the store.
    async fn commit(&self, next_offsets: &NextOffsets) {
        let offsets = next_offsets.to_list(&self.settings.topic);
        if let Err(error) = self.consumer.store_offsets(&offsets) {
            // Partitions revoked while the batch was in flight: their new owner redelivers.
            tracing::info!(%error, "offsets not stored (partitions revoked?)");
        }
        let consumer = Arc::clone(&self.consumer);
        let started = std::time::Instant::now();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await
                .unwrap_or(Err(KafkaError::Canceled));
        metrics::histogram!("recsys_consumer_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match committed {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                metrics::counter!("recsys_consumer_commit_failures_total").increment(1);
                tracing::warn!(%error, "offset commit failed; it goes with the next one");
            }
        }
    }
}

/// Receives batches until `cancelled` (or until the decoding side is gone), copying each record
/// into a reused buffer and handing full batches to `copies`. `written` is the writer's channel,
/// only watched for room.
async fn receive_batches(
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

/// Decodes each batch of copied records into events grouped by user and dead letters, hands it
/// to `batches` (the writer) and the emptied buffer back to the receiver through `emptied`.
async fn decode_batches(
    applier: Arc<EventApplier>,
    max_event_bytes: usize,
    mut copied: tokio::sync::mpsc::Receiver<RecordCopies>,
    emptied: tokio::sync::mpsc::Sender<RecordCopies>,
    batches: tokio::sync::mpsc::Sender<ReceivedBatch>,
) {
    // Sized like the last batch: under a backlog batches are alike, and growing vectors and maps
    // of 100,000 entries by doubling copies them about twice over.
    let (mut expected_users, mut expected_events) = (0, 0);
    while let Some(mut copies) = copied.recv().await {
        let mut batch = ReceivedBatch::new(applier.batch(expected_users, expected_events));
        batch.received_ms = copies.received_ms;
        for record in copies.iter() {
            batch.push(record, max_event_bytes);
        }
        copies.clear();
        // A full return channel means the receiver has buffers enough: this one is dropped.
        let _ = emptied.try_send(copies);
        expected_users = batch.events.users();
        expected_events = batch.events.len();
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    #[test]
    fn the_consumer_passes_its_settings_to_librdkafka() {
        let settings = ConsumerSettings {
            brokers: "127.0.0.1:1".into(),
            topic: "events".into(),
            dead_letter_topic: "events-dead".into(),
            group_id: "group-7".into(),
            max_batch_events: 10,
            max_batch_wait: Duration::from_millis(5),
            max_event_bytes: 1024,
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            session_timeout: Duration::from_millis(6_500),
            fetch_wait_max: Duration::from_millis(7),
        };
        let config = settings.client_config();
        assert_eq!(config.get("group.id"), Some("group-7"));
        assert_eq!(config.get("session.timeout.ms"), Some("6500"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("7"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
    }

    fn record(offset: i64, key: &str, payload: Option<&str>) -> OwnedMessage {
        OwnedMessage::new(
            payload.map(|payload| payload.as_bytes().to_vec()),
            Some(key.as_bytes().to_vec()),
            "events".into(),
            Timestamp::CreateTime(1_780_000_000_000),
            3,
            offset,
            None,
        )
    }

    #[test]
    fn records_split_into_positioned_events_and_reasoned_dead_letters() {
        let good = r#"{"event_id":"e1","user_id":"7","item_id":"42","event_type":"view","event_time_ms":1780000000000}"#;
        let mut batch = ReceivedBatch::new(EventBatch::with_capacity(
            engine::events::EventWeights::default(),
            engine::popularity::DecayClock::new(24.0),
            0,
            0,
        ));
        batch.received_ms = 1_780_000_000_500;
        for message in [
            record(10, "7", Some(good)),
            record(11, "7", Some("{not json")),
            record(12, "8", Some(good)),
            record(13, "7", None),
        ] {
            batch.push(RecordRef::of(&message), 4096);
        }
        assert_eq!(batch.records, 4);
        assert_eq!(batch.events.len(), 1);
        let updates = batch.events.updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].user_id, "7");
        assert_eq!(updates[0].interactions[0].item.to_id(), "42");
        assert_eq!(
            updates[0].interactions[0].position,
            Some(SourcePosition {
                partition: 3,
                offset: 10
            })
        );
        assert_eq!(batch.events.logged_at_ms(), [1_780_000_000_000]);
        let reasons: Vec<(i64, &str)> = batch
            .dead_letters
            .iter()
            .map(|dead_letter| (dead_letter.record.offset, dead_letter.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (11, "invalid_json"),
                (12, "key_mismatch"),
                (13, "invalid_json")
            ]
        );
        // A dead letter keeps the record's bytes for the dead-letter topic.
        assert_eq!(
            batch.dead_letters[0].record.payload.as_deref(),
            Some("{not json".as_bytes())
        );
        // Every record, dead or not, is committed past.
        let offsets = batch.next_offsets.to_list("events");
        assert_eq!(
            offsets
                .find_partition("events", 3)
                .map(|element| element.offset()),
            Some(Offset::Offset(14))
        );
    }
}
