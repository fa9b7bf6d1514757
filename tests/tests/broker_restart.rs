//! The stack's broker can be stopped and started again (fault injection) and keeps its data.

use std::time::Duration;

use netmeter_proto::{DEFAULT_TOPIC_PREFIX, Schema};
use netmeter_tests::{Stack, broker};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn producer(stack: &Stack) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("message.timeout.ms", "8000")
        .create()
        .unwrap()
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    value: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    let record = FutureRecord::to(topic).key("k").payload(value);
    producer
        .send(record, Duration::from_secs(20))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_broker_serves_old_and_new_records() {
    let mut stack = Stack::start().await.unwrap();
    let topic = Schema::RawV1.topic(DEFAULT_TOPIC_PREFIX);
    let before = producer(&stack);
    produce(&before, &topic, "before").await.unwrap();
    stack.stop_broker();
    assert!(!broker::is_ready(stack.kafka_port));
    stack.start_broker().unwrap();
    // An idempotent producer that was idle during the restart keeps working.
    produce(&before, &topic, "survivor").await.unwrap();
    produce(&producer(&stack), &topic, "after").await.unwrap();
    let records = broker::read_topic(
        &stack.kafka_bootstrap(),
        &topic,
        netmeter_tests::stack::PARTITIONS,
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let values: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
    eprintln!(
        "{:?}",
        values
            .iter()
            .map(|v| String::from_utf8_lossy(v))
            .collect::<Vec<_>>()
    );
}
