//! The served pair of model and index, replaced without a restart when `bundles/CURRENT` moves.
//!
//! Every request takes the retriever once ([`ServedRetriever::get`]) and answers from it, so an
//! answer never mixes one bundle's model with another's index, and a request in flight when the
//! pair changes finishes on the old one (which is dropped with its last request). The watcher
//! swaps only a consistent pair: after `bundles/CURRENT` moves it opens that bundle and the index
//! the alias names, and waits (retrying every interval) until that index was built for that
//! bundle. So a promotion is "build the index for the new bundle, then move CURRENT" (what
//! `recsys index` then a pointer move does), and a rollback is the same move backwards.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::retrieve::Retriever;
use crate::startup::{bundle_dir, open_model, StartupError};

/// The retriever requests use now.
pub struct ServedRetriever {
    current: ArcSwap<Retriever>,
}

impl ServedRetriever {
    pub fn new(retriever: Arc<Retriever>) -> Arc<ServedRetriever> {
        Arc::new(ServedRetriever {
            current: ArcSwap::new(retriever),
        })
    }

    /// The pair to answer one request with, whole.
    pub fn get(&self) -> Arc<Retriever> {
        self.current.load_full()
    }

    /// Serves `next` from now on; returns the pair it replaced.
    pub fn swap(&self, next: Arc<Retriever>) -> Arc<Retriever> {
        self.current.swap(next)
    }
}

/// What one look at `bundles/CURRENT` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The served model is the current bundle.
    Unchanged,
    /// A new pair is served.
    Swapped { from: String, to: String },
    /// The current bundle has no index built for it yet (or it could not be opened): the old
    /// pair keeps serving.
    Waiting(String),
}

/// Serves the current bundle with its index if that is not what is served already.
pub async fn reload_if_changed(config: &Config, served: &ServedRetriever) -> Reload {
    let serving = served.get();
    let current = match bundle_dir(config).and_then(|dir| {
        dataset::BundleManifest::load(&dir)
            .map(|bundle| bundle.config.model_version)
            .map_err(StartupError::from)
    }) {
        Ok(version) => version,
        Err(error) => return Reload::Waiting(error.to_string()),
    };
    if current == serving.model_version() && serving.pairing_problem().is_none() {
        return Reload::Unchanged;
    }
    let opened = async {
        let (model, model_version) = open_model(config).await?;
        let index = crate::index::open_index(
            &config.index.url,
            &config.index.collection,
            &config.data_dir,
        )
        .await?;
        Ok::<_, StartupError>((model, index, model_version))
    }
    .await;
    let (model, index, model_version) = match opened {
        Ok(opened) => opened,
        Err(error) => return Reload::Waiting(error.to_string()),
    };
    let next = serving.with_model_and_index(model, index, model_version);
    if let Some(problem) = next.pairing_problem() {
        return Reload::Waiting(problem.to_owned());
    }
    let to = next.model_version().to_owned();
    let replaced = served.swap(Arc::new(next));
    Reload::Swapped {
        from: replaced.model_version().to_owned(),
        to,
    }
}

/// Looks at `bundles/CURRENT` every `interval` and swaps in a new consistent pair.
pub fn spawn_bundle_watcher(
    config: Config,
    served: Arc<ServedRetriever>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_waiting: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            match reload_if_changed(&config, &served).await {
                Reload::Unchanged => last_waiting = None,
                Reload::Swapped { from, to } => {
                    last_waiting = None;
                    metrics::counter!("recsys_serving_swaps_total").increment(1);
                    tracing::info!(%from, %to, "now serving a new model and index");
                }
                Reload::Waiting(reason) => {
                    // Said once per reason, not every interval.
                    if last_waiting.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(%reason, "the current bundle is not served yet");
                        last_waiting = Some(reason);
                    }
                }
            }
        }
    })
}
