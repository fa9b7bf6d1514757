//! The sink: batches enriched flow records from Kafka into ClickHouse.
//!
//! This is the service shell (configuration, ClickHouse and Kafka readiness, lifecycle); the
//! schema, batching and delivery guarantees land with the sink issue.

pub mod config;

pub use config::{Args, ClickHouseArgs, Config};

use netmeter_common::ServiceContext;
use netmeter_common::kafka::wait_for_topics;
use netmeter_proto::Schema;

impl ClickHouseArgs {
    /// A client for the server (not bound to the database, which may not exist yet).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
    }
}

/// Runs the sink until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let flows_topic = Schema::FlowsV1.topic(&config.kafka.topic_prefix);
    tracing::info!(clickhouse = %config.clickhouse.url, topic = %flows_topic, "sink configured");
    if !wait_for_clickhouse(&config.clickhouse.client(), &ctx).await {
        return Ok(());
    }
    if !wait_for_topics(&config.kafka, vec![flows_topic], &ctx.shutdown).await? {
        return Ok(());
    }
    ctx.health.set_ready(true);
    ctx.shutdown.cancelled().await;
    Ok(())
}

/// Waits until ClickHouse answers a query; false if shutdown came first.
async fn wait_for_clickhouse(client: &clickhouse::Client, ctx: &ServiceContext) -> bool {
    let ping = || client.query("SELECT 1").fetch_one::<u8>();
    netmeter_common::retry::until_ok("ClickHouse", &ctx.shutdown, ping)
        .await
        .is_some()
}
