//! `[archive]`: where the event archive (the training data of retraining) lives and how it is
//! written.

use std::path::PathBuf;

use schemas::EventType;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArchiveConfig {
    /// Whether events are archived at all.
    pub enabled: bool,
    /// The archive directory; default `<data_dir>/archive`. With consumers on several hosts,
    /// a directory they share (a network file system): file names carry the writer, so they
    /// never collide, and readers drop events archived twice.
    pub dir: Option<PathBuf>,
    /// Events are buffered and written as one file per day this often (and at shutdown): the
    /// most an embedded-mode crash can lose. With Kafka nothing is lost; offsets are committed
    /// only after the file is written.
    pub flush_interval_ms: u64,
    /// A buffer this full is written at once, whatever the interval.
    pub max_buffered_events: usize,
    /// Days of events kept; older days are deleted whole.
    pub retention_days: u32,
    /// The kinds of events training learns from (`recsys export-events`).
    pub train_event_types: Vec<EventType>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            dir: None,
            flush_interval_ms: 60_000,
            max_buffered_events: 100_000,
            retention_days: 90,
            train_event_types: EventType::ALL.to_vec(),
        }
    }
}
