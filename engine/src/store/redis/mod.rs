//! The Redis store (redis-rs, multiplexed connection manager, pipelined).
//!
//! Layout, for key prefix `p` and user `u`:
//!
//! ```text
//! p:{u}:s        string  the user's record (`record.rs`: sequence, seen items, offsets,
//!                        newest event time, history version, recent event id digests),
//!                        about 120 bytes for a full 50-item sequence of numeric ids plus 8
//!                        bytes per remembered event id (16 by default)
//! p:{u}:r        string  cached recommendations (JSON)
//! p:popular      zset    item -> popularity score
//! ```
//!
//! and the catalogue under `p:{p:catalogue}:*` (`catalogue.rs`).
//!
//! A batch is applied optimistically, in chunks of users whose round trips overlap: one pipeline
//! reads the chunk's records (except those this process wrote last and remembers), the
//! transition runs here (the same code as the embedded store), and
//! one script call writes each record with a compare-and-set (only if it still holds what was
//! read), answering which users changed meanwhile; those are read and applied again. In a
//! consumer group a user's events come from one partition, so conflicts only happen around
//! rebalances (a zombie's stale write is refused) or with several API processes on the
//! in-process bus. Popularity increments of the applied interactions follow, once per batch.
//! A user's keys share a hash slot (`{u}`). On Redis Cluster (`redis+cluster://`) the calls that
//! name many users are split by slot (`connection.rs`).

mod catalogue;
mod connection;
mod healing_cluster;
mod script;
mod user_store;
mod written_records;

use std::sync::Arc;

use redis::Script;

use crate::BatchMap;

use super::{
    AppliedInteraction, ApplyOutcome, ItemKey, StoreError, StoreLimits, UnreadableUser, UserRecord,
    UserUpdate,
};
use connection::{Connection, Connections};
use script::{WriteResults, COMPARE_AND_SET_SCRIPT, PUT_NEWER_SLOTS_SCRIPT};
use written_records::WrittenRecords;

const RECORD_KEY_EXTRA: usize = 5;

/// Users per chunk of a batch: each chunk is one pipeline of reads and one of writes. At most
/// 3,999: the script's `unpack` of two arguments per user must fit Lua's C stack (8,000 slots).
const USERS_PER_CHUNK: usize = 500;
const _: () = assert!(USERS_PER_CHUNK < 4_000);
/// Chunks of users in flight at once within a batch.
const CONCURRENT_CHUNKS: usize = 4;
/// Rounds of read-apply-write before giving up on users that other writers keep changing.
const MAX_ROUNDS: usize = 50;

/// Connections to the server. Redis serves one connection's commands in order and redis-rs
/// reads one connection's replies on one task, so a batch's concurrent chunks each take their
/// own connection.
const CONNECTIONS: usize = CONCURRENT_CHUNKS;

/// Cheap to clone (shared connections and script): each chunk of a batch runs as its own task.
#[derive(Clone)]
pub struct RedisStore {
    connections: Arc<Connections>,
    key_prefix: Arc<str>,
    limits: StoreLimits,
    compare_and_set: Arc<Script>,
    put_newer_slots: Arc<Script>,
    written: Arc<WrittenRecords>,
}

pub(super) fn unavailable(error: redis::RedisError) -> StoreError {
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
        let connections = Connections::open(url, CONNECTIONS).await?;
        Ok(RedisStore {
            connections: Arc::new(connections),
            key_prefix: key_prefix.into(),
            limits,
            compare_and_set: Arc::new(Script::new(COMPARE_AND_SET_SCRIPT)),
            put_newer_slots: Arc::new(Script::new(PUT_NEWER_SLOTS_SCRIPT)),
            written: Arc::default(),
        })
    }

    /// The connections in turn (each a cheap handle to a shared multiplexed connection).
    fn connection(&self) -> Connection {
        self.connections.next()
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

    /// The stored records of `user_ids`, as bytes (empty: none yet), in one round trip (one per
    /// slot, side by side, on a cluster).
    async fn read_records(&self, user_ids: &[&str]) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys: Vec<String> = user_ids.iter().map(|user| self.record_key(user)).collect();
        let groups = self.connections.groups(keys.iter().map(String::as_str));
        let reads = groups.iter().map(|positions| {
            let mut pipeline = redis::pipe();
            for &position in positions {
                pipeline.get(&keys[position]);
            }
            let mut connection = self.connection();
            async move {
                pipeline
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
                    .await
                    .map_err(unavailable)
            }
        });
        let mut records = vec![Vec::new(); user_ids.len()];
        for (positions, read) in groups
            .iter()
            .zip(futures::future::try_join_all(reads).await?)
        {
            for (&position, record) in positions.iter().zip(read) {
                records[position] = record.unwrap_or_default();
            }
        }
        Ok(records)
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
    /// call per group of keys a call may name together, and says which of `writes` went in.
    async fn compare_and_set(&self, writes: &[(&str, Vec<u8>, Vec<u8>)]) -> WriteResults {
        if !self.connections.is_cluster() {
            return self.compare_and_set_call(writes).await;
        }
        let keys: Vec<String> = writes
            .iter()
            .map(|(user, _, _)| self.record_key(user))
            .collect();
        let groups = self.connections.groups(keys.iter().map(String::as_str));
        let calls = groups.iter().map(|positions| {
            let group: Vec<(&str, Vec<u8>, Vec<u8>)> = positions
                .iter()
                .map(|&position| writes[position].clone())
                .collect();
            async move { self.compare_and_set_call(&group).await }
        });
        let mut merged = WriteResults {
            written: vec![false; writes.len()],
            ..WriteResults::default()
        };
        for (positions, results) in groups.iter().zip(futures::future::join_all(calls).await) {
            for (&position, written) in positions.iter().zip(results.written) {
                merged.written[position] = written;
            }
            merged.script_missing |= results.script_missing;
            merged.error = merged.error.or(results.error);
        }
        merged
    }

    async fn compare_and_set_call(&self, writes: &[(&str, Vec<u8>, Vec<u8>)]) -> WriteResults {
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
            let mut record = match self.decode(&update.user_id, &read) {
                Ok(record) => record,
                Err(error) => {
                    let unreadable = UnreadableUser::from_error(&update.user_id, error)?;
                    result.outcome.unreadable.push(unreadable);
                    continue;
                }
            };
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
