//! `recsys experiment` trains a configuration over several seeds and reports mean ± sd, reading
//! the test split only when asked.

use std::process::Command;

use model_server::fixtures::{write_tiny_dataset, TINY_DATASET};

fn experiment(data_dir: &std::path::Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_recsys"))
        .args(["experiment", "--dataset", TINY_DATASET, "--seeds", "2"])
        .args([
            "--embedding-dim",
            "8",
            "--max-len",
            "6",
            "--heads",
            "1",
            "--max-epochs",
            "2",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn seeds_are_summarised_and_test_is_read_only_when_asked() {
    let data_dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(data_dir.path()).unwrap();

    let validation_only = experiment(data_dir.path(), &["--seed", "3"]);
    assert!(validation_only.contains("seed 3: "), "{validation_only}");
    assert!(validation_only.contains("seed 4: "), "{validation_only}");
    assert!(
        validation_only.contains("2 seeds, mean ± sd: validation ndcg@10 "),
        "{validation_only}"
    );
    assert!(!validation_only.contains("test"), "{validation_only}");

    let with_test = experiment(data_dir.path(), &["--test"]);
    assert!(with_test.contains("test (read once"), "{with_test}");
    // The scratch bundles are gone; nothing became current.
    assert!(!data_dir.path().join("bundles/CURRENT").exists());
    let left: Vec<_> = std::fs::read_dir(data_dir.path().join("experiments"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn zero_seeds_is_refused_by_name() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_recsys"))
        .args(["experiment", "--seeds", "0", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--seeds must be at least 1"), "{stderr}");
}

/// `scripts/run.sh` trains one of the seeds MODEL.md reports, and a fresh run must reproduce that
/// seed's numbers exactly: two `recsys train` processes with one seed write the same item vectors
/// bit for bit (a process of its own each, as the seeded generator is global to libtorch).
#[test]
fn training_twice_with_one_seed_gives_the_same_bundle() {
    let train = |seed: &str| {
        let data_dir = tempfile::tempdir().unwrap();
        write_tiny_dataset(data_dir.path()).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_recsys"))
            .args(["train", "--dataset", TINY_DATASET, "--seed", seed])
            .args([
                "--embedding-dim",
                "8",
                "--max-len",
                "6",
                "--max-epochs",
                "3",
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let bundle = model_server::bundle::current_bundle_dir(data_dir.path()).unwrap();
        std::fs::read(bundle.join(dataset::bundle::ITEM_EMBEDDINGS_FILE)).unwrap()
    };
    let first = train("11");
    assert_eq!(
        first,
        train("11"),
        "the same seed trained different vectors"
    );
    assert_ne!(first, train("12"), "the seed changed nothing");
}
