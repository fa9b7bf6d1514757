//! Every attribution and classification rule, on the real cloud range files (the built-in
//! snapshot).

use std::sync::{Arc, OnceLock};

use netmeter_proto::flows::Flow;
use netmeter_proto::raw::{ConnectionDelta, ConntrackBatch};
use netmeter_tests::records::{batch, delta};

use super::*;
use crate::cloud::CloudRanges;
use crate::delta::DeltaError;
use crate::inventory::{OwnerKind, Tenure};
use crate::rules::RulesFile;

const GIB: f64 = (1u64 << 30) as f64;
const T: u64 = 1_700_000_000_000;

fn ranges() -> &'static CloudRanges {
    static RANGES: OnceLock<CloudRanges> = OnceLock::new();
    RANGES.get_or_init(|| crate::cloud::load(None).unwrap().table)
}

fn owner(kind: OwnerKind, name: &str, node: &str, zone: &str) -> Arc<Owner> {
    Arc::new(Owner {
        namespace: if kind == OwnerKind::Pod {
            "shop".into()
        } else {
            String::new()
        },
        node: node.into(),
        zone: zone.into(),
        region: "ap-northeast-2".into(),
        cloud: "aws".into(),
        workload_kind: if kind == OwnerKind::Pod {
            "Deployment".into()
        } else {
            String::new()
        },
        workload_name: if kind == OwnerKind::Pod {
            name.split('-').next().unwrap().into()
        } else {
            String::new()
        },
        app: if kind == OwnerKind::Pod {
            name.split('-').next().unwrap().into()
        } else {
            String::new()
        },
        host_network: kind == OwnerKind::Node,
        ..Owner::new(kind, name)
    })
}

/// A cluster in ap-northeast-2 (AWS): node-a and node-b in zone a, node-c in zone c.
fn history() -> IpOwnerHistory {
    let mut h = IpOwnerHistory::new(0);
    let mut hold = |ip: &str, o: Arc<Owner>| {
        h.record(Tenure {
            ip: ip.parse().unwrap(),
            uid: format!("uid-{}", o.name),
            start_ms: 0,
            end_ms: None,
            owner: o,
        });
    };
    hold(
        "10.77.0.1",
        owner(OwnerKind::Node, "node-a", "node-a", "ap-northeast-2a"),
    );
    hold(
        "10.77.0.2",
        owner(OwnerKind::Node, "node-b", "node-b", "ap-northeast-2a"),
    );
    hold(
        "10.77.0.3",
        owner(OwnerKind::Node, "node-c", "node-c", "ap-northeast-2c"),
    );
    hold(
        "10.0.0.5",
        owner(OwnerKind::Pod, "web-1", "node-a", "ap-northeast-2a"),
    );
    hold(
        "10.0.0.6",
        owner(OwnerKind::Pod, "cache-1", "node-a", "ap-northeast-2a"),
    );
    hold(
        "10.0.1.5",
        owner(OwnerKind::Pod, "api-1", "node-b", "ap-northeast-2a"),
    );
    hold(
        "10.0.2.5",
        owner(OwnerKind::Pod, "db-0", "node-c", "ap-northeast-2c"),
    );
    hold(
        "fd00::5",
        owner(OwnerKind::Pod, "web-1", "node-a", "ap-northeast-2a"),
    );
    h
}

fn enricher() -> Enricher {
    let file: RulesFile = serde_yaml_ng::from_str(
        r#"
networks:
  - name: nat-gateway
    cidrs: [10.0.200.10/32]
    price: {out: 0.045, in: 0.045}
  - name: peered-vpc-us
    cidrs: [10.60.0.0/16]
    region: us-east-1
hosts:
  - name: billing-db
    cidrs: [10.50.0.4/32]
    cloud: aws
    region: ap-northeast-2
    zone: ap-northeast-2c
    workload_name: billing-db
    labels: {app: postgres}
"#,
    )
    .unwrap();
    let place = ClusterPlace {
        cluster: "prod".into(),
        cloud: "aws".into(),
        region: "ap-northeast-2".into(),
    };
    Enricher::new(place, Rules::build(file, "test").unwrap())
}

fn run_batch(b: &ConntrackBatch) -> Result<Vec<Flow>, DeltaError> {
    run_batch_with(&history(), b)
}

fn run_batch_with(history: &IpOwnerHistory, b: &ConntrackBatch) -> Result<Vec<Flow>, DeltaError> {
    let enricher = enricher();
    let inputs = Inputs {
        history,
        cloud: ranges(),
    };
    let mut out = Vec::new();
    let b = DeltaBatch::from_wire(b)?;
    enricher.enrich(&b, &inputs, 0, |f, _| out.push(f.to_flow()));
    Ok(out)
}

/// The records of one delta observed on node-a.
fn run(d: ConnectionDelta) -> Vec<Flow> {
    run_batch(&batch("node-a", "c1", 1, T, T + 10_000, vec![d])).unwrap()
}

/// 1 GiB out, 2 MiB back.
fn big(src: &str, dst: &str) -> ConnectionDelta {
    delta(src, 40_000, dst, 443, (1 << 30, 1000), (2 << 20, 500))
}

fn class_and_costs(records: &[Flow]) -> Vec<(&str, &str, f64)> {
    records
        .iter()
        .map(|f| (f.direction.as_str(), f.class.as_str(), f.cost_usd))
        .collect()
}

#[test]
fn pod_to_pod_on_one_node_is_intra_node_and_recorded_once() {
    let r = run(big("10.0.0.5", "10.0.0.6"));
    assert_eq!(
        class_and_costs(&r),
        [("out", "INTRA_NODE", 0.0), ("in", "INTRA_NODE", 0.0)]
    );
    assert_eq!(
        (r[0].local_pod.as_str(), r[0].remote_pod.as_str()),
        ("web-1", "cache-1")
    );
    assert_eq!(
        (r[0].bytes, r[0].packets, r[1].bytes, r[1].packets),
        (1 << 30, 1000, 2 << 20, 500)
    );
}

#[test]
fn same_zone_and_cross_zone_pods() {
    let same = run(big("10.0.0.5", "10.0.1.5"));
    assert_eq!(
        class_and_costs(&same),
        [("out", "INTRA_ZONE", 0.0), ("in", "INTRA_ZONE", 0.0)]
    );
    let cross = run(big("10.0.0.5", "10.0.2.5"));
    assert_eq!(
        class_and_costs(&cross),
        [
            ("out", "INTER_ZONE", 0.01),
            ("in", "INTER_ZONE", 2.0 / 1024.0 * 0.01)
        ]
    );
    let f = &cross[0];
    assert_eq!(
        (
            f.local_zone.as_str(),
            f.remote_zone.as_str(),
            f.remote_node.as_str(),
            f.remote_workload_kind.as_str(),
            f.remote_workload_name.as_str(),
            f.remote_app.as_str()
        ),
        (
            "ap-northeast-2a",
            "ap-northeast-2c",
            "node-c",
            "Deployment",
            "db",
            "db"
        )
    );
    assert_eq!(
        (
            f.local_ip.as_str(),
            f.local_port,
            f.remote_ip.as_str(),
            f.remote_port
        ),
        ("10.0.0.5", 40_000, "10.0.2.5", 443)
    );
    assert_eq!(
        (
            f.cluster.as_str(),
            f.protocol.as_str(),
            f.interval_start_unix_ms,
            f.interval_seconds
        ),
        ("prod", "tcp", T, 10)
    );
}

/// [`history`] with node-a and node-c as the Kubernetes index builds them from the test
/// cluster's nodes (`tests/src/cluster.rs`: instance type m6i.large); node-c is relabelled
/// r6i.xlarge, so that whose node an instance type comes from shows.
fn history_with_instance_types() -> IpOwnerHistory {
    let mut h = history();
    for (name, zone, ip, relabel) in [
        ("node-a", "ap-northeast-2a", "10.77.0.1", None),
        ("node-c", "ap-northeast-2c", "10.77.0.3", Some("r6i.xlarge")),
    ] {
        let mut node = netmeter_tests::cluster::node(name, "ap-northeast-2", zone, ip);
        if let Some(instance_type) = relabel {
            node["metadata"]["labels"]["node.kubernetes.io/instance-type"] = instance_type.into();
        }
        let owner = crate::kubernetes::node_owner(&serde_json::from_value(node).unwrap());
        h.record(Tenure {
            ip: ip.parse().unwrap(),
            uid: format!("uid-{name}"),
            start_ms: 0,
            end_ms: None,
            owner: Arc::new(owner),
        });
    }
    h
}

/// Who the local end of each record is: (direction, local pod or node, initiated, instance type).
fn local_sides(records: &[Flow]) -> Vec<(&str, &str, bool, &str)> {
    records
        .iter()
        .map(|f| {
            (
                f.direction.as_str(),
                or(&f.local_pod, &f.local_node),
                f.local_initiated,
                f.local_instance_type.as_str(),
            )
        })
        .collect()
}

#[test]
fn the_client_side_initiated_and_each_side_has_its_nodes_instance_type() {
    let h = history_with_instance_types();
    let on = |node: &str, d: ConnectionDelta| {
        run_batch_with(&h, &batch(node, "c1", 1, T, T + 10_000, vec![d])).unwrap()
    };
    // web-1 (node-a) opens a connection to db-0 (node-c): each node records its own side.
    let web_to_db = || big("10.0.0.5", "10.0.2.5");
    assert_eq!(
        local_sides(&on("node-a", web_to_db())),
        [
            ("out", "web-1", true, "m6i.large"),
            ("in", "web-1", true, "m6i.large")
        ]
    );
    assert_eq!(
        local_sides(&on("node-c", web_to_db())),
        [
            ("out", "db-0", false, "r6i.xlarge"),
            ("in", "db-0", false, "r6i.xlarge")
        ],
        "the server's side: db-0 sent the replies and did not open the connection"
    );
    // Through a Service DNAT, seen on the backend's node: the backend did not open it either.
    let mut via_service = big("10.0.0.5", "10.96.0.10");
    let reply = via_service.reply.as_mut().unwrap();
    reply.src = vec![10, 0, 2, 5];
    reply.src_port = 5432;
    via_service.nat = true;
    assert_eq!(
        local_sides(&on("node-c", via_service))[0],
        ("out", "db-0", false, "r6i.xlarge")
    );
    // An internet client connecting to web-1; web-1 calling S3.
    assert_eq!(
        local_sides(&on("node-a", big("203.0.113.7", "10.0.0.5")))[0],
        ("out", "web-1", false, "m6i.large")
    );
    assert_eq!(
        local_sides(&on("node-a", big("10.0.0.5", "3.5.140.7")))[0],
        ("out", "web-1", true, "m6i.large")
    );
    // A pod of another node seen here (its traffic to the internet routed through node-a):
    // the instance type is its own node's.
    assert_eq!(
        local_sides(&on("node-a", big("10.0.2.5", "203.0.113.9")))[0],
        ("out", "db-0", true, "r6i.xlarge")
    );
    // The node's own address, and an address only the collector knows to be the node's.
    let mut unknown = big("192.168.7.7", "203.0.113.9");
    unknown.node_endpoint = true;
    for d in [big("10.77.0.1", "10.0.2.5"), unknown] {
        assert_eq!(
            local_sides(&on("node-a", d))[0],
            ("out", "node-a", true, "m6i.large")
        );
    }
    // node-b's object has no instance type label: empty, not guessed from the other nodes.
    assert_eq!(
        local_sides(&on("node-b", big("10.0.1.5", "10.0.2.5")))[0],
        ("out", "api-1", true, "")
    );
}

#[test]
fn a_service_vip_is_replaced_by_the_real_backend() {
    // web-1 -> 10.96.0.10:80, DNATed to db-0 10.0.2.5:5432: the reply source is the backend.
    let mut d = big("10.0.0.5", "10.96.0.10");
    let reply = d.reply.as_mut().unwrap();
    reply.src = vec![10, 0, 2, 5];
    reply.src_port = 5432;
    d.nat = true;
    let r = run(d);
    assert_eq!(
        (
            r[0].remote_pod.as_str(),
            r[0].remote_ip.as_str(),
            r[0].remote_port,
            r[0].class.as_str()
        ),
        ("db-0", "10.0.2.5", 5432, "INTER_ZONE")
    );
}

#[test]
fn incoming_connections_are_seen_from_the_local_pod() {
    // An internet client connects to web-1: web-1 sends the reply bytes (out), receives the
    // original bytes (in). Only egress to the internet is billed, at Seoul's $0.126/GiB.
    let r = run(big("203.0.113.7", "10.0.0.5"));
    assert_eq!(r[0].local_pod, "web-1");
    assert_eq!(
        (
            r[0].direction.as_str(),
            r[0].bytes,
            r[0].local_port,
            r[0].remote_port
        ),
        ("out", 2 << 20, 443, 40_000)
    );
    assert_eq!(
        class_and_costs(&r),
        [
            ("out", "INTERNET", 2.0 / 1024.0 * 0.126),
            ("in", "INTERNET", 0.0)
        ]
    );
}

#[test]
fn cloud_ranges_give_cloud_region_service_and_class() {
    let cases = [
        // S3 in our own region: free; in another region: cross-region egress.
        (
            "3.5.140.7",
            "aws",
            "ap-northeast-2",
            "S3",
            "INTRA_REGION",
            0.0,
        ),
        (
            "2a05:d07a:a000::1",
            "aws",
            "eu-south-1",
            "S3",
            "INTER_REGION",
            0.08, // what Seoul (the cluster's region) charges to any other region
        ),
        (
            "34.35.1.2",
            "gcp",
            "africa-south1",
            "Google Cloud",
            "INTER_CLOUD",
            0.126, // Seoul's internet price: another cloud is reached over the internet
        ),
        (
            "20.33.154.10",
            "azure",
            "koreacentral",
            "AzureStorage",
            "INTER_CLOUD",
            0.126,
        ),
    ];
    for (ip, cloud, region, service, class, price) in cases {
        let src = if ip.contains(':') {
            "fd00::5"
        } else {
            "10.0.0.5"
        };
        let r = run(big(src, ip));
        let f = &r[0];
        assert_eq!(
            (
                f.remote_cloud.as_str(),
                f.remote_region.as_str(),
                f.remote_service.as_str(),
                f.class.as_str(),
                f.cost_usd
            ),
            (cloud, region, service, class, price),
            "{ip}"
        );
        assert_eq!((f.local_pod.as_str(), f.remote_pod.as_str()), ("web-1", ""));
    }
}

#[test]
fn rules_static_hosts_private_and_internet() {
    let nat = run(big("10.0.0.5", "10.0.200.10"));
    assert_eq!(
        (nat[0].remote_network.as_str(), nat[0].class.as_str()),
        ("nat-gateway", "VPC")
    );
    assert_eq!(
        (nat[0].cost_usd, nat[1].cost_usd),
        (0.045, 2.0 / 1024.0 * 0.045)
    );
    let peered = run(big("10.0.0.5", "10.60.1.1"));
    assert_eq!(
        (
            peered[0].remote_network.as_str(),
            peered[0].remote_region.as_str(),
            peered[0].class.as_str(),
            peered[0].cost_usd
        ),
        ("peered-vpc-us", "us-east-1", "INTER_REGION", 0.08)
    );
    let db = run(big("10.0.0.5", "10.50.0.4"));
    assert_eq!(
        (
            db[0].remote_workload_name.as_str(),
            db[0].remote_app.as_str(),
            db[0].remote_zone.as_str(),
            db[0].class.as_str(),
            db[0].cost_usd
        ),
        (
            "billing-db",
            "postgres",
            "ap-northeast-2c",
            "INTER_ZONE",
            0.01
        )
    );
    let vpc = run(big("10.0.0.5", "172.20.3.4"));
    assert_eq!(
        (
            vpc[0].class.as_str(),
            vpc[0].remote_cloud.as_str(),
            vpc[0].cost_usd
        ),
        ("VPC", "", 0.0)
    );
    let internet = run(big("10.0.0.5", "203.0.113.9"));
    assert_eq!(
        (internet[0].class.as_str(), internet[0].cost_usd),
        ("INTERNET", 0.126)
    );
}

#[test]
fn node_traffic_is_attributed_to_the_node_and_flagged() {
    let r = run(big("10.77.0.1", "10.0.2.5"));
    assert_eq!(
        (
            r[0].local_node.as_str(),
            r[0].local_pod.as_str(),
            r[0].local_host_network,
            r[0].local_zone.as_str(),
            r[0].class.as_str()
        ),
        ("node-a", "", true, "ap-northeast-2a", "INTER_ZONE")
    );
    // An address the inventory does not know, flagged by the collector as the node's own.
    let mut unknown = big("192.168.7.7", "203.0.113.9");
    unknown.node_endpoint = true;
    let r = run(unknown);
    assert_eq!(
        (
            r[0].local_node.as_str(),
            r[0].local_host_network,
            r[0].local_zone.as_str(),
            r[0].class.as_str()
        ),
        ("node-a", true, "ap-northeast-2a", "INTERNET")
    );
}

#[test]
fn unknown_places_are_unknown_not_guessed() {
    // Observed on a node the inventory does not know, between two unknown private addresses:
    // the cluster's cloud and region are known, the zones are not.
    let b = batch(
        "node-z",
        "c1",
        1,
        T,
        T + 10_000,
        vec![big("10.9.0.1", "10.9.0.2")],
    );
    let r = run_batch(&b).unwrap();
    assert_eq!(
        (
            r[0].class.as_str(),
            r[0].local_node.as_str(),
            r[0].local_region.as_str(),
            r[0].local_instance_type.as_str()
        ),
        ("VPC", "node-z", "ap-northeast-2", "")
    );
}

#[test]
fn a_silent_direction_yields_no_record() {
    let r = run(delta("10.0.0.5", 5000, "10.0.2.5", 53, (120, 1), (0, 0)));
    assert_eq!(
        class_and_costs(&r),
        [("out", "INTER_ZONE", 120.0 / GIB * 0.01)]
    );
}

#[test]
fn record_ids_are_stable_and_unique_per_delta_and_direction() {
    let deltas = vec![big("10.0.0.5", "10.0.2.5"), big("10.0.0.5", "10.0.1.5")];
    let first = run_batch(&batch("node-a", "c1", 7, T, T + 10_000, deltas.clone())).unwrap();
    let again = run_batch(&batch("node-a", "c1", 7, T, T + 10_000, deltas.clone())).unwrap();
    let next_batch = run_batch(&batch("node-a", "c1", 8, T, T + 10_000, deltas.clone())).unwrap();
    let other_instance = run_batch(&batch("node-a", "c2", 7, T, T + 10_000, deltas)).unwrap();
    let ids = |r: &[Flow]| r.iter().map(|f| f.record_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
    let mut all: Vec<String> = [ids(&first), ids(&next_batch), ids(&other_instance)].concat();
    assert_eq!(all.len(), 12);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 12);
    let id = uuid::Uuid::parse_str(&first[0].record_id).unwrap();
    assert_eq!(id.get_version_num(), 8);
}

#[test]
fn a_malformed_delta_fails_the_whole_batch() {
    let mut bad = big("10.0.0.5", "10.0.2.5");
    bad.reply.as_mut().unwrap().src = vec![10, 0, 2];
    let b = batch(
        "node-a",
        "c1",
        1,
        T,
        T + 10_000,
        vec![big("10.0.0.5", "10.0.1.5"), bad],
    );
    assert_eq!(
        run_batch(&b).unwrap_err(),
        DeltaError::Address {
            index: 1,
            which: "reply source",
            len: 3
        }
    );
    let mut missing = big("10.0.0.5", "10.0.2.5");
    missing.original = None;
    let b = batch("node-a", "c1", 1, T, T + 10_000, vec![missing]);
    assert_eq!(
        run_batch(&b).unwrap_err().to_string(),
        "delta 0 has no original tuple"
    );
}

/// Machines outside Kubernetes, each with a collector (`--kubernetes false`): `frontend` in
/// us-east-1a talks to `cart` in us-east-1b; `search` names the machine that observes it.
fn static_enricher() -> Enricher {
    let file: RulesFile = serde_yaml_ng::from_str(
        r#"
hosts:
  - name: frontend
    cidrs: [10.20.1.10/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1a
    namespace: shop
    workload_kind: VM
    workload_name: frontend
    labels: {app: web}
  - name: cart
    cidrs: [10.20.2.20/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1b
    workload_name: cart
  - name: search
    cidrs: [10.20.3.30/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1c
    node: search-vm
    workload_name: search
"#,
    )
    .unwrap();
    let place = ClusterPlace {
        cluster: "vms".into(),
        cloud: "aws".into(),
        region: "us-east-1".into(),
    };
    Enricher::new(place, Rules::build(file, "test").unwrap())
}

/// The records of `d` observed by the collector of `node`, with static hosts only.
fn run_static(node: &str, d: ConnectionDelta) -> Vec<Flow> {
    let (enricher, history) = (static_enricher(), IpOwnerHistory::new(0));
    let inputs = Inputs {
        history: &history,
        cloud: ranges(),
    };
    let mut out = Vec::new();
    let b = batch(node, "c1", 1, T, T + 10_000, vec![d]);
    enricher.enrich(&DeltaBatch::from_wire(&b).unwrap(), &inputs, 0, |f, _| {
        out.push(f.to_flow())
    });
    out
}

/// Who the two ends of a record are: `workload zone node -> workload zone node`.
fn ends(f: &Flow) -> String {
    format!(
        "{} {} {} -> {} {} {}",
        f.local_workload_name,
        f.local_zone,
        f.local_node,
        f.remote_workload_name,
        f.remote_zone,
        f.remote_node
    )
}

/// (direction, class, bytes, cost) of each record.
fn amounts(records: &[Flow]) -> Vec<(&str, &str, u64, f64)> {
    records
        .iter()
        .map(|f| (f.direction.as_str(), f.class.as_str(), f.bytes, f.cost_usd))
        .collect()
}

#[test]
fn a_static_host_is_the_local_endpoint_with_its_workload_and_zone() {
    // frontend calls cart: 3 MB out, 700 kB back, observed by the collector on frontend-vm
    // (which no host names: the source is local, both addresses being private).
    let r = run_static(
        "frontend-vm",
        delta(
            "10.20.1.10",
            41_000,
            "10.20.2.20",
            8080,
            (3_000_000, 2_100),
            (700_000, 900),
        ),
    );
    assert_eq!(
        amounts(&r),
        [
            ("out", "INTER_ZONE", 3_000_000, 3_000_000.0 / GIB * 0.01),
            ("in", "INTER_ZONE", 700_000, 700_000.0 / GIB * 0.01),
        ]
    );
    for f in &r {
        assert_eq!(
            ends(f),
            "frontend us-east-1a frontend-vm -> cart us-east-1b "
        );
    }
    let f = &r[0];
    assert_eq!(
        (
            f.local_cloud.as_str(),
            f.local_region.as_str(),
            f.local_namespace.as_str(),
            f.local_workload_kind.as_str(),
            f.local_app.as_str(),
            f.local_pod.as_str(),
            f.local_host_network,
            f.local_ip.as_str(),
            f.local_port
        ),
        (
            "aws",
            "us-east-1",
            "shop",
            "VM",
            "web",
            "",
            false,
            "10.20.1.10",
            41_000
        )
    );
    assert_eq!(
        (
            f.remote_cloud.as_str(),
            f.remote_region.as_str(),
            f.remote_ip.as_str(),
            f.remote_port
        ),
        ("aws", "us-east-1", "10.20.2.20", 8080)
    );
}

#[test]
fn a_static_host_on_the_observing_node_is_local_even_as_the_destination() {
    // cart calls search; the collector on search-vm sees search as the destination. Without
    // `node: search-vm` the rule would fall to the source (both are private addresses).
    let cart_to_search = || {
        delta(
            "10.20.2.20",
            52_000,
            "10.20.3.30",
            9200,
            (4_000, 10),
            (2 << 20, 1_500),
        )
    };
    let r = run_static("search-vm", cart_to_search());
    assert_eq!(
        amounts(&r),
        [
            ("out", "INTER_ZONE", 2 << 20, 2.0 / 1024.0 * 0.01),
            ("in", "INTER_ZONE", 4_000, 4_000.0 / GIB * 0.01),
        ]
    );
    for f in &r {
        assert_eq!(ends(f), "search us-east-1c search-vm -> cart us-east-1b ");
        assert_eq!((f.local_port, f.remote_port), (9200, 52_000));
        assert!(!f.local_initiated, "cart opened the connection");
        assert_eq!(
            f.local_instance_type, "",
            "no Kubernetes node, no instance type"
        );
    }
    // The same connection seen on cart's machine: cart is the source, search is remote on
    // its node.
    let seen_by_cart = run_static("cart-vm", cart_to_search());
    assert_eq!(
        amounts(&seen_by_cart)[0],
        ("out", "INTER_ZONE", 4_000, 4_000.0 / GIB * 0.01)
    );
    assert_eq!(
        ends(&seen_by_cart[0]),
        "cart us-east-1b cart-vm -> search us-east-1c search-vm"
    );
    assert!(seen_by_cart[0].local_initiated);
}

#[test]
fn multicast_and_broadcast_are_free_and_never_internet() {
    // node-a's IGMPv3 report, an mDNS query from a pod, a DHCP discover from an unknown
    // address, and an MLDv2 report from the node's link-local address.
    let mut igmp = delta("10.77.0.1", 0, "224.0.0.22", 0, (40, 1), (0, 0));
    igmp.protocol = 2;
    let mut mdns = delta("10.0.0.5", 5353, "224.0.0.251", 5353, (120, 2), (0, 0));
    mdns.protocol = 17;
    let mut dhcp = delta("0.0.0.0", 68, "255.255.255.255", 67, (300, 1), (0, 0));
    dhcp.protocol = 17;
    let mut mld = delta("fe80::1", 0, "ff02::16", 0, (76, 1), (0, 0));
    mld.protocol = 58;
    mld.node_endpoint = true;
    // local@node direction protocol -> remote [cloud|region|zone|service|network] class $cost
    let row = |f: &Flow| {
        format!(
            "{}@{} {} {} -> {} [{}|{}|{}|{}|{}] {} ${}",
            f.local_ip,
            f.local_node,
            f.direction,
            f.protocol,
            f.remote_ip,
            f.remote_cloud,
            f.remote_region,
            f.remote_zone,
            f.remote_service,
            f.remote_network,
            f.class,
            f.cost_usd
        )
    };
    let rows: Vec<Vec<String>> = [igmp, mdns, dhcp, mld]
        .into_iter()
        .map(|d| run(d).iter().map(row).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["10.77.0.1@node-a out igmp -> 224.0.0.22 [||||] MULTICAST $0"],
            ["10.0.0.5@node-a out udp -> 224.0.0.251 [||||] MULTICAST $0"],
            ["0.0.0.0@node-a out udp -> 255.255.255.255 [||||] MULTICAST $0"],
            ["fe80::1@node-a out ipv6-icmp -> ff02::16 [||||] MULTICAST $0"],
        ]
    );
}

#[test]
fn multicast_comes_before_rules_for_its_addresses_and_can_be_priced() {
    let file: RulesFile = serde_yaml_ng::from_str(
        r#"
networks:
  - name: everything
    cidrs: [0.0.0.0/0]
    class: INTERNET
prices:
  aws:
    MULTICAST: {out: 0.5}
"#,
    )
    .unwrap();
    let place = ClusterPlace {
        cluster: "prod".into(),
        cloud: "aws".into(),
        region: "ap-northeast-2".into(),
    };
    let enricher = Enricher::new(place, Rules::build(file, "test").unwrap());
    let history = history();
    let inputs = Inputs {
        history: &history,
        cloud: ranges(),
    };
    let mut out = Vec::new();
    let b = batch(
        "node-a",
        "c1",
        1,
        T,
        T + 10_000,
        vec![delta(
            "10.0.0.5",
            5353,
            "224.0.0.251",
            5353,
            (1 << 30, 2),
            (0, 0),
        )],
    );
    let totals = enricher.enrich(&DeltaBatch::from_wire(&b).unwrap(), &inputs, 0, |f, _| {
        out.push(f.to_flow())
    });
    assert_eq!(class_and_costs(&out), [("out", "MULTICAST", 0.5)]);
    assert_eq!(out[0].remote_network, "");
    assert_eq!(
        totals.bytes[Class::Multicast as usize][Direction::Out as usize],
        1 << 30
    );
}

/// A cluster in us-east-1: zone a reaches public addresses through a NAT gateway whose route
/// table also has the S3 gateway endpoint (S3 bypasses it), zone b through one without; an
/// interface endpoint; a transit gateway to a VPC in eu-west-1 (whose price the rules file
/// sets); and a peered VPC in us-east-2.
fn path_enricher(cloud: &str, region: &str) -> Enricher {
    let file: RulesFile = serde_yaml_ng::from_str(
        r#"
networks:
  - name: vpc-eu
    cidrs: [10.80.0.0/16]
    region: eu-west-1
  - name: vpc-ohio
    cidrs: [10.81.0.0/16]
    region: us-east-2
paths:
  - name: nat-a
    kind: nat_gateway
    zones: [us-east-1a]
    except_services: [S3]
  - name: nat-b
    kind: nat_gateway
    zones: [us-east-1b]
  - name: sqs-endpoint
    kind: interface_endpoint
    cidrs: [10.0.9.0/28]
  - name: tgw
    kind: transit_gateway
    cidrs: [10.80.0.0/16]
    price: {out: 0.025}
"#,
    )
    .unwrap();
    let place = ClusterPlace {
        cluster: "prod".into(),
        cloud: cloud.into(),
        region: region.into(),
    };
    Enricher::new(place, Rules::build(file, "test").unwrap())
}

/// `web-a` (10.1.0.5) in us-east-1a and `web-b` (10.2.0.5) in us-east-1b, on node-a / node-b.
fn path_history() -> IpOwnerHistory {
    let mut h = IpOwnerHistory::new(0);
    for (ip, name, node, zone) in [
        ("10.1.0.5", "web-a", "node-a", "us-east-1a"),
        ("10.2.0.5", "web-b", "node-b", "us-east-1b"),
    ] {
        h.record(Tenure {
            ip: ip.parse().unwrap(),
            uid: format!("uid-{name}"),
            start_ms: 0,
            end_ms: None,
            owner: Arc::new(Owner {
                namespace: "shop".into(),
                node: node.into(),
                zone: zone.into(),
                region: "us-east-1".into(),
                cloud: "aws".into(),
                workload_kind: "Deployment".into(),
                workload_name: name.into(),
                ..Owner::new(OwnerKind::Pod, name)
            }),
        });
    }
    h
}

type Priced = (String, String, String, f64, f64);

/// (direction, class, path, cost, processing) of each record of `d` seen on `node`, dollars
/// rounded to 1e-12 (so that sums of prices compare exactly).
fn priced(enricher: &Enricher, node: &str, d: ConnectionDelta) -> Vec<Priced> {
    let history = path_history();
    let inputs = Inputs {
        history: &history,
        cloud: ranges(),
    };
    let mut out = Vec::new();
    let b = batch(node, "c1", 1, T, T + 10_000, vec![d]);
    enricher.enrich(&DeltaBatch::from_wire(&b).unwrap(), &inputs, 0, |f, _| {
        out.push(row(
            f.direction,
            f.class,
            f.path,
            f.cost_usd,
            f.processing_cost_usd,
        ))
    });
    out
}

fn row(d: &str, c: &str, p: &str, cost: f64, processing: f64) -> Priced {
    let r = |x: f64| (x * 1e12).round() / 1e12;
    (d.into(), c.into(), p.into(), r(cost), r(processing))
}

#[test]
fn a_nat_gateway_adds_its_processing_charge_and_the_s3_gateway_endpoint_bypasses_it() {
    let e = path_enricher("aws", "us-east-1");
    let mib2 = 2.0 / 1024.0; // the 2 MiB reply, in GiB
    // Zone a to the internet: $0.09 transfer + $0.045 NAT processing out, $0.045 in.
    assert_eq!(
        priced(&e, "node-a", big("10.1.0.5", "5.9.1.10")),
        [
            row("out", "INTERNET", "nat-a", 0.09 + 0.045, 0.045),
            row("in", "INTERNET", "nat-a", mib2 * 0.045, mib2 * 0.045)
        ]
    );
    // Zone a to S3 in the region: the gateway endpoint, free.
    assert_eq!(
        priced(&e, "node-a", big("10.1.0.5", "52.216.10.20")),
        [
            row("out", "INTRA_REGION", "", 0.0, 0.0),
            row("in", "INTRA_REGION", "", 0.0, 0.0)
        ]
    );
    // Zone b has no gateway endpoint: S3 traffic is NAT-processed both ways, the bill surprise.
    assert_eq!(
        priced(&e, "node-b", big("10.2.0.5", "52.216.10.20")),
        [
            row("out", "INTRA_REGION", "nat-b", 0.045, 0.045),
            row("in", "INTRA_REGION", "nat-b", mib2 * 0.045, mib2 * 0.045)
        ]
    );
    // Traffic inside the cluster never takes a NAT gateway.
    assert_eq!(
        priced(&e, "node-b", big("10.2.0.5", "10.1.0.5")),
        [
            row("out", "INTER_ZONE", "", 0.01, 0.0),
            row("in", "INTER_ZONE", "", mib2 * 0.01, 0.0)
        ]
    );
}

#[test]
fn endpoints_and_transit_gateways_charge_on_top_of_the_region_pair() {
    let e = path_enricher("aws", "us-east-1");
    let mib2 = 2.0 / 1024.0;
    // An interface endpoint in the VPC: private (VPC, free transfer), $0.01 processing each way.
    assert_eq!(
        priced(&e, "node-a", big("10.1.0.5", "10.0.9.5")),
        [
            row("out", "VPC", "sqs-endpoint", 0.01, 0.01),
            row("in", "VPC", "sqs-endpoint", mib2 * 0.01, mib2 * 0.01)
        ]
    );
    // us-east-1 -> eu-west-1 through the transit gateway: $0.02 inter-region + $0.025 (its
    // price in the rules file) sent; receiving is free on both counts.
    assert_eq!(
        priced(&e, "node-a", big("10.1.0.5", "10.80.0.7")),
        [
            row("out", "INTER_REGION", "tgw", 0.02 + 0.025, 0.025),
            row("in", "INTER_REGION", "tgw", 0.0, 0.0)
        ]
    );
    // us-east-1 -> us-east-2: the cheap pair, $0.01.
    assert_eq!(
        priced(&e, "node-a", big("10.1.0.5", "10.81.0.7")),
        [
            row("out", "INTER_REGION", "", 0.01, 0.0),
            row("in", "INTER_REGION", "", 0.0, 0.0)
        ]
    );
    // The same pair's other region costs what its source region charges: a cluster in
    // sa-east-1 pays $0.138 to send to us-east-2 (and $0.15 to the internet).
    let sao_paulo = path_enricher("aws", "sa-east-1");
    let mut h = path_history();
    h.record(Tenure {
        ip: "10.3.0.5".parse().unwrap(),
        uid: "uid-web-sp".into(),
        start_ms: 0,
        end_ms: None,
        owner: Arc::new(Owner {
            node: "node-sp".into(),
            workload_name: "web-sp".into(),
            ..Owner::new(OwnerKind::Pod, "web-sp")
        }),
    });
    let inputs = Inputs {
        history: &h,
        cloud: ranges(),
    };
    let mut costs = Vec::new();
    for dst in ["10.81.0.7", "5.9.1.10"] {
        let b = batch(
            "node-sp",
            "c1",
            1,
            T,
            T + 10_000,
            vec![big("10.3.0.5", dst)],
        );
        sao_paulo.enrich(&DeltaBatch::from_wire(&b).unwrap(), &inputs, 0, |f, _| {
            if f.direction == "out" {
                costs.push((f.class.to_string(), f.cost_usd))
            }
        });
    }
    assert_eq!(
        costs,
        [
            ("INTER_REGION".to_string(), 0.138),
            ("INTERNET".into(), 0.15)
        ]
    );
}

#[test]
fn public_remotes_get_their_country_and_network_and_gcp_prices_by_destination() {
    let records = |cloud: &str, region: &str, dst: &str| {
        let e = path_enricher(cloud, region);
        let history = path_history();
        let inputs = Inputs {
            history: &history,
            cloud: ranges(),
        };
        let mut out = Vec::new();
        let b = batch("node-x", "c1", 1, T, T + 10_000, vec![big("10.9.0.5", dst)]);
        e.enrich(&DeltaBatch::from_wire(&b).unwrap(), &inputs, 0, |f, _| {
            out.push(f.to_flow())
        });
        out
    };
    let place = |f: &Flow| {
        (
            f.class.clone(),
            f.remote_country.clone(),
            f.remote_asn,
            f.remote_as_name.clone(),
        )
    };
    let de = records("aws", "us-east-1", "5.9.1.10");
    assert_eq!(
        place(&de[0]),
        (
            "INTERNET".into(),
            "DE".into(),
            24940,
            "Hetzner Online GmbH".into()
        )
    );
    assert_eq!(
        place(&de[1]),
        place(&de[0]),
        "both directions carry the place"
    );
    let s3 = records("aws", "us-east-1", "52.216.10.20");
    assert_eq!(
        place(&s3[0]),
        (
            "INTRA_REGION".into(),
            "US".into(),
            16509,
            "Amazon.com, Inc.".into()
        )
    );
    let private = records("aws", "us-east-1", "10.0.0.1");
    assert_eq!(
        place(&private[0]),
        ("VPC".into(), String::new(), 0, String::new())
    );
    // GCP prices internet egress by destination: China $0.23, Germany $0.12.
    let out_cost = |dst: &str| records("gcp", "us-east1", dst)[0].cost_usd;
    assert_eq!(out_cost("5.9.1.10"), 0.12);
    assert_eq!(out_cost(CHINA), 0.23);
}

/// An address the built-in country data places in China (China Telecom).
const CHINA: &str = "114.114.114.114";
