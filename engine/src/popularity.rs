//! Live item popularity: time-decayed counts kept in the store, and the in-memory snapshot the API
//! answers from (refreshed in the background, so popular items survive a store outage).
//!
//! Decay without rewriting: an event at time `t` adds `weight * 2^((t - anchor) / half_life)`.
//! Every stored score then carries the same factor `2^((now - anchor) / half_life)` relative to its
//! decayed count, so ranking by stored score is ranking by decayed count at any moment, and an
//! increment is a plain `ZINCRBY`. The anchor is fixed; with a 24 h half-life, scores stay finite in
//! f64 for about 2.7 years after it (choose a later anchor to go further).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::clock::now_ms;

use crate::store::UserStore;

/// 2026-01-01T00:00:00Z.
pub const DEFAULT_ANCHOR_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecayClock {
    pub anchor_ms: i64,
    pub half_life_ms: f64,
}

impl DecayClock {
    pub fn new(half_life_hours: f64) -> DecayClock {
        DecayClock {
            anchor_ms: DEFAULT_ANCHOR_MS,
            half_life_ms: half_life_hours * 3_600_000.0,
        }
    }

    /// What an event of `weight` at `event_time_ms` adds to its item's stored score.
    pub fn increment(&self, weight: f64, event_time_ms: i64) -> f64 {
        weight * ((event_time_ms - self.anchor_ms) as f64 / self.half_life_ms).exp2()
    }

    /// A stored score expressed as the decayed count at `now_ms`.
    pub fn decayed(&self, stored_score: f64, now_ms: i64) -> f64 {
        stored_score * (-(now_ms - self.anchor_ms) as f64 / self.half_life_ms).exp2()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PopularItem {
    pub item_id: String,
    pub score: f64,
}

/// The most popular items as of the last successful refresh, scored as decayed counts.
#[derive(Debug)]
pub struct PopularSnapshot {
    items: RwLock<Arc<Vec<PopularItem>>>,
    clock: DecayClock,
}

impl PopularSnapshot {
    pub fn new(initial: Vec<PopularItem>) -> PopularSnapshot {
        PopularSnapshot {
            items: RwLock::new(Arc::new(initial)),
            clock: DecayClock::new(24.0),
        }
    }

    /// An empty snapshot whose refreshes convert stored scores with `clock`.
    pub fn with_clock(clock: DecayClock) -> PopularSnapshot {
        PopularSnapshot {
            items: RwLock::new(Arc::new(Vec::new())),
            clock,
        }
    }

    pub fn get(&self) -> Arc<Vec<PopularItem>> {
        Arc::clone(&self.items.read().expect("snapshot lock is never poisoned"))
    }

    pub fn replace(&self, items: Vec<PopularItem>) {
        *self.items.write().expect("snapshot lock is never poisoned") = Arc::new(items);
    }

    /// Reads the store once; on failure the previous snapshot stays and the error is returned.
    pub async fn refresh(
        &self,
        store: &dyn UserStore,
        count: usize,
    ) -> Result<usize, crate::store::StoreError> {
        let top = store.top_popular(count).await?;
        if top.is_empty() {
            // A store without live popularity yet keeps the seeded list.
            return Ok(0);
        }
        let now = now_ms();
        let items: Vec<PopularItem> = top
            .into_iter()
            .map(|(item_id, stored)| PopularItem {
                item_id,
                score: self.clock.decayed(stored, now),
            })
            .collect();
        let refreshed = items.len();
        self.replace(items);
        Ok(refreshed)
    }

    /// Refreshes every `interval` until the returned task is aborted.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        store: Arc<dyn UserStore>,
        count: usize,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let snapshot = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(error) = snapshot.refresh(store.as_ref(), count).await {
                    tracing::warn!(%error, "popular items not refreshed; serving the previous list");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_scores_rank_like_decayed_counts() {
        let clock = DecayClock::new(24.0);
        let day = 86_400_000;
        let start = DEFAULT_ANCHOR_MS + 10 * day;
        // Item a: 4 events two days ago. Item b: 2 events now. Decayed: a = 4 * 1/4 = 1, b = 2.
        let a = 4.0 * clock.increment(1.0, start);
        let b = 2.0 * clock.increment(1.0, start + 2 * day);
        let now = start + 2 * day;
        assert!((clock.decayed(a, now) - 1.0).abs() < 1e-9);
        assert!((clock.decayed(b, now) - 2.0).abs() < 1e-9);
        assert!(b > a);
    }

    #[test]
    fn snapshot_replaces_atomically() {
        let snapshot = PopularSnapshot::new(vec![PopularItem {
            item_id: "a".into(),
            score: 1.0,
        }]);
        let before = snapshot.get();
        snapshot.replace(vec![PopularItem {
            item_id: "b".into(),
            score: 2.0,
        }]);
        assert_eq!(before[0].item_id, "a");
        assert_eq!(snapshot.get()[0].item_id, "b");
    }
}
