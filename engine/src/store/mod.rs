//! Per-user state and live item popularity, behind one trait with two backends chosen by URL:
//! `redis://` (redis-rs) and the embedded default (redb, persistent in the data dir).
//!
//! Per user the store holds the recent item sequence (bounded, most recent last, no consecutive
//! duplicate), the items already seen (bounded, least recently seen forgotten first), the newest
//! event time applied, the last applied source offset per partition (so redelivered events change
//! nothing), digests of the user's most recent event ids (so an event posted or produced twice is
//! applied once) and, apart from that, a slot for pre-computed recommendations. Both backends store the
//! same compact record and apply the same transition (`record.rs`).

mod embedded;
mod record;
mod redis;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalogue::CatalogueStore;

pub use self::redis::RedisStore;
pub use embedded::EmbeddedStore;
pub(crate) use record::UserRecord;
pub use record::{EventDigest, ItemKey};

/// Where an event came from in the log, for idempotent application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    pub partition: i32,
    pub offset: i64,
}

/// One interaction to apply to a user's state.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedInteraction {
    pub item: ItemKey,
    /// Milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    /// `None` for events that did not come from a partitioned log.
    pub position: Option<SourcePosition>,
    /// The event's id, digested: an interaction whose digest is among the user's recent ones is
    /// a repeat (a client's retry, a producer's duplicate at another offset) and is skipped.
    /// `None` only for bulk loads that have no event ids.
    pub event: Option<EventDigest>,
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
    /// Distinct seen items kept per user, those of the recent sequence included (which are never
    /// forgotten); the least recently seen are forgotten first.
    pub max_seen: usize,
    /// Digests of the user's most recent event ids kept to recognise repeats (8 bytes each, in
    /// every user's record). A repeat is caught while fewer than this many of the user's events
    /// came after the original: a client retries within seconds, a producer resends a batch.
    pub max_event_ids: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_history: 50,
            max_seen: 1_000,
            max_event_ids: 16,
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
    #[error("invalid state store URL '{}': {problem}", common::redact::url_without_secrets(.url))]
    InvalidUrl { url: String, problem: String },
}

impl common::retry::Transience for StoreError {
    fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub applied: usize,
    /// Interactions at or before the user's last applied offset of their partition, or with an
    /// event id the user's record remembers.
    pub duplicates: usize,
    /// Users whose stored record cannot be read: none of their interactions was applied, and
    /// retrying cannot help (the caller dead-letters their events or refuses them). Every other
    /// user of the batch was applied.
    pub unreadable: Vec<UnreadableUser>,
}

/// A user whose stored record cannot be read back (a bug or a foreign writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableUser {
    pub user_id: String,
    /// The store's key (or table and key) of the record.
    pub key: String,
    pub problem: String,
}

impl UnreadableUser {
    /// Sorts out a record that failed to decode; any other error is the caller's to return.
    fn from_error(user_id: &str, error: StoreError) -> Result<UnreadableUser, StoreError> {
        match error {
            StoreError::Corrupt { key, problem } => Ok(UnreadableUser {
                user_id: user_id.to_owned(),
                key,
                problem,
            }),
            other => Err(other),
        }
    }
}

impl std::fmt::Display for UnreadableUser {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "the stored state of user '{}' ({}) cannot be read: {}",
            self.user_id, self.key, self.problem
        )
    }
}

/// The state store also holds the live catalogue (`crate::catalogue`), so that every process
/// sharing users shares items too.
#[async_trait::async_trait]
pub trait UserStore: CatalogueStore + Send + Sync + 'static {
    /// A short name for logs and `/readyz`: `redis` or `embedded`.
    fn backend(&self) -> &'static str;

    async fn user_state(&self, user_id: &str) -> Result<UserState, StoreError>;

    /// Applies every update atomically per user, idempotently: an interaction whose offset is
    /// not above the last applied one of its partition, or whose event id is among the user's
    /// recent ones, is skipped.
    /// The popularity increments of the applied interactions are added too (in the same
    /// transaction on the embedded store; right after the users' records on Redis, so a crash
    /// between the two loses at most that batch's increments and never counts one twice).
    /// Shared rather than owned: a caller that retries a failed batch keeps it without a copy
    /// per attempt.
    async fn apply_shared(&self, updates: Arc<[UserUpdate]>) -> Result<ApplyOutcome, StoreError>;

    /// [`UserStore::apply_shared`] for updates the caller does not keep.
    async fn apply(&self, updates: Vec<UserUpdate>) -> Result<ApplyOutcome, StoreError> {
        self.apply_shared(updates.into()).await
    }

    /// Writes users' pushed recommendations into their cache slots, except where a slot holds a
    /// list computed from a later history version (a slow push never replaces a newer one).
    async fn put_cached_recommendations(
        &self,
        entries: &[(String, CachedRecommendations)],
    ) -> Result<(), StoreError>;

    /// Adds to items' popularity scores.
    async fn add_popularity(&self, increments: &[(String, f64)]) -> Result<(), StoreError>;

    /// The `count` items with the highest scores, best first; equal scores by item id, descending
    /// (the order Redis gives).
    async fn top_popular(&self, count: usize) -> Result<Vec<(String, f64)>, StoreError>;

    /// Forgets what the user did (an erasure request): recent and seen items and the cached list
    /// go; the per-partition positions stay, so the same events read again from the log are
    /// still skipped. Returns whether anything of the user was stored.
    async fn forget_user(&self, user_id: &str) -> Result<bool, StoreError>;

    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store a URL names: `redis://host:port[/db]` (or `rediss://`), a Redis Cluster by
/// its seed nodes `redis+cluster://host:port,host:port` (or `rediss+cluster://`), or `embedded` /
/// `embedded://` for the redb file under `data_dir`.
pub async fn open_store(
    url: &str,
    key_prefix: &str,
    limits: StoreLimits,
    data_dir: &Path,
) -> Result<Arc<dyn UserStore>, StoreError> {
    let redis_schemes = [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ];
    if redis_schemes.iter().any(|scheme| url.starts_with(scheme)) {
        if url.starts_with("rediss") {
            // Fails only when a provider is installed already, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
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
        problem: "expected redis://, rediss://, redis+cluster://, rediss+cluster:// or embedded"
            .into(),
    })
}
