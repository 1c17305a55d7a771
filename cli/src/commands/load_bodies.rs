//! Realistic load for the API benchmark: every user's history (minus the last few interactions)
//! goes into the store, and each request body is a stored user continuing with 1-5 of their own
//! next items, as a client session would.

use dataset::Dataset;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::RetrieveContext;

use engine::store::{AppliedInteraction, ItemKey, StoreError, UserStore, UserUpdate};

/// Interactions kept out of the stored history, to serve as session items.
const SESSION_TAIL: usize = 5;
/// Users written per store call.
const USERS_PER_BATCH: usize = 500;

#[derive(Debug)]
pub struct RetrieveLoad {
    pub users: usize,
    pub stored_interactions: usize,
    /// One JSON body per line, for `oha -Z`.
    pub bodies: Vec<String>,
}

/// Stores every user's history except the last `SESSION_TAIL` items (the store keeps its own
/// bounded window of it) and makes `requests` bodies from those held-back items.
pub async fn prepare_retrieve_load(
    store: &dyn UserStore,
    dataset: &Dataset,
    requests: usize,
    seed: u64,
) -> Result<RetrieveLoad, StoreError> {
    let sequences: Vec<_> = dataset
        .user_sequences()
        .into_iter()
        .filter(|sequence| sequence.item_ids.len() > SESSION_TAIL)
        .collect();
    let mut stored_interactions = 0;
    for batch in sequences.chunks(USERS_PER_BATCH) {
        let updates: Vec<UserUpdate> = batch
            .iter()
            .map(|sequence| {
                let history = &sequence.item_ids[..sequence.item_ids.len() - SESSION_TAIL];
                stored_interactions += history.len();
                UserUpdate {
                    user_id: sequence.user_id.clone(),
                    interactions: history
                        .iter()
                        .enumerate()
                        .map(|(position, item_id)| AppliedInteraction {
                            item: ItemKey::new(item_id),
                            event_time_ms: position as i64,
                            position: None,
                            event: None,
                            popularity_increment: 0.0,
                        })
                        .collect(),
                }
            })
            .collect();
        store.apply(updates).await?;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let bodies = (0..requests)
        .filter(|_| !sequences.is_empty())
        .map(|_| {
            let sequence = &sequences[rng.random_range(0..sequences.len())];
            let tail = &sequence.item_ids[sequence.item_ids.len() - SESSION_TAIL..];
            let session_len = rng.random_range(1..=SESSION_TAIL);
            let context = RetrieveContext {
                user_ids_raw: vec![sequence.user_id.clone()],
                item_seq_raw: vec![tail[..session_len].to_vec()],
                candidate_items_raw: Vec::new(),
            };
            serde_json::to_string(&context).expect("a context serialises")
        })
        .collect();
    Ok(RetrieveLoad {
        users: sequences.len(),
        stored_interactions,
        bodies,
    })
}
