//! The model bundle loaded for serving: the torch-free manifest (`dataset::bundle`) plus the
//! item vectors as a tensor and the encoder built from the weights (native) or the scripted module
//! (TorchScript). Loading validates every file against `config.json` and names the file and the
//! problem when something is missing, corrupt or inconsistent.

use std::path::{Path, PathBuf};

use dataset::bundle::{
    invalid, write_bundle_dir, write_json, BundleConfig, BundleManifest, EncoderKind, EncoderSpec,
    ModelConfig, Scoring, BUNDLE_FORMAT_VERSION, CONFIG_FILE, ID_MAP_FILE, ITEM_EMBEDDINGS_FILE,
    ITEM_EMBEDDINGS_TENSOR, METRICS_FILE, WEIGHTS_FILE,
};
use dataset::IdMap;
use tch::{Kind, Tensor};

use crate::encoder::SequenceEncoder;
use crate::model::SequenceModel;
use crate::serving_gru::ServingGru;

pub use dataset::bundle::{current_bundle_dir, set_current_bundle, BundleError};

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
        let BundleManifest {
            dir: _,
            config,
            id_map,
        } = BundleManifest::load(dir)?;
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
        Tensor::write_safetensors(&bundle.model.serving_weights(), &weights_path)
            .map_err(|error| invalid(&weights_path, error.to_string()))?;
        write_item_embeddings(
            &staging.join(ITEM_EMBEDDINGS_FILE),
            &bundle.model.item_vectors(),
        )
    })
}

pub fn write_item_embeddings(path: &Path, item_vectors: &Tensor) -> Result<(), BundleError> {
    Tensor::write_safetensors(&[(ITEM_EMBEDDINGS_TENSOR, item_vectors)], path)
        .map_err(|error| invalid(path, error.to_string()))
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
