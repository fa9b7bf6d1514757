//! The sink: batches enriched flow records from Kafka into ClickHouse, owning the schema.
//!
//! Reading order: [`row`] (a wire record -> a table row), [`native`] (rows -> the block that is
//! inserted), [`pipeline`] (consume, batch, insert, commit), [`schema`] (tables, migrations,
//! rollups, the Kafka-engine path).
//!
//! The service: [`Config`] (checked flags) -> [`build`] -> [`Service::run`] until shutdown. The
//! one-shot commands: [`migrate_command`] (`migrate`) and [`ddl`] (`ddl`).

pub mod config;
pub mod metric_list;
pub mod native;
pub mod pipeline;
pub mod row;
pub mod schema;

pub use config::{Args, ClickHouseArgs, Command, Config};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use netmeter_common::ServiceContext;
use netmeter_common::consume::GroupConsumer;
use netmeter_common::dead_letter::DeadLetters;
use netmeter_common::kafka::wait_for_topics;
use netmeter_common::publish::Publisher;
use netmeter_proto::Schema;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{BatchLimits, Sink};
use crate::schema::{KafkaEngineSettings, MigrationReport};

impl ClickHouseArgs {
    /// A client for the server (not bound to the database, which may not exist yet).
    pub fn client(&self) -> clickhouse::Client {
        self.client_for(&self.url)
    }

    fn client_for(&self, url: &str) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_compression(native::COMPRESSION)
    }
}

impl Config {
    /// Where the schema is created, by URL: `--clickhouse-url`, or on a cluster without
    /// replication every node of `--clickhouse-cluster-nodes`.
    pub fn schema_servers(&self) -> Vec<(String, clickhouse::Client)> {
        let urls = match &self.cluster {
            Some(c) if c.replication == schema::Replication::None => {
                self.clickhouse.cluster.nodes.clone()
            }
            _ => vec![self.clickhouse.url.clone()],
        };
        urls.into_iter()
            .map(|url| {
                let client = self.clickhouse.client_for(&url);
                (url, client)
            })
            .collect()
    }
}

/// Of `--shutdown-timeout`, the share for writing the batch in progress and committing; the
/// rest is for leaving the consumer group.
const DRAIN_SHARE: f32 = 0.6;

/// How long librdkafka retries a dead letter's delivery before failing it; then
/// `Publisher::confirm` rebuilds the producer and sends again, so this only bounds one attempt.
const MESSAGE_TIMEOUT_MS: &str = "15000";

/// Runs the sink until `ctx.shutdown` is cancelled: [`build`], ready, [`Service::run`].
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let Some(service) = build(config, &ctx.shutdown).await? else {
        return Ok(()); // shut down before ClickHouse or the topics were there
    };
    ctx.health.set_ready(true);
    service.run(ctx.shutdown).await
}

/// The sink, ready to consume: the schema up to date, the consumer and the dead-letter producer
/// created.
pub struct Service {
    sink: Arc<Sink>,
    drain: Duration,
}

/// Waits for ClickHouse, brings the schema up to date ([`migrate`]), waits for the topics and
/// creates the Kafka clients. `None` if `shutdown` came first.
pub async fn build(
    config: Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Service>> {
    let kafka = &config.kafka;
    let flows_topic = kafka.topic(Schema::FlowsV1.tag());
    tracing::info!(clickhouse = %config.clickhouse.url, topic = %flows_topic, "sink configured");
    netmeter_common::metric::declare(metric_list::ALL);
    let client = config.clickhouse.client();
    if !wait_for_clickhouse(&client, shutdown).await {
        return Ok(None);
    }
    for (url, report) in migrate(&config, None).await? {
        tracing::info!(clickhouse = %url, %report, "schema up to date");
    }
    let topics = vec![flows_topic.clone(), kafka.topic(Schema::DeadLetterV1.tag())];
    if !wait_for_topics(kafka, topics, shutdown).await? {
        return Ok(None);
    }
    let consumer = GroupConsumer::new(
        kafka
            .client_config("netmeter-sink")
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest"),
        metric_list::CONSUMER,
    )?;
    let mut producer = kafka.client_config("netmeter-sink");
    producer
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    let mut client = client.with_database(&config.schema.database);
    if config.cluster.is_some() {
        // The insert returns once every shard has its rows, before the offsets are committed
        // (by default a Distributed table queues them on the receiving node).
        client = client.with_setting("distributed_foreground_insert", "1");
    }
    let sink = Sink {
        consumer: Arc::new(consumer),
        topic: flows_topic,
        client,
        table: "flows".into(),
        publisher: Arc::new(Publisher::new(producer, metric_list::PUBLISH)?),
        dead_letters: DeadLetters::new(kafka, "sink", metric_list::DEAD_LETTERS),
        limits: BatchLimits {
            max_rows: config.batch.batch_rows,
            max_age: config.batch.batch_age,
        },
        expiry: pipeline::Expiry::new(config.schema.record_ttl_days),
    };
    Ok(Some(Service {
        sink: Arc::new(sink),
        drain: config.service.shutdown_timeout.mul_f32(DRAIN_SHARE),
    }))
}

impl Service {
    /// Consumes the flows topic into ClickHouse until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.sink.run(shutdown, self.drain).await
    }
}

/// Waits until ClickHouse answers a query; false if shutdown came first.
async fn wait_for_clickhouse(client: &clickhouse::Client, shutdown: &CancellationToken) -> bool {
    let ping = || client.query("SELECT 1").fetch_one::<u8>();
    netmeter_common::retry::until_ok("ClickHouse", shutdown, ping)
        .await
        .is_some()
}

/// Brings the schema up to date ([`schema::migrate`], or [`schema::migrate_cluster`] on every
/// server of [`Config::schema_servers`]) and, with `kafka_engine`, creates the Kafka-engine
/// path too (only the `migrate` command does: the service reads the topic itself). Returns
/// each server's URL and report.
pub async fn migrate(
    config: &Config,
    kafka_engine: Option<&KafkaEngineSettings>,
) -> anyhow::Result<Vec<(String, MigrationReport)>> {
    let servers = config.schema_servers();
    let mut reports = Vec::new();
    for (url, client) in &servers {
        let report = match &config.cluster {
            None => schema::migrate(client, &config.schema).await?,
            Some(cluster) => {
                let hosts =
                    (cluster.replication == schema::Replication::None).then_some(servers.len());
                schema::cluster::check_cluster(client, cluster, hosts).await?;
                schema::migrate_cluster(client, &config.schema, cluster).await?
            }
        };
        if let Some(engine) = kafka_engine {
            match &config.cluster {
                None => schema::create_kafka_engine(client, &config.schema, engine).await?,
                Some(cluster) => {
                    schema::kafka_engine::create_kafka_engine_on_cluster(
                        client,
                        &config.schema,
                        engine,
                        cluster,
                    )
                    .await?
                }
            }
        }
        reports.push((url.clone(), report));
    }
    Ok(reports)
}

/// `netmeter-sink migrate [--kafka-engine]`: [`migrate`], then prints what it did; exit code 1
/// if it failed.
pub fn migrate_command(config: Config, kafka_engine: Option<KafkaEngineSettings>) -> ExitCode {
    if let Err(err) = config.service.log.init() {
        err.exit();
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(migrate(&config, kafka_engine.as_ref())) {
        Ok(reports) => {
            let several = reports.len() > 1;
            for (url, report) in reports {
                if several {
                    println!("{url}: {report}");
                } else {
                    println!("{report}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "migration failed");
            ExitCode::FAILURE
        }
    }
}

/// `netmeter-sink ddl [--kafka-engine]`: the schema's SQL, with the Kafka-engine path if given.
pub fn ddl(config: &Config, kafka_engine: Option<&KafkaEngineSettings>) -> String {
    match &config.cluster {
        None => schema::ddl(&config.schema, kafka_engine),
        Some(cluster) => schema::cluster::ddl(&config.schema, kafka_engine, cluster),
    }
}
