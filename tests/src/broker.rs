//! The Kafka-protocol broker of tests and the local stack: tansu on its SQLite engine.
//! (Its memory engine loses messages on rebalance; see docs/ENVIRONMENT facts in the README.)

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// The command that runs a broker on 127.0.0.1:`port`, storing data in `data_dir`.
pub fn command(tansu: &Path, data_dir: &Path, port: u16) -> Command {
    command_advertising(tansu, data_dir, port, port)
}

/// [`command`] telling clients to connect to `advertised` (a proxy in front of it) instead.
pub fn command_advertising(tansu: &Path, data_dir: &Path, port: u16, advertised: u16) -> Command {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let mut command = Command::new(tansu);
    // tansu resolves the SQLite path against its working directory, even when written absolute.
    command.current_dir(data_dir).args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &advertised,
        "--storage-engine",
        "sqlite://tansu.db",
        "--silent",
    ]);
    command
}

/// True once the broker accepts connections.
pub fn is_ready(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Creates `topics` with `partitions` each; topics that already exist are left alone.
/// tansu does not auto-create topics on produce, so every topic is created up front.
pub async fn create_topics(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

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
