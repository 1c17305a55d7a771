//! `recsys retrain` as a process beside a served deployment: archived events train a challenger,
//! the gate compares it with the champion on the newest events, and the outcome shows in the
//! bundle pointers; a second retrain at the same time is refused by the lock.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model_server::fixtures::TINY_DATASET;

fn stop(server: &mut support::KillOnDrop) {
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
}

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
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let users = dataset::Dataset::load(data_dir.path(), TINY_DATASET)
        .unwrap()
        .user_sequences();
    let later: String = users
        .iter()
        .take(30)
        .enumerate()
        .map(|(step, user)| {
            format!(
                "{{\"event_id\": \"later-{0}\", \"user_id\": \"{0}\", \"item_id\": \"i{1}\", \"event_type\": \"click\", \"event_time_ms\": {2}}}\n",
                user.user_id,
                step % 40,
                now_ms + step as u128
            )
        })
        .collect();
    let posted = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "content-type: application/x-ndjson",
        ])
        .arg(format!("http://{address}/events"))
        .args(["--data-binary", &later])
        .output()
        .unwrap();
    assert!(posted.status.success(), "{posted:?}");
    stop(&mut server);

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
    assert!(printed.contains("30 users: champion ndcg@10"), "{printed}");

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
