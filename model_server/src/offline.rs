//! The offline jobs behind `recsys train` and `recsys eval`: load a data set, split it, train or
//! evaluate, and read or write the bundle.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::{self, BundleError, ModelBundle, NativeBundle};
use crate::eval::{evaluate_encoder, evaluate_popularity, popularity_counts, test_cases};
use crate::train::{train, TrainConfig, TrainingReport};
use dataset::data::{DataError, Dataset};
use dataset::id_map::{IdMap, IdMapError};
use dataset::ranking_metrics::RankingMetrics;
use dataset::split::{leave_one_out, UserSplit};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("catalogue of data set '{dataset}': {source}")]
    Catalogue { dataset: String, source: IdMapError },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("data set '{0}' has no user with at least three interactions to evaluate")]
    NothingToEvaluate(String),
}

/// Test-split numbers for the model and the popularity baseline, as `recsys eval --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub dataset: String,
    pub bundle: PathBuf,
    pub model_name: String,
    pub model_version: String,
    pub users: usize,
    pub model: RankingMetrics,
    pub popularity: RankingMetrics,
}

/// What training produced. Test numbers are not part of it: configurations are chosen on the
/// validation split, and the test split is read once, by `evaluate_bundle`, for the one chosen.
pub struct TrainOutcome {
    pub bundle_dir: PathBuf,
    pub report: TrainingReport,
}

/// The data set's catalogue in file order becomes the id map: index 1 is the first listed item.
pub fn catalogue_id_map(dataset: &Dataset) -> Result<IdMap, OfflineError> {
    IdMap::from_raw_ids(
        dataset
            .items
            .iter()
            .map(|item| item.item_id.clone())
            .collect(),
    )
    .map_err(|source| OfflineError::Catalogue {
        dataset: dataset.name.clone(),
        source,
    })
}

/// Trains on `dataset_name` (the validation split picks the epoch), writes `bundles/<version>/`
/// and, if `make_current`, points `bundles/CURRENT` at it.
pub fn train_bundle(
    data_dir: &Path,
    dataset_name: &str,
    config: &TrainConfig,
    make_current: bool,
) -> Result<TrainOutcome, OfflineError> {
    let dataset = Dataset::load(data_dir, dataset_name)?;
    let id_map = catalogue_id_map(&dataset)?;
    let splits = leave_one_out(&dataset.user_sequences(), &id_map);
    let (model, report) = train(&splits, id_map.len() as i64, config)?;

    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let model_version = format!("{}-{dataset_name}-{created_at}", config.encoder);
    let metrics = serde_json::json!({ "training": report, "train_config": config });
    let bundle_dir = bundle::save_native_bundle(
        data_dir,
        &NativeBundle {
            model_version: &model_version,
            dataset: dataset_name,
            model: &model,
            id_map: &id_map,
            metrics: &metrics,
        },
    )?;
    if make_current {
        bundle::set_current_bundle(data_dir, &model_version)?;
    }
    Ok(TrainOutcome { bundle_dir, report })
}

/// Evaluates a bundle on the test split of the data set it was trained on.
pub fn evaluate_bundle(data_dir: &Path, bundle_dir: &Path) -> Result<EvalReport, OfflineError> {
    let loaded = ModelBundle::load(bundle_dir)?;
    let dataset = Dataset::load(data_dir, &loaded.config.dataset)?;
    // Split with the bundle's own id map: indices must mean what they meant during training.
    let splits = leave_one_out(&dataset.user_sequences(), &loaded.id_map);
    evaluate_loaded(&loaded, &splits)
}

fn evaluate_loaded(bundle: &ModelBundle, splits: &[UserSplit]) -> Result<EvalReport, OfflineError> {
    let cases = test_cases(splits);
    if cases.is_empty() {
        return Err(OfflineError::NothingToEvaluate(
            bundle.config.dataset.clone(),
        ));
    }
    let model = evaluate_encoder(
        bundle.encoder.as_ref(),
        &bundle.item_vectors,
        &cases,
        bundle.config.max_len as usize,
    )?;
    let popularity = evaluate_popularity(
        &popularity_counts(splits, bundle.config.num_items as usize),
        &cases,
    );
    Ok(EvalReport {
        dataset: bundle.config.dataset.clone(),
        bundle: bundle.dir.clone(),
        model_name: bundle.config.model_name.clone(),
        model_version: bundle.config.model_version.clone(),
        users: cases.len(),
        model,
        popularity,
    })
}
