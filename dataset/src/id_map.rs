//! Raw item id ↔ dense model index. Index 0 is the padding item; real items are 1..=len.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    /// `raw_ids[index - 1]` is the raw id of model index `index`.
    raw_ids: Vec<String>,
    index_of: HashMap<String, u32>,
}

/// The index no real item has; sequences are left-padded with it.
pub const PADDING_INDEX: u32 = 0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdMapError {
    #[error("item id '{0}' appears twice")]
    Duplicate(String),
    #[error("empty item id at position {0}")]
    Empty(usize),
}

impl IdMap {
    /// Builds the map from raw ids in index order (the first id gets index 1).
    pub fn from_raw_ids(raw_ids: Vec<String>) -> Result<IdMap, IdMapError> {
        let mut index_of = HashMap::with_capacity(raw_ids.len());
        for (position, raw_id) in raw_ids.iter().enumerate() {
            if raw_id.is_empty() {
                return Err(IdMapError::Empty(position));
            }
            if index_of
                .insert(raw_id.clone(), position as u32 + 1)
                .is_some()
            {
                return Err(IdMapError::Duplicate(raw_id.clone()));
            }
        }
        Ok(IdMap { raw_ids, index_of })
    }

    pub fn index(&self, raw_id: &str) -> Option<u32> {
        self.index_of.get(raw_id).copied()
    }

    pub fn raw_id(&self, index: u32) -> Option<&str> {
        let position = (index as usize).checked_sub(1)?;
        self.raw_ids.get(position).map(String::as_str)
    }

    /// Number of real items (the padding index is not counted).
    pub fn len(&self) -> usize {
        self.raw_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw_ids.is_empty()
    }

    pub fn raw_ids(&self) -> &[String] {
        &self.raw_ids
    }
}

/// Appends the candidates that got no score (unknown to the model) to `unknown_items`, once each.
pub fn add_unknown_candidates(
    candidates: &[String],
    scores: &[Option<f32>],
    unknown_items: &mut Vec<String>,
) {
    for (candidate, score) in candidates.iter().zip(scores) {
        if score.is_none() && !unknown_items.contains(candidate) {
            unknown_items.push(candidate.clone());
        }
    }
}

/// Appends `items` to `unknown_items`, each once (rows of one request share one list).
pub fn add_unknown_items(items: Vec<String>, unknown_items: &mut Vec<String>) {
    for item in items {
        if !unknown_items.contains(&item) {
            unknown_items.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_start_at_one_and_round_trip() {
        let map = IdMap::from_raw_ids(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map.index("a"), Some(1));
        assert_eq!(map.index("c"), Some(3));
        assert_eq!(map.index("zzz"), None);
        assert_eq!(map.raw_id(PADDING_INDEX), None);
        assert_eq!(map.raw_id(2), Some("b"));
        assert_eq!(map.raw_id(4), None);
        for raw in ["a", "b", "c"] {
            assert_eq!(map.raw_id(map.index(raw).unwrap()), Some(raw));
        }
    }

    #[test]
    fn duplicates_and_empty_ids_are_rejected() {
        let duplicate = IdMap::from_raw_ids(vec!["a".into(), "b".into(), "a".into()]);
        assert_eq!(duplicate.unwrap_err(), IdMapError::Duplicate("a".into()));
        let empty = IdMap::from_raw_ids(vec!["a".into(), String::new()]);
        assert_eq!(empty.unwrap_err(), IdMapError::Empty(1));
    }
}
