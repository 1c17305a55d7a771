//! The items topic: catalogue records produced to Kafka reach every answer through the consumer,
//! bad ones go to the items' dead-letter topic, and a replayed old record never undoes a newer
//! change.

use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};

use crate::{deploy, event, stop_both, RawRecord, StreamDeployment};

/// Polls `GET /items/{id}` until `done` holds for the answer.
async fn wait_for_item(deployment: &StreamDeployment, item: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = deployment.get_json(&format!("/items/{item}")).await;
        if done(&answer) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "item {item} never changed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap_or_else(|| panic!("no recommendations: {answer}"))
        .iter()
        .map(|item| item["item_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_records_change_the_catalogue_and_every_answer() {
    let deployment = deploy(true).await;
    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    let items_topic = deployment.config.catalogue.topic.clone();

    // A user whose pushed list is cached, so the removal below must reach the cache too.
    let now = common::clock::now_ms();
    deployment
        .produce(&[event("shopper", "i1", now), event("shopper", "i2", now + 1)])
        .await;
    let retrieve = || {
        deployment.post_json(
            "/recs/retrieve?count=10",
            json!({"user_ids_raw": ["shopper"]}),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let cached = loop {
        let answer = retrieve().await;
        if answer["metadata"]["source"] == "cache" {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "never served from the cache: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let removed = ids(&cached)[0].clone();

    let new_item = br#"{"item_id": "sku-1", "title": "A new mug", "attributes": {"price": 9.5}}"#;
    let renamed = br#"{"item_id": "i5", "title": "Five, renamed"}"#;
    let bad: [(&str, &[u8], &str); 3] = [
        ("sku-2", br#"{"item_id": "sku-3"}"#, "key_mismatch"),
        (
            "sku-2",
            br#"{"item_id": "sku-2", "colour": "red"}"#,
            "invalid_item",
        ),
        ("sku-2", b"not json", "invalid_item"),
    ];
    // As `recsys publish-items` sends them.
    let published = engine::event_log::items::publish_items(
        &deployment.broker.bootstrap(),
        &items_topic,
        &[schemas::ItemUpsert::decode(new_item).unwrap()],
    )
    .await
    .unwrap();
    assert_eq!(published, 1);
    let mut records = vec![
        RawRecord {
            key: Some("i5"),
            payload: Some(renamed),
            timestamp_ms: None,
        },
        // A tombstone: the item goes, what the catalogue says about it stays.
        RawRecord {
            key: Some(removed.as_str()),
            payload: None,
            timestamp_ms: None,
        },
    ];
    records.extend(bad.iter().map(|(key, payload, _)| RawRecord {
        key: Some(key),
        payload: Some(payload),
        timestamp_ms: None,
    }));
    deployment.produce_to(&items_topic, &records).await;

    wait_for_item(&deployment, &removed, |item| item["available"] == false).await;
    let sku = deployment.get_json("/items/sku-1").await;
    assert_eq!(sku["title"], "A new mug", "{sku}");
    assert_eq!(sku["attributes"]["price"], 9.5, "{sku}");
    assert_eq!(
        deployment.get_json("/items/i5").await["title"],
        "Five, renamed"
    );
    let gone = deployment.get_json(&format!("/items/{removed}")).await;
    assert!(
        gone["title"].is_string(),
        "a tombstone keeps the description: {gone}"
    );

    // Removed from every answer once the API's view has followed the catalogue (within
    // `catalogue.refresh_interval_ms`), the cached push included.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cached_again = retrieve().await;
        assert_eq!(
            cached_again["metadata"]["source"], "cache",
            "{cached_again}"
        );
        let live = deployment
            .post_json(
                "/recs/retrieve?count=10",
                json!({"user_ids_raw": ["shopper"], "item_seq_raw": [["i3"]]}),
            )
            .await;
        let popular = deployment.get_json("/recs/popular?count=40").await;
        let answers = [cached_again, live, popular];
        let still = answers.iter().find(|answer| ids(answer).contains(&removed));
        match still {
            None => break,
            Some(answer) => assert!(
                Instant::now() < deadline,
                "{removed} still recommended: {answer}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An API write, then an older record of the same item (a replay, a late producer): the
    // record is skipped. A later marker record shows the consumer got past it.
    let response = deployment
        .client
        .post(format!("{}/items", deployment.api_url))
        .json(&json!({"item_id": "i5", "title": "Five, from the API"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let older = br#"{"item_id": "i5", "title": "Five, an hour ago"}"#;
    let marker = br#"{"item_id": "sku-marker"}"#;
    deployment
        .produce_to(
            &items_topic,
            &[
                RawRecord {
                    key: Some("i5"),
                    payload: Some(older),
                    timestamp_ms: Some(now - 3_600_000),
                },
                RawRecord {
                    key: Some("sku-marker"),
                    payload: Some(marker),
                    timestamp_ms: None,
                },
            ],
        )
        .await;
    wait_for_item(&deployment, "sku-marker", |item| item["available"] == true).await;
    assert_eq!(
        deployment.get_json("/items/i5").await["title"],
        "Five, from the API"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", consumer.listener_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("recsys_consumer_items_total"),
        "no item counts in /metrics"
    );
    let (_, items) = stop_both(consumer).await;
    assert_eq!(
        (items.upserted, items.stale, items.dead_letters),
        (4, 1, 3),
        "{items:?}"
    );
    assert_eq!(items.failure, None);

    // Every bad record is in the items' dead-letter topic with its reason and source.
    let dead_letters = deployment
        .read_records(&deployment.config.catalogue.dead_letter_topic, bad.len())
        .await;
    for ((_, payload, reason), message) in bad.iter().zip(&dead_letters) {
        let header = |name: &str| -> String {
            let headers = message.headers().unwrap();
            let found = headers.iter().find(|header| header.key == name).unwrap();
            String::from_utf8(found.value.unwrap().to_vec()).unwrap()
        };
        assert_eq!(message.payload(), Some(*payload));
        assert_eq!(header("reason"), *reason);
        assert_eq!(header("source_topic"), items_topic);
        assert!(!header("error").is_empty());
    }
    deployment.shut_down().await;
}
