//! Item attributes as side features for training: each genre and each release period gets an
//! embedding, and an item's representation is its own embedding plus those of its attributes.
//! Items that share attributes then share part of their vector, which helps the many items with
//! few interactions.
//!
//! Serving never sees the attributes: a bundle stores the summed representation as the item
//! table (`SequenceModel::serving_weights`), so the served model scores exactly as trained.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use dataset::data::ItemMetadata;
use dataset::id_map::IdMap;

/// Which attributes of the catalogue feed the item representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemFeatureSet {
    /// The item's own embedding only.
    #[default]
    None,
    Genres,
    /// Genres and the release period (five-year buckets).
    GenresYear,
}

impl std::str::FromStr for ItemFeatureSet {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(ItemFeatureSet::None),
            "genres" => Ok(ItemFeatureSet::Genres),
            "genres-year" => Ok(ItemFeatureSet::GenresYear),
            other => Err(format!(
                "unknown item features '{other}', expected none, genres or genres-year"
            )),
        }
    }
}

/// Release years in buckets of this many years: enough items per bucket to learn from.
const YEAR_BUCKET: i32 = 5;

/// Attribute indices per model index: `[num_items + 1, width]`, 0 where an item has fewer
/// attributes than `width` (and for the padding row), so index 0 of the attribute table is padding.
pub struct ItemFeatures {
    pub indices: Tensor,
    /// Distinct attributes, not counting the padding index.
    pub vocabulary_size: i64,
}

impl ItemFeatures {
    /// `None` for `ItemFeatureSet::None` or a catalogue without any of the chosen attributes.
    pub fn build(
        set: ItemFeatureSet,
        items: &[ItemMetadata],
        id_map: &IdMap,
    ) -> Option<ItemFeatures> {
        if set == ItemFeatureSet::None {
            return None;
        }
        let mut vocabulary: BTreeMap<String, i64> = BTreeMap::new();
        let mut per_item: Vec<Vec<i64>> = vec![Vec::new(); id_map.len() + 1];
        for item in items {
            let Some(index) = id_map.index(&item.item_id) else {
                continue;
            };
            let mut names: Vec<String> = item
                .genres
                .iter()
                .map(|genre| format!("genre:{genre}"))
                .collect();
            if set == ItemFeatureSet::GenresYear {
                if let Some(year) = item.year {
                    names.push(format!(
                        "years:{}",
                        year.div_euclid(YEAR_BUCKET) * YEAR_BUCKET
                    ));
                }
            }
            for name in names {
                let next = vocabulary.len() as i64 + 1;
                let feature = *vocabulary.entry(name).or_insert(next);
                if !per_item[index as usize].contains(&feature) {
                    per_item[index as usize].push(feature);
                }
            }
        }
        if vocabulary.is_empty() {
            return None;
        }
        let width = per_item.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = vec![0i64; per_item.len() * width];
        for (row, features) in per_item.iter().enumerate() {
            flat[row * width..row * width + features.len()].copy_from_slice(features);
        }
        Some(ItemFeatures {
            indices: Tensor::from_slice(&flat).view([per_item.len() as i64, width as i64]),
            vocabulary_size: vocabulary.len() as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, year: Option<i32>, genres: &[&str]) -> ItemMetadata {
        ItemMetadata {
            item_id: id.into(),
            title: id.into(),
            year,
            genres: genres.iter().map(|genre| genre.to_string()).collect(),
        }
    }

    #[test]
    fn items_sharing_attributes_share_indices_and_padding_stays_empty() {
        let items = [
            item("a", Some(1995), &["Comedy", "Drama"]),
            item("b", Some(1997), &["Comedy"]),
            item("c", None, &[]),
        ];
        let id_map = IdMap::from_raw_ids(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        let features = ItemFeatures::build(ItemFeatureSet::GenresYear, &items, &id_map).unwrap();
        // genre:Comedy, genre:Drama, years:1995.
        assert_eq!(features.vocabulary_size, 3);
        let rows: Vec<Vec<i64>> = (0..4)
            .map(|row| Vec::try_from(features.indices.get(row)).unwrap())
            .collect();
        assert_eq!(rows[0], [0, 0, 0], "padding row");
        assert_eq!(rows[1], [1, 2, 3]);
        assert_eq!(rows[2], [1, 3, 0], "same genre and five-year bucket as a");
        assert_eq!(rows[3], [0, 0, 0], "no attributes");
        assert!(ItemFeatures::build(ItemFeatureSet::None, &items, &id_map).is_none());
        let genres_only = ItemFeatures::build(ItemFeatureSet::Genres, &items, &id_map).unwrap();
        assert_eq!(genres_only.vocabulary_size, 2);
    }
}
