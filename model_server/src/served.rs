//! The bundles a model server answers with, replaced without a restart when `bundles/CURRENT`
//! moves.
//!
//! An API in remote-model mode pairs the model version it was told with the index built for that
//! bundle, and names that version in every request. It swaps to a promoted bundle only once the
//! model server serves it, a reload interval later at most, so the server keeps the bundle it
//! replaced and answers requests that name it with it: an API that has not swapped yet gets the
//! vectors its index was built for, never another model's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::bundle::ModelBundle;
use crate::embedder::{Embedder, EmbedderConfig};

/// The current embedder and the one it replaced.
pub struct ServedModels {
    current: ArcSwap<Embedder>,
    previous: ArcSwapOption<Embedder>,
}

impl ServedModels {
    pub fn new(embedder: Embedder) -> Arc<ServedModels> {
        Arc::new(ServedModels {
            current: ArcSwap::from_pointee(embedder),
            previous: ArcSwapOption::empty(),
        })
    }

    pub fn current(&self) -> Arc<Embedder> {
        self.current.load_full()
    }

    /// The embedder serving `model_version`: the current one or the one it replaced.
    pub fn of_version(&self, model_version: &str) -> Option<Arc<Embedder>> {
        let current = self.current.load_full();
        if current.model_version() == model_version {
            return Some(current);
        }
        self.previous
            .load_full()
            .filter(|previous| previous.model_version() == model_version)
    }

    /// Serves `next` from now on; the replaced one still answers requests that name it.
    pub fn swap(&self, next: Embedder) {
        let replaced = self.current.swap(Arc::new(next));
        self.previous.store(Some(replaced));
    }
}

/// Looks at `<data_dir>/bundles/CURRENT` every `interval` and serves the bundle it names.
pub fn spawn_bundle_watcher(
    data_dir: PathBuf,
    models: Arc<ServedModels>,
    config: EmbedderConfig,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_failure: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            let (data_dir, models_now, config) =
                (data_dir.clone(), Arc::clone(&models), config.clone());
            let reloaded = tokio::task::spawn_blocking(move || {
                reload_if_moved(&data_dir, &models_now, config)
            })
            .await;
            match reloaded {
                Ok(Ok(None)) => last_failure = None,
                Ok(Ok(Some(version))) => {
                    last_failure = None;
                    tracing::info!(%version, "serving the promoted bundle");
                    metrics::counter!("recsys_model_server_swaps_total").increment(1);
                }
                Ok(Err(failure)) => {
                    // Once per new reason: the watcher retries every interval.
                    if last_failure.as_deref() != Some(failure.as_str()) {
                        tracing::warn!(%failure, "the current bundle is not served yet");
                    }
                    last_failure = Some(failure);
                }
                Err(panicked) => tracing::error!(%panicked, "bundle reload panicked"),
            }
        }
    })
}

/// Loads and serves the current bundle if it is not served already; its version if it swapped.
/// Blocking (the bundle is read from disk).
fn reload_if_moved(
    data_dir: &Path,
    models: &ServedModels,
    config: EmbedderConfig,
) -> Result<Option<String>, String> {
    let current = dataset::bundle::current_bundle_version(data_dir)
        .map_err(|error| error.to_string())?
        .ok_or("no bundles/CURRENT")?;
    if models.current().model_version() == current {
        return Ok(None);
    }
    let bundle_dir = dataset::bundle::bundles_dir(data_dir).join(&current);
    let bundle = ModelBundle::load(&bundle_dir).map_err(|error| error.to_string())?;
    let embedder = Embedder::start(bundle, config);
    let version = embedder.model_version().to_owned();
    models.swap(embedder);
    Ok(Some(version))
}
