//! Storage benchmark: bytes on disk per connection-minute of every table netmeter owns, next to a
//! kubenetmon-shaped table holding the same traffic in the same run (the ratio), and the time of
//! two of the README's questions on `flows` and on that table. The measuring stick for the
//! storage design (issue 15); it prints figures, it does not judge them.
//!
//! Run it on demand (never in CI); it starts ClickHouse, so as root:
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/netmeter/target
//! cargo bench -p netmeter-sink --bench storage
//! NETMETER_BENCH_CONNECTIONS=200000 cargo bench -p netmeter-sink --bench storage   # 10x
//! ```
//!
//! Knobs: `NETMETER_BENCH_CONNECTIONS` (default 20,000), `NETMETER_BENCH_INTERVALS` (default
//! 100 intervals of 5 s). The reference profile: every connection sends and receives in every
//! interval, so it yields a record per direction and interval: 20,000 x 2 x 100 = 4,000,000
//! records over 500 s, which touch 9 minutes: 360,000 connection-minutes (one connection, one
//! direction, one minute: what a per-minute table keeps a row of).
//!
//! Measured 2026-12-03 on the 2-core VM (reference profile, ~2 min in all): `connection_minutes`
//! (the 90-day detail) 5,164,079 B = 14.34 B per connection-minute against the
//! kubenetmon-shaped table's 6,499,627 B = 18.05 B: **0.79x**; `flows` (kept 7 days) 54.3 B per
//! record, 603 B per connection-minute, 33.4x; `flows_per_minute` 5.95 B, `flows_per_hour`
//! 0.94 B. Cross-zone bytes per workload: 67 ms on `flows`, 13 ms on `connection_minutes`, 14 ms
//! on the kubenetmon-shaped table; internet egress per pod and minute: 181 / 18 / 32 ms. One
//! recompute of every view: 245k records/s. At 10x (200,000 connections, 40,000,000 records,
//! ~20 min; inserts at 62k rows/s while the views and merges run): 14.0 B against 17.0 B,
//! 0.82x; `flows` 604 B; 429 / 38 / 66 ms and 931 / 27 / 53 ms.
//!
//! The traffic, built in code from a fixed seed: a cluster in AWS eu-west-1, 100 nodes in 3
//! zones, 3,000 pods of 600 workloads in 20 namespaces; connections ~60% pod to pod, ~20% to
//! cloud services, ~15% to the internet, ~5% to private networks; record ids as the attributor
//! makes them (random-looking v8 UUIDs), written through the sink's real insert path
//! (`NativeEncoder` + `pipeline::insert`, 50,000-row batches, each with its token), in
//! interval order. The kubenetmon-shaped table (SummingMergeTree over bytes and packets,
//! partitioned by day, ordered by day, minute, direction, protocol, local app, remote app, local
//! pod, remote pod, then every other column; LowCardinality/String with ZSTD(1), IPv6 with
//! ZSTD, ports Delta+ZSTD, bytes/packets Delta+ZSTD) is filled from `flows` by minute, so it
//! holds exactly the same bytes. Every table is merged (`OPTIMIZE ... FINAL`) before it is
//! measured; the rollups are refreshed by hand first.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use netmeter_sink::native::NativeEncoder;
use netmeter_sink::pipeline;
use netmeter_sink::row::FlowRow;
use netmeter_sink::schema::{SchemaSettings, migrate, refresh_rollups_now};
use netmeter_tests::Stack;
use netmeter_tests::bench::{bench_runtime, env_number, median};

const SINK: &str = env!("CARGO_BIN_EXE_netmeter-sink");
const DATABASE: &str = "netmeter";
const CHUNK_ROWS: usize = 50_000;
const INTERVAL_MS: u64 = 5_000;
const GIB: f64 = (1u64 << 30) as f64;

/// The kubenetmon-shaped table, as issue 15 describes it.
const KUBENETMON_TABLE: &str = "CREATE TABLE {db}.kubenetmon_shaped
(
    day Date CODEC(Delta, ZSTD(1)),
    minute DateTime CODEC(Delta, ZSTD(1)),
    direction LowCardinality(String) CODEC(ZSTD(1)),
    protocol LowCardinality(String) CODEC(ZSTD(1)),
    local_app LowCardinality(String) CODEC(ZSTD(1)),
    remote_app LowCardinality(String) CODEC(ZSTD(1)),
    local_pod String CODEC(ZSTD(1)),
    remote_pod String CODEC(ZSTD(1)),
    class LowCardinality(String) CODEC(ZSTD(1)),
    local_cloud LowCardinality(String) CODEC(ZSTD(1)),
    local_region LowCardinality(String) CODEC(ZSTD(1)),
    local_zone LowCardinality(String) CODEC(ZSTD(1)),
    local_node LowCardinality(String) CODEC(ZSTD(1)),
    local_namespace LowCardinality(String) CODEC(ZSTD(1)),
    local_ip IPv6 CODEC(ZSTD(1)),
    local_port UInt16 CODEC(Delta, ZSTD(1)),
    remote_cloud LowCardinality(String) CODEC(ZSTD(1)),
    remote_region LowCardinality(String) CODEC(ZSTD(1)),
    remote_zone LowCardinality(String) CODEC(ZSTD(1)),
    remote_node LowCardinality(String) CODEC(ZSTD(1)),
    remote_namespace LowCardinality(String) CODEC(ZSTD(1)),
    remote_service LowCardinality(String) CODEC(ZSTD(1)),
    remote_ip IPv6 CODEC(ZSTD(1)),
    remote_port UInt16 CODEC(Delta, ZSTD(1)),
    bytes UInt64 CODEC(Delta(8), ZSTD(1)),
    packets UInt64 CODEC(Delta(8), ZSTD(1))
)
ENGINE = SummingMergeTree((bytes, packets))
PARTITION BY day
ORDER BY (day, minute, direction, protocol, local_app, remote_app, local_pod, remote_pod, class,
          local_cloud, local_region, local_zone, local_node, local_namespace, local_ip, local_port,
          remote_cloud, remote_region, remote_zone, remote_node, remote_namespace, remote_service,
          remote_ip, remote_port)";

const FILL_KUBENETMON: &str = "INSERT INTO {db}.kubenetmon_shaped
SELECT toDate(interval_start), toStartOfMinute(interval_start), direction, protocol, local_app,
       remote_app, local_pod, remote_pod, class, local_cloud, local_region, local_zone, local_node,
       local_namespace, local_ip, local_port, remote_cloud, remote_region, remote_zone,
       remote_node, remote_namespace, remote_service, remote_ip, remote_port,
       sum(bytes), sum(packets)
FROM {db}.flows FINAL
GROUP BY ALL";

/// Two of the README's questions, on `{table}` (`flows` and `connection_minutes`, with `FINAL`)
/// and on the kubenetmon-shaped table.
const QUESTIONS: [(&str, &str, &str); 2] = [
    (
        "cross-zone bytes per workload",
        "SELECT local_namespace, local_workload_name, sum(bytes) FROM {db}.{table} FINAL \
         WHERE class = 'INTER_ZONE' GROUP BY ALL ORDER BY 3 DESC LIMIT 10 FORMAT Null",
        "SELECT local_namespace, local_app, sum(bytes) FROM {db}.kubenetmon_shaped \
         WHERE class = 'INTER_ZONE' GROUP BY ALL ORDER BY 3 DESC LIMIT 10 FORMAT Null",
    ),
    (
        "internet egress per pod and minute",
        "SELECT toStartOfMinute(interval_start), local_pod, sum(bytes) FROM {db}.{table} FINAL \
         WHERE class = 'INTERNET' AND direction = 'out' GROUP BY ALL FORMAT Null",
        "SELECT minute, local_pod, sum(bytes) FROM {db}.kubenetmon_shaped \
         WHERE class = 'INTERNET' AND direction = 'out' GROUP BY ALL FORMAT Null",
    ),
];

fn main() -> anyhow::Result<()> {
    let connections = env_number("NETMETER_BENCH_CONNECTIONS", 20_000)?;
    let intervals = env_number("NETMETER_BENCH_INTERVALS", 100)?;
    ensure!(
        connections > 0 && intervals > 0,
        "connections and intervals must be > 0"
    );
    let runtime = bench_runtime(Path::new(SINK))?;
    let stack = runtime.block_on(Stack::start())?;
    let result = runtime.block_on(run(&stack, connections, intervals));
    stack.stop();
    result
}

async fn run(stack: &Stack, connections: usize, intervals: usize) -> anyhow::Result<()> {
    let server = stack.clickhouse_client();
    let settings = SchemaSettings::new(DATABASE);
    migrate(&server, &settings).await?;
    let client = server.clone().with_database(DATABASE);
    let plan = Connections::new();
    // Start at a minute boundary an hour ago, so every interval is inside the rollups' window.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let start_ms = now_ms - now_ms % 60_000 - 3_600_000;
    let rows_total = connections * 2 * intervals;
    println!(
        "profile: {connections} connections x 2 directions x {intervals} intervals of {} s = {rows_total} records",
        INTERVAL_MS / 1000
    );
    let inserting = Instant::now();
    let mut encoder = NativeEncoder::default();
    let mut batch: Vec<FlowRow> = Vec::with_capacity(CHUNK_ROWS);
    let mut batches = 0;
    for interval in 0..intervals {
        let at = start_ms + interval as u64 * INTERVAL_MS;
        for c in 0..connections {
            for direction in 0..2 {
                batch.push(plan.row(c, direction, interval, at));
                if batch.len() == CHUNK_ROWS {
                    batches += 1;
                    let block = encoder.encode(&batch);
                    pipeline::insert(&client, "flows", block, &format!("bench-{batches}")).await?;
                    batch.clear();
                }
            }
        }
    }
    if !batch.is_empty() {
        batches += 1;
        let block = encoder.encode(&batch);
        pipeline::insert(&client, "flows", block, &format!("bench-{batches}")).await?;
    }
    let insert_seconds = inserting.elapsed().as_secs_f64();
    println!(
        "inserted through the sink's path in {insert_seconds:.1} s ({:.0} rows/s, {batches} batches)",
        rows_total as f64 / insert_seconds
    );
    // The views also ran by themselves while the rows went in; this pass recomputes every
    // minute once more, the work they do for each bucket written (two or three times each).
    let refreshing = Instant::now();
    refresh_rollups_now(&server, &settings).await?;
    let refresh_seconds = refreshing.elapsed().as_secs_f64();
    println!(
        "every view recomputed every minute once in {refresh_seconds:.1} s ({:.0} records/s)",
        rows_total as f64 / refresh_seconds
    );
    execute(&server, KUBENETMON_TABLE).await?;
    execute(&server, FILL_KUBENETMON).await?;
    let tables = text(
        &server,
        &format!("SELECT name FROM system.tables WHERE database = '{DATABASE}' AND engine LIKE '%MergeTree' ORDER BY name"),
    )
    .await?;
    for table in tables.lines() {
        execute(&server, &format!("OPTIMIZE TABLE {{db}}.{table} FINAL")).await?;
    }
    let connection_minutes: u64 = text(
        &server,
        "SELECT count() FROM (SELECT DISTINCT local_ip, local_port, remote_ip, remote_port, \
         direction, toStartOfMinute(interval_start) FROM {db}.flows FINAL)",
    )
    .await?
    .trim()
    .parse()?;
    let parts = text(
        &server,
        &format!(
            "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) \
             FROM system.parts WHERE database = '{DATABASE}' AND active GROUP BY table ORDER BY table"
        ),
    )
    .await?;
    let mut sizes = BTreeMap::new();
    println!(
        "\nbytes on disk after merges; {connection_minutes} connection-minutes ({rows_total} records)"
    );
    println!(
        "| table | rows | bytes on disk | per record | per connection-minute | vs kubenetmon-shaped |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for line in parts.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (table, rows, bytes): (&str, u64, u64) = (f[0], f[1].parse()?, f[2].parse()?);
        sizes.insert(table.to_string(), (rows, bytes));
    }
    let reference = sizes.get("kubenetmon_shaped").map_or(1, |(_, b)| *b).max(1) as f64;
    for (table, (rows, bytes)) in &sizes {
        println!(
            "| {table} | {rows} | {bytes} | {:.2} B | {:.2} B | {:.2}x |",
            *bytes as f64 / rows_total as f64,
            *bytes as f64 / connection_minutes as f64,
            *bytes as f64 / reference
        );
    }
    for table in ["flows", "connection_minutes", "kubenetmon_shaped"] {
        let columns = text(
            &server,
            &format!(
                "SELECT name, data_compressed_bytes FROM system.columns \
                 WHERE database = '{DATABASE}' AND table = '{table}' AND data_compressed_bytes > 0 \
                 ORDER BY data_compressed_bytes DESC"
            ),
        )
        .await?;
        let per_column: Vec<String> = columns
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(name, bytes)| {
                let bytes: f64 = bytes.parse().unwrap_or(0.0);
                format!("{name} {:.2}", bytes / connection_minutes as f64)
            })
            .collect();
        println!(
            "{table}, B per connection-minute by column: {}",
            per_column.join(", ")
        );
    }
    let days = intervals as f64 * INTERVAL_MS as f64 / 86_400_000.0;
    let flows = sizes.get("flows").map_or(0, |(_, b)| *b) as f64;
    println!(
        "\nflows at this rate: {:.2} GiB per day of this traffic; kubenetmon-shaped {:.3} GiB",
        flows / days / GIB,
        reference / days / GIB
    );
    println!(
        "\nquery time, median of 5 (ms): question | flows | connection_minutes | kubenetmon-shaped"
    );
    for (what, ours, theirs) in QUESTIONS {
        let records = timed(&server, &ours.replace("{table}", "flows")).await?;
        let detail = timed(&server, &ours.replace("{table}", "connection_minutes")).await?;
        let reference = timed(&server, theirs).await?;
        println!("  {what} | {records:.1} | {detail:.1} | {reference:.1}");
    }
    // The money kept as prices gives the records' costs back.
    let costs = text(
        &server,
        "SELECT (SELECT sum(cost_usd) FROM {db}.flows FINAL), \
         (SELECT sum(cost_usd) FROM {db}.connection_minutes FINAL)",
    )
    .await?;
    println!("\ncost_usd summed over flows and over connection_minutes: {costs}");
    Ok(())
}

/// Median wall time of 5 runs of `sql`, in ms.
async fn timed(server: &clickhouse::Client, sql: &str) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        execute(server, sql).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(times))
}

async fn execute(server: &clickhouse::Client, sql: &str) -> anyhow::Result<()> {
    server
        .query(&sql.replace("{db}", DATABASE))
        .execute()
        .await?;
    Ok(())
}

async fn text(server: &clickhouse::Client, sql: &str) -> anyhow::Result<String> {
    Ok(netmeter_tests::clickhouse::query_text(
        server,
        &sql.replace("{db}", DATABASE),
        "TabSeparated",
    )
    .await)
}

// ---------------------------------------------------------------------------------------------
// The traffic

/// A deterministic generator (splitmix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const NODES: usize = 100;
const PODS: usize = 3_000;
const WORKLOADS: usize = 600;
const NAMESPACES: usize = 20;
const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];

/// One pod: its names and place, all derived from its number.
struct Pod {
    name: String,
    workload: String,
    namespace: String,
    node: String,
    zone: &'static str,
    ip: IpAddr,
}

fn pod(n: usize) -> Pod {
    let workload = n % WORKLOADS;
    let node = n % NODES;
    Pod {
        name: format!(
            "w{workload}-{:08x}-{:05x}",
            mix(workload as u64) as u32,
            mix(n as u64) as u32 & 0xfffff
        ),
        workload: format!("w{workload}"),
        namespace: format!("ns{}", workload % NAMESPACES),
        node: format!("node-{node}"),
        zone: ZONES[node % ZONES.len()],
        ip: Ipv4Addr::new(10, (n >> 16) as u8 + 1, (n >> 8) as u8, n as u8).into(),
    }
}

/// What each connection is: its two ends and how much it moves per interval.
struct Connections {
    pods: Vec<Pod>,
}

impl Connections {
    fn new() -> Connections {
        Connections {
            pods: (0..PODS).map(pod).collect(),
        }
    }

    /// The record of connection `c`, `direction` (0 out, 1 in), in `interval`.
    fn row(&self, c: usize, direction: usize, interval: usize, at_ms: u64) -> FlowRow {
        let seed = mix(c as u64 ^ 0x5eed);
        let local = &self.pods[seed as usize % PODS];
        let kind = (seed >> 32) % 100;
        let remote_pod = &self.pods[(seed >> 20) as usize % PODS];
        let (class, remote_ip, remote_port, remote): (&str, IpAddr, u16, Option<&Pod>) = match kind
        {
            0..60 => {
                let class = if remote_pod.zone == local.zone {
                    "INTRA_ZONE"
                } else {
                    "INTER_ZONE"
                };
                (class, remote_pod.ip, 8080, Some(remote_pod))
            }
            60..80 => (
                "INTRA_REGION",
                Ipv4Addr::new(52, 218, (seed >> 8) as u8, (seed >> 16) as u8).into(),
                443,
                None,
            ),
            80..95 => (
                "INTERNET",
                Ipv4Addr::new(
                    (seed >> 40) as u8 % 200 + 20,
                    (seed >> 48) as u8,
                    (seed >> 56) as u8,
                    seed as u8,
                )
                .into(),
                443,
                None,
            ),
            _ => (
                "VPC",
                Ipv4Addr::new(172, 31, (seed >> 8) as u8, seed as u8).into(),
                5432,
                None,
            ),
        };
        let noise = mix(seed ^ (interval as u64) << 1 ^ direction as u64);
        let bytes = 200 + noise % 200_000;
        let packets = 1 + bytes / 1400;
        let price = match class {
            "INTER_ZONE" => 0.01,
            "INTERNET" if direction == 0 => 0.09,
            _ => 0.0,
        };
        let id = mix(seed ^ (interval as u64) << 20 ^ direction as u64);
        let text = |s: &str| s.to_string();
        FlowRow {
            record_id: uuid::Uuid::from_u64_pair(id, mix(id)),
            generation: 0,
            interval_start_unix_ms: at_ms,
            interval_seconds: (INTERVAL_MS / 1000) as u32,
            cluster: text("bench"),
            direction: text(if direction == 0 { "out" } else { "in" }),
            protocol: text("tcp"),
            class: text(class),
            path: String::new(),
            local_cloud: text("aws"),
            local_region: text("eu-west-1"),
            local_zone: text(local.zone),
            local_node: local.node.clone(),
            local_namespace: local.namespace.clone(),
            local_pod: local.name.clone(),
            local_workload_kind: text("Deployment"),
            local_workload_name: local.workload.clone(),
            local_app: local.workload.clone(),
            local_ip: to_v6(local.ip),
            local_port: 32_768 + (seed % 28_000) as u16,
            local_host_network: false,
            local_initiated: true,
            local_instance_type: text("m6i.large"),
            remote_cloud: text(if remote.is_some() || class == "INTRA_REGION" {
                "aws"
            } else {
                ""
            }),
            remote_region: text(if remote.is_some() || class == "INTRA_REGION" {
                "eu-west-1"
            } else {
                ""
            }),
            remote_zone: remote.map_or(String::new(), |p| text(p.zone)),
            remote_node: remote.map_or(String::new(), |p| p.node.clone()),
            remote_namespace: remote.map_or(String::new(), |p| p.namespace.clone()),
            remote_pod: remote.map_or(String::new(), |p| p.name.clone()),
            remote_workload_kind: remote.map_or(String::new(), |_| text("Deployment")),
            remote_workload_name: remote.map_or(String::new(), |p| p.workload.clone()),
            remote_app: remote.map_or(String::new(), |p| p.workload.clone()),
            remote_ip: to_v6(remote_ip),
            remote_port,
            remote_host_network: false,
            remote_service: text(if class == "INTRA_REGION" { "S3" } else { "" }),
            remote_network: String::new(),
            remote_country: text(if class == "INTERNET" { "US" } else { "" }),
            remote_asn: if class == "INTERNET" { 16509 } else { 0 },
            remote_as_name: text(if class == "INTERNET" {
                "Amazon.com, Inc."
            } else {
                ""
            }),
            bytes,
            packets,
            cost_usd: bytes as f64 / GIB * price,
            processing_cost_usd: 0.0,
        }
    }
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
