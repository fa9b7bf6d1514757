//! End to end, exact to the byte: the mini-cluster's traffic matrix runs through real kernel
//! conntrack, three collectors, two attributors, the real broker and the sink into the real
//! ClickHouse, and `flows` holds, per observing node × local workload × remote workload ×
//! direction × class, exactly the bytes and packets the kernel counted for those connections
//! (DESTROY events plus the live table, read with the `conntrack` tool), with the classes and
//! the dollars the README's rules promise. Needs root.

use std::collections::BTreeMap;
use std::time::SystemTime;

use netmeter_report::{Connection, Options, TimeRange};

use netmeter_tests::ledger::{self, Key, Ledger};
use netmeter_tests::minicluster::{INTERNET_HOST_PLACE, NAT_PATH, NAT_PROCESSING};
use netmeter_tests::pipeline::{self, Metered};

const CLUSTER: &str = "accuracy";
const GIB: f64 = (1u64 << 30) as f64;

fn line<'a>(
    ledger: &'a Ledger,
    node: &str,
    local: &str,
    remote: &str,
    direction: &str,
) -> (&'a Key, &'a ledger::Totals) {
    let found: Vec<_> = ledger
        .iter()
        .filter(|(k, _)| {
            k.node == node && k.local == local && k.remote == remote && k.direction == direction
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one line {node} {local} -> {remote} {direction} in {ledger:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_clickhouse_holds_what_the_kernel_counted_per_workload_pair_direction_and_class() {
    let dir = tempfile::tempdir().unwrap();
    let started = SystemTime::now();
    let Metered {
        stack: _stack,
        cluster,
        kernel,
        pipeline,
    } = Metered::start(CLUSTER, dir.path()).await.unwrap();
    let (traffic, verified) = pipeline::meter_matrix(CLUSTER, 2, (&cluster, &kernel, &pipeline))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = pipeline.launcher.clickhouse();
    let expected = &verified.expected;
    // The per-connection detail that outlives the records, recomputed from them, holds the same
    // ledger to the byte and the dollar (its costs are bytes times the prices it keeps).
    let settings = netmeter_sink::schema::SchemaSettings::new(pipeline::DATABASE);
    netmeter_sink::schema::refresh_rollups_now(&client, &settings)
        .await
        .unwrap();
    let detail = ledger::stored(
        &client,
        pipeline::DATABASE,
        (CLUSTER, 0),
        ledger::StoredIn::Detail,
    )
    .await
    .unwrap();
    assert_eq!(ledger::difference(expected, &detail), None);

    println!(
        "ClickHouse held the kernel's counts {:.1} s after the traffic ended",
        verified.waited.as_secs_f64()
    );
    println!(
        "{:<70} {:>5} {:>12} {:>12} {:>8}",
        "traffic", "conns", "application", "kernel", "ratio"
    );
    for o in ledger::overhead(&traffic, &verified.counted) {
        println!(
            "{:<70} {:>5} {:>12} {:>12} {:>8.4}",
            o.label,
            o.connections,
            o.application,
            o.wire,
            o.wire as f64 / o.application as f64
        );
        assert!(
            o.wire > o.application,
            "{o:?}: headers come on top of the payload"
        );
    }
    println!(
        "{:<28} {:<28} {:<28} {:<4} {:<12} {:>12}",
        "node", "local", "remote", "dir", "class", "bytes"
    );
    for (k, t) in expected {
        println!(
            "{:<28} {:<28} {:<28} {:<4} {:<12} {:>12}",
            k.node, k.local, k.remote, k.direction, k.class, t.bytes
        );
    }

    // What the README promises, line by line (the ledger comparison above already holds them
    // to the byte; these read the story).
    let checkout = "shop/Deployment/checkout";
    let db = "shop/StatefulSet/db";
    // Cross-zone: both nodes record their own side of the same bytes, each priced $0.01/GiB.
    let (sent_key, sent) = line(expected, "node-a2", checkout, db, "out");
    let (received_key, received) = line(expected, "node-b1", db, checkout, "in");
    assert_eq!(
        (sent_key.class.as_str(), received_key.class.as_str()),
        ("INTER_ZONE", "INTER_ZONE")
    );
    assert_eq!(
        sent.bytes, received.bytes,
        "both sides count the same bytes"
    );
    assert!(
        sent.bytes > 2 * (3 << 20),
        "two rounds of 3 MiB plus headers: {sent:?}"
    );
    assert!((sent.cost_usd - sent.bytes as f64 / GIB * 0.01).abs() < 1e-12);
    // The Service: frontend's connections to the ClusterIP, split over both cart pods.
    let frontend = "shop/Deployment/frontend";
    let cart = "shop/Deployment/cart";
    let classes: Vec<&str> = expected
        .keys()
        .filter(|k| {
            k.node == "node-a1" && k.local == frontend && k.remote == cart && k.direction == "out"
        })
        .map(|k| k.class.as_str())
        .collect();
    assert_eq!(classes, ["INTER_ZONE", "INTRA_NODE"]);
    // hostNetwork: the log agent on node-b1 is its node.
    let (k, _) = line(
        expected,
        "node-b1",
        "node/node-b1",
        "observability/StatefulSet/logs",
        "out",
    );
    assert_eq!(k.class, "INTER_ZONE");
    // The internet, through zone us-east-1a's NAT gateway: egress priced $0.09/GiB plus
    // $0.045/GiB processing, the download $0.045/GiB processing only.
    let internet = "ip/::ffff:5.9.1.10";
    let (k, up) = line(expected, "node-a1", frontend, internet, "out");
    let (_, down) = line(expected, "node-a1", frontend, internet, "in");
    assert_eq!((k.class.as_str(), k.path.as_str()), ("INTERNET", NAT_PATH));
    let gib = |bytes: u64| bytes as f64 / GIB;
    assert!((up.processing_usd - gib(up.bytes) * NAT_PROCESSING).abs() < 1e-12);
    assert!((up.cost_usd - gib(up.bytes) * (0.09 + NAT_PROCESSING)).abs() < 1e-12);
    assert!((down.cost_usd - gib(down.bytes) * NAT_PROCESSING).abs() < 1e-12);
    assert_eq!(down.cost_usd, down.processing_usd);
    assert!(down.bytes > 2 * (3 << 20), "{down:?}");
    // S3 in the region: labelled with the service, free, and not through the NAT gateway (the
    // zone's gateway endpoint).
    let (k, s3) = line(expected, "node-a2", checkout, "aws/us-east-1/S3", "out");
    assert_eq!(
        (k.class.as_str(), k.path.as_str(), s3.cost_usd),
        ("INTRA_REGION", "", 0.0)
    );
    // Where the internet host is, as ClickHouse holds it for each record to it: its country
    // and network from the built-in data, exactly; cloud addresses are placed too (S3 is
    // Amazon's network in the US), cluster addresses never.
    let places = netmeter_tests::clickhouse::query_text(
        &client,
        &format!(
            "SELECT class, remote_country, remote_asn, remote_as_name, count() > 0 FROM flows FINAL \
             WHERE cluster = '{CLUSTER}' AND class IN ('INTERNET', 'INTRA_REGION', 'INTER_ZONE') \
             GROUP BY ALL ORDER BY ALL"
        ),
        "TabSeparated",
    )
    .await;
    let (country, asn, as_name) = INTERNET_HOST_PLACE;
    assert_eq!(
        places,
        format!(
            "INTERNET\t{country}\t{asn}\t{as_name}\t1\n\
             INTER_ZONE\t\t0\t\t1\n\
             INTRA_REGION\tUS\t16509\tAmazon.com, Inc.\t1\n"
        )
    );
    // The Job's 100 short connections all ended between dumps and were counted.
    let short = verified
        .counted
        .iter()
        .filter(|c| {
            c.node == "node-b1"
                && c.entry.orig.src
                    == cluster.pods_of(&netmeter_tests::minicluster::REPORT)[0]
                        .spec
                        .ip()
        })
        .collect::<Vec<_>>();
    assert_eq!(short.len(), 100);
    assert!(
        short.iter().all(|c| c.ended),
        "short connections end (DESTROY) before the last dump"
    );

    // `netmeter report` agrees with the ledger: bytes by class, each side. Within a node only
    // the source records a connection; the report counts its other endpoint too (what one sent
    // the other received), so the ledger's INTRA_NODE lines count on both sides here.
    let connection = Connection::new(
        &pipeline.launcher.endpoints().clickhouse_url,
        "default",
        "",
        pipeline::DATABASE,
    );
    let mut options = Options::new(TimeRange::new(started, SystemTime::now()).unwrap());
    options.filters.cluster = Some(CLUSTER.into());
    let report = netmeter_report::build(&connection, &options).await.unwrap();
    let by_class = report.table("overview", "by_class").unwrap();
    let (sent, received) = (
        by_class.index("sent_bytes").unwrap(),
        by_class.index("received_bytes").unwrap(),
    );
    let mut from_report: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in &by_class.rows {
        let class = row[0].as_str().unwrap();
        if class != "MULTICAST" {
            from_report.insert(
                class.to_string(),
                (row[sent].as_u64().unwrap(), row[received].as_u64().unwrap()),
            );
        }
    }
    let mut from_ledger: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (k, t) in expected {
        let entry = from_ledger.entry(k.class.clone()).or_default();
        let out = k.direction == "out";
        if out || k.class == "INTRA_NODE" {
            entry.0 += t.bytes;
        }
        if !out || k.class == "INTRA_NODE" {
            entry.1 += t.bytes;
        }
    }
    assert_eq!(from_report, from_ledger);
    let workloads = report.table("initiators", "workloads").unwrap();
    let role = workloads.index("role").unwrap();
    let receivers: Vec<&str> = workloads
        .rows
        .iter()
        .filter(|r| r[role] == "only receives")
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(receivers, ["observability/logs"]);

    // The nodes' own multicast (IGMP/MLD reports) is classed MULTICAST and free, never INTERNET.
    let internet_elsewhere = netmeter_tests::clickhouse::query_text(
        &client,
        &format!("SELECT count() FROM flows FINAL WHERE cluster = '{CLUSTER}' AND class = 'INTERNET' AND remote_ip != toIPv6('::ffff:5.9.1.10')"),
        "TabSeparated",
    )
    .await;
    assert_eq!(internet_elsewhere.trim(), "0");
    let multicast_cost = netmeter_tests::clickhouse::query_text(
        &client,
        &format!("SELECT sum(cost_usd) FROM flows FINAL WHERE cluster = '{CLUSTER}' AND class = 'MULTICAST'"),
        "TabSeparated",
    )
    .await;
    assert_eq!(multicast_cost.trim(), "0");
    pipeline.stop();
}
