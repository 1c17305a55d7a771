//! The model bundle: one directory holding everything needed to serve a trained model.
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
//! Loading validates every file against `config.json` and names the file and the problem when
//! something is missing, corrupt or inconsistent. Bundles are written to a temporary directory
//! and renamed into place, and `bundles/CURRENT` names the served one, so a reader never sees a
//! half-written bundle.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::gru_kernel::ServingGru;
use crate::id_map::IdMap;
use crate::model::{EncoderKind, ModelConfig, SequenceEncoder, SequenceModel};

pub const BUNDLE_FORMAT_VERSION: u32 = 1;
const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "weights.safetensors";
const ID_MAP_FILE: &str = "id_map.json";
const ITEM_EMBEDDINGS_FILE: &str = "item_embeddings.safetensors";
const ITEM_EMBEDDINGS_TENSOR: &str = "item_embeddings";
const METRICS_FILE: &str = "metrics.json";
const CURRENT_FILE: &str = "CURRENT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// Inner product between query and item vectors (vectors are not normalised).
    Dot,
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

fn invalid(path: &Path, problem: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A loaded bundle, ready to embed.
pub struct ModelBundle {
    pub dir: PathBuf,
    pub config: BundleConfig,
    pub id_map: IdMap,
    /// `[num_items, embedding_dim]`, row `i` is model index `i + 1`.
    pub item_vectors: Tensor,
    pub encoder: Box<dyn SequenceEncoder>,
}

impl std::fmt::Debug for ModelBundle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ModelBundle")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ModelBundle {
    pub fn load(dir: &Path) -> Result<ModelBundle, BundleError> {
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

        let embeddings_path = dir.join(ITEM_EMBEDDINGS_FILE);
        let item_vectors = read_tensor(&embeddings_path, ITEM_EMBEDDINGS_TENSOR)?;
        expect_shape(
            &embeddings_path,
            ITEM_EMBEDDINGS_TENSOR,
            &item_vectors,
            &[config.num_items, config.embedding_dim],
        )?;

        let encoder: Box<dyn SequenceEncoder> = match &config.encoder {
            EncoderSpec::Native(model_config) => {
                check_native_config(&config_path, &config, model_config)?;
                let model = load_native_weights(&dir.join(WEIGHTS_FILE), model_config)?;
                let table_rows = model.item_vectors();
                if !table_rows.allclose(&item_vectors, 1e-6, 1e-6, false) {
                    return Err(invalid(
                        &embeddings_path,
                        "item embeddings differ from the item table in weights.safetensors",
                    ));
                }
                match model_config.encoder {
                    EncoderKind::Gru => Box::new(
                        ServingGru::new(model)
                            .map_err(|problem| invalid(&dir.join(WEIGHTS_FILE), problem))?,
                    ),
                    EncoderKind::Sasrec => Box::new(model),
                }
            }
            EncoderSpec::Torchscript { file } => {
                Box::new(load_torchscript(&dir.join(file), config.embedding_dim)?)
            }
        };
        Ok(ModelBundle {
            dir: dir.to_owned(),
            config,
            id_map,
            item_vectors,
            encoder,
        })
    }

    /// Loads the bundle `bundles/CURRENT` points at.
    pub fn load_current(data_dir: &Path) -> Result<ModelBundle, BundleError> {
        ModelBundle::load(&current_bundle_dir(data_dir)?)
    }
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

/// Atomically points `bundles/CURRENT` at `version`.
pub fn set_current_bundle(data_dir: &Path, version: &str) -> Result<(), BundleError> {
    let current = bundles_dir(data_dir).join(CURRENT_FILE);
    write_pointer_file(&current, version).map_err(io_error(&current))
}

/// Replaces `path` with `name` and a newline so that readers see the old name or the new one,
/// never a partial write: the text goes to a temporary file in the same directory, then renamed.
pub fn write_pointer_file(path: &Path, name: &str) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("pointer");
    let temporary = path.with_file_name(format!(".{file_name}.{}", std::process::id()));
    std::fs::write(&temporary, format!("{name}\n"))?;
    std::fs::rename(&temporary, path)
}

/// What to record next to a trained native model.
pub struct NativeBundle<'a> {
    pub model_version: &'a str,
    pub dataset: &'a str,
    pub model: &'a SequenceModel,
    pub id_map: &'a IdMap,
    pub metrics: &'a serde_json::Value,
}

/// Writes `bundles/<model_version>/` atomically and returns its path (CURRENT is not changed).
pub fn save_native_bundle(
    data_dir: &Path,
    bundle: &NativeBundle<'_>,
) -> Result<PathBuf, BundleError> {
    let model_config = bundle.model.config().clone();
    let config = BundleConfig {
        format_version: BUNDLE_FORMAT_VERSION,
        model_name: model_config.encoder.to_string(),
        model_version: bundle.model_version.to_owned(),
        dataset: bundle.dataset.to_owned(),
        scoring: Scoring::Dot,
        embedding_dim: model_config.embedding_dim,
        max_len: model_config.max_len,
        num_items: model_config.num_items,
        encoder: EncoderSpec::Native(model_config),
    };
    write_bundle_dir(data_dir, bundle.model_version, |staging| {
        write_json(&staging.join(CONFIG_FILE), &config)?;
        write_json(&staging.join(ID_MAP_FILE), &bundle.id_map.raw_ids())?;
        write_json(&staging.join(METRICS_FILE), bundle.metrics)?;
        let weights_path = staging.join(WEIGHTS_FILE);
        bundle
            .model
            .var_store()
            .save(&weights_path)
            .map_err(|error| invalid(&weights_path, error.to_string()))?;
        write_item_embeddings(
            &staging.join(ITEM_EMBEDDINGS_FILE),
            &bundle.model.item_vectors(),
        )
    })
}

fn write_bundle_dir(
    data_dir: &Path,
    version: &str,
    write_files: impl FnOnce(&Path) -> Result<(), BundleError>,
) -> Result<PathBuf, BundleError> {
    let bundles = bundles_dir(data_dir);
    std::fs::create_dir_all(&bundles).map_err(io_error(&bundles))?;
    let staging = bundles.join(format!(".{version}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    if let Err(error) = write_files(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    let target = bundles.join(version);
    std::fs::rename(&staging, &target).map_err(io_error(&target))?;
    Ok(target)
}

pub fn write_item_embeddings(path: &Path, item_vectors: &Tensor) -> Result<(), BundleError> {
    Tensor::write_safetensors(&[(ITEM_EMBEDDINGS_TENSOR, item_vectors)], path)
        .map_err(|error| invalid(path, error.to_string()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BundleError> {
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

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), BundleError> {
    let text = serde_json::to_vec_pretty(value).expect("bundle types serialise");
    std::fs::write(path, text).map_err(io_error(path))
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, BundleError> {
    if !path.exists() {
        return Err(BundleError::Missing {
            path: path.to_owned(),
        });
    }
    Tensor::read_safetensors(path)
        .map_err(|error| invalid(path, format!("not a readable safetensors file: {error}")))
}

fn read_tensor(path: &Path, name: &str) -> Result<Tensor, BundleError> {
    read_safetensors(path)?
        .into_iter()
        .find(|(tensor_name, _)| tensor_name == name)
        .map(|(_, tensor)| tensor)
        .ok_or_else(|| invalid(path, format!("has no tensor named '{name}'")))
}

fn expect_shape(
    path: &Path,
    name: &str,
    tensor: &Tensor,
    shape: &[i64],
) -> Result<(), BundleError> {
    if tensor.size() != shape {
        return Err(invalid(
            path,
            format!(
                "tensor '{name}' has shape {:?}, config.json implies {shape:?}",
                tensor.size()
            ),
        ));
    }
    if tensor.kind() != Kind::Float {
        return Err(invalid(
            path,
            format!("tensor '{name}' is {:?}, expected float32", tensor.kind()),
        ));
    }
    Ok(())
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

fn load_native_weights(
    path: &Path,
    model_config: &ModelConfig,
) -> Result<SequenceModel, BundleError> {
    let mut stored: std::collections::HashMap<String, Tensor> =
        read_safetensors(path)?.into_iter().collect();
    let model = SequenceModel::new(model_config.clone());
    let mut variables: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    variables.sort_by(|left, right| left.0.cmp(&right.0));
    tch::no_grad(|| {
        for (name, mut variable) in variables {
            let Some(value) = stored.remove(&name) else {
                return Err(invalid(path, format!("tensor '{name}' is missing")));
            };
            expect_shape(path, &name, &value, &variable.size())?;
            variable.copy_(&value);
        }
        Ok(())
    })?;
    if let Some(extra) = stored.keys().min() {
        return Err(invalid(
            path,
            format!(
                "tensor '{extra}' is not part of a {} model",
                model_config.encoder
            ),
        ));
    }
    Ok(model)
}

/// A TorchScript module exported from PyTorch.
pub struct TorchScriptEncoder {
    module: tch::CModule,
}

impl SequenceEncoder for TorchScriptEncoder {
    fn encode(&self, item_indices: &Tensor) -> Result<Tensor, tch::TchError> {
        tch::no_grad(|| self.module.forward_ts(&[item_indices]))
    }
}

fn load_torchscript(path: &Path, embedding_dim: i64) -> Result<TorchScriptEncoder, BundleError> {
    if !path.exists() {
        return Err(BundleError::Missing {
            path: path.to_owned(),
        });
    }
    let mut module = tch::CModule::load(path)
        .map_err(|error| invalid(path, format!("not a loadable TorchScript module: {error}")))?;
    module.set_eval();
    let encoder = TorchScriptEncoder { module };
    // One probe call checks the module's contract before anyone depends on it.
    let probe = Tensor::from_slice(&[0i64, 1]).view([1, 2]);
    let output = encoder.encode(&probe).map_err(|error| {
        invalid(
            path,
            format!("forward on a [1, 2] int64 batch failed: {error}"),
        )
    })?;
    if output.size() != [1, embedding_dim] {
        return Err(invalid(
            path,
            format!(
                "returns shape {:?} for a [1, 2] batch, expected [1, {embedding_dim}]",
                output.size()
            ),
        ));
    }
    Ok(encoder)
}
