//! The Redis store (redis-rs, multiplexed connection manager, pipelined).
//!
//! Layout, for key prefix `p` and user `u`:
//!
//! ```text
//! p:{u}:s        string  the user's record (`record.rs`: sequence, seen items, offsets,
//!                        newest event time, history version), about 120 bytes for a full
//!                        50-item sequence of numeric ids
//! p:{u}:r        string  cached recommendations (JSON)
//! p:popular      zset    item -> popularity score
//! ```
//!
//! A batch is applied optimistically, in chunks of users whose round trips overlap: one pipeline
//! reads the chunk's records (except those this process wrote last and remembers), the
//! transition runs here (the same code as the embedded store), and
//! one script call writes each record with a compare-and-set (only if it still holds what was
//! read), answering which users changed meanwhile; those are read and applied again. In a
//! consumer group a user's events come from one partition, so conflicts only happen around
//! rebalances (a zombie's stale write is refused) or with several API processes on the
//! in-process bus. Popularity increments of the applied interactions follow, once per batch.
//! A user's keys share a hash slot (`{u}`), so the layout suits Redis Cluster; this client talks
//! to one server (a standalone Redis or a cluster proxy), and the compare-and-set call, which
//! names a chunk's users together, is the one command a cluster client would split by slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{AsyncCommands, ErrorKind, IntoConnectionInfo, Script, ServerErrorKind};

use crate::BatchMap;

use super::{
    AppliedInteraction, ApplyOutcome, CachedRecommendations, ItemKey, StoreError, StoreLimits,
    UserRecord, UserState, UserStore, UserUpdate,
};

/// For each key `KEYS[i]`: writes `ARGV[2i]` when the key still holds `ARGV[2i-1]` (empty:
/// absent). Answers the positions (1-based) of the keys that changed meanwhile and were not
/// written; usually none. One call per chunk of users, and inside it one `MGET` and one `MSET`
/// rather than a `GET` and a `SET` per key: each command called from Lua has a fixed cost
/// (its arguments and reply converted, the command looked up), about 0.4 µs of server CPU, so
/// with 140-byte records a write took 2.8 µs with two calls per key and 1.95 µs with this
/// script (`BENCHMARKS.md`). Every byte that enters Lua is also hashed once (Redis' Lua interns
/// strings), which is why a record's old and new bytes are worth keeping small. All
/// keys of a call are declared, as Redis requires; on Redis Cluster (another client) a call
/// would have to group keys by slot.
const COMPARE_AND_SET_SCRIPT: &str = r#"
local current = redis.call('MGET', unpack(KEYS))
local changed = {}
local writes = {}
for i, key in ipairs(KEYS) do
  if (current[i] or '') == ARGV[2 * i - 1] then
    writes[#writes + 1] = key
    writes[#writes + 1] = ARGV[2 * i]
  else
    changed[#changed + 1] = i
  end
end
if #writes > 0 then
  redis.call('MSET', unpack(writes))
end
return changed
"#;

/// Bytes of a record key besides the prefix and the user id: `:{`, `}:s`.
const RECORD_KEY_EXTRA: usize = 5;

/// Users per chunk of a batch: each chunk is one pipeline of reads and one of writes. At most
/// 3,999: the script's `unpack` of two arguments per user must fit Lua's C stack (8,000 slots).
const USERS_PER_CHUNK: usize = 500;
const _: () = assert!(USERS_PER_CHUNK < 4_000);
/// Chunks of users in flight at once within a batch.
const CONCURRENT_CHUNKS: usize = 4;
/// Rounds of read-apply-write before giving up on users that other writers keep changing.
const MAX_ROUNDS: usize = 50;

/// Users whose last written record is remembered, per generation (two generations are kept):
/// with ~150 bytes a record plus its key, up to ~25 MB, and every user of a batch or two.
const REMEMBERED_USERS: usize = 50_000;

/// Connections to the server. Redis serves one connection's commands in order and redis-rs
/// reads one connection's replies on one task, so a batch's concurrent chunks each take their
/// own connection.
const CONNECTIONS: usize = CONCURRENT_CHUNKS;

/// Cheap to clone (shared connections and script): each chunk of a batch runs as its own task.
#[derive(Clone)]
pub struct RedisStore {
    connections: Arc<[ConnectionManager]>,
    next_connection: Arc<AtomicUsize>,
    key_prefix: Arc<str>,
    limits: StoreLimits,
    compare_and_set: Arc<Script>,
    written: Arc<WrittenRecords>,
}

/// The records this process wrote last, by user, so a user's next batch need not read its
/// record back. Safe because every write is a compare-and-set against the bytes it assumes: if
/// anyone else changed the record since (another consumer after a rebalance, a restored
/// backup), the write is refused, the entry is gone, and the next round reads the record from
/// the server. A bounded two-generation map: when the current one is full it becomes the
/// previous one and the oldest generation is dropped. A taken entry keeps its place (emptied),
/// so a user written batch after batch costs no key copy and no map insertion.
#[derive(Default)]
struct WrittenRecords {
    generations: std::sync::Mutex<[BatchMap<String, Option<Vec<u8>>>; 2]>,
}

impl WrittenRecords {
    /// A poisoned lock is still usable: whatever panicked left at worst an entry missing (the
    /// record is read) or stale (its write is refused, then it is read).
    fn generations(&self) -> std::sync::MutexGuard<'_, [BatchMap<String, Option<Vec<u8>>>; 2]> {
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes what is remembered of each user (a write puts it back).
    fn take(&self, user_ids: &[&str]) -> Vec<Option<Vec<u8>>> {
        let mut generations = self.generations();
        let [current, previous] = &mut *generations;
        user_ids
            .iter()
            .map(|user_id| match current.get_mut(*user_id) {
                Some(remembered) => remembered.take(),
                None => previous.remove(*user_id).flatten(),
            })
            .collect()
    }

    fn remember<'a>(&self, written: impl IntoIterator<Item = (&'a str, Vec<u8>)>) {
        let mut generations = self.generations();
        let [current, previous] = &mut *generations;
        for (user_id, record) in written {
            if let Some(remembered) = current.get_mut(user_id) {
                *remembered = Some(record);
                continue;
            }
            if current.len() >= REMEMBERED_USERS {
                *previous = std::mem::take(current);
            }
            current.insert(user_id.to_owned(), Some(record));
        }
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        limits: StoreLimits,
    ) -> Result<RedisStore, StoreError> {
        if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                problem: format!("key prefix '{key_prefix}' must be non-empty and free of braces"),
            });
        }
        let invalid = |error: redis::RedisError| StoreError::InvalidUrl {
            url: url.to_owned(),
            problem: error.to_string(),
        };
        // Without TCP_NODELAY (redis-rs leaves Nagle on) the tail of a pipelined write waits for
        // the server's acknowledgement of the part before it.
        let connection_info = url
            .into_connection_info()
            .map_err(invalid)?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(connection_info).map_err(invalid)?;
        // Bounded waits: a dead server must turn into an error the caller can fall back on, not a
        // request that hangs.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let connections = futures::future::try_join_all(
            (0..CONNECTIONS)
                .map(|_| ConnectionManager::new_with_config(client.clone(), config.clone())),
        )
        .await
        .map_err(unavailable)?;
        Ok(RedisStore {
            connections: connections.into(),
            next_connection: Arc::default(),
            key_prefix: key_prefix.into(),
            limits,
            compare_and_set: Arc::new(Script::new(COMPARE_AND_SET_SCRIPT)),
            written: Arc::default(),
        })
    }

    /// The connections in turn (each a cheap handle to a shared multiplexed connection).
    fn connection(&self) -> ConnectionManager {
        let turn = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.connections[turn % self.connections.len()].clone()
    }

    fn record_key(&self, user_id: &str) -> String {
        let mut key =
            String::with_capacity(self.key_prefix.len() + user_id.len() + RECORD_KEY_EXTRA);
        self.push_record_key(&mut key, user_id);
        key
    }

    /// `p:{u}:s` (see the layout above).
    fn push_record_key(&self, key: &mut String, user_id: &str) {
        key.push_str(&self.key_prefix);
        key.push_str(":{");
        key.push_str(user_id);
        key.push_str("}:s");
    }

    fn recommendations_key(&self, user_id: &str) -> String {
        format!("{}:{{{user_id}}}:r", self.key_prefix)
    }

    fn popular_key(&self) -> String {
        format!("{}:popular", self.key_prefix)
    }

    /// Every key this store writes for `user_id` (for memory measurements and tests).
    pub fn user_keys(&self, user_id: &str) -> [String; 2] {
        [self.record_key(user_id), self.recommendations_key(user_id)]
    }

    /// The server's process id (`INFO server`), for benchmarks that account its CPU time when it
    /// runs on the same machine.
    pub async fn server_process_id(&self) -> Result<Option<u32>, StoreError> {
        let mut connection = self.connection();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok()))
    }

    /// Bytes Redis uses for everything stored about `user_id` (`MEMORY USAGE` of each key).
    pub async fn memory_usage_bytes(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut connection = self.connection();
        let mut total = 0;
        for key in self.user_keys(user_id) {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            total += bytes.unwrap_or_default();
        }
        Ok(total)
    }

    /// The stored records of `user_ids`, as bytes (empty: none yet), in one round trip.
    async fn read_records(&self, user_ids: &[&str]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut pipeline = redis::pipe();
        for user_id in user_ids {
            pipeline.get(self.record_key(user_id));
        }
        let mut connection = self.connection();
        let records: Vec<Option<Vec<u8>>> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(records.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Each user's record as this process last wrote it, or else as the server holds it (one
    /// round trip for those).
    async fn current_records(&self, user_ids: &[&str]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut records = self.written.take(user_ids);
        let unknown: Vec<&str> = user_ids
            .iter()
            .zip(&records)
            .filter(|(_, record)| record.is_none())
            .map(|(user_id, _)| *user_id)
            .collect();
        if !unknown.is_empty() {
            let mut read = self.read_records(&unknown).await?.into_iter();
            for record in records.iter_mut().filter(|record| record.is_none()) {
                *record = read.next();
            }
        }
        Ok(records.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Writes `(user, read bytes, new bytes)` where the record is still as read, in one script
    /// call, and says which of `writes` went in.
    async fn compare_and_set(&self, writes: &[(&str, Vec<u8>, Vec<u8>)]) -> WriteResults {
        if writes.is_empty() {
            return WriteResults::default();
        }
        // Sized up front: grown by doubling, a chunk's call (a few hundred kilobytes) would copy
        // itself several times and touch fresh memory at each step.
        let data_bytes = writes
            .iter()
            .map(|(user_id, read, written)| {
                self.key_prefix.len()
                    + user_id.len()
                    + RECORD_KEY_EXTRA
                    + read.len()
                    + written.len()
            })
            .sum::<usize>()
            + 64;
        let mut call = redis::Cmd::with_capacity(3 + 3 * writes.len(), data_bytes);
        call.arg("EVALSHA")
            .arg(self.compare_and_set.get_hash())
            .arg(writes.len());
        // One buffer for every key: the call copies each in.
        let mut key = String::new();
        for (user_id, _, _) in writes {
            key.clear();
            self.push_record_key(&mut key, user_id);
            call.arg(key.as_str());
        }
        for (_, read, written) in writes {
            call.arg(read).arg(written);
        }
        let mut connection = self.connection();
        let answer: redis::RedisResult<Vec<usize>> = call.query_async(&mut connection).await;
        let results = WriteResults::from_answer(writes.len(), answer);
        if results.script_missing {
            // A restarted server forgets loaded scripts; the writes go in the next round.
            if let Err(error) = self
                .compare_and_set
                .prepare_invoke()
                .load_async(&mut connection)
                .await
            {
                return WriteResults {
                    error: Some(unavailable(error)),
                    ..results
                };
            }
        }
        results
    }

    /// Read, apply, compare-and-set, in rounds until every user's write went in (or the rounds
    /// or the server ran out). What was written is reported even when a later round failed.
    async fn apply_users(&self, users: &[UserUpdate]) -> ChunkResult {
        let mut result = ChunkResult::default();
        let mut pending: Vec<&UserUpdate> = users.iter().collect();
        for _round in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return result;
            }
            if let Err(error) = self.apply_round(&mut pending, &mut result).await {
                result.error = Some(error);
                return result;
            }
        }
        if !pending.is_empty() {
            result.error = Some(StoreError::Unavailable(format!(
                "{} users kept being changed by other writers during {MAX_ROUNDS} attempts",
                pending.len()
            )));
        }
        result
    }

    /// One round: leaves in `pending` the users whose record changed since it was read.
    async fn apply_round(
        &self,
        pending: &mut Vec<&UserUpdate>,
        result: &mut ChunkResult,
    ) -> Result<(), StoreError> {
        let user_ids: Vec<&str> = pending
            .iter()
            .map(|update| update.user_id.as_str())
            .collect();
        let stored = self.current_records(&user_ids).await?;
        // What each user's write would do, counted only once the write is in: its update, the
        // range of `applied` holding the interactions it applies, and its duplicates.
        let mut writes = Vec::new();
        let mut effects = Vec::new();
        let mut applied: Vec<&AppliedInteraction> = Vec::new();
        let mut unchanged = Vec::new();
        for (update, read) in pending.iter().zip(stored) {
            let mut record = self.decode(&update.user_id, &read)?;
            let first_applied = applied.len();
            let mut duplicates = 0;
            for interaction in &update.interactions {
                if record.apply(interaction, self.limits) {
                    applied.push(interaction);
                } else {
                    duplicates += 1;
                }
            }
            if applied.len() == first_applied {
                // Nothing to write: the record stays as read, and remembered as that.
                result.outcome.duplicates += duplicates;
                unchanged.push((update.user_id.as_str(), read));
                continue;
            }
            writes.push((update.user_id.as_str(), read, record.encode()));
            effects.push((*update, first_applied..applied.len(), duplicates));
        }
        let results = self.compare_and_set(&writes).await;
        self.written.remember(
            writes
                .into_iter()
                .zip(&results.written)
                .filter(|(_, written)| **written)
                .map(|((user_id, _, record), _)| (user_id, record))
                .chain(unchanged),
        );
        // Users whose write did not go in are read and applied again in the next round; users
        // with nothing to write are done.
        let mut retry = Vec::new();
        for ((update, applied_range, duplicates), &written) in
            effects.into_iter().zip(&results.written)
        {
            if !written {
                retry.push(update);
                continue;
            }
            result.outcome.applied += applied_range.len();
            result.outcome.duplicates += duplicates;
            for interaction in &applied[applied_range] {
                let increment = interaction.popularity_increment;
                if increment == 0.0 {
                    continue;
                }
                // The item is copied once per chunk, not once per interaction.
                match result.popularity_increments.get_mut(&interaction.item) {
                    Some(total) => *total += increment,
                    None => {
                        result
                            .popularity_increments
                            .insert(interaction.item.clone(), increment);
                    }
                }
            }
        }
        *pending = retry;
        match results.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn decode(&self, user_id: &str, bytes: &[u8]) -> Result<UserRecord, StoreError> {
        UserRecord::decode(bytes).map_err(|error| StoreError::Corrupt {
            key: self.record_key(user_id),
            problem: error.to_string(),
        })
    }
}

/// Which writes of a compare-and-set call went in, and what stopped the others.
#[derive(Debug, Default)]
struct WriteResults {
    /// Per write: `false` if the record had changed since it was read, or if the server refused
    /// or did not answer the call.
    written: Vec<bool>,
    /// The call failed because the server does not know the script.
    script_missing: bool,
    error: Option<StoreError>,
}

impl WriteResults {
    /// What the server's answer to a call of `count` writes says (the 1-based positions of
    /// the writes that did not go in). Without a well-formed answer nothing is known, so none
    /// counts as written: they are read and applied again, and whatever did go in then counts
    /// as a duplicate.
    fn from_answer(count: usize, answer: redis::RedisResult<Vec<usize>>) -> WriteResults {
        let (script_missing, error) = match answer {
            Ok(changed)
                if changed
                    .iter()
                    .all(|&position| (1..=count).contains(&position)) =>
            {
                let mut written = vec![true; count];
                for position in changed {
                    written[position - 1] = false;
                }
                return WriteResults {
                    written,
                    script_missing: false,
                    error: None,
                };
            }
            Ok(changed) => (
                false,
                Some(StoreError::Unavailable(format!(
                    "the answer to {count} writes names positions outside them: {changed:?}"
                ))),
            ),
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                (true, None)
            }
            Err(error) => (false, Some(unavailable(error))),
        };
        WriteResults {
            written: vec![false; count],
            script_missing,
            error,
        }
    }
}

/// What applying one chunk of users did: written records' outcome and popularity increments,
/// and the error that stopped it, if one did.
#[derive(Default)]
struct ChunkResult {
    outcome: ApplyOutcome,
    popularity_increments: BatchMap<ItemKey, f64>,
    error: Option<StoreError>,
}

/// One update per user, in first-appearance order, each user's interactions in order: a batch
/// that names a user twice must not race with itself. Returned as they came when every user is
/// named once, with interactions (callers such as `EventBatch` group by user already).
fn merge_by_user(updates: Arc<[UserUpdate]>) -> Arc<[UserUpdate]> {
    // Where each update goes: the index of its user's first update (ids borrowed, not copied).
    let mut first_of_user: BatchMap<&str, usize> =
        BatchMap::with_capacity_and_hasher(updates.len(), Default::default());
    let targets: Vec<usize> = updates
        .iter()
        .enumerate()
        .map(|(index, update)| {
            *first_of_user
                .entry(update.user_id.as_str())
                .or_insert(index)
        })
        .collect();
    drop(first_of_user);
    let merged_already = targets
        .iter()
        .enumerate()
        .all(|(index, &target)| index == target)
        && updates.iter().all(|update| !update.interactions.is_empty());
    if merged_already {
        return updates;
    }
    // A user's first update stays in place and takes the later ones' interactions.
    let mut merged: Vec<Option<UserUpdate>> = Vec::with_capacity(updates.len());
    for (index, (update, target)) in updates.iter().zip(targets).enumerate() {
        if target == index {
            merged.push(Some(update.clone()));
            continue;
        }
        if let Some(first) = merged[target].as_mut() {
            first.interactions.extend_from_slice(&update.interactions);
        }
        merged.push(None);
    }
    merged
        .into_iter()
        .flatten()
        .filter(|update| !update.interactions.is_empty())
        .collect()
}

#[async_trait::async_trait]
impl UserStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn user_state(&self, user_id: &str) -> Result<UserState, StoreError> {
        let mut connection = self.connection();
        let (record, cached): (Option<Vec<u8>>, Option<String>) = redis::pipe()
            .get(self.record_key(user_id))
            .get(self.recommendations_key(user_id))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut state = self
            .decode(user_id, &record.unwrap_or_default())?
            .into_state();
        state.cached = match cached {
            None => None,
            Some(json) => {
                Some(
                    serde_json::from_str(&json).map_err(|error| StoreError::Corrupt {
                        key: self.recommendations_key(user_id),
                        problem: error.to_string(),
                    })?,
                )
            }
        };
        Ok(state)
    }

    async fn apply_shared(&self, updates: Arc<[UserUpdate]>) -> Result<ApplyOutcome, StoreError> {
        let updates = merge_by_user(updates);
        // Chunks of users are independent (a user is in one chunk), so they run as tasks:
        // their round trips overlap, and their decoding and applying use every core.
        let mut chunk_tasks = Vec::new();
        for start in (0..updates.len()).step_by(USERS_PER_CHUNK) {
            let users = start..updates.len().min(start + USERS_PER_CHUNK);
            let updates = Arc::clone(&updates);
            let store = self.clone();
            chunk_tasks.push(async move {
                tokio::spawn(async move { store.apply_users(&updates[users]).await })
                    .await
                    .unwrap_or_else(|error| ChunkResult {
                        error: Some(StoreError::Unavailable(format!(
                            "applying a chunk of users failed: {error}"
                        ))),
                        ..ChunkResult::default()
                    })
            });
        }
        let chunks: Vec<ChunkResult> = futures::stream::iter(chunk_tasks)
            .buffer_unordered(CONCURRENT_CHUNKS)
            .collect()
            .await;
        let mut outcome = ApplyOutcome::default();
        let mut increments: BatchMap<ItemKey, f64> = BatchMap::default();
        let mut first_error = None;
        for chunk in chunks {
            outcome.applied += chunk.outcome.applied;
            outcome.duplicates += chunk.outcome.duplicates;
            for (item_id, amount) in chunk.popularity_increments {
                *increments.entry(item_id).or_default() += amount;
            }
            first_error = first_error.or(chunk.error);
        }
        // Added once per batch (an item's increments merged), right after the records that
        // earned them, even when some chunk failed: those records are written, so a retry
        // sees their events as duplicates and would never add them. A failure in between
        // (a crash, the server gone) loses at most this batch's increments, never counts
        // one twice.
        let increments: Vec<(String, f64)> = increments
            .into_iter()
            .map(|(item, amount)| (item.to_id(), amount))
            .collect();
        self.add_popularity(&increments).await?;
        match first_error {
            Some(error) => Err(error),
            None => Ok(outcome),
        }
    }

    async fn put_cached_recommendations(
        &self,
        entries: &[(String, CachedRecommendations)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (user_id, recommendations) in entries {
            let json = serde_json::to_string(recommendations).expect("recommendations serialise");
            pipeline
                .set(self.recommendations_key(user_id), json)
                .ignore();
        }
        let mut connection = self.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn add_popularity(&self, increments: &[(String, f64)]) -> Result<(), StoreError> {
        if increments.is_empty() {
            return Ok(());
        }
        let key = self.popular_key();
        let mut pipeline = redis::pipe();
        for (item_id, amount) in increments {
            pipeline.zincr(&key, item_id, *amount).ignore();
        }
        let mut connection = self.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn top_popular(&self, count: usize) -> Result<Vec<(String, f64)>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection();
        connection
            .zrevrange_withscores(self.popular_key(), 0, count as isize - 1)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_complete_answer_counts_writes_as_done() {
        // The answer names the writes that did not go in, counted from 1.
        let results = WriteResults::from_answer(3, Ok(vec![2]));
        assert_eq!(results.written, [true, false, true]);
        assert!(results.error.is_none() && !results.script_missing);
        let results = WriteResults::from_answer(2, Ok(vec![]));
        assert_eq!(results.written, [true, true]);

        // A server that lost its scripts: nothing written, the script is loaded again, and that
        // is no outage.
        let no_script = redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoScript),
            "NOSCRIPT No matching script",
        ));
        let results = WriteResults::from_answer(2, Err(no_script));
        assert_eq!(results.written, [false, false]);
        assert!(results.script_missing);
        assert!(results.error.is_none());

        let read_only =
            redis::RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        let results = WriteResults::from_answer(2, Err(read_only));
        assert_eq!(results.written, [false, false]);
        assert!(matches!(results.error, Some(StoreError::Unavailable(_))));

        // A position outside the call (0, or past its end) is no answer this client understands.
        for malformed in [vec![0], vec![4], vec![1, 4]] {
            let results = WriteResults::from_answer(3, Ok(malformed));
            assert_eq!(results.written, [false, false, false]);
            assert!(matches!(results.error, Some(StoreError::Unavailable(_))));
        }
    }
}
