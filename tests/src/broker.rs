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
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(tansu);
    // tansu resolves the SQLite path against its working directory, even when written absolute.
    command.current_dir(data_dir).args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
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
