//! A TorchScript module exported from Python torch is served through the same embedder interface.

mod common;

use std::process::Command;

use model_server::{Embedder, EmbedderConfig, ModelBundle};

#[derive(serde::Deserialize)]
struct ExpectedCase {
    items: Vec<String>,
    query: Vec<f32>,
}

#[tokio::test]
async fn exported_module_reproduces_pytorch_outputs() {
    let bundle_dir = tempfile::tempdir().unwrap();
    let script = common::manifest_dir().join("scripts/export_torchscript.py");
    let python = common::python_with_torch();
    let status = Command::new(&python)
        .arg(&script)
        .arg("--out")
        .arg(bundle_dir.path())
        .args([
            "--num-items",
            "30",
            "--dim",
            "12",
            "--max-len",
            "50",
            "--seed",
            "3",
        ])
        .status()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {}: {error} (run scripts/setup.sh)",
                python.display()
            )
        });
    assert!(status.success(), "export script failed");

    let bundle = ModelBundle::load(bundle_dir.path()).unwrap();
    assert_eq!(bundle.config.model_name, "meanpool-torchscript");
    let embedder = Embedder::start(bundle, EmbedderConfig::default());
    let expected: Vec<ExpectedCase> =
        serde_json::from_slice(&std::fs::read(bundle_dir.path().join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(expected.len(), 4);
    // Embedded together, the sequences are left-padded to a common length: the module must mask it.
    let sequences: Vec<Vec<String>> = expected.iter().map(|case| case.items.clone()).collect();
    for (case, result) in expected.iter().zip(embedder.embed_many(&sequences).await) {
        let vector = result.unwrap().vector;
        assert_eq!(vector.len(), 12);
        for (actual, wanted) in vector.iter().zip(&case.query) {
            assert!(
                (actual - wanted).abs() < 1e-5,
                "{actual} vs {wanted} for {:?}",
                case.items
            );
        }
    }
    // Candidate scoring uses the exported item embeddings.
    let scores =
        embedder.score_candidates(&expected[0].query, &["i1".to_owned(), "nope".to_owned()]);
    assert!(scores[0].is_some() && scores[1].is_none());
}

#[test]
fn a_module_with_the_wrong_output_is_rejected_at_load() {
    let bundle_dir = tempfile::tempdir().unwrap();
    let script = common::manifest_dir().join("scripts/export_torchscript.py");
    let status = Command::new(common::python_with_torch())
        .arg(&script)
        .arg("--out")
        .arg(bundle_dir.path())
        .args(["--num-items", "10", "--dim", "8"])
        .status()
        .unwrap();
    assert!(status.success());
    // Claim a different dimension than the module returns (and make the embeddings agree with it).
    let config_path = bundle_dir.path().join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("\"embedding_dim\": 8", "\"embedding_dim\": 4"),
    )
    .unwrap();
    model_server::bundle::write_item_embeddings(
        &bundle_dir.path().join("item_embeddings.safetensors"),
        &tch::Tensor::zeros([10, 4], (tch::Kind::Float, tch::Device::Cpu)),
    )
    .unwrap();
    let error = ModelBundle::load(bundle_dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("module.pt: returns shape [1, 8] for a [1, 2] batch, expected [1, 4]"),
        "{error}"
    );

    std::fs::write(bundle_dir.path().join("module.pt"), b"not a zip archive").unwrap();
    let error = ModelBundle::load(bundle_dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("module.pt: not a loadable TorchScript module"),
        "{error}"
    );
}
