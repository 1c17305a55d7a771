//! Qdrant server through `qdrant-client` (gRPC, e.g. `http://qdrant:6334`).
//!
//! Building creates collection `<alias>-<version>`, upserts every point (waiting for each batch to
//! be applied), and only then points the alias at it with one alias operation, which Qdrant applies
//! atomically: searches go to the old collection or the new one, never to a partial one.

use std::collections::HashMap;
use std::time::Duration;

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output;
use qdrant_client::qdrant::{
    Condition, CreateAliasBuilder, CreateCollectionBuilder, Distance, Filter, GetPointsBuilder,
    PointId, PointStruct, QueryPointsBuilder, ScrollPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use qdrant_client::{Payload as QdrantPayload, Qdrant};

use super::{
    indexed_item, item_id_of, payload_with_item_id, scored_item, IndexError, IndexPoint,
    IndexedItem, Payload, ScoredItem, VectorIndex,
};

const UPSERT_CHUNK: usize = 512;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RemoteIndex {
    client: Qdrant,
    alias: String,
    version: String,
    point_of_item: HashMap<String, u64>,
}

fn unavailable(error: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(error.to_string())
}

fn connect(url: &str) -> Result<Qdrant, IndexError> {
    Qdrant::from_url(url)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|error| IndexError::InvalidUrl {
            url: url.to_owned(),
            problem: error.to_string(),
        })
}

fn to_json(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Payload {
    match serde_json::Value::from(QdrantPayload::from(payload)) {
        serde_json::Value::Object(map) => map,
        _ => Payload::new(),
    }
}

fn point_number(id: Option<PointId>) -> Option<u64> {
    match id?.point_id_options? {
        PointIdOptions::Num(number) => Some(number),
        PointIdOptions::Uuid(_) => None,
    }
}

impl RemoteIndex {
    pub async fn open(url: &str, alias: &str) -> Result<RemoteIndex, IndexError> {
        let client = connect(url)?;
        let aliases = client.list_aliases().await.map_err(unavailable)?;
        // The version, as the embedded backend names it: the collection is `<alias>-<version>`,
        // and the version names the bundle the model must be (`bundle_of_index_version`).
        let prefix = format!("{alias}-");
        let Some(version) = aliases
            .aliases
            .iter()
            .find(|description| description.alias_name == alias)
            .map(|description| {
                let collection = &description.collection_name;
                collection
                    .strip_prefix(&prefix)
                    .unwrap_or(collection)
                    .to_owned()
            })
        else {
            return Err(IndexError::Missing {
                alias: alias.to_owned(),
                location: url.to_owned(),
            });
        };
        let mut point_of_item = HashMap::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(alias)
                .limit(10_000)
                .with_payload(true);
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            let page = client.scroll(request).await.map_err(unavailable)?;
            for point in page.result {
                let payload = to_json(point.payload);
                if let (Some(item_id), Some(number)) =
                    (item_id_of(&payload), point_number(point.id))
                {
                    point_of_item.insert(item_id, number);
                }
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        Ok(RemoteIndex {
            client,
            alias: alias.to_owned(),
            version,
            point_of_item,
        })
    }

    pub async fn build(
        url: &str,
        alias: &str,
        version: &str,
        dim: usize,
        points: Vec<IndexPoint>,
    ) -> Result<String, IndexError> {
        let client = connect(url)?;
        let collection = format!("{alias}-{version}");
        client
            .create_collection(
                CreateCollectionBuilder::new(&collection)
                    .vectors_config(VectorParamsBuilder::new(dim as u64, Distance::Dot)),
            )
            .await
            .map_err(unavailable)?;
        for chunk in points.chunks(UPSERT_CHUNK) {
            let batch: Vec<PointStruct> = chunk
                .iter()
                .map(|point| {
                    PointStruct::new(
                        point.point_id,
                        point.vector.clone(),
                        QdrantPayload::from(payload_with_item_id(point)),
                    )
                })
                .collect();
            client
                .upsert_points(UpsertPointsBuilder::new(&collection, batch).wait(true))
                .await
                .map_err(unavailable)?;
        }
        // Creating an alias that exists re-points it in one step.
        client
            .create_alias(CreateAliasBuilder::new(&collection, alias))
            .await
            .map_err(unavailable)?;
        Ok(version.to_owned())
    }

    /// Points `alias` at the newest collection built for `model_version`, if one exists.
    pub async fn serve_existing(
        url: &str,
        alias: &str,
        model_version: &str,
    ) -> Result<Option<String>, IndexError> {
        let client = connect(url)?;
        let collections = client.list_collections().await.map_err(unavailable)?;
        let prefix = format!("{alias}-");
        let versions: Vec<&str> = collections
            .collections
            .iter()
            .filter_map(|collection| collection.name.strip_prefix(&prefix))
            .collect();
        let Some(version) = super::newest_version_for(versions.into_iter(), model_version) else {
            return Ok(None);
        };
        let collection = format!("{prefix}{version}");
        client
            .create_alias(CreateAliasBuilder::new(&collection, alias))
            .await
            .map_err(unavailable)?;
        Ok(Some(version.to_owned()))
    }

    /// Deletes the collections of `alias` built for none of `keep_bundles`, except the one the
    /// alias names; returns their versions.
    pub async fn prune(
        url: &str,
        alias: &str,
        keep_bundles: &[&str],
    ) -> Result<Vec<String>, IndexError> {
        let client = connect(url)?;
        let aliases = client.list_aliases().await.map_err(unavailable)?;
        let prefix = format!("{alias}-");
        let served = aliases
            .aliases
            .iter()
            .find(|description| description.alias_name == alias)
            .and_then(|description| description.collection_name.strip_prefix(&prefix))
            .unwrap_or_default()
            .to_owned();
        let collections = client.list_collections().await.map_err(unavailable)?;
        let mut removed = Vec::new();
        for collection in collections.collections {
            let Some(version) = collection.name.strip_prefix(&prefix) else {
                continue;
            };
            if super::is_prunable(version, &served, keep_bundles) {
                client
                    .delete_collection(&collection.name)
                    .await
                    .map_err(unavailable)?;
                removed.push(version.to_owned());
            }
        }
        Ok(removed)
    }

    fn point_ids<T: AsRef<str>>(&self, item_ids: &[T]) -> Vec<PointId> {
        item_ids
            .iter()
            .filter_map(|item_id| self.point_of_item.get(item_id.as_ref()))
            .map(|&number| PointId::from(number))
            .collect()
    }
}

#[async_trait::async_trait]
impl VectorIndex for RemoteIndex {
    fn backend(&self) -> &'static str {
        "qdrant"
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
        let mut request = QueryPointsBuilder::new(&self.alias)
            .query(query.to_vec())
            .limit(count as u64)
            .with_payload(true);
        let excluded = self.point_ids(exclude);
        if !excluded.is_empty() {
            request = request.filter(Filter::must_not([Condition::has_id(excluded)]));
        }
        let response = self.client.query(request).await.map_err(unavailable)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|hit| scored_item(to_json(hit.payload), hit.score))
            .collect())
    }

    async fn items(&self, item_ids: &[String]) -> Result<Vec<IndexedItem>, IndexError> {
        let ids = self.point_ids(item_ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let response = self
            .client
            .get_points(GetPointsBuilder::new(&self.alias, ids).with_payload(true))
            .await
            .map_err(unavailable)?;
        let mut by_id: HashMap<String, IndexedItem> = response
            .result
            .into_iter()
            .filter_map(|point| indexed_item(to_json(point.payload)))
            .map(|item| (item.item_id.clone(), item))
            .collect();
        Ok(item_ids
            .iter()
            .filter_map(|item_id| by_id.remove(item_id))
            .collect())
    }

    async fn all_items(&self) -> Result<Vec<IndexedItem>, IndexError> {
        let item_ids: Vec<String> = self.point_of_item.keys().cloned().collect();
        let mut items = Vec::with_capacity(item_ids.len());
        for chunk in item_ids.chunks(1_000) {
            items.extend(self.items(chunk).await?);
        }
        Ok(items)
    }

    async fn item_vector(&self, item_id: &str) -> Result<Option<Vec<f32>>, IndexError> {
        let ids = self.point_ids(&[item_id]);
        if ids.is_empty() {
            return Ok(None);
        }
        let response = self
            .client
            .get_points(GetPointsBuilder::new(&self.alias, ids).with_vectors(true))
            .await
            .map_err(unavailable)?;
        Ok(response
            .result
            .into_iter()
            .next()
            .and_then(|point| point.vectors?.get_vector())
            .and_then(|vector| match vector {
                vector_output::Vector::Dense(dense) => Some(dense.data),
                _ => None,
            }))
    }

    async fn ping(&self) -> Result<(), IndexError> {
        self.client
            .health_check()
            .await
            .map(drop)
            .map_err(unavailable)
    }
}
