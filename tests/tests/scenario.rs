//! The scenario the style guide promises, read as a story, with netmeter's three services
//! running inside this test process (their libraries' `run`, as their `main`s call it) against
//! the real broker, the real ClickHouse and real kernel conntrack in the mini-cluster:
//!
//! > Two pods in different zones exchange 10 MB; ClickHouse shows it as INTER_ZONE, both
//! > directions, priced at $0.01/GiB each way.
//!
//! Needs root.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use netmeter_common::ServiceContext;
use netmeter_tests::kernel::KernelCounters;
use netmeter_tests::minicluster::{CHECKOUT, DB, MiniCluster, NODES, REGION};
use netmeter_tests::traffic::{Flow, Load, Source, Target, Traffic};
use netmeter_tests::{Stack, clickhouse, ledger};

const CLUSTER: &str = "scenario";
const GIB: f64 = (1u64 << 30) as f64;
/// What checkout sends to db.
const TEN_MB: u64 = 10_000_000;

/// The three services as tasks of this process, stopped together.
struct InProcess {
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Starts a service's `run` and waits until it reports ready.
    async fn start<F>(&mut self, name: &str, run: impl FnOnce(ServiceContext) -> F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let ctx = ServiceContext {
            shutdown: self.shutdown.clone(),
            ..ServiceContext::default()
        };
        let health = ctx.health.clone();
        let task = tokio::spawn(run(ctx));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !health.is_ready() {
            assert!(
                !task.is_finished(),
                "{name} stopped before it was ready: {:?}",
                task.await
            );
            assert!(Instant::now() < deadline, "{name} not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.tasks.push(task);
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
    }
}

fn kafka(stack: &Stack) -> [String; 2] {
    ["--kafka-brokers".into(), stack.kafka_bootstrap()]
}

async fn netmeter_in_process(stack: &Stack, cluster: &MiniCluster, dir: &Path) -> InProcess {
    let mut services = InProcess {
        shutdown: tokio_util::sync::CancellationToken::new(),
        tasks: Vec::new(),
    };
    let sink = netmeter_sink::Args::try_parse_from(
        [
            "netmeter-sink",
            "--clickhouse-url",
            &stack.clickhouse_url(),
            "--batch-age",
            "1s",
        ]
        .into_iter()
        .map(String::from)
        .chain(kafka(stack)),
    )
    .unwrap()
    .validate()
    .unwrap();
    services
        .start("sink", |ctx| netmeter_sink::run(sink, ctx))
        .await;

    let kubeconfig = cluster.api().write_kubeconfig(dir).unwrap();
    let attributor = netmeter_attributor::Args::try_parse_from(
        [
            "netmeter-attributor",
            "--cluster",
            CLUSTER,
            "--cloud",
            "aws",
            "--region",
            REGION,
        ]
        .into_iter()
        .map(String::from)
        .chain(["--kubeconfig".into(), kubeconfig.display().to_string()])
        .chain(kafka(stack)),
    )
    .unwrap()
    .validate()
    .unwrap();
    services
        .start("attributor", |ctx| {
            netmeter_attributor::run(attributor, ctx)
        })
        .await;

    for node in NODES {
        let collector = netmeter_collector::Args::try_parse_from(
            [
                "netmeter-collector",
                "--node-name",
                node.name,
                "--interval",
                "1s",
            ]
            .into_iter()
            .map(String::from)
            .chain([
                "--netns".into(),
                cluster.node_ns_path(node.name).display().to_string(),
            ])
            .chain([
                "--state-dir".into(),
                dir.join(node.name).display().to_string(),
            ])
            .chain(kafka(stack)),
        )
        .unwrap()
        .validate()
        .unwrap();
        services
            .start(node.name, |ctx| netmeter_collector::run(collector, ctx))
            .await;
    }
    services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_two_pods_in_different_zones_exchange_10_mb_priced_inter_zone_both_ways() {
    // Given a two-zone cluster metered by netmeter,
    let stack = Stack::start().await.unwrap();
    let cluster = MiniCluster::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kernel = KernelCounters::start(&cluster.node_namespaces(), dir.path()).unwrap();
    let netmeter = netmeter_in_process(&stack, &cluster, dir.path()).await;

    // when checkout (us-east-1a, node-a2) sends 10 MB to db-0 (us-east-1b, node-b1), which
    // answers with 1 MiB,
    let mut traffic = Traffic::start(&cluster).unwrap();
    let exchange = Flow {
        label: "checkout -> db, 10 MB",
        from: Source::Workload(CHECKOUT),
        to: Target::Pod(DB, 0),
        load: Load::Tcp {
            connections: 1,
            bytes: TEN_MB,
        },
    };
    traffic.run(&cluster, &[exchange], |_| {}).unwrap();
    assert_eq!(
        (traffic.log[0].sent, traffic.log[0].received),
        (TEN_MB, 1 << 20)
    );
    tokio::task::block_in_place(|| kernel.wait_tcp_ended()).unwrap(); // the connection ends

    // then ClickHouse holds exactly what each node's kernel counted,
    let client = stack.clickhouse_client().with_database("netmeter");
    let verified = ledger::verify(
        &client,
        "netmeter",
        CLUSTER,
        0,
        (&cluster, &traffic, &kernel),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        verified.counted.len(),
        2,
        "one connection, seen by both nodes"
    );
    let on = |node: &str| {
        verified
            .counted
            .iter()
            .find(|c| c.node == node)
            .unwrap_or_else(|| panic!("{node} saw it"))
    };
    let (a, b) = (on("node-a2"), on("node-b1"));
    // (both nodes saw the same bytes: 10 MB plus headers one way, 1 MiB plus headers back)
    assert_eq!(
        (a.entry.orig.bytes, a.entry.reply.bytes),
        (b.entry.orig.bytes, b.entry.reply.bytes)
    );
    let (request, response) = (a.entry.orig.bytes, a.entry.reply.bytes);
    assert!(
        request > TEN_MB && request < TEN_MB + TEN_MB / 50,
        "{request}"
    );

    // as INTER_ZONE, both directions on both sides, each priced at $0.01/GiB.
    let rows = clickhouse::query_text(
        &client,
        &format!(
            "SELECT local_node, local_workload_name, remote_workload_name, local_zone, remote_zone, \
                    direction, class, sum(bytes), sum(cost_usd) \
             FROM flows FINAL WHERE cluster = '{CLUSTER}' AND class != 'MULTICAST' \
             GROUP BY ALL ORDER BY local_node, direction"
        ),
        "TabSeparated",
    )
    .await;
    let cost = |bytes: u64| bytes as f64 / GIB * 0.01;
    let expected = [
        (
            "node-a2",
            "checkout",
            "db",
            "us-east-1a",
            "us-east-1b",
            "in",
            response,
        ),
        (
            "node-a2",
            "checkout",
            "db",
            "us-east-1a",
            "us-east-1b",
            "out",
            request,
        ),
        (
            "node-b1",
            "db",
            "checkout",
            "us-east-1b",
            "us-east-1a",
            "in",
            request,
        ),
        (
            "node-b1",
            "db",
            "checkout",
            "us-east-1b",
            "us-east-1a",
            "out",
            response,
        ),
    ];
    let lines: Vec<Vec<&str>> = rows.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 4, "{rows}");
    for (line, (node, local, remote, zone, remote_zone, direction, bytes)) in
        lines.iter().zip(expected)
    {
        assert_eq!(
            line[..8],
            [
                node,
                local,
                remote,
                zone,
                remote_zone,
                direction,
                "INTER_ZONE",
                &bytes.to_string()
            ],
            "{rows}"
        );
        let dollars: f64 = line[8].parse().unwrap();
        assert!(
            (dollars - cost(bytes)).abs() < 1e-15,
            "{dollars} for {bytes} B: {rows}"
        );
    }
    println!(
        "10 MB across zones: {request} B one way, {response} B back, seen by both nodes; \
         ${:.8} in all (4 x bytes/GiB x $0.01)",
        2.0 * (cost(request) + cost(response))
    );
    netmeter.stop().await;
}
