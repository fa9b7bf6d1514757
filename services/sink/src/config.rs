//! Sink flags and env vars, validated into a [`Config`].

use clap::Parser;
use netmeter_common::kafka::KafkaArgs;
use netmeter_common::{ConfigError, ServiceArgs};

/// Writes enriched flow records from Kafka into ClickHouse.
#[derive(Parser, Debug)]
#[command(name = "netmeter-sink", version, about)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group shared by all sink replicas.
    #[arg(long, env = "NETMETER_GROUP_ID", default_value = "netmeter-sink")]
    pub group_id: String,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

/// Where ClickHouse is (HTTP interface; self-hosted or ClickHouse Cloud).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "ClickHouse")]
pub struct ClickHouseArgs {
    /// HTTP(S) URL of ClickHouse, e.g. http://clickhouse:8123.
    #[arg(
        long = "clickhouse-url",
        env = "NETMETER_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,
    #[arg(
        long = "clickhouse-database",
        env = "NETMETER_CLICKHOUSE_DATABASE",
        default_value = "netmeter"
    )]
    pub database: String,
    #[arg(
        long = "clickhouse-user",
        env = "NETMETER_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    #[arg(
        long = "clickhouse-password",
        env = "NETMETER_CLICKHOUSE_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceArgs,
    pub kafka: KafkaArgs,
    pub group_id: String,
    pub clickhouse: ClickHouseArgs,
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.kafka.validate()?;
        let url = &self.clickhouse.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "--clickhouse-url",
                "NETMETER_CLICKHOUSE_URL",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        let database = &self.clickhouse.database;
        if database.is_empty()
            || !database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::invalid(
                "--clickhouse-database",
                "NETMETER_CLICKHOUSE_DATABASE",
                format!("`{database}` must be letters, digits and _"),
            ));
        }
        Ok(Config {
            service: self.service,
            kafka: self.kafka,
            group_id: self.group_id,
            clickhouse: self.clickhouse,
        })
    }
}
