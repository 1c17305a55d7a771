//! Bundle round trip and the errors of corrupt or mismatched bundles.

mod common;

use model_server::bundle::{current_bundle_dir, ModelBundle};
use model_server::model::EncoderKind;
use model_server::offline::evaluate_bundle;
use tch::Tensor;

fn queries(bundle: &ModelBundle) -> Tensor {
    let batch = Tensor::from_slice(&[0i64, 0, 3, 7, 1, 9, 2, 5, 12, 40, 33, 2]).view([2, 6]);
    bundle.encoder.encode(&batch).unwrap()
}

#[test]
fn reloaded_bundles_give_identical_outputs_for_both_encoders() {
    for encoder in [EncoderKind::Sasrec, EncoderKind::Gru] {
        let (data_dir, outcome) = common::trained_data_dir(encoder);
        assert_eq!(
            current_bundle_dir(data_dir.path()).unwrap(),
            outcome.bundle_dir
        );
        let first = ModelBundle::load(&outcome.bundle_dir).unwrap();
        let second = ModelBundle::load(&outcome.bundle_dir).unwrap();
        assert_eq!(first.config, second.config);
        assert_eq!(first.config.model_name, encoder.to_string());
        assert!(first
            .config
            .model_version
            .starts_with(&format!("{encoder}-tiny-")));
        let difference = (queries(&first) - queries(&second))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(difference, 0.0, "{encoder}");
        assert!(first.item_vectors.equal(&second.item_vectors));
        assert_eq!(first.id_map, second.id_map);

        // Test numbers come from the files alone, the same every time, and training did not
        // record any (the test split is read once, for a configuration chosen on validation).
        let evaluated = evaluate_bundle(data_dir.path(), &outcome.bundle_dir).unwrap();
        let again = evaluate_bundle(data_dir.path(), &outcome.bundle_dir).unwrap();
        assert_eq!(evaluated.model, again.model);
        assert_eq!(evaluated.popularity, again.popularity);
        let metrics: serde_json::Value = serde_json::from_slice(
            &std::fs::read(outcome.bundle_dir.join("metrics.json")).unwrap(),
        )
        .unwrap();
        assert!(metrics.get("training").is_some());
        assert!(
            metrics.get("test").is_none(),
            "training read the test split"
        );
    }
}

/// Indexing and a torch-free API read the bundle with the `safetensors` crate alone: the same
/// configuration, ids and vectors as libtorch loads.
#[test]
fn the_torch_free_manifest_reads_what_libtorch_reads() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Gru);
    let loaded = ModelBundle::load(&outcome.bundle_dir).unwrap();
    let manifest = dataset::BundleManifest::load(&outcome.bundle_dir).unwrap();
    assert_eq!(manifest.config, loaded.config);
    assert_eq!(manifest.id_map, loaded.id_map);
    let from_libtorch: Vec<f32> =
        Vec::try_from(loaded.item_vectors.contiguous().view([-1])).unwrap();
    assert_eq!(manifest.read_item_vectors().unwrap(), from_libtorch);
}

fn load_error(dir: &std::path::Path) -> String {
    ModelBundle::load(dir).unwrap_err().to_string()
}

#[test]
fn damaged_bundles_name_the_file_and_the_problem() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Sasrec);
    let original = &outcome.bundle_dir;

    let missing = common::copy_dir(original);
    std::fs::remove_file(missing.path().join("weights.safetensors")).unwrap();
    let error = load_error(missing.path());
    assert!(error.contains("weights.safetensors: missing"), "{error}");

    let truncated = common::copy_dir(original);
    let weights = truncated.path().join("weights.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let error = load_error(truncated.path());
    assert!(
        error.contains("weights.safetensors: not a readable safetensors file"),
        "{error}"
    );

    let bad_json = common::copy_dir(original);
    std::fs::write(
        bad_json.path().join("config.json"),
        "{\"format_version\": 1,",
    )
    .unwrap();
    let error = load_error(bad_json.path());
    assert!(error.contains("config.json: invalid JSON"), "{error}");

    let short_id_map = common::copy_dir(original);
    let id_map_path = short_id_map.path().join("id_map.json");
    let mut ids: Vec<String> =
        serde_json::from_slice(&std::fs::read(&id_map_path).unwrap()).unwrap();
    ids.pop();
    std::fs::write(&id_map_path, serde_json::to_vec(&ids).unwrap()).unwrap();
    let error = load_error(short_id_map.path());
    assert!(
        error.contains("id_map.json: holds 39 item ids but config.json says num_items = 40"),
        "{error}"
    );

    // A config that promises a different architecture than the weights hold.
    let wrong_dim = common::copy_dir(original);
    let config_path = wrong_dim.path().join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("\"num_layers\": 1", "\"num_layers\": 2"),
    )
    .unwrap();
    let error = load_error(wrong_dim.path());
    assert!(
        error.contains("weights.safetensors: tensor 'encoder.block_1.")
            && error.contains("is missing"),
        "{error}"
    );

    let wrong_embeddings = common::copy_dir(original);
    model_server::bundle::write_item_embeddings(
        &wrong_embeddings.path().join("item_embeddings.safetensors"),
        &Tensor::zeros([40, 8], (tch::Kind::Float, tch::Device::Cpu)),
    )
    .unwrap();
    let error = load_error(wrong_embeddings.path());
    assert!(
        error.contains("item_embeddings.safetensors: tensor 'item_embeddings' has shape [40, 8], config.json implies [40, 16]"),
        "{error}"
    );

    let stale_embeddings = common::copy_dir(original);
    model_server::bundle::write_item_embeddings(
        &stale_embeddings.path().join("item_embeddings.safetensors"),
        &Tensor::zeros([40, 16], (tch::Kind::Float, tch::Device::Cpu)),
    )
    .unwrap();
    let error = load_error(stale_embeddings.path());
    assert!(
        error.contains("item embeddings differ from the item table"),
        "{error}"
    );

    let empty = tempfile::tempdir().unwrap();
    let error = load_error(empty.path());
    assert!(error.contains("config.json: missing"), "{error}");
}

#[test]
fn no_current_bundle_says_which_command_makes_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let error = ModelBundle::load_current(data_dir.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("run `recsys train` first"), "{error}");
}
