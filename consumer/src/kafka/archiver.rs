//! The archiver: a consumer group of its own (`<consumer.group_id>.archive`) that copies the
//! events topic into the event archive (`archive::EventArchive`), the training data of retraining.
//!
//! It is separate from the group that applies events, so the state path never waits on a file
//! system: it buffers records for `archive.flush_interval_ms` (or `archive.max_buffered_events`),
//! writes them (one file per day) and only then commits their offsets. A crash before the commit
//! redelivers the buffer, which is written again; readers drop the repeats by event id. Records the
//! events consumer dead-letters (invalid, or keyed by another user) are skipped here alike, so the
//! archive holds exactly the applied events.

use std::sync::Arc;
use std::time::Duration;

use archive::{ArchivedEvent, EventArchive};
use common::clock::now_ms;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use schemas::{EventLimits, InteractionEvent};
use tokio_util::sync::CancellationToken;

use super::decode::NextOffsets;
use super::rebalance::{commit, ConsumerCallbacks};
use super::receive::receive_batch;
use super::settings::ConsumerSettings;
use crate::health::Health;
use crate::record_copies::RecordRef;

/// When and how much the archiver writes.
#[derive(Debug, Clone)]
pub struct ArchiverSettings {
    pub flush_interval: Duration,
    pub max_buffered_events: usize,
    pub retention_days: u32,
}

/// What a run of the archiver did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiverTotals {
    pub files: u64,
    pub archived: u64,
    /// Records the events consumer dead-letters, not archived.
    pub skipped: u64,
}

pub struct EventArchiver {
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    archive: Arc<EventArchive>,
    settings: ConsumerSettings,
    archiving: ArchiverSettings,
    health: Arc<Health>,
    cancelled: CancellationToken,
}

/// Events received and not yet written, with the offsets to commit once they are.
#[derive(Default)]
struct Buffer {
    events: Vec<ArchivedEvent>,
    next_offsets: NextOffsets,
    records: usize,
    skipped: u64,
}

impl EventArchiver {
    pub fn new(
        settings: ConsumerSettings,
        archiving: ArchiverSettings,
        archive: Arc<EventArchive>,
        health: Arc<Health>,
        cancelled: CancellationToken,
    ) -> KafkaResult<EventArchiver> {
        Ok(EventArchiver {
            consumer: settings.subscribed_consumer()?,
            archive,
            settings,
            archiving,
            health,
            cancelled,
        })
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Archives until `cancelled`; what is buffered then is written and committed first.
    pub async fn run(&self) -> ArchiverTotals {
        let mut totals = ArchiverTotals::default();
        self.health.set_ready();
        let mut buffer = Buffer::default();
        let mut flush_at = tokio::time::Instant::now() + self.archiving.flush_interval;
        loop {
            let room = self
                .archiving
                .max_buffered_events
                .saturating_sub(buffer.events.len())
                .clamp(1, self.settings.max_batch_events);
            let received_ms = now_ms();
            // Records handed over before the flush deadline stay in the buffer even when the
            // deadline ends the receive.
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(flush_at) => {}
                received = receive_batch(
                    &self.consumer,
                    room,
                    self.settings.max_batch_wait,
                    std::future::ready(()),
                    &self.cancelled,
                    |message| buffer.push(RecordRef::of(message), self.settings.max_event_bytes, received_ms),
                ) => {
                    if let Err(error) = received {
                        tracing::warn!(%error, "kafka receive failed (archiver)");
                    }
                }
            }
            let cancelled = self.cancelled.is_cancelled();
            let due = cancelled
                || tokio::time::Instant::now() >= flush_at
                || buffer.events.len() >= self.archiving.max_buffered_events;
            if due {
                if buffer.records > 0 && !self.flush(&mut buffer, &mut totals).await {
                    break;
                }
                flush_at = tokio::time::Instant::now() + self.archiving.flush_interval;
            }
            if cancelled {
                break;
            }
        }
        totals
    }

    /// Writes the buffer, retrying through file-system failures, then commits its offsets.
    /// Returns false when shutdown came first (nothing committed; the records are redelivered).
    async fn flush(&self, buffer: &mut Buffer, totals: &mut ArchiverTotals) -> bool {
        let mut delay = Duration::from_millis(100);
        let written = loop {
            let archive = Arc::clone(&self.archive);
            let events = std::mem::take(&mut buffer.events);
            let attempt = tokio::task::spawn_blocking(move || {
                let written = archive.append(&events);
                (written, events)
            })
            .await;
            let (written, events) = match attempt {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::error!(%error, "archive write panicked");
                    return false;
                }
            };
            buffer.events = events;
            match written {
                Ok(files) => break files,
                Err(error) => {
                    tracing::warn!(%error, "archive write failed; retrying");
                    self.health
                        .set_not_ready(format!("event archive unwritable: {error}"));
                    metrics::counter!("recsys_archive_write_failures_total").increment(1);
                    tokio::select! {
                        () = self.cancelled.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        self.health.set_ready();
        commit(&self.consumer, &self.settings.topic, &buffer.next_offsets).await;
        let archived = buffer.events.len() as u64;
        totals.files += written.len() as u64;
        totals.archived += archived;
        totals.skipped += buffer.skipped;
        metrics::counter!("recsys_archive_events_total").increment(archived);
        *buffer = Buffer::default();
        let archive = Arc::clone(&self.archive);
        let retention_days = self.archiving.retention_days;
        let expired =
            tokio::task::spawn_blocking(move || archive.expire(retention_days, now_ms())).await;
        if let Ok(Err(error)) = expired {
            tracing::warn!(%error, "expiring old archive days failed");
        }
        true
    }
}

impl Buffer {
    fn push(&mut self, record: RecordRef<'_>, max_event_bytes: usize, received_ms: i64) {
        self.records += 1;
        self.next_offsets.observe(record.partition, record.offset);
        let limits = EventLimits {
            max_event_bytes,
            now_ms: received_ms,
        };
        match InteractionEvent::decode(record.payload.unwrap_or_default(), limits) {
            Ok(event) if record.key == Some(event.user_id.as_bytes()) => {
                self.events.push(ArchivedEvent {
                    event,
                    position: Some((record.partition, record.offset)),
                });
            }
            _ => self.skipped += 1,
        }
    }
}
