//! The sink between the real broker and the real ClickHouse: a million records arrive exactly
//! once; a SIGKILL mid-batch and a 30 s ClickHouse outage lose nothing and store nothing twice;
//! a replayed range leaves totals equal to a single pass; garbage goes to the dead-letter topic.

use std::path::Path;
use std::time::{Duration, Instant};

use netmeter_proto::{EndpointView, FlowView, Schema};
use netmeter_tests::Stack;
use netmeter_tests::records::{TestProducer, TopicReader};
use netmeter_tests::service::RunningService;
use netmeter_tests::stack::PARTITIONS;

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-sink");

/// The first interval: a day ago at the start of a minute, inside `flows`' `--record-ttl-days`
/// (a record older than that expires on arrival).
fn t0() -> u64 {
    static T0: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        (now - 86_400_000) / 60_000 * 60_000
    })
}

fn flows_topic() -> String {
    Schema::FlowsV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX)
}

/// The local node's instance type of record `i % 3`; empty: a node without the label.
const INSTANCE_TYPES: [&str; 3] = ["m6i.large", "r6i.xlarge", ""];

/// Record `i`: unique id, `i % 1000 + 1` bytes, a workload chosen by `i % 7`, opened by the
/// local endpoint if `i % 4 < 2`, on a node of instance type `INSTANCE_TYPES[i % 3]`.
fn record(i: u64, generation: u64, namespace: &str, out: &mut Vec<u8>) {
    let id = uuid::Uuid::from_u128(0x8000_0000_0000_8000_8000_0000_0000_0000 | u128::from(i))
        .to_string();
    let workload = format!("w{}", i % 7);
    let endpoint = |ip: &str, port| EndpointView {
        cloud: "aws",
        region: "eu-west-1",
        zone: "eu-west-1a",
        node: "node-a",
        namespace,
        pod: "",
        workload_kind: "Deployment",
        workload_name: &workload,
        app: "",
        ip: ip.parse().unwrap(),
        port,
        host_network: false,
    };
    FlowView {
        record_id: &id,
        generation,
        interval_start_unix_ms: t0() + (i / 1000) * 10_000,
        interval_seconds: 10,
        cluster: "test",
        direction: if i.is_multiple_of(2) { "out" } else { "in" },
        protocol: "tcp",
        class: "INTER_ZONE",
        path: "",
        local: endpoint("10.0.0.5", 40_000),
        local_initiated: i % 4 < 2,
        local_instance_type: INSTANCE_TYPES[(i % 3) as usize],
        remote: endpoint("fd00::7", 443),
        remote_service: "",
        remote_network: "",
        remote_geo: Default::default(),
        bytes: i % 1000 + 1,
        packets: 1,
        cost_usd: 0.0,
        processing_cost_usd: 0.0,
    }
    .encode_length_delimited(out);
}

fn expected_bytes(range: std::ops::Range<u64>) -> u64 {
    range.map(|i| i % 1000 + 1).sum()
}

/// Publishes records `range` in messages of `per_message` records.
async fn publish(
    producer: &TestProducer,
    range: std::ops::Range<u64>,
    per_message: u64,
    generation: u64,
    namespace: &str,
) {
    let ids: Vec<u64> = range.collect();
    for chunk in ids.chunks(per_message as usize) {
        let mut payload = Vec::new();
        for &i in chunk {
            record(i, generation, namespace, &mut payload);
        }
        producer
            .send(&flows_topic(), "node-a", &payload, Some("flows.v1"))
            .await
            .unwrap();
    }
}

fn start(stack: &Stack) -> RunningService {
    let args = [
        "--batch-rows",
        "50000",
        "--batch-age",
        "2s",
        "--kafka-option",
        "session.timeout.ms=6000",
        "--kafka-option",
        "heartbeat.interval.ms=500",
        // A sink that stops polling during an outage is expelled after this long.
        "--kafka-option",
        "max.poll.interval.ms=10000",
    ];
    let mut sink = RunningService::start(Path::new(BIN), stack, &args).unwrap();
    sink.wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", sink.process.log_tail()));
    sink
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct Totals {
    rows: u64,
    distinct_ids: u64,
    bytes: u64,
}

async fn totals(stack: &Stack) -> Totals {
    stack
        .clickhouse_client()
        .query("SELECT count() AS rows, uniqExact(record_id) AS distinct_ids, sum(bytes) AS bytes FROM netmeter.flows FINAL")
        .fetch_one()
        .await
        .unwrap_or(Totals { rows: 0, distinct_ids: 0, bytes: 0 })
}

/// Waits until the table holds `rows` rows (after dedup) or `timeout` passes.
async fn wait_rows(stack: &Stack, rows: u64, timeout: Duration, sink: &RunningService) -> Totals {
    let deadline = Instant::now() + timeout;
    loop {
        let t = totals(stack).await;
        if t.rows >= rows || Instant::now() > deadline {
            assert_eq!(
                t.rows,
                rows,
                "rows after {timeout:?}\n{}",
                sink.process.log_tail()
            );
            return t;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_arrive_exactly_once() {
    let stack = Stack::start().await.unwrap();
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let n = 1_000_000;
    let started = Instant::now();
    publish(&producer, 0..n, 2_000, 0, "shop").await;
    eprintln!("published {n} records in {:?}", started.elapsed());
    let sink = start(&stack);
    let t = wait_rows(&stack, n, Duration::from_secs(240), &sink).await;
    assert_eq!(
        t,
        Totals {
            rows: n,
            distinct_ids: n,
            bytes: expected_bytes(0..n)
        }
    );
    // Without FINAL too: nothing was stored twice.
    let raw: u64 = stack
        .clickhouse_client()
        .query("SELECT count() FROM netmeter.flows")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(raw, n);
    // Every 12 records hold each (i % 4 < 2, i % 3) pair twice: 1,000,000 = 12 * 83,333 + 4, and
    // the last 4 add (true, 0), (true, 1), (false, 2) and (false, 0).
    assert_eq!(
        netmeter_tests::clickhouse::query_text(
            &stack.clickhouse_client(),
            "SELECT local_initiated, local_instance_type, count() FROM netmeter.flows FINAL \
             GROUP BY ALL ORDER BY ALL",
            "TabSeparated"
        )
        .await,
        "false\t\t166667\n\
         false\tm6i.large\t166667\n\
         false\tr6i.xlarge\t166666\n\
         true\t\t166666\n\
         true\tm6i.large\t166667\n\
         true\tr6i.xlarge\t166667\n",
        "the initiator and the instance type arrive with every record"
    );
    assert_eq!(
        sink.metric("netmeter_sink_rows_inserted_total"),
        Some(n as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_batch_and_a_clickhouse_outage_lose_nothing_and_double_nothing() {
    let mut stack = Stack::start().await.unwrap();
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let mut sink = start(&stack);
    publish(&producer, 0..100_000, 1_000, 0, "shop").await;
    // Killed while batches are being read and written (the pacing under test).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sink.process.kill();
    publish(&producer, 100_000..200_000, 1_000, 0, "shop").await;
    // Kubernetes restarts it; tansu needs the dead member's session to expire first (the
    // restart back-off under test).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sink = start(&stack);
    wait_rows(&stack, 200_000, Duration::from_secs(120), &sink).await;

    // ClickHouse goes away for 30 s while records keep coming.
    stack.stop_clickhouse();
    publish(&producer, 200_000..300_000, 1_000, 0, "shop").await;
    // The outage under test lasts 30 s.
    tokio::time::sleep(Duration::from_secs(30)).await;
    stack.start_clickhouse().unwrap();
    let t = wait_rows(&stack, 300_000, Duration::from_secs(120), &sink).await;
    assert_eq!(
        t,
        Totals {
            rows: 300_000,
            distinct_ids: 300_000,
            bytes: expected_bytes(0..300_000)
        }
    );
    assert!(
        sink.metric("netmeter_sink_insert_retries_total")
            .unwrap_or(0.0)
            >= 1.0,
        "the outage was noticed"
    );
    // Paused, not silent: the group kept the sink through an outage 3x `max.poll.interval.ms`.
    assert_eq!(
        sink.metric("netmeter_sink_rebalances_total{event=\"revoked\"}"),
        None,
        "{}",
        sink.process.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_range_leaves_single_pass_totals_and_garbage_is_dead_lettered() {
    let stack = Stack::start().await.unwrap();
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let sink = start(&stack);
    publish(&producer, 0..20_000, 1_000, 0, "old-namespace").await;
    wait_rows(&stack, 20_000, Duration::from_secs(60), &sink).await;
    // The same records again (a redelivery), then a replay of half of them with a new
    // attribution and a higher generation.
    publish(&producer, 0..20_000, 1_000, 0, "old-namespace").await;
    publish(&producer, 0..10_000, 1_000, 42, "new-namespace").await;
    producer
        .send(
            &flows_topic(),
            "node-x",
            b"\x0a\x05garbage-not-a-flow",
            Some("flows.v1"),
        )
        .await
        .unwrap();
    producer
        .send(&flows_topic(), "node-x", b"{}", None)
        .await
        .unwrap();
    let mut dead = TopicReader::new(
        &stack.kafka_bootstrap(),
        &Schema::DeadLetterV1.topic("netmeter."),
        PARTITIONS,
    )
    .unwrap();
    assert!(
        dead.read_until(Duration::from_secs(60), |m| m.len() >= 2)
            .await,
        "{}",
        sink.process.log_tail()
    );
    // Everything consumed: wait until the last of it, the replay, has landed, then compare.
    let replayed = "SELECT count() FROM netmeter.flows FINAL WHERE generation = 42";
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let rows: u64 = (stack.clickhouse_client().query(replayed))
            .fetch_one()
            .await
            .unwrap_or(0);
        if rows == 10_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t = totals(&stack).await;
    assert_eq!(
        t,
        Totals {
            rows: 20_000,
            distinct_ids: 20_000,
            bytes: expected_bytes(0..20_000)
        }
    );
    #[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
    struct ByNamespace {
        namespace: String,
        generation: u64,
        rows: u64,
    }
    let by_namespace: Vec<ByNamespace> = stack
        .clickhouse_client()
        .query("SELECT local_namespace AS namespace, generation, count() AS rows FROM netmeter.flows FINAL GROUP BY 1, 2 ORDER BY 1")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        by_namespace,
        [
            ByNamespace {
                namespace: "new-namespace".into(),
                generation: 42,
                rows: 10_000
            },
            ByNamespace {
                namespace: "old-namespace".into(),
                generation: 0,
                rows: 10_000
            },
        ]
    );
    assert_eq!(dead.messages.len(), 2);
}
