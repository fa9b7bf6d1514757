//! Attributor benchmark: enrichment in process, and Kafka to Kafka with one replica, each next
//! to a reference measured on the same data in the same run.
//!
//! Run it on demand (never in CI); part 2 starts the real broker and ClickHouse, so as root:
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/netmeter/target
//! cargo bench -p netmeter-attributor --bench enrich
//! NETMETER_BENCH_PARTS=enrich cargo bench -p netmeter-attributor --bench enrich   # part 1 only
//! ```
//!
//! Knobs: `NETMETER_BENCH_PARTS` (`enrich,kafka`), `NETMETER_BENCH_BATCHES` (part 1, default
//! 100 = 500k deltas), `NETMETER_BENCH_KAFKA_BATCHES` (part 2, per round, default 6 = 30k
//! deltas), `NETMETER_BENCH_KAFKA_REPS` (default 5). A batch holds [`DELTAS_PER_BATCH`] deltas.
//! For a profiler, `NETMETER_BENCH_PROFILE=decode|noop|encode|full|usage` loops that part-1 variant
//! for 10 s and exits: `NETMETER_BENCH_PARTS=enrich NETMETER_BENCH_PROFILE=encode perf record
//! <bench binary>`.
//!
//! Part 1's enricher has every table loaded: the cloud ranges, the built-in country and
//! network table, the default price book, and a rules file with a NAT gateway per zone.
//!
//! The data, built in code from a fixed seed: a cluster in AWS eu-west-1 with 100 nodes in 3
//! zones and 10,000 pod tenures (about 10% of the pod addresses were held by 2-3 pods over
//! time, a few pods are dual-stack), the real AWS/GCP/Azure range files (the attributor's
//! built-in snapshot, which the binary of part 2 uses too), and batches as one
//! node's collector writes them: ~60% pod to pod (same node, same zone, other zone, a few via
//! the node's own address, some through a Service DNAT), ~25% to addresses inside published
//! cloud prefixes (AWS in and out of region, GCP, Azure; some IPv6), ~10% internet, ~5%
//! private addresses outside the cluster; initiated from either side, traffic both ways.
//!
//! Part 1, single thread, [`REPS`] rounds, the variants interleaved so machine noise hits all:
//! - `decode_batch` of the same batches from their protobuf bytes: the reference, work the
//!   pipeline must do per delta anyway;
//! - `Enricher::enrich` with an emit that does nothing (lookups, classification, record ids);
//!   every enrich variant first converts the wire batch at the edge (`DeltaBatch::from_wire`),
//!   as the pipeline does;
//! - `Enricher::enrich` encoding every record into a reused buffer: the goal's figure;
//! - decode + enrich + encode: the whole CPU path of one raw message, minus Kafka;
//! - enrich + encode + the usage metrics (a `Tally` per batch, added to the series), as
//!   `Attributor::attribute` does: what the workload and zone-pair counters cost.
//!
//! "Per core" is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), next to wall time.
//!
//! Part 1 also prints, untimed, the size on the wire for sizing Kafka: bytes per raw delta and
//! per flow record as protobuf and zstd-compressed at level 3 (what librdkafka uses for
//! `compression.type=zstd`, which both producers set), each message alone: a raw batch as one
//! message, the flow records cut into <= 900 kB messages as `Attributor::attribute` cuts them.
//! Batch and record framing are not counted. The data is synthetic (random counters and ids), so
//! real traffic may compress differently.
//!
//! Part 2: a real broker (tansu on SQLite, the debug build the tests install) and ClickHouse
//! (idle; [`Stack::start`] brings both). The inventory topic gets the cluster's tenures, then:
//! - cold, once, as the brief for this bench puts it: the raw batches wait on the raw topic,
//!   then the release attributor binary (built by `cargo bench` beside this bench) starts;
//!   timed from readiness (it starts consuming) until its records counter reaches the
//!   expected count, and until the flows topic's high watermarks have grown by the expected
//!   number of messages (both computed in process with the same `Attributor`, settings and
//!   inventory);
//! - warm, [`REPS`] rounds: the running attributor gets the same batches again (new sequence
//!   numbers), timed the same way from the first raw message sent. Starting a process per
//!   round would cost ~14 s each: reading 10,100 inventory records from this broker.
//!
//! References per warm round, on the same broker with the same data, while the attributor
//! idles: the same raw batches produced the same way to a scratch topic, read back by a plain
//! consumer, and the same flow messages written with the attributor's own producer (settings
//! and enqueue/confirm path) to another scratch topic. Their sum is what a pipeline that does
//! no work between reading and writing would need on this broker.
//!
//! Part 2 is broker-bound here (~10-15k flows/s, one core of broker CPU), so the default round
//! is small to keep the whole bench near 2 minutes; `NETMETER_BENCH_KAFKA_BATCHES=200` is the
//! 1M-delta round (about 2 minutes per round on this broker).

use netmeter_tests::bench::{
    NAMESPACES, WORKLOADS, bench_runtime, env_number, env_or, machine_busy, median, process_cpu,
    rate, thread_cpu,
};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use ipnet::IpNet;
use netmeter_attributor::cloud::{Cloud, CloudRanges, LoadedRanges, SharedCloudRanges};
use netmeter_attributor::config::OutputFormat;
use netmeter_attributor::delta::DeltaBatch;
use netmeter_attributor::enrich::{ClusterPlace, Enricher, Inputs};
use netmeter_attributor::inventory::{IpOwnerHistory, Owner, OwnerKind, Tenure};
use netmeter_attributor::pipeline::Attributor;
use netmeter_attributor::rules::Rules;
use netmeter_attributor::usage::{DEFAULT_MAX_WORKLOADS, Series, Tally};
use netmeter_common::consume::Detached;
use netmeter_common::publish::Outgoing;
use netmeter_proto::raw::ConntrackBatch;
use netmeter_proto::{DEFAULT_TOPIC_PREFIX, Schema};
use netmeter_tests::Stack;
use netmeter_tests::records::{TestProducer, batch, delta};
use netmeter_tests::service::{RunningService, http_get};
use netmeter_tests::stack::PARTITIONS;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// Built by `cargo bench` with the bench profile (release) next to this bench.
const ATTRIBUTOR: &str = env!("CARGO_BIN_EXE_netmeter-attributor");
const REPS: usize = 5;
const DELTAS_PER_BATCH: usize = 5_000;
const NODES: usize = 100;
const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
const REGION: &str = "eu-west-1";
const CLUSTER: &str = "bench";
const POD_TENURES: usize = 10_000;
/// The attributor's default `--ip-grace`.
const GRACE_MS: u64 = 30_000;
/// The attributor's default `--max-message-bytes`.
const MAX_MESSAGE_BYTES: usize = 900_000;
const INTERVAL_MS: u64 = 10_000;
const HOUR_MS: u64 = 3_600_000;
/// The issue's goal for enrichment, per core.
const GOAL_DELTAS_PER_CORE_SECOND: f64 = 1_000_000.0;
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);
const IDLE_SAMPLE: Duration = Duration::from_secs(2);
const SCRATCH_FLOWS: &str = "netmeter.bench-flows.v1";

fn main() -> anyhow::Result<()> {
    let parts = env_or("NETMETER_BENCH_PARTS", "enrich,kafka");
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    for part in &parts {
        ensure!(
            ["enrich", "kafka"].contains(part),
            "NETMETER_BENCH_PARTS: unknown part {part:?}; expected enrich and/or kafka"
        );
    }
    let started = Instant::now();
    let loaded = netmeter_attributor::cloud::load(None).context("loading the built-in ranges")?;
    let ranges = &loaded.table;
    // A batch's interval starts here; recent, because the attributor forgets tenures older
    // than its inventory retention (7 days) at start.
    let t0 = (netmeter_tests::records::now_ms() - HOUR_MS) / INTERVAL_MS * INTERVAL_MS;
    let cluster = Cluster::build(t0);
    let remotes = Remotes::build(ranges)?;
    println!(
        "setup: {} cloud prefixes; {} nodes in {} zones; {} pod tenures on {} IPv4 addresses ({} of them held by 2-3 pods over time) and {} IPv6 addresses; {} node tenures; remote pools: {} cloud, {} internet, {} private",
        ranges.len(),
        NODES,
        ZONES.len(),
        cluster.pod_tenures,
        cluster.ipv4_addresses,
        cluster.reused_addresses,
        cluster.ipv6_addresses,
        NODES,
        remotes.cloud_count(),
        remotes.internet.len(),
        remotes.private.len(),
    );
    let enricher = enricher();
    let mut report = Report::default();
    if parts.contains(&"enrich") {
        let batches = generate(
            &cluster,
            &remotes,
            env_number("NETMETER_BENCH_BATCHES", 100)?,
            t0,
            1,
        );
        report.enrich = Some(bench_enrich(&enricher, &cluster, ranges, &batches));
    }
    if parts.contains(&"kafka") {
        let batches = generate(
            &cluster,
            &remotes,
            env_number("NETMETER_BENCH_KAFKA_BATCHES", 6)?,
            t0,
            2,
        );
        let reps = env_number("NETMETER_BENCH_KAFKA_REPS", REPS)?;
        report.kafka = Some(bench_kafka(&cluster, loaded, batches, reps)?);
    }
    report.print();
    println!(
        "\ntotal bench time {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn enricher() -> Enricher {
    let place = ClusterPlace {
        cluster: CLUSTER.into(),
        cloud: "aws".into(),
        region: REGION.into(),
    };
    // A rules file as production clusters have one: a NAT gateway per zone, S3 and DynamoDB
    // through gateway endpoints in two of them (part 2's attributor runs without one). With
    // the built-in country and network table, every lookup of the attributor is made.
    let rules: netmeter_attributor::rules::RulesFile = serde_yaml_ng::from_str(
        "paths:
  - {name: nat-a, kind: nat_gateway, zones: [eu-west-1a], except_services: [S3, DYNAMODB]}
  - {name: nat-b, kind: nat_gateway, zones: [eu-west-1b], except_services: [S3, DYNAMODB]}
  - {name: nat-c, kind: nat_gateway, zones: [eu-west-1c]}
",
    )
    .expect("the bench's rules parse");
    Enricher::new(
        place,
        Rules::build(rules, "bench").expect("the bench's rules are valid"),
    )
}

// ---------------------------------------------------------------------------------------------
// The cluster and the traffic

/// A deterministic generator (splitmix64), so every run sees the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
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
}

struct Node {
    name: String,
    ip: IpAddr,
    zone: usize,
    /// Addresses of the pods running now.
    pods_v4: Vec<IpAddr>,
    pods_v6: Vec<IpAddr>,
}

struct Cluster {
    nodes: Vec<Node>,
    /// Every tenure, nodes first: what the inventory topic holds.
    tenures: Vec<Tenure>,
    history: IpOwnerHistory,
    pod_tenures: usize,
    ipv4_addresses: usize,
    reused_addresses: usize,
    ipv6_addresses: usize,
}

impl Cluster {
    /// Node `i` is `node-NNN` at 10.0.0.(10+i) in zone `i % 3` with pod range 10.1.i.0/24 (and
    /// fd00:10:1:i::/64). Pod addresses are handed out round-robin over the nodes; one in 20
    /// had two holders over time and one in 20 three, the earlier ones deleted hours before
    /// `t0`; about one current holder in 10 is dual-stack.
    fn build(t0: u64) -> Cluster {
        let mut rng = Rng(0x5eed_0001);
        let mut nodes: Vec<Node> = (0..NODES)
            .map(|i| Node {
                name: format!("node-{i:03}"),
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + i as u8)),
                zone: i % ZONES.len(),
                pods_v4: Vec::new(),
                pods_v6: Vec::new(),
            })
            .collect();
        let mut tenures: Vec<Tenure> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Tenure {
                ip: node.ip,
                uid: format!("node-uid-{i}"),
                start_ms: t0 - 30 * 24 * HOUR_MS,
                end_ms: None,
                owner: Arc::new(Owner {
                    node: node.name.clone(),
                    zone: ZONES[node.zone].into(),
                    region: REGION.into(),
                    cloud: "aws".into(),
                    host_network: true,
                    instance_type: "m6i.2xlarge".into(),
                    instance_id: format!("i-0{:016x}", rng.next()),
                    ..Owner::new(OwnerKind::Node, node.name.clone())
                }),
            })
            .collect();
        let (mut pod_tenures, mut ipv4, mut reused, mut ipv6) = (0, 0, 0, 0);
        let mut address = 0usize;
        while pod_tenures < POD_TENURES {
            let (node_index, slot) = (address % NODES, address / NODES);
            let holders = match rng.below(20) {
                0 => 2,
                1 => 3,
                _ => 1,
            }
            .min(POD_TENURES - pod_tenures);
            let ip = IpAddr::V4(Ipv4Addr::new(10, 1, node_index as u8, 2 + slot as u8));
            let node = &mut nodes[node_index];
            let mut current = None;
            for holder in 0..holders {
                // Holder k started (holders - k) * 3 h before t0; each ended 20 s before the
                // next one started (inside the grace period: the grace never reaches into the
                // next tenure); the last one still holds the address.
                let start_ms = t0 - (holders - holder) as u64 * 3 * HOUR_MS;
                let end_ms = (holder + 1 < holders).then_some(start_ms + 3 * HOUR_MS - 20_000);
                let owner = pod_owner(&mut rng, node, ZONES[node.zone], pod_tenures);
                tenures.push(Tenure {
                    ip,
                    uid: format!("pod-uid-{pod_tenures}"),
                    start_ms,
                    end_ms,
                    owner: owner.clone(),
                });
                pod_tenures += 1;
                current = Some((owner, start_ms, pod_tenures - 1));
            }
            node.pods_v4.push(ip);
            ipv4 += 1;
            reused += usize::from(holders > 1);
            let (owner, start_ms, index) = current.expect("at least one holder");
            // Every node has a dual-stack pod (slot 0), and about every 10th pod is one.
            if (slot == 0 || rng.chance(10)) && pod_tenures < POD_TENURES {
                let ip = IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    0x10,
                    1,
                    node_index as u16,
                    0,
                    0,
                    0,
                    2 + slot as u16,
                ));
                tenures.push(Tenure {
                    ip,
                    uid: format!("pod-uid-{index}"),
                    start_ms,
                    end_ms: None,
                    owner,
                });
                node.pods_v6.push(ip);
                pod_tenures += 1;
                ipv6 += 1;
            }
            address += 1;
        }
        let mut history = IpOwnerHistory::new(GRACE_MS);
        for tenure in &tenures {
            history.record(tenure.clone());
        }
        Cluster {
            nodes,
            tenures,
            history,
            pod_tenures,
            ipv4_addresses: ipv4,
            reused_addresses: reused,
            ipv6_addresses: ipv6,
        }
    }

    /// A fresh copy of the history (part 2 gives the attribution its own, as the service has).
    fn history_copy(&self) -> IpOwnerHistory {
        let mut history = IpOwnerHistory::new(GRACE_MS);
        for tenure in &self.tenures {
            history.record(tenure.clone());
        }
        history
    }
}

/// A pod as the Kubernetes index records it: place from its node, workload from its owners.
fn pod_owner(rng: &mut Rng, node: &Node, zone: &str, index: usize) -> Arc<Owner> {
    let workload = rng.below(600) as usize;
    let name = match workload / WORKLOADS.len() {
        0 => WORKLOADS[workload].to_string(),
        n => format!("{}-{n}", WORKLOADS[workload % WORKLOADS.len()]),
    };
    let kind = match rng.below(20) {
        0 => "DaemonSet",
        1..=3 => "StatefulSet",
        _ => "Deployment",
    };
    let pod = match kind {
        "StatefulSet" => format!("{name}-{}", index % 7),
        _ => format!("{name}-{:08x}-{:05x}", rng.next() as u32, index),
    };
    Arc::new(Owner {
        namespace: NAMESPACES[workload % NAMESPACES.len()].into(),
        node: node.name.clone(),
        zone: zone.into(),
        region: REGION.into(),
        cloud: "aws".into(),
        workload_kind: kind.into(),
        workload_name: name.clone(),
        app: name,
        ..Owner::new(OwnerKind::Pod, pod)
    })
}

/// Remote addresses outside the cluster, by kind.
struct Remotes {
    /// Inside published AWS eu-west-1 prefixes (the cluster's region), IPv4.
    aws_local: Vec<IpAddr>,
    /// AWS, other regions, IPv4.
    aws_other: Vec<IpAddr>,
    gcp: Vec<IpAddr>,
    azure: Vec<IpAddr>,
    /// IPv6 addresses of all three providers.
    cloud_v6: Vec<IpAddr>,
    internet: Vec<IpAddr>,
    internet_v6: Vec<IpAddr>,
    private: Vec<IpAddr>,
    private_v6: Vec<IpAddr>,
}

impl Remotes {
    /// Picks addresses inside prefixes spread evenly over each provider's file, keeping only
    /// those the loaded table labels; internet addresses are random public ones that no
    /// provider publishes.
    fn build(ranges: &CloudRanges) -> anyhow::Result<Remotes> {
        let read = |cloud: Cloud| -> anyhow::Result<serde_json::Value> {
            let json = netmeter_attributor::cloud::snapshot::json(cloud);
            Ok(serde_json::from_slice(&json)?)
        };
        let (aws, gcp, azure) = (read(Cloud::Aws)?, read(Cloud::Gcp)?, read(Cloud::Azure)?);
        let strings = |values: Option<&serde_json::Value>,
                       field: &str,
                       filter: &dyn Fn(&serde_json::Value) -> bool|
         -> Vec<String> {
            values
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter(|v| filter(v))
                .filter_map(|v| v.get(field).and_then(|s| s.as_str()).map(String::from))
                .collect()
        };
        let in_region = |v: &serde_json::Value| v["region"] == REGION;
        let elsewhere = |v: &serde_json::Value| v["region"] != REGION;
        let any = |_: &serde_json::Value| true;
        let azure_prefixes: Vec<String> = azure["values"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|v| {
                v["properties"]["addressPrefixes"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        let (azure_v4, azure_v6): (Vec<String>, Vec<String>) =
            azure_prefixes.into_iter().partition(|p| !p.contains(':'));
        let mut rng = Rng(0x5eed_0002);
        let mut sample = |prefixes: Vec<String>, n: usize| -> Vec<IpAddr> {
            let step = (prefixes.len() / n).max(1);
            prefixes
                .iter()
                .step_by(step)
                .filter_map(|p| p.parse::<IpNet>().ok())
                .map(|net| inside(net, rng.next()))
                .filter(|ip| ranges.lookup(*ip).is_some())
                .collect()
        };
        let mut cloud_v6 = sample(strings(aws.get("ipv6_prefixes"), "ipv6_prefix", &any), 100);
        cloud_v6.extend(sample(strings(gcp.get("prefixes"), "ipv6Prefix", &any), 50));
        cloud_v6.extend(sample(azure_v6, 50));
        let remotes = Remotes {
            aws_local: sample(strings(aws.get("prefixes"), "ip_prefix", &in_region), 200),
            aws_other: sample(strings(aws.get("prefixes"), "ip_prefix", &elsewhere), 200),
            gcp: sample(strings(gcp.get("prefixes"), "ipv4Prefix", &any), 100),
            azure: sample(azure_v4, 200),
            cloud_v6,
            internet: public_addresses(&mut rng, ranges, 2_000, false),
            internet_v6: public_addresses(&mut rng, ranges, 300, true),
            private: (0..300)
                .map(|i| {
                    let [a, b] = [(i / 250) as u8, (i % 250) as u8 + 1];
                    match i % 3 {
                        0 => Ipv4Addr::new(10, 200, a, b),
                        1 => Ipv4Addr::new(172, 31, a, b),
                        _ => Ipv4Addr::new(192, 168, a, b),
                    }
                    .into()
                })
                .collect(),
            private_v6: (1..50)
                .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd12, 0x3456, 0, 0, 0, 0, 0, i)))
                .collect(),
        };
        for (name, pool) in [
            ("AWS eu-west-1", &remotes.aws_local),
            ("AWS elsewhere", &remotes.aws_other),
            ("GCP", &remotes.gcp),
            ("Azure", &remotes.azure),
            ("cloud IPv6", &remotes.cloud_v6),
        ] {
            ensure!(
                pool.len() >= 20,
                "only {} {name} addresses from the range files",
                pool.len()
            );
        }
        Ok(remotes)
    }

    fn cloud_count(&self) -> usize {
        self.aws_local.len()
            + self.aws_other.len()
            + self.gcp.len()
            + self.azure.len()
            + self.cloud_v6.len()
    }
}

/// An address inside `net`, chosen by `random`.
fn inside(net: IpNet, random: u64) -> IpAddr {
    match net {
        IpNet::V4(net) => {
            let size = 1u64 << (32 - net.prefix_len());
            IpAddr::V4(Ipv4Addr::from(
                u32::from(net.network()) + (random % size) as u32,
            ))
        }
        IpNet::V6(net) => {
            let bits = (128 - u32::from(net.prefix_len())).min(64);
            let offset = if bits == 64 {
                random
            } else {
                random % (1u64 << bits)
            };
            IpAddr::V6(Ipv6Addr::from(
                u128::from(net.network()) + u128::from(offset),
            ))
        }
    }
}

/// Random global unicast addresses that no provider publishes.
fn public_addresses(rng: &mut Rng, ranges: &CloudRanges, n: usize, v6: bool) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let ip = if v6 {
            // 2000::/3, global unicast.
            IpAddr::V6(Ipv6Addr::from(
                (0x2000u128 << 112) | (u128::from(rng.next()) << 48 & !(0xe000u128 << 112)),
            ))
        } else {
            let v4 = Ipv4Addr::from(rng.next() as u32);
            let [a, b, ..] = v4.octets();
            let special = matches!(a, 0 | 10 | 127 | 224..=255)
                || (a == 100 && (64..128).contains(&b))
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168);
            if special {
                continue;
            }
            IpAddr::V4(v4)
        };
        if ranges.lookup(ip).is_none() {
            out.push(ip);
        }
    }
    out
}

/// `count` batches of [`DELTAS_PER_BATCH`] deltas, node by node, as their collectors would
/// write them: batch `k` is node `k % 100`'s, for the interval `k / 100` after `t0`.
fn generate(
    cluster: &Cluster,
    remotes: &Remotes,
    count: usize,
    t0: u64,
    seed: u64,
) -> Vec<ConntrackBatch> {
    let mut rng = Rng(0x5eed_1000 + seed);
    let same_zone: Vec<Vec<usize>> = (0..ZONES.len())
        .map(|z| (0..NODES).filter(|i| i % ZONES.len() == z).collect())
        .collect();
    let mut sequences = vec![0u64; NODES];
    (0..count)
        .map(|k| {
            let n = k % NODES;
            sequences[n] += 1;
            let start = t0 + (k / NODES) as u64 * INTERVAL_MS;
            let deltas = (0..DELTAS_PER_BATCH)
                .map(|_| one_delta(&mut rng, cluster, remotes, &same_zone, n))
                .collect();
            batch(
                &cluster.nodes[n].name,
                &format!("collector-{n:03}"),
                sequences[n],
                start,
                start + INTERVAL_MS,
                deltas,
            )
        })
        .collect()
}

fn one_delta(
    rng: &mut Rng,
    cluster: &Cluster,
    remotes: &Remotes,
    same_zone: &[Vec<usize>],
    n: usize,
) -> netmeter_proto::raw::ConnectionDelta {
    let node = &cluster.nodes[n];
    let local = *rng.pick(&node.pods_v4);
    let other_node = |rng: &mut Rng, same: bool| loop {
        let m = if same {
            *rng.pick(&same_zone[node.zone])
        } else {
            rng.below(NODES as u64) as usize
        };
        if m != n && (same || cluster.nodes[m].zone != node.zone) {
            return &cluster.nodes[m];
        }
    };
    // (local address, remote address, remote port, local side initiated, Service DNAT)
    let (local, remote, port, outbound, dnat) = match rng.below(100) {
        0..15 => (local, *rng.pick(&node.pods_v4), 8080, true, rng.chance(30)),
        15..37 => {
            let other = other_node(rng, true);
            let pod = *rng.pick(&other.pods_v4);
            (local, pod, 8080, rng.chance(60), rng.chance(30))
        }
        37..57 => {
            let other = other_node(rng, false);
            let pod = *rng.pick(&other.pods_v4);
            (local, pod, 5432, rng.chance(60), rng.chance(30))
        }
        // The node itself (kubelet probes, node-local agents) talking to pods elsewhere.
        57..60 => {
            let same = rng.chance(50);
            let other = other_node(rng, same);
            let pod = *rng.pick(&other.pods_v4);
            (node.ip, pod, 10250, true, false)
        }
        60..85 => {
            let v6 = rng.chance(15);
            let remote = if v6 {
                *rng.pick(&remotes.cloud_v6)
            } else {
                match rng.below(100) {
                    0..50 => *rng.pick(&remotes.aws_local),
                    50..75 => *rng.pick(&remotes.aws_other),
                    75..88 => *rng.pick(&remotes.gcp),
                    _ => *rng.pick(&remotes.azure),
                }
            };
            let local = if v6 { *rng.pick(&node.pods_v6) } else { local };
            (local, remote, 443, rng.chance(90), false)
        }
        85..95 => {
            let v6 = rng.chance(15);
            let (local, remote) = if v6 {
                (*rng.pick(&node.pods_v6), *rng.pick(&remotes.internet_v6))
            } else {
                (local, *rng.pick(&remotes.internet))
            };
            (local, remote, 443, rng.chance(70), false)
        }
        _ => {
            let v6 = rng.chance(10);
            let (local, remote) = if v6 {
                (*rng.pick(&node.pods_v6), *rng.pick(&remotes.private_v6))
            } else {
                (local, *rng.pick(&remotes.private))
            };
            (local, remote, 5432, rng.chance(80), false)
        }
    };
    let (src, dst, sport, dport) = if outbound {
        (local, remote, 32_768 + rng.below(28_000) as u16, port)
    } else {
        (remote, local, 32_768 + rng.below(28_000) as u16, 8080)
    };
    let traffic = |rng: &mut Rng| {
        let packets = 1 + rng.below(2_000);
        (packets * (64 + rng.below(1_400)), packets)
    };
    let orig = traffic(rng);
    let reply = if rng.chance(3) { (0, 0) } else { traffic(rng) };
    let mut d = delta(
        &src.to_string(),
        sport,
        &dst.to_string(),
        dport,
        orig,
        reply,
    );
    if rng.chance(10) {
        d.protocol = 17;
    }
    d.conntrack_id = rng.next() as u32;
    d.assured = true;
    d.new = rng.chance(20);
    d.destroyed = rng.chance(15);
    d.node_endpoint = src == node.ip;
    if dnat && outbound {
        // Sent to a ClusterIP, DNATed to the pod: the reply tuple's source is the pod.
        let original = d.original.as_mut().expect("delta() sets both tuples");
        original.dst = vec![172, 20, rng.below(256) as u8, rng.below(256) as u8];
        d.nat = true;
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Part 1: in process

/// Wall and CPU seconds of one timed run.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
}

fn timed(f: impl FnOnce()) -> Sample {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    f();
    Sample {
        wall: wall.elapsed().as_secs_f64(),
        cpu: thread_cpu() - cpu,
    }
}

struct Variant {
    name: &'static str,
    samples: Vec<Sample>,
}

struct EnrichReport {
    deltas: usize,
    records: usize,
    flow_bytes: usize,
    raw_bytes: usize,
    variants: Vec<Variant>,
    classes: Vec<(String, usize)>,
    wire: Wire,
}

fn bench_enrich(
    enricher: &Enricher,
    cluster: &Cluster,
    ranges: &CloudRanges,
    batches: &[ConntrackBatch],
) -> EnrichReport {
    let inputs = Inputs {
        history: &cluster.history,
        cloud: ranges,
    };
    let encoded: Vec<Vec<u8>> = batches.iter().map(netmeter_proto::encode_batch).collect();
    let deltas: usize = batches.iter().map(|b| b.deltas.len()).sum();
    let raw_bytes = encoded.iter().map(Vec::len).sum();
    // The mix, checked once (untimed): records per class.
    let mut classes: HashMap<String, usize> = HashMap::new();
    for b in batches {
        let b = DeltaBatch::from_wire(b).expect("generated batches are well formed");
        enricher.enrich(&b, &inputs, 0, |f, _| {
            *classes.entry(f.class.into()).or_default() += 1
        });
    }
    let mut classes: Vec<_> = classes.into_iter().collect();
    classes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let mut buf: Vec<u8> = Vec::with_capacity(8 << 20);
    let decode = || {
        for bytes in &encoded {
            let b = netmeter_proto::decode_batch(bytes).expect("decodes");
            black_box(&b);
        }
    };
    // Each enrich variant converts the wire batch at the edge first, as the pipeline does.
    let noop = || {
        for b in batches {
            let b = DeltaBatch::from_wire(b).expect("well formed");
            let n = enricher.enrich(&b, &inputs, 0, |f, _| {
                black_box(f);
            });
            black_box(n);
        }
    };
    let encode = |buf: &mut Vec<u8>| {
        let (mut r, mut bytes) = (0, 0);
        for b in batches {
            buf.clear();
            let b = DeltaBatch::from_wire(b).expect("well formed");
            r += enricher
                .enrich(&b, &inputs, 0, |f, e| {
                    f.encode_length_delimited_using(e, buf)
                })
                .records;
            bytes += buf.len();
        }
        (r, bytes)
    };
    let full = |buf: &mut Vec<u8>| {
        for bytes in &encoded {
            let b = netmeter_proto::decode_batch(bytes).expect("decodes");
            buf.clear();
            let b = DeltaBatch::from_wire(&b).expect("well formed");
            enricher.enrich(&b, &inputs, 0, |f, e| {
                f.encode_length_delimited_using(e, buf)
            });
            black_box(&buf);
        }
    };
    let usage = |buf: &mut Vec<u8>, series: &mut Series| {
        for b in batches {
            buf.clear();
            let mut tally = Tally::default();
            let b = DeltaBatch::from_wire(b).expect("well formed");
            enricher.enrich(&b, &inputs, 0, |f, e| {
                tally.add(f);
                f.encode_length_delimited_using(e, buf)
            });
            series.add(&tally);
            black_box(&buf);
        }
    };
    let mut series = Series::new(DEFAULT_MAX_WORKLOADS);
    // Warm-up, untimed: page in the data, grow the buffer, train the branch predictors.
    decode();
    noop();
    let (records, flow_bytes) = encode(&mut buf);
    full(&mut buf);
    usage(&mut buf, &mut series);
    if let Ok(variant) = std::env::var("NETMETER_BENCH_PROFILE") {
        // For a profiler: one variant in a loop for ~10 s, nothing else.
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match variant.as_str() {
                "decode" => decode(),
                "noop" => noop(),
                "encode" => {
                    black_box(encode(&mut buf));
                }
                "full" => full(&mut buf),
                "usage" => usage(&mut buf, &mut series),
                other => panic!(
                    "NETMETER_BENCH_PROFILE={other:?}: expected decode, noop, encode, full or usage"
                ),
            }
        }
        std::process::exit(0);
    }
    let mut variants: Vec<Variant> = [
        "decode_batch (reference)",
        "enrich, no-op emit",
        "enrich + encode (goal)",
        "decode + enrich + encode",
        "enrich + encode + usage",
    ]
    .into_iter()
    .map(|name| Variant {
        name,
        samples: Vec::new(),
    })
    .collect();
    println!(
        "\n== part 1: enrichment in process, single thread: {} batches, {deltas} deltas, {records} records ==",
        batches.len()
    );
    println!(
        "rep | wall s (cpu s):  decode | enrich no-op | enrich+encode | decode+enrich+encode | enrich+encode+usage"
    );
    for rep in 1..=REPS {
        let samples = [
            timed(decode),
            timed(noop),
            timed(|| {
                black_box(encode(&mut buf));
            }),
            timed(|| full(&mut buf)),
            timed(|| usage(&mut buf, &mut series)),
        ];
        print!("{rep:>3} |");
        for (variant, sample) in variants.iter_mut().zip(samples) {
            print!("  {:.3} ({:.3})", sample.wall, sample.cpu);
            variant.samples.push(sample);
        }
        println!();
    }
    EnrichReport {
        deltas,
        records,
        flow_bytes,
        raw_bytes,
        variants,
        classes,
        wire: wire_sizes(enricher, &inputs, &encoded),
    }
}

/// Bytes on the wire per delta and per record, untimed: for sizing Kafka (MB/s per topic).
struct Wire {
    /// The raw batches' protobuf, each compressed alone (one batch = one raw message), and the
    /// thread CPU seconds that took (what the collector's librdkafka thread spends on it).
    raw_zstd: usize,
    raw_zstd_cpu: f64,
    /// The flow messages as the pipeline cuts them (`Attributor::attribute`: a new message once
    /// one reaches [`MAX_MESSAGE_BYTES`]), uncompressed and each compressed alone.
    flow_messages: usize,
    flow_bytes: usize,
    flow_zstd: usize,
}

/// librdkafka's level for `compression.type=zstd` with `compression.level` unset (-1 -> 3),
/// which both the collector (its default `--compression zstd`) and the attributor set.
const KAFKA_ZSTD_LEVEL: i32 = 3;

fn wire_sizes(enricher: &Enricher, inputs: &Inputs, encoded: &[Vec<u8>]) -> Wire {
    let zstd = |bytes: &[u8]| {
        zstd::bulk::compress(bytes, KAFKA_ZSTD_LEVEL)
            .expect("zstd compresses")
            .len()
    };
    let cpu = thread_cpu();
    let raw_zstd = encoded.iter().map(|b| zstd(b)).sum();
    let mut wire = Wire {
        raw_zstd,
        raw_zstd_cpu: thread_cpu() - cpu,
        flow_messages: 0,
        flow_bytes: 0,
        flow_zstd: 0,
    };
    for bytes in encoded {
        let b = netmeter_proto::decode_batch(bytes).expect("decodes");
        let b = DeltaBatch::from_wire(&b).expect("well formed");
        let mut payloads = vec![Vec::new()];
        enricher.enrich(&b, inputs, 0, |f, e| {
            if payloads
                .last()
                .is_some_and(|p: &Vec<u8>| p.len() >= MAX_MESSAGE_BYTES)
            {
                payloads.push(Vec::new());
            }
            f.encode_length_delimited_using(e, payloads.last_mut().expect("never empty"))
        });
        for p in payloads.iter().filter(|p| !p.is_empty()) {
            wire.flow_messages += 1;
            wire.flow_bytes += p.len();
            wire.flow_zstd += zstd(p);
        }
    }
    wire
}

// ---------------------------------------------------------------------------------------------
// Part 2: Kafka to Kafka

/// One timed pass of the same raw batches through the attributor, and the references.
struct Round {
    /// From the first raw message sent (warm rounds) or from readiness (the cold round)
    /// until the records counter reached the expected count.
    counted: f64,
    /// ... until the flows topic held every expected message.
    on_topic: f64,
    attributor_cpu: f64,
    broker_cpu: f64,
    /// Busy cores of the whole machine (everything running on it) during the round.
    machine_cores: f64,
    /// References: the same raw batches produced the same way to a scratch topic, read back
    /// by a plain consumer, and the same flow messages written with the attributor's
    /// producer settings to another scratch topic.
    produce_raw: f64,
    read_raw: f64,
    write_flows: f64,
    write_flows_broker_cpu: f64,
}

impl Round {
    fn reference(&self) -> f64 {
        self.produce_raw + self.read_raw + self.write_flows
    }
}

/// The first pass, as a deployment restarts: raw batches waiting, then the attributor starts.
struct Cold {
    /// Process start until /readyz: range files, inventory topic read.
    startup: f64,
    /// Readiness (it starts consuming) until the records are counted / on the topic.
    counted: f64,
    on_topic: f64,
}

struct KafkaReport {
    deltas: usize,
    records: usize,
    raw_messages: usize,
    raw_bytes: usize,
    flow_messages: usize,
    flow_bytes: usize,
    stack_start: f64,
    cold: Cold,
    /// Cores the attributor and the broker use while no data arrives.
    idle: (f64, f64),
    rounds: Vec<Round>,
    notes: Vec<String>,
}

/// Scratch topics of the references (created here; topics are never auto-created on tansu).
const SCRATCH_RAW: &str = "netmeter.bench-raw.v1";

fn bench_kafka(
    cluster: &Cluster,
    ranges: LoadedRanges,
    batches: Vec<ConntrackBatch>,
    reps: usize,
) -> anyhow::Result<KafkaReport> {
    let deltas: usize = batches.iter().map(|b| b.deltas.len()).sum();
    println!(
        "\n== part 2: Kafka to Kafka, one attributor replica: {} raw batches, {deltas} deltas per round ==",
        batches.len()
    );
    println!("attributor binary: {ATTRIBUTOR} (bench profile = release, built by cargo bench)");
    // The expected output, computed with the attributor's own code and settings.
    let attribution = Attributor {
        enricher: enricher(),
        history: Arc::new(RwLock::new(cluster.history_copy())),
        cloud: SharedCloudRanges::new(ranges),
        format: OutputFormat::Protobuf,
        max_message_bytes: MAX_MESSAGE_BYTES,
        flows_topic: SCRATCH_FLOWS.into(),
    };
    let mut flow_messages: Vec<Arc<Outgoing>> = Vec::new();
    let mut records = 0;
    for b in &batches {
        let attributed = attribution.attribute(b, 0).expect("well formed");
        records += attributed.records;
        flow_messages.extend(attributed.messages.into_iter().map(Arc::new));
    }
    drop(attribution);
    let flow_bytes: usize = flow_messages.iter().map(|m| m.payload.len()).sum();
    let raw_bytes: usize = batches
        .iter()
        .map(|b| netmeter_proto::encode_batch(b).len())
        .sum();
    println!(
        "expected per round: {records} records in {} flow messages ({:.0} MB of protobuf before compression)",
        flow_messages.len(),
        flow_bytes as f64 / 1e6
    );

    let runtime = bench_runtime(Path::new(ATTRIBUTOR))?;
    // Children die with the thread that started them: everything starts on this thread.
    let started = Instant::now();
    let stack = runtime.block_on(Stack::start())?;
    let stack_start = started.elapsed().as_secs_f64();
    let bootstrap = stack.kafka_bootstrap();
    runtime.block_on(netmeter_tests::broker::create_topics(
        &bootstrap,
        &[SCRATCH_RAW.to_string(), SCRATCH_FLOWS.to_string()],
        PARTITIONS,
    ))?;
    println!("stack (tansu broker + ClickHouse) up in {stack_start:.1} s at {bootstrap}");
    let topic = |s: Schema| s.topic(DEFAULT_TOPIC_PREFIX);
    let (raw_topic, flows_topic) = (topic(Schema::RawV1), topic(Schema::FlowsV1));
    let producer = TestProducer::new(&bootstrap)?;
    runtime.block_on(publish_inventory(
        &producer,
        &topic(Schema::InventoryV1),
        cluster,
    ))?;
    println!(
        "inventory topic: {} tenures published",
        cluster.tenures.len()
    );
    let watermarks = Watermarks::new(&bootstrap)?;
    let broker_pid = stack.broker.pid();
    let broker_log = stack.dir().join("broker.log");
    let mut notes = Vec::new();

    // Cold: the raw batches wait on the topic, then the attributor starts.
    runtime.block_on(producer.send_raw(&raw_topic, &batches))?;
    // No --cloud-ranges-dir: the built-in snapshot, the same table as `ranges` above.
    let args = [
        "--kubernetes=false",
        "--cloud",
        "aws",
        "--region",
        REGION,
        "--cluster",
        CLUSTER,
    ];
    let base_high = watermarks.total(&flows_topic)?;
    let spawned = Instant::now();
    let mut service = RunningService::start(Path::new(ATTRIBUTOR), &stack, &args)?;
    let pid = service.process.pid();
    let mut waiter = Waiter {
        service: &mut service,
        broker_log: &broker_log,
    };
    waiter.until(|s| matches!(http_get(s.http_port, "/readyz"), Ok((200, _))))?;
    let ready = Instant::now();
    let startup = ready.duration_since(spawned).as_secs_f64();
    let (counted, on_topic) = waiter.output(
        &watermarks,
        &flows_topic,
        (records, base_high + flow_messages.len() as i64),
        ready,
    )?;
    let cold = Cold {
        startup,
        counted,
        on_topic,
    };
    println!(
        "cold: attributor started with {} raw batches waiting: ready after {startup:.2} s (range files, {} inventory records), then {counted:.2} s until every record was counted and {on_topic:.2} s until all were on {flows_topic}",
        batches.len(),
        cluster.tenures.len()
    );

    // What the attributor and the broker burn while nothing arrives (consumers polling).
    let (cpu0, broker0) = (process_cpu(pid), process_cpu(broker_pid));
    std::thread::sleep(IDLE_SAMPLE);
    let idle = (
        (process_cpu(pid) - cpu0) / IDLE_SAMPLE.as_secs_f64(),
        (process_cpu(broker_pid) - broker0) / IDLE_SAMPLE.as_secs_f64(),
    );
    println!(
        "idle for {IDLE_SAMPLE:?}: the attributor used {:.2} cores, the broker {:.2} (polling consumers)",
        idle.0, idle.1
    );

    // Warm rounds: the running attributor gets the same batches again (as a collector's next
    // batches: new sequence numbers), timed from the first raw message sent.
    println!(
        "round | attributor: counted s  on topic s  attributor cpu s  broker cpu s  busy cores || references: produce raw s  read raw s  write flows s (broker cpu s)"
    );
    let mut rounds = Vec::new();
    let mut scratch_raw_from = watermarks.each(SCRATCH_RAW)?;
    for rep in 1..=reps {
        let round_batches: Vec<ConntrackBatch> = batches
            .iter()
            .map(|b| ConntrackBatch {
                sequence: b.sequence + 1_000 * rep as u64,
                ..b.clone()
            })
            .collect();
        let mut waiter = Waiter {
            service: &mut service,
            broker_log: &broker_log,
        };
        let seen = waiter
            .service
            .metric("netmeter_attributor_records_total")
            .unwrap_or(0.0) as usize;
        let high = watermarks.total(&flows_topic)?;
        let (cpu0, broker0, machine0) = (process_cpu(pid), process_cpu(broker_pid), machine_busy());
        let started = Instant::now();
        runtime.block_on(producer.send_raw(&raw_topic, &round_batches))?;
        let (counted, on_topic) = waiter.output(
            &watermarks,
            &flows_topic,
            (seen + records, high + flow_messages.len() as i64),
            started,
        )?;
        let (cpu1, broker1, machine1) = (process_cpu(pid), process_cpu(broker_pid), machine_busy());
        // References on the same broker, same data, while the attributor idles.
        let began = Instant::now();
        runtime.block_on(producer.send_raw(SCRATCH_RAW, &round_batches))?;
        let produce_raw = began.elapsed().as_secs_f64();
        let scratch_raw_to = watermarks.each(SCRATCH_RAW)?;
        let read_raw = read_range(&bootstrap, SCRATCH_RAW, &scratch_raw_from, &scratch_raw_to)?;
        scratch_raw_from = scratch_raw_to;
        let (write_flows, write_flows_broker_cpu) =
            runtime.block_on(write_messages(&bootstrap, &flow_messages, broker_pid))?;
        let round = Round {
            counted,
            on_topic,
            attributor_cpu: cpu1 - cpu0,
            broker_cpu: broker1 - broker0,
            machine_cores: (machine1 - machine0) / on_topic,
            produce_raw,
            read_raw,
            write_flows,
            write_flows_broker_cpu,
        };
        println!(
            "{rep:>5} | {:>21.2} {:>11.2} {:>17.2} {:>13.2} {:>11.2} || {:>26.2} {:>11.2} {:>14.2} ({:.2})",
            round.counted,
            round.on_topic,
            round.attributor_cpu,
            round.broker_cpu,
            round.machine_cores,
            round.produce_raw,
            round.read_raw,
            round.write_flows,
            round.write_flows_broker_cpu,
        );
        rounds.push(round);
    }
    let total_records = service.metric("netmeter_attributor_records_total");
    let total_deltas = service.metric("netmeter_attributor_deltas_total");
    let passes = reps + 1;
    if total_records != Some((records * passes) as f64)
        || total_deltas != Some((deltas * passes) as f64)
    {
        notes.push(format!(
            "the attributor counted {total_records:?} records and {total_deltas:?} deltas, expected {} and {}",
            records * passes,
            deltas * passes
        ));
    }
    let (exit, _) = service.sigterm();
    if !exit.success() {
        notes.push(format!("the attributor exited with {exit}"));
    }
    // Nothing beyond the expected messages (e.g. dead letters or a different split).
    let grown = watermarks.total(&flows_topic)? - base_high;
    if grown != (flow_messages.len() * passes) as i64 {
        notes.push(format!(
            "the flows topic grew by {grown} messages, expected {}",
            flow_messages.len() * passes
        ));
    }
    let dead = watermarks.total(&topic(Schema::DeadLetterV1))?;
    if dead != 0 {
        notes.push(format!("{dead} dead letters"));
    }
    drop(watermarks);
    drop(producer);
    stack.stop();
    Ok(KafkaReport {
        deltas,
        records,
        raw_messages: batches.len(),
        raw_bytes,
        flow_messages: flow_messages.len(),
        flow_bytes,
        stack_start,
        cold,
        idle,
        rounds,
        notes,
    })
}

/// Every tenure to the inventory topic, as the attributors' Kubernetes indexes publish them.
async fn publish_inventory(
    producer: &TestProducer,
    topic: &str,
    cluster: &Cluster,
) -> anyhow::Result<()> {
    for chunk in cluster.tenures.chunks(500) {
        let sends = chunk.iter().map(|t| async move {
            let payload = t.to_wire().encode_to_vec();
            producer
                .send(topic, &t.key(), &payload, Some(Schema::InventoryV1.tag()))
                .await
        });
        for sent in futures::future::join_all(sends).await {
            sent?;
        }
    }
    Ok(())
}

/// Waits on the running attributor, failing with its log and the broker's.
struct Waiter<'a> {
    service: &'a mut RunningService,
    broker_log: &'a Path,
}

impl Waiter<'_> {
    /// Polls `done` every 10 ms, up to [`ROUND_TIMEOUT`].
    fn until(&mut self, mut done: impl FnMut(&RunningService) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while !done(self.service) {
            if let Some(status) = self.service.process.exit_status() {
                anyhow::bail!(
                    "the attributor exited ({status}):\n{}",
                    self.service.process.log_tail()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "timed out after {ROUND_TIMEOUT:?}; attributor log:\n{}\nbroker log ({}):\n{}",
                self.service.process.log_tail(),
                self.broker_log.display(),
                tail(self.broker_log)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Seconds since `since` until the records counter reaches `records`, and until the
    /// flows topic's summed high watermarks reach `high` (every message acknowledged).
    fn output(
        &mut self,
        watermarks: &Watermarks,
        flows_topic: &str,
        (records, high): (usize, i64),
        since: Instant,
    ) -> anyhow::Result<(f64, f64)> {
        self.until(|s| {
            s.metric("netmeter_attributor_records_total")
                .is_some_and(|n| n as usize >= records)
        })?;
        let counted = since.elapsed().as_secs_f64();
        self.until(|_| watermarks.total(flows_topic).is_ok_and(|h| h >= high))?;
        Ok((counted, since.elapsed().as_secs_f64()))
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// High watermarks of a topic's partitions.
struct Watermarks(Detached<BaseConsumer>);

impl Watermarks {
    fn new(bootstrap: &str) -> anyhow::Result<Watermarks> {
        Ok(Watermarks(Detached::new(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("group.id", "netmeter-bench-watermarks")
                .create()?,
        )))
    }

    fn each(&self, topic: &str) -> anyhow::Result<Vec<i64>> {
        (0..PARTITIONS)
            .map(|partition| {
                let (_, high) =
                    self.0
                        .fetch_watermarks(topic, partition, Duration::from_secs(10))?;
                Ok(high)
            })
            .collect()
    }

    fn total(&self, topic: &str) -> anyhow::Result<i64> {
        Ok(self.each(topic)?.iter().sum())
    }
}

/// Reads partition `p` of `topic` from `from[p]` up to `to[p]` with a plain consumer (default
/// settings, as the attributor's); returns the seconds it took.
fn read_range(bootstrap: &str, topic: &str, from: &[i64], to: &[i64]) -> anyhow::Result<f64> {
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
    let mut ends = Vec::new();
    for partition in 0..PARTITIONS {
        let p = partition as usize;
        assignment.add_partition_offset(topic, partition, Offset::Offset(from[p]))?;
        if to[p] > from[p] {
            ends.push((partition, to[p]));
        }
    }
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let mut bytes = 0usize;
    while !ends.is_empty() {
        ensure!(
            started.elapsed() < ROUND_TIMEOUT,
            "reading {topic} took longer than {ROUND_TIMEOUT:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let Ok(message) = message else { continue };
        bytes += message.payload().map_or(0, <[u8]>::len);
        let (partition, next) = (message.partition(), message.offset() + 1);
        ends.retain(|(p, high)| !(*p == partition && next >= *high));
    }
    let took = started.elapsed().as_secs_f64();
    black_box(bytes);
    Ok(took)
}

/// Writes `messages` to their (scratch) topic with the attributor's producer: same settings,
/// same enqueue/confirm path as its pipeline. Returns the seconds until all are acknowledged,
/// and the broker's CPU meanwhile.
async fn write_messages(
    bootstrap: &str,
    messages: &[Arc<Outgoing>],
    broker_pid: u32,
) -> anyhow::Result<(f64, f64)> {
    let args = netmeter_attributor::Args::try_parse_from(["bench", "--kafka-brokers", bootstrap])?;
    let publisher = netmeter_attributor::publisher(&args.kafka, args.output.max_message_bytes)?;
    // Let it connect before the clock starts (the attributor's producer is connected too).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let never = CancellationToken::new();
    let broker0 = process_cpu(broker_pid);
    let started = Instant::now();
    let mut pending = Vec::with_capacity(messages.len());
    for message in messages {
        pending.push(publisher.enqueue(message.clone()).await);
    }
    for p in pending {
        publisher
            .confirm(p, &never)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let took = started.elapsed().as_secs_f64();
    Ok((took, process_cpu(broker_pid) - broker0))
}

// ---------------------------------------------------------------------------------------------
// CPU time

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Default)]
struct Report {
    enrich: Option<EnrichReport>,
    kafka: Option<KafkaReport>,
}

impl Report {
    fn print(&self) {
        if let Some(e) = &self.enrich {
            e.print();
        }
        if let Some(k) = &self.kafka {
            k.print();
        }
    }
}

impl EnrichReport {
    fn print(&self) {
        let total: usize = self.classes.iter().map(|(_, n)| n).sum();
        println!(
            "\n-- part 1 results: {} deltas -> {} records ({:.2} per delta), {:.0} B per record encoded, {:.0} B per delta raw; median of {REPS} --",
            self.deltas,
            self.records,
            self.records as f64 / self.deltas as f64,
            self.flow_bytes as f64 / self.records as f64,
            self.raw_bytes as f64 / self.deltas as f64,
        );
        let w = &self.wire;
        println!(
            "wire size for Kafka sizing (zstd level {KAFKA_ZSTD_LEVEL}, as librdkafka compresses for both producers; each message alone, framing not counted): raw {:.1} B per delta ({:.0} B protobuf, {:.2}x; one message = {DELTAS_PER_BATCH} deltas; zstd {:.0} ns per delta), flows {:.1} B per record ({:.0} B protobuf, {:.2}x; {} messages of <= {} kB)",
            w.raw_zstd as f64 / self.deltas as f64,
            self.raw_bytes as f64 / self.deltas as f64,
            self.raw_bytes as f64 / w.raw_zstd as f64,
            w.raw_zstd_cpu * 1e9 / self.deltas as f64,
            w.flow_zstd as f64 / self.records as f64,
            w.flow_bytes as f64 / self.records as f64,
            w.flow_bytes as f64 / w.flow_zstd as f64,
            w.flow_messages,
            MAX_MESSAGE_BYTES / 1000,
        );
        println!(
            "records by class: {}",
            self.classes
                .iter()
                .map(|(c, n)| format!("{c} {:.1}%", 100.0 * *n as f64 / total as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let medians: Vec<(&str, f64, f64)> = self
            .variants
            .iter()
            .map(|v| {
                (
                    v.name,
                    median(v.samples.iter().map(|s| s.wall).collect()),
                    median(v.samples.iter().map(|s| s.cpu).collect()),
                )
            })
            .collect();
        let decode_cpu = medians[0].2;
        println!(
            "| {:<26} | {:>6} | {:>6} | {:>9} | {:>12} | {:>10} | {:>8} | {:>17} |",
            "single thread",
            "wall s",
            "CPU s",
            "deltas/s",
            "deltas/CPU-s",
            "records/s",
            "ns/delta",
            "CPU vs decode"
        );
        println!(
            "| {:-<26} | {:->6} | {:->6} | {:->9} | {:->12} | {:->10} | {:->8} | {:->17} |",
            "", "", "", "", "", "", "", ""
        );
        for &(name, wall, cpu) in &medians {
            let records = if name.starts_with("decode_batch") {
                "-".to_string()
            } else {
                rate(self.records, wall)
            };
            println!(
                "| {name:<26} | {wall:>6.3} | {cpu:>6.3} | {:>9} | {:>12} | {records:>10} | {:>8.0} | {:>16.2}x |",
                rate(self.deltas, wall),
                rate(self.deltas, cpu),
                cpu * 1e9 / self.deltas as f64,
                cpu / decode_cpu,
            );
        }
        let (_, goal_wall, goal_cpu) = medians[2];
        let per_core = self.deltas as f64 / goal_cpu;
        println!(
            "goal: >= {:.0}M deltas/s per core with {POD_TENURES} pods and the full range tables: enrich + encode runs {:.2}M deltas/CPU-s ({:.2}M/s wall) -> {}",
            GOAL_DELTAS_PER_CORE_SECOND / 1e6,
            per_core / 1e6,
            self.deltas as f64 / goal_wall / 1e6,
            if per_core >= GOAL_DELTAS_PER_CORE_SECOND {
                "met"
            } else {
                "NOT met"
            }
        );
        let (_, _, full_cpu) = medians[3];
        println!(
            "context: with the decode the pipeline does anyway, one core handles {:.2}M deltas/s (decode + enrich + encode)",
            self.deltas as f64 / full_cpu / 1e6
        );
        let (_, _, usage_cpu) = medians[4];
        println!(
            "usage metrics (workload and zone-pair counters): {:+.0} ns per delta over enrich + encode ({:+.1}%)",
            (usage_cpu - goal_cpu) * 1e9 / self.deltas as f64,
            100.0 * (usage_cpu / goal_cpu - 1.0)
        );
    }
}

impl KafkaReport {
    fn print(&self) {
        let m = |f: &dyn Fn(&Round) -> f64| median(self.rounds.iter().map(f).collect());
        let (on_topic, counted) = (m(&|r| r.on_topic), m(&|r| r.counted));
        let reference = m(&|r| r.reference());
        println!(
            "\n-- part 2 results, per round: {} deltas in {} raw messages ({:.0} MB) -> {} records in {} flow messages ({:.0} MB before zstd); median of {} warm rounds --",
            self.deltas,
            self.raw_messages,
            self.raw_bytes as f64 / 1e6,
            self.records,
            self.flow_messages,
            self.flow_bytes as f64 / 1e6,
            self.rounds.len()
        );
        let row = |name: &str, wall: f64, deltas: bool, flows: bool, cpu: String| {
            println!(
                "| {name:<52} | {wall:>6.2} | {:>9} | {:>8} | {cpu:<27} |",
                if deltas {
                    rate(self.deltas, wall)
                } else {
                    "-".into()
                },
                if flows {
                    rate(self.records, wall)
                } else {
                    "-".into()
                },
            );
        };
        println!(
            "| {:<52} | {:>6} | {:>9} | {:>8} | {:<27} |",
            "one replica; tansu broker (SQLite); 2 shared cores",
            "wall s",
            "deltas/s",
            "flows/s",
            "CPU s"
        );
        println!(
            "| {:-<52} | {:->6} | {:->9} | {:->8} | {:-<27} |",
            "", "", "", "", ""
        );
        row(
            "attributor: raw sent -> all records on flows topic",
            on_topic,
            true,
            true,
            format!(
                "attributor {:.2}, broker {:.2}",
                m(&|r| r.attributor_cpu),
                m(&|r| r.broker_cpu)
            ),
        );
        row(
            "attributor: raw sent -> all records counted",
            counted,
            true,
            true,
            String::new(),
        );
        row(
            "ref: produce the same raw batches (send_raw)",
            m(&|r| r.produce_raw),
            true,
            false,
            String::new(),
        );
        row(
            "ref: plain consumer reads them",
            m(&|r| r.read_raw),
            true,
            false,
            String::new(),
        );
        row(
            "ref: the same flow messages, attributor's producer",
            m(&|r| r.write_flows),
            false,
            true,
            format!("broker {:.2}", m(&|r| r.write_flows_broker_cpu)),
        );
        row(
            "ref: sum of the three (no work between)",
            reference,
            true,
            true,
            String::new(),
        );
        let attributor_cpu = m(&|r| r.attributor_cpu);
        println!(
            "ratio attributor / reference: {:.2}x the time of the sum ({:.0}% of the speed the broker allows with no work between; the attributor overlaps reading and writing), {:.2}x the time of writing the flows alone; machine busy {:.2} of 2 cores during the rounds (everything on it)",
            on_topic / reference,
            100.0 * reference / on_topic,
            on_topic / m(&|r| r.write_flows),
            m(&|r| r.machine_cores),
        );
        println!(
            "attributor CPU: {attributor_cpu:.2} s per round = {:.2} us per delta; idle it burns {:.2} cores ({:.2} s over the round), so the data cost ~{:.2} us per delta; the broker idles at {:.2} cores",
            attributor_cpu * 1e6 / self.deltas as f64,
            self.idle.0,
            self.idle.0 * on_topic,
            (attributor_cpu - self.idle.0 * on_topic).max(0.0) * 1e6 / self.deltas as f64,
            self.idle.1,
        );
        println!(
            "cold start (the brief's scenario: batches waiting, then the attributor starts): ready after {:.2} s (range files + {} inventory records), then {:.2} s to count every record ({} deltas/s) and {:.2} s until all were on the topic ({} deltas/s, {} flows/s); stack start {:.1} s",
            self.cold.startup,
            POD_TENURES + NODES,
            self.cold.counted,
            rate(self.deltas, self.cold.counted),
            self.cold.on_topic,
            rate(self.deltas, self.cold.on_topic),
            rate(self.records, self.cold.on_topic),
            self.stack_start,
        );
        for note in &self.notes {
            println!("NOTE: {note}");
        }
    }
}
