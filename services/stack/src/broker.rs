//! The Kafka-protocol broker of the local stack and of tests: tansu on its SQLite engine.
//! (Its memory engine loses messages on rebalance; see docs/ENVIRONMENT facts in the README.)
//! Also the topics every netmeter deployment has, which the broker must be given up front.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use netmeter_proto::{DEFAULT_TOPIC_PREFIX, Schema};

/// Partitions per topic: more than one, so ordering and group tests mean something.
pub const PARTITIONS: i32 = 6;

/// How long a broker may take to accept connections after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The topics every netmeter deployment has, under the default prefix.
pub fn default_topics() -> Vec<String> {
    [
        Schema::RawV1,
        Schema::FlowsV1,
        Schema::InventoryV1,
        Schema::DeadLetterV1,
    ]
    .iter()
    .map(|s| s.topic(DEFAULT_TOPIC_PREFIX))
    .collect()
}

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

/// How long [`create_topics`] keeps retrying a broker that times out (a tansu just started on a
/// busy machine answers its first CreateTopics slowly).
pub const CREATE_TOPICS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one CreateTopics request may go unanswered before it is sent again.
pub const CREATE_TOPICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates `topics` with `partitions` each; topics that already exist are left alone.
/// tansu does not auto-create topics on produce, so every topic is created up front. A timeout
/// or a broker not ready yet is retried (creating is idempotent: a topic made by an attempt that
/// timed out exists on the next) until [`CREATE_TOPICS_TIMEOUT`]; any other error ends it.
pub async fn create_topics(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let options = AdminOptions::new()
        .operation_timeout(Some(CREATE_TOPICS_REQUEST_TIMEOUT))
        .request_timeout(Some(CREATE_TOPICS_REQUEST_TIMEOUT));
    let deadline = Instant::now() + CREATE_TOPICS_TIMEOUT;
    let new: Vec<NewTopic> = (topics.iter())
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    loop {
        let timed_out = match admin.create_topics(&new, &options).await {
            Ok(results) => {
                let mut timed_out = None;
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) if retriable(code) => {
                            timed_out = Some(format!("{topic}: {code}"));
                        }
                        Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
                    }
                }
                timed_out
            }
            // A request that timed out is an `AdminOp` error, whose code
            // `rdkafka_error_code()` does not give.
            Err(e @ KafkaError::AdminOp(code)) if retriable(code) => Some(e.to_string()),
            Err(e) if e.rdkafka_error_code().is_some_and(retriable) => Some(e.to_string()),
            Err(e) => return Err(e).context("cannot create the topics"),
        };
        let Some(why) = timed_out else {
            return Ok(());
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "cannot create topics {topics:?} within {CREATE_TOPICS_TIMEOUT:?}: {why}"
        );
        eprintln!("creating topics timed out ({why}); retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Errors after which the same CreateTopics may succeed.
fn retriable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NotController
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
    )
}
