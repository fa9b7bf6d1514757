//! The sink's ClickHouse schema against the real ClickHouse 26.7 engine: migrations from empty
//! and from versions 1 and 3, drift handling, and the totals a duplicate or a replay must not
//! change, in `flows` and in the rollups.

use clickhouse::Client;
use netmeter_proto::flows::Flow;
use netmeter_sink::native::NativeBlock;
use netmeter_sink::pipeline;
use netmeter_sink::row::FlowRow;
use netmeter_sink::schema::{
    self, AppliedMigration, MigrationReport, SCHEMA_VERSION, SchemaChange, SchemaError,
    SchemaSettings,
};
use netmeter_tests::Stack;
use netmeter_tests::clickhouse::{run, tsv as text};
use netmeter_tests::records::now_ms;
use serde_json::json;

const DB: &str = "netmeter";

/// A flow record as the attributor would write it; only what the scenario varies is a field.
struct Record {
    id: u128,
    generation: u64,
    start_ms: u64,
    namespace: &'static str,
    workload: &'static str,
    bytes: u64,
    cost_usd: f64,
}

impl Record {
    fn new(id: u128, start_ms: u64, namespace: &'static str, bytes: u64, cost_usd: f64) -> Record {
        Record {
            id,
            generation: 0,
            start_ms,
            namespace,
            workload: "api",
            bytes,
            cost_usd,
        }
    }

    /// The same record re-attributed by a replay.
    fn replayed(&self, generation: u64, namespace: &'static str, workload: &'static str) -> Record {
        Record {
            generation,
            namespace,
            workload,
            ..*self
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "record_id": uuid::Uuid::from_u128(self.id).to_string(),
            "generation": self.generation,
            "interval_start_unix_ms": self.start_ms,
            "interval_seconds": 5,
            "cluster": "prod",
            "direction": "out",
            "protocol": "tcp",
            "class": "INTER_ZONE",
            "local_cloud": "aws",
            "local_region": "eu-west-1",
            "local_zone": "eu-west-1a",
            "local_node": "node-a",
            "local_namespace": self.namespace,
            "local_pod": format!("{}-7d9f", self.workload),
            "local_workload_kind": "Deployment",
            "local_workload_name": self.workload,
            "local_ip": "::ffff:10.0.1.5",
            "local_port": 43122,
            "remote_cloud": "aws",
            "remote_region": "eu-west-1",
            "remote_zone": "eu-west-1b",
            "remote_namespace": "db",
            "remote_workload_kind": "StatefulSet",
            "remote_workload_name": "postgres",
            "remote_ip": "2001:db8::7",
            "remote_port": 5432,
            "bytes": self.bytes,
            "packets": self.bytes / 1000 + 1,
            "cost_usd": self.cost_usd,
        })
    }
}

/// Inserts records in one insert, as one sink batch.
async fn insert(client: &Client, records: &[Record]) {
    let rows: Vec<String> = records.iter().map(|r| r.json().to_string()).collect();
    run(
        client,
        &format!(
            "INSERT INTO {DB}.flows FORMAT JSONEachRow\n{}",
            rows.join("\n")
        ),
    )
    .await;
}

/// A minute 2 h 10 min ago, so its hour is complete and well inside every TTL.
fn recent_minute_ms() -> u64 {
    (now_ms() / 3_600_000 - 2) * 3_600_000 + 10 * 60_000
}

fn applied(versions: &[u32]) -> Vec<AppliedMigration> {
    versions
        .iter()
        .map(|v| {
            let m = &schema::MIGRATIONS[*v as usize - 1];
            AppliedMigration {
                version: m.version,
                description: m.description.into(),
            }
        })
        .collect()
}

const FLOW_COLUMNS: &str = "\
record_id\tUUID
generation\tUInt64
interval_start_unix_ms\tUInt64
interval_start\tDateTime64(3, \\'UTC\\')
interval_seconds\tUInt32
cluster\tLowCardinality(String)
direction\tLowCardinality(String)
protocol\tLowCardinality(String)
class\tLowCardinality(String)
path\tLowCardinality(String)
local_cloud\tLowCardinality(String)
local_region\tLowCardinality(String)
local_zone\tLowCardinality(String)
local_node\tLowCardinality(String)
local_namespace\tLowCardinality(String)
local_pod\tString
local_workload_kind\tLowCardinality(String)
local_workload_name\tLowCardinality(String)
local_app\tLowCardinality(String)
local_ip\tIPv6
local_port\tUInt16
local_host_network\tBool
local_initiated\tBool
local_instance_type\tLowCardinality(String)
remote_cloud\tLowCardinality(String)
remote_region\tLowCardinality(String)
remote_zone\tLowCardinality(String)
remote_node\tLowCardinality(String)
remote_namespace\tLowCardinality(String)
remote_pod\tString
remote_workload_kind\tLowCardinality(String)
remote_workload_name\tLowCardinality(String)
remote_app\tLowCardinality(String)
remote_ip\tIPv6
remote_port\tUInt16
remote_host_network\tBool
remote_service\tLowCardinality(String)
remote_network\tLowCardinality(String)
remote_country\tLowCardinality(String)
remote_asn\tUInt32
remote_as_name\tLowCardinality(String)
bytes\tUInt64
packets\tUInt64
cost_usd\tFloat64
processing_cost_usd\tFloat64
";

#[tokio::test(flavor = "multi_thread")]
async fn migrating_an_empty_server_creates_every_table_and_view() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();

    let report = schema::migrate(&client, &settings).await.unwrap();

    assert_eq!(
        report,
        MigrationReport {
            database: DB.into(),
            previous_version: 0,
            version: SCHEMA_VERSION,
            applied: applied(&[1, 2, 3, 4, 5, 6]),
            changes: vec![
                SchemaChange::CreatedDatabase,
                SchemaChange::CreatedTable("schema_migrations".into())
            ],
        }
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, engine FROM system.tables WHERE database = 'netmeter' ORDER BY name"
        )
        .await,
        "connection_minutes\tReplacingMergeTree\n\
         connection_minutes_changes_mv\tMaterializedView\n\
         connection_minutes_refresh\tMaterializedView\n\
         connection_minutes_watermark_mv\tMaterializedView\n\
         flows\tReplacingMergeTree\n\
         flows_per_hour\tReplacingMergeTree\n\
         flows_per_hour_changes_mv\tMaterializedView\n\
         flows_per_hour_refresh\tMaterializedView\n\
         flows_per_hour_watermark_mv\tMaterializedView\n\
         flows_per_minute\tReplacingMergeTree\n\
         flows_per_minute_changes_mv\tMaterializedView\n\
         flows_per_minute_refresh\tMaterializedView\n\
         flows_per_minute_watermark_mv\tMaterializedView\n\
         rollup_changes\tReplacingMergeTree\n\
         rollup_watermarks\tReplacingMergeTree\n\
         schema_migrations\tReplacingMergeTree\n"
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, type FROM system.columns \
             WHERE database = 'netmeter' AND table = 'flows' ORDER BY position"
        )
        .await,
        FLOW_COLUMNS
    );
    assert_eq!(
        text(
            &client,
            "SELECT engine_full FROM system.tables WHERE database = 'netmeter' AND name = 'flows'"
        )
        .await,
        "ReplacingMergeTree(generation) PARTITION BY toYYYYMMDD(interval_start) \
         ORDER BY (interval_start, record_id) TTL toDateTime(interval_start) + toIntervalDay(7) \
         SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1, \
         index_granularity = 8192\n",
        "flows keeps --record-ttl-days"
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, type, default_kind FROM system.columns WHERE database = 'netmeter' \
             AND table = 'connection_minutes' AND (name LIKE '%pod' OR name LIKE '%port' \
             OR name LIKE '%usd%' OR name = 'records') ORDER BY position"
        )
        .await,
        "local_pod\tLowCardinality(String)\t\nremote_pod\tLowCardinality(String)\t\n\
         local_port\tUInt16\t\nremote_port\tUInt16\t\n\
         usd_per_gib\tFloat64\t\nprocessing_usd_per_gib\tFloat64\t\nrecords\tUInt64\t\n\
         cost_usd\tFloat64\tALIAS\nprocessing_cost_usd\tFloat64\tALIAS\n",
        "the detail keeps prices; its costs are computed"
    );
    assert_eq!(
        text(
            &client,
            "SELECT engine_full FROM system.tables \
             WHERE database = 'netmeter' AND name = 'connection_minutes'"
        )
        .await
        .split(" TTL ")
        .nth(1)
        .unwrap_or_default(),
        "interval_start + toIntervalDay(90) SETTINGS ttl_only_drop_parts = 1, index_granularity = 8192\n",
        "the detail keeps --ttl-days"
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, type_full, expr FROM system.data_skipping_indices \
             WHERE database = 'netmeter' AND table = 'flows' ORDER BY name"
        )
        .await,
        "class_idx\tset(16)\tclass\n\
         local_namespace_idx\tbloom_filter(0.01)\tlocal_namespace\n\
         local_workload_name_idx\tbloom_filter(0.01)\tlocal_workload_name\n\
         remote_namespace_idx\tbloom_filter(0.01)\tremote_namespace\n"
    );
    assert_eq!(
        text(
            &client,
            "SELECT version, description FROM netmeter.schema_migrations FINAL ORDER BY version"
        )
        .await,
        "1\tflows table\n\
         2\tflows.remote_network and data-skipping indexes\n\
         3\tper-minute and per-hour rollups\n\
         4\tflows.local_initiated and flows.local_instance_type\n\
         5\tflows.path, remote_country, remote_asn, remote_as_name, processing_cost_usd\n\
         6\tconnection_minutes: the per-connection detail, filled from flows\n"
    );
    assert_eq!(
        text(
            &client,
            "SELECT view, exception FROM system.view_refreshes \
             WHERE database = 'netmeter' ORDER BY view"
        )
        .await,
        "connection_minutes_refresh\t\nflows_per_hour_refresh\t\nflows_per_minute_refresh\t\n",
        "every refresh view is scheduled and has not failed"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn migrating_twice_is_a_noop() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();

    let again = schema::migrate(&client, &settings).await.unwrap();

    assert!(again.is_noop(), "{again}");
    assert_eq!((again.previous_version, again.version), (6, 6));
    assert_eq!(
        again.to_string(),
        "database netmeter at schema version 6: already up to date"
    );
    assert_eq!(
        text(&client, "SELECT count() FROM netmeter.schema_migrations").await,
        "6\n",
        "no migration recorded twice"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrading_from_version_1_keeps_the_rows_and_adds_the_column_indexes_and_rollups() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    let v1 = schema::migrate_to(&client, &settings, 1).await.unwrap();
    assert_eq!(v1.applied, applied(&[1]));
    assert_eq!(
        text(&client, "SELECT count() FROM system.columns WHERE database = 'netmeter' AND table = 'flows' AND name = 'remote_network'").await,
        "0\n",
        "version 1 has no remote_network"
    );
    let minute = recent_minute_ms();
    // As a version-1 sink wrote them (the records have no remote_network).
    insert(
        &client,
        &[
            Record::new(1, minute, "shop", 1_000, 0.5),
            Record::new(2, minute, "shop", 24, 0.25),
        ],
    )
    .await;

    let report = schema::migrate(&client, &settings).await.unwrap();

    assert_eq!(report.previous_version, 1);
    assert_eq!(report.version, 6);
    assert_eq!(report.applied, applied(&[2, 3, 4, 5, 6]));
    assert_eq!(report.changes, vec![], "the migrations did everything");
    assert_eq!(
        text(
            &client,
            "SELECT local_namespace, local_pod, bytes, cost_usd, records, usd_per_gib \
             FROM netmeter.connection_minutes FINAL"
        )
        .await,
        "shop\tapi-7d9f\t1024\t0.75\t2\t786432\n",
        "version 6 fills the per-connection detail from the records before any refresh; the \
         two records' prices (0.5 $ for 1000 B, 0.25 $ for 24 B) are kept as their mean per GiB"
    );
    assert_eq!(
        text(
            &client,
            "SELECT count(), sum(bytes), sum(cost_usd), groupUniqArray(remote_network), \
             groupUniqArray(local_initiated), groupUniqArray(local_instance_type) \
             FROM netmeter.flows FINAL"
        )
        .await,
        "2\t1024\t0.75\t['']\t[false]\t['']\n",
        "the rows are kept and read the new columns as false and empty"
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, type FROM system.columns \
             WHERE database = 'netmeter' AND table = 'flows' ORDER BY position"
        )
        .await,
        FLOW_COLUMNS
    );
    assert_eq!(
        text(
            &client,
            "SELECT groupArray(name) FROM (SELECT name FROM system.data_skipping_indices \
             WHERE database = 'netmeter' AND table = 'flows' ORDER BY name)"
        )
        .await,
        "['class_idx','local_namespace_idx','local_workload_name_idx','remote_namespace_idx']\n"
    );
    // The rows written before the rollups existed are rolled up too.
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    assert_eq!(
        text(
            &client,
            "SELECT local_namespace, bytes, cost_usd, records FROM netmeter.flows_per_minute FINAL"
        )
        .await,
        "shop\t1024\t0.75\t2\n"
    );
    assert_eq!(
        text(
            &client,
            "SELECT local_namespace, bytes, cost_usd, records FROM netmeter.flows_per_hour FINAL"
        )
        .await,
        "shop\t1024\t0.75\t2\n"
    );
    assert!(
        schema::migrate(&client, &settings).await.unwrap().is_noop(),
        "an upgraded database is as current as a new one"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrading_from_version_3_keeps_the_rows_and_reads_the_new_columns_as_false_and_empty() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    let v3 = schema::migrate_to(&client, &settings, 3).await.unwrap();
    assert_eq!(v3.applied, applied(&[1, 2, 3]));
    let new_columns = "SELECT table, name FROM system.columns WHERE database = 'netmeter' \
                       AND name IN ('local_initiated', 'local_instance_type') ORDER BY table, name";
    assert_eq!(
        text(&client, new_columns).await,
        "",
        "version 3 has neither column"
    );
    let minute = recent_minute_ms();
    // As a version-3 sink wrote them, and rolled up before the upgrade.
    insert(
        &client,
        &[
            Record::new(1, minute, "shop", 1_000, 0.5),
            Record::new(2, minute, "shop", 24, 0.25),
        ],
    )
    .await;
    for view in ["flows_per_minute_refresh", "flows_per_hour_refresh"] {
        for command in ["REFRESH", "WAIT"] {
            run(&client, &format!("SYSTEM {command} VIEW netmeter.{view}")).await;
        }
    }

    let report = schema::migrate(&client, &settings).await.unwrap();

    assert_eq!((report.previous_version, report.version), (3, 6));
    assert_eq!(report.applied, applied(&[4, 5, 6]));
    assert_eq!(report.changes, vec![], "the migration did everything");
    assert_eq!(
        text(
            &client,
            "SELECT name, type FROM system.columns \
             WHERE database = 'netmeter' AND table = 'flows' ORDER BY position"
        )
        .await,
        FLOW_COLUMNS
    );
    assert_eq!(
        text(&client, new_columns).await,
        "connection_minutes\tlocal_initiated\nconnection_minutes\tlocal_instance_type\n\
         connection_minutes_refresh\tlocal_initiated\nconnection_minutes_refresh\tlocal_instance_type\n\
         flows\tlocal_initiated\nflows\tlocal_instance_type\n",
        "in flows and its per-connection detail only: the rollups keep their dimensions"
    );
    assert_eq!(
        text(
            &client,
            "SELECT toString(record_id), local_namespace, local_initiated, local_instance_type, \
             bytes, cost_usd, path, remote_country, remote_asn, processing_cost_usd \
             FROM netmeter.flows FINAL ORDER BY record_id"
        )
        .await,
        "00000000-0000-0000-0000-000000000001\tshop\tfalse\t\t1000\t0.5\t\t\t0\t0\n\
         00000000-0000-0000-0000-000000000002\tshop\tfalse\t\t24\t0.25\t\t\t0\t0\n",
        "the rows are kept and read the new columns as false and empty"
    );
    // The sink's insert fills them from now on.
    let row = FlowRow::try_from(Flow {
        record_id: uuid::Uuid::from_u128(3).to_string(),
        interval_start_unix_ms: minute,
        local_namespace: "shop".into(),
        local_ip: "10.0.1.5".into(),
        local_initiated: true,
        local_instance_type: "m6i.large".into(),
        remote_ip: "10.0.2.7".into(),
        bytes: 300,
        cost_usd: 0.125,
        ..Flow::default()
    })
    .unwrap();
    pipeline::insert(
        &client.clone().with_database(DB),
        "flows",
        NativeBlock::encode(&[row]),
        "after-version-4",
    )
    .await
    .unwrap();
    assert_eq!(
        text(
            &client,
            "SELECT local_initiated, local_instance_type, count(), sum(bytes) \
             FROM netmeter.flows FINAL GROUP BY ALL ORDER BY ALL"
        )
        .await,
        "false\t\t2\t1024\ntrue\tm6i.large\t1\t300\n"
    );
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    assert_eq!(
        text(
            &client,
            "SELECT sum(bytes), sum(cost_usd), sum(records) FROM netmeter.flows_per_minute FINAL"
        )
        .await,
        "1324\t0.875\t3\n",
        "the rollups take the rows of both versions"
    );
    assert!(
        schema::migrate(&client, &settings).await.unwrap().is_noop(),
        "an upgraded database is as current as a new one"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_of_another_type_is_reported_by_name_and_nothing_is_changed() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate_to(&client, &settings, 1).await.unwrap();
    run(
        &client,
        "ALTER TABLE netmeter.flows MODIFY COLUMN bytes Int64",
    )
    .await;
    insert(
        &client,
        &[Record::new(1, recent_minute_ms(), "shop", 1_000, 0.5)],
    )
    .await;

    let error = schema::migrate(&client, &settings).await.unwrap_err();

    match &error {
        SchemaError::ColumnType {
            database,
            table,
            column,
            expected,
            actual,
        } => assert_eq!(
            (
                database.as_str(),
                table.as_str(),
                column.as_str(),
                expected.as_str(),
                actual.as_str()
            ),
            ("netmeter", "flows", "bytes", "UInt64", "Int64")
        ),
        other => panic!("expected a column type error, got {other}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("column netmeter.flows.bytes is Int64 but netmeter expects UInt64"),
        "{error}"
    );
    assert_eq!(
        text(
            &client,
            "SELECT count(), sum(bytes), toTypeName(any(bytes)) FROM netmeter.flows"
        )
        .await,
        "1\t1000\tInt64\n",
        "the row and the column are untouched"
    );
    assert_eq!(
        text(
            &client,
            "SELECT groupArray(version) FROM netmeter.schema_migrations"
        )
        .await,
        "[1]\n",
        "no migration ran"
    );
    assert_eq!(
        text(
            &client,
            "SELECT count() FROM system.tables WHERE database = 'netmeter'"
        )
        .await,
        "2\n",
        "no table was created"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_and_a_replay_leave_one_row_with_the_replays_attribution() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();
    let live = Record::new(42, recent_minute_ms(), "shop", 1_000, 0.5);

    insert(&client, &[live.replayed(0, "shop", "api")]).await;
    insert(&client, &[live.replayed(0, "shop", "api")]).await; // redelivered
    insert(&client, &[live.replayed(7, "checkout", "payments")]).await; // replay
    insert(&client, &[live.replayed(0, "shop", "api")]).await; // a late live duplicate

    assert_eq!(
        text(
            &client,
            "SELECT count(), any(generation), any(local_namespace), any(local_workload_name), \
             sum(bytes), sum(cost_usd), any(toString(record_id)) FROM netmeter.flows FINAL"
        )
        .await,
        "1\t7\tcheckout\tpayments\t1000\t0.5\t00000000-0000-0000-0000-00000000002a\n"
    );

    // A retried sink batch (same insert_deduplication_token) is dropped before it is stored.
    let batch = [
        Record::new(100, recent_minute_ms(), "shop", 5, 0.0),
        Record::new(101, recent_minute_ms(), "shop", 6, 0.0),
    ];
    let rows: Vec<String> = batch.iter().map(|r| r.json().to_string()).collect();
    for _ in 0..2 {
        client
            .query_raw(&format!(
                "INSERT INTO netmeter.flows FORMAT JSONEachRow\n{}",
                rows.join("\n")
            ))
            .with_setting("insert_deduplication_token", "sink-batch-0-17")
            .execute()
            .await
            .unwrap();
    }
    assert_eq!(
        text(
            &client,
            "SELECT count() FROM netmeter.flows WHERE record_id IN \
             (toUUID('00000000-0000-0000-0000-000000000064'), toUUID('00000000-0000-0000-0000-000000000065'))"
        )
        .await,
        "2\n",
        "the retried batch was not stored again (counted without FINAL)"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn rollups_count_a_duplicate_and_a_replay_once() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();
    let minute = recent_minute_ms();
    let a = Record::new(1, minute, "shop", 1_000_000, 0.5);
    let b = Record::new(2, minute, "shop", 24, 0.25);
    let c = Record::new(3, minute + 60_000, "shop", 300, 0.125);

    // The live pass, then a redelivery of a and c.
    insert(
        &client,
        &[
            a.replayed(0, "shop", "api"),
            b.replayed(0, "shop", "api"),
            c.replayed(0, "shop", "api"),
        ],
    )
    .await;
    insert(
        &client,
        &[a.replayed(0, "shop", "api"), c.replayed(0, "shop", "api")],
    )
    .await;
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    let per_minute = "SELECT formatDateTime(interval_start, '%H:%i'), local_namespace, \
                      local_workload_name, bytes, packets, cost_usd, records \
                      FROM netmeter.flows_per_minute FINAL ORDER BY interval_start, local_namespace";
    let per_hour = "SELECT local_namespace, local_workload_name, bytes, packets, cost_usd, records \
                    FROM netmeter.flows_per_hour FINAL ORDER BY local_namespace, interval_start";
    let hh_mm = |ms: u64| {
        let minutes = ms / 60_000 % (24 * 60);
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    };
    let (m0, m1) = (hh_mm(minute), hh_mm(minute + 60_000));
    assert_eq!(
        text(&client, per_minute).await,
        format!(
            "{m0}\tshop\tapi\t1000024\t1002\t0.75\t2\n\
             {m1}\tshop\tapi\t300\t1\t0.125\t1\n"
        )
    );
    assert_eq!(
        text(&client, per_hour).await,
        "shop\tapi\t1000324\t1003\t0.875\t3\n"
    );
    // The per-connection detail: a and b are one connection in one minute, c the next minute.
    let per_connection = "SELECT formatDateTime(interval_start, '%H:%i'), local_namespace, \
                          local_workload_name, local_pod, bytes, packets, round(cost_usd, 12), \
                          records FROM netmeter.connection_minutes FINAL \
                          ORDER BY interval_start, local_namespace";
    assert_eq!(
        text(&client, per_connection).await,
        format!(
            "{m0}\tshop\tapi\tapi-7d9f\t1000024\t1002\t0.75\t2\n\
             {m1}\tshop\tapi\tapi-7d9f\t300\t1\t0.125\t1\n"
        ),
        "a redelivery counts once in the detail too"
    );

    // A replay moves a and b to another namespace and workload; c keeps its attribution.
    insert(
        &client,
        &[
            a.replayed(9, "checkout", "payments"),
            b.replayed(9, "checkout", "payments"),
            c.replayed(9, "shop", "api"),
        ],
    )
    .await;
    // A record of three days ago arrives late (a broker outage, or a replay of that day).
    let late = Record::new(4, minute - 3 * 86_400_000, "shop", 7, 0.0);
    let late_day = hh_mm(late.start_ms);
    insert(&client, &[late]).await;
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();

    assert_eq!(
        text(&client, per_minute).await,
        format!(
            "{m0}\tshop\tapi\t7\t1\t0\t1\n\
             {m0}\tcheckout\tpayments\t1000024\t1002\t0.75\t2\n\
             {m1}\tshop\tapi\t300\t1\t0.125\t1\n"
        ),
        "shop's old minute row is gone, the bytes moved to checkout, the late record has its own day"
    );
    assert_eq!(
        text(
            &client,
            "SELECT toDate(interval_start) = today() - 3 FROM netmeter.flows_per_minute FINAL \
             WHERE bytes = 7"
        )
        .await,
        "1\n"
    );
    assert_eq!(
        text(&client, per_hour).await,
        "checkout\tpayments\t1000024\t1002\t0.75\t2\n\
         shop\tapi\t7\t1\t0\t1\n\
         shop\tapi\t300\t1\t0.125\t1\n"
    );
    assert_eq!(
        text(
            &client,
            "SELECT sum(bytes), sum(cost_usd), sum(records) FROM netmeter.flows_per_hour FINAL \
             WHERE interval_start >= now() - INTERVAL 1 DAY"
        )
        .await,
        "1000324\t0.875\t3\n",
        "the recent totals equal one pass, exactly"
    );
    assert_eq!(
        text(
            &client,
            "SELECT count() FROM netmeter.flows_per_minute WHERE is_deleted = 1"
        )
        .await,
        "1\n",
        "the replay wrote one deletion, for (minute 0, shop)"
    );
    assert_eq!(
        text(&client, per_connection).await,
        format!(
            "{late_day}\tshop\tapi\tapi-7d9f\t7\t1\t0\t1\n\
             {m0}\tcheckout\tpayments\tpayments-7d9f\t1000024\t1002\t0.75\t2\n\
             {m1}\tshop\tapi\tapi-7d9f\t300\t1\t0.125\t1\n"
        ),
        "the replay moved the connection's minute to checkout, the late record has its minute"
    );
    assert_eq!(
        text(
            &client,
            "SELECT count() FROM netmeter.connection_minutes WHERE is_deleted = 1"
        )
        .await,
        "1\n",
        "the replay wrote one deletion in the detail, for (minute 0, shop's pod)"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rollups_recomputes_a_range_by_hand() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();
    // The refresh views were stopped for longer than change marks are kept.
    run(
        &client,
        "SYSTEM STOP VIEW netmeter.flows_per_minute_refresh",
    )
    .await;
    let minute = recent_minute_ms();
    insert(
        &client,
        &[
            Record::new(1, minute, "shop", 1_000, 0.5),
            Record::new(2, minute + 120_000, "shop", 24, 0.25),
            Record::new(3, minute + 120_000, "shop", 24, 0.25).replayed(3, "checkout", "api"),
        ],
    )
    .await;
    run(&client, "TRUNCATE TABLE netmeter.rollup_changes").await;
    let from = std::time::UNIX_EPOCH + std::time::Duration::from_millis(minute);
    let to = from + std::time::Duration::from_secs(180);

    let stopped = schema::refresh_rollups(&client, &settings, from, to)
        .await
        .unwrap_err();
    assert_eq!(
        stopped.to_string(),
        "the rollup refresh view netmeter.flows_per_minute_refresh is stopped: \
         run SYSTEM START VIEW netmeter.flows_per_minute_refresh, then try again"
    );
    run(
        &client,
        "SYSTEM START VIEW netmeter.flows_per_minute_refresh",
    )
    .await;
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    assert_eq!(
        text(&client, "SELECT count() FROM netmeter.flows_per_minute").await,
        "0\n",
        "without marks the views do not know about the rows"
    );
    schema::refresh_rollups(&client, &settings, from, to)
        .await
        .unwrap();

    assert_eq!(
        text(
            &client,
            "SELECT toUnixTimestamp(interval_start) * 1000, local_namespace, bytes, cost_usd, records \
             FROM netmeter.flows_per_minute FINAL ORDER BY interval_start, local_namespace"
        )
        .await,
        format!(
            "{minute}\tshop\t1000\t0.5\t1\n\
             {}\tcheckout\t24\t0.25\t1\n\
             {}\tshop\t24\t0.25\t1\n",
            minute + 120_000,
            minute + 120_000
        )
    );
    assert_eq!(
        text(
            &client,
            "SELECT local_namespace, bytes, cost_usd, records FROM netmeter.flows_per_hour FINAL \
             ORDER BY local_namespace"
        )
        .await,
        "checkout\t24\t0.25\t1\nshop\t1024\t0.75\t2\n"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_clickhouse_resumes_the_rollups_where_they_were() {
    let mut stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();
    let minute = recent_minute_ms();
    insert(&client, &[Record::new(1, minute, "shop", 1_000, 0.5)]).await;
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    // As if that write were an hour old: long done, outside every refresh's margin.
    run(
        &client,
        "INSERT INTO netmeter.rollup_changes \
         SELECT rollup, interval_start, marked_at - INTERVAL 1 HOUR FROM netmeter.rollup_changes",
    )
    .await;
    run(
        &client,
        "ALTER TABLE netmeter.rollup_changes DELETE WHERE marked_at > now() - INTERVAL 30 MINUTE \
         SETTINGS mutations_sync = 2",
    )
    .await;
    let last_refresh = "SELECT max(refreshed_at) FROM netmeter.flows_per_minute \
                        WHERE local_namespace = 'shop'";
    let before = text(&client, last_refresh).await;

    stack.stop_clickhouse();
    stack.start_clickhouse().unwrap();
    insert(
        &client,
        &[Record::new(2, minute + 60_000, "checkout", 24, 0.25)],
    )
    .await;
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();

    assert_eq!(
        text(&client, last_refresh).await,
        before,
        "the minute rolled up before the restart was not recomputed"
    );
    assert_eq!(
        text(
            &client,
            "SELECT local_namespace, bytes, cost_usd FROM netmeter.flows_per_hour FINAL \
             ORDER BY local_namespace"
        )
        .await,
        "checkout\t24\t0.25\nshop\t1000\t0.5\n",
        "the write after the restart was rolled up"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_retention_modifies_the_ttls_and_the_rollup_windows() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    schema::migrate(&client, &SchemaSettings::default())
        .await
        .unwrap();
    let shorter = SchemaSettings {
        ttl_days: 30,
        record_ttl_days: 3,
        minute_rollup_ttl_days: 7,
        hour_rollup_ttl_days: 100,
        ..SchemaSettings::default()
    };

    let report = schema::migrate(&client, &shorter).await.unwrap();

    assert_eq!(report.applied, vec![]);
    assert_eq!(
        report.changes,
        vec![
            SchemaChange::ModifiedTtl {
                table: "flows".into(),
                ttl: "toDateTime(interval_start) + toIntervalDay(3)".into()
            },
            SchemaChange::ModifiedTtl {
                table: "flows_per_minute".into(),
                ttl: "interval_start + toIntervalDay(7)".into()
            },
            SchemaChange::ModifiedTtl {
                table: "flows_per_hour".into(),
                ttl: "interval_start + toIntervalDay(100)".into()
            },
            SchemaChange::ModifiedTtl {
                table: "connection_minutes".into(),
                ttl: "interval_start + toIntervalDay(30)".into()
            },
            SchemaChange::ModifiedView("connection_minutes_refresh".into()),
            SchemaChange::ModifiedView("flows_per_minute_refresh".into()),
            SchemaChange::ModifiedView("flows_per_hour_refresh".into()),
        ]
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, extract(engine_full, 'TTL (.*) SETTINGS') FROM system.tables \
             WHERE database = 'netmeter' AND engine LIKE '%MergeTree' \
             AND (name LIKE 'flows%' OR name = 'connection_minutes') ORDER BY name"
        )
        .await,
        "connection_minutes\tinterval_start + toIntervalDay(30)\n\
         flows\ttoDateTime(interval_start) + toIntervalDay(3)\n\
         flows_per_hour\tinterval_start + toIntervalDay(100)\n\
         flows_per_minute\tinterval_start + toIntervalDay(7)\n"
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, position(as_select, 'now() - toIntervalDay(3)') > 0 FROM system.tables \
             WHERE database = 'netmeter' AND name LIKE '%_refresh' ORDER BY name"
        )
        .await,
        "connection_minutes_refresh\t1\nflows_per_hour_refresh\t1\nflows_per_minute_refresh\t1\n",
        "every view recomputes only what flows still holds: the last 3 days"
    );
    schema::refresh_rollups_now(&client, &shorter)
        .await
        .expect("the modified views still run");
    assert!(schema::migrate(&client, &shorter).await.unwrap().is_noop());
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_column_index_or_view_is_restored() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();
    run(&client, "DROP VIEW netmeter.flows_per_hour_refresh").await;
    run(
        &client,
        "ALTER TABLE netmeter.flows_per_hour DROP COLUMN records",
    )
    .await;
    run(&client, "ALTER TABLE netmeter.flows DROP INDEX class_idx").await;

    let report = schema::migrate(&client, &settings).await.unwrap();

    assert_eq!(
        report.changes,
        vec![
            SchemaChange::AddedIndex {
                table: "flows".into(),
                index: "class_idx".into()
            },
            SchemaChange::AddedColumn {
                table: "flows_per_hour".into(),
                column: "records".into()
            },
            SchemaChange::CreatedView("flows_per_hour_refresh".into()),
        ]
    );
    assert_eq!(
        text(
            &client,
            "SELECT name, type FROM system.columns WHERE database = 'netmeter' \
             AND table = 'flows_per_hour' AND position > 15 ORDER BY position"
        )
        .await,
        "bytes\tUInt64\npackets\tUInt64\ncost_usd\tFloat64\nrecords\tUInt64\n\
         refreshed_at\tDateTime64(3, \\'UTC\\')\nis_deleted\tUInt8\n",
        "records is back in its place"
    );
    assert!(schema::migrate(&client, &settings).await.unwrap().is_noop());
    stack.stop();
}

/// Everything `system` knows about a database's schema, with its name replaced by `DB`.
async fn describe(client: &Client, db: &str) -> Vec<String> {
    let normalize = |column: &str| format!("replaceAll({column}, '{db}', 'DB')");
    let queries = [
        format!(
            "SELECT table, name, type, default_kind, {}, compression_codec \
             FROM system.columns WHERE database = '{db}' ORDER BY table, position",
            normalize("default_expression")
        ),
        format!(
            "SELECT name, engine, engine_full, {}, comment FROM system.tables \
             WHERE database = '{db}' ORDER BY name",
            normalize("as_select")
        ),
        format!(
            "SELECT table, name, type_full, expr, granularity \
             FROM system.data_skipping_indices WHERE database = '{db}' ORDER BY table, name"
        ),
        format!("SELECT version, description FROM {db}.schema_migrations FINAL ORDER BY version"),
    ];
    let mut described = Vec::new();
    for sql in queries {
        described.push(text(client, &sql).await);
    }
    described
}

#[tokio::test(flavor = "multi_thread")]
async fn migrating_an_empty_server_matches_the_ddl() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let migrated = SchemaSettings::new("migrated");
    let from_ddl = SchemaSettings::new("from_ddl");
    schema::migrate(&client, &migrated).await.unwrap();
    for statement in schema::ddl_statements(&from_ddl, None) {
        run(&client, &statement).await;
    }

    let (a, b) = (
        describe(&client, "migrated").await,
        describe(&client, "from_ddl").await,
    );
    assert_eq!(a, b);
    assert!(
        schema::migrate(&client, &from_ddl).await.unwrap().is_noop(),
        "a database created from the DDL is current for the sink"
    );
    let printed = schema::ddl(&SchemaSettings::default(), None);
    assert!(printed.starts_with("-- netmeter schema version 6, database netmeter\n\nCREATE DATABASE IF NOT EXISTS netmeter;\n"), "{printed}");
    stack.stop();
}
