//! Qdrant Edge in the data dir: `index/<alias>/<version>/` holds one shard per built version and
//! `index/<alias>/CURRENT` names the served one (written to a temporary file and renamed, so it
//! switches atomically). A version is built under a `.partial` name and renamed when complete; an
//! interrupted build leaves only that partial directory, which is never served.
//!
//! Qdrant Edge is synchronous: a search (a fraction of a millisecond of CPU) runs right on the
//! runtime's worker (ARCHITECTURE.md, "Blocking work"); opening and building run on the blocking
//! pool. A shard directory can be open in one process at a time (Qdrant Edge locks its
//! write-ahead log): a second process on the same data dir serves a private copy of the version
//! (`private_copy.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::fs::write_pointer_file;
use qdrant_edge::{
    Condition, Distance, EdgeConfig, EdgeShard, EdgeVectorParams, Filter, HasIdCondition,
    NamedQuery, PointId, PointInsertOperations, PointOperations, PointStruct, PointStructPersisted,
    QueryEnum, QueryRequest, ScoringQuery, ScrollRequest, UpdateOperation, VectorInternal,
    VectorStructInternal, WithPayloadInterface, WithVector, DEFAULT_VECTOR_NAME,
};

use super::private_copy::PrivateCopy;

use super::{
    indexed_item, payload_with_item_id, IndexError, IndexPoint, IndexedItem, Payload, ScoredItem,
    VectorIndex,
};

const CURRENT_FILE: &str = "CURRENT";
const UPSERT_CHUNK: usize = 1024;

pub struct EmbeddedIndex {
    shard: Arc<EdgeShard>,
    version: String,
    catalog: Arc<Catalog>,
    /// The copy `shard` was opened from when another process holds the version (dropped after
    /// the shard, which is declared first).
    _private_copy: Option<PrivateCopy>,
}

/// Every item of the served version, in memory: versions never change once built, and reading
/// payloads from memory instead of the segment keeps them off the search's latency (and lets
/// lookups by id skip the shard entirely).
#[derive(Default)]
struct Catalog {
    point_of_item: foldhash::HashMap<String, u64>,
    item_of_point: foldhash::HashMap<u64, IndexedItem>,
}

fn unavailable(error: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(error.to_string())
}

fn point_number(id: PointId) -> Option<u64> {
    match id {
        PointId::NumId(number) => Some(number),
        PointId::Uuid(_) => None,
    }
}

/// The default dense vector of a retrieved point (the only kind `build` writes).
fn dense_vector(vector: VectorStructInternal) -> Option<Vec<f32>> {
    match vector {
        VectorStructInternal::Single(dense) => Some(dense),
        VectorStructInternal::Named(mut named) => match named.remove(DEFAULT_VECTOR_NAME)? {
            VectorInternal::Dense(dense) => Some(dense),
            _ => None,
        },
        VectorStructInternal::MultiDense(_) => None,
    }
}

fn payload_map(payload: Option<qdrant_edge::Payload>) -> Payload {
    payload.map(|payload| payload.0).unwrap_or_default()
}

impl EmbeddedIndex {
    pub async fn open(root: &Path, alias: &str) -> Result<EmbeddedIndex, IndexError> {
        let alias_dir = root.join(alias);
        let current_path = alias_dir.join(CURRENT_FILE);
        let version = match std::fs::read_to_string(&current_path) {
            Ok(text) => text.trim().to_owned(),
            Err(_) => {
                return Err(IndexError::Missing {
                    alias: alias.to_owned(),
                    location: alias_dir.display().to_string(),
                })
            }
        };
        let served_version = version.clone();
        let (shard, catalog, private_copy) = tokio::task::spawn_blocking(move || {
            let shard_dir = alias_dir.join(&served_version);
            let (shard, private_copy) = match EdgeShard::load(&shard_dir, None) {
                Ok(shard) => (shard, None),
                Err(error) => {
                    // Most likely open in another process; a copy serves the same answers. A
                    // copy that does not open either was not the problem: the first error is.
                    let failed = || unavailable(format!("{}: {error}", shard_dir.display()));
                    let copy =
                        PrivateCopy::make(&alias_dir, &served_version).map_err(|_| failed())?;
                    let shard = EdgeShard::load(copy.path(), None).map_err(|_| failed())?;
                    tracing::info!(
                        version = served_version,
                        copy = %copy.path().display(),
                        "the index version is open in another process; serving a private copy"
                    );
                    (shard, Some(copy))
                }
            };
            let catalog = read_catalog(&shard)?;
            Ok::<_, IndexError>((shard, catalog, private_copy))
        })
        .await
        .map_err(unavailable)??;
        Ok(EmbeddedIndex {
            shard: Arc::new(shard),
            version,
            catalog: Arc::new(catalog),
            _private_copy: private_copy,
        })
    }

    pub async fn build(
        root: &Path,
        alias: &str,
        version: &str,
        dim: usize,
        points: Vec<IndexPoint>,
    ) -> Result<String, IndexError> {
        let alias_dir = root.join(alias);
        let version = version.to_owned();
        tokio::task::spawn_blocking(move || build_blocking(&alias_dir, &version, dim, &points))
            .await
            .map_err(unavailable)?
    }

    fn point_ids(&self, item_ids: &[&str]) -> Vec<PointId> {
        item_ids
            .iter()
            .filter_map(|&item_id| self.catalog.point_of_item.get(item_id))
            .map(|&number| PointId::NumId(number))
            .collect()
    }
}

fn read_catalog(shard: &EdgeShard) -> Result<Catalog, IndexError> {
    let mut catalog = Catalog::default();
    let mut offset = None;
    loop {
        let (records, next) = shard
            .scroll(ScrollRequest {
                offset,
                limit: Some(10_000),
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(false),
                ..ScrollRequest::default()
            })
            .map_err(unavailable)?;
        for record in records {
            let number = point_number(record.id);
            if let (Some(item), Some(number)) = (indexed_item(payload_map(record.payload)), number)
            {
                catalog.point_of_item.insert(item.item_id.clone(), number);
                catalog.item_of_point.insert(number, item);
            }
        }
        match next {
            Some(next) => offset = Some(next),
            None => return Ok(catalog),
        }
    }
}

fn build_blocking(
    alias_dir: &Path,
    version: &str,
    dim: usize,
    points: &[IndexPoint],
) -> Result<String, IndexError> {
    if version.is_empty() || version.contains(['/', '.']) {
        return Err(IndexError::Invalid(format!(
            "'{version}' is not a usable version name"
        )));
    }
    if let Some(point) = points.iter().find(|point| point.vector.len() != dim) {
        return Err(IndexError::Invalid(format!(
            "item {} has a vector of {} dimensions, expected {dim}",
            point.item_id,
            point.vector.len()
        )));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error: std::io::Error| unavailable(format!("{}: {error}", path.display()))
    };
    let staging: PathBuf = alias_dir.join(format!(".{version}.partial"));
    let target = alias_dir.join(version);
    if target.exists() {
        return Err(IndexError::Invalid(format!(
            "{} already exists",
            target.display()
        )));
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;

    let config = EdgeConfig::builder()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParams::builder(dim, Distance::Dot).build(),
        )
        .build();
    let shard = EdgeShard::new(&staging, config).map_err(unavailable)?;
    for chunk in points.chunks(UPSERT_CHUNK) {
        let batch: Vec<PointStructPersisted> = chunk
            .iter()
            .map(|point| {
                PointStruct::new(
                    point.point_id,
                    point.vector.clone(),
                    serde_json::Value::Object(payload_with_item_id(point)),
                )
                .into()
            })
            .collect();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(batch)),
            ))
            .map_err(unavailable)?;
    }
    shard.optimize().map_err(unavailable)?;
    shard.flush();
    drop(shard);

    common::fs::rename_durably(&staging, &target).map_err(io(&target))?;
    let current = alias_dir.join(CURRENT_FILE);
    write_pointer_file(&current, version).map_err(io(&current))?;
    Ok(version.to_owned())
}

/// Points `alias` at the newest version on disk built for `model_version`, if there is one.
pub(super) fn serve_existing(
    root: &Path,
    alias: &str,
    model_version: &str,
) -> Result<Option<String>, IndexError> {
    let alias_dir = root.join(alias);
    let entries = match std::fs::read_dir(&alias_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unavailable(format!("{}: {error}", alias_dir.display()))),
    };
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        // Staging directories of a build in progress start with a dot.
        .filter(|name| !name.starts_with('.'))
        .collect();
    let Some(version) = super::newest_version_for(names.iter().map(String::as_str), model_version)
    else {
        return Ok(None);
    };
    let current = alias_dir.join(CURRENT_FILE);
    write_pointer_file(&current, version)
        .map_err(|error| unavailable(format!("{}: {error}", current.display())))?;
    Ok(Some(version.to_owned()))
}

/// Deletes the versions under `alias` built for none of `keep_bundles`, except the one the alias
/// names; returns their names.
pub(super) fn prune(
    root: &Path,
    alias: &str,
    keep_bundles: &[&str],
) -> Result<Vec<String>, IndexError> {
    let alias_dir = root.join(alias);
    let served = std::fs::read_to_string(alias_dir.join(CURRENT_FILE)).unwrap_or_default();
    let entries = match std::fs::read_dir(&alias_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(unavailable(format!("{}: {error}", alias_dir.display()))),
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !super::is_prunable(&name, served.trim(), keep_bundles) || !entry.path().is_dir() {
            continue;
        }
        std::fs::remove_dir_all(entry.path())
            .map_err(|error| unavailable(format!("{}: {error}", entry.path().display())))?;
        removed.push(name);
    }
    Ok(removed)
}

#[async_trait::async_trait]
impl VectorIndex for EmbeddedIndex {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn version(&self) -> &str {
        &self.version
    }

    async fn search(
        &self,
        query: &[f32],
        count: usize,
        exclude: &[&str],
    ) -> Result<Vec<ScoredItem>, IndexError> {
        let excluded = self.point_ids(exclude);
        let query = query.to_vec();
        let filter = if excluded.is_empty() {
            None
        } else {
            let ids: HasIdCondition = excluded.into_iter().collect();
            Some(Filter::new_must_not(Condition::HasId(ids)))
        };
        let hits = self
            .shard
            .query(QueryRequest {
                prefetches: Vec::new(),
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(
                    NamedQuery::default_dense(query),
                ))),
                filter,
                score_threshold: None,
                limit: count,
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(false),
            })
            .map_err(unavailable)?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| {
                let item = self.catalog.item_of_point.get(&point_number(hit.id)?)?;
                Some(ScoredItem {
                    item_id: item.item_id.clone(),
                    score: hit.score,
                    payload: item.payload.clone(),
                })
            })
            .collect())
    }

    async fn all_items(&self) -> Result<Vec<IndexedItem>, IndexError> {
        Ok(self.catalog.item_of_point.values().cloned().collect())
    }

    async fn items(&self, item_ids: &[String]) -> Result<Vec<IndexedItem>, IndexError> {
        Ok(item_ids
            .iter()
            .filter_map(|item_id| self.catalog.point_of_item.get(item_id))
            .filter_map(|number| self.catalog.item_of_point.get(number))
            .cloned()
            .collect())
    }

    async fn item_vector(&self, item_id: &str) -> Result<Option<Vec<f32>>, IndexError> {
        let Some(&number) = self.catalog.point_of_item.get(item_id) else {
            return Ok(None);
        };
        let records = self
            .shard
            .retrieve(
                &[PointId::NumId(number)],
                Some(WithPayloadInterface::Bool(false)),
                Some(WithVector::Bool(true)),
            )
            .map_err(unavailable)?;
        Ok(records
            .into_iter()
            .next()
            .and_then(|record| dense_vector(record.vector?)))
    }

    async fn ping(&self) -> Result<(), IndexError> {
        Ok(())
    }
}
