//! Seeded synthetic interaction data for scale tests (up to millions of users and 1M items).
//!
//! Items have a Zipf-distributed global popularity and belong to one of `num_tastes` latent tastes.
//! Each user likes a few tastes; their history is a series of sessions, each focused on one of
//! those tastes, so a sequence model has real structure to learn and popularity is a fair baseline.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::{Dataset, Interaction, ItemMetadata};

#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    pub num_users: usize,
    pub num_items: usize,
    /// Mean number of interactions per user (uniform in [mean/2, 3*mean/2]).
    pub mean_events_per_user: usize,
    pub num_tastes: usize,
    /// Probability that an event follows the session's taste rather than global popularity.
    pub taste_affinity: f64,
    pub zipf_exponent: f64,
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            num_users: 10_000,
            num_items: 100_000,
            mean_events_per_user: 30,
            num_tastes: 256,
            taste_affinity: 0.8,
            zipf_exponent: 1.05,
            seed: 42,
        }
    }
}

/// Start of the synthetic clock: 2024-01-01T00:00:00Z.
const EPOCH_START: i64 = 1_704_067_200;

pub fn generate(name: &str, config: &SyntheticConfig) -> Dataset {
    assert!(config.num_items > 0 && config.num_tastes > 0 && config.num_users > 0);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let num_tastes = config.num_tastes.min(config.num_items);

    // Item index == global popularity rank. Tastes are spread by a multiplicative hash so every taste
    // gets head and tail items; within a taste, items stay in rank order.
    let taste_of_item = |item: usize| (item.wrapping_mul(2_654_435_761) >> 7) % num_tastes;
    let mut items_by_taste: Vec<Vec<u32>> = vec![Vec::new(); num_tastes];
    for item in 0..config.num_items {
        items_by_taste[taste_of_item(item)].push(item as u32);
    }
    items_by_taste.retain(|items| !items.is_empty());
    let taste_samplers: Vec<Zipf<f64>> = items_by_taste
        .iter()
        .map(|items| zipf(items.len(), config.zipf_exponent))
        .collect();
    let global_sampler = zipf(config.num_items, config.zipf_exponent);

    let mut interactions = Vec::with_capacity(config.num_users * config.mean_events_per_user);
    for user in 0..config.num_users {
        let user_id = format!("u{user}");
        let user_tastes: Vec<usize> = (0..rng.random_range(1..=3))
            .map(|_| rng.random_range(0..items_by_taste.len()))
            .collect();
        let low = (config.mean_events_per_user / 2).max(3);
        let high = (config.mean_events_per_user * 3 / 2).max(low + 1);
        let num_events = rng.random_range(low..high);
        let mut clock = EPOCH_START + rng.random_range(0..30 * 86_400);
        let mut events_left = num_events;
        while events_left > 0 {
            let session_taste = user_tastes[rng.random_range(0..user_tastes.len())];
            let session_length = rng.random_range(3..=10).min(events_left);
            for _ in 0..session_length {
                let item = if rng.random_bool(config.taste_affinity) {
                    let rank = taste_samplers[session_taste].sample(&mut rng) as usize - 1;
                    items_by_taste[session_taste][rank]
                } else {
                    (global_sampler.sample(&mut rng) as usize - 1) as u32
                };
                interactions.push(Interaction {
                    user_id: user_id.clone(),
                    item_id: format!("i{item}"),
                    rating: None,
                    timestamp: clock,
                });
                clock += rng.random_range(20..300);
            }
            events_left -= session_length;
            clock += rng.random_range(3_600..3 * 86_400);
        }
    }

    let items = (0..config.num_items)
        .map(|item| ItemMetadata {
            item_id: format!("i{item}"),
            title: format!("Synthetic item {item}"),
            year: None,
            genres: vec![format!("taste-{}", taste_of_item(item))],
        })
        .collect();
    Dataset {
        name: name.to_owned(),
        interactions,
        items,
    }
}

fn zipf(num_elements: usize, exponent: f64) -> Zipf<f64> {
    Zipf::new(num_elements as f64, exponent).expect("zipf parameters are positive")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config(seed: u64) -> SyntheticConfig {
        SyntheticConfig {
            num_users: 200,
            num_items: 1_000,
            mean_events_per_user: 20,
            num_tastes: 16,
            seed,
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn same_seed_same_data_and_different_seed_different_data() {
        let first = generate("s", &small_config(7));
        let second = generate("s", &small_config(7));
        let other = generate("s", &small_config(8));
        assert_eq!(first.interactions, second.interactions);
        assert_ne!(first.interactions, other.interactions);
        assert_eq!(first.items.len(), 1_000);
    }

    #[test]
    fn popularity_is_skewed_towards_low_ranks() {
        let dataset = generate("s", &small_config(1));
        let head = dataset
            .interactions
            .iter()
            .filter(|interaction| interaction.item_id[1..].parse::<usize>().unwrap() < 100)
            .count();
        // The top 10% of items take far more than 10% of the interactions.
        assert!(
            head * 3 > dataset.interactions.len(),
            "head {head} of {}",
            dataset.interactions.len()
        );
        let users = dataset.user_sequences();
        assert_eq!(users.len(), 200);
        assert!(users.iter().all(|user| user.item_ids.len() >= 10));
    }
}
