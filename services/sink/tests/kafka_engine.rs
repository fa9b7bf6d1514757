//! The Kafka-engine path: ClickHouse itself reads the flows topic from the real broker, with
//! `flow.proto` as its format schema, into the same `flows` table the sink writes.

use std::time::{Duration, Instant};

use netmeter_proto::flows::Flow;
use netmeter_proto::{Schema, encode_flow};
use netmeter_sink::schema::{self, KafkaEngineSettings, SchemaSettings};
use netmeter_tests::Stack;
use netmeter_tests::clickhouse::tsv as text;
use netmeter_tests::records::{TestProducer, now_ms};

/// Record `i` of the scenario: IPv4 locals, IPv6 remotes, `1000 + i` bytes, `i / 4` dollars;
/// opened by the local endpoint unless `i % 5 == 4`; on an m6i.large node below 50, r6i.xlarge
/// below 90, and on a node without an instance type label from 90 on.
fn record(i: u64, start_ms: u64) -> Flow {
    Flow {
        record_id: uuid::Uuid::from_u128(0xf10e_0000 + i as u128).to_string(),
        generation: 0,
        interval_start_unix_ms: start_ms,
        interval_seconds: 5,
        cluster: "prod".into(),
        direction: if i.is_multiple_of(2) { "out" } else { "in" }.into(),
        protocol: "tcp".into(),
        class: "INTER_ZONE".into(),
        local_zone: "eu-west-1a".into(),
        local_node: format!("node-{}", i % 3),
        local_namespace: "shop".into(),
        local_pod: format!("api-{i}"),
        local_workload_kind: "Deployment".into(),
        local_workload_name: "api".into(),
        local_ip: format!("10.0.{}.{}", i / 256, i % 256),
        local_port: 40_000 + i as u32,
        local_initiated: i % 5 != 4,
        local_instance_type: match i {
            0..50 => "m6i.large",
            50..90 => "r6i.xlarge",
            _ => "",
        }
        .into(),
        remote_zone: "eu-west-1b".into(),
        remote_namespace: "db".into(),
        remote_ip: format!("2001:db8::{i:x}"),
        remote_port: 5432,
        remote_network: "peering".into(),
        bytes: 1_000 + i,
        packets: 1 + i % 7,
        cost_usd: i as f64 / 4.0,
        ..Flow::default()
    }
}

fn message(records: &[Flow]) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in records {
        encode_flow(r, &mut payload);
    }
    payload
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_reads_the_flows_topic_into_flows() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let settings = SchemaSettings::default();
    schema::migrate(&client, &settings).await.unwrap();
    let topic = Schema::FlowsV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX);
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let tag = Some(Schema::FlowsV1.tag());

    // 20 messages of 5 records: 100 records.
    let start = now_ms() / 60_000 * 60_000 - 3_600_000;
    let records: Vec<Flow> = (0..100).map(|i| record(i, start)).collect();
    for (n, chunk) in records.chunks(5).enumerate() {
        let node = format!("node-{}", n % 3);
        producer
            .send(&topic, &node, &message(chunk), tag)
            .await
            .unwrap();
    }
    // A redelivered message, and a replay re-attributing records 0..10 to another namespace.
    producer
        .send(&topic, "node-0", &message(&records[..5]), tag)
        .await
        .unwrap();
    let replayed: Vec<Flow> = records[..10]
        .iter()
        .map(|r| Flow {
            generation: 9,
            local_namespace: "checkout".into(),
            ..r.clone()
        })
        .collect();
    producer
        .send(&topic, "node-0", &message(&replayed), tag)
        .await
        .unwrap();
    // Rejects: a raw batch header, a payload that is not protobuf, a record id that is no UUID.
    producer
        .send(
            &topic,
            "node-1",
            &message(&[record(500, start)]),
            Some(Schema::RawV1.tag()),
        )
        .await
        .unwrap();
    producer
        .send(
            &topic,
            "node-1",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01garbage",
            tag,
        )
        .await
        .unwrap();
    let bad_id = Flow {
        record_id: "not-a-uuid".into(),
        ..record(501, start)
    };
    producer
        .send(&topic, "node-2", &message(&[bad_id]), tag)
        .await
        .unwrap();

    // ClickHouse reads the format schema from its working directory (the launcher's data dir).
    schema::write_format_schema(&stack.dir().join("clickhouse")).unwrap();
    let kafka = KafkaEngineSettings {
        group: "netmeter-clickhouse-test".into(),
        ..KafkaEngineSettings::new(stack.kafka_bootstrap(), &topic)
    };
    schema::create_kafka_engine(&client, &settings, &kafka)
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = "SELECT count(), countIf(generation = 9) FROM netmeter.flows FINAL";
    loop {
        let seen = text(&client, progress).await;
        if seen == "100\t10\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s flows FINAL has (rows, replayed) = {seen:?}, expected 100 and 10; errors: {}",
            text(&client, "SELECT error FROM netmeter.flows_kafka_errors").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let expected_bytes: u64 = (0..100).map(|i| 1_000 + i).sum();
    let expected_cost: f64 = (0..100).map(|i| i as f64 / 4.0).sum();
    assert_eq!(
        text(
            &client,
            "SELECT sum(bytes), sum(cost_usd), countIf(local_namespace = 'checkout'), \
             uniqExact(record_id), min(interval_start_unix_ms), max(interval_start_unix_ms) \
             FROM netmeter.flows FINAL"
        )
        .await,
        format!("{expected_bytes}\t{expected_cost}\t10\t100\t{start}\t{start}\n")
    );
    assert_eq!(
        text(
            &client,
            "SELECT toString(record_id), generation, local_namespace, toString(local_ip), local_port, \
             local_initiated, local_instance_type, \
             toString(remote_ip), remote_port, remote_network, direction, bytes, cost_usd, \
             toUnixTimestamp64Milli(interval_start) \
             FROM netmeter.flows FINAL WHERE bytes IN (1003, 1099) ORDER BY bytes"
        )
        .await,
        format!(
            "00000000-0000-0000-0000-0000f10e0003\t9\tcheckout\t::ffff:10.0.0.3\t40003\ttrue\tm6i.large\t2001:db8::3\t5432\tpeering\tin\t1003\t0.75\t{start}\n\
             00000000-0000-0000-0000-0000f10e0063\t0\tshop\t::ffff:10.0.0.99\t40099\tfalse\t\t2001:db8::63\t5432\tpeering\tin\t1099\t24.75\t{start}\n"
        ),
        "ids, addresses (IPv4 mapped), ports, the initiator, the instance type and the replay's \
         attribution arrive exactly"
    );
    assert_eq!(
        text(
            &client,
            "SELECT local_initiated, local_instance_type, count() FROM netmeter.flows FINAL \
             GROUP BY ALL ORDER BY ALL"
        )
        .await,
        "false\t\t2\n\
         false\tm6i.large\t10\n\
         false\tr6i.xlarge\t8\n\
         true\t\t8\n\
         true\tm6i.large\t40\n\
         true\tr6i.xlarge\t32\n",
        "a false and an empty field (which protobuf leaves out) read as false and empty"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let errors = "SELECT error FROM netmeter.flows_kafka_errors ORDER BY kafka_offset";
    loop {
        let seen = text(&client, errors).await;
        if seen.lines().count() >= 3 || Instant::now() >= deadline {
            let lines: Vec<&str> = seen.lines().collect();
            assert_eq!(lines.len(), 3, "{seen}");
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| **l == "the netmeter-schema header is raw.v1, expected flows.v1")
                    .count(),
                1,
                "{seen}"
            );
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| **l == "record_id \"not-a-uuid\" is not a UUID")
                    .count(),
                1,
                "{seen}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The Kafka engine's rows flow on into the rollups like the sink's.
    schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    assert_eq!(
        text(
            &client,
            "SELECT local_namespace, sum(bytes), sum(records) FROM netmeter.flows_per_hour FINAL \
             GROUP BY local_namespace ORDER BY local_namespace"
        )
        .await,
        format!(
            "checkout\t{}\t10\nshop\t{}\t90\n",
            (0..10).map(|i| 1_000 + i).sum::<u64>(),
            (10..100).map(|i| 1_000 + i).sum::<u64>()
        )
    );
    stack.stop();
}
