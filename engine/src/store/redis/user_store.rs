//! The Redis store as a [`UserStore`].

use std::sync::Arc;

use futures::StreamExt;
use redis::AsyncCommands;

use super::{
    merge_by_user, unavailable, ChunkResult, RedisStore, CONCURRENT_CHUNKS, USERS_PER_CHUNK,
};
use crate::store::{
    ApplyOutcome, CachedRecommendations, ItemKey, StoreError, UserState, UserStore, UserUpdate,
};
use crate::BatchMap;

/// Pushed-list calls in flight at once (several only on a cluster, one per hash slot).
const PUSH_CALLS_IN_FLIGHT: usize = 64;

/// Compare-and-set rounds an erasure tries before giving up on a user written to without pause.
const FORGET_ATTEMPTS: usize = 10;

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
            outcome.unreadable.extend(chunk.outcome.unreadable);
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

    async fn forget_user(&self, user_id: &str) -> Result<bool, StoreError> {
        // Compare-and-set like a batch's writes, so a concurrent apply is never overwritten:
        // whichever goes second sees the other's record.
        let mut outcome = None;
        for _ in 0..FORGET_ATTEMPTS {
            let read = self.read_records(&[user_id]).await?.remove(0);
            if read.is_empty() {
                outcome = Some(false);
                break;
            }
            let mut record = self.decode(user_id, &read)?;
            if !record.forget() {
                outcome = Some(false);
                break;
            }
            let results = self
                .compare_and_set(&[(user_id, read, record.encode())])
                .await;
            if let Some(error) = results.error {
                return Err(error);
            }
            if results.written.first() == Some(&true) {
                outcome = Some(true);
                break;
            }
        }
        let Some(had_items) = outcome else {
            return Err(StoreError::Unavailable(format!(
                "user '{user_id}' changed at each of {FORGET_ATTEMPTS} attempts to forget them"
            )));
        };
        // Whatever this process remembers writing is no longer the stored record.
        let _ = self.written.take(&[user_id]);
        let mut connection = self.connection();
        let removed: usize = connection
            .del(self.recommendations_key(user_id))
            .await
            .map_err(unavailable)?;
        Ok(had_items || removed > 0)
    }

    async fn put_cached_recommendations(
        &self,
        entries: &[(String, CachedRecommendations)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        // A list never replaces one computed from a later history version (the script says
        // why); chunked like the records, for Lua's stack, and by slot on a cluster.
        let keys: Vec<String> = entries
            .iter()
            .map(|(user_id, _)| self.recommendations_key(user_id))
            .collect();
        let groups = self.connections.groups(keys.iter().map(String::as_str));
        let mut calls = Vec::new();
        for chunk in groups
            .iter()
            .flat_map(|group| group.chunks(USERS_PER_CHUNK))
        {
            let mut invocation = self.put_newer_slots.prepare_invoke();
            for &position in chunk {
                invocation.key(&keys[position]);
            }
            for &position in chunk {
                let recommendations = &entries[position].1;
                let json =
                    serde_json::to_string(recommendations).expect("recommendations serialise");
                invocation
                    .arg(recommendations.reflects_history_version)
                    .arg(json);
            }
            let mut connection = self.connection();
            calls.push(async move {
                invocation
                    .invoke_async::<usize>(&mut connection)
                    .await
                    .map_err(unavailable)
            });
        }
        // One call on a single server; on a cluster one per slot, many at a time.
        let mut calls = futures::stream::iter(calls).buffer_unordered(PUSH_CALLS_IN_FLIGHT);
        while let Some(call) = calls.next().await {
            call?;
        }
        Ok(())
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
