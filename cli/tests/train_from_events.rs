//! The learning loop's data path as processes: events streamed to `recsys serve` (embedded) are
//! archived, `recsys export-events` turns the archive into a data set, `recsys train` trains on
//! it and records the span of events in the bundle, and `recsys gate` ranks that bundle and the
//! served one on the events that came later.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use model_server::fixtures::TINY_DATASET;

/// Streams the tiny data set to `recsys serve` as live events, then stops it (the archive is
/// written at shutdown: its interval is a minute).
fn replay_and_stop(recsys: &Path, data_dir: &Path) {
    let (child, address) = support::serve(recsys, data_dir, |_| {});
    let mut server = support::KillOnDrop(child);
    let replayed = support::recsys(recsys, data_dir)
        .args(["replay", "--dataset", TINY_DATASET, "--to"])
        .arg(format!("http://{address}"))
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(replayed.success());
    support::stop(&mut server);
}

#[test]
fn events_served_are_archived_exported_and_trained_on() {
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    support::tiny_deployment(data_dir.path(), recsys);
    replay_and_stop(recsys, data_dir.path());
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

    // Later events are the holdout neither model trained on: the gate ranks both on them. (A
    // second replay would not do: it sends the same event ids, which the archive keeps once.)
    std::thread::sleep(Duration::from_millis(1_100));
    let (child, address) = support::serve(recsys, data_dir.path(), |_| {});
    let mut server = support::KillOnDrop(child);
    support::post_later_clicks(data_dir.path(), address, 30);
    support::stop(&mut server);
    let challenger = bundle.file_name().unwrap().to_str().unwrap();
    let gated = support::recsys(recsys, data_dir.path())
        .args(["gate", "--challenger", challenger, "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&gated.stdout);
    let holdout_users: usize = printed
        .lines()
        .find_map(|line| line.strip_prefix("holdout: "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| {
            panic!(
                "no holdout line: {printed}{}",
                String::from_utf8_lossy(&gated.stderr)
            )
        })
        .parse()
        .unwrap();
    assert!(holdout_users > 0, "{printed}");
    assert!(
        printed.contains("champion ") && printed.contains("challenger "),
        "{printed}"
    );
    assert_eq!(
        gated.status.success(),
        printed.contains("passed:"),
        "the exit status says the decision: {printed}{}",
        String::from_utf8_lossy(&gated.stderr)
    );
}
