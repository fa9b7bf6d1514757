//! The Kafka-engine path: ClickHouse reads `<prefix>flows.v1` itself, instead of the sink.
//!
//! `flows_kafka` (engine Kafka, format `Protobuf` with `flow.proto` as the format schema) holds
//! the wire fields with the types the Protobuf format reads, one column per field of the
//! descriptor ([`netmeter_proto::flow_fields::ALL`]); `flows_kafka_mv` converts them into
//! `flows` rows (ids to UUID, addresses to IPv6, IPv4 mapped). A message ClickHouse cannot parse,
//! one without the `netmeter-schema: flows.v1` header, or a record whose id or addresses do not
//! parse, never reaches `flows`: `flows_kafka_errors_mv` keeps it in `flows_kafka_errors` with the
//! reason (`kafka_handle_error_mode = 'stream'`), as the sink sends it to the dead-letter topic.
//! Everything downstream (deduplication by record id, replays, rollups) is the same as for the
//! sink, because it happens in `flows`.
//!
//! [`create_kafka_engine`] creates what is missing and never changes what exists, so a
//! `flows_kafka` made by an older sink keeps its columns: its view goes on filling `flows`, and a
//! column added to `flows` since (schema version 4: `local_initiated`, `local_instance_type`)
//! reads false or "" there. Carrying the new fields takes the current `flow.proto` on the server
//! and dropping `flows_kafka_mv`, `flows_kafka_errors_mv` and `flows_kafka` before creating them
//! again; ClickHouse's consumer group keeps its offsets.
//!
//! The format schema file must be on the ClickHouse server: in `format_schema_path`
//! (`/var/lib/clickhouse/format_schemas/` by default) for the default `flow.proto:Flow`, written
//! by [`write_format_schema`] or copied from `proto/netmeter/flow.proto`. clickhouse-local (our
//! test launcher) resolves it against its working directory, or takes an absolute path.
//!
//! On a cluster ([`create_kafka_engine_on_cluster`]) every node consumes in the same group and
//! writes into the `Distributed` `flows` (see [`super::cluster`]).

use std::path::{Path, PathBuf};

use netmeter_proto::flow_fields::{self, FieldType};
use netmeter_proto::{SCHEMA_HEADER, Schema};

use super::cluster::{Cluster, Layout};
use super::migrations::SCHEMA_VERSION;
use super::tables::{escape, flow_columns};
use super::{SchemaError, SchemaSettings, execute};

/// Days `flows_kafka_errors` keeps a rejected message.
pub const KAFKA_ERRORS_TTL_DAYS: u32 = 7;

/// Where and how ClickHouse consumes the flows topic. Flatten into the CLI; `brokers` and `topic`
/// default to the sink's own Kafka settings through [`KafkaEngineSettings::with_defaults`].
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "ClickHouse Kafka engine")]
pub struct KafkaEngineSettings {
    /// Bootstrap servers as the ClickHouse server reaches them [default: --kafka-brokers].
    #[arg(long = "kafka-engine-brokers", env = "NETMETER_KAFKA_ENGINE_BROKERS")]
    pub brokers: Option<String>,
    /// Topic ClickHouse reads [default: <--kafka-topic-prefix>flows.v1].
    #[arg(long = "kafka-engine-topic", env = "NETMETER_KAFKA_ENGINE_TOPIC")]
    pub topic: Option<String>,
    /// Consumer group of ClickHouse's consumers (not the sink's group).
    #[arg(
        long = "kafka-engine-group",
        env = "NETMETER_KAFKA_ENGINE_GROUP",
        default_value = "netmeter-clickhouse"
    )]
    pub group: String,
    /// `kafka_schema`: `FILE:Message`, FILE relative to the server's format_schema_path.
    #[arg(
        long = "kafka-engine-format-schema",
        env = "NETMETER_KAFKA_ENGINE_FORMAT_SCHEMA",
        default_value = "flow.proto:Flow"
    )]
    pub format_schema: String,
    /// Consumers per ClickHouse server (at most the topic's partitions).
    #[arg(
        long = "kafka-engine-consumers",
        env = "NETMETER_KAFKA_ENGINE_CONSUMERS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub num_consumers: u32,
    /// More Kafka table settings, KEY=VALUE, e.g. kafka_security_protocol=sasl_ssl
    /// (repeatable; the env var is comma-separated). Secrets are better kept in the server's
    /// `<kafka>` configuration than in the table definition.
    #[arg(
        long = "kafka-engine-setting",
        env = "NETMETER_KAFKA_ENGINE_SETTINGS",
        value_delimiter = ',',
        value_parser = parse_setting
    )]
    pub extra_settings: Vec<(String, String)>,
}

impl KafkaEngineSettings {
    /// Brokers `brokers`, topic `topic`, everything else at its default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaEngineSettings {
        KafkaEngineSettings {
            brokers: Some(brokers.into()),
            topic: Some(topic.into()),
            group: "netmeter-clickhouse".into(),
            format_schema: "flow.proto:Flow".into(),
            num_consumers: 1,
            extra_settings: Vec::new(),
        }
    }

    /// Fills `brokers` and `topic` if they were not given (the sink's `--kafka-brokers` and
    /// flows topic).
    pub fn with_defaults(mut self, brokers: &str, topic: &str) -> KafkaEngineSettings {
        self.brokers.get_or_insert_with(|| brokers.to_string());
        self.topic.get_or_insert_with(|| topic.to_string());
        self
    }

    fn brokers(&self) -> &str {
        self.brokers.as_deref().unwrap_or("127.0.0.1:9092")
    }

    fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| Schema::FlowsV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX))
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let key = key.trim();
    if !key.starts_with("kafka_") || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{key}` is not a Kafka table setting (kafka_..., letters, digits and _)"
        ));
    }
    Ok((key.to_string(), value.trim().to_string()))
}

/// Writes `flow.proto` (the Kafka engine's format schema) into `dir` and returns its path.
pub fn write_format_schema(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("flow.proto");
    std::fs::write(&path, netmeter_proto::FLOW_PROTO)?;
    Ok(path)
}

/// Creates the Kafka table and its views (if missing). Changing a setting of an existing Kafka
/// table means dropping `flows_kafka_mv`, `flows_kafka_errors_mv` and `flows_kafka` first;
/// ClickHouse's consumer group keeps its offsets.
pub async fn create_kafka_engine(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    kafka: &KafkaEngineSettings,
) -> Result<(), SchemaError> {
    settings.validate()?;
    for statement in statements(settings, kafka) {
        execute(client, &statement).await?;
    }
    Ok(())
}

/// [`create_kafka_engine`] on a cluster: the Kafka table and its views on every node (one
/// consumer group), with `ON CLUSTER` when the cluster replicates, else on the node `client`
/// talks to (run it on every node). `flows_kafka_mv` writes into the `Distributed` `flows`, so
/// the sharding key, not the consuming node, decides where a record is stored.
pub async fn create_kafka_engine_on_cluster(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    kafka: &KafkaEngineSettings,
    cluster: &Cluster,
) -> Result<(), SchemaError> {
    settings.validate()?;
    cluster.validate().map_err(SchemaError::Settings)?;
    let layout = Layout::Cluster(cluster);
    for statement in statements(settings, kafka) {
        execute(
            client,
            &layout.kafka_statement(&statement, &settings.database),
        )
        .await?;
    }
    Ok(())
}

/// The column type ClickHouse's Protobuf format reads a field of type `ty` into: the value as
/// it is on the wire (ids and addresses as text, ports as UInt32); `flows_kafka_mv` converts.
fn wire_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "String",
        FieldType::Bool => "Bool",
        FieldType::Uint32 => "UInt32",
        FieldType::Uint64 => "UInt64",
        FieldType::Double => "Float64",
    }
}

/// The expression that turns the wire column into the `flows` column.
fn conversion(column: &str, ty: &str) -> String {
    match ty {
        "UUID" => format!("toUUIDOrDefault({column}) AS {column}"),
        "IPv6" => format!("toIPv6OrDefault({column}) AS {column}"),
        "UInt16" => format!("toUInt16({column}) AS {column}"),
        _ => column.to_string(),
    }
}

/// `flows` columns that are written (not the MATERIALIZED `interval_start`).
fn written_columns() -> Vec<(String, &'static str)> {
    flow_columns(SCHEMA_VERSION)
        .into_iter()
        .filter(|c| !c.extra.starts_with("MATERIALIZED"))
        .map(|c| (c.name, c.ty))
        .collect()
}

/// The reason a consumed row does not become a `flows` row, or '' if it does.
fn rejection(header: &str) -> String {
    let mut checks = vec![
        "length(_error) > 0, _error".to_string(),
        format!("{header} = '', 'the {SCHEMA_HEADER} header is missing'",),
        format!(
            "{header} != '{tag}', concat('the {SCHEMA_HEADER} header is ', {header}, ', expected {tag}')",
            tag = Schema::FlowsV1.tag()
        ),
        "toUUIDOrNull(record_id) IS NULL, concat('record_id \"', record_id, '\" is not a UUID')"
            .to_string(),
    ];
    for side in ["local", "remote"] {
        checks.push(format!(
            "toIPv6OrNull({side}_ip) IS NULL, concat('{side}_ip \"', {side}_ip, '\" is not an IP address')"
        ));
        checks.push(format!(
            "{side}_port > 65535, concat('{side}_port ', toString({side}_port), ' is not a port')"
        ));
    }
    format!(
        "multiIf(\n        {},\n        '')",
        checks.join(",\n        ")
    )
}

/// The Kafka table, the error table and both views.
pub(crate) fn statements(settings: &SchemaSettings, kafka: &KafkaEngineSettings) -> Vec<String> {
    let db = &settings.database;
    let columns = written_columns();
    let wire: Vec<String> = flow_fields::ALL
        .iter()
        .map(|field| format!("    {} {}", field.name, wire_type(field.ty)))
        .collect();
    let mut table_settings = vec![
        ("kafka_broker_list".to_string(), kafka.brokers().to_string()),
        ("kafka_topic_list".to_string(), kafka.topic()),
        ("kafka_group_name".to_string(), kafka.group.clone()),
        ("kafka_format".to_string(), "Protobuf".to_string()),
        ("kafka_schema".to_string(), kafka.format_schema.clone()),
        ("kafka_handle_error_mode".to_string(), "stream".to_string()),
    ];
    table_settings.extend(kafka.extra_settings.iter().cloned());
    let mut rendered: Vec<String> = table_settings
        .iter()
        .map(|(k, v)| format!("    {k} = '{}'", escape(v)))
        .collect();
    rendered.push(format!("    kafka_num_consumers = {}", kafka.num_consumers));
    let kafka_table = format!(
        "CREATE TABLE IF NOT EXISTS {db}.flows_kafka\n(\n{}\n)\nENGINE = Kafka\nSETTINGS\n{}",
        wire.join(",\n"),
        rendered.join(",\n")
    );
    let header = format!("_headers.value[indexOf(_headers.name, '{SCHEMA_HEADER}')]");
    let rejection = rejection(&header);
    let conversions: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!("    {}", conversion(name, ty)))
        .collect();
    // The conversions reuse the wire names, so the check runs in a subquery, on the wire values.
    let flows_view = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.flows_kafka_mv TO {db}.flows AS\nSELECT\n{}\n\
         FROM\n(\n    SELECT *, {rejection} AS rejection\n    FROM {db}.flows_kafka\n)\n\
         WHERE rejection = ''",
        conversions.join(",\n")
    );
    let errors_table = format!(
        "CREATE TABLE IF NOT EXISTS {db}.flows_kafka_errors\n(\n    \
         received_at DateTime64(3, 'UTC'),\n    kafka_topic LowCardinality(String),\n    \
         kafka_partition UInt64,\n    kafka_offset UInt64,\n    error String,\n    \
         raw_message String CODEC(ZSTD(1))\n)\nENGINE = MergeTree\n\
         PARTITION BY toYYYYMMDD(received_at)\nORDER BY received_at\n\
         TTL toDateTime(received_at) + toIntervalDay({KAFKA_ERRORS_TTL_DAYS})\n\
         SETTINGS ttl_only_drop_parts = 1"
    );
    let errors_view = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.flows_kafka_errors_mv TO {db}.flows_kafka_errors AS\n\
         SELECT\n    now64(3, 'UTC') AS received_at,\n    _topic AS kafka_topic,\n    \
         _partition AS kafka_partition,\n    _offset AS kafka_offset,\n    \
         {rejection} AS error,\n    _raw_message AS raw_message\n\
         FROM {db}.flows_kafka\nWHERE error != ''"
    );
    vec![kafka_table, errors_table, flows_view, errors_view]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_key_value_and_refuse_other_keys() {
        assert_eq!(
            parse_setting("kafka_security_protocol=sasl_ssl"),
            Ok(("kafka_security_protocol".into(), "sasl_ssl".into()))
        );
        assert!(parse_setting("kafka_security_protocol").is_err());
        assert!(parse_setting("max_threads=1").is_err());
        assert!(parse_setting("kafka_x'=1").is_err());
    }

    #[test]
    fn the_kafka_table_has_every_proto_field() {
        let settings = SchemaSettings::default();
        let kafka = KafkaEngineSettings::new("kafka:9092", "netmeter.flows.v1");
        let sql = &statements(&settings, &kafka)[0];
        for field in flow_fields::ALL.iter().map(|f| f.name) {
            assert!(
                sql.contains(&format!("    {field} ")),
                "{field} missing:\n{sql}"
            );
        }
        assert!(sql.contains("kafka_broker_list = 'kafka:9092'"), "{sql}");
        assert!(sql.contains("kafka_schema = 'flow.proto:Flow'"), "{sql}");
    }

    #[test]
    fn the_kafka_table_reads_every_field_as_its_wire_type() {
        let settings = SchemaSettings::default();
        let kafka = KafkaEngineSettings::new("kafka:9092", "netmeter.flows.v1");
        let table = &statements(&settings, &kafka)[0];
        let body = &table[table.find("(\n").unwrap() + 2..table.find("\n)").unwrap()];
        let columns: Vec<(&str, &str)> = body
            .lines()
            .map(|l| l.trim().trim_end_matches(',').split_once(' ').unwrap())
            .collect();
        let wrong = crate::schema::proto_fields::type_mismatches(
            "the Kafka-engine table flows_kafka (services/sink/src/schema/kafka_engine.rs)",
            &columns,
            |field| vec![wire_type(field.ty)],
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn brokers_and_topic_default_to_the_sinks_own() {
        let args = KafkaEngineSettings {
            brokers: None,
            topic: None,
            ..KafkaEngineSettings::new("", "")
        };
        let resolved = args.with_defaults("b:9092", "x.flows.v1");
        assert_eq!(resolved.brokers.as_deref(), Some("b:9092"));
        assert_eq!(resolved.topic.as_deref(), Some("x.flows.v1"));
    }
}
