//! Dead letters on the stream path: malformed records, a record too large to write back as it
//! came, and the events of a user whose stored state cannot be read each go to the dead-letter
//! topic with the reason, while every other record is applied and the partition moves on.

use std::time::Duration;

use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use sha2::Digest;

use crate::{deploy, event, stop, traffic, USERS};

/// The value of the header `name` of a dead letter.
fn header(message: &OwnedMessage, name: &str) -> String {
    let headers = message.headers().unwrap();
    let found = headers
        .iter()
        .find(|header| header.key == name)
        .unwrap_or_else(|| panic!("no header {name}"));
    String::from_utf8(found.value.unwrap().to_vec()).unwrap()
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
    let header = |name: &str| header(message, name);
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
        let header = |name: &str| header(message, name);
        assert_eq!(header("reason"), "unreadable_state");
        assert!(header("error").contains(&key), "{}", header("error"));
        let event: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(event["user_id"], "s0");
    }
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
            let header = |name: &str| header(message, name);
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
