//! The item vector index, behind one trait with two backends chosen by URL: Qdrant Edge embedded in
//! the data dir (`embedded`), or a Qdrant server through `qdrant-client` (`http://host:6334`).
//!
//! Points are items: id = the model index of the item, vector = its embedding (dot product, as the
//! bundle scores), payload = `item_id`, title, year, genres, popularity. The API reads an alias;
//! `recsys index` builds a new versioned collection and moves the alias only once it is complete.

mod embedded;
mod private_copy;
mod remote;

use std::path::Path;
use std::sync::Arc;

pub use embedded::EmbeddedIndex;
pub use remote::RemoteIndex;

pub type Payload = serde_json::Map<String, serde_json::Value>;

/// One item to index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexPoint {
    pub point_id: u64,
    pub item_id: String,
    pub vector: Vec<f32>,
    /// Metadata returned with search results; `item_id` is added by the index.
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoredItem {
    pub item_id: String,
    pub score: f32,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexedItem {
    pub item_id: String,
    pub payload: Payload,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index cannot answer now; retrying later may succeed.
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    /// Nothing is served under the alias yet.
    #[error("no index '{alias}' at {location}: run `recsys index` first")]
    Missing { alias: String, location: String },
    #[error("invalid index request: {0}")]
    Invalid(String),
    #[error("invalid index URL '{url}': {problem}")]
    InvalidUrl { url: String, problem: String },
}

#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    /// The versioned collection the alias pointed to when this handle was opened.
    fn version(&self) -> &str;
    /// The bundle (model version) whose item vectors this index holds.
    fn bundle_version(&self) -> Option<&str> {
        bundle_of_index_version(self.version())
    }
    /// The `count` best items by dot product with `query`, skipping `exclude` inside the search.
    async fn search(
        &self,
        query: &[f32],
        count: usize,
        exclude: &[&str],
    ) -> Result<Vec<ScoredItem>, IndexError>;
    /// Payloads of the given items, in request order; unknown ids are left out.
    async fn items(&self, item_ids: &[String]) -> Result<Vec<IndexedItem>, IndexError>;
    /// Every item with its payload, in no particular order (title search is built from it).
    async fn all_items(&self) -> Result<Vec<IndexedItem>, IndexError>;
    /// The vector stored for an item (`None` for an item the index does not hold), for
    /// item-to-item similarity.
    async fn item_vector(&self, item_id: &str) -> Result<Option<Vec<f32>>, IndexError>;
    async fn ping(&self) -> Result<(), IndexError>;
}

/// An index version names the bundle it was built for: `<model version>-<unix seconds>`, so a
/// server can tell whether its model and its index belong together.
pub fn index_version(model_version: &str, built_at: u64) -> String {
    format!("{model_version}-{built_at}")
}

/// The model version an index version was built for; `None` for a name `index_version` did not
/// make (then no pairing can be checked, and none is assumed).
pub fn bundle_of_index_version(index_version: &str) -> Option<&str> {
    let (bundle, built_at) = index_version.rsplit_once('-')?;
    let is_time = !built_at.is_empty() && built_at.bytes().all(|byte| byte.is_ascii_digit());
    (is_time && !bundle.is_empty()).then_some(bundle)
}

/// Opens the index served under `alias`.
pub async fn open_index(
    url: &str,
    alias: &str,
    data_dir: &Path,
) -> Result<Arc<dyn VectorIndex>, IndexError> {
    if url == "embedded" || url.starts_with("embedded://") {
        return Ok(Arc::new(
            EmbeddedIndex::open(&data_dir.join("index"), alias).await?,
        ));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Arc::new(RemoteIndex::open(url, alias).await?));
    }
    Err(IndexError::InvalidUrl {
        url: url.to_owned(),
        problem: "expected embedded, http:// or https://".into(),
    })
}

/// Points `alias` at the newest index version built for `model_version` that still exists (a
/// rollback's index); returns it, or `None` when there is none and one must be built.
pub async fn serve_existing_index(
    url: &str,
    alias: &str,
    data_dir: &Path,
    model_version: &str,
) -> Result<Option<String>, IndexError> {
    if url == "embedded" || url.starts_with("embedded://") {
        return embedded::serve_existing(&data_dir.join("index"), alias, model_version);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return RemoteIndex::serve_existing(url, alias, model_version).await;
    }
    Err(IndexError::InvalidUrl {
        url: url.to_owned(),
        problem: "expected embedded, http:// or https://".into(),
    })
}

/// Deletes the index versions under `alias` built for none of `keep_bundles` (the alias's own
/// is always kept); returns what it deleted. Every promotion builds one, so without this they
/// pile up (one per retrain, each the size of the catalogue's vectors).
pub async fn prune_index_versions(
    url: &str,
    alias: &str,
    data_dir: &Path,
    keep_bundles: &[&str],
) -> Result<Vec<String>, IndexError> {
    if url == "embedded" || url.starts_with("embedded://") {
        let root = data_dir.join("index");
        let (alias, keep): (String, Vec<String>) = (
            alias.to_owned(),
            keep_bundles
                .iter()
                .map(|bundle| bundle.to_string())
                .collect(),
        );
        return tokio::task::spawn_blocking(move || {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            embedded::prune(&root, &alias, &keep)
        })
        .await
        .map_err(|error| IndexError::Unavailable(error.to_string()))?;
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return RemoteIndex::prune(url, alias, keep_bundles).await;
    }
    Err(IndexError::InvalidUrl {
        url: url.to_owned(),
        problem: "expected embedded, http:// or https://".into(),
    })
}

/// Whether index version `version` may go: a name `index_version` made (others are not ours),
/// not the served one, built for none of `keep_bundles`.
fn is_prunable(version: &str, served: &str, keep_bundles: &[&str]) -> bool {
    version != served
        && bundle_of_index_version(version).is_some_and(|bundle| !keep_bundles.contains(&bundle))
}

/// Of index versions, the newest built for `model_version`.
pub(crate) fn newest_version_for<'a>(
    versions: impl Iterator<Item = &'a str>,
    model_version: &str,
) -> Option<&'a str> {
    versions
        .filter(|version| bundle_of_index_version(version) == Some(model_version))
        .max_by_key(|version| {
            version
                .rsplit_once('-')
                .and_then(|(_, built_at)| built_at.parse::<u64>().ok())
        })
}

/// Builds collection `<alias>-<version>` from `points`, then points `alias` at it. The alias moves
/// only after every point is written, so readers see the old index or the new one, never a part.
pub async fn build_index(
    url: &str,
    alias: &str,
    version: &str,
    dim: usize,
    points: Vec<IndexPoint>,
    data_dir: &Path,
) -> Result<String, IndexError> {
    if url == "embedded" || url.starts_with("embedded://") {
        return EmbeddedIndex::build(&data_dir.join("index"), alias, version, dim, points).await;
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return RemoteIndex::build(url, alias, version, dim, points).await;
    }
    Err(IndexError::InvalidUrl {
        url: url.to_owned(),
        problem: "expected embedded, http:// or https://".into(),
    })
}

pub(crate) fn payload_with_item_id(point: &IndexPoint) -> Payload {
    let mut payload = point.payload.clone();
    payload.insert(
        "item_id".into(),
        serde_json::Value::String(point.item_id.clone()),
    );
    payload
}

pub(crate) fn item_id_of(payload: &Payload) -> Option<String> {
    payload.get("item_id")?.as_str().map(str::to_owned)
}

/// A search hit, if its payload names the item (every point written by `build_index` does).
pub(crate) fn scored_item(payload: Payload, score: f32) -> Option<ScoredItem> {
    Some(ScoredItem {
        item_id: item_id_of(&payload)?,
        score,
        payload,
    })
}

pub(crate) fn indexed_item(payload: Payload) -> Option<IndexedItem> {
    Some(IndexedItem {
        item_id: item_id_of(&payload)?,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_version_names_its_bundle() {
        let version = index_version("gru-ml-100k-1764930000", 1764931234);
        assert_eq!(version, "gru-ml-100k-1764930000-1764931234");
        assert_eq!(
            bundle_of_index_version(&version),
            Some("gru-ml-100k-1764930000")
        );
        assert_eq!(bundle_of_index_version("hand-made"), None);
        assert_eq!(bundle_of_index_version("plain"), None);
        assert_eq!(bundle_of_index_version("-17"), None);
    }
}
