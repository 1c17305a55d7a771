//! Promotion and rollback: which bundle every server answers with. `bundles/CURRENT` is the
//! champion; `bundles/PREVIOUS` the champion before the last promotion, where a rollback goes (and
//! a second rollback comes back).
//!
//! A promotion first makes the index alias name an index built for the new bundle (one still on
//! disk or in Qdrant, or a new build), and only then moves `CURRENT`: servers swap when `CURRENT`
//! moves (`crate::serving`), and find the matching index already there.

use dataset::bundle::{
    bundles_dir, current_bundle_version, previous_bundle_version, prune_bundles,
    set_current_bundle, set_previous_bundle,
};
use dataset::BundleManifest;

use crate::config::Config;
use crate::index::{prune_index_versions, serve_existing_index};
use crate::startup::{build_index_from_bundle, StartupError};

/// What a promotion or rollback changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The champion before, if there was one.
    pub from: Option<String>,
    pub to: String,
    /// The index version the alias now names.
    pub index: String,
    /// Whether that index had to be built (none for the bundle existed).
    pub index_built: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("no bundle was current before the last promotion: nothing to roll back to")]
    NothingToRollBackTo,
}

impl From<dataset::BundleError> for PromotionError {
    fn from(error: dataset::BundleError) -> Self {
        PromotionError::Startup(error.into())
    }
}

/// Makes `version` the champion, its index first.
pub async fn promote(config: &Config, version: &str) -> Result<Promotion, PromotionError> {
    let data_dir = &config.data_dir;
    let bundle_dir = bundles_dir(data_dir).join(version);
    let manifest = BundleManifest::load(&bundle_dir)?;
    let model_version = manifest.config.model_version;
    let (index, index_built) = match serve_existing_index(
        &config.index.url,
        &config.index.collection,
        data_dir,
        &model_version,
    )
    .await
    .map_err(StartupError::from)?
    {
        Some(index) => (index, false),
        None => {
            let mut for_bundle = config.clone();
            for_bundle.model.bundle = Some(bundle_dir);
            (build_index_from_bundle(&for_bundle).await?.version, true)
        }
    };
    let from = current_bundle_version(data_dir)?;
    if from.as_deref() != Some(version) {
        if let Some(from) = &from {
            set_previous_bundle(data_dir, from)?;
        }
        set_current_bundle(data_dir, version)?;
    }
    prune(config).await;
    Ok(Promotion {
        from,
        to: version.to_owned(),
        index,
        index_built,
    })
}

/// Refused and replaced challengers kept for a look besides `CURRENT` and `PREVIOUS`.
const KEEP_NEWEST_OTHER_BUNDLES: usize = 3;

/// Deletes bundles beyond the newest few and every index version built for neither `CURRENT` nor
/// `PREVIOUS` (a later promotion of a kept bundle builds its index again). Failures are logged:
/// what is left is only disk.
pub async fn prune(config: &Config) {
    let data_dir = &config.data_dir;
    match prune_bundles(data_dir, KEEP_NEWEST_OTHER_BUNDLES) {
        Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "old bundles deleted"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "old bundles not deleted"),
    }
    let pinned = match (
        current_bundle_version(data_dir),
        previous_bundle_version(data_dir),
    ) {
        (Ok(current), Ok(previous)) => [current, previous],
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "old index versions not deleted");
            return;
        }
    };
    let keep: Vec<&str> = pinned.iter().flatten().map(String::as_str).collect();
    match prune_index_versions(&config.index.url, &config.index.collection, data_dir, &keep).await {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "old index versions deleted");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "old index versions not deleted"),
    }
}

/// Makes the previous champion the champion again (a second rollback undoes the first).
pub async fn rollback(config: &Config) -> Result<Promotion, PromotionError> {
    let previous =
        previous_bundle_version(&config.data_dir)?.ok_or(PromotionError::NothingToRollBackTo)?;
    promote(config, &previous).await
}
