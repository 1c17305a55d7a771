//! The learning loop's data path as processes: events streamed to `recsys serve` (embedded) are
//! archived, `recsys export-events` turns the archive into a data set, and `recsys train` trains
//! on it and records the span of events in the bundle.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model_server::fixtures::TINY_DATASET;

#[test]
fn events_served_are_archived_exported_and_trained_on() {
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    support::tiny_deployment(data_dir.path(), recsys);
    let (child, address) = support::serve(recsys, data_dir.path(), |_| {});
    let mut server = support::KillOnDrop(child);

    let replayed = support::recsys(recsys, data_dir.path())
        .args(["replay", "--dataset", TINY_DATASET, "--to"])
        .arg(format!("http://{address}"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(replayed.success());
    // The archive is written at shutdown (its interval is a minute).
    let terminated = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }

    let replayed_events = dataset::Dataset::load(data_dir.path(), TINY_DATASET)
        .unwrap()
        .interactions
        .len();
    let exported = support::recsys(recsys, data_dir.path())
        .args([
            "export-events",
            "--name",
            "events",
            "--items-from",
            TINY_DATASET,
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let window: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir.path().join("datasets/events/window.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(window["events"], replayed_events, "{window}");
    let events = dataset::Dataset::load(data_dir.path(), "events").unwrap();
    assert_eq!(events.interactions.len(), replayed_events);
    assert!(
        events
            .items
            .iter()
            .all(|item| item.title.starts_with("Synthetic item")),
        "the tiny data set's titles carried over"
    );

    let trained = support::recsys(recsys, data_dir.path())
        .args([
            "train",
            "--dataset",
            "events",
            "--embedding-dim",
            "16",
            "--max-epochs",
            "2",
            "--no-make-current",
            "--json",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&trained.stdout).unwrap();
    let bundle = Path::new(report["bundle"].as_str().unwrap());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["data_window"], window);
}
