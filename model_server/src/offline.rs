//! The offline jobs behind `recsys train` and `recsys eval`: load a data set, split it, train or
//! evaluate, and read or write the bundle.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::{self, BundleError, ModelBundle, NativeBundle};
use crate::eval::{
    evaluate_encoder, evaluate_popularity, popularity_counts, test_cases, validation_cases,
    EvalCase, SeenItems,
};
use crate::item_features::ItemFeatures;
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
    /// The protocol's numbers: every item ranked, seen ones included.
    pub model: RankingMetrics,
    /// The items the user had already seen left out, as serving does.
    pub model_seen_masked: RankingMetrics,
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
    let item_features = ItemFeatures::build(config.item_features, &dataset.items, &id_map);
    let (model, report) = train(&splits, id_map.len() as i64, item_features.as_ref(), config)?;

    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let model_version = format!("{}-{dataset_name}-{created_at}", config.encoder);
    // A data set exported from the event archive says which events it holds.
    let data_window = std::fs::read_to_string(
        dataset::data::dataset_dir(data_dir, dataset_name).join(dataset::data::WINDOW_FILE),
    )
    .ok()
    .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let metrics = serde_json::json!({
        "training": report,
        "train_config": config,
        "data_window": data_window,
    });
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
    let (loaded, splits) = load_for_evaluation(data_dir, bundle_dir)?;
    let cases = test_cases(&splits);
    let model = evaluate_cases(&loaded, &cases, SeenItems::Ranked)?;
    let model_seen_masked = evaluate_cases(&loaded, &cases, SeenItems::Masked)?;
    let popularity = evaluate_popularity(
        &popularity_counts(&splits, loaded.config.num_items as usize),
        &cases,
    );
    Ok(EvalReport {
        dataset: loaded.config.dataset.clone(),
        bundle: loaded.dir.clone(),
        model_name: loaded.config.model_name.clone(),
        model_version: loaded.config.model_version.clone(),
        users: cases.len(),
        model,
        model_seen_masked,
        popularity,
    })
}

/// A bundle's numbers on the validation split (what chose its epoch), for comparing
/// configurations with seen items masked as well.
pub fn evaluate_bundle_on_validation(
    data_dir: &Path,
    bundle_dir: &Path,
    seen: SeenItems,
) -> Result<RankingMetrics, OfflineError> {
    let (loaded, splits) = load_for_evaluation(data_dir, bundle_dir)?;
    evaluate_cases(&loaded, &validation_cases(&splits), seen)
}

fn load_for_evaluation(
    data_dir: &Path,
    bundle_dir: &Path,
) -> Result<(ModelBundle, Vec<UserSplit>), OfflineError> {
    let loaded = ModelBundle::load(bundle_dir)?;
    let dataset = Dataset::load(data_dir, &loaded.config.dataset)?;
    // Split with the bundle's own id map: indices must mean what they meant during training.
    let splits = leave_one_out(&dataset.user_sequences(), &loaded.id_map);
    Ok((loaded, splits))
}

fn evaluate_cases(
    bundle: &ModelBundle,
    cases: &[EvalCase],
    seen: SeenItems,
) -> Result<RankingMetrics, OfflineError> {
    if cases.is_empty() {
        return Err(OfflineError::NothingToEvaluate(
            bundle.config.dataset.clone(),
        ));
    }
    Ok(evaluate_encoder(
        bundle.encoder.as_ref(),
        &bundle.item_vectors,
        cases,
        bundle.config.max_len as usize,
        seen,
    )?)
}
