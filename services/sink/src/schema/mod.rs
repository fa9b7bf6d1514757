//! The ClickHouse schema the sink owns: the `flows` table, the per-connection detail and the
//! per-minute and per-hour rollups recomputed from it, versioned idempotent migrations
//! ([`migrate`]), the DDL as text ([`ddl`]), the Kafka-engine path in which ClickHouse reads the
//! flows topic itself ([`kafka_engine`]), and the layout over a ClickHouse cluster ([`cluster`]).
//!
//! # Two tables of detail
//!
//! `flows` holds a row per record (a connection and direction every 5 s) and is what exactness
//! rests on: redeliveries are deduplicated against it, a replay replaces its rows, late data
//! lands in it. That costs ~54 B a record, ~650 B a connection-minute, so it is kept only
//! `--record-ttl-days` (7; the replay horizon). `connection_minutes` keeps every attribute of a
//! record, one row per connection, direction and minute, for `--ttl-days` (90): recomputed from
//! `flows FINAL` by the rollup machinery below, it is exact, follows replays and takes late data,
//! and costs ~14 B a connection-minute, less than a kubenetmon-shaped table of the same traffic
//! (`cargo bench -p netmeter-sink --bench storage`): money as prices per GiB (costs are `ALIAS`
//! columns), pods as dictionaries, ZSTD over every dictionary (`tables::rollup_table`).
//!
//! # `flows`: one row per record id, highest generation wins
//!
//! `ReplacingMergeTree(generation)` ordered by `(interval_start, record_id)`: only what a replay
//! never changes is in the key, so a redelivered record (same id, same generation) and a replayed
//! one (same id, higher generation, possibly other namespace or workload) replace the old row,
//! and `SELECT ... FROM flows FINAL` gives single-pass totals. A retried insert with the sink's
//! `insert_deduplication_token` is dropped by ClickHouse (`non_replicated_deduplication_window`).
//! Partitions are days; the TTL (`--record-ttl-days`) drops whole days.
//!
//! # Rollups that never double-count
//!
//! `flows_per_minute` and `flows_per_hour` hold sums of bytes, packets, cost and record count per
//! time bucket and [`DIMENSIONS`]; `connection_minutes` is recomputed the same way (its own
//! views, marks and watermark), keyed by every attribute of a record. An insert-triggered materialized view summing `flows` would
//! count a redelivered or replayed record twice, because it sees inserts, not the deduplicated
//! table. So a bucket is never incremented; it is *recomputed* from the deduplicated source:
//!
//! - `flows_per_minute_changes_mv` (insert-triggered, on `flows`) writes a change mark (rollup,
//!   minute, now) into `rollup_changes` for every minute an insert touches, whatever its age: a
//!   replay of last week marks last week's minutes.
//! - `flows_per_minute_refresh`, a refreshable materialized view (`REFRESH EVERY 1 MINUTE
//!   APPEND`), recomputes the marked minutes from `flows FINAL` and appends the sums with
//!   `refreshed_at` = the refresh's start. The rollup is a `ReplacingMergeTree(refreshed_at,
//!   is_deleted)` keyed by bucket and dimensions, so the new sums replace the old ones. A replay
//!   can move bytes to other dimensions (another namespace): the recomputation also writes a
//!   deletion (`is_deleted = 1`) for every row of the bucket that the fresh sums no longer have,
//!   so `FINAL` never shows the old attribution next to the new.
//! - Which marks are new: `flows_per_minute_watermark_mv` (insert-triggered, on the rollup)
//!   records in `rollup_watermarks` the `refreshed_at` of every refresh that wrote rows; the
//!   next refresh reads the marks from that watermark minus 2 minutes (inserts still running
//!   when it read `flows`). The watermark is data, so a restarted ClickHouse resumes where it
//!   was (`system.view_refreshes` starts empty after a restart on a single server, and would
//!   make the first refresh recompute a week of marks).
//! - The same three views run one level up: `flows_per_hour_changes_mv` marks the hours that the
//!   minute refresh rewrote, and `flows_per_hour_refresh` recomputes them from
//!   `flows_per_minute FINAL` (60 times fewer rows than `flows`).
//!
//! Read the rollups with `FINAL`, like `flows`. Each touched bucket is recomputed two or three
//! times, so the work follows what was written, not the length of a look-back window, and late
//! data that `flows` still keeps (a replay, a broker outage) lands in its bucket within about two
//! minutes. The views live in ClickHouse, so the rollups also work on the Kafka-engine path where
//! no sink runs. [`refresh_rollups`] marks a range as changed and runs the views (repairs,
//! backfills), [`refresh_rollups_now`] runs every view immediately. Buckets older than the
//! shortest of `--record-ttl-days`, `--ttl-days` and `--rollup-minute-ttl-days` are never
//! recomputed (their sources may be gone).
//! Refreshable materialized views need ClickHouse 24.10 or later.
//!
//! # Migrations
//!
//! [`MIGRATIONS`] are applied in order and recorded in `schema_migrations`; then the live schema
//! (`system.tables`, `system.columns`, `system.data_skipping_indices`) is compared to the current
//! one: a missing table, view, column or index is created, a changed TTL or rollup window is
//! applied, and a column of another type stops the sink with an error naming it. Nothing is ever
//! dropped or retyped. All statements are idempotent, so two sinks starting at once are safe.
//!
//! # `flow.proto` is the source of truth
//!
//! The `flows` columns are `flow.proto`'s fields, typed by the mapping in `proto_fields.rs`
//! (with its exceptions, each justified); tests hold the DDL, the migrations, the Native
//! columns, `FlowRow` and the Kafka-engine table to the descriptor, and name any field one of
//! them misses. Adding a field: `flow.proto`, the place that fills it, a column in
//! `tables::flow_columns` gated on a new schema version, and that version's migration.

pub mod cluster;
pub mod kafka_engine;
mod migrate;
pub mod migrations;
#[cfg(test)]
pub(crate) mod proto_fields;
pub mod rollups;
pub(crate) mod tables;

use std::fmt;

pub use cluster::{Cluster, Replication};
pub use kafka_engine::{KafkaEngineSettings, create_kafka_engine, write_format_schema};
#[doc(hidden)]
pub use migrate::migrate_to;
pub use migrate::{migrate, migrate_cluster};
pub use migrations::{MIGRATIONS, Migration, SCHEMA_VERSION};
pub use rollups::{DIMENSIONS, Rollup, refresh_rollups, refresh_rollups_now};

/// The database netmeter writes to unless told otherwise.
pub const DEFAULT_DATABASE: &str = "netmeter";

/// What the schema depends on. Flatten into the CLI; `database` is not a flag of its own: set it
/// from `--clickhouse-database`.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Retention")]
pub struct SchemaSettings {
    #[arg(skip = String::from(DEFAULT_DATABASE))]
    pub database: String,
    /// Days `connection_minutes`, the per-connection detail, keeps a row (applied to the table
    /// at start-up).
    #[arg(
        long = "ttl-days",
        env = "NETMETER_TTL_DAYS",
        default_value_t = 90,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub ttl_days: u32,
    /// Days `flows` keeps a record: what a replay or late data can still change. Keep it at the
    /// raw topic's retention (replays read it).
    #[arg(
        long = "record-ttl-days",
        env = "NETMETER_RECORD_TTL_DAYS",
        default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub record_ttl_days: u32,
    /// Days `flows_per_minute` keeps a bucket.
    #[arg(
        long = "rollup-minute-ttl-days",
        env = "NETMETER_ROLLUP_MINUTE_TTL_DAYS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub minute_rollup_ttl_days: u32,
    /// Days `flows_per_hour` keeps a bucket.
    #[arg(
        long = "rollup-hour-ttl-days",
        env = "NETMETER_ROLLUP_HOUR_TTL_DAYS",
        default_value_t = 400,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub hour_rollup_ttl_days: u32,
}

impl SchemaSettings {
    /// `database` with the default retention.
    pub fn new(database: impl Into<String>) -> SchemaSettings {
        SchemaSettings {
            database: database.into(),
            ttl_days: 90,
            record_ttl_days: 7,
            minute_rollup_ttl_days: 30,
            hour_rollup_ttl_days: 400,
        }
    }

    /// Refuses a database name that is not a plain identifier (it is written into SQL unquoted)
    /// and zero-day TTLs.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let db = &self.database;
        let plain = db
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(SchemaError::Settings(format!(
                "database `{db}` must start with a letter or _ and contain only letters, digits and _"
            )));
        }
        for (name, days) in [
            ("--ttl-days", self.ttl_days),
            ("--record-ttl-days", self.record_ttl_days),
            ("--rollup-minute-ttl-days", self.minute_rollup_ttl_days),
            ("--rollup-hour-ttl-days", self.hour_rollup_ttl_days),
        ] {
            if days == 0 {
                return Err(SchemaError::Settings(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

impl Default for SchemaSettings {
    fn default() -> SchemaSettings {
        SchemaSettings::new(DEFAULT_DATABASE)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid schema settings: {0}")]
    Settings(String),
    #[error("ClickHouse refused `{statement}`: {source}")]
    Query {
        /// The statement's first line.
        statement: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error(
        "the rollup refresh view {view} is stopped: run SYSTEM START VIEW {view}, then try again"
    )]
    RefreshStopped { view: String },
    #[error(
        "column {database}.{table}.{column} is {actual} but netmeter expects {expected}; netmeter \
         never retypes or drops data: convert the column by hand (ALTER TABLE {database}.{table} \
         MODIFY COLUMN {column} {expected}) or rename it, then start again"
    )]
    ColumnType {
        database: String,
        table: String,
        column: String,
        expected: String,
        actual: String,
    },
}

impl SchemaError {
    /// For `map_err`: the query `statement` failed.
    pub(crate) fn query(
        statement: impl Into<String>,
    ) -> impl FnOnce(clickhouse::error::Error) -> SchemaError {
        let statement = statement.into();
        move |source| SchemaError::Query { statement, source }
    }

    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SchemaError::Settings(_) => "settings",
            SchemaError::Query { .. } => "query",
            SchemaError::RefreshStopped { .. } => "refresh_stopped",
            SchemaError::ColumnType { .. } => "column_type",
        }
    }
}

/// A migration [`migrate`] applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: u32,
    pub description: String,
}

/// A change [`migrate`] made besides applying migrations, to bring the live schema to the
/// current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaChange {
    CreatedDatabase,
    /// A table missing although its migration ran (dropped by hand), or `schema_migrations`.
    CreatedTable(String),
    CreatedView(String),
    AddedColumn {
        table: String,
        column: String,
    },
    AddedIndex {
        table: String,
        index: String,
    },
    /// The retention setting changed.
    ModifiedTtl {
        table: String,
        ttl: String,
    },
    /// A refresh view's query changed with the settings (its recompute window).
    ModifiedView(String),
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaChange::CreatedDatabase => write!(f, "created the database"),
            SchemaChange::CreatedTable(t) => write!(f, "created table {t}"),
            SchemaChange::CreatedView(v) => write!(f, "created view {v}"),
            SchemaChange::AddedColumn { table, column } => write!(f, "added {table}.{column}"),
            SchemaChange::AddedIndex { table, index } => write!(f, "added index {table}.{index}"),
            SchemaChange::ModifiedTtl { table, ttl } => write!(f, "set TTL of {table} to {ttl}"),
            SchemaChange::ModifiedView(v) => write!(f, "replaced the query of view {v}"),
        }
    }
}

/// What [`migrate`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    pub database: String,
    /// The highest version applied before (0: none).
    pub previous_version: u32,
    /// The highest version applied now. Above [`SCHEMA_VERSION`] if a newer sink migrated the
    /// database; then nothing was changed.
    pub version: u32,
    pub applied: Vec<AppliedMigration>,
    pub changes: Vec<SchemaChange>,
}

impl MigrationReport {
    /// True if the schema was already current: nothing applied, nothing changed.
    pub fn is_noop(&self) -> bool {
        self.applied.is_empty() && self.changes.is_empty()
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database {} at schema version {}",
            self.database, self.version
        )?;
        if self.is_noop() {
            return write!(f, ": already up to date");
        }
        for m in &self.applied {
            write!(f, "; applied {} ({})", m.version, m.description)?;
        }
        for c in &self.changes {
            write!(f, "; {c}")?;
        }
        Ok(())
    }
}

/// Every statement of the current schema, in order, as `ddl` prints them.
pub fn ddl_statements(
    settings: &SchemaSettings,
    kafka_engine: Option<&KafkaEngineSettings>,
) -> Vec<String> {
    let db = &settings.database;
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {db}")];
    statements.extend(tables::tables(settings).iter().map(|t| t.create(db)));
    statements.extend(tables::views(settings).iter().map(|v| v.create()));
    let versions: Vec<String> = MIGRATIONS
        .iter()
        .map(|m| format!("({}, '{}')", m.version, tables::escape(m.description)))
        .collect();
    statements.push(format!(
        "INSERT INTO {db}.schema_migrations (version, description) VALUES {}",
        versions.join(", ")
    ));
    if let Some(kafka) = kafka_engine {
        statements.extend(kafka_engine::statements(settings, kafka));
    }
    statements
}

/// The current schema as SQL text (`netmeter-sink ddl`): what [`migrate`] leaves behind on an
/// empty server, including the `schema_migrations` rows, so a database created from it is up to
/// date for the sink. With `kafka_engine`, also the Kafka table and its views.
pub fn ddl(settings: &SchemaSettings, kafka_engine: Option<&KafkaEngineSettings>) -> String {
    let mut text = format!(
        "-- netmeter schema version {SCHEMA_VERSION}, database {}\n\n",
        settings.database
    );
    for statement in ddl_statements(settings, kafka_engine) {
        text.push_str(&statement);
        text.push_str(";\n\n");
    }
    text
}

/// Runs one statement; an error names it.
pub(crate) async fn execute(client: &clickhouse::Client, sql: &str) -> Result<(), SchemaError> {
    client
        .query_raw(sql)
        .execute()
        .await
        .map_err(SchemaError::query(summary(sql)))
}

/// The first line of a statement, for errors and logs.
fn summary(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or_default();
    if line.len() > 160 {
        format!("{}...", &line[..line.floor_char_boundary(160)])
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        schema: SchemaSettings,
        #[command(flatten)]
        kafka: KafkaEngineSettings,
    }

    #[test]
    fn the_flags_flatten_into_a_cli_with_their_defaults() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["sink"]).unwrap();
        assert_eq!(cli.schema, SchemaSettings::default());
        assert_eq!(
            cli.kafka,
            KafkaEngineSettings {
                brokers: None,
                topic: None,
                ..KafkaEngineSettings::new("", "")
            }
        );
        let cli = Cli::try_parse_from([
            "sink",
            "--ttl-days",
            "30",
            "--rollup-minute-ttl-days",
            "7",
            "--kafka-engine-setting",
            "kafka_security_protocol=sasl_ssl",
            "--kafka-engine-setting",
            "kafka_sasl_mechanism=SCRAM-SHA-512",
        ])
        .unwrap();
        assert_eq!(
            (
                cli.schema.ttl_days,
                cli.schema.minute_rollup_ttl_days,
                cli.schema.hour_rollup_ttl_days
            ),
            (30, 7, 400)
        );
        assert_eq!(cli.kafka.extra_settings.len(), 2);
        let zero = Cli::try_parse_from(["sink", "--ttl-days", "0"]).unwrap_err();
        assert!(zero.to_string().contains("--ttl-days"), "{zero}");
    }

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(SchemaSettings::new("netmeter_2").validate().is_ok());
        for bad in ["", "net-meter", "2netmeter", "a.b", "x`y"] {
            assert!(SchemaSettings::new(bad).validate().is_err(), "{bad}");
        }
        let zero = SchemaSettings {
            hour_rollup_ttl_days: 0,
            ..SchemaSettings::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "invalid schema settings: --rollup-hour-ttl-days must be at least 1"
        );
    }

    #[test]
    fn the_ddl_ends_with_the_kafka_engine_when_asked() {
        let settings = SchemaSettings::new("metering");
        let kafka = KafkaEngineSettings::new("kafka:9092", "netmeter.flows.v1");
        let without = ddl_statements(&settings, None);
        let with = ddl_statements(&settings, Some(&kafka));
        assert_eq!(with.len(), without.len() + 4);
        assert!(
            with[without.len()].starts_with("CREATE TABLE IF NOT EXISTS metering.flows_kafka\n")
        );
        assert!(ddl(&settings, Some(&kafka)).contains("kafka_handle_error_mode = 'stream'"));
        assert!(
            without.iter().all(|s| !s.contains("netmeter.")),
            "every name is in the database"
        );
    }
}
