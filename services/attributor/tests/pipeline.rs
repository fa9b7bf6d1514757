//! The attributor between a real broker and the test Kubernetes API server:
//! - a reused pod IP is attributed to whoever held it during each delta's interval, also for
//!   late data, after a restart, and on replay;
//! - two replicas in one group, one killed mid-stream: every raw delta yields its records,
//!   duplicates only with equal record ids; garbage goes to the dead-letter topic;
//! - the broker going away for 15 s loses no record;
//! - without Kubernetes, static hosts of the rules file are attributed on both ends, and
//!   multicast is neither internet nor priced.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netmeter_proto::flows::Flow;
use netmeter_proto::{DEAD_LETTER_REASON_HEADER, Schema};
use netmeter_tests::Stack;
use netmeter_tests::cluster;
use netmeter_tests::kube_api::{KubeApiServer, Resource};
use netmeter_tests::records::{TestProducer, TopicReader, batch, delta, now_ms};
use netmeter_tests::service::RunningService;
use netmeter_tests::stack::PARTITIONS;

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-attributor");
const WAIT: Duration = Duration::from_secs(60);
const GIB: f64 = (1u64 << 30) as f64;

fn topic(schema: Schema) -> String {
    schema.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX)
}

/// The cloud ranges are the built-in snapshot (no --cloud-ranges-dir).
fn attribution_args() -> Vec<String> {
    [
        "--cluster",
        "test",
        "--cloud",
        "aws",
        "--region",
        "eu-west-1",
        "--ip-grace",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start(stack: &Stack, extra: &[&str], env: &[(&str, &str)]) -> RunningService {
    let mut args = attribution_args();
    // A replica that is gone hands its partitions over after 6 s, not 45 s.
    for option in ["session.timeout.ms=6000", "heartbeat.interval.ms=500"] {
        args.extend(["--kafka-option".to_string(), option.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut service = RunningService::start_with_env(Path::new(BIN), stack, &args, env).unwrap();
    service
        .wait_ready(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", service.process.log_tail()));
    service
}

/// Reads flow records until `n` have arrived; on failure shows `service`'s log.
async fn flows(reader: &mut TopicReader, n: usize, service: &RunningService) -> Vec<Flow> {
    let arrived = reader
        .read_until(WAIT, |messages| {
            messages
                .iter()
                .map(|m| netmeter_proto::decode_flows(&m.payload).unwrap().len())
                .sum::<usize>()
                >= n
        })
        .await;
    let flows = reader.flows();
    assert!(
        arrived,
        "expected {n} flow records, got {}: {flows:#?}\n{}",
        flows.len(),
        service.process.log_tail()
    );
    assert_eq!(flows.len(), n, "{flows:#?}");
    flows
}

/// 1 MB out and 50 kB back between web (10.0.0.5 on node-a) and db-0 (node-b, other zone).
fn web_to_db(sequence: u64, start_ms: u64) -> netmeter_proto::raw::ConntrackBatch {
    batch(
        "node-a",
        "collector-1",
        sequence,
        start_ms,
        start_ms + 10_000,
        vec![delta(
            "10.0.0.5",
            40_000,
            "10.0.1.10",
            5432,
            (1_000_000, 1000),
            (50_000, 500),
        )],
    )
}

/// The local pod of the `out` record of each batch sequence, in order.
/// What a record stands for: one delta (its local end) in one direction.
fn identity(f: &Flow) -> (String, u32, String) {
    (f.local_ip.clone(), f.local_port, f.direction.clone())
}

/// Reads until records for `expected` distinct identities arrived; false at `timeout`.
async fn read_identities(reader: &mut TopicReader, expected: usize, timeout: Duration) -> bool {
    reader
        .read_until(timeout, |messages| {
            let ids: HashSet<_> = messages
                .iter()
                .flat_map(|m| netmeter_proto::decode_flows(&m.payload).unwrap())
                .map(|f| identity(&f))
                .collect();
            ids.len() >= expected
        })
        .await
}

fn senders(flows: &[Flow]) -> Vec<(String, String)> {
    flows
        .iter()
        .filter(|f| f.direction == "out")
        .map(|f| (f.local_pod.clone(), f.remote_pod.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_ip_is_attributed_to_its_holder_at_flow_time_after_restart_and_on_replay() {
    let stack = Stack::start().await.unwrap();
    let kube = KubeApiServer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube.write_kubeconfig(dir.path()).unwrap();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let t0 = now_ms() - 600_000;
    kube.apply(
        Resource::Nodes,
        cluster::node("node-a", "eu-west-1", "eu-west-1a", "10.77.0.1"),
    );
    kube.apply(
        Resource::Nodes,
        cluster::node("node-b", "eu-west-1", "eu-west-1b", "10.77.1.1"),
    );
    kube.apply(
        Resource::Pods,
        cluster::pod(
            "shop",
            "web-a",
            "node-a",
            &["10.0.0.5"],
            Some(("StatefulSet", "web")),
            "web",
            t0,
        ),
    );
    kube.apply(
        Resource::Pods,
        cluster::pod(
            "shop",
            "db-0",
            "node-b",
            &["10.0.1.10"],
            Some(("StatefulSet", "db")),
            "db",
            t0,
        ),
    );
    let raw = topic(Schema::RawV1);
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let mut reader = TopicReader::new(
        &stack.kafka_bootstrap(),
        &topic(Schema::FlowsV1),
        PARTITIONS,
    )
    .unwrap();

    let mut attributor = start(&stack, &[], &env);
    let a_time = now_ms() - 60_000;
    producer
        .send_raw(&raw, &[web_to_db(1, a_time)])
        .await
        .unwrap();
    let first = flows(&mut reader, 2, &attributor).await;
    let out = first.iter().find(|f| f.direction == "out").unwrap();
    assert_eq!(
        (
            out.local_pod.as_str(),
            out.local_workload_kind.as_str(),
            out.local_workload_name.as_str(),
            out.local_zone.as_str(),
            out.local_node.as_str()
        ),
        ("web-a", "StatefulSet", "web", "eu-west-1a", "node-a")
    );
    assert_eq!(
        (
            out.remote_pod.as_str(),
            out.remote_zone.as_str(),
            out.remote_port
        ),
        ("db-0", "eu-west-1b", 5432)
    );
    assert_eq!(
        (
            out.class.as_str(),
            out.bytes,
            out.packets,
            out.cluster.as_str()
        ),
        ("INTER_ZONE", 1_000_000, 1000, "test")
    );
    assert_eq!(out.cost_usd, 1_000_000.0 / GIB * 0.01);
    let back = first.iter().find(|f| f.direction == "in").unwrap();
    assert_eq!(
        (back.bytes, back.packets, back.cost_usd),
        (50_000, 500, 50_000.0 / GIB * 0.01)
    );

    // The API server goes away: the last state is served and marked stale.
    kube.stop();
    let stale = r#"netmeter_attributor_kubernetes_stale{resource="pods"}"#;
    assert!(
        netmeter_tests::wait_until(WAIT, || attributor.metric(stale) == Some(1.0)),
        "stale not reported"
    );
    kube.start().unwrap();
    assert!(
        netmeter_tests::wait_until(WAIT, || attributor.metric(stale) == Some(0.0)),
        "not back in sync"
    );

    // Pod A is deleted; pod B gets the same IP.
    kube.delete(Resource::Pods, "shop", "web-a");
    // The reuse gap under test: B starts well after A ended.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tenures = || {
        attributor
            .metric_total("netmeter_attributor_inventory_tenures")
            .unwrap_or(0.0)
    };
    let tenures_before_b = tenures();
    let b_time = now_ms();
    kube.apply(
        Resource::Pods,
        cluster::pod(
            "shop",
            "web-b",
            "node-a",
            &["10.0.0.5"],
            Some(("StatefulSet", "web")),
            "web",
            b_time,
        ),
    );
    assert!(
        netmeter_tests::wait_until(WAIT, || tenures() > tenures_before_b),
        "B's address never reached the inventory"
    );
    // B's traffic, and a late batch from A's time.
    producer
        .send_raw(&raw, &[web_to_db(2, b_time + 1_000), web_to_db(3, a_time)])
        .await
        .unwrap();
    let all = flows(&mut reader, 6, &attributor).await;
    let expected = vec![
        ("web-a".to_string(), "db-0".to_string()),
        ("web-b".to_string(), "db-0".to_string()),
        ("web-a".to_string(), "db-0".to_string()),
    ];
    let mut got = senders(&all);
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want);

    // After a restart (A no longer exists in the API), the persisted inventory still knows.
    let (exit, _) = attributor.sigterm();
    assert!(exit.success(), "{}", attributor.process.log_tail());
    let attributor = start(&stack, &[], &env);
    producer
        .send_raw(&raw, &[web_to_db(4, a_time), web_to_db(5, b_time + 1_000)])
        .await
        .unwrap();
    let all = flows(&mut reader, 10, &attributor).await;
    let restarted: Vec<_> = all
        .iter()
        .filter(|f| f.direction == "out")
        .skip(3)
        .map(|f| f.local_pod.clone())
        .collect();
    let mut restarted_sorted = restarted.clone();
    restarted_sorted.sort();
    assert_eq!(restarted_sorted, ["web-a", "web-b"]);

    // Replay everything: the same record ids, generation 42, the same attribution.
    let output = Command::new(BIN)
        .arg("replay")
        .args(attribution_args())
        .args([
            "--kafka-brokers",
            &stack.kafka_bootstrap(),
            "--log-format",
            "pretty",
        ])
        .args([
            "--from",
            &(a_time - 1).to_string(),
            "--to",
            &(b_time + 60_000).to_string(),
            "--generation",
            "42",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "replay failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (
            summary["batches_replayed"].as_u64(),
            summary["records"].as_u64(),
            summary["generation"].as_u64()
        ),
        (Some(5), Some(10), Some(42))
    );
    let all = flows(&mut reader, 20, &attributor).await;
    let (first_pass, replayed): (Vec<_>, Vec<_>) = all.into_iter().partition(|f| f.generation == 0);
    assert_eq!(replayed.len(), 10);
    let by_id: HashMap<&str, &Flow> = first_pass
        .iter()
        .map(|f| (f.record_id.as_str(), f))
        .collect();
    for r in &replayed {
        let original = by_id
            .get(r.record_id.as_str())
            .unwrap_or_else(|| panic!("replayed id {} unknown", r.record_id));
        assert_eq!(
            Flow {
                generation: 0,
                ..r.clone()
            },
            **original,
            "replay attributes like the first pass"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_mid_stream_every_delta_yields_its_records() {
    let stack = Stack::start().await.unwrap();
    let group_args = ["--kubernetes=false"];
    let mut first = start(&stack, &group_args, &[]);
    // Both replicas share the partitions before the stream starts: the first holds them all
    // before the second joins.
    let assigned = r#"netmeter_attributor_rebalances_total{event="assigned"}"#;
    assert!(
        netmeter_tests::wait_until(WAIT, || first.metric(assigned).is_some_and(|n| n >= 1.0)),
        "the first replica never got its partitions\n{}",
        first.process.log_tail()
    );
    let second = start(&stack, &group_args, &[]);
    let raw = topic(Schema::RawV1);
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let mut reader = TopicReader::new(
        &stack.kafka_bootstrap(),
        &topic(Schema::FlowsV1),
        PARTITIONS,
    )
    .unwrap();

    // 6 nodes x 100 batches x 20 deltas; each delta has traffic both ways: 2 records. Local
    // address and port identify each delta: 10.<node>.<sequence>.1:<1000 + index>.
    let (nodes, batches, deltas) = (6u64, 100u64, 20u64);
    let start_ms = now_ms() - 120_000;
    let make = |node: u64, sequence: u64| {
        let ds = (0..deltas)
            .map(|i| {
                delta(
                    &format!("10.{node}.{sequence}.1"),
                    1000 + i as u16,
                    "52.95.110.1",
                    443,
                    (1000 + i, 2),
                    (500, 1),
                )
            })
            .collect();
        batch(
            &format!("node-{node}"),
            "c1",
            sequence,
            start_ms,
            start_ms + 10_000,
            ds,
        )
    };
    for sequence in 1..=batches {
        let round: Vec<_> = (0..nodes).map(|node| make(node, sequence)).collect();
        producer.send_raw(&raw, &round).await.unwrap();
        if sequence == batches / 2 {
            // Garbage on the topic in the middle of the stream, then kill one replica.
            producer
                .send(&raw, "node-x", b"\x08\x96\x01 not a batch", Some("raw.v1"))
                .await
                .unwrap();
            producer
                .send(&raw, "node-x", b"{}", Some("raw.v9"))
                .await
                .unwrap();
            first.process.kill();
        }
    }
    // Kubernetes restarts a killed replica. (tansu 0.6 keeps the dead member's partitions
    // assigned to it until another member joins; Kafka reassigns them after the session
    // timeout by itself.) The back-off before the restart is the behaviour under test.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _replacement = start(&stack, &group_args, &[]);
    let expected = (nodes * batches * deltas * 2) as usize;
    let complete = read_identities(&mut reader, expected, Duration::from_secs(120)).await;
    let all = reader.flows();
    let mut by_id: HashMap<String, Flow> = HashMap::new();
    let mut duplicates = 0;
    for f in &all {
        if let Some(previous) = by_id.insert(f.record_id.clone(), f.clone()) {
            duplicates += 1;
            assert_eq!(&previous, f, "a duplicate must be identical");
        }
    }
    assert!(
        complete,
        "only {} of {expected} records arrived\nkilled replica:\n{}\nsurvivor:\n{}",
        by_id.len(),
        first.process.log_tail(),
        second.process.log_tail()
    );
    assert_eq!(by_id.len(), expected, "distinct record ids");
    let identities: HashSet<_> = by_id.values().map(identity).collect();
    assert_eq!(
        identities.len(),
        expected,
        "one record id per delta and direction"
    );
    for node in 0..nodes {
        for sequence in 1..=batches {
            for i in 0..deltas {
                let ip = format!("10.{node}.{sequence}.1");
                for direction in ["out", "in"] {
                    assert!(
                        identities.contains(&(ip.clone(), 1000 + i as u32, direction.to_string())),
                        "missing {ip}:{} {direction}",
                        1000 + i
                    );
                }
            }
        }
    }
    let total: u64 = by_id
        .values()
        .filter(|f| f.direction == "out")
        .map(|f| f.bytes)
        .sum();
    assert_eq!(
        total,
        nodes * batches * (0..deltas).map(|i| 1000 + i).sum::<u64>()
    );
    let s3 = by_id.values().next().unwrap();
    assert_eq!(
        (s3.remote_cloud.as_str(), s3.class.as_str()),
        ("aws", "INTER_REGION"),
        "52.95.110.1 is AWS us-east-1: {s3:?}"
    );
    eprintln!(
        "{} records, {duplicates} duplicates after the kill",
        all.len()
    );

    // Both garbage messages were dead-lettered with their reasons.
    let mut dead = TopicReader::new(
        &stack.kafka_bootstrap(),
        &topic(Schema::DeadLetterV1),
        PARTITIONS,
    )
    .unwrap();
    assert!(dead.read_until(WAIT, |m| m.len() >= 2).await);
    let mut reasons: Vec<_> = dead
        .messages
        .iter()
        .map(|m| m.header(DEAD_LETTER_REASON_HEADER).unwrap().to_string())
        .collect();
    reasons.sort();
    assert!(reasons[0].starts_with("invalid protobuf"), "{reasons:?}");
    assert_eq!(
        reasons[1],
        "message schema is `raw.v9`, this consumer reads `raw.v1`"
    );
    assert_eq!(dead.messages.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_no_record() {
    let mut stack = Stack::start().await.unwrap();
    let attributor = start(&stack, &["--kubernetes=false"], &[]);
    let raw = topic(Schema::RawV1);
    let start_ms = now_ms() - 60_000;
    let round = |first: u64| -> Vec<_> {
        (first..first + 40)
            .map(|sequence| {
                let ds = (0..10u16)
                    .map(|i| {
                        delta(
                            &format!("10.0.{sequence}.1"),
                            2000 + i,
                            "203.0.113.5",
                            443,
                            (700, 1),
                            (300, 1),
                        )
                    })
                    .collect();
                batch("node-0", "c1", sequence, start_ms, start_ms + 10_000, ds)
            })
            .collect()
    };
    {
        let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
        producer.send_raw(&raw, &round(1)).await.unwrap();
        // Destroyed in the background, as the services' clients: the broker stops next.
        drop(netmeter_common::consume::Detached::new(producer));
    }
    // The broker goes away for 15 s while the attributor is working, and comes back (the
    // outage under test).
    stack.stop_broker();
    tokio::time::sleep(Duration::from_secs(15)).await;
    stack.start_broker().unwrap();
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    producer.send_raw(&raw, &round(41)).await.unwrap();
    let expected = 80 * 10 * 2;
    let mut reader = TopicReader::new(
        &stack.kafka_bootstrap(),
        &topic(Schema::FlowsV1),
        PARTITIONS,
    )
    .unwrap();
    let complete = read_identities(&mut reader, expected, Duration::from_secs(90)).await;
    let by_id: HashMap<String, Flow> = reader
        .flows()
        .into_iter()
        .map(|f| (f.record_id.clone(), f))
        .collect();
    assert!(
        complete,
        "{} of {expected} records\n{}",
        by_id.len(),
        attributor.process.log_tail()
    );
    assert_eq!(by_id.len(), expected);
    let sent: u64 = by_id
        .values()
        .filter(|f| f.direction == "out")
        .map(|f| f.bytes)
        .sum();
    assert_eq!(sent, 80 * 10 * 700);
}

/// Machines outside Kubernetes, as a rules file describes them to an attributor run with
/// `--kubernetes false`: frontend (us-east-1a, observed by its own collector, node
/// `frontend-vm`) and cart (us-east-1b).
const STATIC_RULES: &str = "\
hosts:
  - name: frontend
    cidrs: [10.20.1.10/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1a
    node: frontend-vm
    workload_kind: VM
    workload_name: frontend
  - name: cart
    cidrs: [10.20.2.20/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1b
    workload_kind: VM
    workload_name: cart
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_hosts_are_attributed_on_both_ends_and_multicast_is_free() {
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, STATIC_RULES).unwrap();
    let attributor = start(
        &stack,
        &["--kubernetes", "false", "--rules", rules.to_str().unwrap()],
        &[],
    );
    let mut reader = TopicReader::new(
        &stack.kafka_bootstrap(),
        &topic(Schema::FlowsV1),
        PARTITIONS,
    )
    .unwrap();
    // What frontend-vm's collector saw in one interval: frontend calls cart; cart calls
    // frontend back (frontend is the destination, and local because it is on frontend-vm);
    // the machine's IGMP membership report.
    let mut igmp = delta("10.20.1.10", 0, "224.0.0.22", 0, (40, 1), (0, 0));
    igmp.protocol = 2;
    let start_ms = now_ms() - 60_000;
    let raw = batch(
        "frontend-vm",
        "collector-vm",
        1,
        start_ms,
        start_ms + 10_000,
        vec![
            delta(
                "10.20.1.10",
                41_000,
                "10.20.2.20",
                8080,
                (3_000_000, 2_100),
                (700_000, 900),
            ),
            delta(
                "10.20.2.20",
                52_000,
                "10.20.1.10",
                8443,
                (5_000, 12),
                (1_000_000, 800),
            ),
            igmp,
        ],
    );
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    producer
        .send_raw(&topic(Schema::RawV1), &[raw])
        .await
        .unwrap();
    let mut records = flows(&mut reader, 5, &attributor).await;
    records.sort_by_key(|f| (f.remote_port, f.direction.clone()));
    for f in &records {
        let local = (
            f.local_workload_kind.as_str(),
            f.local_workload_name.as_str(),
            f.local_cloud.as_str(),
            f.local_region.as_str(),
            f.local_zone.as_str(),
            f.local_node.as_str(),
            f.local_ip.as_str(),
        );
        let frontend = (
            "VM",
            "frontend",
            "aws",
            "us-east-1",
            "us-east-1a",
            "frontend-vm",
            "10.20.1.10",
        );
        assert_eq!(local, frontend, "{f:?}");
    }
    // direction protocol class local port -> remote workload zone address:port, bytes, packets.
    let rows: Vec<String> = records
        .iter()
        .map(|f| {
            format!(
                "{} {} {} :{} -> {} {} {}:{} {} B {} p",
                f.direction,
                f.protocol,
                f.class,
                f.local_port,
                f.remote_workload_name,
                f.remote_zone,
                f.remote_ip,
                f.remote_port,
                f.bytes,
                f.packets
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "out igmp MULTICAST :0 ->   224.0.0.22:0 40 B 1 p",
            "in tcp INTER_ZONE :41000 -> cart us-east-1b 10.20.2.20:8080 700000 B 900 p",
            "out tcp INTER_ZONE :41000 -> cart us-east-1b 10.20.2.20:8080 3000000 B 2100 p",
            "in tcp INTER_ZONE :8443 -> cart us-east-1b 10.20.2.20:52000 5000 B 12 p",
            "out tcp INTER_ZONE :8443 -> cart us-east-1b 10.20.2.20:52000 1000000 B 800 p",
        ]
    );
    let costs: Vec<f64> = records.iter().map(|f| f.cost_usd).collect();
    let inter_zone = |bytes: f64| bytes / GIB * 0.01;
    assert_eq!(
        costs,
        [
            0.0,
            inter_zone(700_000.0),
            inter_zone(3_000_000.0),
            inter_zone(5_000.0),
            inter_zone(1_000_000.0)
        ]
    );

    // The built-in range snapshot is in use, and its age is visible.
    let log = std::fs::read_to_string(&attributor.log).unwrap();
    for cloud in ["aws", "gcp", "azure"] {
        let loaded = log.lines().find(|l| {
            l.contains("cloud ranges loaded")
                && l.contains(&format!("cloud=\"{cloud}\""))
                && l.contains("source=\"embedded\"")
        });
        assert!(loaded.is_some(), "no load line for {cloud}:\n{log}");
    }
    let now_s = now_ms() as f64 / 1000.0;
    for (cloud, published_s) in [
        ("aws", 1_753_388_594.0),
        ("gcp", 1_753_384_588.78),
        ("azure", 1_753_401_600.0),
    ] {
        let sample = format!("netmeter_attributor_cloud_ranges_age_seconds{{cloud=\"{cloud}\"}}");
        let age = attributor
            .metric(&sample)
            .unwrap_or_else(|| panic!("no {sample}"));
        assert!(
            (age - (now_s - published_s)).abs() < 120.0,
            "{sample} {age}, published at {published_s}"
        );
    }
    let snapshot_age_s = now_s - 1_753_388_594.0;
    let max_age_s = netmeter_attributor::cloud::MAX_AGE.as_secs_f64();
    assert_eq!(
        log.contains("cloud ranges are stale"),
        snapshot_age_s > max_age_s,
        "stale warning vs a snapshot {:.0} days old:\n{log}",
        snapshot_age_s / 86_400.0
    );
}
