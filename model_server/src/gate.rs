//! The promotion gate: the champion (the bundle served now) and a challenger are ranked on the
//! same fresh holdout, and the challenger may replace the champion only if it is not worse by more
//! than a tolerance.
//!
//! The holdout is what happened after the challenger's training data ended: every interaction at
//! or after `holdout_from_s` is one case, the user's earlier interactions (before the cut and
//! within the holdout) its context and its item the target, as a served session would ask. Each
//! event rather than each user: a holdout of a few hours holds few users, and one case per user
//! leaves the comparison to chance. Neither model trained on it (the champion is older still).
//! Every item is ranked, nothing masked, as in `eval`; a target a model does not know is a miss
//! for that model, so a model cannot gain by knowing fewer items. The tolerance comes from the
//! seed-to-seed spread of the metric (`MODEL.md`): a challenger that only lost a seed's worth of
//! noise passes.

use std::collections::HashMap;
use std::path::Path;

use dataset::ranking_metrics::{RankingAccumulator, RankingMetrics};
use dataset::Interaction;
use serde::{Deserialize, Serialize};

use crate::bundle::ModelBundle;
use crate::eval::{evaluate_encoder, EvalCase, SeenItems};
use crate::offline::OfflineError;

/// One user's holdout prediction in raw ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldoutCase {
    pub context: Vec<String>,
    pub target: String,
}

/// What the gate compared and decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    pub cases: usize,
    pub champion: RankingMetrics,
    pub challenger: RankingMetrics,
    /// Items ranked by their interactions before the holdout: how hard the holdout is.
    pub popularity: RankingMetrics,
    pub tolerance: f64,
    /// Whether the challenger's NDCG@10 is at least the champion's minus the tolerance.
    pub passed: bool,
}

/// The holdout of `interactions` (any order; sorted here by time, ties keeping their order):
/// each interaction at or after `holdout_from_s` whose user has an earlier one.
pub fn holdout_cases(interactions: &[Interaction], holdout_from_s: i64) -> Vec<HoldoutCase> {
    let mut ordered: Vec<&Interaction> = interactions.iter().collect();
    ordered.sort_by_key(|interaction| interaction.timestamp);
    let mut histories: HashMap<&str, Vec<String>> = HashMap::new();
    let mut cases = Vec::new();
    for interaction in ordered {
        let history = histories.entry(interaction.user_id.as_str()).or_default();
        if interaction.timestamp >= holdout_from_s && !history.is_empty() {
            cases.push(HoldoutCase {
                context: history.clone(),
                target: interaction.item_id.clone(),
            });
        }
        history.push(interaction.item_id.clone());
    }
    cases
}

/// The bundle's ranking metrics on `cases`; unknown targets are misses, unknown context items
/// are left out (as serving leaves them out).
pub fn rank_holdout(
    bundle: &ModelBundle,
    cases: &[HoldoutCase],
) -> Result<RankingMetrics, OfflineError> {
    let known: Vec<EvalCase> = cases
        .iter()
        .filter_map(|case| {
            Some(EvalCase {
                target: i64::from(bundle.id_map.index(&case.target)?),
                context: case
                    .context
                    .iter()
                    .filter_map(|item| bundle.id_map.index(item).map(i64::from))
                    .collect(),
            })
        })
        .collect();
    if known.is_empty() {
        return Ok(with_misses(RankingMetrics::default(), cases.len()));
    }
    let metrics = evaluate_encoder(
        bundle.encoder.as_ref(),
        &bundle.item_vectors,
        &known,
        bundle.config.max_len as usize,
        SeenItems::Ranked,
    )?;
    Ok(with_misses(metrics, cases.len()))
}

/// Ranks items by how often they were interacted with before `holdout_from_s` (ties by item id);
/// a target never seen before is a miss.
pub fn rank_by_popularity(
    interactions: &[Interaction],
    holdout_from_s: i64,
    cases: &[HoldoutCase],
) -> RankingMetrics {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for interaction in interactions
        .iter()
        .filter(|interaction| interaction.timestamp < holdout_from_s)
    {
        *counts.entry(interaction.item_id.as_str()).or_default() += 1;
    }
    let mut accumulator = RankingAccumulator::default();
    for case in cases {
        let Some(&target_count) = counts.get(case.target.as_str()) else {
            accumulator.add_miss();
            continue;
        };
        let ahead = counts
            .iter()
            .filter(|&(&item, &count)| {
                count > target_count || (count == target_count && item < case.target.as_str())
            })
            .count();
        accumulator.add_rank(ahead as u64 + 1);
    }
    accumulator.finish()
}

/// `metrics` over its users, averaged over `total` users where the rest scored nothing.
fn with_misses(metrics: RankingMetrics, total: usize) -> RankingMetrics {
    if total == 0 {
        return metrics;
    }
    let share = metrics.users as f64 / total as f64;
    RankingMetrics {
        recall_at_10: metrics.recall_at_10 * share,
        recall_at_20: metrics.recall_at_20 * share,
        ndcg_at_10: metrics.ndcg_at_10 * share,
        ndcg_at_20: metrics.ndcg_at_20 * share,
        mrr_at_10: metrics.mrr_at_10 * share,
        users: total,
    }
}

/// Ranks champion and challenger on the holdout of `interactions` from `holdout_from_s`.
pub fn gate(
    champion_dir: &Path,
    challenger_dir: &Path,
    interactions: &[Interaction],
    holdout_from_s: i64,
    tolerance: f64,
) -> Result<GateReport, OfflineError> {
    let cases = holdout_cases(interactions, holdout_from_s);
    if cases.is_empty() {
        return Err(OfflineError::NothingToEvaluate(format!(
            "holdout from {holdout_from_s} s"
        )));
    }
    let champion = rank_holdout(&ModelBundle::load(champion_dir)?, &cases)?;
    let challenger = rank_holdout(&ModelBundle::load(challenger_dir)?, &cases)?;
    Ok(GateReport {
        cases: cases.len(),
        popularity: rank_by_popularity(interactions, holdout_from_s, &cases),
        passed: challenger.ndcg_at_10 >= champion.ndcg_at_10 - tolerance,
        champion,
        challenger,
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interaction(user: &str, item: &str, timestamp: i64) -> Interaction {
        Interaction {
            user_id: user.into(),
            item_id: item.into(),
            rating: None,
            timestamp,
        }
    }

    #[test]
    fn the_holdout_is_every_event_after_the_cut_with_what_came_before() {
        let interactions = [
            interaction("u1", "a", 1),
            interaction("u2", "x", 12),
            interaction("u1", "b", 2),
            interaction("u1", "c", 10),
            interaction("u1", "d", 11),
            interaction("u3", "z", 3),
            interaction("u2", "y", 13),
        ];
        let cases = holdout_cases(&interactions, 10);
        let case = |context: &[&str], target: &str| HoldoutCase {
            context: context.iter().map(|item| item.to_string()).collect(),
            target: target.into(),
        };
        assert_eq!(
            cases,
            [
                case(&["a", "b"], "c"),
                case(&["a", "b", "c"], "d"),
                case(&["x"], "y"),
            ],
            "u2's first event has no context, u3 has nothing after the cut"
        );
    }

    #[test]
    fn popularity_ranks_by_earlier_counts_and_misses_new_items() {
        let interactions = [
            interaction("u1", "a", 1),
            interaction("u2", "a", 2),
            interaction("u2", "b", 3),
            interaction("u3", "c", 4),
            interaction("u1", "new", 20),
        ];
        let case = |target: &str| HoldoutCase {
            context: vec!["a".into()],
            target: target.into(),
        };
        // a (2) first; b and c (1 each) by id: b second, c third.
        let first = rank_by_popularity(&interactions, 10, &[case("a")]);
        assert!((first.ndcg_at_10 - 1.0).abs() < 1e-12);
        let third = rank_by_popularity(&interactions, 10, &[case("c")]);
        assert!((third.ndcg_at_10 - 0.5).abs() < 1e-12, "{third:?}");
        let unseen = rank_by_popularity(&interactions, 10, &[case("new")]);
        assert_eq!((unseen.ndcg_at_10, unseen.users), (0.0, 1));
    }

    #[test]
    fn misses_count_as_zero_over_every_case() {
        let metrics = RankingMetrics {
            ndcg_at_10: 0.4,
            recall_at_10: 0.5,
            users: 3,
            ..RankingMetrics::default()
        };
        let spread = with_misses(metrics, 4);
        assert!((spread.ndcg_at_10 - 0.3).abs() < 1e-12);
        assert!((spread.recall_at_10 - 0.375).abs() < 1e-12);
        assert_eq!(spread.users, 4);
    }
}
