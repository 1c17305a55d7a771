//! Connection security passed through the `kafka://` URL: the librdkafka properties in its query
//! reach the producer (TLS and SASL are compiled in). tansu 0.6.0 cannot serve a secured
//! listener (its `--cert` and `--key` exclude each other, and with `--authentication` its
//! ApiVersions answer is malformed), so the test shows a TLS setting taking effect against a
//! plaintext listener: the handshake fails where the plain URL works.

use engine::event_log::kafka_producer;
use rdkafka::producer::FutureRecord;
use testkit::KafkaBroker;

async fn send(brokers: &str, topic: &str) -> Result<(), rdkafka::error::KafkaError> {
    let producer = kafka_producer(brokers)?;
    let record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key("u1").payload("hello");
    match producer.send_result(record) {
        Ok(delivery) => match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(error),
            Err(_) => Err(rdkafka::error::KafkaError::Canceled),
        },
        Err((error, _)) => Err(error),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_settings_in_the_kafka_url_reach_the_client() {
    let broker = KafkaBroker::start();
    broker.create_topic("secured", 1);
    send(&broker.bootstrap(), "secured").await.unwrap();

    let certificates = testkit::TestCertificates::make();
    let over_tls = format!(
        "{}?security.protocol=SSL&ssl.ca.location={}",
        broker.bootstrap(),
        certificates.ca_cert.display()
    );
    let refused = send(&over_tls, "secured").await.unwrap_err();
    println!("TLS to a plaintext listener: {refused}");

    // SASL is compiled in too: a mechanism librdkafka does not know is refused by name.
    let unknown_mechanism = format!(
        "{}?security.protocol=SASL_SSL&sasl.mechanism=NOPE&sasl.username=u&sasl.password=p%26w",
        broker.bootstrap()
    );
    let error = kafka_producer(&unknown_mechanism)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("NOPE"), "{error}");
}
