//! The mini-cluster's namespaces, links, addresses, routes, sysctls and nftables rules (see the
//! module docs of [`super`] for the picture). Every veth is created inside the namespaces it
//! joins (`ip -n A link add ... peer ... netns B`), so no interface ever appears in the root
//! namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context;

use super::{
    CART, CART_PORT, CART_TARGET_PORT, CART_VIP, INTERNET_HOST, NODES, NodeSpec, PodSpec, S3_HOST,
    ZONES, initial_pods, node_spec,
};
use crate::netns::{Namespaces, ip, nft_apply, run, sysctl};

pub(super) const ROUTER_ROLE: &str = "router";
pub(super) const INTERNET_ROLE: &str = "internet";
pub(super) const S3_ROLE: &str = "s3";

/// The nftables table (family `inet`) in every node namespace.
pub const NFT_TABLE: &str = "netmeter_node";

/// `ip -n <ns> <args...>`.
fn ipn(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run(ip(&all), None).map(drop)
}

/// Subnet number of a zone on the router: `10.0.<n>.0/24`, `fd00:0:<n>::/64`.
fn zone_net(zone: &str) -> u8 {
    ZONES.iter().position(|z| *z == zone).expect("a known zone") as u8 + 1
}

fn zone_gateway(zone: &str) -> (Ipv4Addr, Ipv6Addr) {
    let n = zone_net(zone);
    (
        Ipv4Addr::new(10, 0, n, 1),
        Ipv6Addr::new(0xfd00, 0, u16::from(n), 0, 0, 0, 0, 1),
    )
}

/// The node's bridge addresses: the gateway of its pods.
fn pod_gateway(node: &NodeSpec) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::new(10, 244, node.pod_net, 1),
        Ipv6Addr::new(0xfd00, 0x244, u16::from(node.pod_net), 0, 0, 0, 0, 1),
    )
}

fn pod_networks(node: &NodeSpec) -> (String, String) {
    (
        format!("10.244.{}.0/24", node.pod_net),
        format!("fd00:244:{}::/64", node.pod_net),
    )
}

pub(super) fn pod_role(pod: &PodSpec) -> String {
    format!("pod-{}", pod.name)
}

/// Builds the router, the external hosts and the nodes (pods come with [`add_pod`]).
pub(super) fn build(namespaces: &mut Namespaces) -> anyhow::Result<()> {
    let router = namespaces.add(ROUTER_ROLE)?;
    sysctl(&router, "net.ipv4.ip_forward", "1")?;
    sysctl(&router, "net.ipv6.conf.all.forwarding", "1")?;
    for zone in ZONES {
        let bridge = format!("zone-{}", zone_net(zone));
        let (v4, v6) = zone_gateway(zone);
        ipn(&router, &["link", "add", &bridge, "type", "bridge"])?;
        ipn(
            &router,
            &["addr", "add", &format!("{v4}/24"), "dev", &bridge],
        )?;
        ipn(
            &router,
            &["addr", "add", &format!("{v6}/64"), "dev", &bridge, "nodad"],
        )?;
        ipn(&router, &["link", "set", &bridge, "up"])?;
    }
    for (role, host) in [(INTERNET_ROLE, INTERNET_HOST), (S3_ROLE, S3_HOST)] {
        let ns = namespaces.add(role)?;
        let [a, b, c, _] = host.octets();
        let gateway = Ipv4Addr::new(a, b, c, 1);
        let link = format!("to-{role}");
        ipn(
            &router,
            &[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        ipn(
            &router,
            &["addr", "add", &format!("{gateway}/24"), "dev", &link],
        )?;
        ipn(&router, &["link", "set", &link, "up"])?;
        ipn(&ns, &["addr", "add", &format!("{host}/24"), "dev", "eth0"])?;
        ipn(&ns, &["link", "set", "eth0", "up"])?;
        ipn(
            &ns,
            &["route", "add", "default", "via", &gateway.to_string()],
        )?;
    }
    for node in &NODES {
        build_node(namespaces, &router, node)
            .with_context(|| format!("cannot build node {}", node.name))?;
    }
    Ok(())
}

fn build_node(namespaces: &mut Namespaces, router: &str, node: &NodeSpec) -> anyhow::Result<()> {
    let ns = namespaces.add(node.name)?;
    // Counters must be on before the first entry is created: entries keep what they got.
    sysctl(&ns, "net.netfilter.nf_conntrack_acct", "1")?;
    // Ended TCP connections leave the table a second after closing (see the module docs).
    sysctl(&ns, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")?;
    sysctl(&ns, "net.netfilter.nf_conntrack_tcp_timeout_close", "1")?;
    sysctl(&ns, "net.ipv4.ip_forward", "1")?;
    sysctl(&ns, "net.ipv6.conf.all.forwarding", "1")?;
    // Bridged pod-to-pod packets pass netfilter (and conntrack) only with br_netfilter on.
    sysctl(&ns, "net.bridge.bridge-nf-call-iptables", "1").context(
        "br_netfilter is needed for bridged traffic to be tracked (modprobe br_netfilter)",
    )?;
    sysctl(&ns, "net.bridge.bridge-nf-call-ip6tables", "1")?;

    // The node's link into its zone's subnet on the router.
    let uplink = format!("node-{}", node.pod_net);
    let bridge = format!("zone-{}", zone_net(node.zone));
    ipn(
        router,
        &[
            "link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
    )?;
    ipn(router, &["link", "set", &uplink, "master", &bridge])?;
    ipn(router, &["link", "set", &uplink, "up"])?;
    address_eth0(&ns, node.ip, node.ip6, zone_gateway(node.zone))?;

    // The CNI bridge: the pods' gateway.
    let (pods4, pods6) = pod_gateway(node);
    ipn(&ns, &["link", "add", "br0", "type", "bridge"])?;
    ipn(&ns, &["addr", "add", &format!("{pods4}/24"), "dev", "br0"])?;
    ipn(
        &ns,
        &["addr", "add", &format!("{pods6}/64"), "dev", "br0", "nodad"],
    )?;
    ipn(&ns, &["link", "set", "br0", "up"])?;

    // Pod networks of the other nodes: directly within the zone, through the router across.
    for other in NODES.iter().filter(|o| o.name != node.name) {
        let (net4, net6) = pod_networks(other);
        if other.zone == node.zone {
            ipn(&ns, &["route", "add", &net4, "via", &other.ip.to_string()])?;
            ipn(
                &ns,
                &["-6", "route", "add", &net6, "via", &other.ip6.to_string()],
            )?;
        }
    }
    let (net4, net6) = pod_networks(node);
    ipn(
        router,
        &["route", "add", &net4, "via", &node.ip.to_string()],
    )?;
    ipn(
        router,
        &["-6", "route", "add", &net6, "via", &node.ip6.to_string()],
    )?;

    nft_apply(&ns, &node_ruleset())?;
    Ok(())
}

/// Conntrack on every hook node traffic passes (forward for routed and bridged pod traffic,
/// input/output for the node and its hostNetwork pods), and the Service `shop/cart` DNAT'd
/// round-robin to its pods, the way kube-proxy's nftables mode does it (prerouting for pods,
/// output for the node's own processes).
fn node_ruleset() -> String {
    let backends: Vec<Ipv4Addr> = initial_pods()
        .iter()
        .filter(|p| p.workload == CART)
        .map(|p| p.ip())
        .collect();
    let vmap: Vec<String> = (0..backends.len())
        .map(|i| format!("{i} : goto cart_{i}"))
        .collect();
    let dispatch = format!(
        "ip daddr {CART_VIP} tcp dport {CART_PORT} numgen inc mod {} vmap {{ {} }}",
        backends.len(),
        vmap.join(", ")
    );
    let endpoints: String = backends
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("  chain cart_{i} {{\n    meta l4proto tcp dnat ip to {ip}:{CART_TARGET_PORT}\n  }}\n"))
        .collect();
    crate::netns::node_ruleset(NFT_TABLE, &dispatch, &endpoints)
}

/// Gives `eth0` of `ns` its addresses (a /24 and a /64), brings it up, and routes everything
/// else through `gateway`.
fn address_eth0(
    ns: &str,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    (gateway4, gateway6): (Ipv4Addr, Ipv6Addr),
) -> anyhow::Result<()> {
    let (v4, v6) = (format!("{v4}/24"), format!("{v6}/64"));
    ipn(ns, &["addr", "add", &v4, "dev", "eth0"])?;
    ipn(ns, &["addr", "add", &v6, "dev", "eth0", "nodad"])?;
    ipn(ns, &["link", "set", "eth0", "up"])?;
    ipn(
        ns,
        &["route", "add", "default", "via", &gateway4.to_string()],
    )?;
    let gateway6 = gateway6.to_string();
    ipn(ns, &["-6", "route", "add", "default", "via", &gateway6])
}

/// Unplugs a pod from its node's bridge and deletes its namespace. The link goes first: a
/// socket still open inside the namespace keeps it (and so the link) alive after the delete.
pub(super) fn remove_pod(namespaces: &mut Namespaces, pod: &PodSpec) -> anyhow::Result<()> {
    let node_ns = namespaces.name(pod.node);
    ipn(&node_ns, &["link", "del", &pod_veth(pod)])?;
    namespaces.remove(&pod_role(pod))
}

fn pod_veth(pod: &PodSpec) -> String {
    format!("vp{}", pod.host)
}

/// Creates a pod's namespace behind its node's bridge; returns the namespace's name.
pub(super) fn add_pod(namespaces: &mut Namespaces, pod: &PodSpec) -> anyhow::Result<String> {
    let node = node_spec(pod.node)?;
    let ns = namespaces.add(&pod_role(pod))?;
    let node_ns = namespaces.name(node.name);
    let veth = pod_veth(pod);
    ipn(
        &node_ns,
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
    )?;
    ipn(&node_ns, &["link", "set", &veth, "master", "br0"])?;
    ipn(&node_ns, &["link", "set", &veth, "up"])?;
    address_eth0(&ns, pod.ip(), pod.ip6(), pod_gateway(node))?;
    Ok(ns)
}
