//! The consumer's Kafka client on its own: producer readiness and how batches close.

use std::time::{Duration, Instant};

use engine::event_log::kafka_producer;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use testkit::KafkaBroker;

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
        consumer::kafka::receive_batch(
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
            let received = consumer::kafka::receive_batch(
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
    let received = consumer::kafka::receive_batch(
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
        let received = consumer::kafka::receive_batch(
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
async fn broker_with_topic(topic: &str) -> (KafkaBroker, engine::event_log::EventProducer) {
    let broker = KafkaBroker::start();
    broker.create_topic(topic, 1);
    let producer = kafka_producer(&broker.bootstrap()).unwrap();
    assert!(producer.wait_until_ready(Duration::from_secs(20)).await);
    (broker, producer)
}

/// Produces `payload` keyed `u` to `topic` and waits for its delivery.
async fn send_keyed(producer: &engine::event_log::EventProducer, topic: &str, payload: &str) {
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
