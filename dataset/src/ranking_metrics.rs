//! Top-k ranking metrics for one held-out target per user.
//!
//! `rank` is 1-based: the number of items scored strictly higher than the target, plus one. With a
//! single relevant item, NDCG@k is `1 / log2(rank + 1)` when `rank <= k`, since the ideal DCG is 1.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    #[serde(rename = "recall@20")]
    pub recall_at_20: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    #[serde(rename = "ndcg@20")]
    pub ndcg_at_20: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    pub users: usize,
}

#[derive(Debug, Default, Clone)]
pub struct RankingAccumulator {
    users: usize,
    hits_at_10: f64,
    hits_at_20: f64,
    ndcg_at_10: f64,
    ndcg_at_20: f64,
    reciprocal_rank_at_10: f64,
}

impl RankingAccumulator {
    /// A user whose target was not ranked at all (for example masked as already seen).
    pub fn add_miss(&mut self) {
        self.users += 1;
    }

    pub fn add_rank(&mut self, rank: u64) {
        assert!(rank >= 1, "ranks are 1-based");
        self.users += 1;
        let gain = 1.0 / ((rank + 1) as f64).log2();
        if rank <= 10 {
            self.hits_at_10 += 1.0;
            self.ndcg_at_10 += gain;
            self.reciprocal_rank_at_10 += 1.0 / rank as f64;
        }
        if rank <= 20 {
            self.hits_at_20 += 1.0;
            self.ndcg_at_20 += gain;
        }
    }

    pub fn finish(&self) -> RankingMetrics {
        let users = self.users.max(1) as f64;
        RankingMetrics {
            recall_at_10: self.hits_at_10 / users,
            recall_at_20: self.hits_at_20 / users,
            ndcg_at_10: self.ndcg_at_10 / users,
            ndcg_at_20: self.ndcg_at_20 / users,
            mrr_at_10: self.reciprocal_rank_at_10 / users,
            users: self.users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    #[test]
    fn hand_computed_ranks() {
        // Ranks 1, 3, 15, 100 for four users.
        let mut accumulator = RankingAccumulator::default();
        for rank in [1, 3, 15, 100] {
            accumulator.add_rank(rank);
        }
        let metrics = accumulator.finish();
        assert_eq!(metrics.users, 4);
        close(metrics.recall_at_10, 2.0 / 4.0);
        close(metrics.recall_at_20, 3.0 / 4.0);
        // log2(2) = 1, log2(4) = 2, log2(16) = 4.
        close(metrics.ndcg_at_10, (1.0 + 0.5) / 4.0);
        close(metrics.ndcg_at_20, (1.0 + 0.5 + 0.25) / 4.0);
        close(metrics.mrr_at_10, (1.0 + 1.0 / 3.0) / 4.0);
    }

    #[test]
    fn boundaries_are_inclusive() {
        let mut accumulator = RankingAccumulator::default();
        accumulator.add_rank(10);
        let metrics = accumulator.finish();
        close(metrics.recall_at_10, 1.0);
        close(metrics.ndcg_at_10, 1.0 / 11f64.log2());
        close(metrics.mrr_at_10, 0.1);

        let mut accumulator = RankingAccumulator::default();
        accumulator.add_rank(11);
        let metrics = accumulator.finish();
        close(metrics.recall_at_10, 0.0);
        close(metrics.recall_at_20, 1.0);
        close(metrics.mrr_at_10, 0.0);
    }

    #[test]
    fn serialises_with_the_at_names() {
        let json = serde_json::to_value(RankingAccumulator::default().finish()).unwrap();
        for key in [
            "recall@10",
            "recall@20",
            "ndcg@10",
            "ndcg@20",
            "mrr@10",
            "users",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
    }
}
