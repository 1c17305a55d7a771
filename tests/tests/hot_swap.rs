//! A promotion and a rollback without a restart: while the API answers a steady load, a new
//! bundle is promoted (its index built, then `bundles/CURRENT` moved) and the watcher swaps model
//! and index together; then a rollback brings the old pair back. No request fails, and no answer
//! names one bundle's model with another's index.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::AppState;
use dataset::bundle::EncoderKind;
use engine::config::Config;
use model_server::fixtures::{tiny_train_config, train_tiny_bundle, TINY_DATASET};
use serde_json::{json, Value};

/// One answer: its model, the bundle its index was built for, when it was asked and answered.
#[derive(Debug, Clone, PartialEq)]
struct Served {
    model_version: Option<String>,
    index_bundle: Option<String>,
    sent: Instant,
    answered: Instant,
}

async fn load(
    client: reqwest::Client,
    url: String,
    stop: tokio_util::sync::CancellationToken,
    answers: Arc<Mutex<Vec<Served>>>,
) {
    while !stop.is_cancelled() {
        let sent = Instant::now();
        let response = client
            .post(format!("{url}/recs/retrieve?count=5"))
            .json(&json!({"item_seq_raw": [["i1", "i2", "i3"]]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "a request failed during the swap");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["metadata"]["source"], "personalized", "{answer}");
        let text = |field: &str| answer["metadata"][field].as_str().map(str::to_owned);
        answers.lock().unwrap().push(Served {
            model_version: text("model_version"),
            index_bundle: text("index_bundle"),
            sent,
            answered: Instant::now(),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_bundle_is_served_without_a_restart_or_a_mixed_answer() {
    let data_dir = tempfile::tempdir().unwrap();
    let first = train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let config = Config {
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    engine::startup::build_index_from_bundle(&config)
        .await
        .unwrap();
    let (retriever, _refreshers) = engine::startup::build_retriever(&config).await.unwrap();
    let first_version = retriever.model_version().to_owned();
    let state = AppState::new(&config, retriever).unwrap();
    let watcher = engine::serving::spawn_bundle_watcher(
        config.clone(),
        Arc::clone(&state.retriever),
        Duration::from_millis(50),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = api::spawn(listener, state, std::future::pending()).unwrap();
    let url = format!("http://{}", api.local_addr);

    let stop = tokio_util::sync::CancellationToken::new();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(load(
                reqwest::Client::new(),
                url.clone(),
                stop.clone(),
                Arc::clone(&answers),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Bundle versions are named by the second they were made in.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = tokio::task::spawn_blocking({
        let dir = data_dir.path().to_owned();
        move || {
            model_server::offline::train_bundle(
                &dir,
                TINY_DATASET,
                &tiny_train_config(EncoderKind::Gru),
                false,
            )
            .unwrap()
        }
    })
    .await
    .unwrap();
    assert_ne!(second.bundle_dir, first.bundle_dir);
    let second_version = dataset::BundleManifest::load(&second.bundle_dir)
        .unwrap()
        .config
        .model_version;
    let promoted = engine::promotion::promote(&config, &second_version)
        .await
        .unwrap();
    assert_eq!(promoted.from.as_deref(), Some(first_version.as_str()));
    assert!(promoted.index_built);
    let served_now = |version: &str| {
        let latest = answers.lock().unwrap().last().cloned();
        latest.and_then(|served| served.model_version).as_deref() == Some(version)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served_now(&second_version) {
        assert!(
            Instant::now() < deadline,
            "the promoted bundle was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The rollback finds the old bundle's index still there and serves the old pair again.
    let rolled_back_at = Instant::now();
    let rolled_back = engine::promotion::rollback(&config).await.unwrap();
    assert_eq!(rolled_back.to, first_version);
    assert!(!rolled_back.index_built, "the old index is reused");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served_now(&first_version) {
        assert!(Instant::now() < deadline, "the rollback was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    watcher.abort();

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert!(answers.len() > 50, "only {} answers", answers.len());
    for served in &answers {
        assert_eq!(
            served.model_version, served.index_bundle,
            "an answer mixed one bundle's model with another's index"
        );
    }
    let served_first = answers
        .iter()
        .filter(|served| served.model_version.as_deref() == Some(&first_version))
        .count();
    let served_second = answers
        .iter()
        .filter(|served| served.model_version.as_deref() == Some(&second_version))
        .count();
    assert!(
        served_first > 0 && served_second > 0,
        "{served_first} / {served_second}"
    );
    assert_eq!(served_first + served_second, answers.len());
    assert_eq!(
        answers.last().unwrap().model_version.as_deref(),
        Some(first_version.as_str()),
        "the rollback is served at the end"
    );
    // A request sent after the new pair first answered is answered by it (requests in flight
    // at the swap may still finish on the old one).
    let swapped_by = answers
        .iter()
        .filter(|served| served.model_version.as_deref() == Some(&second_version))
        .map(|served| served.answered)
        .min()
        .unwrap();
    assert!(
        answers
            .iter()
            .filter(|served| served.sent > swapped_by && served.answered < rolled_back_at)
            .all(|served| served.model_version.as_deref() == Some(&second_version)),
        "a request sent after the swap was answered by the old pair"
    );
    api.task.abort();
    let _ = api.task.await;
}
