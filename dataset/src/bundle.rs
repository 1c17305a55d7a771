//! The model bundle on disk, as far as it can be read without libtorch: one directory holding
//! everything needed to serve a trained model.
//!
//! ```text
//! config.json                  format version, model name and version, encoder spec, scoring
//! weights.safetensors          native encoders: every variable of the model
//! module.pt                    TorchScript encoders: the scripted module
//! id_map.json                  raw item ids in model-index order (index 1 first)
//! item_embeddings.safetensors  `item_embeddings`: [num_items, embedding_dim] float32
//! metrics.json                 training report and evaluation numbers (informational)
//! ```
//!
//! Here: the manifest (`config.json`, `id_map.json`), the item vectors (read with the
//! `safetensors` crate, so indexing and a model-server client need no libtorch) and the
//! `bundles/CURRENT` pointer. Loading the encoder's weights is `model_server`'s job. Bundles are
//! written to a staging directory and renamed into place, and `CURRENT` is replaced atomically, so
//! a reader never sees a half-written bundle.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id_map::IdMap;

pub const BUNDLE_FORMAT_VERSION: u32 = 1;
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const ID_MAP_FILE: &str = "id_map.json";
pub const ITEM_EMBEDDINGS_FILE: &str = "item_embeddings.safetensors";
pub const ITEM_EMBEDDINGS_TENSOR: &str = "item_embeddings";
pub const METRICS_FILE: &str = "metrics.json";
const CURRENT_FILE: &str = "CURRENT";
/// The bundle that was current before the last promotion: where a rollback goes.
const PREVIOUS_FILE: &str = "PREVIOUS";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// Inner product between query and item vectors (vectors are not normalised).
    Dot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// Causal multi-head self-attention with learned positions (pre-layer-norm blocks).
    Sasrec,
    /// A single-layer GRU followed by a linear projection.
    Gru,
}

impl std::fmt::Display for EncoderKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            EncoderKind::Sasrec => "sasrec",
            EncoderKind::Gru => "gru",
        })
    }
}

impl std::str::FromStr for EncoderKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sasrec" => Ok(EncoderKind::Sasrec),
            "gru" => Ok(EncoderKind::Gru),
            other => Err(format!("unknown encoder '{other}', expected sasrec or gru")),
        }
    }
}

/// The architecture of a native (trained here) encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub encoder: EncoderKind,
    /// Real items; the embedding table has one more row for padding.
    pub num_items: i64,
    pub embedding_dim: i64,
    /// Longest sequence the model reads; longer ones keep their most recent items.
    pub max_len: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub dropout: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderSpec {
    /// Trained here; weights in `weights.safetensors`.
    Native(ModelConfig),
    /// Exported from PyTorch: `file` takes `[batch, len]` int64 indices, returns `[batch, dim]`.
    Torchscript { file: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    pub format_version: u32,
    pub model_name: String,
    pub model_version: String,
    /// Name of the data set the model was trained on (under `<data_dir>/datasets/`).
    pub dataset: String,
    pub scoring: Scoring,
    pub embedding_dim: i64,
    pub max_len: i64,
    pub num_items: i64,
    pub encoder: EncoderSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: missing (is this a model bundle? `recsys train` writes one)")]
    Missing { path: PathBuf },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no model bundle in {bundles_dir}: run `recsys train` first")]
    NoCurrentBundle { bundles_dir: PathBuf },
}

pub fn invalid(path: &Path, problem: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

pub fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A bundle's configuration and item ids, checked against each other.
#[derive(Debug, Clone)]
pub struct BundleManifest {
    pub dir: PathBuf,
    pub config: BundleConfig,
    pub id_map: IdMap,
}

impl BundleManifest {
    pub fn load(dir: &Path) -> Result<BundleManifest, BundleError> {
        let config_path = dir.join(CONFIG_FILE);
        let config: BundleConfig = read_json(&config_path)?;
        if config.format_version != BUNDLE_FORMAT_VERSION {
            return Err(invalid(
                &config_path,
                format!(
                    "format_version {} is not supported (this build reads {BUNDLE_FORMAT_VERSION})",
                    config.format_version
                ),
            ));
        }
        if config.num_items < 1 || config.embedding_dim < 1 || config.max_len < 1 {
            return Err(invalid(
                &config_path,
                "num_items, embedding_dim and max_len must be positive",
            ));
        }
        if let EncoderSpec::Native(model_config) = &config.encoder {
            check_native_config(&config_path, &config, model_config)?;
        }

        let id_map_path = dir.join(ID_MAP_FILE);
        let raw_ids: Vec<String> = read_json(&id_map_path)?;
        if raw_ids.len() as i64 != config.num_items {
            return Err(invalid(
                &id_map_path,
                format!(
                    "holds {} item ids but config.json says num_items = {}",
                    raw_ids.len(),
                    config.num_items
                ),
            ));
        }
        let id_map = IdMap::from_raw_ids(raw_ids)
            .map_err(|error| invalid(&id_map_path, error.to_string()))?;
        Ok(BundleManifest {
            dir: dir.to_owned(),
            config,
            id_map,
        })
    }

    /// The item vectors, row-major `[num_items, embedding_dim]`; row `i` is model index `i + 1`.
    pub fn read_item_vectors(&self) -> Result<Vec<f32>, BundleError> {
        let path = self.dir.join(ITEM_EMBEDDINGS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::Missing { path })
            }
            Err(source) => return Err(io_error(&path)(source)),
        };
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|error| invalid(&path, format!("not a readable safetensors file: {error}")))?;
        let view = tensors.tensor(ITEM_EMBEDDINGS_TENSOR).map_err(|_| {
            invalid(
                &path,
                format!("has no tensor named '{ITEM_EMBEDDINGS_TENSOR}'"),
            )
        })?;
        let expected = [
            self.config.num_items as usize,
            self.config.embedding_dim as usize,
        ];
        if view.shape() != expected {
            return Err(invalid(
                &path,
                format!(
                    "tensor '{ITEM_EMBEDDINGS_TENSOR}' has shape {:?}, config.json implies {expected:?}",
                    view.shape()
                ),
            ));
        }
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(invalid(
                &path,
                format!(
                    "tensor '{ITEM_EMBEDDINGS_TENSOR}' is {:?}, expected float32",
                    view.dtype()
                ),
            ));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .collect())
    }
}

fn check_native_config(
    config_path: &Path,
    config: &BundleConfig,
    model_config: &ModelConfig,
) -> Result<(), BundleError> {
    let consistent = model_config.num_items == config.num_items
        && model_config.embedding_dim == config.embedding_dim
        && model_config.max_len == config.max_len;
    if !consistent {
        return Err(invalid(
            config_path,
            "encoder num_items/embedding_dim/max_len disagree with the top-level values",
        ));
    }
    if model_config.num_heads < 1 || model_config.embedding_dim % model_config.num_heads != 0 {
        return Err(invalid(
            config_path,
            format!(
                "embedding_dim {} is not divisible by num_heads {}",
                model_config.embedding_dim, model_config.num_heads
            ),
        ));
    }
    Ok(())
}

pub fn bundles_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("bundles")
}

/// The directory `bundles/CURRENT` names.
pub fn current_bundle_dir(data_dir: &Path) -> Result<PathBuf, BundleError> {
    let bundles = bundles_dir(data_dir);
    let current_path = bundles.join(CURRENT_FILE);
    let version = match std::fs::read_to_string(&current_path) {
        Ok(text) => text.trim().to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::NoCurrentBundle {
                bundles_dir: bundles,
            })
        }
        Err(source) => return Err(io_error(&current_path)(source)),
    };
    if version.is_empty() || version.contains('/') {
        return Err(invalid(
            &current_path,
            format!("'{version}' is not a bundle name"),
        ));
    }
    Ok(bundles.join(version))
}

/// The bundle `bundles/<pointer>` names, if the pointer exists.
fn read_pointer(data_dir: &Path, pointer: &str) -> Result<Option<String>, BundleError> {
    let path = bundles_dir(data_dir).join(pointer);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let version = text.trim().to_owned();
            if version.is_empty() || version.contains('/') {
                return Err(invalid(&path, format!("'{version}' is not a bundle name")));
            }
            Ok(Some(version))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error(&path)(source)),
    }
}

/// The version `bundles/CURRENT` names, if any.
pub fn current_bundle_version(data_dir: &Path) -> Result<Option<String>, BundleError> {
    read_pointer(data_dir, CURRENT_FILE)
}

/// The version that was current before the last promotion, if any.
pub fn previous_bundle_version(data_dir: &Path) -> Result<Option<String>, BundleError> {
    read_pointer(data_dir, PREVIOUS_FILE)
}

/// Deletes bundles other than `CURRENT`, `PREVIOUS` and the `keep_newest` newest of the rest (by
/// the second their name ends with; a name that does not end with one is never deleted).
/// Returns the deleted names. A retrain writes a bundle each round, promoted or not.
pub fn prune_bundles(data_dir: &Path, keep_newest: usize) -> Result<Vec<String>, BundleError> {
    let bundles = bundles_dir(data_dir);
    let pinned = [
        current_bundle_version(data_dir)?,
        previous_bundle_version(data_dir)?,
    ];
    let entries = match std::fs::read_dir(&bundles) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_error(&bundles)(source)),
    };
    let mut candidates: Vec<(u64, String)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !pinned.iter().flatten().any(|pinned| pinned == name))
        .filter_map(|name| {
            let (_, made_at) = name.rsplit_once('-')?;
            Some((made_at.parse().ok()?, name))
        })
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for (_, name) in candidates.into_iter().skip(keep_newest) {
        let dir = bundles.join(&name);
        std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        removed.push(name);
    }
    Ok(removed)
}

/// Atomically points `bundles/PREVIOUS` at `version`.
pub fn set_previous_bundle(data_dir: &Path, version: &str) -> Result<(), BundleError> {
    let previous = bundles_dir(data_dir).join(PREVIOUS_FILE);
    common::fs::write_pointer_file(&previous, version).map_err(io_error(&previous))
}

/// Atomically points `bundles/CURRENT` at `version`.
pub fn set_current_bundle(data_dir: &Path, version: &str) -> Result<(), BundleError> {
    let current = bundles_dir(data_dir).join(CURRENT_FILE);
    common::fs::write_pointer_file(&current, version).map_err(io_error(&current))
}

/// Writes `bundles/<version>/` through a staging directory: `write_files` fills it, then it is
/// renamed into place whole. Returns the bundle's path (CURRENT is not changed).
pub fn write_bundle_dir(
    data_dir: &Path,
    version: &str,
    write_files: impl FnOnce(&Path) -> Result<(), BundleError>,
) -> Result<PathBuf, BundleError> {
    let bundles = bundles_dir(data_dir);
    std::fs::create_dir_all(&bundles).map_err(io_error(&bundles))?;
    let staging = bundles.join(format!(".{version}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    if let Err(error) = write_files(&staging).and_then(|()| sync_files(&staging)) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    let target = bundles.join(version);
    common::fs::rename_durably(&staging, &target).map_err(io_error(&target))?;
    Ok(target)
}

/// Syncs every file `write_files` left in the staging directory (writers such as libtorch's do not).
fn sync_files(dir: &Path) -> Result<(), BundleError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(io_error(&path))?;
        }
    }
    Ok(())
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BundleError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::Missing {
                path: path.to_owned(),
            })
        }
        Err(source) => return Err(io_error(path)(source)),
    };
    serde_json::from_slice(&bytes).map_err(|error| invalid(path, format!("invalid JSON: {error}")))
}

pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), BundleError> {
    let text = serde_json::to_vec_pretty(value).expect("bundle types serialise");
    std::fs::write(path, text).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_pointed_bundles_and_the_newest_others() {
        let data_dir = tempfile::tempdir().unwrap();
        let bundles = bundles_dir(data_dir.path());
        for name in [
            "gru-events-100",
            "gru-events-200",
            "gru-events-300",
            "gru-events-400",
            "gru-events-500",
            "gru-events-600",
            "hand-made",
        ] {
            std::fs::create_dir_all(bundles.join(name)).unwrap();
        }
        set_current_bundle(data_dir.path(), "gru-events-100").unwrap();
        set_previous_bundle(data_dir.path(), "gru-events-300").unwrap();

        let mut removed = prune_bundles(data_dir.path(), 2).unwrap();
        removed.sort();
        assert_eq!(removed, ["gru-events-200", "gru-events-400"]);
        let mut left: Vec<String> = std::fs::read_dir(&bundles)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "CURRENT",
                "PREVIOUS",
                "gru-events-100",
                "gru-events-300",
                "gru-events-500",
                "gru-events-600",
                "hand-made"
            ]
        );
    }
}
