//! A simulated Kubernetes node in network namespaces, for tests that need the real kernel's
//! conntrack: a "node" namespace with a bridge (the CNI bridge), two "pod" namespaces plugged into
//! it with veth pairs, and a Service VIP that is DNAT'd to a pod like kube-proxy does.
//!
//! ```text
//!   pod-a ns            node ns                                         pod-b ns
//!  ┌──────────────┐   ┌──────────────────────────────────────────┐   ┌──────────────┐
//!  │ eth0         ├───┤ veth-a ─ br0 10.77.0.1 fd77::1 ─ veth-b  ├───┤ eth0         │
//!  │ 10.77.0.2/24 │   │ nft: ct state on forward, input, output  │   │ 10.77.0.3/24 │
//!  │ fd77::2/64   │   │ DNAT 10.96.0.10:80 -> 10.77.0.3:8080     │   │ fd77::3/64   │
//!  └──────────────┘   └──────────────────────────────────────────┘   └──────────────┘
//! ```
//!
//! Why it looks like this:
//! - Conntrack only tracks a namespace's traffic once a netfilter rule there uses `ct` or NAT, so
//!   the node namespace gets an nftables table with `ct state` rules on forward, input and output.
//! - Pod-to-pod traffic on one node is bridged, not routed; netfilter (and so conntrack) sees
//!   bridged IP packets only with br_netfilter's `bridge-nf-call-iptables=1` (and `ip6tables`),
//!   which is per namespace. That is also what makes the DNAT'd reply (pod-b answering pod-a
//!   directly on the bridge) get un-NATed: exactly the setting Kubernetes requires.
//! - `nf_conntrack_acct=1` is per namespace and must be set before entries exist, or they carry
//!   no byte/packet counters.
//! - IPv6 addresses are added with `nodad` (and `accept_dad=0`) so they are usable at once.
//!
//! Every instance has its own namespaces (`nmt-<pid>-<n>-node`, `-pod-a`, `-pod-b`), so tests
//! run in parallel; the addresses are the same in every instance because each lives in its own
//! namespaces. Dropping a [`NodeTopology`] deletes exactly the namespaces it created.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::Context;

use super::namespaces::{Namespaces, ip, nft_apply, node_ruleset, ns_path, run, sysctl};

/// The node's address on the bridge, and the pods' IPv4 default gateway.
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const POD_A_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const POD_B_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// Prefix length of the pod network (10.77.0.0/24).
pub const PREFIX_V4: u8 = 24;
/// The node's IPv6 address on the bridge, and the pods' IPv6 default gateway.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const POD_A_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
pub const POD_B_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
/// Prefix length of the IPv6 pod network (fd77::/64).
pub const PREFIX_V6: u8 = 64;

/// The Service's cluster IP; TCP to it on [`SERVICE_PORT`] is DNAT'd to [`BACKEND_ADDR`].
pub const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const SERVICE_PORT: u16 = 80;
/// The Service's target port on pod-b.
pub const BACKEND_PORT: u16 = 8080;
/// `10.96.0.10:80`: what clients connect to.
pub const SERVICE_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(SERVICE_VIP, SERVICE_PORT));
/// `10.77.0.3:8080`: where a server behind the Service must listen (in pod-b).
pub const BACKEND_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(POD_B_V4, BACKEND_PORT));

/// The nftables table (family `inet`) in the node namespace.
pub const NFT_TABLE: &str = "netmeter_test";

/// A simulated Kubernetes node: three network namespaces (node, pod-a, pod-b) wired as described
/// in the [module docs](self). Dropping it deletes them, also when a test panics.
#[derive(Debug)]
pub struct NodeTopology {
    node: String,
    pod_a: String,
    pod_b: String,
    namespaces: Namespaces,
}

impl NodeTopology {
    /// Creates the namespaces, links, addresses, routes, sysctls and nftables rules. On failure
    /// everything created so far is deleted again and the error names the command that failed.
    pub fn create() -> anyhow::Result<NodeTopology> {
        let namespaces = Namespaces::new("nmt");
        let prefix = namespaces.prefix().to_string();
        let mut topology = NodeTopology {
            node: namespaces.name("node"),
            pod_a: namespaces.name("pod-a"),
            pod_b: namespaces.name("pod-b"),
            namespaces,
        };
        // On error `topology` is dropped here, which deletes what was created.
        topology
            .build()
            .with_context(|| format!("cannot create the simulated node {prefix}"))?;
        Ok(topology)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        for role in ["node", "pod-a", "pod-b"] {
            self.namespaces.add(role)?;
        }

        let node = self.node.as_str();
        // Counters must be on before the first entry is created: entries keep what they got.
        sysctl(node, "net.netfilter.nf_conntrack_acct", "1")?;
        sysctl(node, "net.ipv4.ip_forward", "1")?;
        sysctl(node, "net.ipv6.conf.all.forwarding", "1")?;
        // Without these, bridged pod-to-pod packets bypass netfilter: no conntrack entry, and
        // the DNAT'd reply from the backend would reach the client un-NATed.
        sysctl(node, "net.bridge.bridge-nf-call-iptables", "1").context(
            "br_netfilter is needed for bridged traffic to be tracked (modprobe br_netfilter)",
        )?;
        sysctl(node, "net.bridge.bridge-nf-call-ip6tables", "1")?;

        run(
            ip(&["-n", node, "link", "add", "br0", "type", "bridge"]),
            None,
        )?;
        let node_v4 = format!("{NODE_V4}/{PREFIX_V4}");
        let node_v6 = format!("{NODE_V6}/{PREFIX_V6}");
        run(
            ip(&["-n", node, "addr", "add", &node_v4, "dev", "br0"]),
            None,
        )?;
        run(
            ip(&["-n", node, "addr", "add", &node_v6, "dev", "br0", "nodad"]),
            None,
        )?;
        run(ip(&["-n", node, "link", "set", "br0", "up"]), None)?;

        for (pod, veth, v4, v6) in [
            (self.pod_a.as_str(), "veth-a", POD_A_V4, POD_A_V6),
            (self.pod_b.as_str(), "veth-b", POD_B_V4, POD_B_V6),
        ] {
            // Created inside the node namespace with the peer directly in the pod: no
            // interface ever appears in the root namespace, so names cannot collide.
            run(
                ip(&[
                    "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                    "netns", pod,
                ]),
                None,
            )?;
            run(
                ip(&["-n", node, "link", "set", veth, "master", "br0"]),
                None,
            )?;
            run(ip(&["-n", node, "link", "set", veth, "up"]), None)?;
            let pod_v4 = format!("{v4}/{PREFIX_V4}");
            let pod_v6 = format!("{v6}/{PREFIX_V6}");
            run(
                ip(&["-n", pod, "addr", "add", &pod_v4, "dev", "eth0"]),
                None,
            )?;
            run(
                ip(&["-n", pod, "addr", "add", &pod_v6, "dev", "eth0", "nodad"]),
                None,
            )?;
            run(ip(&["-n", pod, "link", "set", "eth0", "up"]), None)?;
            run(
                ip(&[
                    "-n",
                    pod,
                    "route",
                    "add",
                    "default",
                    "via",
                    &NODE_V4.to_string(),
                ]),
                None,
            )?;
            run(
                ip(&[
                    "-n",
                    pod,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &NODE_V6.to_string(),
                ]),
                None,
            )?;
        }

        nft_apply(node, &nft_ruleset())?;
        Ok(())
    }

    /// Name of the node namespace (for `ip netns exec`, [`in_netns`](super::in_netns),
    /// [`conntrack_list`](super::conntrack_list)).
    pub fn node_ns_name(&self) -> &str {
        &self.node
    }

    /// `/run/netns/<node>`: what the collector's `--netns` takes.
    pub fn node_ns_path(&self) -> PathBuf {
        ns_path(&self.node)
    }

    /// Name of the pod-a namespace (10.77.0.2, fd77::2).
    pub fn pod_a_ns_name(&self) -> &str {
        &self.pod_a
    }

    /// Name of the pod-b namespace (10.77.0.3, fd77::3; the Service backend).
    pub fn pod_b_ns_name(&self) -> &str {
        &self.pod_b
    }

    /// The three namespace names: node, pod-a, pod-b.
    pub fn ns_names(&self) -> [&str; 3] {
        [&self.node, &self.pod_a, &self.pod_b]
    }

    /// Deletes the namespaces now and reports failures (drop only prints them). Sockets and
    /// threads still inside a namespace keep it alive, unnamed, until they end.
    pub fn delete(mut self) -> anyhow::Result<()> {
        self.namespaces.delete_all()
    }
}

/// The node namespace's nftables table: conntrack on every hook and the Service DNAT to pod-b.
/// Hairpin traffic (pod-b to the VIP landing on pod-b) would need masquerading and is not set up.
fn nft_ruleset() -> String {
    node_ruleset(
        NFT_TABLE,
        &format!(
            "ip daddr {SERVICE_VIP} tcp dport {SERVICE_PORT} dnat ip to {POD_B_V4}:{BACKEND_PORT}"
        ),
        "",
    )
}
