//! MovieLens-100k as a stream of events, and what one uninterrupted consumer makes of it: each
//! user's bounded sequence and number of applied events, to compare a store with.

use std::collections::BTreeMap;
use std::path::Path;

use engine::event_log::replay::dataset_events;
use engine::store::{StoreLimits, UserStore};
use schemas::InteractionEvent;

pub struct MovieLensStream {
    pub events: Vec<InteractionEvent>,
    /// Per user: the sequence the store must hold (most recent last) and how many events.
    pub expected: BTreeMap<String, (Vec<String>, u64)>,
}

impl MovieLensStream {
    /// The events of the `ml-100k` data set under `data_dir`, as `recsys replay` sends them.
    pub fn load(data_dir: &Path, limits: StoreLimits) -> MovieLensStream {
        let dataset = dataset::Dataset::load(data_dir, "ml-100k")
            .expect("MovieLens-100k is needed: scripts/setup.sh fetches it into $RECSYS_DATA_DIR");
        let events = dataset_events(&dataset.name, &dataset.interactions);
        let mut expected: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
        for event in &events {
            let (sequence, count) = expected.entry(event.user_id.clone()).or_default();
            if sequence.last() != Some(&event.item_id) {
                sequence.push(event.item_id.clone());
            }
            *count += 1;
        }
        for (sequence, _) in expected.values_mut() {
            let excess = sequence.len().saturating_sub(limits.max_history);
            sequence.drain(..excess);
        }
        MovieLensStream { events, expected }
    }

    pub fn users(&self) -> Vec<String> {
        self.expected.keys().cloned().collect()
    }

    /// The users whose stored state differs from one consumer's, each with how.
    pub async fn users_that_differ(&self, store: &dyn UserStore) -> Vec<String> {
        let mut wrong = Vec::new();
        for (user, (sequence, count)) in &self.expected {
            let state = store.user_state(user).await.unwrap();
            if &state.recent_items != sequence || state.history_version != *count {
                wrong.push(format!(
                    "{user}: {} applied for {count} events, sequence equal: {}",
                    state.history_version,
                    &state.recent_items == sequence
                ));
            }
        }
        wrong
    }
}

/// Trains a small model on MovieLens (one epoch, 16 dimensions: seconds) and indexes it.
pub fn small_model(binary: &Path, data_dir: &Path) {
    super::run(
        binary,
        data_dir,
        &[],
        &[
            "train",
            "--dataset",
            "ml-100k",
            "--max-epochs",
            "1",
            "--embedding-dim",
            "16",
        ],
    );
    super::run(binary, data_dir, &[], &["index"]);
}
