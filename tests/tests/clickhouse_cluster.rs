//! The sink's cluster mode against two real ClickHouse servers forming a cluster of two shards
//! (one replica each: no Keeper can run here, so `--clickhouse-cluster-replication none`):
//! the schema migrated on both nodes through the sink's own code, rows through the sink's real
//! insert path split by the connection, exact totals through the `Distributed` tables,
//! redeliveries and a replay (that also swaps local and remote) replacing rows on their shard,
//! rollups recomputed per shard adding up; the report on the cluster equal to the report on one
//! server with the same rows; ClickHouse's Kafka engine on both nodes (created by
//! `netmeter-sink migrate --kafka-engine --clickhouse-cluster ...`) filling the `Distributed`
//! `flows`; and the replicated form's DDL (`ON CLUSTER`, `Replicated*MergeTree`) accepted by
//! ClickHouse's parser, statement by statement.

#[path = "../../services/report/tests/fixture/mod.rs"]
mod fixture;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use netmeter_proto::flows::Flow;
use netmeter_proto::{Schema, encode_flow};
use netmeter_report::{Connection, Options, build};
use netmeter_sink::native::NativeBlock;
use netmeter_sink::pipeline;
use netmeter_sink::row::FlowRow;
use netmeter_sink::schema::cluster::{self, CONNECTION_KEY, check_cluster};
use netmeter_sink::schema::{
    Cluster, KafkaEngineSettings, Replication, SCHEMA_VERSION, SchemaSettings, migrate_cluster,
    refresh_rollups_now,
};
use netmeter_tests::Stack;
use netmeter_tests::clickhouse::{run, tsv as text};
use netmeter_tests::clickhouse_cluster::ClickHouseCluster;
use netmeter_tests::records::{TestProducer, now_ms};

const CLUSTER: &str = "netmeter_test";
const DB: &str = "netmeter";

fn sharded(replication: Replication) -> Cluster {
    Cluster::new(CLUSTER, replication)
}

/// Migrates every node (no replication: the DDL runs on each) and returns their reports.
async fn migrate_nodes(
    nodes: &ClickHouseCluster,
    settings: &SchemaSettings,
) -> Vec<netmeter_sink::schema::MigrationReport> {
    let cluster = sharded(Replication::None);
    let mut reports = Vec::new();
    for node in &nodes.nodes {
        let client = node.client();
        check_cluster(&client, &cluster, Some(nodes.nodes.len()))
            .await
            .unwrap();
        reports.push(migrate_cluster(&client, settings, &cluster).await.unwrap());
    }
    reports
}

/// Record `i`: connection `i % 50` (four records each, two intervals, both directions), IPv4
/// pods talking to IPv6 remotes, `1000 + i` bytes, `i / 8` dollars, namespace `shop`.
fn record(i: u64, start_ms: u64) -> Flow {
    let connection = i % 50;
    Flow {
        record_id: format!("00000000-0000-00c1-0000-{i:012x}"),
        generation: 0,
        interval_start_unix_ms: start_ms + (i / 100) * 60_000,
        interval_seconds: 60,
        cluster: "prod".into(),
        direction: if (i / 50).is_multiple_of(2) {
            "out"
        } else {
            "in"
        }
        .into(),
        protocol: if connection.is_multiple_of(4) {
            "udp"
        } else {
            "tcp"
        }
        .into(),
        class: "INTER_ZONE".into(),
        local_zone: "eu-west-1a".into(),
        local_node: format!("node-{}", connection % 3),
        local_namespace: "shop".into(),
        local_workload_kind: "Deployment".into(),
        local_workload_name: "api".into(),
        local_ip: format!("10.0.0.{}", connection + 1),
        local_port: 40_000 + connection as u32,
        remote_zone: "eu-west-1b".into(),
        remote_namespace: "db".into(),
        remote_ip: format!("2001:db8::{connection:x}"),
        remote_port: 5432,
        bytes: 1_000 + i,
        packets: 1 + i % 7,
        cost_usd: i as f64 / 8.0,
        ..Flow::default()
    }
}

/// The same record replayed: a higher generation, another namespace, and for odd connections the
/// endpoints swapped (a replay with more IP history can find the other side on the node).
fn replayed(flow: &Flow) -> Flow {
    let mut replay = Flow {
        generation: 7,
        local_namespace: "checkout".into(),
        ..flow.clone()
    };
    if flow.local_port % 2 == 1 {
        std::mem::swap(&mut replay.local_ip, &mut replay.remote_ip);
        std::mem::swap(&mut replay.local_port, &mut replay.remote_port);
    }
    replay
}

fn rows(flows: &[Flow]) -> Vec<FlowRow> {
    flows
        .iter()
        .map(|f| FlowRow::try_from(f.clone()).unwrap())
        .collect()
}

/// Each node's rows (raw, and FINAL) in `flows_local`, and its distinct connections.
async fn per_shard(nodes: &ClickHouseCluster) -> (Vec<String>, Vec<BTreeSet<String>>) {
    let mut counts = Vec::new();
    let mut connections = Vec::new();
    for node in &nodes.nodes {
        let client = node.client();
        counts.push(
            text(
                &client,
                &format!(
                    "SELECT (SELECT count() FROM {DB}.flows_local), \
                     (SELECT count() FROM {DB}.flows_local FINAL)"
                ),
            )
            .await,
        );
        let sql = format!(
            "SELECT DISTINCT least((local_ip, local_port), (remote_ip, remote_port)) \
             FROM {DB}.flows_local ORDER BY 1"
        );
        connections.push(
            text(&client, &sql)
                .await
                .lines()
                .map(String::from)
                .collect(),
        );
    }
    (counts, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_by_connection_dedup_replay_and_roll_up_exactly() {
    let nodes = ClickHouseCluster::start(CLUSTER, 2).unwrap();
    let settings = SchemaSettings::new(DB);

    // Both nodes migrated from empty, then again: nothing left to do.
    for report in migrate_nodes(&nodes, &settings).await {
        assert_eq!(report.version, SCHEMA_VERSION);
        assert!(!report.is_noop());
    }
    for report in migrate_nodes(&nodes, &settings).await {
        assert!(report.is_noop(), "a second migration changed {report}");
    }
    // The same objects on both nodes; every Distributed table over its own `_local` table on
    // the cluster, flows sharded by the connection; bookkeeping stays local.
    let layout_sql = format!(
        "SELECT name, engine, engine_full LIKE 'Distributed(%' AND \
         engine_full LIKE concat('%\\'', name, '\\_local\\'%') FROM system.tables \
         WHERE database = '{DB}' ORDER BY name"
    );
    let first = text(&nodes.nodes[0].client(), &layout_sql).await;
    assert_eq!(first, text(&nodes.nodes[1].client(), &layout_sql).await);
    let distributed: Vec<&str> = first
        .lines()
        .filter(|l| l.contains("\tDistributed\t"))
        .map(|l| {
            assert!(l.ends_with("\t1"), "{l}");
            l.split('\t').next().unwrap()
        })
        .collect();
    for table in ["flows", "flows_per_minute", "flows_per_hour"] {
        assert!(distributed.contains(&table), "{first}");
    }
    for table in &distributed {
        let local = format!("\n{table}_local\tReplacingMergeTree\t0\n");
        assert!(format!("\n{first}").contains(&local), "{first}");
    }
    for table in ["schema_migrations", "rollup_changes", "rollup_watermarks"] {
        assert!(!distributed.contains(&table));
        assert!(!first.contains(&format!("{table}_local")));
    }
    let flows_engine = text(
        &nodes.nodes[0].client(),
        &format!(
            "SELECT engine_full FROM system.tables WHERE database = '{DB}' AND name = 'flows'"
        ),
    )
    .await;
    assert_eq!(
        flows_engine.trim_end(),
        format!("Distributed(\\'{CLUSTER}\\', \\'{DB}\\', \\'flows_local\\', {CONNECTION_KEY})"),
    );

    // 200 records through the sink's insert path (Native block, dedup token) into node 1's
    // Distributed flows, shard by shard before the insert returns.
    let start = now_ms() / 3_600_000 * 3_600_000 - 3_600_000 + 5 * 60_000;
    let flows: Vec<Flow> = (0..200).map(|i| record(i, start)).collect();
    let client = nodes.nodes[0]
        .client()
        .with_database(DB)
        .with_setting("distributed_foreground_insert", "1");
    let insert = |flows: &[Flow], token: &str| {
        let block = NativeBlock::encode(&rows(flows));
        let client = client.clone();
        let token = token.to_string();
        async move {
            pipeline::insert(&client, "flows", block, &token)
                .await
                .unwrap()
        }
    };
    insert(&flows, "batch-1").await;

    // Where each row must be: shard `key % 2 + 1` of the sharding key, computed on the records
    // themselves in a scratch table, not by the Distributed table.
    let scratch = nodes.nodes[0].client().with_database("default");
    run(
        &scratch,
        &format!("CREATE TABLE sent AS {DB}.flows_local ENGINE = Memory"),
    )
    .await;
    pipeline::insert(&scratch, "sent", NativeBlock::encode(&rows(&flows)), "sent")
        .await
        .unwrap();
    let expected = text(
        &scratch,
        &format!("SELECT {CONNECTION_KEY} % 2 + 1 AS shard, count() FROM sent GROUP BY shard ORDER BY shard"),
    )
    .await;
    let expected: Vec<u64> = expected
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(expected.len(), 2, "both shards get rows");
    assert_eq!(expected.iter().sum::<u64>(), 200);
    assert!(expected.iter().all(|n| n % 4 == 0), "whole connections");
    let per_shard_rows = |raw: u64, shard: usize| format!("{raw}\t{}\n", expected[shard]);
    let (counts, connections) = per_shard(&nodes).await;
    assert_eq!(
        counts,
        [
            per_shard_rows(expected[0], 0),
            per_shard_rows(expected[1], 1)
        ]
    );
    assert!(
        connections[0].is_disjoint(&connections[1]),
        "a connection on both shards"
    );
    assert_eq!(connections[0].len() + connections[1].len(), 50);

    let bytes: u64 = (0..200).map(|i| 1_000 + i).sum();
    let packets: u64 = (0..200).map(|i| 1 + i % 7).sum();
    let dollars: f64 = (0..200).map(|i| i as f64 / 8.0).sum();
    let totals = format!(
        "SELECT count(), sum(bytes), sum(packets), sum(cost_usd), uniqExact(record_id) \
         FROM {DB}.flows FINAL"
    );
    let all = format!("200\t{bytes}\t{packets}\t{dollars}\t200\n");
    assert_eq!(text(&client, &totals).await, all);

    // A retried batch (same token) is dropped on every shard; a redelivery in another batch
    // is stored and replaced on its shard (FINAL).
    insert(&flows, "batch-1").await;
    assert_eq!(
        text(&client, &format!("SELECT count() FROM {DB}.flows")).await,
        "200\n"
    );
    insert(&flows[..100], "batch-2").await;
    assert_eq!(
        text(&client, &format!("SELECT count() FROM {DB}.flows")).await,
        "300\n"
    );
    assert_eq!(text(&client, &totals).await, all);

    // A replay of connections 0-9 (40 records): another namespace, half of them with the
    // endpoints swapped; each lands on the shard of the record it replaces.
    let replay: Vec<Flow> = flows
        .iter()
        .filter(|f| f.local_port < 40_010)
        .map(replayed)
        .collect();
    assert_eq!(replay.len(), 40);
    insert(&replay, "replay-1").await;
    assert_eq!(text(&client, &totals).await, all);
    let (counts, _) = per_shard(&nodes).await;
    let finals: Vec<&str> = counts
        .iter()
        .map(|c| c.trim_end().split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(
        finals,
        [expected[0].to_string(), expected[1].to_string()],
        "the replay replaced, nothing was added"
    );
    let replayed_bytes: u64 = (0..200).filter(|i| i % 50 < 10).map(|i| 1_000 + i).sum();
    let by_namespace = format!(
        "SELECT local_namespace, sum(bytes), sum(packets), count() FROM {DB}.flows FINAL \
         GROUP BY local_namespace ORDER BY local_namespace"
    );
    let namespaces = text(&client, &by_namespace).await;
    let replayed_packets: u64 = (0..200).filter(|i| i % 50 < 10).map(|i| 1 + i % 7).sum();
    assert_eq!(
        namespaces,
        format!(
            "checkout\t{replayed_bytes}\t{replayed_packets}\t40\n\
             shop\t{}\t{}\t160\n",
            bytes - replayed_bytes,
            packets - replayed_packets
        )
    );

    // Rollups: each node recomputes its shard; through the Distributed tables they add up to
    // flows, per namespace; on each node they equal that node's flows_local.
    for node in &nodes.nodes {
        refresh_rollups_now(&node.client(), &settings)
            .await
            .unwrap();
    }
    for rollup in ["connection_minutes", "flows_per_minute", "flows_per_hour"] {
        let sql = format!(
            "SELECT local_namespace, sum(bytes), sum(packets), sum(records) FROM {DB}.{rollup} FINAL \
             GROUP BY local_namespace ORDER BY local_namespace"
        );
        assert_eq!(text(&client, &sql).await, namespaces, "{rollup}");
        for node in &nodes.nodes {
            let node = node.client();
            let local = format!(
                "SELECT local_namespace, sum(bytes), sum(records) FROM {DB}.{rollup}_local FINAL \
                 GROUP BY ALL ORDER BY ALL"
            );
            let source = format!(
                "SELECT local_namespace, sum(bytes), count() FROM {DB}.flows_local FINAL \
                 GROUP BY ALL ORDER BY ALL"
            );
            assert_eq!(text(&node, &local).await, text(&node, &source).await);
        }
    }
    let minutes = format!(
        "SELECT toUnixTimestamp(interval_start) * 1000, sum(bytes) FROM {DB}.flows_per_minute FINAL \
         GROUP BY 1 ORDER BY 1"
    );
    assert_eq!(
        text(&client, &minutes).await,
        format!(
            "{start}\t{}\n{}\t{}\n",
            (0..100).map(|i| 1_000 + i).sum::<u64>(),
            start + 60_000,
            (100..200).map(|i| 1_000 + i).sum::<u64>()
        )
    );
    // Still nothing to migrate once there is data.
    for report in migrate_nodes(&nodes, &settings).await {
        assert!(report.is_noop(), "{report}");
    }
    nodes.stop();
}

/// The report's tables as (section, table, rows): what must not depend on the layout (the SQL
/// text names the database).
fn figures(report: &netmeter_report::model::Report) -> Vec<(String, String, String)> {
    report
        .sections
        .iter()
        .flat_map(|s| {
            s.tables.iter().map(|t| {
                (
                    s.id.to_string(),
                    t.id.to_string(),
                    serde_json::to_string(&t.rows).unwrap(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_on_the_cluster_equals_the_report_on_one_server() {
    let nodes = ClickHouseCluster::start(CLUSTER, 2).unwrap();
    // The report's fixture on node 1 as on a single server (database `netmeter`) ...
    let single = nodes.nodes[0].client();
    let range = fixture::load(&single).await;
    // ... and the same rows (both generations of the replayed one) in a cluster database.
    let settings = SchemaSettings::new("metering");
    let cluster = sharded(Replication::None);
    for node in &nodes.nodes {
        migrate_cluster(&node.client(), &settings, &cluster)
            .await
            .unwrap();
    }
    // Node 2's views do not run yet: its shard's buckets stay pending while node 1's are done.
    let views = |command: &'static str| {
        netmeter_sink::schema::Rollup::ALL
            .map(move |r| format!("SYSTEM {command} VIEW metering.{}", r.refresh_view_name()))
    };
    for statement in views("STOP") {
        run(&nodes.nodes[1].client(), &statement).await;
    }
    run(
        &single
            .clone()
            .with_setting("distributed_foreground_insert", "1"),
        &format!(
            "INSERT INTO metering.flows SELECT * FROM {}.flows",
            fixture::DATABASE
        ),
    )
    .await;
    refresh_rollups_now(&nodes.nodes[0].client(), &settings)
        .await
        .unwrap();
    let url = nodes.nodes[0].url();
    let same_report = |rollups: bool| {
        let url = url.clone();
        async move {
            let options = Options {
                rollups,
                ..Options::new(range)
            };
            let one = build(
                &Connection::new(&url, "default", "", fixture::DATABASE),
                &options,
            )
            .await
            .unwrap();
            let sharded = build(&Connection::new(&url, "default", "", "metering"), &options)
                .await
                .unwrap();
            let (one, sharded) = (figures(&one), figures(&sharded));
            assert!(one.iter().any(|(_, _, rows)| rows.len() > 10));
            assert_eq!(one.len(), sharded.len());
            for (a, b) in one.iter().zip(&sharded) {
                assert_eq!(a, b, "rollups: {rollups}");
            }
        }
    };
    // Asked on node 1, the report sees node 2's pending buckets and reads flows for them.
    same_report(true).await;
    for statement in views("START") {
        run(&nodes.nodes[1].client(), &statement).await;
    }
    refresh_rollups_now(&nodes.nodes[1].client(), &settings)
        .await
        .unwrap();
    let on_shards: Vec<String> = {
        let mut counts = Vec::new();
        for node in &nodes.nodes {
            counts.push(text(&node.client(), "SELECT count() FROM metering.flows_local").await);
        }
        counts
    };
    assert!(
        on_shards.iter().all(|c| c != "0\n"),
        "both shards hold rows: {on_shards:?}"
    );

    for rollups in [true, false] {
        same_report(rollups).await;
    }
    nodes.stop();
}

fn message(records: &[Flow]) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in records {
        encode_flow(r, &mut payload);
    }
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_engine_on_every_node_fills_the_distributed_flows() {
    let stack = Stack::start().await.unwrap();
    let topic = Schema::FlowsV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX);
    // Static membership per node: the broker (tansu) can leave a member that joins a running
    // group with no partitions (see ENVIRONMENT.md); production brokers do not need it.
    let nodes = ClickHouseCluster::start_with(CLUSTER, 2, |shard| {
        format!(
            "  <kafka><kafka_topic><name>{topic}</name>\
             <group_instance_id>node-{shard}</group_instance_id></kafka_topic></kafka>\n"
        )
    })
    .unwrap();
    let schema_file = netmeter_sink::schema::write_format_schema(nodes.dir()).unwrap();

    // The chart's Job: `netmeter-sink migrate --kafka-engine` with the cluster flags.
    let sink = netmeter_tests::workspace_bin("netmeter-sink").unwrap();
    let output = std::process::Command::new(sink)
        .args([
            "migrate",
            "--kafka-engine",
            &format!(
                "--kafka-engine-format-schema={}:Flow",
                schema_file.display()
            ),
            "--kafka-engine-group=netmeter-clickhouse-cluster-test",
        ])
        .env("NETMETER_KAFKA_BROKERS", stack.kafka_bootstrap())
        .env("NETMETER_CLICKHOUSE_URL", nodes.nodes[0].url())
        .env("NETMETER_CLICKHOUSE_CLUSTER", CLUSTER)
        .env("NETMETER_CLICKHOUSE_CLUSTER_REPLICATION", "none")
        .env("NETMETER_CLICKHOUSE_CLUSTER_NODES", nodes.urls().join(","))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for url in nodes.urls() {
        assert!(
            stdout.contains(&format!(
                "{url}: database netmeter at schema version {SCHEMA_VERSION}"
            )),
            "{stdout}"
        );
    }
    for node in &nodes.nodes {
        assert_eq!(
            text(
                &node.client(),
                "SELECT name FROM system.tables WHERE database = 'netmeter' \
                 AND name LIKE 'flows\\_kafka%' ORDER BY name"
            )
            .await,
            "flows_kafka\nflows_kafka_errors\nflows_kafka_errors_mv\nflows_kafka_mv\n"
        );
    }

    // 120 records in 24 messages, then a replay of the first 20 (swapped endpoints included).
    let start = now_ms() / 60_000 * 60_000 - 600_000;
    let flows: Vec<Flow> = (0..120).map(|i| record(i, start)).collect();
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let tag = Some(Schema::FlowsV1.tag());
    for (n, chunk) in flows.chunks(5).enumerate() {
        let key = format!("key-{n}");
        producer
            .send(&topic, &key, &message(chunk), tag)
            .await
            .unwrap();
    }
    let replay: Vec<Flow> = flows[..20].iter().map(replayed).collect();
    producer
        .send(&topic, "node-0", &message(&replay), tag)
        .await
        .unwrap();

    let client = nodes.nodes[0].client();
    let progress = "SELECT count(), countIf(generation = 7) FROM netmeter.flows FINAL";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // The MV's inserts into the Distributed flows are queued on the consuming node; a
        // server sends them on in the background, the test's clickhouse-local only when told.
        for node in &nodes.nodes {
            run(&node.client(), "SYSTEM FLUSH DISTRIBUTED netmeter.flows").await;
        }
        let seen = text(&client, progress).await;
        if seen == "120\t20\n" {
            break;
        }
        if Instant::now() > deadline {
            let mut state = String::new();
            for node in &nodes.nodes {
                for sql in [
                    "SELECT table, error_count, data_files, last_exception \
                     FROM system.distribution_queue",
                    "SELECT table, assignments.partition_id, assignments.current_offset, \
                     num_messages_read, exceptions.text FROM system.kafka_consumers",
                    "SELECT count() FROM netmeter.flows_local",
                    "SELECT error FROM netmeter.flows_kafka_errors",
                ] {
                    state.push_str(&text(&node.client(), sql).await);
                }
                state.push_str("----\n");
            }
            panic!(
                "after 90 s flows FINAL has (rows, replayed) = {seen:?}, expected 120 and 20\n{state}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bytes: u64 = (0..120).map(|i| 1_000 + i).sum();
    let replayed_bytes: u64 = (0..20).map(|i| 1_000 + i).sum();
    assert_eq!(
        text(
            &client,
            "SELECT sum(bytes), sumIf(bytes, local_namespace = 'checkout'), uniqExact(record_id) \
             FROM netmeter.flows FINAL"
        )
        .await,
        format!("{bytes}\t{replayed_bytes}\t120\n")
    );
    // Both nodes consumed (one group, the partitions split between them) ...
    for node in &nodes.nodes {
        let read = text(
            &node.client(),
            "SELECT sum(num_messages_read) > 0 FROM system.kafka_consumers \
             WHERE database = 'netmeter' AND table = 'flows_kafka'",
        )
        .await;
        assert_eq!(read, "1\n", "a node consumed nothing");
    }
    // ... and every row is on the shard of its connection, whichever node consumed it.
    let mut on_shards = Vec::new();
    for (shard, node) in nodes.nodes.iter().enumerate() {
        let misplaced = text(
            &node.client(),
            &format!(
                "SELECT count(), countIf({CONNECTION_KEY} % 2 != {shard}) \
                 FROM netmeter.flows_local FINAL"
            ),
        )
        .await;
        let (count, wrong) = misplaced.trim_end().split_once('\t').unwrap();
        assert_eq!(wrong, "0", "node {shard}");
        on_shards.push(count.parse::<u64>().unwrap());
    }
    assert!(on_shards.iter().all(|n| *n > 0), "{on_shards:?}");
    assert_eq!(on_shards.iter().sum::<u64>(), 120);
    nodes.stop();
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicated_ddl_parses_statement_by_statement() {
    // ON CLUSTER DDL and Replicated engines cannot run without Keeper; ClickHouse's parser is
    // the check that each statement is well-formed.
    let nodes = ClickHouseCluster::start(CLUSTER, 1).unwrap();
    let client = nodes.nodes[0].client();
    let settings = SchemaSettings::new(DB);
    let kafka = KafkaEngineSettings::new("kafka:9092", "netmeter.flows.v1");
    let keeper = sharded(Replication::Keeper);
    let statements = cluster::ddl_statements(&settings, Some(&kafka), &keeper);
    assert!(statements.len() > 20);
    let mut replicated = 0;
    for statement in &statements {
        let formatted = client
            .query_raw("SELECT formatQuery({sql:String})")
            .param("sql", statement)
            .fetch_one::<String>()
            .await
            .unwrap_or_else(|e| panic!("ClickHouse cannot parse\n{statement}\n{e}"));
        if !statement.starts_with("INSERT") {
            assert!(
                formatted.contains(&format!(" ON CLUSTER {CLUSTER}")),
                "{formatted}"
            );
        }
        replicated += usize::from(formatted.contains("ENGINE = Replicated"));
    }
    assert!(replicated >= 4, "{replicated}");
    // Without replication the same schema runs on each node; here on one, as a one-shard cluster.
    let none = sharded(Replication::None);
    migrate_cluster(&client, &settings, &none).await.unwrap();
    nodes.stop();
}
