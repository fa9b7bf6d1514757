//! Sink flags and env vars, validated into a [`Config`].

use std::time::Duration;

use clap::{Parser, Subcommand};
use netmeter_common::kafka::KafkaArgs;
use netmeter_common::{ConfigError, ServiceArgs};
use netmeter_proto::Schema;

use crate::schema::{Cluster, KafkaEngineSettings, Replication, SchemaSettings};

/// Writes enriched flow records from Kafka into ClickHouse.
#[derive(Parser, Debug)]
#[command(name = "netmeter-sink", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group shared by all sink replicas.
    #[arg(long, env = "NETMETER_GROUP_ID", default_value = "netmeter-sink")]
    pub group_id: String,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub schema: SchemaSettings,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the schema migrations to ClickHouse (the service also does at start) and exit.
    Migrate {
        /// Also create the Kafka table and its materialized view (ClickHouse reads the topic).
        #[arg(long)]
        kafka_engine: bool,
        #[command(flatten)]
        engine: KafkaEngineSettings,
    },
    /// Print the schema's SQL (and with --kafka-engine the Kafka table and view) and exit.
    Ddl {
        #[arg(long)]
        kafka_engine: bool,
        #[command(flatten)]
        engine: KafkaEngineSettings,
    },
}

/// When a batch is written to ClickHouse.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Batching")]
pub struct BatchArgs {
    /// Write a batch once it has this many rows...
    #[arg(long, env = "NETMETER_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,
    /// ...or once its first row is this old.
    #[arg(long, env = "NETMETER_BATCH_AGE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub batch_age: Duration,
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
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// A ClickHouse cluster instead of one server (see `netmeter_sink::schema::cluster`): data
/// tables as `<name>_local` on every node behind `Distributed` tables of the usual names.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "ClickHouse cluster")]
pub struct ClusterArgs {
    /// Cluster of the servers' <remote_servers> to lay the schema out on ("": one server).
    #[arg(long = "clickhouse-cluster", env = "NETMETER_CLICKHOUSE_CLUSTER")]
    pub name: Option<String>,
    /// keeper: Replicated engines and ON CLUSTER DDL (needs ClickHouse Keeper or ZooKeeper);
    /// none: one replica per shard, the DDL run on every node of --clickhouse-cluster-nodes.
    #[arg(
        long = "clickhouse-cluster-replication",
        env = "NETMETER_CLICKHOUSE_CLUSTER_REPLICATION",
        value_enum,
        default_value_t = Replication::Keeper
    )]
    pub replication: Replication,
    /// With replication none: the HTTP URL of every node, comma-separated (the schema is
    /// migrated on each; rows still go to --clickhouse-url).
    #[arg(
        long = "clickhouse-cluster-nodes",
        env = "NETMETER_CLICKHOUSE_CLUSTER_NODES",
        value_delimiter = ','
    )]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceArgs,
    pub kafka: KafkaArgs,
    pub group_id: String,
    pub clickhouse: ClickHouseArgs,
    pub batch: BatchArgs,
    pub schema: SchemaSettings,
    /// The cluster the schema is laid out on; `None`: one server.
    pub cluster: Option<Cluster>,
}

impl Config {
    /// The settings of `migrate --kafka-engine` and `ddl --kafka-engine`: brokers and topic
    /// default to the sink's own (`--kafka-brokers`, the flows topic).
    pub fn kafka_engine(&self, engine: KafkaEngineSettings) -> KafkaEngineSettings {
        engine.with_defaults(
            &self.kafka.brokers,
            &self.kafka.topic(Schema::FlowsV1.tag()),
        )
    }
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.kafka.validate()?;
        let url = &self.clickhouse.url;
        if !is_http_url(url) {
            return Err(ConfigError::invalid(
                "--clickhouse-url",
                "NETMETER_CLICKHOUSE_URL",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        let cluster = self.clickhouse.cluster.validate()?;
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
        if self.batch.batch_rows == 0 {
            return Err(ConfigError::invalid(
                "--batch-rows",
                "NETMETER_BATCH_ROWS",
                "must be at least 1",
            ));
        }
        if self.batch.batch_age.is_zero() {
            return Err(ConfigError::invalid(
                "--batch-age",
                "NETMETER_BATCH_AGE",
                "must be more than 0s",
            ));
        }
        let schema = SchemaSettings {
            database: self.clickhouse.database.clone(),
            ..self.schema
        };
        schema.validate().map_err(|e| {
            ConfigError::invalid("--clickhouse-database", "NETMETER_CLICKHOUSE_DATABASE", e)
        })?;
        Ok(Config {
            service: self.service,
            kafka: self.kafka,
            group_id: self.group_id,
            clickhouse: self.clickhouse,
            batch: self.batch,
            schema,
            cluster,
        })
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl ClusterArgs {
    /// The cluster, if one is named; the nodes are required exactly without replication.
    pub fn validate(&self) -> Result<Option<Cluster>, ConfigError> {
        const NODES: (&str, &str) = (
            "--clickhouse-cluster-nodes",
            "NETMETER_CLICKHOUSE_CLUSTER_NODES",
        );
        let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) else {
            if !self.nodes.is_empty() {
                return Err(ConfigError::invalid(
                    NODES.0,
                    NODES.1,
                    "names the nodes of a cluster, but --clickhouse-cluster is not set",
                ));
            }
            return Ok(None);
        };
        let cluster = Cluster::new(name, self.replication);
        cluster.validate().map_err(|e| {
            ConfigError::invalid("--clickhouse-cluster", "NETMETER_CLICKHOUSE_CLUSTER", e)
        })?;
        match (self.replication, self.nodes.is_empty()) {
            (Replication::None, true) => {
                return Err(ConfigError::invalid(
                    NODES.0,
                    NODES.1,
                    "is required with --clickhouse-cluster-replication none: the HTTP URL of \
                     every node, where the schema is created",
                ));
            }
            (Replication::Keeper, false) => {
                return Err(ConfigError::invalid(
                    NODES.0,
                    NODES.1,
                    "is only for --clickhouse-cluster-replication none: with keeper the schema \
                     is created ON CLUSTER through --clickhouse-url",
                ));
            }
            _ => {}
        }
        if let Some(url) = self.nodes.iter().find(|u| !is_http_url(u)) {
            return Err(ConfigError::invalid(
                NODES.0,
                NODES.1,
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        Ok(Some(cluster))
    }
}
