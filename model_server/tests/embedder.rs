//! The embedder: unknown ids, empty sequences, truncation, and micro-batching under concurrency.

mod common;

use std::time::Duration;

use model_server::model::EncoderKind;
use model_server::{EmbedError, Embedder, EmbedderConfig, ModelBundle};

fn ids(raw: &[&str]) -> Vec<String> {
    raw.iter().map(|id| id.to_string()).collect()
}

fn start(bundle_dir: &std::path::Path, config: EmbedderConfig) -> Embedder {
    Embedder::start(ModelBundle::load(bundle_dir).unwrap(), config)
}

#[tokio::test]
async fn unknown_items_are_dropped_and_reported() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Sasrec);
    let embedder = start(&outcome.bundle_dir, EmbedderConfig::default());
    let clean = embedder.embed(&ids(&["i1", "i2", "i3"])).await.unwrap();
    assert!(clean.unknown_items.is_empty());
    assert_eq!(clean.vector.len(), 16);

    let noisy = embedder
        .embed(&ids(&["ghost", "i1", "ghost", "i2", "phantom", "i3"]))
        .await
        .unwrap();
    assert_eq!(noisy.unknown_items, ["ghost", "phantom"]);
    assert_eq!(
        noisy.vector, clean.vector,
        "unknown ids must not change the query"
    );
}

#[tokio::test]
async fn an_empty_effective_sequence_is_a_typed_error() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Sasrec);
    let embedder = start(&outcome.bundle_dir, EmbedderConfig::default());
    assert_eq!(
        embedder.embed(&[]).await.unwrap_err(),
        EmbedError::EmptySequence {
            unknown_items: vec![]
        }
    );
    assert_eq!(
        embedder
            .embed(&ids(&["ghost", "phantom"]))
            .await
            .unwrap_err(),
        EmbedError::EmptySequence {
            unknown_items: ids(&["ghost", "phantom"])
        }
    );
}

#[tokio::test]
async fn only_the_most_recent_max_len_items_count() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Sasrec);
    let embedder = start(&outcome.bundle_dir, EmbedderConfig::default());
    assert_eq!(embedder.max_len(), 8);
    let recent = ids(&["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8"]);
    let mut long = ids(&["i30", "i31", "i32"]);
    long.extend(recent.clone());
    let from_recent = embedder.embed(&recent).await.unwrap().vector;
    let from_long = embedder.embed(&long).await.unwrap().vector;
    assert_eq!(from_recent, from_long);
}

#[tokio::test]
async fn a_query_does_not_depend_on_the_other_sequences_of_its_batch() {
    // A GRU reads padding, so this holds only because every batch is padded to max_len.
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Gru);
    let embedder = start(&outcome.bundle_dir, EmbedderConfig::default());
    let short = ids(&["i4", "i9"]);
    let long = ids(&["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8"]);
    let alone = embedder.embed(&short).await.unwrap().vector;
    let together = embedder.embed_many(&[long, short]).await;
    let batched = &together[1].as_ref().unwrap().vector;
    // Equal up to float summation order (matrix kernels differ by batch size), not by padding.
    let largest_difference = batched
        .iter()
        .zip(&alone)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(largest_difference < 1e-5, "{largest_difference}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_batches_and_get_their_own_answers() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Sasrec);
    let sequences: Vec<Vec<String>> = (0..64)
        .map(|user| {
            (0..(1 + user % 8))
                .map(|step| format!("i{}", (user * 7 + step * 3) % 40))
                .collect()
        })
        .collect();

    // Reference answers, one sequence per forward pass.
    let sequential = start(
        &outcome.bundle_dir,
        EmbedderConfig {
            max_batch_size: 1,
            ..EmbedderConfig::default()
        },
    );
    let mut expected = Vec::new();
    for sequence in &sequences {
        expected.push(sequential.embed(sequence).await.unwrap().vector);
    }
    assert_eq!(sequential.batch_counts(), (64, 64));

    // 64 concurrent callers, with a wait long enough for all of them to be queued together.
    let batching = start(
        &outcome.bundle_dir,
        EmbedderConfig {
            max_batch_size: 32,
            max_wait: Duration::from_millis(50),
            queue_capacity: 128,
            ..EmbedderConfig::default()
        },
    );
    let tasks: Vec<_> = sequences
        .iter()
        .cloned()
        .map(|sequence| {
            let embedder = batching.clone();
            tokio::spawn(async move { embedder.embed(&sequence).await.unwrap().vector })
        })
        .collect();
    for (task, wanted) in tasks.into_iter().zip(&expected) {
        let vector = task.await.unwrap();
        for (actual, wanted) in vector.iter().zip(wanted) {
            assert!(
                (actual - wanted).abs() < 1e-4,
                "batched answer differs: {actual} vs {wanted}"
            );
        }
    }
    let (batches, embedded) = batching.batch_counts();
    assert_eq!(embedded, 64);
    assert!(
        batches >= 2,
        "max_batch_size 32 needs at least two passes, ran {batches}"
    );
    assert!(
        batches <= 8,
        "64 concurrent callers should share passes, ran {batches}"
    );
}

#[tokio::test]
async fn a_full_queue_applies_backpressure_instead_of_dropping() {
    let (_data_dir, outcome) = common::trained_data_dir(EncoderKind::Gru);
    let embedder = start(
        &outcome.bundle_dir,
        EmbedderConfig {
            max_batch_size: 4,
            max_wait: Duration::ZERO,
            queue_capacity: 2,
            ..EmbedderConfig::default()
        },
    );
    let sequences: Vec<Vec<String>> = (0..50).map(|n| vec![format!("i{}", n % 40)]).collect();
    let results = embedder.embed_many(&sequences).await;
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(embedder.batch_counts().1, 50);
}

#[tokio::test]
async fn embed_each_answers_every_sequence_in_order_as_embed_would() {
    for kind in [EncoderKind::Gru, EncoderKind::Sasrec] {
        let (_data_dir, outcome) = common::trained_data_dir(kind);
        let embedder = start(&outcome.bundle_dir, EmbedderConfig::default());
        let sequences = vec![
            ids(&["i1", "i2", "i3"]),
            ids(&["ghost"]),
            ids(&["i9", "phantom", "i4"]),
        ];
        let results = embedder.embed_each(&sequences).await;
        assert_eq!(results.len(), 3, "{kind:?}");
        for index in [0, 2] {
            let alone = embedder.embed(&sequences[index]).await.unwrap();
            let together = results[index].as_ref().unwrap();
            assert_eq!(together.unknown_items, alone.unknown_items, "{kind:?}");
            let largest_difference = together
                .vector
                .iter()
                .zip(&alone.vector)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(largest_difference < 1e-5, "{kind:?}: {largest_difference}");
        }
        assert!(
            matches!(&results[1], Err(EmbedError::EmptySequence { unknown_items }) if unknown_items == &["ghost"]),
            "{kind:?}: {:?}",
            results[1]
                .as_ref()
                .map(|embedding| &embedding.unknown_items)
        );
    }
}
