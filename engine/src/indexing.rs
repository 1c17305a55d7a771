//! What `recsys index` does: turn a bundle's item embeddings and the data set's item metadata into
//! index points, build a new versioned collection and move the alias to it.

use std::collections::HashMap;
use std::path::Path;

use dataset::bundle::BundleManifest;
use dataset::ItemMetadata;

use crate::index::{build_index, index_version, IndexError, IndexPoint, Payload};

/// One point per item of the bundle: id = model index, vector = its embedding, payload = metadata
/// (when the catalogue has it) and the training popularity count.
pub fn index_points(
    bundle: &BundleManifest,
    vectors: &[f32],
    catalogue: &[ItemMetadata],
    popularity: &HashMap<String, f64>,
) -> Vec<IndexPoint> {
    let metadata: HashMap<&str, &ItemMetadata> = catalogue
        .iter()
        .map(|item| (item.item_id.as_str(), item))
        .collect();
    let dim = bundle.config.embedding_dim as usize;
    bundle
        .id_map
        .raw_ids()
        .iter()
        .enumerate()
        .map(|(row, item_id)| {
            let mut payload = Payload::new();
            match metadata.get(item_id.as_str()) {
                Some(item) => {
                    payload.insert("title".into(), item.title.clone().into());
                    if let Some(year) = item.year {
                        payload.insert("year".into(), year.into());
                    }
                    payload.insert("genres".into(), item.genres.clone().into());
                }
                None => {
                    payload.insert("title".into(), item_id.clone().into());
                }
            }
            payload.insert(
                "popularity".into(),
                popularity.get(item_id).copied().unwrap_or(0.0).into(),
            );
            IndexPoint {
                point_id: row as u64 + 1,
                item_id: item_id.clone(),
                vector: vectors[row * dim..(row + 1) * dim].to_vec(),
                payload,
            }
        })
        .collect()
}

/// Builds `<alias>` version `<bundle version>-<unix seconds>` from the bundle; returns the version.
pub async fn index_bundle(
    url: &str,
    alias: &str,
    data_dir: &Path,
    bundle: &BundleManifest,
    item_vectors: &[f32],
    catalogue: &[ItemMetadata],
    popularity: &HashMap<String, f64>,
) -> Result<String, IndexError> {
    let built_at = common::clock::now_seconds();
    let version = index_version(&bundle.config.model_version, built_at);
    let points = index_points(bundle, item_vectors, catalogue, popularity);
    build_index(
        url,
        alias,
        &version,
        bundle.config.embedding_dim as usize,
        points,
        data_dir,
    )
    .await
}
