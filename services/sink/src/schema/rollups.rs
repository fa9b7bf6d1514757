//! Per-minute and per-hour rollups of `flows` that never double-count (the design is explained
//! in the [`super`] module documentation): the SQL that recomputes the changed time buckets,
//! the views that run it every minute, and [`refresh_rollups`] to recompute a range by hand.

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

/// One rollup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollup {
    /// `flows_per_minute`, recomputed from `flows FINAL`.
    Minute,
    /// `flows_per_hour`, recomputed from `flows_per_minute FINAL`.
    Hour,
}

impl Rollup {
    pub const ALL: [Rollup; 2] = [Rollup::Minute, Rollup::Hour];

    pub fn table(self) -> &'static str {
        match self {
            Rollup::Minute => "flows_per_minute",
            Rollup::Hour => "flows_per_hour",
        }
    }

    /// The table a bucket is recomputed from.
    pub fn source(self) -> &'static str {
        match self {
            Rollup::Minute => "flows",
            Rollup::Hour => "flows_per_minute",
        }
    }

    /// The insert-triggered view that marks the buckets of this rollup a write to
    /// [`Rollup::source`] touched.
    pub fn changes_view_name(self) -> &'static str {
        match self {
            Rollup::Minute => "flows_per_minute_changes_mv",
            Rollup::Hour => "flows_per_hour_changes_mv",
        }
    }

    /// The refreshable view that recomputes the marked buckets every minute.
    pub fn refresh_view_name(self) -> &'static str {
        match self {
            Rollup::Minute => "flows_per_minute_refresh",
            Rollup::Hour => "flows_per_hour_refresh",
        }
    }

    /// The insert-triggered view that records in `rollup_watermarks` when the refresh view
    /// last wrote to this rollup.
    pub fn watermark_view_name(self) -> &'static str {
        match self {
            Rollup::Minute => "flows_per_minute_watermark_mv",
            Rollup::Hour => "flows_per_hour_watermark_mv",
        }
    }

    pub(crate) fn bucket_seconds(self) -> u64 {
        match self {
            Rollup::Minute => 60,
            Rollup::Hour => 3600,
        }
    }

    fn bucket_function(self) -> &'static str {
        match self {
            Rollup::Minute => "toStartOfMinute",
            Rollup::Hour => "toStartOfHour",
        }
    }

    pub(crate) fn partition_by(self) -> &'static str {
        match self {
            Rollup::Minute => "toYYYYMMDD(interval_start)",
            Rollup::Hour => "toYYYYMM(interval_start)",
        }
    }

    /// `count()` of flow records, or the sum of the minutes' counts.
    fn records(self) -> &'static str {
        match self {
            Rollup::Minute => "count()",
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
    /// longer have (a replay moved its bytes to other dimensions).
    pub(crate) fn recompute(self, db: &str) -> String {
        let dims = DIMENSIONS.join(", ");
        let bucket = self.bucket_function();
        // The bounds let ClickHouse skip partitions; the IN picks the buckets.
        let source_filter = format!(
            "interval_start >= (SELECT min(bucket) FROM changed)\n      \
             AND interval_start < (SELECT max(bucket) FROM changed) + INTERVAL {} SECOND\n      \
             AND {bucket}(interval_start) IN changed",
            self.bucket_seconds()
        );
        let rollup_filter = "interval_start IN changed";
        format!(
            "SELECT\n    bucket AS interval_start,\n    {dims},\n    fresh.bytes AS bytes,\n    \
             fresh.packets AS packets,\n    fresh.cost_usd AS cost_usd,\n    fresh.records AS records,\n    \
             now64(3, 'UTC') AS refreshed_at,\n    toUInt8(fresh.present = 0) AS is_deleted\n\
             FROM\n(\n    SELECT\n        {bucket}(interval_start) AS bucket,\n        {dims},\n        \
             sum(bytes) AS bytes,\n        sum(packets) AS packets,\n        sum(cost_usd) AS cost_usd,\n        \
             {records} AS records,\n        1 AS present\n    FROM {db}.{source} FINAL\n    \
             WHERE {source_filter}\n    GROUP BY bucket, {dims}\n) AS fresh\n\
             FULL OUTER JOIN\n(\n    SELECT interval_start AS bucket, {dims}\n    \
             FROM {db}.{table} FINAL\n    WHERE {rollup_filter}\n) AS stale USING (bucket, {dims})\n\
             SETTINGS join_use_nulls = 0",
            records = self.records(),
            source = self.source(),
            table = self.table(),
        )
    }
}

/// Buckets older than this are never recomputed: their source rows may be gone (TTL), and a
/// recomputation would delete the rollup rows that outlive them.
pub(crate) fn recompute_window_days(settings: &SchemaSettings) -> u32 {
    settings.ttl_days.min(settings.minute_rollup_ttl_days)
}

/// Recomputes the per-minute and per-hour buckets overlapping `[from, to)` now: marks their
/// minutes as changed and runs both refresh views, a day at a time, so the views stay the only
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
        .map_err(|source| SchemaError::Query {
            statement: "SELECT view FROM system.view_refreshes".into(),
            source,
        })?;
    if let Some(view) = stopped.into_iter().next() {
        return Err(SchemaError::RefreshStopped {
            view: format!("{db}.{view}"),
        });
    }
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let oldest =
        unix(SystemTime::now()).saturating_sub(u64::from(recompute_window_days(settings)) * 86_400);
    let mut start = unix(from).max(oldest.div_ceil(60) * 60) / 60 * 60;
    let end = unix(to).div_ceil(60) * 60;
    while start < end {
        let stop = (start + 86_400).min(end);
        execute(
            client,
            &format!(
                "INSERT INTO {db}.rollup_changes (rollup, interval_start, marked_at)\n\
                 SELECT 'flows_per_minute', toDateTime({start} + number * 60, 'UTC'), now64(3, 'UTC')\n\
                 FROM numbers({})",
                (stop - start) / 60
            ),
        )
        .await?;
        refresh_rollups_now(client, settings).await?;
        start = stop;
    }
    Ok(())
}

/// Runs both refresh views now (minutes, then hours) and waits for them; an error names the
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
