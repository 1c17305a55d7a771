//! A complete tiny deployment on embedded backends (trained tiny model, Qdrant Edge index,
//! embedded store, seeded popular list) for the tests of the API and the consumer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dataset::bundle::{BundleManifest, EncoderKind};
use dataset::Dataset;
use model_server::fixtures::{train_tiny_bundle, TINY_DATASET};
use model_server::{Embedder, EmbedderConfig, ModelBundle};

use crate::catalogue::{CatalogueStore, LiveCatalogue};
use crate::index::open_index;
use crate::indexing::index_bundle;
use crate::model::InProcessModel;
use crate::popularity::{PopularItem, PopularSnapshot};
use crate::retrieve::Retriever;
use crate::store::{open_store, AppliedInteraction, ItemKey, StoreLimits, UserStore, UserUpdate};

/// Trains the tiny model into `data_dir`, indexes it, opens the embedded store, and seeds the
/// popular list with `i0` (most popular) .. `i9`.
pub async fn tiny_retriever(data_dir: &Path) -> (Retriever, Embedder) {
    let outcome = train_tiny_bundle(data_dir, EncoderKind::Gru).expect("tiny bundle trains");
    let manifest = BundleManifest::load(&outcome.bundle_dir).expect("tiny bundle loads");
    let item_vectors = manifest
        .read_item_vectors()
        .expect("tiny item vectors load");
    let dataset = Dataset::load(data_dir, TINY_DATASET).expect("tiny data set loads");
    index_bundle(
        "embedded",
        "items",
        data_dir,
        &manifest,
        &item_vectors,
        &dataset.items,
        &HashMap::new(),
    )
    .await
    .expect("tiny index builds");
    let index = open_index("embedded", "items", data_dir)
        .await
        .expect("tiny index opens");
    let bundle = ModelBundle::load(&outcome.bundle_dir).expect("tiny bundle loads");
    let embedder = Embedder::start(bundle, EmbedderConfig::default());
    let store = open_store("embedded", "unused", StoreLimits::default(), data_dir)
        .await
        .expect("embedded store opens");
    let popular = Arc::new(PopularSnapshot::new(
        (0..10)
            .map(|n| PopularItem {
                item_id: format!("i{n}"),
                score: 100.0 - n as f64,
            })
            .collect(),
    ));
    let retriever = Retriever::new(
        store,
        index,
        Arc::new(InProcessModel::new(embedder.clone())),
        popular,
        StoreLimits::default().max_history,
        Duration::from_secs(5),
        embedder.model_version().to_owned(),
    );
    let catalogue = Arc::new(LiveCatalogue::new(
        Arc::clone(retriever.store()) as Arc<dyn CatalogueStore>
    ));
    (retriever.with_catalogue(catalogue, 1), embedder)
}

/// Stores `items` as the user's history, one millisecond apart from t = 0.
pub async fn remember(store: &dyn UserStore, user_id: &str, items: &[&str]) {
    let interactions = items
        .iter()
        .enumerate()
        .map(|(time, item)| AppliedInteraction {
            item: ItemKey::new(item),
            event_time_ms: time as i64,
            position: None,
            event: None,
            popularity_increment: 0.0,
        })
        .collect();
    store
        .apply(vec![UserUpdate {
            user_id: user_id.to_owned(),
            interactions,
        }])
        .await
        .expect("history is stored");
}
