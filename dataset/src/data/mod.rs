//! Interaction data sets: the typed records, per-user time-ordered sequences, and the loaders.

mod atomic_files;
pub mod synthetic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use atomic_files::{load_atomic_files, write_atomic_files};

/// One user-item interaction as read from a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub user_id: String,
    pub item_id: String,
    /// Explicit rating when the data set has one (MovieLens: 1..=5).
    pub rating: Option<f32>,
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
}

/// What the catalogue knows about an item; becomes the payload of the vector index.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemMetadata {
    pub item_id: String,
    pub title: String,
    pub year: Option<i32>,
    pub genres: Vec<String>,
}

/// A whole data set in memory: every interaction in file order and the item catalogue.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub interactions: Vec<Interaction>,
    pub items: Vec<ItemMetadata>,
}

/// One user's interactions as item ids, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSequence {
    pub user_id: String,
    pub item_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("data set '{name}' not found: expected {path} (run `scripts/setup.sh` for ml-100k or `recsys synth` for synthetic data)")]
    NotFound { name: String, path: PathBuf },
}

impl Dataset {
    /// Loads `<data_dir>/datasets/<name>/<name>.{inter,item}`.
    pub fn load(data_dir: &Path, name: &str) -> Result<Dataset, DataError> {
        let dir = dataset_dir(data_dir, name);
        let inter_path = dir.join(format!("{name}.inter"));
        if !inter_path.exists() {
            return Err(DataError::NotFound {
                name: name.to_owned(),
                path: inter_path,
            });
        }
        load_atomic_files(&dir, name)
    }

    /// Per-user sequences ordered by time; interactions with equal timestamps keep file order.
    /// Users appear in order of their first interaction in the file.
    pub fn user_sequences(&self) -> Vec<UserSequence> {
        user_sequences(&self.interactions)
    }
}

/// Written next to a data set made from the event archive: the span of events it holds
/// (`archive::DataWindow`), copied into the `metrics.json` of bundles trained on it.
pub const WINDOW_FILE: &str = "window.json";

pub fn dataset_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("datasets").join(name)
}

pub fn user_sequences(interactions: &[Interaction]) -> Vec<UserSequence> {
    let mut user_slot: HashMap<&str, usize> = HashMap::new();
    let mut per_user: Vec<(&str, Vec<(i64, &str)>)> = Vec::new();
    for interaction in interactions {
        let slot = *user_slot
            .entry(interaction.user_id.as_str())
            .or_insert_with(|| {
                per_user.push((interaction.user_id.as_str(), Vec::new()));
                per_user.len() - 1
            });
        per_user[slot]
            .1
            .push((interaction.timestamp, interaction.item_id.as_str()));
    }
    per_user
        .into_iter()
        .map(|(user_id, mut events)| {
            // `sort_by_key` is stable: equal timestamps keep their order in the file.
            events.sort_by_key(|(timestamp, _)| *timestamp);
            UserSequence {
                user_id: user_id.to_owned(),
                item_ids: events
                    .into_iter()
                    .map(|(_, item)| item.to_owned())
                    .collect(),
            }
        })
        .collect()
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
    fn sequences_are_time_ordered_and_stable_on_equal_timestamps() {
        let interactions = vec![
            interaction("u1", "c", 30),
            interaction("u2", "x", 5),
            interaction("u1", "a", 10),
            interaction("u1", "b1", 20),
            interaction("u1", "b2", 20),
            interaction("u1", "b0", 20),
        ];
        let sequences = user_sequences(&interactions);
        assert_eq!(sequences.len(), 2);
        assert_eq!(sequences[0].user_id, "u1");
        assert_eq!(sequences[0].item_ids, ["a", "b1", "b2", "b0", "c"]);
        assert_eq!(sequences[1].item_ids, ["x"]);
    }
}
