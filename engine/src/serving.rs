//! The served pair of model and index, replaced without a restart when `bundles/CURRENT` moves.
//!
//! Every request takes the retriever once ([`ServedRetriever::get`]) and answers from it, so an
//! answer never mixes one bundle's model with another's index, and a request in flight when the
//! pair changes finishes on the old one (which is dropped with its last request). The watcher
//! swaps only a consistent pair: after `bundles/CURRENT` moves it opens that bundle and the index
//! the alias names, and waits (retrying every interval) until that index was built for that
//! bundle. So a promotion is "build the index for the new bundle, then move CURRENT" (what
//! `recsys index` then a pointer move does), and a rollback is the same move backwards.

pub mod untrained;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::retrieve::Retriever;
use crate::startup::{open_model, StartupError};

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
    // The pointer only (a bundle directory is named by its model version): a manifest would be
    // parsed at every interval.
    let current = match dataset::bundle::current_bundle_version(&config.data_dir) {
        Ok(Some(version)) => version,
        Ok(None) => return Reload::Waiting("no bundles/CURRENT".to_owned()),
        Err(error) => return Reload::Waiting(error.to_string()),
    };
    if current == serving.model_version() && serving.pairing_problem().is_none() {
        return Reload::Unchanged;
    }
    // The index first: until the one built for the current bundle is there, nothing is loaded
    // (a model load costs far more, and the watcher may wait through many intervals).
    let opened = async {
        let index = crate::index::open_index(
            &config.index.url,
            &config.index.collection,
            &config.data_dir,
        )
        .await?;
        if index
            .bundle_version()
            .is_some_and(|bundle| bundle != current)
        {
            return Ok(None);
        }
        let (model, model_version) = open_model(config).await?;
        Ok::<_, StartupError>(Some((model, index, model_version)))
    }
    .await;
    let (model, index, model_version) = match opened {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            return Reload::Waiting(format!("no index is built for {current} yet"));
        }
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
