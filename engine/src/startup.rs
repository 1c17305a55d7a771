//! Assembling the serving parts from configuration: model, store, index, popular list.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::clock::now_ms;
use dataset::bundle::{current_bundle_dir, current_bundle_version, BundleManifest};
use dataset::Dataset;

use crate::catalogue::{CatalogueStore, LiveCatalogue};
use crate::config::Config;
use crate::index::open_index;
use crate::indexing::index_bundle;
use crate::model::{HttpModel, QueryModel};
use crate::popularity::{DecayClock, PopularSnapshot};
use crate::retrieve::Retriever;
use crate::serving::untrained::{EmptyIndex, UntrainedModel, UNTRAINED_VERSION};
use crate::store::{open_store, UserStore};

/// How many popular items the snapshot keeps.
pub const POPULAR_SNAPSHOT_SIZE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("model bundle: {0}")]
    Bundle(#[from] dataset::BundleError),
    #[error("data set: {0}")]
    Data(#[from] dataset::DataError),
    #[error("model.url is 'embedded', but this build has no in-process model (built without the `in-process-model` feature): set model.url to a `recsys model-server`")]
    NoInProcessModel,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// The state store `state.url` names, with the configured key prefix and limits.
pub async fn open_state_store(
    config: &Config,
) -> Result<Arc<dyn UserStore>, crate::store::StoreError> {
    open_store(
        &config.state.url,
        &config.state.key_prefix,
        config.state.limits(),
        &config.data_dir,
    )
    .await
}

pub fn bundle_dir(config: &Config) -> Result<PathBuf, StartupError> {
    match &config.model.bundle {
        Some(path) => Ok(path.clone()),
        None => Ok(current_bundle_dir(&config.data_dir)?),
    }
}

#[cfg(feature = "in-process-model")]
fn embedder_config(config: &Config) -> model_server::EmbedderConfig {
    model_server::EmbedderConfig {
        max_batch_size: config.model.max_batch_size,
        max_wait: Duration::from_micros(config.model.max_wait_micros),
        queue_capacity: config.model.queue_capacity,
        torch_threads: config.model.torch_threads,
        single_sequence_kernel: config.model.single_sequence_kernel,
    }
}

/// The model `model.url` names and the version it serves.
pub(crate) async fn open_model(
    config: &Config,
) -> Result<(Arc<dyn QueryModel>, String), StartupError> {
    if config.model.url == "embedded" {
        return open_in_process_model(config);
    }
    let budget = Duration::from_millis(config.api.request_budget_ms);
    let http = HttpModel::new(&config.model.url, budget)?;
    let version = http.metadata().await?.model_version;
    Ok((Arc::new(http.pinned_to(version.clone())), version))
}

#[cfg(feature = "in-process-model")]
fn open_in_process_model(config: &Config) -> Result<(Arc<dyn QueryModel>, String), StartupError> {
    let bundle = model_server::ModelBundle::load(&bundle_dir(config)?)?;
    let embedder = model_server::Embedder::start(bundle, embedder_config(config));
    let version = embedder.model_version().to_owned();
    Ok((
        Arc::new(crate::model::InProcessModel::new(embedder)),
        version,
    ))
}

#[cfg(not(feature = "in-process-model"))]
fn open_in_process_model(_config: &Config) -> Result<(Arc<dyn QueryModel>, String), StartupError> {
    Err(StartupError::NoInProcessModel)
}

/// Whether this deployment has never had a model: the embedded model, no explicit bundle and no
/// `bundles/CURRENT`. It then serves popular items until the bundle watcher finds a promotion.
fn is_untrained(config: &Config) -> Result<bool, StartupError> {
    Ok(config.model.url == "embedded"
        && config.model.bundle.is_none()
        && current_bundle_version(&config.data_dir)?.is_none())
}

/// The serving pipeline on the configured backends, plus its background tasks (the popular
/// list's and the catalogue's refreshers).
pub async fn build_retriever(
    config: &Config,
) -> Result<(Arc<Retriever>, Vec<tokio::task::JoinHandle<()>>), StartupError> {
    let store = open_state_store(config).await?;
    let (model, index, model_version) = if is_untrained(config)? {
        tracing::warn!("no model is trained yet: answers are popular items until one is promoted");
        (
            Arc::new(UntrainedModel) as Arc<dyn QueryModel>,
            Arc::new(EmptyIndex) as Arc<dyn crate::index::VectorIndex>,
            UNTRAINED_VERSION.to_owned(),
        )
    } else {
        let (model, model_version) = open_model(config).await?;
        let index = open_index(
            &config.index.url,
            &config.index.collection,
            &config.data_dir,
        )
        .await?;
        (model, index, model_version)
    };
    let popular = Arc::new(PopularSnapshot::with_clock(DecayClock::new(
        config.popularity.half_life_hours,
    )));
    if let Err(error) = popular.refresh(store.as_ref(), POPULAR_SNAPSHOT_SIZE).await {
        tracing::warn!(%error, "popular items not loaded at start");
    }
    let popular_refresher = popular.spawn_refresher(
        Arc::clone(&store),
        POPULAR_SNAPSHOT_SIZE,
        Duration::from_millis(config.popularity.refresh_interval_ms),
    );
    let catalogue = Arc::new(LiveCatalogue::new(
        Arc::clone(&store) as Arc<dyn CatalogueStore>
    ));
    if let Err(error) = catalogue.refresh().await {
        tracing::warn!(%error, "catalogue not loaded at start");
    }
    let catalogue_refresher =
        catalogue.spawn_refresher(Duration::from_millis(config.catalogue.refresh_interval_ms));
    let retriever = Retriever::new(
        store,
        index,
        model,
        popular,
        config.state.max_history,
        Duration::from_millis(config.api.request_budget_ms),
        model_version,
    )
    .with_catalogue(catalogue, config.catalogue.fresh_slots);
    Ok((
        Arc::new(retriever),
        vec![popular_refresher, catalogue_refresher],
    ))
}

/// What `recsys index` did.
pub struct IndexOutcome {
    pub version: String,
    pub items: usize,
    /// Items whose training popularity was written to an empty store.
    pub seeded_popularity: usize,
}

/// Indexes the current bundle with the data set's metadata and training popularity; seeds the
/// store's live popularity with the training counts when it has none yet.
pub async fn build_index_from_bundle(config: &Config) -> Result<IndexOutcome, StartupError> {
    let bundle = BundleManifest::load(&bundle_dir(config)?)?;
    let item_vectors = bundle.read_item_vectors()?;
    let dataset = Dataset::load(&config.data_dir, &bundle.config.dataset)?;
    let mut counts: HashMap<String, f64> = HashMap::new();
    for interaction in &dataset.interactions {
        *counts.entry(interaction.item_id.clone()).or_default() += 1.0;
    }
    let version = index_bundle(
        &config.index.url,
        &config.index.collection,
        &config.data_dir,
        &bundle,
        &item_vectors,
        &dataset.items,
        &counts,
    )
    .await?;

    // Seeding is for a fresh deployment. An embedded store held by a running server (indexing
    // a promoted bundle beside it) cannot be opened here, and needs no seed: it has live counts.
    let store = match open_state_store(config).await {
        Ok(store) => store,
        Err(error) => {
            tracing::warn!(%error, "live popularity not seeded: the state store is not available here");
            return Ok(IndexOutcome {
                version,
                items: bundle.id_map.len(),
                seeded_popularity: 0,
            });
        }
    };
    let mut seeded_popularity = 0;
    if store.top_popular(1).await?.is_empty() {
        let clock = DecayClock::new(config.popularity.half_life_hours);
        let now = now_ms();
        let increments: Vec<(String, f64)> = counts
            .iter()
            .map(|(item_id, count)| (item_id.clone(), clock.increment(*count, now)))
            .collect();
        seeded_popularity = increments.len();
        store.add_popularity(&increments).await?;
    }
    Ok(IndexOutcome {
        version,
        items: bundle.id_map.len(),
        seeded_popularity,
    })
}
