//! The stream path as deployed: a real Kafka-protocol broker (tansu) and a real redis-server, both
//! started here on free ports; the API producing to the topic, the consumer group applying it.
//! The deployment harness is here; the cases are in `deployed` (the whole path) and `batching`
//! (the consumer's client on its own).

mod archive;
mod batching;
mod dead_letters;
mod deployed;
mod items;
mod security;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use consumer::ConsumerHandle;
use dataset::bundle::EncoderKind;
use engine::config::Config;
use engine::event_log::kafka_producer;
use engine::retrieve::Retriever;
use engine::store::{UserState, UserStore};
use model_server::fixtures::train_tiny_bundle;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;
use rdkafka::{ClientConfig, TopicPartitionList};
use schemas::{EventType, InteractionEvent};
use serde_json::Value;
use testkit::{KafkaBroker, RedisServer};

pub(crate) const PARTITIONS: u32 = 3;

pub(crate) struct StreamDeployment {
    config: Config,
    broker: KafkaBroker,
    redis: RedisServer,
    retriever: Arc<Retriever>,
    api_url: String,
    api_task: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

pub(crate) async fn deploy(push_recommendations: bool) -> StreamDeployment {
    deploy_on(KafkaBroker::start(), push_recommendations).await
}

pub(crate) async fn deploy_on(broker: KafkaBroker, push_recommendations: bool) -> StreamDeployment {
    let data_dir = tempfile::tempdir().unwrap();
    train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
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
    config.archive.flush_interval_ms = 200;
    config.catalogue.topic = format!("{prefix}-items");
    config.catalogue.dead_letter_topic = format!("{prefix}-items-dead-letters");
    broker.create_topic(&config.events.topic, PARTITIONS);
    broker.create_topic(&config.events.dead_letter_topic, 1);
    // One partition: the items test relies on records being applied in the order produced.
    broker.create_topic(&config.catalogue.topic, 1);
    broker.create_topic(&config.catalogue.dead_letter_topic, 1);
    engine::startup::build_index_from_bundle(&config)
        .await
        .unwrap();
    let (retriever, _refresher) = engine::startup::build_retriever(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = api::spawn(
        listener,
        AppState::new(&config, Arc::clone(&retriever)).unwrap(),
        std::future::pending(),
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
        let applier = Arc::new(engine::event_log::event_applier(
            &config,
            Arc::clone(self.store()),
            Some(engine::serving::ServedRetriever::new(Arc::clone(
                &self.retriever,
            ))),
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
        let records: Vec<RawRecord<'_>> = records
            .iter()
            .map(|(key, payload)| RawRecord {
                key: *key,
                payload: Some(payload.as_slice()),
                timestamp_ms: None,
            })
            .collect();
        self.produce_to(&self.config.events.topic, &records).await;
    }

    /// Produces records to `topic`, in order.
    async fn produce_to(&self, topic: &str, records: &[RawRecord<'_>]) {
        let producer = kafka_producer(&self.broker.bootstrap()).unwrap();
        for raw in records {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
            if let Some(payload) = raw.payload {
                record = record.payload(payload);
            }
            if let Some(key) = raw.key {
                record = record.key(key);
            }
            if let Some(timestamp_ms) = raw.timestamp_ms {
                record = record.timestamp(timestamp_ms);
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

    /// The first `count` records of partition 0 of `topic`, read without joining a group (a
    /// group member's close waits out the broker's session timeout).
    async fn read_records(&self, topic: &str, count: usize) -> Vec<OwnedMessage> {
        let reader: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            // Required by librdkafka, though assigning never joins the group.
            .set("group.id", "record-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        reader.assign(&partitions).unwrap();
        let mut records = Vec::with_capacity(count);
        while records.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
                .await
                .unwrap_or_else(|_| panic!("{count} records in {topic}"))
                .unwrap();
            records.push(message.detach());
        }
        records
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

    /// Every user of [`traffic`] holds the expected sequence, each of its 20 events applied once.
    async fn assert_every_user_has(&self, expected: &BTreeMap<String, Vec<String>>) {
        let states = self.user_states(&USERS).await;
        for (user, sequence) in expected {
            assert_eq!(&states[user].recent_items, sequence, "{user}");
            assert_eq!(states[user].history_version, 20, "{user}");
        }
    }

    async fn shut_down(self) {
        self.api_task.abort();
        let _ = self.api_task.await;
    }
}

/// A record as produced: no payload is a tombstone; no timestamp is the producer's clock.
pub(crate) struct RawRecord<'a> {
    key: Option<&'a str>,
    payload: Option<&'a [u8]>,
    timestamp_ms: Option<i64>,
}

pub(crate) async fn stop(consumer: ConsumerHandle) -> consumer::RunTotals {
    stop_both(consumer).await.0
}

/// Stops the events and the items consumer; returns what each did.
pub(crate) async fn stop_both(
    consumer: ConsumerHandle,
) -> (consumer::RunTotals, consumer::CatalogueTotals) {
    consumer.shutdown.cancel();
    let events = tokio::time::timeout(Duration::from_secs(30), consumer.task)
        .await
        .expect("the consumer stops after its batch in flight")
        .unwrap();
    let items = consumer
        .catalogue_task
        .expect("the items topic is consumed");
    let items = tokio::time::timeout(Duration::from_secs(30), items)
        .await
        .expect("the items consumer stops after its batch in flight")
        .unwrap();
    (events, items)
}

pub(crate) fn event(user: &str, item: &str, time_ms: i64) -> InteractionEvent {
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
pub(crate) fn traffic() -> (Vec<InteractionEvent>, BTreeMap<String, Vec<String>>) {
    let now = common::clock::now_ms();
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

pub(crate) const USERS: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "s5"];
