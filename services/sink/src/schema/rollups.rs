//! The tables recomputed from `flows` that never double-count (the design is explained in the
//! [`super`] module documentation): the per-connection detail (`connection_minutes`) and the
//! per-minute and per-hour rollups; the SQL that recomputes the changed time buckets, the views
//! that run it every minute, and [`refresh_rollups`] to recompute a range by hand.

use std::time::{SystemTime, UNIX_EPOCH};

use super::tables::View;
use super::{SchemaError, SchemaSettings, execute};

/// What the rollups group by. Everything else of a flow is summed away.
pub const DIMENSIONS: [&str; 14] = [
    "cluster",
    "class",
    "direction",
    "local_namespace",
    "local_workload_kind",
    "local_workload_name",
    "local_zone",
    "remote_namespace",
    "remote_workload_kind",
    "remote_workload_name",
    "remote_zone",
    "remote_service",
    "remote_cloud",
    "remote_region",
];

/// How often the refresh views run.
pub(crate) const REFRESH_EVERY: &str = "1 MINUTE";

/// A refresh picks up the change marks written since its previous successful refresh *started*,
/// minus this margin: an insert that was still running while that refresh read its source (the
/// mark is older than the refresh, the rows were not visible yet) is recomputed once more. It
/// must exceed the longest time between a mark and its insert's commit (a sink batch takes
/// seconds, a refresh well under a minute); each touched bucket is recomputed about
/// `1 + margin / 1 minute` times.
pub(crate) const MARGIN_SECONDS: u32 = 120;

/// The `flows` columns the per-connection detail sums; everything else of a record is a
/// dimension except its identity and exact interval (`record_id`, `generation`,
/// `interval_start*`, `interval_seconds`). The money is kept as prices (below).
pub const CONNECTION_SUMS: [&str; 4] = ["bytes", "packets", "cost_usd", "processing_cost_usd"];

/// `(column, expression over the source)` of what a row holds besides its key and `records`.
///
/// The per-connection detail keeps money as what it is per byte: `usd_per_gib` and
/// `processing_usd_per_gib`, the row's cost divided by its GiB, rounded to 12 decimals (away
/// from float noise, far below any price). A price repeats along sorted rows and compresses to
/// almost nothing (0.5 B per row, against 3 B for the float sum of costs); `cost_usd` and
/// `processing_cost_usd` are `ALIAS` columns, `bytes` times the price, equal to the sum of the
/// records' costs to ~1e-15 relative (records of one row with different prices give their
/// bytes-weighted mean: the product is still their sum).
const CONNECTION_VALUES: [(&str, &str); 4] = [
    ("bytes", "sum(bytes)"),
    ("packets", "sum(packets)"),
    (
        "usd_per_gib",
        "round(if(sum(bytes) = 0, 0, sum(cost_usd) * 1073741824 / sum(bytes)), 12)",
    ),
    (
        "processing_usd_per_gib",
        "round(if(sum(bytes) = 0, 0, sum(processing_cost_usd) * 1073741824 / sum(bytes)), 12)",
    ),
];

/// What the per-minute and per-hour rollups hold besides their key and `records`.
const ROLLUP_VALUES: [(&str, &str); 3] = [
    ("bytes", "sum(bytes)"),
    ("packets", "sum(packets)"),
    ("cost_usd", "sum(cost_usd)"),
];

/// One table recomputed from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollup {
    /// `connection_minutes`: every record of a connection, direction and minute summed into one
    /// row that keeps every attribute of the record, recomputed from `flows FINAL`. The long-kept
    /// detail (`--ttl-days`).
    Connection,
    /// `flows_per_minute`, recomputed from `flows FINAL`.
    Minute,
    /// `flows_per_hour`, recomputed from `flows_per_minute FINAL`.
    Hour,
}

impl Rollup {
    /// In refresh order: a source before what is recomputed from it.
    pub const ALL: [Rollup; 3] = [Rollup::Connection, Rollup::Minute, Rollup::Hour];

    pub fn table(self) -> &'static str {
        match self {
            Rollup::Connection => "connection_minutes",
            Rollup::Minute => "flows_per_minute",
            Rollup::Hour => "flows_per_hour",
        }
    }

    /// The table a bucket is recomputed from.
    pub fn source(self) -> &'static str {
        match self {
            Rollup::Connection | Rollup::Minute => "flows",
            Rollup::Hour => "flows_per_minute",
        }
    }

    /// The insert-triggered view that marks the buckets of this rollup a write to
    /// [`Rollup::source`] touched.
    pub fn changes_view_name(self) -> String {
        format!("{}_changes_mv", self.table())
    }

    /// The refreshable view that recomputes the marked buckets every minute.
    pub fn refresh_view_name(self) -> String {
        format!("{}_refresh", self.table())
    }

    /// The insert-triggered view that records in `rollup_watermarks` when the refresh view
    /// last wrote to this rollup.
    pub fn watermark_view_name(self) -> String {
        format!("{}_watermark_mv", self.table())
    }

    pub(crate) fn bucket_seconds(self) -> u64 {
        match self {
            Rollup::Connection | Rollup::Minute => 60,
            Rollup::Hour => 3600,
        }
    }

    fn bucket_function(self) -> &'static str {
        match self {
            Rollup::Connection | Rollup::Minute => "toStartOfMinute",
            Rollup::Hour => "toStartOfHour",
        }
    }

    pub(crate) fn partition_by(self) -> &'static str {
        match self {
            Rollup::Connection | Rollup::Minute => "toYYYYMMDD(interval_start)",
            Rollup::Hour => "toYYYYMM(interval_start)",
        }
    }

    /// What a row is keyed by besides its bucket, in key order.
    pub fn dimensions(self) -> Vec<String> {
        match self {
            Rollup::Connection => super::tables::connection_dimensions(),
            Rollup::Minute | Rollup::Hour => DIMENSIONS.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// What a row holds besides its key and `records`: `(column, expression over the source)`.
    pub(crate) fn values(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Rollup::Connection => &CONNECTION_VALUES,
            Rollup::Minute | Rollup::Hour => &ROLLUP_VALUES,
        }
    }

    /// `item(column, expression)` of every value, concatenated.
    fn each_value(self, item: impl Fn(&str, &str) -> String) -> String {
        self.values().iter().map(|(c, e)| item(c, e)).collect()
    }

    /// `count()` of flow records, or the sum of the minutes' counts.
    fn records(self) -> &'static str {
        match self {
            Rollup::Connection | Rollup::Minute => "count()",
            Rollup::Hour => "sum(records)",
        }
    }

    pub(crate) fn changes_view(self, settings: &SchemaSettings) -> View {
        let db = &settings.database;
        View {
            name: self.changes_view_name(),
            head: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{} TO {db}.rollup_changes AS",
                self.changes_view_name()
            ),
            query: format!(
                "SELECT DISTINCT\n    '{rollup}' AS rollup,\n    {bucket}(interval_start) AS interval_start,\n    \
                 now64(3, 'UTC') AS marked_at\nFROM {db}.{source}",
                rollup = self.table(),
                bucket = self.bucket_function(),
                source = self.source(),
            ),
            comment: format!(
                "netmeter: marks the {} buckets that writes to {} touch",
                self.table(),
                self.source()
            ),
        }
    }

    pub(crate) fn watermark_view(self, settings: &SchemaSettings) -> View {
        let db = &settings.database;
        View {
            name: self.watermark_view_name(),
            head: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{} TO {db}.rollup_watermarks AS",
                self.watermark_view_name()
            ),
            query: format!(
                "SELECT '{rollup}' AS rollup, max(refreshed_at) AS refreshed_at\nFROM {db}.{rollup}",
                rollup = self.table(),
            ),
            comment: format!("netmeter: records when {} was last refreshed", self.table()),
        }
    }

    pub(crate) fn refresh_view(self, settings: &SchemaSettings) -> View {
        let db = &settings.database;
        let window = recompute_window_days(settings);
        let query = format!(
            "WITH changed AS\n(\n    SELECT DISTINCT interval_start AS bucket\n    \
             FROM {db}.rollup_changes\n    WHERE rollup = '{rollup}'\n      \
             AND marked_at >= (\n          \
             SELECT max(refreshed_at) - INTERVAL {MARGIN_SECONDS} SECOND\n          \
             FROM {db}.rollup_watermarks\n          \
             WHERE rollup = '{rollup}')\n      \
             AND interval_start >= now() - INTERVAL {window} DAY\n)\n{select}",
            rollup = self.table(),
            select = self.recompute(db),
        );
        View {
            name: self.refresh_view_name(),
            head: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{} REFRESH EVERY {REFRESH_EVERY} APPEND TO {db}.{} AS",
                self.refresh_view_name(),
                self.table()
            ),
            query,
            comment: format!(
                "netmeter: recomputes the {} buckets that changed since its last refresh \
                 (buckets of the last {window} days)",
                self.table()
            ),
        }
    }

    /// The SELECT that recomputes the buckets of the `changed` CTE: fresh sums from the source,
    /// plus a deletion (`is_deleted = 1`) for every row of those buckets the fresh sums no
    /// longer have (a replay moved its bytes to other dimensions). Inside, the values are named
    /// `value_*`: an alias named like a source column would replace that column in the other
    /// expressions (`sum(bytes) AS bytes` inside the price's `sum(bytes)`).
    pub(crate) fn recompute(self, db: &str) -> String {
        let dims = self.dimensions().join(", ");
        let bucket = self.bucket_function();
        // The bounds let ClickHouse skip partitions; the IN picks the buckets.
        let source_filter = format!(
            "interval_start >= (SELECT min(bucket) FROM changed)\n      \
             AND interval_start < (SELECT max(bucket) FROM changed) + INTERVAL {} SECOND\n      \
             AND {bucket}(interval_start) IN changed",
            self.bucket_seconds()
        );
        let rollup_filter = "interval_start IN changed";
        let outer_sums = self.each_value(|c, _| format!("fresh.value_{c} AS {c},\n    "));
        let inner_sums = self.each_value(|c, e| format!("{e} AS value_{c},\n        "));
        format!(
            "SELECT\n    bucket AS interval_start,\n    {dims},\n    {outer_sums}fresh.records AS records,\n    \
             now64(3, 'UTC') AS refreshed_at,\n    toUInt8(fresh.present = 0) AS is_deleted\n\
             FROM\n(\n    SELECT\n        {bucket}(interval_start) AS bucket,\n        {dims},\n        \
             {inner_sums}{records} AS records,\n        1 AS present\n    FROM {db}.{source} FINAL\n    \
             WHERE {source_filter}\n    GROUP BY bucket, {dims}\n) AS fresh\n\
             FULL OUTER JOIN\n(\n    SELECT interval_start AS bucket, {dims}\n    \
             FROM {db}.{table} FINAL\n    WHERE {rollup_filter}\n) AS stale USING (bucket, {dims})\n\
             SETTINGS join_use_nulls = 0",
            records = self.records(),
            source = self.source(),
            table = self.table(),
        )
    }

    /// Every bucket the source holds, summed at once: fills a rollup created after its source
    /// (schema version 6 fills `connection_minutes` from the `flows` of earlier versions, all of
    /// them, before `flows` is cut to `--record-ttl-days`). Run again, it replaces the same rows.
    /// A large table has more groups than memory holds: the aggregation spills to disk past 1 GB.
    pub(crate) fn backfill(self, db: &str) -> String {
        let dims = self.dimensions().join(", ");
        let sums = self.each_value(|c, e| format!("{e} AS value_{c}, "));
        let columns = self.each_value(|c, _| format!("{c}, "));
        let values = self.each_value(|c, _| format!("value_{c}, "));
        format!(
            "INSERT INTO {db}.{table} (interval_start, {dims}, {columns}records, refreshed_at, is_deleted)\n\
             SELECT bucket, {dims}, {values}records, now64(3, 'UTC'), 0\n\
             FROM\n(\n    SELECT {bucket}(interval_start) AS bucket, {dims}, {sums}{records} AS records\n    \
             FROM {db}.{source} FINAL\n    GROUP BY bucket, {dims}\n)\n\
             SETTINGS max_bytes_before_external_group_by = 1000000000",
            table = self.table(),
            bucket = self.bucket_function(),
            records = self.records(),
            source = self.source(),
        )
    }
}

/// Buckets older than this are never recomputed: their source rows may be gone (TTL), and a
/// recomputation would delete the rollup rows that outlive them.
pub(crate) fn recompute_window_days(settings: &SchemaSettings) -> u32 {
    settings
        .record_ttl_days
        .min(settings.ttl_days)
        .min(settings.minute_rollup_ttl_days)
}

/// Recomputes the buckets overlapping `[from, to)` of every table [`Rollup::ALL`] names now:
/// marks their minutes as changed and runs the refresh views, a day at a time, so the views stay the only
/// writers of the rollups. The views do this by themselves for every bucket written to; this is
/// for repairs (the views were stopped or failing for longer than change marks are kept, 7 days)
/// and backfills. Buckets older than the shorter of `--ttl-days` and `--rollup-minute-ttl-days`
/// are skipped. Fails if a refresh view is stopped (`SYSTEM STOP VIEW`).
pub async fn refresh_rollups(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    from: SystemTime,
    to: SystemTime,
) -> Result<(), SchemaError> {
    settings.validate()?;
    let db = &settings.database;
    let stopped: Vec<String> = client
        .query_raw(
            "SELECT view FROM system.view_refreshes \
             WHERE database = {db:String} AND status = 'Disabled' ORDER BY view",
        )
        .param("db", db)
        .fetch_all()
        .await
        .map_err(SchemaError::query("SELECT view FROM system.view_refreshes"))?;
    if let Some(view) = stopped.into_iter().next() {
        return Err(SchemaError::RefreshStopped {
            view: format!("{db}.{view}"),
        });
    }
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let oldest =
        unix(SystemTime::now()).saturating_sub(u64::from(recompute_window_days(settings)) * 86_400);
    // The tables recomputed from `flows`, all by the minute.
    let from_flows = Rollup::ALL
        .iter()
        .filter(|r| r.source() == "flows")
        .map(|r| format!("'{}'", r.table()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut start = unix(from).max(oldest.div_ceil(60) * 60) / 60 * 60;
    let end = unix(to).div_ceil(60) * 60;
    while start < end {
        let stop = (start + 86_400).min(end);
        execute(
            client,
            &format!(
                "INSERT INTO {db}.rollup_changes (rollup, interval_start, marked_at)\n\
                 SELECT rollup, toDateTime({start} + number * 60, 'UTC'), now64(3, 'UTC')\n\
                 FROM numbers({}) ARRAY JOIN [{}] AS rollup",
                (stop - start) / 60,
                from_flows
            ),
        )
        .await?;
        refresh_rollups_now(client, settings).await?;
        start = stop;
    }
    Ok(())
}

/// Runs every refresh view now (in [`Rollup::ALL`]'s order) and waits for it; an error names the
/// refresh that failed. Tests and operators use it instead of waiting for the next minute.
pub async fn refresh_rollups_now(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
) -> Result<(), SchemaError> {
    for rollup in Rollup::ALL {
        let view = format!("{}.{}", settings.database, rollup.refresh_view_name());
        execute(client, &format!("SYSTEM REFRESH VIEW {view}")).await?;
        execute(client, &format!("SYSTEM WAIT VIEW {view}")).await?;
    }
    Ok(())
}
