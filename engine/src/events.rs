//! Applying interaction events to user state: the one code path behind the Kafka consumer and the
//! in-process bus of `POST /events`.
//!
//! A batch is grouped by user as its events arrive (arrival order kept, so a user's events stay
//! in log order) into store updates that carry their source position (partition, offset), their
//! event id's digest and their popularity increment, and applied in one store round trip. The
//! store skips an interaction at or below the user's last applied offset of its partition or
//! with an event id it remembers, so applying a batch twice changes nothing, and neither does an
//! event posted twice or produced twice at different offsets; the
//! caller commits offsets only after `apply` returned `Ok`. With pushing on, the touched users'
//! recommendations are then recomputed in one batch and written to their cache slots.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashTable;

use schemas::{EventRef, EventType};
use serde::{Deserialize, Serialize};

use common::clock::now_ms;
use common::retry::{RetryPolicy, RetrySchedule, RetryStopped, Transience};

use crate::popularity::DecayClock;
use crate::retrieve::PushError;
use crate::store::{
    AppliedInteraction, EventDigest, ItemKey, SourcePosition, StoreError, UnreadableUser,
    UserStore, UserUpdate,
};

/// How much one event of each type adds to its item's popularity (before decay).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventWeights {
    pub view: f64,
    pub click: f64,
    pub add_to_cart: f64,
    pub purchase: f64,
    pub rating: f64,
}

impl Default for EventWeights {
    fn default() -> Self {
        EventWeights {
            view: 1.0,
            click: 2.0,
            add_to_cart: 4.0,
            purchase: 8.0,
            rating: 3.0,
        }
    }
}

impl EventWeights {
    pub fn of(&self, event_type: EventType) -> f64 {
        match event_type {
            EventType::View => self.view,
            EventType::Click => self.click,
            EventType::AddToCart => self.add_to_cart,
            EventType::Purchase => self.purchase,
            EventType::Rating => self.rating,
        }
    }
}

/// Valid events of one batch, grouped by user as they are added: one update per user, users in
/// order of first appearance, each user's interactions in the order they were added (a user's
/// events come in log order, so they stay in it). A user's id is copied once, on its first event
/// of the batch, and a numeric item id never, so adding an event allocates nothing in the common
/// case.
#[derive(Debug, Clone)]
pub struct EventBatch {
    updates: Updates,
    /// Each user's index in `updates`, found by comparing with the update's user id: the table
    /// holds only indices, so it stays small enough for the cache (a map from a copied id,
    /// 32 bytes a user, missed it on nearly every event of a 20,000-user batch).
    slot_of_user: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    /// When each event entered the system (the Kafka record timestamp, or when `POST /events`
    /// accepted it): the start of the freshness measurement.
    logged_at_ms: Vec<i64>,
    /// Room for this many interactions in a user's list when their first event arrives: the
    /// events per user the batch was sized for (at most 16), so a list is allocated once
    /// rather than grown from empty through every doubling.
    interactions_per_user: usize,
    weights: EventWeights,
    clock: DecayClock,
}

/// A batch's updates: grown while events are added, then shared with the store, which may be
/// handed them several times (a failed write is retried) without a copy.
#[derive(Debug, Clone)]
enum Updates {
    Growing(Vec<UserUpdate>),
    Shared(Arc<[UserUpdate]>),
}

impl Updates {
    fn as_slice(&self) -> &[UserUpdate] {
        match self {
            Updates::Growing(updates) => updates,
            Updates::Shared(updates) => updates,
        }
    }

    /// For adding to; a batch added to after it was applied gets its own copy again.
    fn growing(&mut self) -> &mut Vec<UserUpdate> {
        if let Updates::Shared(shared) = self {
            *self = Updates::Growing(shared.to_vec());
        }
        match self {
            Updates::Growing(updates) => updates,
            Updates::Shared(_) => unreachable!("made growing above"),
        }
    }

    fn shared(&mut self) -> Arc<[UserUpdate]> {
        if let Updates::Growing(updates) = self {
            *self = Updates::Shared(std::mem::take(updates).into());
        }
        match self {
            Updates::Shared(updates) => Arc::clone(updates),
            Updates::Growing(_) => unreachable!("made shared above"),
        }
    }
}

impl EventBatch {
    /// An empty batch with room for `users` users and `events` events.
    pub fn with_capacity(
        weights: EventWeights,
        clock: DecayClock,
        users: usize,
        events: usize,
    ) -> EventBatch {
        EventBatch {
            updates: Updates::Growing(Vec::with_capacity(users)),
            slot_of_user: HashTable::with_capacity(users),
            hasher: Default::default(),
            logged_at_ms: Vec::with_capacity(events),
            interactions_per_user: (events / users.max(1)).clamp(1, 16),
            weights,
            clock,
        }
    }

    /// Adds a valid event; `position` is its place in a partitioned log (`None` for the
    /// in-process bus).
    pub fn push(
        &mut self,
        event: &EventRef<'_>,
        position: Option<SourcePosition>,
        logged_at_ms: i64,
    ) {
        let updates = self.updates.growing();
        let user_id = event.user_id.as_ref();
        let hash = self.hasher.hash_one(user_id);
        let found = self
            .slot_of_user
            .find(hash, |&slot| updates[slot].user_id == user_id);
        let slot = match found {
            Some(&slot) => slot,
            None => {
                let slot = updates.len();
                updates.push(UserUpdate {
                    user_id: user_id.to_owned(),
                    interactions: Vec::with_capacity(self.interactions_per_user),
                });
                let (updates, hasher) = (&*updates, &self.hasher);
                self.slot_of_user.insert_unique(hash, slot, |&slot| {
                    hasher.hash_one(updates[slot].user_id.as_str())
                });
                slot
            }
        };
        updates[slot].interactions.push(AppliedInteraction {
            item: ItemKey::new(&event.item_id),
            event_time_ms: event.event_time_ms,
            position,
            event: Some(EventDigest::of(&event.event_id)),
            popularity_increment: self
                .clock
                .increment(self.weights.of(event.event_type), event.event_time_ms),
        });
        self.logged_at_ms.push(logged_at_ms);
    }

    /// Events added.
    pub fn len(&self) -> usize {
        self.logged_at_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logged_at_ms.is_empty()
    }

    /// Distinct users.
    pub fn users(&self) -> usize {
        self.updates.as_slice().len()
    }

    /// One update per user, users in order of first appearance.
    pub fn updates(&self) -> &[UserUpdate] {
        self.updates.as_slice()
    }

    /// When each event entered the system (ms since the epoch), in the order they were added.
    pub fn logged_at_ms(&self) -> &[i64] {
        &self.logged_at_ms
    }
}

/// What applying one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    /// Users whose recommendations were recomputed and written.
    pub pushed: usize,
    /// Users whose stored state cannot be read; none of their events was applied, every other
    /// user's were. A permanent condition: the caller dead-letters or refuses their events.
    pub unreadable: Vec<UnreadableUser>,
}

/// Pushing of fresh recommendations after each batch.
#[derive(Clone)]
pub struct PushSettings {
    /// Pushes use the pair served now: a promotion changes them too.
    pub retriever: Arc<crate::serving::ServedRetriever>,
    /// How many recommendations are cached per user.
    pub count: usize,
}

pub struct EventApplier {
    store: Arc<dyn UserStore>,
    weights: EventWeights,
    clock: DecayClock,
    push: Option<PushSettings>,
}

impl EventApplier {
    pub fn new(
        store: Arc<dyn UserStore>,
        weights: EventWeights,
        clock: DecayClock,
        push: Option<PushSettings>,
    ) -> EventApplier {
        EventApplier {
            store,
            weights,
            clock,
            push,
        }
    }

    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    /// An empty batch that weighs events as this applier does, with room for `users` users and
    /// `events` events.
    pub fn batch(&self, users: usize, events: usize) -> EventBatch {
        EventBatch::with_capacity(self.weights, self.clock, users, events)
    }

    /// Applies the batch to the store (one attempt). `Ok` means every event is stored. The batch
    /// shares its updates with the store from then on (taken mutably for that).
    pub async fn apply(&self, batch: &mut EventBatch) -> Result<BatchOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let updates = batch.updates.shared();
        let started = Instant::now();
        let stored = self.store.apply_shared(updates).await?;
        metrics::histogram!("recsys_consumer_apply_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("recsys_consumer_events_total", "outcome" => "applied")
            .increment(stored.applied as u64);
        metrics::counter!("recsys_consumer_events_total", "outcome" => "duplicate")
            .increment(stored.duplicates as u64);
        for unreadable in &stored.unreadable {
            tracing::error!(
                user_id = unreadable.user_id,
                key = unreadable.key,
                problem = unreadable.problem,
                "a user's stored state cannot be read; their events are not applied"
            );
        }
        Ok(BatchOutcome {
            applied: stored.applied,
            duplicates: stored.duplicates,
            pushed: 0,
            unreadable: stored.unreadable,
        })
    }

    /// Applies the batch, retrying a store outage with backoff until it is stored, the store
    /// fails permanently (corrupt data: retrying cannot help) or `cancelled` fires. Unless it is
    /// stored, nothing may be committed. `on_outage` hears each failure and the recovery (`None`),
    /// so the caller can report itself not ready.
    pub async fn apply_until_stored(
        &self,
        batch: &mut EventBatch,
        retry: &RetryPolicy,
        cancelled: &tokio_util::sync::CancellationToken,
        mut on_outage: impl FnMut(Option<&StoreError>),
    ) -> Result<BatchOutcome, RetryStopped<StoreError>> {
        let mut schedule = RetrySchedule::new(retry);
        loop {
            let error = match self.apply(batch).await {
                Ok(outcome) => {
                    on_outage(None);
                    return Ok(outcome);
                }
                Err(error) if !error.is_transient() => return Err(RetryStopped::Permanent(error)),
                Err(error) => error,
            };
            let delay = schedule.next_delay();
            metrics::counter!("recsys_consumer_store_retries_total").increment(1);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "state store write failed; retrying");
            on_outage(Some(&error));
            if !RetrySchedule::sleep(delay, cancelled).await {
                return Err(RetryStopped::Cancelled);
            }
        }
    }

    /// Recomputes and caches the recommendations of every user of the batch (once per user, however
    /// many of their events it holds). A failure is logged and counted, never retried: the API
    /// computes on request when the cache is not current.
    pub async fn push_recommendations(&self, batch: &EventBatch) -> usize {
        let Some(push) = &self.push else {
            return 0;
        };
        let users: Vec<String> = batch
            .updates()
            .iter()
            .map(|update| update.user_id.clone())
            .collect();
        let result: Result<usize, PushError> = async {
            let entries = push
                .retriever
                .get()
                .recommendations_to_push(&users, push.count)
                .await?;
            self.store.put_cached_recommendations(&entries).await?;
            Ok(entries.len())
        }
        .await;
        match result {
            Ok(pushed) => {
                // Every event of the batch is reflected in what was written.
                let written_at = now_ms();
                for logged_at_ms in &batch.logged_at_ms {
                    metrics::histogram!("recsys_consumer_freshness_seconds")
                        .record((written_at - logged_at_ms).max(0) as f64 / 1000.0);
                }
                metrics::counter!("recsys_consumer_pushes_total", "outcome" => "written")
                    .increment(pushed as u64);
                pushed
            }
            Err(error) => {
                tracing::warn!(%error, users = users.len(), "pushing recommendations failed");
                metrics::counter!("recsys_consumer_pushes_total", "outcome" => "failed")
                    .increment(users.len() as u64);
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn event(user_id: &str, item_id: &str, event_time_ms: i64) -> EventRef<'static> {
        EventRef {
            event_id: Cow::Owned(format!("{user_id}-{event_time_ms}")),
            user_id: Cow::Owned(user_id.to_owned()),
            item_id: Cow::Owned(item_id.to_owned()),
            event_type: EventType::View,
            value: None,
            event_time_ms,
        }
    }

    fn grouped(batch: &EventBatch) -> Vec<(String, Vec<i64>)> {
        batch
            .updates()
            .iter()
            .map(|update| {
                let times = update
                    .interactions
                    .iter()
                    .map(|interaction| interaction.event_time_ms)
                    .collect();
                (update.user_id.clone(), times)
            })
            .collect()
    }

    #[test]
    fn events_group_by_user_in_first_appearance_order_past_the_tables_growth() {
        // No room reserved: the table grows (and rehashes) many times on the way.
        let mut batch =
            EventBatch::with_capacity(EventWeights::default(), DecayClock::new(24.0), 0, 0);
        let users = 1_000;
        let mut expected: Vec<(String, Vec<i64>)> = (0..users)
            .map(|user| (format!("user-{user}"), Vec::new()))
            .collect();
        for round in 0..3 {
            for (user, (user_id, times)) in expected.iter_mut().enumerate() {
                // Every third user skips the middle round: lists of different lengths.
                if round == 1 && user % 3 == 0 {
                    continue;
                }
                let time = (round * users + user) as i64;
                batch.push(&event(user_id, "7", time), None, time);
                times.push(time);
            }
        }
        assert_eq!(batch.users(), users);
        assert_eq!(
            batch.len(),
            expected.iter().map(|(_, times)| times.len()).sum::<usize>()
        );
        assert_eq!(grouped(&batch), expected);
    }

    #[test]
    fn a_batch_added_to_after_it_was_shared_leaves_the_shared_updates_alone() {
        let mut batch =
            EventBatch::with_capacity(EventWeights::default(), DecayClock::new(24.0), 2, 4);
        batch.push(&event("a", "1", 1), None, 1);
        batch.push(&event("b", "2", 2), None, 2);
        let shared = batch.updates.shared();

        batch.push(&event("a", "3", 3), None, 3);
        batch.push(&event("c", "4", 4), None, 4);
        assert_eq!(
            grouped(&batch),
            [
                ("a".to_owned(), vec![1, 3]),
                ("b".to_owned(), vec![2]),
                ("c".to_owned(), vec![4]),
            ]
        );
        // What the store was handed is what the batch held then.
        assert_eq!(shared.len(), 2);
        assert_eq!(shared[0].interactions.len(), 1);
    }
}
