//! The event archive of the embedded mode: the in-process bus hands every applied batch to
//! [`ArchiveWriter`], whose task writes what it holds every `archive.flush_interval_ms` (or when
//! `archive.max_buffered_events` are waiting) and once more when the bus closes. Serving never
//! waits on it: a full queue drops the batch from the archive (counted), never delays an answer.
//! A crash loses at most one interval of archive; with Kafka the archiver group loses nothing
//! (`consumer::kafka::EventArchiver`).

use std::sync::Arc;
use std::time::Duration;

use archive::{ArchivedEvent, EventArchive};
use schemas::InteractionEvent;
use tokio::sync::mpsc;

use crate::config::ArchiveConfig;

/// Batches waiting for the writer task.
const QUEUE_BATCHES: usize = 1_024;

/// The sending side; dropping every clone ends the task after a last write.
#[derive(Clone)]
pub struct ArchiveWriter {
    batches: mpsc::Sender<Vec<InteractionEvent>>,
}

impl ArchiveWriter {
    pub fn start(
        archive: Arc<EventArchive>,
        config: &ArchiveConfig,
    ) -> (ArchiveWriter, tokio::task::JoinHandle<()>) {
        let (batches, receiver) = mpsc::channel(QUEUE_BATCHES);
        let task = tokio::spawn(run(
            archive,
            receiver,
            Duration::from_millis(config.flush_interval_ms),
            config.max_buffered_events,
            config.retention_days,
        ));
        (ArchiveWriter { batches }, task)
    }

    /// Hands applied events to the archive, or drops them (counted) when the writer is behind.
    pub fn offer(&self, events: Vec<InteractionEvent>) {
        let count = events.len() as u64;
        if self.batches.try_send(events).is_err() {
            metrics::counter!("recsys_archive_events_dropped_total").increment(count);
            tracing::warn!(
                events = count,
                "the event archive is behind; events not archived"
            );
        }
    }
}

async fn run(
    archive: Arc<EventArchive>,
    mut receiver: mpsc::Receiver<Vec<InteractionEvent>>,
    flush_interval: Duration,
    max_buffered_events: usize,
    retention_days: u32,
) {
    let mut buffer: Vec<ArchivedEvent> = Vec::new();
    let mut ticks = tokio::time::interval(flush_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (open, ticked) = tokio::select! {
            batch = receiver.recv() => match batch {
                Some(events) => {
                    buffer.extend(events.into_iter().map(|event| ArchivedEvent { event, position: None }));
                    (true, false)
                }
                None => (false, false),
            },
            _ = ticks.tick() => (true, true),
        };
        let due = !open || ticked || buffer.len() >= max_buffered_events;
        if due && !buffer.is_empty() {
            buffer = write(&archive, buffer, retention_days).await;
            // Writes failing for long: keep the newest, so memory stays bounded.
            if buffer.len() > max_buffered_events {
                let excess = buffer.len() - max_buffered_events;
                buffer.drain(..excess);
                metrics::counter!("recsys_archive_events_dropped_total").increment(excess as u64);
            }
        }
        if !open {
            return;
        }
    }
}

/// Writes the buffer off the runtime; returns it emptied, or kept when the write failed (the
/// next tick tries again, so a passing disk failure loses nothing while the buffer has room).
async fn write(
    archive: &Arc<EventArchive>,
    buffer: Vec<ArchivedEvent>,
    retention_days: u32,
) -> Vec<ArchivedEvent> {
    let archive = Arc::clone(archive);
    let written = tokio::task::spawn_blocking(move || {
        let result = archive.append(&buffer).map(|_| buffer.len());
        if result.is_ok() {
            if let Err(error) = archive.expire(retention_days, common::clock::now_ms()) {
                tracing::warn!(%error, "expiring old archive days failed");
            }
        }
        (result, buffer)
    })
    .await;
    match written {
        Ok((Ok(count), mut buffer)) => {
            metrics::counter!("recsys_archive_events_total").increment(count as u64);
            buffer.clear();
            buffer
        }
        Ok((Err(error), buffer)) => {
            metrics::counter!("recsys_archive_write_failures_total").increment(1);
            tracing::warn!(%error, events = buffer.len(), "archive write failed; kept for the next try");
            buffer
        }
        Err(error) => {
            tracing::error!(%error, "archive write panicked");
            Vec::new()
        }
    }
}
