//! The whole stream path: API → broker → consumer group → Redis → answers, under redelivery,
//! outages and malformed records.

use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use sha2::Digest;

use testkit::KafkaBroker;

use crate::{deploy, deploy_on, event, stop, traffic, USERS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_the_api_reach_the_store_through_the_broker_and_change_answers() {
    let deployment = deploy(true).await;
    let consumer = deployment
        .start_consumer(&deployment.config.consumer.group_id)
        .await;
    let now = common::clock::now_ms();
    let body: String = ["i1", "i2", "i3"]
        .iter()
        .enumerate()
        .map(|(step, item)| {
            serde_json::to_string(&event("fresh", item, now + step as i64)).unwrap() + "\n"
        })
        .collect();
    let response = deployment
        .client
        .post(format!("{}/events", deployment.api_url))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted, json!({"accepted": 3, "log": "kafka"}));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = deployment.get_json("/users/fresh/history").await;
        if history["recent_items"] == json!(["i1", "i2", "i3"]) {
            break;
        }
        assert!(Instant::now() < deadline, "events never applied: {history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pushing is on: the consumer cached the user's list, and a request without session items
    // is answered from it; seen items are excluded either way.
    let retrieve = |body: Value| deployment.post_json("/recs/retrieve?count=5", body);
    let deadline = Instant::now() + Duration::from_secs(30);
    let cached = loop {
        let answer = retrieve(json!({"user_ids_raw": ["fresh"]})).await;
        if answer["metadata"]["source"] == "cache" {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "never served from the cache: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let live = retrieve(json!({"user_ids_raw": ["fresh"], "item_seq_raw": [["i4"]]})).await;
    assert_eq!(live["metadata"]["source"], "personalized", "{live}");
    for answer in [&cached, &live] {
        let items: Vec<&str> = answer["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(items.len(), 5);
        assert!(
            items.iter().all(|item| !["i1", "i2", "i3"].contains(item)),
            "seen items recommended: {items:?}"
        );
        // Cached answers carry the item metadata too.
        assert!(
            answer["recommendations"][0]["title"].is_string(),
            "{answer}"
        );
    }

    // A newer event makes the cached list stale until the consumer pushes again.
    deployment.produce(&[event("fresh", "i9", now + 10)]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment
        .store()
        .user_state("fresh")
        .await
        .unwrap()
        .recent_items
        .last()
        != Some(&"i9".to_owned())
    {
        assert!(Instant::now() < deadline, "the new event was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = retrieve(json!({"user_ids_raw": ["fresh"]})).await;
    assert!(
        !after["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["item_id"] == "i9"),
        "{after}"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", consumer.listener_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "recsys_consumer_events_total",
        "recsys_consumer_freshness_seconds",
        "recsys_consumer_pushes_total",
        "recsys_consumer_batch_size",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from the consumer's /metrics"
        );
    }
    let totals = stop(consumer).await;
    assert_eq!(totals.applied, 4);
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_the_same_events_again_leaves_identical_state() {
    let deployment = deploy(false).await;
    let (events, expected) = traffic();
    deployment.produce(&events).await;

    let first = deployment.start_consumer("first-pass").await;
    deployment.wait_until_caught_up("first-pass").await;
    let first_totals = stop(first).await;
    assert_eq!(first_totals.applied, events.len() as u64);
    let before = deployment.user_states(&USERS).await;
    for (user, sequence) in &expected {
        assert_eq!(&before[user].recent_items, sequence, "{user}");
    }
    let popular_before = deployment.store().top_popular(100).await.unwrap();

    // A new group starts from the beginning: every record is delivered a second time.
    let second = deployment.start_consumer("second-pass").await;
    deployment.wait_until_caught_up("second-pass").await;
    let second_totals = stop(second).await;
    assert_eq!(second_totals.applied, 0);
    assert_eq!(second_totals.duplicates, events.len() as u64);
    assert_eq!(deployment.user_states(&USERS).await, before);
    assert_eq!(
        deployment.store().top_popular(100).await.unwrap(),
        popular_before,
        "redelivered events must not count twice in popularity"
    );
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_produced_twice_at_different_offsets_are_applied_once() {
    let deployment = deploy(false).await;
    let (events, expected) = traffic();
    // A producer retrying without idempotence resends each batch (here 5 events per user), at
    // later offsets.
    for batch in events.chunks(30) {
        deployment.produce(batch).await;
        deployment.produce(batch).await;
    }
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    deployment.wait_until_caught_up(&group).await;
    let totals = stop(consumer).await;
    assert_eq!(
        (totals.applied, totals.duplicates),
        (events.len() as u64, events.len() as u64)
    );
    let states = deployment.user_states(&USERS).await;
    for (user, sequence) in &expected {
        assert_eq!(&states[user].recent_items, sequence, "{user}");
        assert_eq!(states[user].history_version, 20, "{user}");
    }
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_dead_letter_topic_goes_there_cut_and_the_rest_is_applied() {
    let deployment = deploy(false).await;
    let now = common::clock::now_ms();
    let good = |item: &str, step: i64| serde_json::to_vec(&event("big", item, now + step)).unwrap();
    let mut huge = serde_json::to_value(event("big", "i9", now)).unwrap();
    huge["padding"] = json!("x".repeat(3 << 20));
    let huge = serde_json::to_vec(&huge).unwrap();
    // The broker takes it from a producer that allows more than ours (1 MB).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", deployment.broker.bootstrap())
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for payload in [good("i1", 1), huge.clone(), good("i2", 2)] {
        producer
            .send(
                FutureRecord::to(&deployment.config.events.topic)
                    .key("big")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    deployment.wait_until_caught_up(&group).await;
    let totals = stop(consumer).await;
    assert_eq!((totals.applied, totals.dead_letters), (2, 1));
    assert_eq!(
        deployment
            .store()
            .user_state("big")
            .await
            .unwrap()
            .recent_items,
        ["i1", "i2"]
    );

    let dead_letters = deployment
        .read_records(&deployment.config.events.dead_letter_topic, 1)
        .await;
    let message = &dead_letters[0];
    let header = |name: &str| -> String {
        let headers = message.headers().unwrap();
        let found = headers.iter().find(|header| header.key == name).unwrap();
        String::from_utf8(found.value.unwrap().to_vec()).unwrap()
    };
    assert_eq!(header("reason"), "too_large");
    assert_eq!(header("payload_truncated"), "true");
    assert_eq!(header("original_size"), huge.len().to_string());
    assert_eq!(
        header("original_sha256"),
        format!("{:x}", sha2::Sha256::digest(&huge))
    );
    let kept = message.payload().unwrap();
    assert!(
        kept.len() < 1_000_000 && huge.starts_with(kept),
        "{} bytes kept",
        kept.len()
    );
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_user_whose_state_is_unreadable_are_dead_lettered_and_the_rest_applied() {
    let deployment = deploy(false).await;
    let (events, expected) = traffic();
    // A foreign writer left bytes no version of the record format reads.
    let key = format!("{}:{{s0}}:s", deployment.config.state.key_prefix);
    let planted = b"\x09not a user record".to_vec();
    let redis = redis::Client::open(deployment.redis.url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(&key)
        .arg(&planted)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();

    deployment.produce(&events).await;
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    deployment.wait_until_caught_up(&group).await;
    let totals = stop(consumer).await;
    assert_eq!(totals.failure, None);
    assert_eq!((totals.applied, totals.dead_letters), (100, 20));
    let others = &USERS[1..];
    let states = deployment.user_states(others).await;
    for user in others {
        assert_eq!(states[*user].recent_items, expected[*user], "{user}");
    }
    // Nothing overwrote the record: it is there to be looked at.
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(stored, planted);

    let dead_letters = deployment
        .read_records(&deployment.config.events.dead_letter_topic, 20)
        .await;
    for message in &dead_letters {
        let header = |name: &str| -> String {
            let headers = message.headers().unwrap();
            let found = headers.iter().find(|header| header.key == name).unwrap();
            String::from_utf8(found.value.unwrap().to_vec()).unwrap()
        };
        assert_eq!(header("reason"), "unreadable_state");
        assert!(header("error").contains(&key), "{}", header("error"));
        let event: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(event["user_id"], "s0");
    }
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_under_the_consumer_resumes_at_the_committed_offset() {
    let mut deployment = deploy_on(KafkaBroker::start_persistent(), false).await;
    let (events, expected) = traffic();
    let (first_half, second_half) = events.split_at(events.len() / 2);
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    deployment.produce(first_half).await;
    deployment.wait_until_caught_up(&group).await;

    deployment.broker.restart();
    deployment.produce(second_half).await;
    deployment.wait_until_caught_up(&group).await;
    let totals = stop(consumer).await;
    assert_eq!(totals.failure, None);
    // Nothing lost, nothing read again from before the committed offset.
    assert_eq!(
        (totals.applied, totals.duplicates),
        (events.len() as u64, 0)
    );
    let states = deployment.user_states(&USERS).await;
    for (user, sequence) in &expected {
        assert_eq!(&states[user].recent_items, sequence, "{user}");
        assert_eq!(states[user].history_version, 20, "{user}");
    }
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_stream_pauses_the_consumer_and_loses_nothing() {
    let mut deployment = deploy(false).await;
    let (events, expected) = traffic();
    let (first_half, second_half) = events.split_at(events.len() / 2);
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    deployment.produce(first_half).await;
    deployment.wait_until_caught_up(&group).await;

    deployment.redis.kill();
    deployment.produce(second_half).await;
    let readyz = format!("http://{}/readyz", consumer.listener_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let not_ready = loop {
        let response = reqwest::get(&readyz).await.unwrap();
        if response.status() == 503 {
            break response.json::<Value>().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        not_ready["reason"]
            .as_str()
            .unwrap()
            .contains("state store"),
        "{not_ready}"
    );
    assert!(
        !consumer.task.is_finished(),
        "the consumer must survive the outage"
    );

    deployment.redis.restart();
    deployment.wait_until_caught_up(&group).await;
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    let states = deployment.user_states(&USERS).await;
    for (user, sequence) in &expected {
        assert_eq!(&states[user].recent_items, sequence, "{user}");
        assert_eq!(states[user].history_version, 20, "{user}");
    }
    stop(consumer).await;
    deployment.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_go_to_the_dead_letter_topic_with_reasons_and_the_rest_is_applied() {
    let deployment = deploy(false).await;
    let now = common::clock::now_ms();
    let good = |item: &str, step: i64| serde_json::to_vec(&event("dl", item, now + step)).unwrap();
    let mut wrong_type = serde_json::to_value(event("dl", "i5", now)).unwrap();
    wrong_type["item_id"] = json!(5);
    let mut missing = serde_json::to_value(event("dl", "i5", now)).unwrap();
    missing.as_object_mut().unwrap().remove("event_type");
    let mut huge = serde_json::to_value(event("dl", "i5", now)).unwrap();
    huge["event_id"] = json!("x".repeat(10_000));
    let corpus: Vec<(Option<&str>, Vec<u8>, Option<&str>)> = vec![
        (Some("dl"), good("i1", 1), None),
        (
            Some("dl"),
            b"{\"user_id\": \"dl\", ".to_vec(),
            Some("invalid_json"),
        ),
        (
            Some("dl"),
            serde_json::to_vec(&wrong_type).unwrap(),
            Some("wrong_type"),
        ),
        (Some("dl"), good("i2", 2), None),
        (
            Some("dl"),
            serde_json::to_vec(&missing).unwrap(),
            Some("missing_field"),
        ),
        (
            Some("dl"),
            serde_json::to_vec(&huge).unwrap(),
            Some("too_large"),
        ),
        (
            Some("dl"),
            vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff],
            Some("invalid_json"),
        ),
        (Some("someone-else"), good("i4", 4), Some("key_mismatch")),
        (Some("dl"), good("i3", 3), None),
    ];
    let records: Vec<(Option<&str>, Vec<u8>)> = corpus
        .iter()
        .map(|(key, payload, _)| (*key, payload.clone()))
        .collect();
    deployment.produce_raw(&records).await;
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    deployment.wait_until_caught_up(&group).await;
    let totals = stop(consumer).await;
    assert_eq!((totals.applied, totals.dead_letters), (3, 6));
    assert_eq!(
        deployment
            .store()
            .user_state("dl")
            .await
            .unwrap()
            .recent_items,
        ["i1", "i2", "i3"]
    );

    // Every bad record is in the dead-letter topic, as it was sent, with why and where from.
    let dead_letters: Vec<(String, String, Vec<u8>)> = deployment
        .read_records(&deployment.config.events.dead_letter_topic, 6)
        .await
        .iter()
        .map(|message| {
            let header = |name: &str| -> String {
                let headers = message.headers().unwrap();
                let found = headers.iter().find(|header| header.key == name).unwrap();
                String::from_utf8(found.value.unwrap().to_vec()).unwrap()
            };
            assert_eq!(header("source_topic"), deployment.config.events.topic);
            (
                header("reason"),
                header("error"),
                message.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    for (_, payload, reason) in corpus.iter().filter(|(_, _, reason)| reason.is_some()) {
        let found = dead_letters
            .iter()
            .find(|(_, _, dead_payload)| dead_payload == payload)
            .unwrap_or_else(|| panic!("no dead letter for a {reason:?} record"));
        assert_eq!(Some(found.0.as_str()), *reason);
        assert!(!found.1.is_empty());
    }
    deployment.shut_down().await;
}
