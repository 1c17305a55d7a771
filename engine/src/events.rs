//! Applying interaction events to user state: the one code path behind the Kafka consumer and the
//! in-process bus of `POST /events`.
//!
//! A batch is grouped by user (arrival order kept, so a user's events stay in log order), turned
//! into store updates that carry their source position (partition, offset) and their popularity
//! increment, and applied in one store round trip. The store skips an interaction at or below the
//! user's last applied offset of its partition, so applying a batch twice changes nothing; the
//! caller commits offsets only after `apply` returned `Ok`. With pushing on, the touched users'
//! recommendations are then recomputed in one batch and written to their cache slots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use schemas::{EventType, InteractionEvent};
use serde::{Deserialize, Serialize};

use crate::popularity::{now_ms, DecayClock};
use crate::retrieve::{PushError, Retriever};
use crate::store::{AppliedInteraction, SourcePosition, StoreError, UserStore, UserUpdate};
use crate::BatchMap;

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

/// A valid event and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    pub event: InteractionEvent,
    /// Its place in a partitioned log; `None` for the in-process bus.
    pub position: Option<SourcePosition>,
    /// When it entered the system (the Kafka record timestamp, or when `POST /events` accepted
    /// it): the start of the freshness measurement.
    pub logged_at_ms: i64,
}

/// What applying one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    /// Users whose recommendations were recomputed and written.
    pub pushed: usize,
}

/// Pushing of fresh recommendations after each batch.
#[derive(Clone)]
pub struct PushSettings {
    pub retriever: Arc<Retriever>,
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

    /// One update per user, users in order of first appearance, each user's events in batch order.
    pub fn updates(&self, events: &[ReceivedEvent]) -> Vec<UserUpdate> {
        let mut slot_of_user: BatchMap<&str, usize> = BatchMap::default();
        let mut updates: Vec<UserUpdate> = Vec::new();
        for received in events {
            let event = &received.event;
            let slot = *slot_of_user
                .entry(event.user_id.as_str())
                .or_insert_with(|| {
                    updates.push(UserUpdate {
                        user_id: event.user_id.clone(),
                        interactions: Vec::new(),
                    });
                    updates.len() - 1
                });
            updates[slot].interactions.push(AppliedInteraction {
                item_id: event.item_id.clone(),
                event_time_ms: event.event_time_ms,
                position: received.position,
                popularity_increment: self
                    .clock
                    .increment(self.weights.of(event.event_type), event.event_time_ms),
            });
        }
        updates
    }

    /// Applies the batch to the store (one attempt). `Ok` means every event is stored.
    pub async fn apply(&self, events: &[ReceivedEvent]) -> Result<BatchOutcome, StoreError> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let updates = self.updates(events);
        let started = Instant::now();
        let stored = self.store.apply(updates).await?;
        metrics::histogram!("recsys_consumer_apply_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("recsys_consumer_events_total", "outcome" => "applied")
            .increment(stored.applied as u64);
        metrics::counter!("recsys_consumer_events_total", "outcome" => "duplicate")
            .increment(stored.duplicates as u64);
        Ok(BatchOutcome {
            applied: stored.applied,
            duplicates: stored.duplicates,
            pushed: 0,
        })
    }

    /// Applies the batch, retrying a store outage with exponential backoff until it is stored or
    /// `cancelled` fires (then `None`: nothing may be committed). `on_outage` hears each failure,
    /// so the caller can report itself not ready.
    pub async fn apply_until_stored(
        &self,
        events: &[ReceivedEvent],
        backoff: &Backoff,
        cancelled: &tokio_util::sync::CancellationToken,
        mut on_outage: impl FnMut(Option<&StoreError>),
    ) -> Option<BatchOutcome> {
        let mut delay = backoff.initial;
        loop {
            match self.apply(events).await {
                Ok(outcome) => {
                    on_outage(None);
                    return Some(outcome);
                }
                Err(error) => {
                    metrics::counter!("recsys_consumer_store_retries_total").increment(1);
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "state store write failed; retrying");
                    on_outage(Some(&error));
                }
            }
            if !backoff.wait(&mut delay, cancelled).await {
                return None;
            }
        }
    }

    /// Recomputes and caches the recommendations of every user of the batch (once per user, however
    /// many of their events it holds). A failure is logged and counted, never retried: the API
    /// computes on request when the cache is not current.
    pub async fn push_recommendations(&self, events: &[ReceivedEvent]) -> usize {
        let Some(push) = &self.push else {
            return 0;
        };
        // Each user once, in order of first appearance: a burst of one user's events is one
        // recompute.
        let mut distinct = std::collections::HashSet::new();
        let users: Vec<String> = events
            .iter()
            .map(|received| received.event.user_id.as_str())
            .filter(|user| distinct.insert(*user))
            .map(str::to_owned)
            .collect();
        let result: Result<usize, PushError> = async {
            let entries = push
                .retriever
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
                for received in events {
                    metrics::histogram!("recsys_consumer_freshness_seconds")
                        .record((written_at - received.logged_at_ms).max(0) as f64 / 1000.0);
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

/// Exponential backoff bounds for store retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Sleeps `delay`, then doubles it up to `max`. Returns `false` at once if `cancelled` fires
    /// first: the caller gives up.
    pub async fn wait(
        &self,
        delay: &mut Duration,
        cancelled: &tokio_util::sync::CancellationToken,
    ) -> bool {
        tokio::select! {
            () = cancelled.cancelled() => return false,
            () = tokio::time::sleep(*delay) => {}
        }
        *delay = (*delay * 2).min(self.max);
        true
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}
