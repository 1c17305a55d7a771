//! A model is never served with an index of another bundle's item vectors: after a new
//! `recsys train`, `recsys serve` answers popular items with the reason and is not ready, and
//! `recsys index --if-missing` rebuilds the index for the new bundle instead of keeping the old.

mod support;

use std::path::Path;
use std::process::Output;

use dataset::bundle::EncoderKind;
use model_server::fixtures::train_tiny_bundle;
use serde_json::Value;
use support::KillOnDrop;

fn recsys_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_recsys"))
}

fn index_if_missing(data_dir: &Path) -> String {
    let Output { status, stdout, .. } = support::recsys(recsys_binary(), data_dir)
        .args(["index", "--if-missing", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(status.success());
    String::from_utf8(stdout).unwrap()
}

/// `/readyz` and one answer for a session of known items from a fresh `recsys serve`.
async fn serve_and_ask(data_dir: &Path) -> (u16, Value, Value) {
    let (child, address) = support::serve(recsys_binary(), data_dir, |_| {});
    let _server = KillOnDrop(child);
    let client = reqwest::Client::new();
    let readiness = client
        .get(format!("http://{address}/readyz"))
        .send()
        .await
        .unwrap();
    let status = readiness.status().as_u16();
    let readiness: Value = readiness.json().await.unwrap();
    let answer: Value = client
        .post(format!("http://{address}/recs/retrieve?count=5"))
        .json(&serde_json::json!({"item_seq_raw": [["i1", "i2", "i3"]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (status, readiness, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bundle_is_not_served_with_the_old_index_and_index_if_missing_rebuilds() {
    let data_dir = tempfile::tempdir().unwrap();
    let first = support::tiny_deployment(data_dir.path(), recsys_binary());
    let first_version = first.bundle_dir.file_name().unwrap().to_str().unwrap();
    let kept = index_if_missing(data_dir.path());
    assert!(kept.contains("built for the current bundle"), "{kept}");

    // Bundle versions carry the training time in seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let second_version = second.bundle_dir.file_name().unwrap().to_str().unwrap();
    assert_ne!(first_version, second_version);

    let (status, readiness, answer) = serve_and_ask(data_dir.path()).await;
    assert_eq!(status, 503, "{readiness}");
    let pairing = readiness["dependencies"]["model_index_pairing"]
        .as_str()
        .unwrap();
    assert!(
        pairing.contains(first_version) && pairing.contains(second_version),
        "{pairing}"
    );
    let metadata = &answer["metadata"];
    assert_eq!(metadata["source"], "popular", "{answer}");
    assert_eq!(
        metadata["fallback_reason"], "model_index_mismatch",
        "{answer}"
    );
    assert_eq!(metadata["index_bundle"], first_version, "{answer}");
    assert_eq!(answer["recommendations"].as_array().unwrap().len(), 5);

    let rebuilt = index_if_missing(data_dir.path());
    assert!(rebuilt.contains("rebuilding"), "{rebuilt}");
    let (status, readiness, answer) = serve_and_ask(data_dir.path()).await;
    assert_eq!(status, 200, "{readiness}");
    assert_eq!(readiness["dependencies"]["model_index_pairing"], "ok");
    let metadata = &answer["metadata"];
    assert_eq!(metadata["source"], "personalized", "{answer}");
    assert_eq!(metadata["model_version"], second_version, "{answer}");
    assert_eq!(metadata["index_bundle"], second_version, "{answer}");
}
