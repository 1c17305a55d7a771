//! `recsys retrain` as a process beside a served deployment: archived events train a challenger,
//! the gate compares it with the champion on the newest events, and the outcome shows in the
//! bundle pointers; a second retrain at the same time is refused by the lock.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use model_server::fixtures::TINY_DATASET;

#[test]
fn retrain_gates_and_promotes_or_keeps_the_champion_one_at_a_time() {
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    support::tiny_deployment(data_dir.path(), recsys);
    let champion = std::fs::read_to_string(data_dir.path().join("bundles/CURRENT")).unwrap();

    // Training events, then (two seconds later) the holdout's.
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
    std::thread::sleep(Duration::from_millis(2_500));
    support::post_later_clicks(data_dir.path(), address, 30);
    support::stop(&mut server);

    let retrain = || {
        let mut command = support::recsys(recsys, data_dir.path());
        command
            .args(["retrain", "--holdout-hours", "0.0005", "--max-epochs", "3"])
            .args(["--items-from", TINY_DATASET, "--data-dir"])
            .arg(data_dir.path());
        command
    };
    let first = retrain().stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = retrain().output().unwrap();
    assert!(!second.status.success(), "two retrains ran at once");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another retrain holds"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let first = first.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{printed}");
    assert!(
        printed.contains("[3/4] gate against the champion"),
        "{printed}"
    );
    assert!(
        printed.contains("30 holdout events: champion ndcg@10"),
        "{printed}"
    );

    let current = std::fs::read_to_string(data_dir.path().join("bundles/CURRENT")).unwrap();
    let previous = std::fs::read_to_string(data_dir.path().join("bundles/PREVIOUS")).ok();
    if printed.contains("promoted ") {
        assert_ne!(current, champion, "{printed}");
        assert_eq!(previous.as_deref(), Some(champion.as_str()));
        assert!(printed.contains("[4/4] index and promote"), "{printed}");
    } else {
        assert!(printed.contains("was refused"), "{printed}");
        assert_eq!(
            current, champion,
            "a refused challenger leaves the champion"
        );
        assert_eq!(previous, None);
    }
}
