//! Leave-one-out by time: per user, the last interaction is the test target, the one before it the
//! validation target, everything earlier is training data.

use crate::data::UserSequence;
use crate::id_map::IdMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSplit {
    pub user_id: String,
    /// Model indices, oldest first.
    pub train: Vec<u32>,
    pub valid: Option<u32>,
    pub test: Option<u32>,
}

impl UserSplit {
    /// What the model sees when predicting the test target: training items then the validation item.
    pub fn test_context(&self) -> Vec<u32> {
        let mut context = self.train.clone();
        context.extend(self.valid);
        context
    }
}

/// Splits every sequence. Users with fewer than three interactions keep everything for training
/// and are not evaluated. Items the map does not know are skipped (the map is built from the
/// catalogue, which covers every interacted item, so this does not happen for loaded data sets).
pub fn leave_one_out(sequences: &[UserSequence], id_map: &IdMap) -> Vec<UserSplit> {
    sequences
        .iter()
        .map(|sequence| {
            let mut items: Vec<u32> = sequence
                .item_ids
                .iter()
                .filter_map(|raw_id| id_map.index(raw_id))
                .collect();
            if items.len() < 3 {
                return UserSplit {
                    user_id: sequence.user_id.clone(),
                    train: items,
                    valid: None,
                    test: None,
                };
            }
            let test = items.pop();
            let valid = items.pop();
            UserSplit {
                user_id: sequence.user_id.clone(),
                train: items,
                valid,
                test,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_is_test_second_last_is_valid() {
        let id_map = IdMap::from_raw_ids(["a", "b", "c", "d"].map(String::from).to_vec()).unwrap();
        let sequences = vec![
            UserSequence {
                user_id: "long".into(),
                item_ids: ["a", "b", "c", "d", "a"].map(String::from).to_vec(),
            },
            UserSequence {
                user_id: "short".into(),
                item_ids: ["c", "d"].map(String::from).to_vec(),
            },
            UserSequence {
                user_id: "three".into(),
                item_ids: ["d", "c", "b"].map(String::from).to_vec(),
            },
        ];
        let splits = leave_one_out(&sequences, &id_map);
        assert_eq!(splits[0].train, [1, 2, 3]);
        assert_eq!(splits[0].valid, Some(4));
        assert_eq!(splits[0].test, Some(1));
        assert_eq!(splits[0].test_context(), [1, 2, 3, 4]);
        assert_eq!(splits[1].train, [3, 4]);
        assert_eq!((splits[1].valid, splits[1].test), (None, None));
        assert_eq!(splits[2].train, [4]);
        assert_eq!((splits[2].valid, splits[2].test), (Some(3), Some(2)));
    }
}
