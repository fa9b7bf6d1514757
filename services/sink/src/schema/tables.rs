//! The current schema as data: every table with its columns (type as `system.columns` shows it),
//! indexes, engine and TTL, and every view with the statement that creates it. [`super::ddl`]
//! renders it, and [`super::migrate`] compares the live database against it.

use super::SchemaSettings;
use super::migrations::SCHEMA_VERSION;
use super::rollups;

/// Days a rollup change mark is kept: a refresh that has not succeeded for longer loses marks,
/// and [`super::refresh_rollups`] has to recompute the range by hand.
pub(crate) const CHANGE_MARK_TTL_DAYS: u32 = 7;

/// One column: name, type exactly as `system.columns.type` renders it, and the rest of its
/// definition (default expression, codec), which is not compared.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub name: String,
    pub ty: &'static str,
    pub extra: &'static str,
}

impl Column {
    fn new(name: impl Into<String>, ty: &'static str, extra: &'static str) -> Column {
        Column {
            name: name.into(),
            ty,
            extra,
        }
    }

    /// The column as written in `CREATE TABLE` and `ADD COLUMN`.
    pub fn definition(&self) -> String {
        if self.extra.is_empty() {
            format!("{} {}", self.name, self.ty)
        } else {
            format!("{} {} {}", self.name, self.ty, self.extra)
        }
    }
}

/// A data-skipping index.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    pub name: &'static str,
    pub expression: &'static str,
    pub kind: &'static str,
    pub granularity: u32,
}

impl Index {
    pub fn definition(&self) -> String {
        format!(
            "INDEX {} {} TYPE {} GRANULARITY {}",
            self.name, self.expression, self.kind, self.granularity
        )
    }
}

/// A table netmeter owns.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
    /// `ENGINE = ...` up to and including `ORDER BY`.
    pub engine: String,
    /// The TTL expression in the form ClickHouse renders it in `system.tables.engine_full`, so
    /// that an unchanged TTL compares equal.
    pub ttl: Option<String>,
    pub settings: &'static str,
}

impl Table {
    pub fn create(&self, db: &str) -> String {
        let mut body: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("    {}", c.definition()))
            .collect();
        body.extend(
            self.indexes
                .iter()
                .map(|i| format!("    {}", i.definition())),
        );
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {db}.{}\n(\n{}\n)\n{}",
            self.name,
            body.join(",\n"),
            self.engine
        );
        if let Some(ttl) = &self.ttl {
            sql.push_str(&format!("\nTTL {ttl}"));
        }
        if !self.settings.is_empty() {
            sql.push_str(&format!("\nSETTINGS {}", self.settings));
        }
        sql
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A view netmeter owns. `comment` carries the settings its query depends on, so a changed
/// setting shows up as a changed comment and the query is replaced (`MODIFY QUERY`).
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub name: String,
    /// `CREATE MATERIALIZED VIEW IF NOT EXISTS ... AS`, without the query and comment.
    pub head: String,
    pub query: String,
    pub comment: String,
}

impl View {
    pub fn create(&self) -> String {
        format!(
            "{}\n{}\nCOMMENT '{}'",
            self.head,
            self.query,
            escape(&self.comment)
        )
    }
}

/// Escapes a value for a single-quoted SQL string literal.
pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The endpoint columns, for `local_` or `remote_` (`flow.proto` fields 10-21 / 30-41).
fn endpoint_columns(side: &str) -> Vec<Column> {
    const LC: &str = "LowCardinality(String)";
    vec![
        Column::new(format!("{side}_cloud"), LC, ""),
        Column::new(format!("{side}_region"), LC, ""),
        Column::new(format!("{side}_zone"), LC, ""),
        Column::new(format!("{side}_node"), LC, ""),
        Column::new(format!("{side}_namespace"), LC, ""),
        // Pod names are too many for a dictionary per part.
        Column::new(format!("{side}_pod"), "String", "CODEC(ZSTD(1))"),
        Column::new(format!("{side}_workload_kind"), LC, ""),
        Column::new(format!("{side}_workload_name"), LC, ""),
        Column::new(format!("{side}_app"), LC, ""),
        Column::new(format!("{side}_ip"), "IPv6", "CODEC(ZSTD(1))"),
        Column::new(format!("{side}_port"), "UInt16", "CODEC(T64, ZSTD(1))"),
        Column::new(format!("{side}_host_network"), "Bool", ""),
    ]
}

/// The columns of `flows` at schema `version`: `remote_network` arrived in version 2,
/// `local_initiated` and `local_instance_type` in version 4, `path`, `remote_country`,
/// `remote_asn`, `remote_as_name` and `processing_cost_usd` in version 5.
pub(crate) fn flow_columns(version: u32) -> Vec<Column> {
    const LC: &str = "LowCardinality(String)";
    let mut columns = vec![
        Column::new("record_id", "UUID", ""),
        Column::new("generation", "UInt64", "CODEC(T64, ZSTD(1))"),
        // Rows arrive roughly in time order and the table is sorted by it: deltas are tiny.
        Column::new(
            "interval_start_unix_ms",
            "UInt64",
            "CODEC(Delta(8), ZSTD(1))",
        ),
        Column::new(
            "interval_start",
            "DateTime64(3, 'UTC')",
            "MATERIALIZED fromUnixTimestamp64Milli(toInt64(interval_start_unix_ms), 'UTC') \
             CODEC(Delta(8), ZSTD(1))",
        ),
        Column::new("interval_seconds", "UInt32", "CODEC(T64, ZSTD(1))"),
        Column::new("cluster", LC, ""),
        Column::new("direction", LC, ""),
        Column::new("protocol", LC, ""),
        Column::new("class", LC, ""),
    ];
    if version >= 5 {
        columns.push(Column::new("path", LC, ""));
    }
    columns.extend(endpoint_columns("local"));
    // Beside the local endpoint they describe, as in `flow.proto` (fields 22-23).
    if version >= 4 {
        columns.extend([
            Column::new("local_initiated", "Bool", ""),
            Column::new("local_instance_type", LC, ""),
        ]);
    }
    columns.extend(endpoint_columns("remote"));
    columns.push(Column::new("remote_service", LC, ""));
    if version >= 2 {
        columns.push(Column::new("remote_network", LC, ""));
    }
    if version >= 5 {
        columns.extend([
            Column::new("remote_country", LC, ""),
            Column::new("remote_asn", "UInt32", "CODEC(T64, ZSTD(1))"),
            Column::new("remote_as_name", LC, ""),
        ]);
    }
    columns.extend([
        Column::new("bytes", "UInt64", "CODEC(T64, ZSTD(1))"),
        Column::new("packets", "UInt64", "CODEC(T64, ZSTD(1))"),
        Column::new("cost_usd", "Float64", "CODEC(ZSTD(1))"),
    ]);
    if version >= 5 {
        columns.push(Column::new(
            "processing_cost_usd",
            "Float64",
            "CODEC(ZSTD(1))",
        ));
    }
    columns
}

/// The data-skipping indexes of `flows` (schema version 2): the filters dashboards use most.
pub(crate) fn flow_indexes() -> Vec<Index> {
    vec![
        Index {
            name: "local_namespace_idx",
            expression: "local_namespace",
            kind: "bloom_filter(0.01)",
            granularity: 4,
        },
        Index {
            name: "remote_namespace_idx",
            expression: "remote_namespace",
            kind: "bloom_filter(0.01)",
            granularity: 4,
        },
        Index {
            name: "local_workload_name_idx",
            expression: "local_workload_name",
            kind: "bloom_filter(0.01)",
            granularity: 4,
        },
        Index {
            name: "class_idx",
            expression: "class",
            kind: "set(16)",
            granularity: 4,
        },
    ]
}

/// Engine of `flows`: the sort key holds only what a replay never changes (the record's id and
/// interval), so a redelivered or re-attributed record replaces its row, highest generation wins.
pub(crate) const FLOWS_ENGINE: &str = "ENGINE = ReplacingMergeTree(generation)\n\
     PARTITION BY toYYYYMMDD(interval_start)\n\
     ORDER BY (interval_start, record_id)";

/// A retried batch carries the sink's `insert_deduplication_token` and is dropped.
pub(crate) const FLOWS_SETTINGS: &str =
    "non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1";

pub(crate) fn flows_ttl(ttl_days: u32) -> String {
    format!("toDateTime(interval_start) + toIntervalDay({ttl_days})")
}

pub(crate) fn flows(settings: &SchemaSettings) -> Table {
    Table {
        name: "flows",
        columns: flow_columns(SCHEMA_VERSION),
        indexes: flow_indexes(),
        engine: FLOWS_ENGINE.into(),
        ttl: Some(flows_ttl(settings.record_ttl_days)),
        settings: FLOWS_SETTINGS,
    }
}

/// What ran: one row per applied migration (duplicates from concurrent migrators collapse).
pub(crate) fn schema_migrations() -> Table {
    Table {
        name: "schema_migrations",
        columns: vec![
            Column::new("version", "UInt32", ""),
            Column::new("description", "String", ""),
            Column::new("applied_at", "DateTime64(3, 'UTC')", "DEFAULT now64(3)"),
        ],
        indexes: vec![],
        engine: "ENGINE = ReplacingMergeTree\nORDER BY version".into(),
        ttl: None,
        settings: "",
    }
}

/// Time buckets that changed and which rollup must recompute them (see [`super::rollups`]).
pub(crate) fn rollup_changes() -> Table {
    Table {
        name: "rollup_changes",
        columns: vec![
            Column::new("rollup", "LowCardinality(String)", ""),
            Column::new("interval_start", "DateTime('UTC')", ""),
            Column::new("marked_at", "DateTime64(3, 'UTC')", ""),
        ],
        indexes: vec![],
        engine: "ENGINE = ReplacingMergeTree(marked_at)\n\
                 PARTITION BY toYYYYMMDD(marked_at)\n\
                 ORDER BY (rollup, interval_start)"
            .into(),
        ttl: Some(format!(
            "toDateTime(marked_at) + toIntervalDay({CHANGE_MARK_TTL_DAYS})"
        )),
        settings: "ttl_only_drop_parts = 1",
    }
}

/// Per rollup, when its refresh view last wrote (the start of that refresh): the next refresh
/// reads the change marks from there on. Kept in data, unlike `system.view_refreshes`, which a
/// restarted server forgets.
pub(crate) fn rollup_watermarks() -> Table {
    Table {
        name: "rollup_watermarks",
        columns: vec![
            Column::new("rollup", "LowCardinality(String)", ""),
            Column::new("refreshed_at", "DateTime64(3, 'UTC')", ""),
        ],
        indexes: vec![],
        engine: "ENGINE = ReplacingMergeTree(refreshed_at)\nORDER BY rollup".into(),
        ttl: None,
        settings: "",
    }
}

/// The columns of `flows` that `connection_minutes` keys its rows by: every attribute of a
/// record, in the table's key order. The time and the connection's ends come first, so the rows
/// of a connection sit together and the columns compress (kubenetmon's order).
pub(crate) fn connection_dimensions() -> Vec<String> {
    const FIRST: [&str; 12] = [
        "cluster",
        "direction",
        "protocol",
        "local_app",
        "remote_app",
        "local_pod",
        "remote_pod",
        "class",
        "local_ip",
        "local_port",
        "remote_ip",
        "remote_port",
    ];
    const NOT_DIMENSIONS: [&str; 5] = [
        "record_id",
        "generation",
        "interval_start_unix_ms",
        "interval_start",
        "interval_seconds",
    ];
    let mut dimensions: Vec<String> = FIRST.iter().map(|d| d.to_string()).collect();
    dimensions.extend(
        flow_columns(SCHEMA_VERSION)
            .into_iter()
            .map(|c| c.name)
            .filter(|name| {
                !FIRST.contains(&name.as_str())
                    && !NOT_DIMENSIONS.contains(&name.as_str())
                    && !rollups::CONNECTION_SUMS.contains(&name.as_str())
            }),
    );
    dimensions
}

/// A table recomputed from another: one row per bucket and dimensions, replaced by each
/// recomputation (`refreshed_at`), or deleted (`is_deleted = 1`) when a recomputation no longer
/// has it. The rollups' dimensions are names. The per-connection detail keeps the types of the
/// `flows` columns, with the codecs that measured smallest for a row per connection and minute
/// (`cargo bench -p netmeter-sink --bench storage`): ZSTD over every dictionary's indexes, pods
/// as dictionaries too (a part holds a few thousand), ports as deltas along the key, and money as
/// prices with `ALIAS` costs ([`rollups::Rollup::values`]).
pub(crate) fn rollup_table(rollup: rollups::Rollup, ttl_days: u32) -> Table {
    let flows = flow_columns(SCHEMA_VERSION);
    let detail = |name: &str| {
        let column = flows
            .iter()
            .find(|c| c.name == name)
            .expect("a connection_minutes dimension is a flows column");
        let (ty, extra) = match (column.ty, name) {
            ("LowCardinality(String)", _) | (_, "local_pod" | "remote_pod") => {
                ("LowCardinality(String)", "CODEC(ZSTD(1))")
            }
            ("UInt16", _) => ("UInt16", "CODEC(Delta, ZSTD(1))"),
            ("UInt32", _) => ("UInt32", "CODEC(ZSTD(1))"),
            (ty, _) => (ty, column.extra),
        };
        Column::new(name, ty, extra)
    };
    let dimensions = rollup.dimensions();
    let mut columns = vec![Column::new(
        "interval_start",
        "DateTime('UTC')",
        "CODEC(Delta(4), ZSTD(1))",
    )];
    match rollup {
        rollups::Rollup::Connection => columns.extend(dimensions.iter().map(|d| detail(d))),
        rollups::Rollup::Minute | rollups::Rollup::Hour => columns.extend(
            dimensions
                .iter()
                .map(|d| Column::new(d.as_str(), "LowCardinality(String)", "")),
        ),
    }
    columns.extend(rollup.values().iter().map(|(name, _)| match *name {
        "bytes" | "packets" => Column::new(*name, "UInt64", "CODEC(T64, ZSTD(1))"),
        _ => Column::new(*name, "Float64", "CODEC(ZSTD(1))"),
    }));
    columns.extend([
        Column::new("records", "UInt64", "CODEC(T64, ZSTD(1))"),
        Column::new(
            "refreshed_at",
            "DateTime64(3, 'UTC')",
            "CODEC(Delta(8), ZSTD(1))",
        ),
        Column::new("is_deleted", "UInt8", ""),
    ]);
    if rollup == rollups::Rollup::Connection {
        columns.extend([
            Column::new(
                "cost_usd",
                "Float64",
                "ALIAS bytes * usd_per_gib / 1073741824",
            ),
            Column::new(
                "processing_cost_usd",
                "Float64",
                "ALIAS bytes * processing_usd_per_gib / 1073741824",
            ),
        ]);
    }
    Table {
        name: rollup.table(),
        columns,
        indexes: vec![],
        engine: format!(
            "ENGINE = ReplacingMergeTree(refreshed_at, is_deleted)\n\
             PARTITION BY {}\n\
             ORDER BY (interval_start, {})",
            rollup.partition_by(),
            dimensions.join(", ")
        ),
        ttl: Some(format!("interval_start + toIntervalDay({ttl_days})")),
        settings: "ttl_only_drop_parts = 1",
    }
}

/// Every table of the current version, in creation order (`schema_migrations` first).
pub(crate) fn tables(settings: &SchemaSettings) -> Vec<Table> {
    vec![
        schema_migrations(),
        flows(settings),
        rollup_changes(),
        rollup_watermarks(),
        rollup_table(rollups::Rollup::Minute, settings.minute_rollup_ttl_days),
        rollup_table(rollups::Rollup::Hour, settings.hour_rollup_ttl_days),
        rollup_table(rollups::Rollup::Connection, settings.ttl_days),
    ]
}

/// Every view of the current version, in creation order: the change marks and watermarks
/// first, so nothing written after a refresh view starts goes unnoticed.
pub(crate) fn views(settings: &SchemaSettings) -> Vec<View> {
    let all = rollups::Rollup::ALL;
    let mut views: Vec<View> = all.iter().map(|r| r.changes_view(settings)).collect();
    views.extend(all.iter().map(|r| r.watermark_view(settings)));
    views.extend(all.iter().map(|r| r.refresh_view(settings)));
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::proto_fields;

    #[test]
    fn the_flows_columns_are_the_proto_fields_with_their_types() {
        let flows = flow_columns(SCHEMA_VERSION);
        let columns: Vec<(&str, &str)> = flows.iter().map(|c| (c.name.as_str(), c.ty)).collect();
        let wrong = proto_fields::type_mismatches(
            "the flows DDL (services/sink/src/schema/tables.rs, flow_columns)",
            &columns,
            proto_fields::column_types,
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        for (name, _) in proto_fields::COMPUTED_COLUMNS {
            let column = flows.iter().find(|c| c.name == name).unwrap();
            assert!(
                column.extra.starts_with("MATERIALIZED"),
                "{name} is computed by ClickHouse, not written"
            );
        }
    }
}
