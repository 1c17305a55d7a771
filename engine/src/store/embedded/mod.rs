//! The embedded store: one redb file in the data dir. Chosen because it is a pure-Rust, ACID,
//! crash-safe (copy-on-write B-trees, fsync on commit) single-file key-value store with no server
//! and no C dependency; a whole `apply` batch commits in one transaction, so a crash leaves every
//! user either before or after the batch, never in between.
//!
//! redb is blocking: every call runs on tokio's blocking pool.

mod catalogue;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{
    ApplyOutcome, CachedRecommendations, StoreError, StoreLimits, UnreadableUser, UserRecord,
    UserState, UserStore, UserUpdate,
};

/// user id -> the user's record (`record.rs`; JSON in stores written before it).
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// user id -> JSON `CachedRecommendations`.
const RECOMMENDATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("recommendations");
/// item id -> popularity score.
const POPULARITY: TableDefinition<&str, f64> = TableDefinition::new("popularity");
/// (order key of the score, item id) for every entry of `POPULARITY`: read backwards it gives the
/// most popular items first without scanning the catalogue.
const POPULARITY_RANK: TableDefinition<(u64, &str), ()> = TableDefinition::new("popularity_rank");

/// A `u64` that sorts like the `f64` (IEEE 754 bit trick: flip all bits of negatives, only the
/// sign bit of the rest).
fn order_key(score: f64) -> u64 {
    let bits = score.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

pub struct EmbeddedStore {
    database: Arc<Database>,
    limits: StoreLimits,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl EmbeddedStore {
    pub async fn open(path: &Path, limits: StoreLimits) -> Result<EmbeddedStore, StoreError> {
        let path = path.to_owned();
        let database = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|error| {
                    StoreError::Unavailable(format!("cannot create {}: {error}", parent.display()))
                })?;
            }
            let database = Database::create(&path).map_err(|error| {
                StoreError::Unavailable(format!("cannot open {}: {error}", path.display()))
            })?;
            // Create the tables once so readers never meet a missing table.
            let transaction = database.begin_write().map_err(unavailable)?;
            transaction.open_table(USERS).map_err(unavailable)?;
            transaction
                .open_table(RECOMMENDATIONS)
                .map_err(unavailable)?;
            catalogue::create_tables(&transaction)?;
            {
                let popularity = transaction.open_table(POPULARITY).map_err(unavailable)?;
                let mut rank = transaction
                    .open_table(POPULARITY_RANK)
                    .map_err(unavailable)?;
                // Stores written before the rank table existed get it built once.
                if rank.len().map_err(unavailable)? != popularity.len().map_err(unavailable)? {
                    rank.retain(|_, _| false).map_err(unavailable)?;
                    for entry in popularity.iter().map_err(unavailable)? {
                        let (item, score) = entry.map_err(unavailable)?;
                        rank.insert((order_key(score.value()), item.value()), ())
                            .map_err(unavailable)?;
                    }
                }
            }
            transaction.commit().map_err(unavailable)?;
            Ok::<_, StoreError>(database)
        })
        .await
        .map_err(unavailable)??;
        Ok(EmbeddedStore {
            database: Arc::new(database),
            limits,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let database = Arc::clone(&self.database);
        tokio::task::spawn_blocking(move || work(&database))
            .await
            .map_err(unavailable)?
    }
}

fn decode(user_id: &str, bytes: &[u8]) -> Result<UserRecord, StoreError> {
    UserRecord::decode(bytes).map_err(|error| StoreError::Corrupt {
        key: format!("users/{user_id}"),
        problem: error.to_string(),
    })
}

fn read_record(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    user_id: &str,
) -> Result<UserRecord, StoreError> {
    match table.get(user_id).map_err(unavailable)? {
        Some(bytes) => decode(user_id, bytes.value()),
        None => Ok(UserRecord::default()),
    }
}

/// Adds to items' scores inside `transaction`, keeping the rank table in step.
fn add_to_popularity(
    transaction: &redb::WriteTransaction,
    increments: &[(String, f64)],
) -> Result<(), StoreError> {
    if increments.is_empty() {
        return Ok(());
    }
    let mut table = transaction.open_table(POPULARITY).map_err(unavailable)?;
    let mut rank = transaction
        .open_table(POPULARITY_RANK)
        .map_err(unavailable)?;
    for (item_id, amount) in increments {
        let current = table
            .get(item_id.as_str())
            .map_err(unavailable)?
            .map(|score| score.value());
        if let Some(current) = current {
            rank.remove((order_key(current), item_id.as_str()))
                .map_err(unavailable)?;
        }
        let updated = current.unwrap_or(0.0) + amount;
        table
            .insert(item_id.as_str(), updated)
            .map_err(unavailable)?;
        rank.insert((order_key(updated), item_id.as_str()), ())
            .map_err(unavailable)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl UserStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn user_state(&self, user_id: &str) -> Result<UserState, StoreError> {
        // A read of one key: microseconds of CPU, so it runs right here on the runtime's worker
        // (ARCHITECTURE.md, "Blocking work").
        let transaction = self.database.begin_read().map_err(unavailable)?;
        let table = transaction.open_table(USERS).map_err(unavailable)?;
        let mut state = read_record(&table, user_id)?.into_state();
        let recommendations = transaction
            .open_table(RECOMMENDATIONS)
            .map_err(unavailable)?;
        if let Some(json) = recommendations.get(user_id).map_err(unavailable)? {
            state.cached = Some(serde_json::from_slice(json.value()).map_err(|error| {
                StoreError::Corrupt {
                    key: format!("recommendations/{user_id}"),
                    problem: error.to_string(),
                }
            })?);
        }
        Ok(state)
    }

    async fn apply_shared(&self, updates: Arc<[UserUpdate]>) -> Result<ApplyOutcome, StoreError> {
        let limits = self.limits;
        self.blocking(move |database| {
            let transaction = database.begin_write().map_err(unavailable)?;
            let mut outcome = ApplyOutcome::default();
            let mut popularity_increments: Vec<(String, f64)> = Vec::new();
            {
                let mut table = transaction.open_table(USERS).map_err(unavailable)?;
                for update in updates.iter() {
                    let mut record = match read_record(&table, &update.user_id) {
                        Ok(record) => record,
                        Err(error) => {
                            let unreadable = UnreadableUser::from_error(&update.user_id, error)?;
                            outcome.unreadable.push(unreadable);
                            continue;
                        }
                    };
                    let mut changed = false;
                    for interaction in &update.interactions {
                        if record.apply(interaction, limits) {
                            outcome.applied += 1;
                            changed = true;
                            if interaction.popularity_increment != 0.0 {
                                popularity_increments.push((
                                    interaction.item.to_id(),
                                    interaction.popularity_increment,
                                ));
                            }
                        } else {
                            outcome.duplicates += 1;
                        }
                    }
                    if changed {
                        table
                            .insert(update.user_id.as_str(), record.encode().as_slice())
                            .map_err(unavailable)?;
                    }
                }
            }
            add_to_popularity(&transaction, &popularity_increments)?;
            transaction.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn forget_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        self.blocking(move |database| {
            let transaction = database.begin_write().map_err(unavailable)?;
            let had_items = {
                let mut users = transaction.open_table(USERS).map_err(unavailable)?;
                let mut record = read_record(&users, &user_id)?;
                let had_items = record.forget();
                if had_items {
                    users
                        .insert(user_id.as_str(), record.encode().as_slice())
                        .map_err(unavailable)?;
                }
                had_items
            };
            let had_cache = transaction
                .open_table(RECOMMENDATIONS)
                .map_err(unavailable)?
                .remove(user_id.as_str())
                .map_err(unavailable)?
                .is_some();
            transaction.commit().map_err(unavailable)?;
            Ok(had_items || had_cache)
        })
        .await
    }

    async fn put_cached_recommendations(
        &self,
        entries: &[(String, CachedRecommendations)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        self.blocking(move |database| {
            let transaction = database.begin_write().map_err(unavailable)?;
            {
                let mut table = transaction
                    .open_table(RECOMMENDATIONS)
                    .map_err(unavailable)?;
                for (user_id, recommendations) in entries {
                    let newer_there = table
                        .get(user_id.as_str())
                        .map_err(unavailable)?
                        .and_then(|stored| {
                            serde_json::from_slice::<CachedRecommendations>(stored.value()).ok()
                        })
                        .is_some_and(|stored| {
                            stored.reflects_history_version
                                > recommendations.reflects_history_version
                        });
                    if newer_there {
                        continue;
                    }
                    let json =
                        serde_json::to_vec(&recommendations).expect("recommendations serialise");
                    table
                        .insert(user_id.as_str(), json.as_slice())
                        .map_err(unavailable)?;
                }
            }
            transaction.commit().map_err(unavailable)
        })
        .await
    }

    async fn add_popularity(&self, increments: &[(String, f64)]) -> Result<(), StoreError> {
        let increments = increments.to_vec();
        self.blocking(move |database| {
            let transaction = database.begin_write().map_err(unavailable)?;
            add_to_popularity(&transaction, &increments)?;
            transaction.commit().map_err(unavailable)
        })
        .await
    }

    async fn top_popular(&self, count: usize) -> Result<Vec<(String, f64)>, StoreError> {
        self.blocking(move |database| {
            let transaction = database.begin_read().map_err(unavailable)?;
            let table = transaction.open_table(POPULARITY).map_err(unavailable)?;
            let rank = transaction
                .open_table(POPULARITY_RANK)
                .map_err(unavailable)?;
            // Backwards through the rank: best score first, equal scores by item id descending
            // (what Redis's ZREVRANGE returns).
            let mut scores: Vec<(String, f64)> = Vec::with_capacity(count);
            for entry in rank.iter().map_err(unavailable)?.rev().take(count) {
                let (key, _) = entry.map_err(unavailable)?;
                let item_id = key.value().1.to_owned();
                let score = table
                    .get(item_id.as_str())
                    .map_err(unavailable)?
                    .map(|score| score.value())
                    .ok_or_else(|| StoreError::Corrupt {
                        key: item_id.clone(),
                        problem: "ranked but has no popularity score".into(),
                    })?;
                scores.push((item_id, score));
            }
            Ok(scores)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|database| database.begin_read().map(drop).map_err(unavailable))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::order_key;

    #[test]
    fn order_keys_sort_like_the_scores() {
        let scores = [
            -1e9,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            0.5,
            1.0,
            3.0,
            1e12,
            f64::INFINITY,
        ];
        for pair in scores.windows(2) {
            assert!(
                order_key(pair[0]) < order_key(pair[1]),
                "{} then {}",
                pair[0],
                pair[1]
            );
        }
    }
}
