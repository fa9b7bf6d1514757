//! Sink benchmark: rows per second into ClickHouse through the sink's insert path, next to the
//! same rows inserted as pre-encoded `FORMAT Native` over HTTP into the same table of the same
//! server in the same run (what `clickhouse-client` sends). Goal: ours / native >= 0.8.
//!
//! Run it on demand (never in CI); it starts the real broker and ClickHouse, so as root:
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/netmeter/target
//! cargo bench -p netmeter-sink --bench insert
//! NETMETER_BENCH_PARTS=insert cargo bench -p netmeter-sink --bench insert   # no Kafka part
//! ```
//!
//! Knobs: `NETMETER_BENCH_ROWS` (default 1,000,000), `NETMETER_BENCH_REPS` (default 5),
//! `NETMETER_BENCH_PARTS` (`encode,insert,e2e`), `NETMETER_BENCH_VARIANTS` (names from the list
//! below; default all), `NETMETER_BENCH_E2E_ROWS` (part 2, default 200,000),
//! `NETMETER_STACK_BIN` (the ClickHouse launcher). About 4 minutes with the defaults on 2 cores.
//!
//! The data, built in code from a fixed seed: a cluster in AWS eu-west-1 with 100 nodes in 3
//! zones and 3,000 pods of 600 workloads in 20 namespaces (one in ten dual-stack, a few on the
//! host network); rows as the attributor writes them: ~60% pod to pod (same node, same zone,
//! other zone), ~16% cloud (AWS in and out of region, GCP), ~16% internet, ~8% private networks
//! outside the cluster, both directions, IPv4 (stored mapped) and IPv6, unique record ids, one
//! hour of 10 s intervals in arrival order (time-ordered, nodes interleaved), one UTC day.
//!
//! Part 0 (`encode`): `NativeEncoder::encode` alone, CPU per row on one thread (no server).
//!
//! Part 1 (`insert`): [`CHUNK_ROWS`]-row inserts (the sink's default `--batch-rows`) into
//! `netmeter.flows` as `migrate` creates it (ReplacingMergeTree, skip indexes, the
//! insert-triggered rollup change marks), each with its own `insert_deduplication_token` as
//! the sink sets one; the table is truncated before every run. Variants, interleaved round by
//! round (order rotated) so machine noise hits all:
//! - `ours`: what the sink does, with the sink's own client (`ClickHouseArgs::client`, LZ4):
//!   each batch encoded by `NativeEncoder::encode` and written by `pipeline::insert` in a task of
//!   its own while the next batch is encoded, one insert in flight, in order (`Sink::run`);
//!   the figure of the goal;
//! - `native-lz4` / `native-plain`: the reference. The same rows in the same chunks as `INSERT
//!   INTO netmeter.flows (columns) FORMAT Native`, the bodies prepared before the clock starts:
//!   ClickHouse itself encodes each chunk (the rows go into a Memory table through the crate's
//!   row format and come back with `FORMAT Native`; their order is checked), and for `-lz4` the
//!   body is cut into 256 KiB frames and compressed beforehand, as the crate frames it. Sent
//!   with the same HTTP client (`insert_formatted_with`). The faster of the two is the ratio's
//!   reference;
//! - diagnostics: `ours-sequential` (encode, insert, encode, ...: what the overlap brings) and
//!   `crate-rowbinary` (the `clickhouse` crate's typed insert, `RowBinaryWithNamesAndTypes`:
//!   the sink's insert before it wrote `Native`, which the server parses row by row).
//!
//! Every run is checked: `count()` and a hash over every column equal those of the first run.
//! CPU is this process's (`CLOCK_PROCESS_CPUTIME_ID`: the client's serialization, compression
//! and HTTP) and ClickHouse's (`/proc`), next to wall time; "others" is what the rest of the
//! machine used meanwhile (this bench shares 2 cores with whoever else runs). ClickHouse is
//! restarted once with `system.query_log` and `system.processors_profile_log` enabled, so the
//! report shows where the server spends each variant's insert (parsing vs. writing parts).
//! The refreshable rollup views are stopped (`SYSTEM STOP VIEWS`) so their once-a-minute
//! recomputation does not land in one variant's run; the insert-triggered view stays.
//!
//! Part 2 (`e2e`): the release sink binary (built by `cargo bench` beside this bench, default
//! flags: 50,000-row batches, 5 s age) started with the rows waiting on the flows topic as the
//! attributor writes them (protobuf, up to 900 kB per message); timed from readiness, batch by
//! batch, until `count()` reaches the number of rows, next to a plain consumer reading the same
//! messages. Once, and with fewer rows than part 1: tansu (SQLite) takes ~13 s to accept
//! 200,000 records and serves ~60k rows/s, so this part measures the broker as much as the sink.

use netmeter_tests::bench::{
    NAMESPACES, WORKLOADS, bench_runtime, env_number, env_or, machine_busy, median, process_cpu,
    process_cpu_self, rate,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use clickhouse::insert_formatted::CompressedData;
use clickhouse::{Client, Compression, Row};
use netmeter_common::consume::Detached;
use netmeter_proto::{EndpointView, FlowView, Schema};
use netmeter_sink::native::{self, NativeEncoder};
use netmeter_sink::pipeline;
use netmeter_sink::row::FlowRow;
use netmeter_sink::schema::{SchemaSettings, migrate};
use netmeter_tests::Stack;
use netmeter_tests::records::{TestProducer, now_ms};
use netmeter_tests::service::RunningService;
use netmeter_tests::stack::PARTITIONS;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use uuid::Uuid;

/// Built by `cargo bench` with the bench profile (release) next to this bench.
const SINK: &str = env!("CARGO_BIN_EXE_netmeter-sink");
const DATABASE: &str = "netmeter";
const TABLE: &str = "flows";
/// The sink's default `--batch-rows`.
const CHUNK_ROWS: usize = 50_000;
/// The attributor's default `--max-message-bytes`.
const MAX_MESSAGE_BYTES: usize = 900_000;
const GOAL_RATIO: f64 = 0.8;
const INTERVAL_MS: u64 = 10_000;
const HOUR_MS: u64 = 3_600_000;
const E2E_TIMEOUT: Duration = Duration::from_secs(180);
/// Where part 1 lets ClickHouse encode one chunk.
const SCRATCH: &str = "bench_chunk";

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let n = env_number("NETMETER_BENCH_ROWS", 1_000_000)?;
    let reps = env_number("NETMETER_BENCH_REPS", 5)?;
    let parts = env_or("NETMETER_BENCH_PARTS", "encode,insert,e2e");
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    for part in &parts {
        ensure!(
            ["encode", "insert", "e2e"].contains(part),
            "NETMETER_BENCH_PARTS: unknown part {part:?}; expected some of encode,insert,e2e"
        );
    }
    let variants = match std::env::var("NETMETER_BENCH_VARIANTS") {
        Ok(list) => list
            .split(',')
            .map(|name| Variant::parse(name.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?,
        Err(_) => Variant::ALL.to_vec(),
    };

    let generated = Instant::now();
    let rows = generate(n);
    println!(
        "setup: {n} rows ({}) generated in {:.1} s",
        describe(&rows),
        generated.elapsed().as_secs_f64()
    );

    if parts.contains(&"encode") {
        bench_encode(&rows, reps);
    }
    if parts == ["encode"] {
        return Ok(());
    }

    let runtime = bench_runtime(Path::new(SINK))?;
    // Children die with the thread that started them: everything starts on this thread.
    let stack_started = Instant::now();
    let mut stack = runtime.block_on(Stack::start())?;
    enable_query_logs(&mut stack)?;
    println!(
        "stack (tansu broker + ClickHouse 26.7) up in {:.1} s; ClickHouse at {} (with query_log and processors_profile_log)",
        stack_started.elapsed().as_secs_f64(),
        stack.clickhouse_url()
    );
    let server = stack.clickhouse_client();
    let report = runtime.block_on(migrate(&server, &SchemaSettings::new(DATABASE)))?;
    println!("schema: {report}");
    if let Err(err) = runtime.block_on(server.query("SYSTEM STOP VIEWS").execute()) {
        println!("NOTE: could not stop the refreshable views ({err}); runs may be noisier");
    }

    let mut insert_report = None;
    if parts.contains(&"insert") {
        insert_report = Some(runtime.block_on(bench_insert(&stack, &rows, &variants, reps))?);
    }
    let mut e2e_report = None;
    if parts.contains(&"e2e") {
        let e2e_rows = env_number("NETMETER_BENCH_E2E_ROWS", 200_000)?.min(rows.len());
        e2e_report = Some(bench_e2e(&runtime, &stack, &rows[..e2e_rows])?);
    }
    if let Some(r) = &insert_report {
        r.print();
    }
    if let Some(e) = &e2e_report {
        e.print(insert_report.as_ref());
    }
    stack.stop();
    println!(
        "\ntotal bench time {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The rows

/// A deterministic generator (splitmix64), so every run sees the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// splitmix64's finalizer: a bijection, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const CLUSTER: &str = "bench";
const REGION: &str = "eu-west-1";
const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
const NODES: usize = 100;
/// Node `n` is of instance type `INSTANCE_TYPES[n % 4]`.
const INSTANCE_TYPES: [&str; 4] = ["m6i.large", "m6i.xlarge", "r6i.2xlarge", "c6i.4xlarge"];
const PODS: usize = 3_000;

const AWS_IN_REGION: [&str; 3] = ["S3", "DYNAMODB", "EC2"];
const AWS_OTHER_REGION: [&str; 3] = ["S3", "EC2", "CLOUDFRONT"];
/// `remote_network` names a rules file gives private ranges outside the cluster.
const NETWORKS: [&str; 3] = ["nat-gateway", "peered-vpc", "on-prem"];
const SERVER_PORTS: [u16; 8] = [443, 80, 8080, 5432, 6379, 9092, 3306, 9000];

struct Pod {
    namespace: &'static str,
    kind: &'static str,
    workload: String,
    name: String,
    node: usize,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    host_network: bool,
}

/// A remote endpoint outside the cluster, with the class and price (USD per GiB) it implies.
struct External {
    cloud: &'static str,
    region: &'static str,
    service: &'static str,
    network: &'static str,
    class: &'static str,
    usd_per_gib: f64,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

fn pods(rng: &mut Rng) -> Vec<Pod> {
    (0..PODS)
        .map(|i| {
            let node = i % NODES;
            let slot = i / NODES;
            let namespace = *rng.pick(&NAMESPACES);
            let workload = format!("{}-{}", rng.pick(&WORKLOADS), i % 30);
            let host_network = rng.chance(3);
            let kind = if host_network {
                "DaemonSet"
            } else {
                *rng.pick(&["Deployment", "Deployment", "Deployment", "StatefulSet"])
            };
            let ipv4 = if host_network {
                Ipv4Addr::new(10, 0, 0, 10 + node as u8)
            } else {
                Ipv4Addr::new(10, 1, node as u8, 2 + slot as u8)
            };
            let ipv6 = (!host_network && rng.chance(10))
                .then(|| Ipv6Addr::new(0xfd00, 0x10, 1, node as u16, 0, 0, 0, 2 + slot as u16));
            Pod {
                name: format!(
                    "{workload}-{:08x}-{:05x}",
                    rng.next() as u32,
                    rng.below(1 << 20)
                ),
                namespace,
                kind,
                workload,
                node,
                ipv4,
                ipv6,
                host_network,
            }
        })
        .collect()
}

fn external(rng: &mut Rng) -> External {
    let v6 = Ipv6Addr::from(
        (0x2a05_d07a_u128 << 96) | (u128::from(rng.next()) << 32) | u128::from(rng.next() as u32),
    );
    let ipv4 = Ipv4Addr::from((52u32 << 24) | (rng.next() as u32 & 0x00ff_ffff));
    let mut rng2 = Rng(rng.next());
    match rng2.below(40) {
        0..=9 => External {
            cloud: "aws",
            region: REGION,
            service: rng2.pick_str(&AWS_IN_REGION),
            network: "",
            class: "INTRA_REGION",
            usd_per_gib: 0.0,
            ipv4,
            ipv6: v6,
        },
        10..=13 => External {
            cloud: "aws",
            region: "us-east-1",
            service: rng2.pick_str(&AWS_OTHER_REGION),
            network: "",
            class: "INTER_REGION",
            usd_per_gib: 0.02,
            ipv4,
            ipv6: v6,
        },
        14..=15 => External {
            cloud: "gcp",
            region: "europe-west1",
            service: "",
            network: "",
            class: "INTER_CLOUD",
            usd_per_gib: 0.09,
            ipv4: Ipv4Addr::from((34u32 << 24) | (rng2.next() as u32 & 0x00ff_ffff)),
            ipv6: v6,
        },
        16..=23 => External {
            cloud: "",
            region: "",
            service: "",
            network: rng2.pick_str(&NETWORKS),
            class: "VPC",
            usd_per_gib: 0.045,
            ipv4: Ipv4Addr::new(10, 60, rng2.below(256) as u8, rng2.below(256) as u8),
            ipv6: Ipv6Addr::new(0xfd00, 0x60, 0, 0, 0, 0, 0, rng2.below(65536) as u16),
        },
        _ => External {
            cloud: "",
            region: "",
            service: "",
            network: "",
            class: "INTERNET",
            usd_per_gib: 0.09,
            ipv4: Ipv4Addr::from(rng2.next() as u32 | 0x0100_0000),
            ipv6: Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(rng2.next()) | (1 << 64)),
        },
    }
}

/// `n` rows over one recent hour that lies within one UTC day (one partition of `flows`).
fn generate(n: usize) -> Vec<FlowRow> {
    let mut rng = Rng(0x5eed_0002);
    let pods = pods(&mut rng);
    let dual: Vec<usize> = (0..pods.len())
        .filter(|&i| pods[i].ipv6.is_some())
        .collect();
    let by_node: Vec<Vec<usize>> = (0..NODES)
        .map(|node| (0..pods.len()).filter(|&i| pods[i].node == node).collect())
        .collect();
    let externals: Vec<External> = (0..5_000).map(|_| external(&mut rng)).collect();
    let mut hour = (now_ms() - 2 * HOUR_MS) / HOUR_MS * HOUR_MS;
    if (hour / HOUR_MS) % 24 == 23 {
        hour -= HOUR_MS;
    }
    let intervals = (HOUR_MS / INTERVAL_MS) as usize;
    (0..n)
        .map(|i| {
            let local = &pods[rng.below(PODS as u64) as usize];
            let v6 = local.ipv6.is_some() && rng.chance(50);
            let local_ip = match (v6, local.ipv6) {
                (true, Some(ip)) => ip,
                _ => local.ipv4.to_ipv6_mapped(),
            };
            let client_side = rng.chance(50);
            let ephemeral = 32_768 + rng.below(28_000) as u16;
            let server_port = *rng.pick(&SERVER_PORTS);
            let (local_port, remote_port) = if client_side {
                (ephemeral, server_port)
            } else {
                (server_port, ephemeral)
            };
            let bytes = 10f64.powf(2.0 + 6.0 * (rng.below(1_000_000) as f64 / 1e6)) as u64;
            let direction = if rng.chance(50) { "out" } else { "in" };
            let zone = ZONES[local.node % ZONES.len()];
            let mut row = FlowRow {
                record_id: Uuid::from_u64_pair(mix(i as u64 ^ 0x6e65_746d), rng.next()),
                generation: 0,
                interval_start_unix_ms: hour + (i * intervals / n.max(1)) as u64 * INTERVAL_MS,
                interval_seconds: (INTERVAL_MS / 1000) as u32,
                cluster: CLUSTER.into(),
                direction: direction.into(),
                protocol: if rng.chance(90) { "tcp" } else { "udp" }.into(),
                class: String::new(),
                path: String::new(),
                local_cloud: "aws".into(),
                local_region: REGION.into(),
                local_zone: zone.into(),
                local_node: format!("node-{:03}", local.node),
                local_namespace: local.namespace.into(),
                local_pod: if local.host_network {
                    String::new()
                } else {
                    local.name.clone()
                },
                local_workload_kind: local.kind.into(),
                local_workload_name: local.workload.clone(),
                local_app: local.workload.clone(),
                local_ip,
                local_port,
                local_host_network: local.host_network,
                local_initiated: client_side,
                local_instance_type: INSTANCE_TYPES[local.node % INSTANCE_TYPES.len()].into(),
                remote_cloud: String::new(),
                remote_region: String::new(),
                remote_zone: String::new(),
                remote_node: String::new(),
                remote_namespace: String::new(),
                remote_pod: String::new(),
                remote_workload_kind: String::new(),
                remote_workload_name: String::new(),
                remote_app: String::new(),
                remote_ip: Ipv6Addr::UNSPECIFIED,
                remote_port,
                remote_host_network: false,
                remote_service: String::new(),
                remote_network: String::new(),
                remote_country: String::new(),
                remote_asn: 0,
                remote_as_name: String::new(),
                bytes,
                packets: bytes / 1_400 + 1,
                cost_usd: 0.0,
                processing_cost_usd: 0.0,
            };
            let usd_per_gib = if rng.chance(60) {
                // Pod to pod: same node, same zone or another zone.
                let remote = match rng.below(6) {
                    _ if v6 => &pods[*rng.pick(&dual)],
                    0 => &pods[*rng.pick(&by_node[local.node])],
                    1..=3 => {
                        let node = (local.node + 3 * (1 + rng.below(32) as usize)) % NODES;
                        &pods[*rng.pick(&by_node[node])]
                    }
                    _ => &pods[rng.below(PODS as u64) as usize],
                };
                let remote_zone = ZONES[remote.node % ZONES.len()];
                let (class, price) = if remote.node == local.node {
                    ("INTRA_NODE", 0.0)
                } else if remote_zone == zone {
                    ("INTRA_ZONE", 0.0)
                } else {
                    ("INTER_ZONE", 0.01)
                };
                row.class = class.into();
                row.remote_cloud = "aws".into();
                row.remote_region = REGION.into();
                row.remote_zone = remote_zone.into();
                row.remote_node = format!("node-{:03}", remote.node);
                row.remote_namespace = remote.namespace.into();
                row.remote_pod = if remote.host_network {
                    String::new()
                } else {
                    remote.name.clone()
                };
                row.remote_workload_kind = remote.kind.into();
                row.remote_workload_name = remote.workload.clone();
                row.remote_app = remote.workload.clone();
                row.remote_host_network = remote.host_network;
                row.remote_ip = match (v6, remote.ipv6) {
                    (true, Some(ip)) => ip,
                    _ => remote.ipv4.to_ipv6_mapped(),
                };
                price
            } else {
                let remote = rng.pick(&externals);
                row.class = remote.class.into();
                row.remote_cloud = remote.cloud.into();
                row.remote_region = remote.region.into();
                row.remote_service = remote.service.into();
                row.remote_network = remote.network.into();
                row.remote_ip = if v6 {
                    remote.ipv6
                } else {
                    remote.ipv4.to_ipv6_mapped()
                };
                // Internet ingress is free.
                if remote.class == "INTERNET" && direction == "in" {
                    0.0
                } else {
                    remote.usd_per_gib
                }
            };
            row.cost_usd = bytes as f64 / (1u64 << 30) as f64 * usd_per_gib;
            row
        })
        .collect()
}

fn describe(rows: &[FlowRow]) -> String {
    let share = |f: &dyn Fn(&FlowRow) -> bool| {
        100.0 * rows.iter().filter(|r| f(r)).count() as f64 / rows.len().max(1) as f64
    };
    let mut classes: Vec<(&str, f64)> = [
        "INTRA_NODE",
        "INTRA_ZONE",
        "INTER_ZONE",
        "INTRA_REGION",
        "INTER_REGION",
        "INTER_CLOUD",
        "VPC",
        "INTERNET",
    ]
    .iter()
    .map(|c| (*c, share(&|r| r.class == *c)))
    .collect();
    classes.retain(|(_, s)| *s > 0.0);
    format!(
        "{}; IPv6 {:.1}%, host network {:.1}%",
        classes
            .iter()
            .map(|(c, s)| format!("{c} {s:.1}%"))
            .collect::<Vec<_>>()
            .join(", "),
        share(&|r| r.local_ip.to_ipv4_mapped().is_none()),
        share(&|r| r.local_host_network),
    )
}

// ---------------------------------------------------------------------------------------------
// Part 0: the client's cost

/// CPU per row of `NativeEncoder::encode` (columns, dictionaries, LZ4) on one thread: what the
/// sink spends per row on top of decoding, and what competes with ClickHouse for the cores
/// in part 1.
fn bench_encode(rows: &[FlowRow], reps: usize) {
    let mut samples = Vec::new();
    let mut bytes = 0;
    let mut encoder = NativeEncoder::default();
    for _ in 0..reps {
        let cpu = process_cpu_self();
        bytes = 0;
        for chunk in rows.chunks(CHUNK_ROWS) {
            let block = std::hint::black_box(encoder.encode(chunk));
            bytes += block.frames.len();
        }
        samples.push(process_cpu_self() - cpu);
    }
    let cpu = median(samples);
    println!(
        "part 0: NativeEncoder::encode of {} rows in {CHUNK_ROWS}-row blocks ({bytes} LZ4 frames), one thread: {:.2} us/row CPU, {} rows per CPU-second (median of {reps})",
        rows.len(),
        cpu * 1e6 / rows.len() as f64,
        rate(rows.len(), cpu)
    );
}

// ---------------------------------------------------------------------------------------------
// Part 1: insert path vs pre-encoded Native

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Ours,
    NativeLz4,
    NativePlain,
    OursSequential,
    CrateRowBinary,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::Ours,
        Variant::NativeLz4,
        Variant::NativePlain,
        Variant::OursSequential,
        Variant::CrateRowBinary,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Ours => "ours",
            Variant::NativeLz4 => "native-lz4",
            Variant::NativePlain => "native-plain",
            Variant::OursSequential => "ours-sequential",
            Variant::CrateRowBinary => "crate-rowbinary",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .with_context(|| {
                format!(
                    "NETMETER_BENCH_VARIANTS: unknown variant {name:?}; expected some of {}",
                    Variant::ALL.map(Variant::name).join(",")
                )
            })
    }

    fn what(self) -> &'static str {
        match self {
            Variant::Ours => "ours: Native block, LZ4, next encoded ahead",
            Variant::NativeLz4 => "ref: pre-encoded Native, LZ4 frames",
            Variant::NativePlain => "ref: pre-encoded Native, uncompressed",
            Variant::OursSequential => "diag: ours, encode and insert in turn",
            Variant::CrateRowBinary => "diag: the crate's RowBinaryWithNamesAndTypes",
        }
    }

    fn is_reference(self) -> bool {
        matches!(self, Variant::NativeLz4 | Variant::NativePlain)
    }
}

/// A body ready to send: uncompressed frames, or frames compressed beforehand.
enum Frames {
    Plain(Vec<Vec<u8>>),
    Lz4(Vec<CompressedData>),
}

impl Frames {
    /// Cut as the sink cuts its own blocks (`native::FRAME_BYTES`), compressed the same way.
    fn new(body: &[u8], lz4: bool) -> Frames {
        if lz4 {
            Frames::Lz4(native::compressed_frames(body))
        } else {
            Frames::Plain(
                body.chunks(native::FRAME_BYTES)
                    .map(<[u8]>::to_vec)
                    .collect(),
            )
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    /// This process.
    cpu: f64,
    clickhouse_cpu: f64,
    /// Everything else on the machine, in cores.
    others: f64,
}

struct InsertReport {
    /// (variant, server processor, milliseconds per insert).
    breakdown: Vec<(String, String, f64)>,
    rows: usize,
    variants: Vec<(Variant, Vec<Sample>)>,
    chunks: usize,
    native_bytes: usize,
}

/// The sink's own client (from its flags, as its `run` builds it) and one without compression.
struct Clients {
    sink: Client,
    plain: Client,
}

async fn bench_insert(
    stack: &Stack,
    rows: &[FlowRow],
    variants: &[Variant],
    reps: usize,
) -> anyhow::Result<InsertReport> {
    let args = netmeter_sink::Args::try_parse_from([
        "netmeter-sink",
        "--clickhouse-url",
        &stack.clickhouse_url(),
    ])?;
    let sink = args.clickhouse.client().with_database(DATABASE);
    let clients = Clients {
        plain: sink.clone().with_compression(Compression::None),
        sink,
    };
    let chunks: Vec<&[FlowRow]> = rows.chunks(CHUNK_ROWS).collect();

    let prepared = Instant::now();
    let encoded = encode_chunks(&clients.sink, &chunks).await?;
    let native_bytes: usize = encoded.iter().map(Vec::len).sum();
    println!(
        "part 1: {} chunks of up to {CHUNK_ROWS} rows encoded by ClickHouse in {:.1} s: Native {:.0} MB uncompressed",
        chunks.len(),
        prepared.elapsed().as_secs_f64(),
        native_bytes as f64 / 1e6,
    );

    let clickhouse_pid = stack.clickhouse.pid();
    let server = stack.clickhouse_client();
    // Warm-up: table metadata cached in each client, connections open, server code paths hot.
    let few = chunks.len().min(2);
    for &variant in variants {
        truncate(&server).await?;
        let frames = prepare(variant, &encoded[..few]);
        run(variant, &clients, &chunks[..few], frames, "warm-up").await?;
    }
    let mut expected: Option<(u64, u64)> = None;
    let mut samples: Vec<(Variant, Vec<Sample>)> =
        variants.iter().map(|v| (*v, Vec::new())).collect();
    for round in 0..reps {
        let mut line = Vec::new();
        for k in 0..variants.len() {
            // Rotated so no variant always runs right after the same one.
            let index = (k + round) % variants.len();
            let variant = variants[index];
            truncate(&server).await?;
            let frames = prepare(variant, &encoded);
            let (cpu0, ch0, busy0) = (
                process_cpu_self(),
                process_cpu(clickhouse_pid),
                machine_busy(),
            );
            let started = Instant::now();
            run(variant, &clients, &chunks, frames, &format!("round{round}")).await?;
            let wall = started.elapsed().as_secs_f64();
            let cpu = process_cpu_self() - cpu0;
            let clickhouse_cpu = process_cpu(clickhouse_pid) - ch0;
            let others = ((machine_busy() - busy0) - cpu - clickhouse_cpu).max(0.0) / wall;
            let content = content_hash(&server).await?;
            ensure!(
                content.0 == rows.len() as u64,
                "{}: {} rows in the table after inserting {}",
                variant.name(),
                content.0,
                rows.len()
            );
            match expected {
                None => expected = Some(content),
                Some(e) => ensure!(
                    e == content,
                    "{}: the table's content differs from the first run's (hash {} vs {})",
                    variant.name(),
                    content.1,
                    e.1
                ),
            }
            samples[index].1.push(Sample {
                wall,
                cpu,
                clickhouse_cpu,
                others,
            });
            line.push(format!("{} {}", variant.name(), rate(rows.len(), wall)));
        }
        println!("round {}: {}", round + 1, line.join(", "));
    }
    truncate(&server).await?;
    let breakdown = server_breakdown(&server).await.unwrap_or_else(|err| {
        println!("NOTE: no server breakdown ({err})");
        Vec::new()
    });
    Ok(InsertReport {
        breakdown,
        rows: rows.len(),
        variants: samples,
        chunks: chunks.len(),
        native_bytes,
    })
}

/// Lets ClickHouse encode each chunk: the rows go into a Memory table (through the crate's
/// own row format, not our encoder) and come back as `FORMAT Native`, in insertion order,
/// which is checked.
async fn encode_chunks(client: &Client, chunks: &[&[FlowRow]]) -> anyhow::Result<Vec<Vec<u8>>> {
    let columns = <FlowRow as Row>::COLUMN_NAMES.join(", ");
    client
        .query(&format!("DROP TABLE IF EXISTS {SCRATCH}"))
        .execute()
        .await?;
    client
        .query(&format!(
            "CREATE TABLE {SCRATCH} ENGINE = Memory AS SELECT {columns} FROM {TABLE} LIMIT 0"
        ))
        .execute()
        .await?;
    let select = format!("SELECT {columns} FROM {SCRATCH} SETTINGS max_threads = 1");
    let mut encoded = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        client
            .query(&format!("TRUNCATE TABLE {SCRATCH}"))
            .execute()
            .await?;
        insert_rows(client, SCRATCH, chunk, &format!("encode-{i}")).await?;
        let ids: Vec<Uuid> = client
            .query(&format!(
                "SELECT record_id FROM {SCRATCH} SETTINGS max_threads = 1"
            ))
            .fetch_all::<UuidRow>()
            .await?
            .into_iter()
            .map(|r| r.record_id)
            .collect();
        ensure!(
            ids.len() == chunk.len()
                && ids.iter().zip(chunk.iter()).all(|(a, b)| *a == b.record_id),
            "chunk {i}: ClickHouse did not return the rows in insertion order"
        );
        let native = client
            .query(&select)
            .fetch_bytes("Native")?
            .collect()
            .await?;
        encoded.push(native.to_vec());
    }
    client
        .query(&format!("DROP TABLE {SCRATCH}"))
        .execute()
        .await?;
    Ok(encoded)
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct UuidRow {
    #[serde(with = "clickhouse::serde::uuid")]
    record_id: Uuid,
}

/// What a variant sends, per chunk, made before the clock starts: nothing for the variants
/// that encode rows themselves, the frames of ClickHouse's own encoding for the references.
fn prepare(variant: Variant, encoded: &[Vec<u8>]) -> Vec<Frames> {
    match variant {
        Variant::NativeLz4 | Variant::NativePlain => encoded
            .iter()
            .map(|body| Frames::new(body, variant == Variant::NativeLz4))
            .collect(),
        _ => Vec::new(),
    }
}

/// Inserts every chunk in order, each with its own dedup token (as the sink does): rows
/// through the sink's encoder and `pipeline::insert` (or the crate's row format), or the
/// prepared frames through the same HTTP client.
async fn run(
    variant: Variant,
    clients: &Clients,
    chunks: &[&[FlowRow]],
    frames: Vec<Frames>,
    tag: &str,
) -> anyhow::Result<()> {
    let token = |i: usize| format!("bench-{}-{tag}-{i}", variant.name());
    match variant {
        Variant::Ours => {
            // As `Sink::run`: the insert runs in a task of its own while the next batch is
            // encoded; one insert in flight, in order.
            let mut writing: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
            let mut encoder = NativeEncoder::default();
            for (i, chunk) in chunks.iter().enumerate() {
                let block = encoder.encode(chunk);
                if let Some(previous) = writing.take() {
                    previous.await??;
                }
                let (client, token) = (clients.sink.clone(), token(i));
                writing = Some(tokio::spawn(async move {
                    Ok(pipeline::insert(&client, TABLE, block, &token).await?)
                }));
            }
            if let Some(last) = writing {
                last.await??;
            }
        }
        Variant::OursSequential => {
            let mut encoder = NativeEncoder::default();
            for (i, chunk) in chunks.iter().enumerate() {
                let block = encoder.encode(chunk);
                pipeline::insert(&clients.sink, TABLE, block, &token(i)).await?;
            }
        }
        Variant::CrateRowBinary => {
            for (i, chunk) in chunks.iter().enumerate() {
                insert_rows(&clients.sink, TABLE, chunk, &token(i)).await?;
            }
        }
        Variant::NativeLz4 | Variant::NativePlain => {
            let sql = native::insert_statement(TABLE);
            ensure!(frames.len() == chunks.len(), "one body per chunk");
            for (i, body) in frames.into_iter().enumerate() {
                let client = match body {
                    Frames::Plain(_) => &clients.plain,
                    Frames::Lz4(_) => &clients.sink,
                };
                let mut insert = client
                    .insert_formatted_with(sql.clone())
                    .with_setting("insert_deduplication_token", token(i));
                match body {
                    Frames::Plain(frames) => {
                        for frame in frames {
                            insert.send(frame.into()).await?;
                        }
                    }
                    Frames::Lz4(frames) => {
                        for frame in frames {
                            insert.send_compressed(frame).await?;
                        }
                    }
                }
                insert.end().await?;
            }
        }
    }
    Ok(())
}

/// The sink's insert before it wrote `Native`: the `clickhouse` crate's typed insert (with
/// validation on, `RowBinaryWithNamesAndTypes`, LZ4), which the server parses row by row.
async fn insert_rows(
    client: &Client,
    table: &str,
    rows: &[FlowRow],
    token: &str,
) -> anyhow::Result<()> {
    let mut insert = client
        .insert::<FlowRow>(table)
        .await?
        .with_setting("insert_deduplication_token", token);
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

async fn truncate(server: &Client) -> anyhow::Result<()> {
    server
        .query(&format!("TRUNCATE TABLE {DATABASE}.{TABLE}"))
        .execute()
        .await?;
    Ok(())
}

/// `count()` and a hash over every column of every row (order-independent).
async fn content_hash(server: &Client) -> anyhow::Result<(u64, u64)> {
    let columns = <FlowRow as Row>::COLUMN_NAMES.join(", ");
    Ok(server
        .query(&format!(
            "SELECT count(), sum(cityHash64({columns})) FROM {DATABASE}.{TABLE}"
        ))
        .fetch_one::<(u64, u64)>()
        .await?)
}

// ---------------------------------------------------------------------------------------------
// Part 2: the sink binary from Kafka

struct E2eReport {
    rows: usize,
    /// A plain consumer reading the same messages, after the sink.
    read: f64,
    messages: usize,
    message_bytes: usize,
    produce: f64,
    startup: f64,
    /// (seconds from readiness, rows counted) each time the count moved.
    steps: Vec<(f64, u64)>,
    /// From readiness.
    done: f64,
    sink_cpu: f64,
    clickhouse_cpu: f64,
    broker_cpu: f64,
    inserted_metric: Option<f64>,
    /// The sink's own count and seconds of inserts (`netmeter_sink_insert_seconds`).
    inserts: (Option<f64>, Option<f64>),
}

fn bench_e2e(
    runtime: &tokio::runtime::Runtime,
    stack: &Stack,
    rows: &[FlowRow],
) -> anyhow::Result<E2eReport> {
    let n = rows.len() as u64;
    let server = stack.clickhouse_client();
    runtime.block_on(truncate(&server))?;
    let messages = flow_messages(rows);
    let message_bytes = messages.iter().map(|(_, m)| m.len()).sum();
    let message_count = messages.len();
    let topic = Schema::FlowsV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX);
    let producer = Arc::new(TestProducer::new(&stack.kafka_bootstrap())?);
    let produced = Instant::now();
    runtime.block_on(async {
        // All in flight at once, as the attributor's producer keeps them.
        let mut sends = tokio::task::JoinSet::new();
        for (key, payload) in messages {
            let (producer, topic) = (producer.clone(), topic.clone());
            sends.spawn(async move {
                producer
                    .send(&topic, &key, &payload, Some(Schema::FlowsV1.tag()))
                    .await
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent??;
        }
        anyhow::Ok(())
    })?;
    let produce = produced.elapsed().as_secs_f64();
    println!(
        "part 2: {n} records in {message_count} messages ({:.0} MB) on {topic} after {produce:.1} s; starting the sink",
        message_bytes as f64 / 1e6
    );

    let spawned = Instant::now();
    let mut sink = RunningService::start(Path::new(SINK), stack, &[])?;
    sink.wait_ready(Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", sink.process.log_tail()))?;
    let ready = Instant::now();
    let startup = ready.duration_since(spawned).as_secs_f64();
    let (pid, clickhouse_pid, broker_pid) = (
        sink.process.pid(),
        stack.clickhouse.pid(),
        stack.broker.pid(),
    );
    let (cpu0, ch0, br0) = (
        process_cpu(pid),
        process_cpu(clickhouse_pid),
        process_cpu(broker_pid),
    );
    // Every time the count moved: a batch landed.
    let mut steps: Vec<(f64, u64)> = Vec::new();
    let done = loop {
        let count = runtime.block_on(
            server
                .query(&format!("SELECT count() FROM {DATABASE}.{TABLE}"))
                .fetch_one::<u64>(),
        )?;
        let at = ready.elapsed().as_secs_f64();
        if count > steps.last().map_or(0, |s| s.1) {
            steps.push((at, count));
        }
        if count >= n {
            break at;
        }
        if let Some(status) = sink.process.exit_status() {
            bail!("the sink exited ({status}):\n{}", sink.process.log_tail());
        }
        ensure!(
            ready.elapsed() < E2E_TIMEOUT,
            "{count} of {n} rows after {E2E_TIMEOUT:?}; sink log:\n{}",
            sink.process.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let sink_cpu = process_cpu(pid) - cpu0;
    let clickhouse_cpu = process_cpu(clickhouse_pid) - ch0;
    let broker_cpu = process_cpu(broker_pid) - br0;
    // The counter moves after the offsets are committed, just after the rows are visible.
    std::thread::sleep(Duration::from_millis(500));
    let inserted_metric = sink.metric("netmeter_sink_rows_inserted_total");
    let inserts = (
        sink.metric("netmeter_sink_insert_seconds_count"),
        sink.metric("netmeter_sink_insert_seconds_sum"),
    );
    sink.process.terminate(Duration::from_secs(10));
    // As the sink itself does: destroying this librdkafka client can block against tansu.
    drop(Detached::new(producer));
    let read = read_all(&stack.kafka_bootstrap(), &topic, message_count)?;
    Ok(E2eReport {
        rows: rows.len(),
        read,
        messages: message_count,
        message_bytes,
        produce,
        startup,
        steps,
        done,
        sink_cpu,
        clickhouse_cpu,
        broker_cpu,
        inserted_metric,
        inserts,
    })
}

/// Seconds a plain consumer (default settings, a fresh group) takes to read `messages` messages
/// of `topic` from the beginning.
fn read_all(bootstrap: &str, topic: &str, messages: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("netmeter-bench-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let consumer = Detached::new(consumer);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let (mut read, mut bytes) = (0, 0);
    while read < messages {
        ensure!(
            started.elapsed() < E2E_TIMEOUT,
            "a plain consumer read {read} of {messages} messages of {topic} in {E2E_TIMEOUT:?}"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            read += 1;
            bytes += message.payload().map_or(0, <[u8]>::len);
        }
    }
    let took = started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(took)
}

/// The rows as the attributor publishes them: length-delimited protobuf records, up to
/// [`MAX_MESSAGE_BYTES`] per message, keyed by the first record's node.
fn flow_messages(rows: &[FlowRow]) -> Vec<(String, Vec<u8>)> {
    let ip = |v6: Ipv6Addr| v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut record = Vec::new();
    for row in rows {
        let id = row.record_id.to_string();
        let endpoint = |local: bool| {
            if local {
                EndpointView {
                    cloud: &row.local_cloud,
                    region: &row.local_region,
                    zone: &row.local_zone,
                    node: &row.local_node,
                    namespace: &row.local_namespace,
                    pod: &row.local_pod,
                    workload_kind: &row.local_workload_kind,
                    workload_name: &row.local_workload_name,
                    app: &row.local_app,
                    ip: ip(row.local_ip),
                    port: row.local_port.into(),
                    host_network: row.local_host_network,
                }
            } else {
                EndpointView {
                    cloud: &row.remote_cloud,
                    region: &row.remote_region,
                    zone: &row.remote_zone,
                    node: &row.remote_node,
                    namespace: &row.remote_namespace,
                    pod: &row.remote_pod,
                    workload_kind: &row.remote_workload_kind,
                    workload_name: &row.remote_workload_name,
                    app: &row.remote_app,
                    ip: ip(row.remote_ip),
                    port: row.remote_port.into(),
                    host_network: row.remote_host_network,
                }
            }
        };
        record.clear();
        FlowView {
            record_id: &id,
            generation: row.generation,
            interval_start_unix_ms: row.interval_start_unix_ms,
            interval_seconds: row.interval_seconds,
            cluster: &row.cluster,
            direction: &row.direction,
            protocol: &row.protocol,
            class: &row.class,
            path: "",
            local: endpoint(true),
            local_initiated: row.local_initiated,
            local_instance_type: &row.local_instance_type,
            remote: endpoint(false),
            remote_service: &row.remote_service,
            remote_network: &row.remote_network,
            remote_geo: Default::default(),
            bytes: row.bytes,
            packets: row.packets,
            cost_usd: row.cost_usd,
            processing_cost_usd: 0.0,
        }
        .encode_length_delimited(&mut record);
        match messages.last_mut() {
            Some((_, payload)) if payload.len() + record.len() <= MAX_MESSAGE_BYTES => {
                payload.extend_from_slice(&record);
            }
            _ => messages.push((row.local_node.clone(), record.clone())),
        }
    }
    messages
}

/// Restarts the stack's ClickHouse with `system.query_log` and `system.processors_profile_log`
/// (clickhouse-local has no system log tables unless its `config.xml`, read from the data
/// directory, asks for them), so the report can say where the server spends an insert.
fn enable_query_logs(stack: &mut Stack) -> anyhow::Result<()> {
    let config = r#"<clickhouse>
    <query_log><database>system</database><table>query_log</table><flush_interval_milliseconds>2000</flush_interval_milliseconds></query_log>
    <processors_profile_log><database>system</database><table>processors_profile_log</table><flush_interval_milliseconds>2000</flush_interval_milliseconds></processors_profile_log>
</clickhouse>
"#;
    std::fs::write(stack.dir().join("clickhouse/config.xml"), config)?;
    stack.stop_clickhouse();
    stack.start_clickhouse()
}

/// Milliseconds per insert by server processor, per variant, over the timed runs (their dedup
/// tokens say which): where ClickHouse spends an insert.
async fn server_breakdown(server: &Client) -> anyhow::Result<Vec<(String, String, f64)>> {
    server.query("SYSTEM FLUSH LOGS").execute().await?;
    Ok(server
        .query(
            "WITH inserts AS (
                 SELECT query_id, extract(Settings['insert_deduplication_token'], '^bench-(.+)-round') AS variant
                 FROM system.query_log
                 WHERE type = 'QueryFinish' AND Settings['insert_deduplication_token'] LIKE 'bench-%-round%')
             SELECT variant, name, sum(elapsed_us) / 1000 / any(inserts) AS ms
             FROM system.processors_profile_log
             INNER JOIN (
                 SELECT query_id, variant, count() OVER (PARTITION BY variant) AS inserts
                 FROM inserts) AS i USING (query_id)
             GROUP BY variant, name
             ORDER BY variant, ms DESC",
        )
        .fetch_all::<(String, String, f64)>()
        .await?)
}

// ---------------------------------------------------------------------------------------------
// Report

struct Medians {
    variant: Variant,
    wall: f64,
    cpu: f64,
    clickhouse_cpu: f64,
    others: f64,
}

impl InsertReport {
    fn medians(&self) -> Vec<Medians> {
        self.variants
            .iter()
            .map(|(variant, samples)| {
                let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
                Medians {
                    variant: *variant,
                    wall: m(&|s| s.wall),
                    cpu: m(&|s| s.cpu),
                    clickhouse_cpu: m(&|s| s.clickhouse_cpu),
                    others: m(&|s| s.others),
                }
            })
            .collect()
    }

    /// The faster native variant's median wall time.
    fn reference(&self) -> Option<(Variant, f64)> {
        self.medians()
            .into_iter()
            .filter(|m| m.variant.is_reference())
            .map(|m| (m.variant, m.wall))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn ours(&self) -> Option<f64> {
        self.medians()
            .into_iter()
            .find(|m| m.variant == Variant::Ours)
            .map(|m| m.wall)
    }

    fn print(&self) {
        let n = self.rows;
        let reps = self.variants.first().map_or(0, |(_, s)| s.len());
        println!(
            "\n-- part 1 results: {n} rows in {} inserts of up to {CHUNK_ROWS} rows, in order, into {DATABASE}.{TABLE}; Native {:.0} B/row; median of {reps} runs --",
            self.chunks,
            self.native_bytes as f64 / n as f64,
        );
        let reference = self.reference();
        println!(
            "| {:<49} | {:>6} | {:>7} | {:>6} | {:>13} | {:>17} | {:>8} |",
            "variant (same server, same rows, same chunks)",
            "wall s",
            "rows/s",
            "vs ref",
            "bench CPU s",
            "ClickHouse CPU s",
            "others",
        );
        println!(
            "| {:-<49} | {:->6} | {:->7} | {:->6} | {:->13} | {:->17} | {:->8} |",
            "", "", "", "", "", "", ""
        );
        for m in self.medians() {
            let vs = reference.map_or("-".to_string(), |(_, wall)| format!("{:.2}", wall / m.wall));
            println!(
                "| {:<49} | {:>6.2} | {:>7} | {vs:>6} | {:>5.2} {:>5.2}us | {:>7.2} {:>7.2}us | {:>4.2} c |",
                m.variant.what(),
                m.wall,
                rate(n, m.wall),
                m.cpu,
                m.cpu * 1e6 / n as f64,
                m.clickhouse_cpu,
                m.clickhouse_cpu * 1e6 / n as f64,
                m.others,
            );
        }
        let noisy: Vec<&str> = self
            .medians()
            .iter()
            .filter(|m| m.others > 0.3)
            .map(|m| m.variant.name())
            .collect();
        if !noisy.is_empty() {
            println!(
                "NOTE: something else on this machine used more than 0.3 cores during the median run of {}; compare with care or run again",
                noisy.join(", ")
            );
        }
        println!(
            "CPU columns: seconds per run and microseconds per row; \"bench\" is this process (the client side); \"others\" is what the rest of the machine used meanwhile, in cores (2 in all)"
        );
        if !self.breakdown.is_empty() {
            println!(
                "server time per {CHUNK_ROWS}-row insert by processor (system.processors_profile_log, timed runs; parsing is the input format's processor):"
            );
            for (variant, _) in &self.variants {
                let parts: Vec<String> = self
                    .breakdown
                    .iter()
                    .filter(|(v, _, ms)| v == variant.name() && *ms >= 1.0)
                    .map(|(_, name, ms)| format!("{name} {ms:.0}"))
                    .collect();
                let total: f64 = self
                    .breakdown
                    .iter()
                    .filter(|(v, _, _)| v == variant.name())
                    .map(|(_, _, ms)| ms)
                    .sum();
                println!(
                    "  {:<20} {total:>4.0} ms: {}",
                    variant.name(),
                    parts.join(", ")
                );
            }
        }
        if let (Some(ours), Some((variant, reference))) = (self.ours(), reference) {
            let ratio = reference / ours;
            println!(
                "goal: ours / native >= {GOAL_RATIO}: {} rows/s vs {} rows/s ({}) = {ratio:.2} -> {}",
                rate(n, ours),
                rate(n, reference),
                variant.name(),
                if ratio >= GOAL_RATIO { "PASS" } else { "FAIL" }
            );
        }
    }
}

impl E2eReport {
    fn print(&self, insert: Option<&InsertReport>) {
        let n = self.rows;
        println!(
            "\n-- part 2 results: the release sink binary (default flags) reads {n} records waiting in {} messages ({:.0} MB; produced in {:.1} s) from tansu and writes them to ClickHouse; once --",
            self.messages,
            self.message_bytes as f64 / 1e6,
            self.produce,
        );
        let (first_at, first_count) = self.steps.first().copied().unwrap_or((self.done, 0));
        // Full batches: from the first to the last but one step; the last batch is what was
        // left over and waited for --batch-age.
        let full = (self.steps.len() >= 3).then(|| self.steps[self.steps.len() - 2]);
        println!(
            "| {:<56} | {:>6} | {:>7} |",
            "sink, Kafka -> ClickHouse", "wall s", "rows/s"
        );
        println!("| {:-<56} | {:->6} | {:->7} |", "", "", "");
        println!(
            "| {:<56} | {:>6.2} | {:>7} |",
            "start -> ready (migrations, topics)", self.startup, "-"
        );
        println!(
            "| {:<56} | {:>6.2} | {:>7} |",
            format!("ready -> first batch in ClickHouse ({first_count} rows)"),
            first_at,
            "-"
        );
        if let Some((full_at, full_count)) = full {
            println!(
                "| {:<56} | {:>6.2} | {:>7} |",
                format!(
                    "steady: {} more full batches ({} rows)",
                    self.steps.len() - 2,
                    full_count - first_count
                ),
                full_at - first_at,
                rate((full_count - first_count) as usize, full_at - first_at)
            );
            println!(
                "| {:<56} | {:>6.2} | {:>7} |",
                format!(
                    "last, partial batch ({} rows; --batch-age 5s)",
                    n as u64 - full_count
                ),
                self.done - full_at,
                "-"
            );
        }
        println!(
            "| {:<56} | {:>6.2} | {:>7} |",
            "ready -> all rows counted",
            self.done,
            rate(n, self.done)
        );
        println!(
            "| {:<56} | {:>6.2} | {:>7} |",
            "ref: a plain consumer reads the same messages",
            self.read,
            rate(n, self.read)
        );
        println!(
            "CPU from readiness to the last row: sink {:.2} s ({:.2} us/row), ClickHouse {:.2} s, broker {:.2} s; sink's netmeter_sink_rows_inserted_total = {}",
            self.sink_cpu,
            self.sink_cpu * 1e6 / n as f64,
            self.clickhouse_cpu,
            self.broker_cpu,
            self.inserted_metric
                .map_or("unavailable".to_string(), |v| format!("{v:.0}")),
        );
        if let (Some(count), Some(seconds)) = self.inserts {
            println!(
                "the sink's own histogram: {count:.0} inserts took {seconds:.2} s in all ({:.0} ms each, {} rows/s while inserting); the other {:.2} s of the {:.2} s from readiness went to consuming, decoding, committing and waiting",
                seconds * 1e3 / count.max(1.0),
                rate(n, seconds),
                (self.done - seconds).max(0.0),
                self.done,
            );
        }
        if let Some(insert) = insert
            && let Some((variant, reference)) = insert.reference()
            && let Some((full_at, full_count)) = full
        {
            let steady = (full_count - first_count) as f64 / (full_at - first_at);
            println!(
                "end to end, steady, vs the insert reference: {} / {} rows/s ({}) = {:.2} (tansu serves ~{} rows/s to a plain consumer: this part measures the broker as much as the sink)",
                rate(steady as usize, 1.0),
                rate(insert.rows, reference),
                variant.name(),
                steady / (insert.rows as f64 / reference),
                rate(n, self.read),
            );
        }
    }
}
