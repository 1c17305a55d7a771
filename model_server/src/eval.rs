//! Offline evaluation under the leave-one-out protocol: rank ALL items for each user's held-out
//! target (only the padding index is excluded, nothing the user has seen is masked).

use tch::{Kind, Tensor};

use crate::encoder::SequenceEncoder;
use crate::model::left_padded_batch;
use dataset::ranking_metrics::{RankingAccumulator, RankingMetrics};
use dataset::split::UserSplit;

/// One held-out prediction: what the model reads, and the model index it should rank high.
#[derive(Debug, Clone)]
pub struct EvalCase {
    pub context: Vec<i64>,
    pub target: i64,
}

/// Validation: the training items predict the validation item.
pub fn validation_cases(splits: &[UserSplit]) -> Vec<EvalCase> {
    splits
        .iter()
        .filter_map(|split| {
            Some(EvalCase {
                context: split.train.iter().map(|&index| index as i64).collect(),
                target: split.valid? as i64,
            })
        })
        .collect()
}

/// Test: training items plus the validation item predict the test item.
pub fn test_cases(splits: &[UserSplit]) -> Vec<EvalCase> {
    splits
        .iter()
        .filter_map(|split| {
            Some(EvalCase {
                context: split
                    .test_context()
                    .iter()
                    .map(|&index| index as i64)
                    .collect(),
                target: split.test? as i64,
            })
        })
        .collect()
}

const EVAL_BATCH_SIZE: usize = 256;

/// What happens to the items a user has already interacted with (the case's whole context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenItems {
    /// Ranked like every other item: the protocol's numbers.
    Ranked,
    /// Left out of the ranking, as serving drops them; a target the user had already seen is a
    /// miss.
    Masked,
}

/// Ranks every item by dot product with the encoder's query. `item_vectors` is `[num_items, dim]`,
/// row `i` holding model index `i + 1`. Rank = 1 + items scored higher + items scored equal with a
/// lower index: ties break by index, as a stable sort over the catalogue would. (With this rule the
/// popularity baseline gives NDCG@10 = 0.0224 on ml-100k, the reference number of the protocol.)
pub fn evaluate_encoder(
    encoder: &dyn SequenceEncoder,
    item_vectors: &Tensor,
    cases: &[EvalCase],
    max_len: usize,
    seen: SeenItems,
) -> Result<RankingMetrics, tch::TchError> {
    let mut accumulator = RankingAccumulator::default();
    for chunk in cases.chunks(EVAL_BATCH_SIZE) {
        let contexts: Vec<&[i64]> = chunk.iter().map(|case| case.context.as_slice()).collect();
        let queries = encoder.encode(&left_padded_batch(&contexts, max_len))?;
        let targets: Vec<i64> = chunk.iter().map(|case| case.target - 1).collect();
        let ranks = tch::no_grad(|| {
            let mut scores = queries.matmul(&item_vectors.tr());
            if seen == SeenItems::Masked {
                let (rows, columns): (Vec<i64>, Vec<i64>) = chunk
                    .iter()
                    .enumerate()
                    .flat_map(|(row, case)| {
                        case.context
                            .iter()
                            .map(move |&index| (row as i64, index - 1))
                    })
                    .unzip();
                let _ = scores.index_put_(
                    &[
                        Some(Tensor::from_slice(&rows)),
                        Some(Tensor::from_slice(&columns)),
                    ],
                    &Tensor::from(f32::NEG_INFINITY),
                    false,
                );
            }
            let target_columns = Tensor::from_slice(&targets).unsqueeze(1);
            let target_scores = scores.gather(1, &target_columns, false);
            let columns =
                Tensor::arange(scores.size()[1], (Kind::Int64, scores.device())).unsqueeze(0);
            let ahead = scores.gt_tensor(&target_scores).logical_or(
                &scores
                    .eq_tensor(&target_scores)
                    .logical_and(&columns.lt_tensor(&target_columns)),
            );
            ahead.sum_dim_intlist(1, false, Kind::Int64) + 1
        });
        for (case, rank) in chunk.iter().zip(Vec::<i64>::try_from(ranks)?) {
            if seen == SeenItems::Masked && case.context.contains(&case.target) {
                accumulator.add_miss();
            } else {
                accumulator.add_rank(rank as u64);
            }
        }
    }
    Ok(accumulator.finish())
}

/// Interaction counts per item in the training parts of the splits, indexed by `model index - 1`.
pub fn popularity_counts(splits: &[UserSplit], num_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; num_items];
    for split in splits {
        for &index in &split.train {
            counts[index as usize - 1] += 1;
        }
    }
    counts
}

/// The popularity baseline: every user gets the same ranking, by training count, ties broken by
/// index as for the model.
pub fn evaluate_popularity(counts: &[u64], cases: &[EvalCase]) -> RankingMetrics {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&left, &right| counts[right].cmp(&counts[left]).then(left.cmp(&right)));
    let mut rank_of_column = vec![0u64; counts.len()];
    for (position, column) in order.into_iter().enumerate() {
        rank_of_column[column] = position as u64 + 1;
    }
    let mut accumulator = RankingAccumulator::default();
    for case in cases {
        accumulator.add_rank(rank_of_column[case.target as usize - 1]);
    }
    accumulator.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedQuery(Tensor);

    impl SequenceEncoder for FixedQuery {
        fn encode(&self, item_indices: &Tensor) -> Result<Tensor, tch::TchError> {
            Ok(self.0.expand([item_indices.size()[0], -1], false))
        }
    }

    #[test]
    fn ranks_all_items_and_counts_strictly_higher_scores() {
        // Query [1, 0] scores items by their first coordinate: 3.0, 1.0, 2.0, 2.0 for indices 1..=4.
        let items = Tensor::from_slice(&[3.0f32, 0.0, 1.0, 0.0, 2.0, 0.0, 2.0, 0.0]).view([4, 2]);
        let encoder = FixedQuery(Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]));
        let case = |target| EvalCase {
            context: vec![1, 2],
            target,
        };
        // Ranks: index 1 -> 1; index 3 -> 2 and index 4 -> 3 (a tie, broken by index); index 2 -> 4.
        let cases = [case(1), case(3), case(4), case(2)];
        let metrics = evaluate_encoder(&encoder, &items, &cases, 50, SeenItems::Ranked).unwrap();
        assert_eq!(metrics.users, 4);
        let expected_ndcg = (1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2() + 1.0 / 5f64.log2()) / 4.0;
        assert!((metrics.ndcg_at_10 - expected_ndcg).abs() < 1e-9);
        let expected_mrr = (1.0 + 1.0 / 2.0 + 1.0 / 3.0 + 1.0 / 4.0) / 4.0;
        assert!((metrics.mrr_at_10 - expected_mrr).abs() < 1e-9);
    }

    #[test]
    fn masking_seen_items_moves_the_others_up_and_makes_a_seen_target_a_miss() {
        // Scores 3.0, 1.0, 2.0, 2.0 for indices 1..=4, as above; the user has seen items 1 and 3.
        let items = Tensor::from_slice(&[3.0f32, 0.0, 1.0, 0.0, 2.0, 0.0, 2.0, 0.0]).view([4, 2]);
        let encoder = FixedQuery(Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]));
        let case = |target| EvalCase {
            context: vec![1, 3],
            target,
        };
        let masked =
            evaluate_encoder(&encoder, &items, &[case(4), case(2)], 50, SeenItems::Masked).unwrap();
        // Index 4 is first once 1 and 3 are gone, index 2 second.
        assert!(
            (masked.mrr_at_10 - (1.0 + 1.0 / 2.0) / 2.0).abs() < 1e-9,
            "{masked:?}"
        );
        let seen_target =
            evaluate_encoder(&encoder, &items, &[case(1)], 50, SeenItems::Masked).unwrap();
        assert_eq!(seen_target.recall_at_10, 0.0);
    }

    #[test]
    fn popularity_ranks_by_training_counts() {
        let counts = [5, 0, 9, 5];
        let cases = [
            EvalCase {
                context: vec![],
                target: 3,
            },
            EvalCase {
                context: vec![],
                target: 4,
            },
            EvalCase {
                context: vec![],
                target: 2,
            },
        ];
        let metrics = evaluate_popularity(&counts, &cases);
        // Ranks 1, 3 (a tie with index 1, which comes first), 4.
        let expected_ndcg = (1.0 + 1.0 / 4f64.log2() + 1.0 / 5f64.log2()) / 3.0;
        assert!((metrics.ndcg_at_10 - expected_ndcg).abs() < 1e-9);
    }

    #[test]
    fn cases_come_from_the_split() {
        let splits = [UserSplit {
            user_id: "u".into(),
            train: vec![1, 2],
            valid: Some(3),
            test: Some(4),
        }];
        let valid = validation_cases(&splits);
        assert_eq!((valid[0].context.clone(), valid[0].target), (vec![1, 2], 3));
        let test = test_cases(&splits);
        assert_eq!(
            (test[0].context.clone(), test[0].target),
            (vec![1, 2, 3], 4)
        );
        assert_eq!(popularity_counts(&splits, 4), [1, 1, 0, 0]);
    }
}
