//! The sink: batches enriched flow records from Kafka into ClickHouse, owning the schema.
//!
//! Reading order: [`row`] (a wire record -> a table row), [`native`] (rows -> the block that is
//! inserted), [`pipeline`] (consume, batch, insert, commit), [`schema`] (tables, migrations,
//! rollups, the Kafka-engine path).

pub mod config;
pub mod metric_descriptions;
pub mod native;
pub mod pipeline;
pub mod row;
pub mod schema;

pub use config::{Args, ClickHouseArgs, Command, Config};

use std::sync::Arc;

use netmeter_common::ServiceContext;
use netmeter_common::dead_letter::DeadLetters;
use netmeter_common::kafka::{GroupContext, wait_for_topics};
use netmeter_common::publish::Publisher;
use netmeter_proto::Schema;

use crate::pipeline::{BatchLimits, Sink};

impl ClickHouseArgs {
    /// A client for the server (not bound to the database, which may not exist yet).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_compression(native::COMPRESSION)
    }
}

/// Runs the sink until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let kafka = &config.kafka;
    let flows_topic = kafka.topic(Schema::FlowsV1.tag());
    tracing::info!(clickhouse = %config.clickhouse.url, topic = %flows_topic, "sink configured");
    metric_descriptions::describe();
    let client = config.clickhouse.client();
    if !wait_for_clickhouse(&client, &ctx).await {
        return Ok(());
    }
    let report = schema::migrate(&client, &config.schema).await?;
    tracing::info!(%report, "schema up to date");
    let topics = vec![flows_topic.clone(), kafka.topic(Schema::DeadLetterV1.tag())];
    if !wait_for_topics(kafka, topics, &ctx.shutdown).await? {
        return Ok(());
    }
    let consumer: rdkafka::consumer::StreamConsumer<GroupContext> = kafka
        .client_config("netmeter-sink")
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(GroupContext { service: "sink" })?;
    let consumer = Arc::new(consumer);
    let mut producer = kafka.client_config("netmeter-sink");
    producer
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "15000");
    let sink = Arc::new(Sink {
        consumer: consumer.clone(),
        topic: flows_topic,
        client: client.with_database(&config.schema.database),
        table: "flows".into(),
        publisher: Arc::new(Publisher::new(producer, "sink")?),
        dead_letters: DeadLetters::new(kafka, "sink"),
        limits: BatchLimits {
            max_rows: config.batch.batch_rows,
            max_age: config.batch.batch_age,
        },
    });
    ctx.health.set_ready(true);
    let result = sink
        .run(
            ctx.shutdown.clone(),
            config.service.shutdown_timeout.mul_f32(0.6),
        )
        .await;
    // Destroying a librdkafka consumer can block forever against some brokers (tansu); the
    // offsets are committed, so leaving it to the process exit loses nothing.
    std::mem::forget(consumer);
    result
}

/// Waits until ClickHouse answers a query; false if shutdown came first.
async fn wait_for_clickhouse(client: &clickhouse::Client, ctx: &ServiceContext) -> bool {
    let ping = || client.query("SELECT 1").fetch_one::<u8>();
    netmeter_common::retry::until_ok("ClickHouse", &ctx.shutdown, ping)
        .await
        .is_some()
}
