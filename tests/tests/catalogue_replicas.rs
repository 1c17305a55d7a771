//! The live catalogue across API replicas that share only a real redis-server: items added,
//! changed and removed through either replica while both answer a steady load. Each replica has
//! its own view of the catalogue, as separate processes do; the store is the only channel.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::AppState;
use dataset::bundle::EncoderKind;
use engine::config::Config;
use model_server::fixtures::train_tiny_bundle;
use serde_json::{json, Value};
use testkit::RedisServer;

/// Each replica follows the catalogue this often.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// How long after a write the other replica may still answer without it: the refresh interval
/// plus the refresh itself, with room for a loaded test machine.
const OTHER_REPLICA_BOUND: Duration = Duration::from_millis(1_000);

struct Replica {
    url: String,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_replica(config: &Config) -> Replica {
    // Everything a replica holds is its own: retriever, catalogue view, refreshers.
    let (retriever, _refreshers) = engine::startup::build_retriever(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = api::spawn(
        listener,
        AppState::new(config, retriever).unwrap(),
        std::future::pending(),
    )
    .unwrap();
    Replica {
        url: format!("http://{}", handle.local_addr),
        task: handle.task,
    }
}

/// One answer of the load: which replica, when the request was sent, the items it named.
struct Observed {
    replica: usize,
    sent: Instant,
    items: Vec<String>,
}

fn item_ids(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list of recommendations: {answer}"))
        .iter()
        .map(|item| item["item_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Requests of every kind that lists items, round-robin over the replicas, until `stop`.
async fn load(
    client: reqwest::Client,
    urls: Vec<String>,
    worker: usize,
    stop: tokio_util::sync::CancellationToken,
    observed: Arc<Mutex<Vec<Observed>>>,
) {
    let mut round = worker;
    while !stop.is_cancelled() {
        let replica = round % urls.len();
        let base = &urls[replica];
        let request = match round % 3 {
            0 => client
                .post(format!("{base}/recs/retrieve?count=20"))
                .json(&json!({"user_ids_raw": ["loader"], "item_seq_raw": [["i1", "i2"]]})),
            1 => client.get(format!("{base}/recs/popular?count=40")),
            _ => client.get(format!("{base}/items/i1/similar?count=20")),
        };
        let sent = Instant::now();
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        observed.lock().unwrap().push(Observed {
            replica,
            sent,
            items: item_ids(&answer),
        });
        round += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_changes_through_either_replica_reach_both_under_load() {
    let data_dir = tempfile::tempdir().unwrap();
    train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let redis = RedisServer::start();
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    config.state.url = redis.url();
    config.state.key_prefix = testkit::unique_prefix("replicas");
    config.catalogue.refresh_interval_ms = REFRESH_INTERVAL.as_millis() as u64;
    engine::startup::build_index_from_bundle(&config)
        .await
        .unwrap();
    // Each replica its own copy of the bundle and the embedded index, as on separate machines
    // (one process holds an embedded index's lock); Redis is all they share.
    let second_data_dir = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(data_dir.path().join("."))
        .arg(second_data_dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let second_config = Config {
        data_dir: second_data_dir.path().to_owned(),
        ..config.clone()
    };
    let replicas = [
        start_replica(&config).await,
        start_replica(&second_config).await,
    ];
    let urls: Vec<String> = replicas.iter().map(|replica| replica.url.clone()).collect();
    let client = reqwest::Client::new();

    // What the load sees before any change: the items to remove must be in its answers, or
    // their absence later would prove nothing.
    let before: Value = client
        .post(format!("{}/recs/retrieve?count=20", urls[0]))
        .json(&json!({"user_ids_raw": ["loader"], "item_seq_raw": [["i1", "i2"]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let to_remove: Vec<String> = item_ids(&before).into_iter().take(3).collect();

    let stop = tokio_util::sync::CancellationToken::new();
    let observed = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            tokio::spawn(load(
                client.clone(),
                urls.clone(),
                worker,
                stop.clone(),
                Arc::clone(&observed),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Writes alternate between the replicas: new items, a changed title, three removals (two
    // ways of removing).
    let new_items: String = (0..5)
        .map(|index| format!("{{\"item_id\": \"sku-{index}\", \"title\": \"New {index}\"}}\n"))
        .collect();
    let response = client
        .post(format!("{}/items", urls[0]))
        .header("content-type", "application/x-ndjson")
        .body(new_items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .post(format!("{}/items", urls[1]))
        .json(&json!({"item_id": "i1", "title": "One, renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut removals = Vec::new();
    for (index, item) in to_remove.iter().enumerate() {
        let replica = index % 2;
        let response = if index == 2 {
            client
                .post(format!("{}/items", urls[replica]))
                .json(&json!({"item_id": item, "available": false}))
                .send()
                .await
        } else {
            client
                .delete(format!("{}/items/{item}", urls[replica]))
                .send()
                .await
        };
        assert_eq!(response.unwrap().status(), 200);
        removals.push((item.clone(), replica, Instant::now()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(OTHER_REPLICA_BOUND + Duration::from_millis(300)).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }

    let observed = std::mem::take(&mut *observed.lock().unwrap());
    assert!(
        observed.len() > 100,
        "only {} answers under load",
        observed.len()
    );
    for (item, written_through, written_at) in &removals {
        let seen_before = observed
            .iter()
            .filter(|answer| answer.sent < *written_at && answer.items.contains(item))
            .count();
        assert!(
            seen_before > 0,
            "{item} was in no answer before its removal"
        );
        for answer in observed.iter().filter(|answer| answer.items.contains(item)) {
            let bound = if answer.replica == *written_through {
                Duration::ZERO
            } else {
                OTHER_REPLICA_BOUND
            };
            assert!(
                answer.sent < *written_at + bound,
                "{item} in an answer of replica {} sent {:?} after its removal through replica {written_through}",
                answer.replica,
                answer.sent - *written_at,
            );
        }
    }

    // Both replicas describe the items as the last write says.
    for url in &urls {
        let popular: Value = client
            .get(format!("{url}/recs/popular?count=40"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let one = popular["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["item_id"] == "i1")
            .unwrap_or_else(|| panic!("i1 not popular at {url}: {popular}"));
        assert_eq!(one["title"], "One, renamed", "{url}");
        let added: Value = client
            .get(format!("{url}/items/sku-3"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(added["title"], "New 3", "{url}: {added}");
        assert_eq!(added["in_index"], false, "{url}: {added}");
    }
    for replica in replicas {
        replica.task.abort();
        let _ = replica.task.await;
    }
    drop(redis);
}
