//! A small Kubernetes cluster on one machine, built from network namespaces and served to the
//! attributors through the test API server: the backbone of the demo and of every end-to-end
//! test.
//!
//! ```text
//!                               router (no conntrack, forwards)
//!        ┌──────────────── zone-a 10.0.1.1 ───────────┐   zone-b 10.0.2.1   inet0 5.9.1.1
//!        │                                             │         │            s3-0  52.216.10.1
//!  node-a1 10.0.1.11 (us-east-1a)   node-a2 10.0.1.12 (us-east-1a)   node-b1 10.0.2.13 (us-east-1b)
//!  br0 10.244.1.1                   br0 10.244.2.1                    br0 10.244.3.1
//!   ├ frontend-…   10.244.1.10       └ checkout-…   10.244.2.10        ├ db-0          10.244.3.10
//!   ├ cart-…-a     10.244.1.11                                          ├ cart-…-b      10.244.3.11
//!   └ logs-0       10.244.1.12                                          └ report-…      10.244.3.12
//!  log-agent (DaemonSet, hostNetwork) on every node, in the node namespace itself
//!  "internet" host 5.9.1.10 (Hetzner, DE) and an "S3" host 52.216.10.20 (AWS S3, us-east-1), behind the router
//! ```
//!
//! - Every node is a namespace with its own conntrack table (accounting on, `ct` rules on
//!   forward/input/output, like a kube-proxy node), a bridge with its pods' namespaces behind it,
//!   the Service `shop/cart` (ClusterIP 10.96.0.10:80) DNAT'd round-robin to the cart pods,
//!   and routes to the other nodes (directly within a zone, through the router across zones).
//!   Pods are dual-stack (`fd00:244:<node>::<host>`); nodes too (`fd00:0:<zone>::<host>`).
//! - Ended TCP connections leave the node tables one second after they close (TIME_WAIT and
//!   CLOSE timeouts of 1 s), so short connections end between collector dumps, as they do on a
//!   busy node, and are only seen through their DESTROY events.
//! - The API server holds the matching objects: Nodes (zone/region labels, provider id,
//!   instance type, dual-stack InternalIPs), Pods with their owners (ReplicaSets of Deployments,
//!   a StatefulSet, a CronJob's Job, a DaemonSet with hostNetwork), the Service and its
//!   EndpointSlice.
//! - No namespace has a link to the root namespace: every veth is created inside the
//!   namespaces it joins, so no packet can leave the cluster. Dropping the [`MiniCluster`]
//!   deletes its namespaces (and with them every interface and nftables rule); leftovers of a
//!   process that died are deleted by the next one ([`crate::netns::Namespaces`]).

mod network;
mod objects;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, bail};

use crate::kube_api::{KubeApiServer, Resource};
use crate::netns::{Namespaces, ns_path};
use crate::records::now_ms;

pub const CLOUD: &str = "aws";
pub const REGION: &str = "us-east-1";

/// A node: its zone, its address and the number of its pod network (`10.244.<net>.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeSpec {
    pub name: &'static str,
    pub zone: &'static str,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub pod_net: u8,
}

/// The three nodes, two in us-east-1a and one in us-east-1b.
pub const NODES: [NodeSpec; 3] = [
    NodeSpec {
        name: "node-a1",
        zone: "us-east-1a",
        ip: Ipv4Addr::new(10, 0, 1, 11),
        ip6: Ipv6Addr::new(0xfd00, 0, 1, 0, 0, 0, 0, 0x11),
        pod_net: 1,
    },
    NodeSpec {
        name: "node-a2",
        zone: "us-east-1a",
        ip: Ipv4Addr::new(10, 0, 1, 12),
        ip6: Ipv6Addr::new(0xfd00, 0, 1, 0, 0, 0, 0, 0x12),
        pod_net: 2,
    },
    NodeSpec {
        name: "node-b1",
        zone: "us-east-1b",
        ip: Ipv4Addr::new(10, 0, 2, 13),
        ip6: Ipv6Addr::new(0xfd00, 0, 2, 0, 0, 0, 0, 0x13),
        pod_net: 3,
    },
];

/// The zones' subnets on the router: zone `i` (in [`ZONES`] order) is `10.0.<i+1>.0/24`.
pub const ZONES: [&str; 2] = ["us-east-1a", "us-east-1b"];

/// The "internet" host outside the cluster: an address the country and network data place
/// (Hetzner, Germany), held by a namespace of ours with no link to the root namespace, so no
/// packet to it can leave the machine.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(5, 9, 1, 10);
/// Where the built-in country and network data place [`INTERNET_HOST`] (checked by hand
/// against the `@ip-location-db` files, not by netmeter's code).
pub const INTERNET_HOST_PLACE: (&str, u32, &str) = ("DE", 24940, "Hetzner Online GmbH");
/// The "S3" host: an address of AWS S3 in us-east-1 (52.216.0.0/15 in the AWS range file).
pub const S3_HOST: Ipv4Addr = Ipv4Addr::new(52, 216, 10, 20);

/// The attributors' rules file: the cluster's nodes in us-east-1a reach public addresses
/// through a NAT gateway, except S3, which their route table sends through a gateway endpoint
/// (free). Zone us-east-1b has no NAT gateway declared.
pub const RULES: &str = "\
paths:
  - name: nat-us-east-1a
    kind: nat_gateway
    zones: [us-east-1a]
    except_services: [S3]
";
/// The path [`RULES`] declares and its processing charge, $/GiB each way (AWS list price).
pub const NAT_PATH: &str = "nat-us-east-1a";
pub const NAT_PROCESSING: f64 = 0.045;

/// The Service `shop/cart`: its ClusterIP and port, and the port of its pods.
pub const CART_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const CART_PORT: u16 = 80;
pub const CART_TARGET_PORT: u16 = 8080;

pub fn node_spec(name: &str) -> anyhow::Result<&'static NodeSpec> {
    NODES
        .iter()
        .find(|n| n.name == name)
        .with_context(|| format!("no node {name} in the mini-cluster"))
}

/// The workload a pod belongs to, as the README's attribution rules name it (a ReplicaSet's
/// pods belong to its Deployment, a Job's to its CronJob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: &'static str,
    pub kind: &'static str,
    pub name: &'static str,
}

impl Workload {
    pub const fn new(namespace: &'static str, kind: &'static str, name: &'static str) -> Self {
        Workload {
            namespace,
            kind,
            name,
        }
    }
}

/// The object that controls a pod directly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    /// A ReplicaSet (name) of the workload's Deployment.
    ReplicaSet(&'static str),
    StatefulSet,
    /// A Job (name) of the workload's CronJob.
    Job(&'static str),
}

/// A pod of the mini-cluster (not hostNetwork: those are the node's namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodSpec {
    pub name: &'static str,
    pub node: &'static str,
    /// Host part of its addresses on its node's pod network.
    pub host: u8,
    pub workload: Workload,
    pub controller: Controller,
}

impl PodSpec {
    pub fn ip(&self) -> Ipv4Addr {
        let net = node_spec(self.node)
            .expect("pods run on known nodes")
            .pod_net;
        Ipv4Addr::new(10, 244, net, self.host)
    }

    pub fn ip6(&self) -> Ipv6Addr {
        let net = node_spec(self.node)
            .expect("pods run on known nodes")
            .pod_net;
        Ipv6Addr::new(
            0xfd00,
            0x244,
            u16::from(net),
            0,
            0,
            0,
            0,
            u16::from(self.host),
        )
    }
}

const SHOP: &str = "shop";
const OBSERVABILITY: &str = "observability";

pub const FRONTEND: Workload = Workload::new(SHOP, "Deployment", "frontend");
pub const CART: Workload = Workload::new(SHOP, "Deployment", "cart");
pub const CHECKOUT: Workload = Workload::new(SHOP, "Deployment", "checkout");
/// The workload that takes over checkout's address in the IP-reuse fault.
pub const SEARCH: Workload = Workload::new(SHOP, "Deployment", "search");
pub const DB: Workload = Workload::new(SHOP, "StatefulSet", "db");
pub const REPORT: Workload = Workload::new(SHOP, "CronJob", "report");
pub const LOGS: Workload = Workload::new(OBSERVABILITY, "StatefulSet", "logs");
/// The hostNetwork DaemonSet: its pods share their node's address and namespace.
pub const LOG_AGENT: Workload = Workload::new(OBSERVABILITY, "DaemonSet", "log-agent");

/// The pods the cluster starts with.
pub fn initial_pods() -> Vec<PodSpec> {
    vec![
        PodSpec {
            name: "frontend-7c9d8f-x1x2z",
            node: "node-a1",
            host: 10,
            workload: FRONTEND,
            controller: Controller::ReplicaSet("frontend-7c9d8f"),
        },
        PodSpec {
            name: "cart-5f6b7c-aq2lm",
            node: "node-a1",
            host: 11,
            workload: CART,
            controller: Controller::ReplicaSet("cart-5f6b7c"),
        },
        PodSpec {
            name: "logs-0",
            node: "node-a1",
            host: 12,
            workload: LOGS,
            controller: Controller::StatefulSet,
        },
        PodSpec {
            name: "checkout-6d8f9b-y1k4d",
            node: "node-a2",
            host: 10,
            workload: CHECKOUT,
            controller: Controller::ReplicaSet("checkout-6d8f9b"),
        },
        PodSpec {
            name: "db-0",
            node: "node-b1",
            host: 10,
            workload: DB,
            controller: Controller::StatefulSet,
        },
        PodSpec {
            name: "cart-5f6b7c-b8n3p",
            node: "node-b1",
            host: 11,
            workload: CART,
            controller: Controller::ReplicaSet("cart-5f6b7c"),
        },
        PodSpec {
            name: "report-29339520-q7w2c",
            node: "node-b1",
            host: 12,
            workload: REPORT,
            controller: Controller::Job("report-29339520"),
        },
    ]
}

/// The pod that takes over checkout's address in the IP-reuse fault.
pub fn search_pod() -> PodSpec {
    PodSpec {
        name: "search-84c6dd-r5t8v",
        node: "node-a2",
        host: 10,
        workload: SEARCH,
        controller: Controller::ReplicaSet("search-84c6dd"),
    }
}

/// What held an address, for the test's own (independent) expectations of attribution.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    Pod {
        pod: PodSpec,
        zone: &'static str,
    },
    /// A node's own address: node processes and its hostNetwork pods.
    Node(&'static NodeSpec),
    Internet,
    S3,
}

impl Holder {
    /// The node the holder runs on, if it is in the cluster.
    pub fn node(&self) -> Option<&'static str> {
        match self {
            Holder::Pod { pod, .. } => Some(pod.node),
            Holder::Node(node) => Some(node.name),
            Holder::Internet | Holder::S3 => None,
        }
    }
}

/// One holder's time on an address.
#[derive(Clone, Debug)]
struct Tenure {
    ip: IpAddr,
    holder: Holder,
    from_ms: u64,
    to_ms: Option<u64>,
}

/// A running pod: its spec and its namespace.
#[derive(Clone, Debug)]
pub struct RunningPod {
    pub spec: PodSpec,
    pub ns: String,
}

/// The mini-cluster: namespaces, routes and rules, plus the API server that describes it.
pub struct MiniCluster {
    namespaces: Namespaces,
    pods: Vec<RunningPod>,
    api: KubeApiServer,
    tenures: Mutex<Vec<Tenure>>,
}

impl MiniCluster {
    /// Builds the cluster of the module docs and serves its objects. On failure everything
    /// created so far is deleted again.
    pub fn create() -> anyhow::Result<MiniCluster> {
        let mut namespaces = Namespaces::new("nmc");
        let prefix = namespaces.prefix().to_string();
        network::build(&mut namespaces)
            .with_context(|| format!("cannot create the mini-cluster {prefix}"))?;
        let api = KubeApiServer::new()?;
        let started_ms = now_ms().saturating_sub(60_000);
        let mut cluster = MiniCluster {
            namespaces,
            pods: Vec::new(),
            api,
            tenures: Mutex::new(Vec::new()),
        };
        for node in &NODES {
            cluster.api.apply(Resource::Nodes, objects::node(node));
            cluster.api.apply(
                Resource::Pods,
                objects::host_network_pod(&LOG_AGENT, node, started_ms),
            );
            for ip in [IpAddr::V4(node.ip), IpAddr::V6(node.ip6)] {
                cluster.hold(ip, Holder::Node(node), 0);
            }
        }
        cluster.hold(INTERNET_HOST.into(), Holder::Internet, 0);
        cluster.hold(S3_HOST.into(), Holder::S3, 0);
        for pod in initial_pods() {
            cluster.add_pod(pod, started_ms)?;
        }
        cluster
            .api
            .apply(Resource::Services, objects::cart_service());
        cluster
            .api
            .apply(Resource::EndpointSlices, objects::cart_endpoints(&cluster));
        Ok(cluster)
    }

    /// The API server the attributors watch.
    pub fn api(&self) -> &KubeApiServer {
        &self.api
    }

    /// `nmc-<pid>-<n>`: the prefix of every namespace of this cluster.
    pub fn prefix(&self) -> &str {
        self.namespaces.prefix()
    }

    /// The namespace of node `node` (where its conntrack table, its bridge and its hostNetwork
    /// pods are).
    pub fn node_ns(&self, node: &str) -> String {
        self.namespaces.name(node)
    }

    /// Every node's name with its namespace's.
    pub fn node_namespaces(&self) -> Vec<(String, String)> {
        NODES
            .iter()
            .map(|n| (n.name.to_string(), self.node_ns(n.name)))
            .collect()
    }

    /// `/run/netns/<node namespace>`: what the collector's `--netns` takes.
    pub fn node_ns_path(&self, node: &str) -> PathBuf {
        ns_path(&self.node_ns(node))
    }

    /// The namespace of the internet host or the S3 host.
    pub fn external_ns(&self, holder: &Holder) -> anyhow::Result<String> {
        match holder {
            Holder::Internet => Ok(self.namespaces.name(network::INTERNET_ROLE)),
            Holder::S3 => Ok(self.namespaces.name(network::S3_ROLE)),
            other => bail!("{other:?} is not an external host"),
        }
    }

    /// Every namespace of the cluster.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![
            self.namespaces.name(network::ROUTER_ROLE),
            self.namespaces.name(network::INTERNET_ROLE),
            self.namespaces.name(network::S3_ROLE),
        ];
        names.extend(NODES.iter().map(|n| self.node_ns(n.name)));
        names.extend(self.pods.iter().map(|p| p.ns.clone()));
        names
    }

    /// The running pod named `name`.
    pub fn pod(&self, name: &str) -> anyhow::Result<&RunningPod> {
        self.pods
            .iter()
            .find(|p| p.spec.name == name)
            .with_context(|| format!("no running pod {name}"))
    }

    /// The running pods of `workload`.
    pub fn pods_of(&self, workload: &Workload) -> Vec<&RunningPod> {
        self.pods
            .iter()
            .filter(|p| p.spec.workload == *workload)
            .collect()
    }

    pub fn running_pods(&self) -> &[RunningPod] {
        &self.pods
    }

    /// Who held `ip` at `at_ms` (the test's truth, kept as pods come and go).
    pub fn holder_at(&self, ip: IpAddr, at_ms: u64) -> Option<Holder> {
        let tenures = self.tenures.lock().expect("tenures lock");
        tenures
            .iter()
            .rev()
            .find(|t| t.ip == ip && t.from_ms <= at_ms && t.to_ms.is_none_or(|to| at_ms < to))
            .map(|t| t.holder.clone())
    }

    /// Deletes pod `old` (from the API and the node) and starts `new` with the same addresses
    /// on the same node, as when Kubernetes reuses a deleted pod's IP: the API shows the old
    /// pod deleted at once and the new one started `gap` later.
    pub fn replace_pod(
        &mut self,
        old: &str,
        new: PodSpec,
        gap: std::time::Duration,
    ) -> anyhow::Result<()> {
        let at = self
            .pods
            .iter()
            .position(|p| p.spec.name == old)
            .with_context(|| format!("no running pod {old}"))?;
        let old_pod = self.pods.remove(at);
        if (old_pod.spec.node, old_pod.spec.host) != (new.node, new.host) {
            bail!("{} would not reuse {old}'s addresses", new.name);
        }
        self.api
            .delete(Resource::Pods, old_pod.spec.workload.namespace, old);
        let deleted_ms = now_ms();
        self.end_tenures(
            &[old_pod.spec.ip().into(), old_pod.spec.ip6().into()],
            deleted_ms,
        );
        network::remove_pod(&mut self.namespaces, &old_pod.spec)?;
        // The address stays free for `gap`, as between a pod's end and its successor's start.
        std::thread::sleep(gap);
        // Kubernetes writes start times in whole seconds: start the new pod on a whole second.
        let start_ms = now_ms().div_ceil(1000) * 1000;
        std::thread::sleep(std::time::Duration::from_millis(
            start_ms.saturating_sub(now_ms()),
        ));
        self.add_pod(new, start_ms)?;
        self.api
            .apply(Resource::EndpointSlices, objects::cart_endpoints(self));
        Ok(())
    }

    fn add_pod(&mut self, pod: PodSpec, start_ms: u64) -> anyhow::Result<()> {
        let ns = network::add_pod(&mut self.namespaces, &pod)?;
        let node = node_spec(pod.node)?;
        if let Controller::ReplicaSet(rs) = pod.controller {
            self.api.apply(
                Resource::ReplicaSets,
                objects::replica_set(&pod.workload, rs),
            );
        }
        if let Controller::Job(job) = pod.controller {
            self.api
                .apply(Resource::Jobs, objects::job(&pod.workload, job));
        }
        self.api.apply(Resource::Pods, objects::pod(&pod, start_ms));
        let holder = Holder::Pod {
            pod: pod.clone(),
            zone: node.zone,
        };
        for ip in [IpAddr::V4(pod.ip()), IpAddr::V6(pod.ip6())] {
            self.hold(ip, holder.clone(), start_ms);
        }
        self.pods.push(RunningPod { spec: pod, ns });
        Ok(())
    }

    fn hold(&self, ip: IpAddr, holder: Holder, from_ms: u64) {
        self.tenures.lock().expect("tenures lock").push(Tenure {
            ip,
            holder,
            from_ms,
            to_ms: None,
        });
    }

    fn end_tenures(&self, ips: &[IpAddr], at_ms: u64) {
        for tenure in self.tenures.lock().expect("tenures lock").iter_mut() {
            if ips.contains(&tenure.ip) && tenure.to_ms.is_none() {
                tenure.to_ms = Some(at_ms);
            }
        }
    }

    /// Deletes every namespace now, reporting failures (drop only prints them).
    pub fn delete(mut self) -> anyhow::Result<()> {
        self.namespaces.delete_all()
    }
}

/// A socket address of the Service `shop/cart`.
pub fn cart_service_addr() -> SocketAddr {
    SocketAddr::new(CART_VIP.into(), CART_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_follow_their_node() {
        let pods = initial_pods();
        let db = pods.iter().find(|p| p.name == "db-0").unwrap();
        assert_eq!(db.ip(), Ipv4Addr::new(10, 244, 3, 10));
        assert_eq!(db.ip6().to_string(), "fd00:244:3::a");
        assert_eq!(search_pod().ip(), Ipv4Addr::new(10, 244, 2, 10));
        let mut addresses: Vec<_> = pods.iter().map(|p| p.ip()).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), pods.len(), "every pod has its own address");
    }
}
