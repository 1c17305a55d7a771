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

mod archiver;
mod catalogue;
mod dead_letters;
mod decode;
mod outcome;
mod rebalance;
mod receive;
mod settings;

use std::sync::Arc;

use common::retry::RetryStopped;
use engine::events::{BatchOutcome, EventApplier};
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use dead_letters::DeadLetterWriter;
use rebalance::commit;

pub use archiver::{ArchiverSettings, ArchiverTotals, EventArchiver};
pub use catalogue::{CatalogueConsumer, CatalogueTotals};
pub use decode::{DeadLetter, NextOffsets, RawRecord, ReceivedBatch};
pub use outcome::{ConsumerProgress, RunTotals, Stopped};
pub use rebalance::{ConsumerCallbacks, REWIND_RECORDS};
pub use receive::receive_batch;
pub use settings::ConsumerSettings;

pub struct EventConsumer {
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    dead_letters: DeadLetterWriter,
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
        Ok(EventConsumer {
            consumer: settings.subscribed_consumer()?,
            dead_letters: settings.dead_letter_writer()?,
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
        let receiver = tokio::spawn(receive::receive_batches(
            Arc::clone(&self.consumer),
            self.settings.clone(),
            self.cancelled.clone(),
            Arc::clone(&self.progress),
            recycled,
            copies,
            batches.clone(),
        ));
        let decoder = tokio::spawn(decode::decode_batches(
            Arc::clone(&self.applier),
            self.settings.max_event_bytes,
            copied,
            batches,
        ));
        while let Some(mut batch) = received.recv().await {
            let processed = self.process_batch(&mut batch).await;
            let mut copies = std::mem::take(&mut batch.copies);
            copies.clear();
            // A full return channel means the receiver has buffers enough: this one is dropped.
            let _ = emptied.try_send(copies);
            match processed {
                Ok((outcome, dead_letters)) => {
                    totals.batches += 1;
                    totals.applied += outcome.applied as u64;
                    totals.duplicates += outcome.duplicates as u64;
                    totals.pushed += outcome.pushed as u64;
                    totals.dead_letters += dead_letters as u64;
                }
                Err(Stopped::Cancelled) => break,
                Err(Stopped::PermanentFailure(reason)) => {
                    tracing::error!(%reason, "consumer stopped; nothing of the batch was committed");
                    self.health.set_not_ready(format!("stopped: {reason}"));
                    totals.failure = Some(reason);
                    break;
                }
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
        if totals.failure.is_none() {
            self.health.set_not_ready("shutting down");
        }
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
        self.dead_letters
            .send(
                &batch.dead_letters,
                &self.settings.retry,
                &self.cancelled,
                &self.health,
            )
            .await?;
        metrics::counter!("recsys_consumer_events_total", "outcome" => "dead_letter")
            .increment(batch.dead_letters.len() as u64);

        let outcome = self
            .applier
            .apply_until_stored(
                &mut batch.events,
                &self.settings.retry,
                &self.cancelled,
                |failure| match failure {
                    Some(error) => self
                        .health
                        .set_not_ready(format!("state store unavailable: {error}")),
                    None => self.health.set_ready(),
                },
            )
            .await
            .map_err(|stopped| match stopped {
                RetryStopped::Cancelled => Stopped::Cancelled,
                RetryStopped::Permanent(error) => Stopped::PermanentFailure(error.to_string()),
            })?;
        // Retrying cannot make these users' records readable: their events go to the dead
        // letters with the reason, the other users' are stored, and the partition moves on.
        let unreadable = batch.unreadable_state_dead_letters(&outcome.unreadable);
        self.dead_letters
            .send(
                &unreadable,
                &self.settings.retry,
                &self.cancelled,
                &self.health,
            )
            .await?;
        metrics::counter!("recsys_consumer_events_total", "outcome" => "dead_letter")
            .increment(unreadable.len() as u64);
        let applied_at = std::time::Instant::now();
        let pushed = self.applier.push_recommendations(&batch.events).await;
        let pushed_at = std::time::Instant::now();
        commit(&self.consumer, &self.settings.topic, &batch.next_offsets).await;
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
        let dead_letters = batch.dead_letters.len() + unreadable.len();
        Ok((BatchOutcome { pushed, ..outcome }, dead_letters))
    }
}
