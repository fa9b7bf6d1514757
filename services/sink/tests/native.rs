//! The sink's own `Native` encoder against the real ClickHouse 26.7: every column of every row
//! comes back exactly as it went in, through all three index widths of `LowCardinality`
//! dictionaries, empty and non-ASCII strings, IPv4 and IPv6, and the extremes of every number.

use std::net::{Ipv4Addr, Ipv6Addr};

use netmeter_sink::native::NativeBlock;
use netmeter_sink::pipeline;
use netmeter_sink::row::FlowRow;
use netmeter_sink::schema::{SchemaSettings, migrate};
use netmeter_tests::Stack;
use netmeter_tests::records::now_ms;

/// 70,000 rows, so `local_app` (one value per row) needs 32-bit indexes, `remote_app` (1,000
/// values) 16-bit ones and `class` (3 values) 8-bit ones.
const ROWS: u64 = 70_000;

/// The local node's instance type of row `i % 3`; empty: a node without the label.
const INSTANCE_TYPES: [&str; 3] = ["m6i.large", "r6i.xlarge", ""];

fn row(i: u64, start_ms: u64) -> FlowRow {
    let text = |n: u64| match n % 4 {
        0 => String::new(),
        1 => format!("zone-ü-東京-{n}"),
        2 => format!("quote ' backslash \\ tab \t newline \n {n}"),
        _ => "x".repeat(300),
    };
    FlowRow {
        record_id: uuid::Uuid::from_u128(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)),
        generation: if i.is_multiple_of(3) { u64::MAX } else { i },
        interval_start_unix_ms: start_ms + i,
        interval_seconds: if i.is_multiple_of(2) { 10 } else { u32::MAX },
        cluster: "prod".into(),
        direction: if i.is_multiple_of(2) { "out" } else { "in" }.into(),
        protocol: text(i / 7),
        class: ["INTRA_ZONE", "INTER_ZONE", ""][(i % 3) as usize].into(),
        path: String::new(),
        local_cloud: "aws".into(),
        local_region: text(i),
        local_zone: text(i + 1),
        local_node: format!("node-{}", i % 100),
        local_namespace: format!("ns-{}", i % 20),
        local_pod: format!("pod-{i}"),
        local_workload_kind: "Deployment".into(),
        local_workload_name: format!("w-{}", i % 600),
        local_app: format!("app-{i}"),
        local_ip: Ipv4Addr::from(0x0a00_0000 + i as u32).to_ipv6_mapped(),
        local_port: (i % 65_536) as u16,
        local_host_network: i.is_multiple_of(5),
        local_initiated: i % 4 < 2,
        local_instance_type: INSTANCE_TYPES[(i % 3) as usize].into(),
        remote_cloud: String::new(),
        remote_region: text(i + 2),
        remote_zone: text(i + 3),
        remote_node: String::new(),
        remote_namespace: text(i / 3),
        remote_pod: text(i),
        remote_workload_kind: String::new(),
        remote_workload_name: format!("w-{}", (i + 1) % 600),
        remote_app: format!("remote-{}", i % 1000),
        remote_ip: Ipv6Addr::from(0x2a05_d07a_a000_0000_0000_0000_0000_0000 + u128::from(i)),
        remote_port: if i.is_multiple_of(2) { 0 } else { u16::MAX },
        remote_host_network: i.is_multiple_of(7),
        remote_service: if i.is_multiple_of(11) { "S3" } else { "" }.into(),
        remote_network: text(i + 5),
        remote_country: String::new(),
        remote_asn: 0,
        remote_as_name: String::new(),
        bytes: if i == 0 { u64::MAX } else { i * 1_000 },
        packets: i,
        cost_usd: [0.0, 1e-12, 0.09 * i as f64, f64::MAX][(i % 4) as usize],
        processing_cost_usd: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_of_a_native_block_comes_back_exactly() {
    let stack = Stack::start().await.unwrap();
    let server = stack.clickhouse_client();
    migrate(&server, &SchemaSettings::new("netmeter"))
        .await
        .unwrap();
    let client = server.with_database("netmeter");
    // Within the table's TTL and a single day's partition.
    let start_ms = (now_ms() / 86_400_000) * 86_400_000 + 60_000;
    let mut rows: Vec<FlowRow> = (0..ROWS).map(|i| row(i, start_ms)).collect();
    pipeline::insert(
        &client,
        "flows",
        NativeBlock::encode(&rows),
        "native-round-trip",
    )
    .await
    .unwrap();
    // The same rows again with the same token: ClickHouse drops them.
    pipeline::insert(
        &client,
        "flows",
        NativeBlock::encode(&rows),
        "native-round-trip",
    )
    .await
    .unwrap();

    let mut stored: Vec<FlowRow> = client
        .query("SELECT ?fields FROM flows")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(stored.len(), rows.len());
    rows.sort_by_key(|r| r.record_id);
    stored.sort_by_key(|r| r.record_id);
    for (stored, sent) in stored.iter().zip(&rows) {
        assert_eq!(stored, sent);
    }
    // The same, as SQL sees the two columns schema version 4 added: 70,000 = 12 * 5,833 + 4, and
    // every 12 rows hold each (i % 4 < 2, i % 3) pair twice; the last 4 rows add (true, 0),
    // (true, 1), (false, 2) and (false, 0).
    assert_eq!(
        netmeter_tests::clickhouse::query_text(
            &client,
            "SELECT local_initiated, local_instance_type, count() FROM flows \
             GROUP BY ALL ORDER BY ALL",
            "TabSeparated"
        )
        .await,
        "false\t\t11667\n\
         false\tm6i.large\t11667\n\
         false\tr6i.xlarge\t11666\n\
         true\t\t11666\n\
         true\tm6i.large\t11667\n\
         true\tr6i.xlarge\t11667\n"
    );
}
