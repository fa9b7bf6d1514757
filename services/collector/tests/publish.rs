//! The collector publishing through the real broker while the broker goes away for 30 s:
//! every batch arrives, in order, none twice, and the bytes add up to the kernel's counter.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use netmeter_collector::Args;
use netmeter_common::ServiceContext;
use netmeter_proto::{DEFAULT_TOPIC_PREFIX, Schema};
use netmeter_tests::netns::{self, NodeTopology};
use netmeter_tests::records::{ReadMessage, TopicReader};
use netmeter_tests::{Stack, broker};

const OUTAGE_SECS: u64 = 30;

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_of_30s_loses_nothing_and_duplicates_nothing() {
    let mut stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    let node_ns = topology.node_ns_path();
    let state_dir = tempfile::tempdir().unwrap();
    let args = Args::try_parse_from([
        "netmeter-collector",
        "--node-name=node-a",
        "--interval=1s",
        &format!("--netns={}", node_ns.display()),
        &format!("--kafka-brokers={}", stack.kafka_bootstrap()),
        &format!("--state-dir={}", state_dir.path().display()),
    ])
    .unwrap();
    let config = args.validate().unwrap();
    let ctx = ServiceContext::default();
    let collector = tokio::spawn(netmeter_collector::run(config, ctx.clone()));
    // Ready once the baseline is taken: what moves from now on is counted.
    let ready = || ctx.health.is_ready();
    assert!(
        tokio::task::block_in_place(|| netmeter_tests::wait_until(Duration::from_secs(30), ready)),
        "the collector never took its baseline"
    );

    // One UDP flow, 20 datagrams of 500 B every 250 ms for 45 s (3600 datagrams in all).
    let to: SocketAddr = (netns::POD_B_V4, 5353).into();
    let _sink = netns::udp_sink(topology.pod_b_ns_name(), to).unwrap();
    let pod_a = topology.pod_a_ns_name().to_string();
    let sender = tokio::task::spawn_blocking(move || {
        netns::in_netns(&pod_a, move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..180 {
                for _ in 0..20 {
                    socket.send_to(&[0; 500], to).unwrap();
                }
                // Pacing: the flow lasts through the outage.
                std::thread::sleep(Duration::from_millis(250));
            }
            socket.local_addr().unwrap()
        })
        .unwrap()
    });
    // The timeline under test: 5 s of traffic, then the outage of OUTAGE_SECS.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stack.stop_broker();
    tokio::time::sleep(Duration::from_secs(OUTAGE_SECS)).await;
    stack.start_broker().unwrap();
    let port = sender.await.unwrap();
    // Batches that were in flight at the outage are retried for up to 10 s, then resent: wait
    // until the topic holds every byte the flow sent (3600 datagrams of 528 B on the wire).
    let topic = Schema::RawV1.topic(DEFAULT_TOPIC_PREFIX);
    let mut reader = TopicReader::new(
        &stack.kafka_bootstrap(),
        &topic,
        netmeter_tests::stack::PARTITIONS,
    )
    .unwrap();
    let flow_bytes = |messages: &[ReadMessage]| -> u64 {
        (messages.iter())
            .filter_map(|m| netmeter_proto::decode_batch(&m.payload).ok())
            .flat_map(|b| b.deltas)
            .filter(|d| (d.original.as_ref()).is_some_and(|t| t.src_port == u32::from(port.port())))
            .map(|d| d.orig_bytes)
            .sum()
    };
    let all_published = reader
        .read_until(Duration::from_secs(60), |m| flow_bytes(m) >= 3600 * 528)
        .await;
    assert!(
        all_published,
        "published {} of {} bytes",
        flow_bytes(&reader.messages),
        3600 * 528
    );

    let kernel = netns::conntrack_list(topology.node_ns_name()).unwrap();
    let kernel = kernel
        .iter()
        .find(|e| e.protocol == 17 && e.orig.sport == port.port())
        .expect("live UDP flow");
    assert_eq!((kernel.orig.packets, kernel.orig.bytes), (3600, 3600 * 528));
    ctx.shutdown.cancel();
    collector.await.unwrap().unwrap();

    let records = broker::read_topic(
        &stack.kafka_bootstrap(),
        &topic,
        netmeter_tests::stack::PARTITIONS,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.key.as_deref() == Some(&b"node-a"[..])
                && r.schema_header.as_deref() == Some(&b"raw.v1"[..]))
    );
    assert!(
        records.windows(2).all(|w| w[0].partition == w[1].partition),
        "one key, one partition"
    );
    let batches: Vec<_> = records
        .iter()
        .map(|r| netmeter_proto::decode_batch(&r.payload).unwrap())
        .collect();
    let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "every batch, in order, none twice");
    assert!(
        sequences.len() >= 45,
        "one batch per 1 s interval over ~50 s, got {}",
        sequences.len()
    );
    let bytes: u64 = batches
        .iter()
        .flat_map(|b| &b.deltas)
        .filter(|d| {
            d.original
                .as_ref()
                .is_some_and(|t| t.src_port == u32::from(port.port()))
        })
        .map(|d| d.orig_bytes)
        .sum();
    assert_eq!(
        bytes, kernel.orig.bytes,
        "published deltas add up to the kernel's counter"
    );
}
