//! The attributor: consumes raw deltas, attributes and prices them, publishes flow records.
//!
//! This is the service shell (configuration, Kafka readiness, lifecycle) plus the first piece
//! of attribution, [`cloud`] (cloud IP ranges); the rest lands with the attributor issue.

pub mod cloud;
pub mod config;

pub use config::{Args, Config};

use netmeter_common::ServiceContext;
use netmeter_common::kafka::wait_for_topics;
use netmeter_proto::Schema;

/// Runs the attributor until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let prefix = &config.kafka.topic_prefix;
    let topics = vec![Schema::RawV1.topic(prefix), Schema::FlowsV1.topic(prefix)];
    tracing::info!(cluster = %config.cluster, group = %config.group_id, ?topics, "attributor configured");
    if !wait_for_topics(&config.kafka, topics, &ctx.shutdown).await? {
        return Ok(());
    }
    ctx.health.set_ready(true);
    ctx.shutdown.cancelled().await;
    Ok(())
}
