//! The ordered migrations from an empty database to [`SCHEMA_VERSION`]. Every statement is
//! idempotent (`IF NOT EXISTS`), so a migration interrupted half-way, or run by two sinks at
//! once, is simply run again.
//!
//! A migration's SQL never changes once released: version 1 is written out as it was. Objects a
//! migration creates and that no later migration has changed yet are rendered from the current
//! schema ([`super::tables`]); when a later version changes one, copy its old text here first.
//! The test `migrating_an_empty_server_matches_the_ddl` keeps both in step.

use super::SchemaSettings;
use super::rollups::{Rollup, recompute_window_days};
use super::tables;

/// The schema version this sink writes and expects.
pub const SCHEMA_VERSION: u32 = 6;

/// One step of the schema.
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    statements: fn(&SchemaSettings) -> Vec<String>,
}

impl Migration {
    /// The statements with `{db}`, `{ttl_days}` ... substituted.
    pub fn statements(&self, settings: &SchemaSettings) -> Vec<String> {
        (self.statements)(settings)
    }
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.version, self.description)
    }
}

/// Every migration, oldest first; versions are 1, 2, 3, ...
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "flows table",
        statements: v1,
    },
    Migration {
        version: 2,
        description: "flows.remote_network and data-skipping indexes",
        statements: v2,
    },
    Migration {
        version: 3,
        description: "per-minute and per-hour rollups",
        statements: v3,
    },
    Migration {
        version: 4,
        description: "flows.local_initiated and flows.local_instance_type",
        statements: v4,
    },
    Migration {
        version: 5,
        description: "flows.path, remote_country, remote_asn, remote_as_name, processing_cost_usd",
        statements: v5,
    },
    Migration {
        version: 6,
        description: "connection_minutes: the per-connection detail, filled from flows",
        statements: v6,
    },
];

/// Replaces `{db}`, `{ttl_days}`, `{minute_ttl_days}`, `{hour_ttl_days}` and `{window_days}`.
pub(crate) fn substitute(template: &str, settings: &SchemaSettings) -> String {
    template
        .replace("{db}", &settings.database)
        .replace("{ttl_days}", &settings.ttl_days.to_string())
        .replace(
            "{minute_ttl_days}",
            &settings.minute_rollup_ttl_days.to_string(),
        )
        .replace(
            "{hour_ttl_days}",
            &settings.hour_rollup_ttl_days.to_string(),
        )
        .replace(
            "{window_days}",
            &recompute_window_days(settings).to_string(),
        )
}

const V1_FLOWS: &str = "CREATE TABLE IF NOT EXISTS {db}.flows
(
    record_id UUID,
    generation UInt64 CODEC(T64, ZSTD(1)),
    interval_start_unix_ms UInt64 CODEC(Delta(8), ZSTD(1)),
    interval_start DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(toInt64(interval_start_unix_ms), 'UTC') CODEC(Delta(8), ZSTD(1)),
    interval_seconds UInt32 CODEC(T64, ZSTD(1)),
    cluster LowCardinality(String),
    direction LowCardinality(String),
    protocol LowCardinality(String),
    class LowCardinality(String),
    local_cloud LowCardinality(String),
    local_region LowCardinality(String),
    local_zone LowCardinality(String),
    local_node LowCardinality(String),
    local_namespace LowCardinality(String),
    local_pod String CODEC(ZSTD(1)),
    local_workload_kind LowCardinality(String),
    local_workload_name LowCardinality(String),
    local_app LowCardinality(String),
    local_ip IPv6 CODEC(ZSTD(1)),
    local_port UInt16 CODEC(T64, ZSTD(1)),
    local_host_network Bool,
    remote_cloud LowCardinality(String),
    remote_region LowCardinality(String),
    remote_zone LowCardinality(String),
    remote_node LowCardinality(String),
    remote_namespace LowCardinality(String),
    remote_pod String CODEC(ZSTD(1)),
    remote_workload_kind LowCardinality(String),
    remote_workload_name LowCardinality(String),
    remote_app LowCardinality(String),
    remote_ip IPv6 CODEC(ZSTD(1)),
    remote_port UInt16 CODEC(T64, ZSTD(1)),
    remote_host_network Bool,
    remote_service LowCardinality(String),
    bytes UInt64 CODEC(T64, ZSTD(1)),
    packets UInt64 CODEC(T64, ZSTD(1)),
    cost_usd Float64 CODEC(ZSTD(1))
)
ENGINE = ReplacingMergeTree(generation)
PARTITION BY toYYYYMMDD(interval_start)
ORDER BY (interval_start, record_id)
TTL toDateTime(interval_start) + toIntervalDay({ttl_days})
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1";

fn v1(settings: &SchemaSettings) -> Vec<String> {
    vec![substitute(V1_FLOWS, settings)]
}

const V2: &[&str] = &[
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS remote_network LowCardinality(String) AFTER remote_service",
    "ALTER TABLE {db}.flows ADD INDEX IF NOT EXISTS local_namespace_idx local_namespace TYPE bloom_filter(0.01) GRANULARITY 4",
    "ALTER TABLE {db}.flows ADD INDEX IF NOT EXISTS remote_namespace_idx remote_namespace TYPE bloom_filter(0.01) GRANULARITY 4",
    "ALTER TABLE {db}.flows ADD INDEX IF NOT EXISTS local_workload_name_idx local_workload_name TYPE bloom_filter(0.01) GRANULARITY 4",
    "ALTER TABLE {db}.flows ADD INDEX IF NOT EXISTS class_idx class TYPE set(16) GRANULARITY 4",
    // Existing parts get the indexes too (a background mutation).
    "ALTER TABLE {db}.flows MATERIALIZE INDEX local_namespace_idx",
    "ALTER TABLE {db}.flows MATERIALIZE INDEX remote_namespace_idx",
    "ALTER TABLE {db}.flows MATERIALIZE INDEX local_workload_name_idx",
    "ALTER TABLE {db}.flows MATERIALIZE INDEX class_idx",
];

fn v2(settings: &SchemaSettings) -> Vec<String> {
    V2.iter().map(|s| substitute(s, settings)).collect()
}

/// Marks every minute `flows` already holds, so the first refreshes roll up the data written
/// before the rollups existed.
const V3_BACKFILL: &str = "INSERT INTO {db}.rollup_changes (rollup, interval_start, marked_at)
SELECT DISTINCT 'flows_per_minute', toStartOfMinute(interval_start), now64(3, 'UTC')
FROM {db}.flows
WHERE interval_start >= now() - INTERVAL {window_days} DAY";

/// The rollups version 3 created.
const V3_ROLLUPS: [Rollup; 2] = [Rollup::Minute, Rollup::Hour];

fn v3(settings: &SchemaSettings) -> Vec<String> {
    let db = &settings.database;
    let mut statements = vec![
        tables::rollup_changes().create(db),
        tables::rollup_watermarks().create(db),
        tables::rollup_table(Rollup::Minute, settings.minute_rollup_ttl_days).create(db),
        tables::rollup_table(Rollup::Hour, settings.hour_rollup_ttl_days).create(db),
    ];
    statements.extend(V3_ROLLUPS.iter().map(|r| r.changes_view(settings).create()));
    statements.extend(
        V3_ROLLUPS
            .iter()
            .map(|r| r.watermark_view(settings).create()),
    );
    statements.push(substitute(V3_BACKFILL, settings));
    statements.extend(V3_ROLLUPS.iter().map(|r| r.refresh_view(settings).create()));
    statements
}

/// Rows written before read false and "", which is also what a record from an older attributor
/// carries. Not rollup dimensions: a rollup row per initiator and instance type would multiply
/// the rollups for questions `flows` answers.
const V4: &[&str] = &[
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS local_initiated Bool AFTER local_host_network",
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS local_instance_type LowCardinality(String) AFTER local_initiated",
];

fn v4(settings: &SchemaSettings) -> Vec<String> {
    V4.iter().map(|s| substitute(s, settings)).collect()
}

/// Rows written before read "", 0 and 0: no path, no place, no processing charge, which is
/// what they were. `cost_usd` keeps its meaning (the whole cost; it was the transfer price
/// alone while there were no paths).
const V5: &[&str] = &[
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS path LowCardinality(String) AFTER class",
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS remote_country LowCardinality(String) AFTER remote_network",
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS remote_asn UInt32 CODEC(T64, ZSTD(1)) AFTER remote_country",
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS remote_as_name LowCardinality(String) AFTER remote_asn",
    "ALTER TABLE {db}.flows ADD COLUMN IF NOT EXISTS processing_cost_usd Float64 CODEC(ZSTD(1)) AFTER cost_usd",
];

fn v5(settings: &SchemaSettings) -> Vec<String> {
    V5.iter().map(|s| substitute(s, settings)).collect()
}

/// The per-connection detail: its table and views first (so every insert from then on is
/// marked), then every minute `flows` holds summed into it, all of them, and only then `flows`
/// cut to `--record-ttl-days`. Then the refresh view keeps
/// it. The fill's rows carry the fill's start as `refreshed_at`, so the refresh that follows
/// picks up the marks of the inserts that ran during the fill (the margin).
fn v6(settings: &SchemaSettings) -> Vec<String> {
    let db = &settings.database;
    let connection = Rollup::Connection;
    vec![
        tables::rollup_table(connection, settings.ttl_days).create(db),
        connection.changes_view(settings).create(),
        connection.watermark_view(settings).create(),
        connection.backfill(db),
        connection.refresh_view(settings).create(),
        format!(
            "ALTER TABLE {db}.flows MODIFY TTL {}",
            tables::flows_ttl(settings.record_ttl_days)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_end_at_the_schema_version() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<u32> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn version_1_is_the_current_flows_table_without_what_later_versions_added() {
        let settings = SchemaSettings::default();
        let mut v1_table = tables::flows(&settings);
        v1_table.columns = tables::flow_columns(1);
        v1_table.indexes.clear();
        // Version 1's flows kept `--ttl-days`; since version 6 it keeps `--record-ttl-days`.
        v1_table.ttl = Some(tables::flows_ttl(settings.ttl_days));
        assert_eq!(
            v1(&settings),
            vec![v1_table.create(&settings.database)],
            "version 1 renders like the current table minus what versions 2 and 4 added"
        );
    }

    /// The `ADD COLUMN ... AFTER` statements that turn version `version - 1`'s columns into
    /// version `version`'s, each after its predecessor in the table.
    fn columns_added_in(version: u32) -> Vec<String> {
        let current = tables::flow_columns(version);
        let before: Vec<String> = tables::flow_columns(version - 1)
            .into_iter()
            .map(|c| c.name)
            .collect();
        current
            .iter()
            .enumerate()
            .filter(|(_, c)| !before.contains(&c.name))
            .map(|(i, c)| {
                format!(
                    "ALTER TABLE netmeter.flows ADD COLUMN IF NOT EXISTS {} AFTER {}",
                    c.definition(),
                    current[i - 1].name
                )
            })
            .collect()
    }

    #[test]
    fn version_4_adds_the_current_columns_in_their_places() {
        let added = columns_added_in(4);
        assert_eq!(
            added,
            [
                "ALTER TABLE netmeter.flows ADD COLUMN IF NOT EXISTS local_initiated Bool AFTER local_host_network",
                "ALTER TABLE netmeter.flows ADD COLUMN IF NOT EXISTS local_instance_type LowCardinality(String) AFTER local_initiated",
            ]
        );
        assert_eq!(v4(&SchemaSettings::default()), added);
    }

    #[test]
    fn version_5_adds_the_path_the_place_and_the_processing_charge() {
        let added = columns_added_in(5);
        assert_eq!(added.len(), 5, "{added:#?}");
        assert_eq!(v5(&SchemaSettings::default()), added);
    }

    /// The `flows` columns (name, definition) that migrations 1 to `version` leave, as
    /// ClickHouse would: version 1's `CREATE TABLE`, then each `ADD COLUMN ... AFTER` in place.
    fn flows_columns_migrated_to(version: u32) -> Vec<(String, String)> {
        let settings = SchemaSettings::default();
        let mut columns: Vec<(String, String)> = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
            for statement in migration.statements(&settings) {
                if let Some(create) =
                    statement.strip_prefix("CREATE TABLE IF NOT EXISTS netmeter.flows\n(\n")
                {
                    let body = &create[..create.find("\n)").expect("a CREATE TABLE ends with )")];
                    columns.extend(body.lines().map(|line| {
                        let definition = line.trim().trim_end_matches(',');
                        let name = definition.split(' ').next().unwrap_or_default();
                        (name.to_string(), definition.to_string())
                    }));
                } else if let Some(add) =
                    statement.strip_prefix("ALTER TABLE netmeter.flows ADD COLUMN IF NOT EXISTS ")
                {
                    let (definition, after) = add
                        .rsplit_once(" AFTER ")
                        .expect("a column is added in its place (AFTER)");
                    let name = definition.split(' ').next().unwrap_or_default();
                    let at = columns
                        .iter()
                        .position(|(c, _)| c == after)
                        .unwrap_or_else(|| {
                            panic!(
                                "migration {} adds {name} after {after}, which flows lacks",
                                migration.version
                            )
                        });
                    columns.insert(at + 1, (name.to_string(), definition.to_string()));
                } else {
                    assert!(
                        !statement.contains(" COLUMN "),
                        "this test does not follow `{statement}`: netmeter only adds columns"
                    );
                }
            }
        }
        columns
    }

    #[test]
    fn the_migrations_create_the_flows_columns_of_every_version() {
        let mut wrong = Vec::new();
        for version in 1..=SCHEMA_VERSION {
            let migrated = flows_columns_migrated_to(version);
            let current: Vec<(String, String)> = tables::flow_columns(version)
                .iter()
                .map(|c| (c.name.clone(), c.definition()))
                .collect();
            for (name, definition) in &current {
                match migrated.iter().find(|(m, _)| m == name) {
                    None => wrong.push(format!(
                        "flows column `{definition}` is in tables::flow_columns({version}) but no \
                         migration up to version {version} adds it (services/sink/src/schema/\
                         migrations.rs; gate the column on the version whose migration adds it)"
                    )),
                    Some((_, migrated)) if migrated != definition => wrong.push(format!(
                        "migrations up to version {version} make flows column `{migrated}`, but \
                         tables::flow_columns({version}) says `{definition}`"
                    )),
                    Some(_) => {}
                }
            }
            for (name, definition) in &migrated {
                if !current.iter().any(|(c, _)| c == name) {
                    wrong.push(format!(
                        "migrations up to version {version} add flows column `{definition}`, \
                         which tables::flow_columns({version}) lacks"
                    ));
                }
            }
            if wrong.is_empty() && migrated != current {
                wrong.push(format!(
                    "migrations up to version {version} put the flows columns in another order \
                     than tables::flow_columns({version}): {:?}",
                    migrated.iter().map(|(name, _)| name).collect::<Vec<_>>()
                ));
            }
            if !wrong.is_empty() {
                break; // the first version that disagrees says it; later ones repeat it
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn every_placeholder_is_substituted() {
        let settings = SchemaSettings::default();
        for migration in MIGRATIONS {
            for statement in migration.statements(&settings) {
                assert!(!statement.contains("{db}"), "{statement}");
                assert!(!statement.contains("_days}"), "{statement}");
            }
        }
    }
}
