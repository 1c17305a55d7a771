//! The promotion gate on real bundles: a challenger that learned nothing is refused, one as good
//! as the champion passes.

use dataset::bundle::EncoderKind;
use dataset::Dataset;
use model_server::fixtures::{tiny_train_config, write_tiny_dataset, TINY_DATASET};
use model_server::gate::{gate, holdout_cases};
use model_server::offline::train_bundle;
use model_server::train::TrainConfig;

#[test]
fn a_worse_challenger_is_refused_and_an_equal_one_passes() {
    let data_dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(data_dir.path()).unwrap();
    let champion = train_bundle(
        data_dir.path(),
        TINY_DATASET,
        &TrainConfig {
            max_epochs: 20,
            patience: 5,
            ..tiny_train_config(EncoderKind::Gru)
        },
        false,
    )
    .unwrap();
    // Bundle versions are named by the second they were made in.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let untrained = train_bundle(
        data_dir.path(),
        TINY_DATASET,
        &TrainConfig {
            max_epochs: 1,
            learning_rate: 1e-9,
            ..tiny_train_config(EncoderKind::Gru)
        },
        false,
    )
    .unwrap();

    // Each user's last interaction happens after everything else: the fresh holdout.
    let mut interactions = Dataset::load(data_dir.path(), TINY_DATASET)
        .unwrap()
        .interactions;
    let holdout_from = interactions
        .iter()
        .map(|interaction| interaction.timestamp)
        .max()
        .unwrap()
        + 1;
    let mut last_of_user = std::collections::HashMap::new();
    for (position, interaction) in interactions.iter().enumerate() {
        let latest = last_of_user
            .entry(interaction.user_id.clone())
            .or_insert(position);
        if interactions[*latest].timestamp <= interaction.timestamp {
            *latest = position;
        }
    }
    for position in last_of_user.into_values() {
        interactions[position].timestamp = holdout_from;
    }
    let cases = holdout_cases(&interactions, holdout_from).len();
    assert!(cases >= 20, "only {cases} holdout events");

    let tolerance = 0.0028;
    let refused = gate(
        &champion.bundle_dir,
        &untrained.bundle_dir,
        &interactions,
        holdout_from,
        tolerance,
    )
    .unwrap();
    assert!(
        refused.champion.ndcg_at_10 > refused.challenger.ndcg_at_10 + tolerance,
        "{refused:?}"
    );
    assert!(!refused.passed, "{refused:?}");
    assert_eq!(refused.cases, cases);

    let equal = gate(
        &champion.bundle_dir,
        &champion.bundle_dir,
        &interactions,
        holdout_from,
        tolerance,
    )
    .unwrap();
    assert!(equal.passed, "{equal:?}");
    assert_eq!(equal.champion, equal.challenger);
}
