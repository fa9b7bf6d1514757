//! The local stack is real: a raw batch goes through the real broker, rows go through the
//! real ClickHouse, and everything is gone after teardown.

use std::net::Ipv4Addr;
use std::time::Duration;

use netmeter_proto::raw::{AddressFamily, ConnectionDelta, ConntrackBatch, Tuple};
use netmeter_proto::{DEFAULT_TOPIC_PREFIX, SCHEMA_HEADER, Schema};
use netmeter_tests::{Stack, broker};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn batch() -> ConntrackBatch {
    ConntrackBatch {
        node_name: "node-a".into(),
        collector_instance_id: "c0ffee".into(),
        sequence: 1,
        interval_start_unix_ms: 1_764_000_000_000,
        interval_end_unix_ms: 1_764_000_005_000,
        deltas: (0..100u32)
            .map(|i| ConnectionDelta {
                family: AddressFamily::Ipv4 as i32,
                protocol: 6,
                original: Some(Tuple {
                    src: vec![10, 0, 0, 5],
                    dst: vec![10, 0, 1, 7],
                    src_port: 40_000 + i,
                    dst_port: 80,
                }),
                reply: Some(Tuple {
                    src: vec![10, 0, 1, 7],
                    dst: vec![10, 0, 0, 5],
                    src_port: 80,
                    dst_port: 40_000 + i,
                }),
                conntrack_id: i,
                orig_bytes: 1_000 + u64::from(i),
                orig_packets: 2,
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_batch_through_the_broker_and_rows_through_clickhouse() {
    let stack = Stack::start().await.unwrap();
    let topic = Schema::RawV1.topic(DEFAULT_TOPIC_PREFIX);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .create()
        .unwrap();
    let sent = batch();
    let payload = netmeter_proto::encode_batch(&sent);
    let headers = OwnedHeaders::new().insert(Header {
        key: SCHEMA_HEADER,
        value: Some(Schema::RawV1.tag()),
    });
    let record = FutureRecord::to(&topic)
        .key("node-a")
        .payload(&payload)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let records = broker::read_topic(
        &stack.kafka_bootstrap(),
        &topic,
        netmeter_tests::stack::PARTITIONS,
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert_eq!(records.len(), 1, "exactly the one batch");
    let message = &records[0];
    assert_eq!(message.key.as_deref(), Some(&b"node-a"[..]));
    Schema::RawV1
        .check_header(message.schema_header.as_deref())
        .unwrap();
    let received = netmeter_proto::decode_batch(&message.payload).unwrap();
    assert_eq!(received, sent);

    let client = stack.clickhouse_client();
    client
        .query("CREATE TABLE deltas (node LowCardinality(String), src IPv4, bytes UInt64) ENGINE = MergeTree ORDER BY node")
        .execute()
        .await
        .unwrap();
    #[derive(clickhouse::Row, serde::Serialize)]
    struct Row {
        node: String,
        #[serde(with = "clickhouse::serde::ipv4")]
        src: Ipv4Addr,
        bytes: u64,
    }
    let mut insert = client.insert::<Row>("deltas").await.unwrap();
    for delta in &received.deltas {
        let src: [u8; 4] = delta
            .original
            .as_ref()
            .unwrap()
            .src
            .as_slice()
            .try_into()
            .unwrap();
        insert
            .write(&Row {
                node: received.node_name.clone(),
                src: src.into(),
                bytes: delta.orig_bytes,
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();
    let (rows, bytes, src) = client
        .query("SELECT count(), sum(bytes), toString(any(src)) FROM deltas WHERE node = 'node-a'")
        .fetch_one::<(u64, u64, String)>()
        .await
        .unwrap();
    assert_eq!(rows, 100);
    assert_eq!(bytes, 100 * 1_000 + (0..100).sum::<u64>()); // 104_950
    assert_eq!(src, "10.0.0.5");
    let version = client
        .query("SELECT version()")
        .fetch_one::<String>()
        .await
        .unwrap();
    assert!(
        version.starts_with("26.7."),
        "the real 26.7 engine, got {version}"
    );

    drop(producer);
    let (dir, kafka_port, http_port) = (
        stack.dir().to_path_buf(),
        stack.kafka_port,
        stack.clickhouse_http_port,
    );
    stack.stop();
    assert!(!dir.exists(), "data and logs are deleted");
    assert!(!broker::is_ready(kafka_port), "broker port closed");
    assert!(
        !netmeter_tests::clickhouse::is_ready(http_port),
        "ClickHouse port closed"
    );
}

/// Creating topics outlasts a broker that does not answer for longer than a request may take
/// (frozen: its connections stay open): the request is sent again until the broker answers,
/// and the topic then exists with its partitions.
#[tokio::test(flavor = "multi_thread")]
async fn topics_are_created_once_a_silent_broker_answers() {
    let stack = Stack::start().await.unwrap();
    let bootstrap = stack.kafka_bootstrap();
    let topic = "netmeter.late.v1".to_string();
    stack.freeze_broker();
    let creating = tokio::spawn({
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        async move { broker::create_topics(&bootstrap, &[topic], 3).await }
    });
    let silence = broker::CREATE_TOPICS_REQUEST_TIMEOUT + Duration::from_secs(3);
    tokio::time::sleep(silence).await;
    stack.thaw_broker();
    let gave_up = creating.is_finished();
    let created = creating.await.unwrap();
    assert!(
        !gave_up,
        "finished while the broker was silent: {created:?}"
    );
    created.unwrap();
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(
        &consumer,
        Some(&topic),
        Duration::from_secs(10),
    )
    .unwrap();
    let found = &metadata.topics()[0];
    assert_eq!((found.name(), found.error()), (topic.as_str(), None));
    assert_eq!(found.partitions().len(), 3);
}
