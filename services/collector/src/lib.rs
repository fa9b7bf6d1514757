//! The node collector: reads conntrack and publishes per-connection deltas to the raw topic.
//!
//! This is the service shell (configuration, Kafka readiness, lifecycle); reading conntrack
//! and computing deltas land with the collector issue.

pub mod config;

pub use config::{Args, Config, Output};

use netmeter_common::ServiceContext;
use netmeter_common::kafka::wait_for_topics;
use netmeter_proto::Schema;

/// Runs the collector until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    tracing::info!(node = %config.node_name, interval = ?config.interval, output = ?config.output, "collector configured");
    if config.output == Output::Kafka {
        let raw_topic = Schema::RawV1.topic(&config.kafka.topic_prefix);
        if !wait_for_topics(&config.kafka, vec![raw_topic], &ctx.shutdown).await? {
            return Ok(());
        }
    }
    ctx.health.set_ready(true);
    ctx.shutdown.cancelled().await;
    Ok(())
}
