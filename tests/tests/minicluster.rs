//! The mini-cluster is real and isolated: every flow of the traffic matrix crosses the kernel's
//! bridges, routes and NAT; each node's conntrack counts exactly its own connections; the API
//! server describes the same cluster; nothing is linked to the root namespace, and nothing is
//! left behind. Needs root, `ip`, `nft` and `conntrack`.

use std::collections::BTreeMap;
use std::process::Command;

use netmeter_tests::kernel::KernelCounters;
use netmeter_tests::kube_api::Resource;
use netmeter_tests::minicluster::{self, MiniCluster};
use netmeter_tests::traffic::{self, Traffic};
use netmeter_tests::{ledger, netns};

fn root_links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Whether any network namespace's name starts with `prefix`.
fn namespaces_named(prefix: &str) -> bool {
    netns::names().iter().any(|n| n.starts_with(prefix))
}

#[test]
fn every_flow_crosses_the_kernel_and_each_node_counts_its_own_connections() {
    let links_before = root_links();
    let cluster = MiniCluster::create().unwrap();
    let names = cluster.namespace_names();
    assert_eq!(names.len(), 3 + 3 + 7, "router, 2 hosts, 3 nodes, 7 pods");
    let listed = netns::names();
    for name in &names {
        assert!(listed.contains(name), "{name} missing");
    }
    assert_eq!(
        root_links(),
        links_before,
        "no interface in the root namespace"
    );

    // The API server describes the same cluster.
    let pods = cluster.api().get(Resource::Pods, "shop", "db-0").unwrap();
    assert_eq!(pods["status"]["podIPs"][0]["ip"], "10.244.3.10");
    assert_eq!(pods["spec"]["nodeName"], "node-b1");
    let node = cluster.api().get(Resource::Nodes, "", "node-b1").unwrap();
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "us-east-1b"
    );

    let dir = tempfile::tempdir().unwrap();
    let kernel = KernelCounters::start(&cluster.node_namespaces(), dir.path()).unwrap();
    let mut traffic = Traffic::start(&cluster).unwrap();
    traffic.run(&cluster, &traffic::matrix(), |_| {}).unwrap();
    assert_eq!(traffic.server_errors(), Vec::<String>::new());
    kernel.wait_tcp_ended().unwrap(); // short TCP connections end
    let counted = kernel.snapshot().unwrap();

    // Every connection the driver made is counted, by the nodes of its endpoints only.
    let expected = ledger::expected(&cluster, &traffic, &counted).unwrap();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &counted {
        *per_node.entry(c.node.as_str()).or_default() += 1;
    }
    // node-a1: frontend's 1 + 2 + 1 + 4 + 1 connections, logs' 2 TCP + 1 UDP;
    // node-a2: checkout's 2 + 1 in, 1 + 1 UDP + 1 out, 50 from report, 1 hostNetwork;
    // node-b1: db's 1, cart-b's 2 (via the Service), report's 50, its log agent's 1.
    assert_eq!(
        per_node,
        BTreeMap::from([("node-a1", 12), ("node-a2", 57), ("node-b1", 54)]),
        "{counted:#?}"
    );
    let class_bytes = |class: &str| -> u64 {
        expected
            .iter()
            .filter(|(k, _)| k.class == class)
            .map(|(_, t)| t.bytes)
            .sum()
    };
    for class in [
        "INTRA_NODE",
        "INTRA_ZONE",
        "INTER_ZONE",
        "INTERNET",
        "INTRA_REGION",
    ] {
        assert!(class_bytes(class) > 0, "no {class} traffic: {expected:#?}");
    }
    // The Service spread frontend's 4 connections over both cart pods (round robin).
    let to_cart: Vec<_> = counted
        .iter()
        .filter(|c| c.node == "node-a1" && c.entry.orig.dst == minicluster::CART_VIP)
        .map(|c| c.entry.reply.src.to_string())
        .collect();
    assert_eq!(to_cart.len(), 4);
    assert_eq!(
        to_cart.iter().filter(|ip| *ip == "10.244.1.11").count(),
        2,
        "{to_cart:?}"
    );

    let prefix = cluster.prefix().to_string();
    drop(traffic);
    cluster.delete().unwrap();
    assert!(!namespaces_named(&prefix), "namespaces left behind");
    assert_eq!(root_links(), links_before);
}
