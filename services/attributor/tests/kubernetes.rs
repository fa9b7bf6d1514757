//! The Kubernetes index through kube-rs against the test API server (real HTTP list/watch):
//! owners, zones and workloads land in the address history; deletions, completed pods, a
//! reused IP, a 410 Gone and an API-server outage are all reflected with the right times.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use netmeter_attributor::inventory::{IpOwnerHistory, Owner, OwnerKind, Tenure};
use netmeter_attributor::kubernetes::{maintain, now_ms};
use netmeter_tests::cluster;
use netmeter_tests::kube_api::{KubeApiServer, Resource};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const STEP: Duration = Duration::from_secs(15);

struct Index {
    history: Arc<RwLock<IpOwnerHistory>>,
    published: mpsc::Receiver<Vec<Tenure>>,
    shutdown: CancellationToken,
}

impl Index {
    async fn start(server: &KubeApiServer) -> Index {
        let history = Arc::new(RwLock::new(IpOwnerHistory::new(0)));
        let (tx, published) = mpsc::channel(1024);
        let (synced_tx, mut synced) = watch::channel(false);
        let shutdown = CancellationToken::new();
        tokio::spawn(maintain(
            server.client(),
            history.clone(),
            tx,
            synced_tx,
            shutdown.clone(),
        ));
        tokio::time::timeout(STEP, synced.wait_for(|s| *s))
            .await
            .expect("first sync")
            .unwrap();
        Index {
            history,
            published,
            shutdown,
        }
    }

    fn owner(&self, ip: &str, at_ms: u64) -> Option<Owner> {
        let ip: IpAddr = ip.parse().unwrap();
        self.history
            .read()
            .unwrap()
            .owner_at(ip, at_ms, at_ms)
            .map(|o| (**o).clone())
    }

    fn name(&self, ip: &str, at_ms: u64) -> Option<String> {
        self.owner(ip, at_ms).map(|o| o.name)
    }

    /// Waits until `check` holds for the history.
    async fn wait(&self, what: &str, mut check: impl FnMut(&Index) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !check(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn sample_cluster(server: &KubeApiServer, t0: u64) {
    use cluster::*;
    server.apply(
        Resource::Nodes,
        node("node-a", "eu-west-1", "eu-west-1a", "10.77.0.1"),
    );
    server.apply(
        Resource::Nodes,
        node("node-b", "eu-west-1", "eu-west-1b", "10.77.1.1"),
    );
    server.apply(
        Resource::ReplicaSets,
        replica_set("shop", "cart-7d9f", "cart"),
    );
    server.apply(Resource::Jobs, job("ops", "report-29000", "report"));
    server.apply(
        Resource::Pods,
        pod(
            "shop",
            "cart-7d9f-abcde",
            "node-a",
            &["10.0.0.5", "fd00::5"],
            Some(("ReplicaSet", "cart-7d9f")),
            "cart",
            t0,
        ),
    );
    server.apply(
        Resource::Pods,
        pod(
            "ops",
            "report-29000-xyz",
            "node-b",
            &["10.0.1.9"],
            Some(("Job", "report-29000")),
            "report",
            t0,
        ),
    );
    server.apply(
        Resource::Pods,
        pod(
            "shop",
            "db-0",
            "node-b",
            &["10.0.1.10"],
            Some(("StatefulSet", "db")),
            "postgres",
            t0,
        ),
    );
    server.apply(
        Resource::Pods,
        pod("default", "debug", "node-a", &["10.0.0.7"], None, "", t0),
    );
    server.apply(
        Resource::Pods,
        host_network_pod("kube-system", "node-exporter-a", "node-a", "10.77.0.1", t0),
    );
    server.apply(
        Resource::Pods,
        cluster::completed(
            pod("ops", "migrate-1", "node-a", &["10.0.0.8"], None, "", t0),
            t0 + 5_000,
        ),
    );
    server.apply(Resource::Services, service("shop", "cart", "10.96.0.10"));
    server.apply(
        Resource::EndpointSlices,
        external_endpoint_slice("shop", "legacy-db", &[("10.50.0.4", "eu-west-1b")]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_zones_and_workloads_come_from_the_api() {
    let server = KubeApiServer::new().unwrap();
    let t0 = now_ms() - 60_000;
    sample_cluster(&server, t0);
    let mut index = Index::start(&server).await;
    let now = now_ms();

    let cart = index.owner("10.0.0.5", now).expect("cart pod");
    assert_eq!(
        (
            cart.kind,
            cart.name.as_str(),
            cart.namespace.as_str(),
            cart.node.as_str(),
            cart.zone.as_str(),
            cart.region.as_str(),
            cart.cloud.as_str()
        ),
        (
            OwnerKind::Pod,
            "cart-7d9f-abcde",
            "shop",
            "node-a",
            "eu-west-1a",
            "eu-west-1",
            "aws"
        )
    );
    assert_eq!(
        (
            cart.workload_kind.as_str(),
            cart.workload_name.as_str(),
            cart.app.as_str(),
            cart.host_network
        ),
        ("Deployment", "cart", "cart", false)
    );
    assert_eq!(
        index.name("fd00::5", now).as_deref(),
        Some("cart-7d9f-abcde"),
        "IPv6 pod IPs count too"
    );
    // The pod held its address from its start time.
    assert_eq!(
        index.name("10.0.0.5", t0 + 1).as_deref(),
        Some("cart-7d9f-abcde")
    );
    assert_eq!(index.name("10.0.0.5", t0 - 1000), None);

    let report = index.owner("10.0.1.9", now).unwrap();
    assert_eq!(
        (
            report.workload_kind.as_str(),
            report.workload_name.as_str(),
            report.zone.as_str()
        ),
        ("CronJob", "report", "eu-west-1b")
    );
    let db = index.owner("10.0.1.10", now).unwrap();
    assert_eq!(
        (db.workload_kind.as_str(), db.workload_name.as_str()),
        ("StatefulSet", "db")
    );
    let debug = index.owner("10.0.0.7", now).unwrap();
    assert_eq!(
        (debug.workload_kind.as_str(), debug.workload_name.as_str()),
        ("Pod", "debug")
    );

    // hostNetwork pods use the node's address: it belongs to the node, flagged.
    let node = index.owner("10.77.0.1", now).unwrap();
    assert_eq!(
        (
            node.kind,
            node.name.as_str(),
            node.zone.as_str(),
            node.host_network,
            node.instance_type.as_str(),
            node.instance_id.as_str()
        ),
        (
            OwnerKind::Node,
            "node-a",
            "eu-west-1a",
            true,
            "m6i.large",
            "i-node-a"
        )
    );
    // A completed pod held its IP until it finished, not after.
    assert_eq!(
        index.name("10.0.0.8", t0 + 4_000).as_deref(),
        Some("migrate-1")
    );
    assert_eq!(index.name("10.0.0.8", t0 + 6_000), None);

    let svc = index.owner("10.96.0.10", now).unwrap();
    assert_eq!(
        (
            svc.kind,
            svc.namespace.as_str(),
            svc.workload_kind.as_str(),
            svc.workload_name.as_str()
        ),
        (OwnerKind::Service, "shop", "Service", "cart")
    );
    let legacy = index.owner("10.50.0.4", now).unwrap();
    assert_eq!(
        (
            legacy.kind,
            legacy.zone.as_str(),
            legacy.workload_name.as_str()
        ),
        (OwnerKind::Endpoint, "eu-west-1b", "legacy-db")
    );

    // Everything learned was handed over for the inventory topic: 5 pod IPs (cart has two),
    // 2 nodes, the completed pod's closed tenure, 1 ClusterIP, 1 external endpoint.
    let mut published = Vec::new();
    while let Ok(batch) = index.published.try_recv() {
        published.extend(batch);
    }
    assert_eq!(published.len(), 10, "{published:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_ip_a_410_and_an_outage_keep_the_history_right() {
    let server = KubeApiServer::new().unwrap();
    let t0 = now_ms() - 60_000;
    sample_cluster(&server, t0);
    let index = Index::start(&server).await;

    // Pod A (cart) is deleted; pod B gets 10.0.0.5.
    let before_delete = now_ms();
    server.delete(Resource::Pods, "shop", "cart-7d9f-abcde");
    index
        .wait("cart's tenure ends", |i| {
            i.name("10.0.0.5", now_ms() + 1000).is_none()
        })
        .await;
    let deleted_at = now_ms();
    // The API server's times have second precision: B starts on the next full second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b_start = (now_ms() / 1000 + 1) * 1000;
    server.apply(
        Resource::Pods,
        cluster::pod(
            "shop",
            "cart-7d9f-fghij",
            "node-a",
            &["10.0.0.5"],
            Some(("ReplicaSet", "cart-7d9f")),
            "cart",
            b_start,
        ),
    );
    index
        .wait("B holds the IP", |i| {
            i.name("10.0.0.5", now_ms()).as_deref() == Some("cart-7d9f-fghij")
        })
        .await;
    assert_eq!(
        index.name("10.0.0.5", before_delete).as_deref(),
        Some("cart-7d9f-abcde")
    );
    assert_eq!(
        index.name("10.0.0.5", deleted_at + 100).as_deref(),
        None,
        "between A and B nobody held it"
    );
    assert_eq!(
        index.name("10.0.0.5", b_start + 2000).as_deref(),
        Some("cart-7d9f-fghij")
    );

    // A 410 Gone: the history is compacted and watches expire; meanwhile db-0 is deleted. The
    // re-list shows it gone.
    server.compact();
    server.expire_watches();
    server.delete(Resource::Pods, "shop", "db-0");
    index
        .wait("db-0 ended after the re-list", |i| {
            i.name("10.0.1.10", now_ms() + 1000).is_none()
        })
        .await;
    assert!(
        server.list_count(Resource::Pods) >= 2,
        "the watcher listed again"
    );

    // An outage: the last state keeps being served; a change made meanwhile arrives after.
    server.stop();
    // The outage lasts a while: nothing may change meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        index.name("10.0.1.9", now_ms()).as_deref(),
        Some("report-29000-xyz"),
        "stale state still served"
    );
    server.start().unwrap();
    server.delete(Resource::Pods, "ops", "report-29000-xyz");
    index
        .wait("report pod ended after the outage", |i| {
            i.name("10.0.1.9", now_ms() + 1000).is_none()
        })
        .await;
    assert_eq!(
        index.name("10.0.1.9", t0 + 10).as_deref(),
        Some("report-29000-xyz"),
        "its past is kept"
    );
}
