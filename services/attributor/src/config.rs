//! Attributor flags and env vars, validated into a [`Config`].

use clap::Parser;
use netmeter_common::kafka::KafkaArgs;
use netmeter_common::{ConfigError, ServiceArgs};

/// Attributes raw conntrack deltas to workloads, zones, clouds and prices; republishes them.
#[derive(Parser, Debug)]
#[command(name = "netmeter-attributor", version, about)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group shared by all replicas.
    #[arg(long, env = "NETMETER_GROUP_ID", default_value = "netmeter-attributor")]
    pub group_id: String,
    /// Name of this cluster, written into every flow record.
    #[arg(long, env = "NETMETER_CLUSTER", default_value = "default")]
    pub cluster: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceArgs,
    pub kafka: KafkaArgs,
    pub group_id: String,
    pub cluster: String,
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.kafka.validate()?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "--group-id",
                "NETMETER_GROUP_ID",
                "is empty",
            ));
        }
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::invalid(
                "--cluster",
                "NETMETER_CLUSTER",
                "is empty",
            ));
        }
        Ok(Config {
            service: self.service,
            kafka: self.kafka,
            group_id: self.group_id,
            cluster: self.cluster,
        })
    }
}
