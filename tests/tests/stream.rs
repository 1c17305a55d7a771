//! The stream path as deployed: a real Kafka-protocol broker (tansu) and a real redis-server, both
//! started here on free ports; the API producing to the topic, the consumer group applying it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use consumer::sink::kafka_producer;
use consumer::ConsumerHandle;
use engine::config::Config;
use engine::retrieve::Retriever;
use engine::store::{UserState, UserStore};
use model_server::fixtures::train_tiny_bundle;
use model_server::model::EncoderKind;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, TopicPartitionList};
use schemas::{EventType, InteractionEvent};
use serde_json::{json, Value};
use testkit::{KafkaBroker, RedisServer};

const PARTITIONS: u32 = 3;

struct StreamDeployment {
    config: Config,
    broker: KafkaBroker,
    redis: RedisServer,
    retriever: Arc<Retriever>,
    api_url: String,
    api_task: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

async fn deploy(push_recommendations: bool) -> StreamDeployment {
    let data_dir = tempfile::tempdir().unwrap();
    train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let prefix = testkit::unique_prefix("stream");
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    config.state.url = redis.url();
    config.state.key_prefix = prefix.clone();
    config.events.url = broker.url();
    config.events.topic = format!("{prefix}-events");
    config.events.dead_letter_topic = format!("{prefix}-dead-letters");
    config.consumer.group_id = format!("{prefix}-group");
    config.consumer.push_recommendations = push_recommendations;
    config.consumer.retry_max_ms = 200;
    broker.create_topic(&config.events.topic, PARTITIONS);
    broker.create_topic(&config.events.dead_letter_topic, 1);
    engine::startup::build_index_from_bundle(&config)
        .await
        .unwrap();
    let (retriever, _refresher) = engine::startup::build_retriever(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = api::spawn(
        listener,
        AppState::new(&config, Arc::clone(&retriever)).unwrap(),
    )
    .unwrap();
    StreamDeployment {
        api_url: format!("http://{}", api.local_addr),
        api_task: api.task,
        config,
        broker,
        redis,
        retriever,
        client: reqwest::Client::new(),
        _data_dir: data_dir,
    }
}

impl StreamDeployment {
    fn store(&self) -> &Arc<dyn UserStore> {
        self.retriever.store()
    }

    async fn start_consumer(&self, group_id: &str) -> ConsumerHandle {
        let mut config = self.config.clone();
        config.consumer.group_id = group_id.to_owned();
        let applier = Arc::new(consumer::event_applier(
            &config,
            Arc::clone(self.store()),
            Some(Arc::clone(&self.retriever)),
        ));
        consumer::start_consumer(
            &config,
            &self.broker.bootstrap(),
            applier,
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap()
    }

    /// Produces records as they are (bytes and key), in order.
    async fn produce_raw(&self, records: &[(Option<&str>, Vec<u8>)]) {
        let producer = kafka_producer(&self.broker.bootstrap()).unwrap();
        for (key, payload) in records {
            let mut record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&self.config.events.topic).payload(payload.as_slice());
            if let Some(key) = key {
                record = record.key(*key);
            }
            producer
                .send_result(record)
                .map_err(|(error, _)| error)
                .unwrap()
                .await
                .unwrap()
                .map_err(|(error, _)| error)
                .unwrap();
        }
    }

    async fn produce(&self, events: &[InteractionEvent]) {
        let records: Vec<(Option<&str>, Vec<u8>)> = events
            .iter()
            .map(|event| {
                (
                    Some(event.user_id.as_str()),
                    serde_json::to_vec(event).unwrap(),
                )
            })
            .collect();
        self.produce_raw(&records).await;
    }

    /// Waits until `group` has committed the end of every partition of the events topic.
    async fn wait_until_caught_up(&self, group: &str) {
        let checker: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("group.id", group)
            .create()
            .unwrap();
        let topic = self.config.events.topic.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lag = tokio::task::block_in_place(|| {
                let mut partitions = TopicPartitionList::new();
                for partition in 0..PARTITIONS as i32 {
                    partitions.add_partition(&topic, partition);
                }
                let committed = checker
                    .committed_offsets(partitions, Duration::from_secs(5))
                    .ok()?;
                let mut lag = 0;
                for partition in 0..PARTITIONS as i32 {
                    let (_, high) = checker
                        .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                        .ok()?;
                    let done = committed
                        .find_partition(&topic, partition)
                        .and_then(|element| element.offset().to_raw())
                        .filter(|offset| *offset >= 0)
                        .unwrap_or(0);
                    lag += high - done;
                }
                Some(lag)
            });
            // `<=`: tansu 0.6 reports a high watermark below the committed offset after a
            // multi-record batch from the idempotent producer; callers check the data as well.
            if lag.is_some_and(|lag| lag <= 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "group {group} did not catch up (lag {lag:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.api_url)).send();
        response.await.unwrap().json().await.unwrap()
    }

    async fn post_json(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.api_url);
        let response = self.client.post(url).json(&body).send();
        response.await.unwrap().json().await.unwrap()
    }

    async fn user_states(&self, users: &[&str]) -> BTreeMap<String, UserState> {
        let mut states = BTreeMap::new();
        for user in users {
            let mut state = self.store().user_state(user).await.unwrap();
            // The cache slot is timing-dependent (pushes); the history is what must be exact.
            state.cached = None;
            state.seen_items.sort();
            states.insert((*user).to_owned(), state);
        }
        states
    }

    async fn shut_down(self) {
        self.api_task.abort();
        let _ = self.api_task.await;
    }
}

async fn stop(consumer: ConsumerHandle) -> consumer::RunTotals {
    consumer.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), consumer.task)
        .await
        .expect("the consumer stops after its batch in flight")
        .unwrap()
}

fn event(user: &str, item: &str, time_ms: i64) -> InteractionEvent {
    InteractionEvent {
        event_id: format!("{user}-{item}-{time_ms}"),
        user_id: user.to_owned(),
        item_id: item.to_owned(),
        event_type: EventType::Click,
        value: None,
        event_time_ms: time_ms,
    }
}

/// 6 users × 20 events over the tiny catalogue, each user's items in a known order.
fn traffic() -> (Vec<InteractionEvent>, BTreeMap<String, Vec<String>>) {
    let now = engine::popularity::now_ms();
    let mut events = Vec::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for step in 0..20 {
        for user in 0..6 {
            let user_id = format!("s{user}");
            let item_id = format!("i{}", (user * 7 + step * 3) % 40);
            events.push(event(&user_id, &item_id, now - 100_000 + step * 100 + user));
            let sequence = expected.entry(user_id).or_default();
            if sequence.last() != Some(&item_id) {
                sequence.push(item_id);
            }
        }
    }
    (events, expected)
}

const USERS: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "s5"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_the_api_reach_the_store_through_the_broker_and_change_answers() {
    let deployment = deploy(true).await;
    let consumer = deployment
        .start_consumer(&deployment.config.consumer.group_id)
        .await;
    let now = engine::popularity::now_ms();
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
    let now = engine::popularity::now_ms();
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
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", deployment.broker.bootstrap())
        .set("group.id", "dead-letter-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader
        .subscribe(&[&deployment.config.events.dead_letter_topic])
        .unwrap();
    let mut dead_letters = Vec::new();
    while dead_letters.len() < 6 {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let header = |name: &str| -> String {
            let headers = message.headers().unwrap();
            let found = headers.iter().find(|header| header.key == name).unwrap();
            String::from_utf8(found.value.unwrap().to_vec()).unwrap()
        };
        assert_eq!(header("source_topic"), deployment.config.events.topic);
        dead_letters.push((
            header("reason"),
            header("error"),
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_producer_reports_ready_once_it_has_its_producer_id() {
    let broker = KafkaBroker::start();
    let producer = kafka_producer(&broker.bootstrap()).unwrap();
    assert!(producer.wait_until_ready(Duration::from_secs(20)).await);

    // With no broker there is no producer id: the wait ends at its timeout, saying so.
    let nowhere = kafka_producer(&format!("127.0.0.1:{}", testkit::free_port())).unwrap();
    let started = Instant::now();
    assert!(!nowhere.wait_until_ready(Duration::from_millis(300)).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// The consumer's batching: a batch closes `max_wait` after its first record only once `ready`
/// (the consumer passes "the writer took the batch before") and nothing more is waiting; until
/// then it keeps what arrives, so under a backlog a user's events coalesce into one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_growing_until_the_previous_one_is_written() {
    let (broker, producer) = broker_with_topic("batching").await;
    let send = |payload: &'static str| send_keyed(&producer, "batching", payload);
    let consumer = batching_client(&broker, "batching", &[]);
    let never = tokio_util::sync::CancellationToken::new();
    let max_wait = Duration::from_millis(50);

    // Joining the group takes a while: the timed batches below start once the consumer is
    // assigned and fetching.
    send("warm-up").await;
    let mut warmed_up = false;
    while !warmed_up {
        consumer::kafka_consumer::receive_batch(
            &consumer,
            1_000,
            max_wait,
            std::future::ready(()),
            &never,
            |message| warmed_up |= message.payload() == Some(b"warm-up".as_slice()),
        )
        .await
        .unwrap();
    }

    // Receives a batch while a second record arrives 1 s after the first is there.
    let batch_with = |ready: tokio::time::Sleep, first: &'static str, second: &'static str| {
        let consumer = &consumer;
        let never = &never;
        let send = &send;
        async move {
            send(first).await;
            let late = async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                send(second).await;
            };
            let mut payloads = Vec::new();
            let received = consumer::kafka_consumer::receive_batch(
                consumer,
                1_000,
                max_wait,
                ready,
                never,
                |message| payloads.push(message.payload().unwrap_or_default().to_vec()),
            );
            let (received, ()) = tokio::join!(received, late);
            assert_eq!(received.unwrap(), payloads.len());
            payloads
        }
    };

    // The previous batch is written at once: the batch closes after `max_wait`, without the
    // late record (which starts the next batch).
    let batch = batch_with(tokio::time::sleep(Duration::ZERO), "a1", "a2").await;
    assert_eq!(batch, [b"a1".to_vec()]);
    let next = batch_with(tokio::time::sleep(Duration::ZERO), "b1", "b2").await;
    assert_eq!(next, [b"a2".to_vec(), b"b1".to_vec()]);

    // The previous batch takes 3 s to write: the batch keeps growing past `max_wait`.
    let batch = batch_with(tokio::time::sleep(Duration::from_secs(3)), "c1", "c2").await;
    assert_eq!(batch, [b"b2".to_vec(), b"c1".to_vec(), b"c2".to_vec()]);

    // A backlog: 40 records wait in the client's queue and each takes 2 ms to handle, so
    // `max_wait` (50 ms) passes with the writer ready while records still wait. The batch
    // takes them all (one store write per user instead of several), then closes.
    let backlog: Vec<&'static str> = (0..40)
        .map(|index| &*Box::leak(format!("d{index}").into_boxed_str()))
        .collect();
    for payload in &backlog {
        send(payload).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut payloads = Vec::new();
    let received = consumer::kafka_consumer::receive_batch(
        &consumer,
        1_000,
        max_wait,
        std::future::ready(()),
        &never,
        |message| {
            std::thread::sleep(Duration::from_millis(2));
            payloads.push(message.payload().unwrap_or_default().to_vec());
        },
    )
    .await
    .unwrap();
    assert_eq!(received, 40);
    let expected: Vec<Vec<u8>> = backlog
        .iter()
        .map(|payload| payload.as_bytes().to_vec())
        .collect();
    assert_eq!(payloads, expected);
}

/// A backlog that is still in the log, not yet in the client's queue, also fills the batch: the
/// client fetches a few records at a time here, so its queue runs empty between fetches while
/// the log (by the high watermark of the last fetch) holds more than the batch has room for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_still_in_the_log_fills_the_batch_across_fetches() {
    let (broker, producer) = broker_with_topic("backlog").await;
    for index in 0..500 {
        send_keyed(&producer, "backlog", &format!("{index:0>100}")).await;
    }
    // A few records per fetch: the client takes them faster than they come.
    let consumer = batching_client(
        &broker,
        "backlog",
        &[
            ("max.partition.fetch.bytes", "1024"),
            ("fetch.max.bytes", "1024"),
            ("message.max.bytes", "1000"),
        ],
    );
    let never = tokio_util::sync::CancellationToken::new();
    // A batch of at most 400 records with the writer always ready; `max_wait` (50 ms) passes
    // long before the fetches are done.
    let receive_one_batch = || async {
        let mut payloads = Vec::new();
        let received = consumer::kafka_consumer::receive_batch(
            &consumer,
            400,
            Duration::from_millis(50),
            std::future::ready(()),
            &never,
            |message| payloads.push(message.payload().unwrap_or_default().to_vec()),
        )
        .await
        .unwrap();
        assert_eq!(received, payloads.len());
        payloads
    };

    let payloads = receive_one_batch().await;
    assert_eq!(payloads.len(), 400, "the batch closed before it was full");
    assert_eq!(payloads[399], format!("{:0>100}", 399).into_bytes());

    // 100 records are left, fewer than a batch holds: the next batch does not wait for them
    // all, it closes at the first empty queue after `max_wait`.
    let started = Instant::now();
    let received = receive_one_batch().await.len();
    assert!((1..=100).contains(&received), "{received}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A broker with a one-partition `topic`, and a producer ready to write to it.
async fn broker_with_topic(topic: &str) -> (KafkaBroker, consumer::sink::EventProducer) {
    let broker = KafkaBroker::start();
    broker.create_topic(topic, 1);
    let producer = kafka_producer(&broker.bootstrap()).unwrap();
    assert!(producer.wait_until_ready(Duration::from_secs(20)).await);
    (broker, producer)
}

/// Produces `payload` keyed `u` to `topic` and waits for its delivery.
async fn send_keyed(producer: &consumer::sink::EventProducer, topic: &str, payload: &str) {
    let delivery = producer
        .send_result(
            FutureRecord::<str, str>::to(topic)
                .key("u")
                .payload(payload),
        )
        .map_err(|(error, _)| error)
        .unwrap();
    delivery.await.unwrap().map_err(|(error, _)| error).unwrap();
}

/// A bare client of `topic` for the batching tests (its own group, from the start, no automatic
/// commits, fetches held at most 10 ms), with `settings` on top.
fn batching_client(broker: &KafkaBroker, topic: &str, settings: &[(&str, &str)]) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("{topic}-test"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}
