//! What a consumer run did and how far it got.

/// What a run did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub batches: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub pushed: u64,
    /// Why the run ended early, when a permanent failure ended it (the command exits non-zero).
    pub failure: Option<String>,
}

/// How far the consumer got, readable while it runs (benchmarks, tests, operators).
#[derive(Debug, Default)]
pub struct ConsumerProgress {
    /// Records handled and committed: applied, skipped as duplicates, or dead-lettered.
    pub committed_records: std::sync::atomic::AtomicU64,
    /// When the first record of this run arrived.
    pub first_record_at: std::sync::OnceLock<std::time::Instant>,
}

/// Why a batch could not be finished; its offsets were not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown was requested during an outage.
    Cancelled,
    /// The store failed in a way retrying cannot fix (it holds data this version cannot read).
    /// The consumer stops instead of skipping the batch: a restart redelivers it.
    PermanentFailure(String),
}
