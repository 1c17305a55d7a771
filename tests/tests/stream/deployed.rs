//! The whole stream path: API → broker → consumer group → Redis → answers, under redelivery,
//! repeats and outages (dead letters are in `dead_letters.rs`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

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
    deployment.assert_every_user_has(&expected).await;
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
    deployment.assert_every_user_has(&expected).await;
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
    deployment.assert_every_user_has(&expected).await;
    stop(consumer).await;
    deployment.shut_down().await;
}
