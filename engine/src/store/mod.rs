//! Per-user state and live item popularity, behind one trait with two backends chosen by URL:
//! `redis://` (redis-rs) and the embedded default (redb, persistent in the data dir).
//!
//! Per user the store holds the recent item sequence (bounded, most recent last, no consecutive
//! duplicate), the set of items already seen (bounded, oldest evicted first), the newest event time
//! applied, the last applied source offset per partition (so redelivered events change nothing) and
//! a slot for pre-computed recommendations.

mod embedded;
mod redis_store;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedStore;
pub use redis_store::RedisStore;

/// Where an event came from in the log, for idempotent application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub partition: i32,
    pub offset: i64,
}

/// One interaction to apply to a user's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedInteraction {
    pub item_id: String,
    /// Milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    /// `None` for events that did not come from a partitioned log (they are always applied).
    pub position: Option<SourcePosition>,
    /// Added to the item's live popularity if, and only if, the interaction is applied (a
    /// redelivery adds nothing).
    pub popularity_increment: f64,
}

/// A user's new interactions, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct UserUpdate {
    pub user_id: String,
    pub interactions: Vec<AppliedInteraction>,
}

/// Recommendations computed ahead of a request (by the consumer) and what they reflect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedRecommendations {
    pub model_version: String,
    /// Newest event time (ms) of the user's history they were computed from.
    pub reflects_event_time_ms: i64,
    /// The user's `history_version` they were computed from: they are current while it is.
    pub reflects_history_version: u64,
    pub computed_at_ms: i64,
    pub items: Vec<CachedItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedItem {
    pub item_id: String,
    pub score: f32,
}

/// Everything the retrieve pipeline needs about one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    /// Most recent last.
    pub recent_items: Vec<String>,
    /// Every item still remembered as seen, in no particular order.
    pub seen_items: Vec<String>,
    pub newest_event_time_ms: Option<i64>,
    /// Increases by one with every applied interaction (not with redeliveries), so it tells
    /// whether anything happened since a pushed list was computed, even for events that arrive
    /// out of event-time order.
    pub history_version: u64,
    pub cached: Option<CachedRecommendations>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreLimits {
    /// Length of the recent sequence kept per user.
    pub max_history: usize,
    /// Distinct seen items kept per user; the oldest are forgotten first.
    pub max_seen: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_history: 50,
            max_seen: 1_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or failed; retrying later may succeed.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back (a bug or a foreign writer); retrying will not help.
    #[error("state store holds unreadable data for {key}: {problem}")]
    Corrupt { key: String, problem: String },
    #[error("invalid state store URL '{url}': {problem}")]
    InvalidUrl { url: String, problem: String },
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub applied: usize,
    /// Interactions at or before the user's last applied offset of their partition.
    pub duplicates: usize,
}

#[async_trait::async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// A short name for logs and `/readyz`: `redis` or `embedded`.
    fn backend(&self) -> &'static str;

    async fn user_state(&self, user_id: &str) -> Result<UserState, StoreError>;

    /// Applies every update atomically per user, idempotently with respect to source positions:
    /// an interaction whose offset is not above the last applied one of its partition is skipped.
    /// The popularity increments of the applied interactions are added too (in the same
    /// transaction on the embedded store; right after the users' scripts on Redis, whose
    /// popularity key lives in another cluster slot, so a crash between the two loses at most
    /// that batch's increments and never counts one twice).
    async fn apply(&self, updates: &[UserUpdate]) -> Result<ApplyOutcome, StoreError>;

    /// Writes users' pushed recommendations into their cache slots, in one round trip.
    async fn put_cached_recommendations(
        &self,
        entries: &[(String, CachedRecommendations)],
    ) -> Result<(), StoreError>;

    /// Adds to items' popularity scores.
    async fn add_popularity(&self, increments: &[(String, f64)]) -> Result<(), StoreError>;

    /// The `count` items with the highest scores, best first; equal scores by item id, descending
    /// (the order Redis gives).
    async fn top_popular(&self, count: usize) -> Result<Vec<(String, f64)>, StoreError>;

    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store a URL names: `redis://host:port[/db]` (or `rediss://`), or `embedded` /
/// `embedded://` for the redb file under `data_dir`.
pub async fn open_store(
    url: &str,
    key_prefix: &str,
    limits: StoreLimits,
    data_dir: &Path,
) -> Result<Arc<dyn UserStore>, StoreError> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(Arc::new(
            RedisStore::connect(url, key_prefix, limits).await?,
        ));
    }
    if url == "embedded" || url.starts_with("embedded://") {
        let path = data_dir.join("state").join("users.redb");
        return Ok(Arc::new(EmbeddedStore::open(&path, limits).await?));
    }
    Err(StoreError::InvalidUrl {
        url: url.to_owned(),
        problem: "expected redis://, rediss:// or embedded".into(),
    })
}

/// The state transition both backends implement (the Redis one in Lua): append unless it repeats
/// the last item, remember as seen, track offsets and the newest event time, then trim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub recent_items: Vec<String>,
    /// `(item, last seen event time)`, at most `max_seen` entries.
    pub seen: Vec<(String, i64)>,
    pub newest_event_time_ms: Option<i64>,
    /// `(partition, last applied offset)`.
    pub applied_offsets: Vec<(i32, i64)>,
    #[serde(default)]
    pub history_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<CachedRecommendations>,
}

impl UserRecord {
    /// Returns whether the interaction was new.
    pub(crate) fn apply(&mut self, interaction: &AppliedInteraction, limits: StoreLimits) -> bool {
        if let Some(position) = interaction.position {
            match self
                .applied_offsets
                .iter_mut()
                .find(|(partition, _)| *partition == position.partition)
            {
                Some((_, last)) if *last >= position.offset => return false,
                Some((_, last)) => *last = position.offset,
                None => self
                    .applied_offsets
                    .push((position.partition, position.offset)),
            }
        }
        if self.recent_items.last() != Some(&interaction.item_id) {
            self.recent_items.push(interaction.item_id.clone());
        }
        let excess = self.recent_items.len().saturating_sub(limits.max_history);
        self.recent_items.drain(..excess);

        match self
            .seen
            .iter_mut()
            .find(|(item, _)| *item == interaction.item_id)
        {
            Some((_, time)) => *time = (*time).max(interaction.event_time_ms),
            None => self
                .seen
                .push((interaction.item_id.clone(), interaction.event_time_ms)),
        }
        if self.seen.len() > limits.max_seen {
            // Forget the least recently seen; equal times go by item id, as Redis sorted sets do.
            self.seen
                .sort_by(|left, right| left.1.cmp(&right.1).then_with(|| left.0.cmp(&right.0)));
            let excess = self.seen.len() - limits.max_seen;
            self.seen.drain(..excess);
        }
        self.history_version += 1;
        self.newest_event_time_ms = Some(
            self.newest_event_time_ms
                .map_or(interaction.event_time_ms, |newest| {
                    newest.max(interaction.event_time_ms)
                }),
        );
        true
    }

    pub(crate) fn into_state(self) -> UserState {
        UserState {
            recent_items: self.recent_items,
            seen_items: self.seen.into_iter().map(|(item, _)| item).collect(),
            newest_event_time_ms: self.newest_event_time_ms,
            history_version: self.history_version,
            cached: self.cached,
        }
    }
}
