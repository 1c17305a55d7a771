//! The README's stream walk-through, command by command, on one data dir: topics created,
//! `recsys serve` and a pushing `recsys consume` side by side (the second to open the embedded
//! index serves a private copy), MovieLens replayed into Kafka, user 196's history and pushed
//! list read back, one more event posted and seen in the next answer. Ports are free ones and
//! the replay is faster than the README's; the model is a small one trained here.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::consumer::ConsumerProcess;
use support::movielens_stream::small_model;
use support::KillOnDrop;
use testkit::{KafkaBroker, RedisServer};

fn retrieve(client: &reqwest::blocking::Client, api: &str, user: &str) -> Value {
    client
        .post(format!("{api}/recs/retrieve?count=5"))
        .json(&json!({"user_ids_raw": [user]}))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn items(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap_or_else(|| panic!("no recommendations in {answer}"))
        .iter()
        .map(|item| item["item_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asks until `done` holds for the answer (at most 60 s); returns that answer.
fn retrieve_until(
    client: &reqwest::blocking::Client,
    api: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = retrieve(client, api, "196");
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_readmes_stream_walk_through_reaches_the_pushed_list() {
    let data_dir = support::data_dir_with_movielens();
    let binary = Path::new(env!("CARGO_BIN_EXE_recsys"));
    small_model(binary, data_dir.path());

    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let env: Vec<(String, String)> = [
        ("RECSYS__EVENTS__URL", broker.url()),
        ("RECSYS__STATE__URL", redis.url()),
        ("RECSYS__CONSUMER__PUSH_RECOMMENDATIONS", "true".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    support::run(
        binary,
        data_dir.path(),
        &env,
        &["create-topics", "--partitions", "4"],
    );
    let (api, address) = support::serve(binary, data_dir.path(), |command| {
        command.envs(env.iter().cloned());
    });
    let _api = KillOnDrop(api);
    let consumer = ConsumerProcess::start(data_dir.path(), &env);
    support::run(
        binary,
        data_dir.path(),
        &env,
        &["replay", "--dataset", "ml-100k", "--rate", "20000"],
    );

    let api = format!("http://{address}");
    let client = reqwest::blocking::Client::new();
    let pushed = retrieve_until(&client, &api, "a pushed list for 196", |answer| {
        answer["metadata"]["source"] == "cache"
    });
    let history: Value = client
        .get(format!("{api}/users/196/history"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        !history["recent_items"].as_array().unwrap().is_empty(),
        "{history}"
    );

    let event = json!({
        "event_id": "x1",
        "user_id": "196",
        "item_id": "50",
        "event_type": "click",
        "event_time_ms": common::clock::now_ms(),
    });
    let posted = client
        .post(format!("{api}/events"))
        .json(&event)
        .send()
        .unwrap();
    assert_eq!(posted.status(), 200);
    let before = items(&pushed);
    let after = retrieve_until(&client, &api, "an answer that knows item 50", |answer| {
        answer["metadata"]["source"] == "cache" && items(answer) != before
    });
    assert!(!items(&after).contains(&"50".to_owned()), "{after}");

    let (status, printed) = consumer.terminate();
    assert!(status.success(), "{status}: {printed}");
}
