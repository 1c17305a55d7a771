//! The event archive: every interaction the system received, kept as the training data of the
//! next model (`recsys train --from-events`).
//!
//! Layout: `<dir>/date=YYYY-MM-DD/<writer>-<first event ms>-<sequence>.parquet`, one directory per
//! UTC day of the events' time (Hive-style, so other tools read it as a partitioned table). A file
//! is written whole (a temporary file, synced, renamed: `common::fs`), so a reader never sees half
//! of one, and never changed afterwards except by an erasure, which replaces it the same way.
//!
//! Idempotence: a writer may archive an event twice (a consumer crash between its file and its
//! offset commit redelivers the batch, a client posts an event again). Readers drop repeats by
//! `event_id`, the rule the state store applies too, so duplicates cost disk, never training
//! data.
//!
//! Retention: [`EventArchive::expire`] deletes whole days older than the configured number of days.
//!
//! Erasure: [`EventArchive::erase_user`] records the request in `erasures.ndjson` and rewrites the
//! files holding the user's events; from then on their events up to that time are dropped when
//! written and when read.

mod columns;
mod training;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use schemas::InteractionEvent;

pub use columns::ArchivedEvent;
pub use training::{training_dataset, DataWindow};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

impl ArchiveError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// An archive directory. Writers in several processes may share one (a shared file system):
/// file names carry the writer's name, so they never collide.
pub struct EventArchive {
    dir: PathBuf,
    writer: String,
    files_written: AtomicU64,
}

impl EventArchive {
    /// `writer` names this process's files (for example the host and the consumer's partitions);
    /// the directory is created when the first events are written.
    pub fn new(dir: impl Into<PathBuf>, writer: &str) -> EventArchive {
        EventArchive {
            dir: dir.into(),
            writer: writer
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect(),
            files_written: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the events, one file per day they fall on; returns the files written. Blocking
    /// (file system); call it off the async runtime.
    pub fn append(&self, events: &[ArchivedEvent]) -> Result<Vec<PathBuf>, ArchiveError> {
        let erased = self.erasures()?;
        let mut by_day: BTreeMap<i64, Vec<&ArchivedEvent>> = BTreeMap::new();
        for event in events.iter().filter(|event| !is_erased(&erased, event)) {
            by_day
                .entry(event.event.event_time_ms.div_euclid(MS_PER_DAY))
                .or_default()
                .push(event);
        }
        let mut written = Vec::with_capacity(by_day.len());
        for (day, day_events) in by_day {
            let day_dir = self.dir.join(day_directory(day));
            std::fs::create_dir_all(&day_dir).map_err(ArchiveError::io(&day_dir))?;
            let sequence = self.files_written.fetch_add(1, Ordering::Relaxed);
            let first_ms = day_events[0].event.event_time_ms;
            let path = day_dir.join(format!(
                "{}-{first_ms}-{}-{sequence}.parquet",
                self.writer,
                std::process::id()
            ));
            let bytes =
                columns::to_parquet(&day_events).map_err(|message| ArchiveError::Format {
                    path: path.clone(),
                    message,
                })?;
            common::fs::write_atomically(&path, &bytes).map_err(ArchiveError::io(&path))?;
            written.push(path);
        }
        Ok(written)
    }

    /// Every archived event with `since_ms <= event_time_ms < until_ms`, each `event_id` once,
    /// oldest first (equal times keep their log order). Blocking.
    pub fn read(
        &self,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> Result<Vec<InteractionEvent>, ArchiveError> {
        let since = since_ms.unwrap_or(i64::MIN);
        let until = until_ms.unwrap_or(i64::MAX);
        let erased = self.erasures()?;
        let mut events: Vec<ArchivedEvent> = Vec::new();
        for (day, files) in self.files()? {
            let day_start = day * MS_PER_DAY;
            if day_start >= until || day_start + MS_PER_DAY <= since {
                continue;
            }
            for path in files {
                let rows = read_file(&path)?;
                events.extend(rows.into_iter().filter(|row| {
                    (since..until).contains(&row.event.event_time_ms) && !is_erased(&erased, row)
                }));
            }
        }
        let mut seen = HashSet::with_capacity(events.len());
        events.retain(|row| seen.insert(row.event.event_id.clone()));
        // Log order within a partition is the order a user's events were applied in; time
        // first, so days and partitions interleave as they happened.
        events.sort_by_key(|row| {
            (
                row.event.event_time_ms,
                row.position.map_or(-1, |(partition, _)| partition),
                row.position.map_or(-1, |(_, offset)| offset),
            )
        });
        Ok(events.into_iter().map(|row| row.event).collect())
    }

    /// Removes every event of `user_id` up to `erased_at_ms` (an erasure request); returns how
    /// many were removed. The erasure is recorded first (`erasures.ndjson`), so the user's
    /// earlier events are neither read nor written again, however they come back (a consumer
    /// re-reading the topic); then each file holding some is replaced by one without them.
    /// Blocking.
    pub fn erase_user(&self, user_id: &str, erased_at_ms: i64) -> Result<usize, ArchiveError> {
        self.record_erasure(user_id, erased_at_ms)?;
        let erased = HashMap::from([(user_id.to_owned(), erased_at_ms)]);
        let mut removed = 0;
        for (_, files) in self.files()? {
            for path in files {
                let rows = read_file(&path)?;
                let kept: Vec<&ArchivedEvent> =
                    rows.iter().filter(|row| !is_erased(&erased, row)).collect();
                if kept.len() == rows.len() {
                    continue;
                }
                removed += rows.len() - kept.len();
                if kept.is_empty() {
                    std::fs::remove_file(&path).map_err(ArchiveError::io(&path))?;
                    continue;
                }
                let bytes = columns::to_parquet(&kept).map_err(|message| ArchiveError::Format {
                    path: path.clone(),
                    message,
                })?;
                common::fs::write_atomically(&path, &bytes).map_err(ArchiveError::io(&path))?;
            }
        }
        Ok(removed)
    }

    /// Deletes the days that ended more than `keep_days` days before `now_ms`; returns how many
    /// day directories went. Blocking.
    pub fn expire(&self, keep_days: u32, now_ms: i64) -> Result<usize, ArchiveError> {
        let oldest_kept = now_ms.div_euclid(MS_PER_DAY) - i64::from(keep_days);
        let mut expired = 0;
        for (day, _) in self.files()? {
            if day < oldest_kept {
                let path = self.dir.join(day_directory(day));
                std::fs::remove_dir_all(&path).map_err(ArchiveError::io(&path))?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    fn erasures_path(&self) -> PathBuf {
        self.dir.join(ERASURES_FILE)
    }

    fn record_erasure(&self, user_id: &str, erased_at_ms: i64) -> Result<(), ArchiveError> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.dir).map_err(ArchiveError::io(&self.dir))?;
        let path = self.erasures_path();
        let line = serde_json::json!({"user_id": user_id, "erased_at_ms": erased_at_ms});
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(ArchiveError::io(&path))?;
        writeln!(file, "{line}").map_err(ArchiveError::io(&path))?;
        file.sync_all().map_err(ArchiveError::io(&path))
    }

    /// Each erased user with the latest time their events were erased up to.
    fn erasures(&self) -> Result<HashMap<String, i64>, ArchiveError> {
        let path = self.erasures_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(error) => return Err(ArchiveError::io(&path)(error)),
        };
        let mut erased = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            // A line cut short by a crash mid-append is the only kind that can be incomplete.
            let Ok(entry) = serde_json::from_str::<Erasure>(line) else {
                tracing::warn!(line = index + 1, path = %path.display(), "unreadable erasure line");
                continue;
            };
            let until = erased.entry(entry.user_id).or_insert(entry.erased_at_ms);
            *until = (*until).max(entry.erased_at_ms);
        }
        Ok(erased)
    }

    /// The archive's files by day (days since the epoch), in name order.
    fn files(&self) -> Result<BTreeMap<i64, Vec<PathBuf>>, ArchiveError> {
        let mut days = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(days),
            Err(error) => return Err(ArchiveError::io(&self.dir)(error)),
        };
        for entry in entries {
            let entry = entry.map_err(ArchiveError::io(&self.dir))?;
            let Some(day) = entry.file_name().to_str().and_then(parse_day_directory) else {
                continue;
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path())
                .map_err(ArchiveError::io(&entry.path()))?
                .filter_map(Result::ok)
                .map(|file| file.path())
                // Temporary files of a write in progress start with a dot.
                .filter(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "parquet")
                        && !path
                            .file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| name.starts_with('.'))
                })
                .collect();
            files.sort();
            days.insert(day, files);
        }
        Ok(days)
    }
}

/// Erased users and the time their events were erased up to.
const ERASURES_FILE: &str = "erasures.ndjson";

#[derive(serde::Deserialize)]
struct Erasure {
    user_id: String,
    erased_at_ms: i64,
}

fn is_erased(erased: &HashMap<String, i64>, row: &ArchivedEvent) -> bool {
    erased
        .get(&row.event.user_id)
        .is_some_and(|until| row.event.event_time_ms <= *until)
}

fn read_file(path: &Path) -> Result<Vec<ArchivedEvent>, ArchiveError> {
    let file = std::fs::File::open(path).map_err(ArchiveError::io(path))?;
    columns::from_parquet(file).map_err(|message| ArchiveError::Format {
        path: path.to_owned(),
        message,
    })
}

fn day_directory(day: i64) -> String {
    let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|time| time.date_naive().format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "out-of-range".to_owned());
    format!("date={date}")
}

fn parse_day_directory(name: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days())
}

#[cfg(test)]
mod tests;
