//! The broker in tests: everything of [`netmeter_stack::broker`] (how to run and probe tansu, the
//! netmeter topics), re-exported so tests name one module, plus reading a topic back.

use std::time::Duration;

use rdkafka::ClientConfig;

pub use netmeter_stack::broker::*;

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub schema_header: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning until nothing new arrived for `idle`.
/// Records come in partition/offset order.
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    idle: Duration,
) -> anyhow::Result<Vec<Record>> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "netmeter-tests-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut errors = 0;
    while let Ok(message) = tokio::time::timeout(idle, consumer.recv()).await {
        // librdkafka reports transient states (e.g. AllBrokersDown while it reconnects) as
        // errors; they are not data. Persisting errors still fail the read.
        let message = match message {
            Ok(message) => message,
            Err(err) if errors < 50 => {
                errors += 1;
                eprintln!("read_topic: transient Kafka error: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let schema_header = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == netmeter_proto::SCHEMA_HEADER))
            .and_then(|h| h.value.map(<[u8]>::to_vec));
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            schema_header,
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    // Destroying a librdkafka consumer blocks forever against tansu 0.6: leak it (tests only).
    std::mem::forget(consumer);
    Ok(records)
}
