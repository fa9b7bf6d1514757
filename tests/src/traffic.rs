//! The traffic driver: a matrix of flows between the mini-cluster's workloads and the hosts
//! outside it, run with real sockets inside the namespaces, and a log of every connection it
//! made (addresses, application bytes, when) — the test's side of every comparison.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::minicluster::{
    CART, CART_TARGET_PORT, CHECKOUT, DB, FRONTEND, Holder, LOGS, MiniCluster, REPORT, SEARCH,
    Workload, cart_service_addr, node_spec,
};
use crate::netns::{TcpSink, UdpSink, tcp_send, tcp_server, udp_send, udp_sink};
use crate::records::now_ms;

/// Where a flow starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The first running pod of a workload.
    Workload(Workload),
    /// A process in the node's own namespace (a hostNetwork pod, e.g. the log agent).
    Node(&'static str),
}

/// Where a flow goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A pod of the workload, by its IPv4 address (the `n`th running pod).
    Pod(Workload, usize),
    /// The first pod of the workload, by its IPv6 address.
    PodV6(Workload),
    /// The Service `shop/cart` (its ClusterIP, DNAT'd by the client's node).
    CartService,
    Internet,
    S3,
}

/// What a flow sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// `connections` TCP connections, each sending `bytes` and reading the server's reply.
    Tcp { connections: u32, bytes: u64 },
    /// `datagrams` UDP datagrams of `size` payload bytes.
    Udp { datagrams: u32, size: usize },
}

/// One line of the traffic matrix.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub label: &'static str,
    pub from: Source,
    pub to: Target,
    pub load: Load,
}

/// The servers: TCP port and reply size per workload, UDP port of the log collector.
const SERVERS: [(Workload, u16, u64); 5] = [
    (CART, CART_TARGET_PORT, 64 << 10),
    (CHECKOUT, 8080, 16 << 10),
    (SEARCH, 8080, 16 << 10),
    (DB, 5432, 1 << 20),
    (LOGS, 9000, 0),
];
const LOGS_UDP_PORT: u16 = 8125;
const EXTERNAL_PORT: u16 = 443;
/// Replies of the hosts outside the cluster: a download from the internet, an S3 PUT's answer.
const INTERNET_REPLY: u64 = 3 << 20;
const S3_REPLY: u64 = 100 << 10;

/// The matrix the demo and the end-to-end tests drive, once per round: every boundary the
/// product meters, with sizes chosen so each line is easy to recognise in the report.
pub fn matrix() -> Vec<Flow> {
    use Load::*;
    vec![
        Flow {
            label: "same node: frontend -> cart (pod IP)",
            from: Source::Workload(FRONTEND),
            to: Target::Pod(CART, 0),
            load: Tcp {
                connections: 1,
                bytes: 1 << 20,
            },
        },
        Flow {
            label: "same zone: frontend -> checkout",
            from: Source::Workload(FRONTEND),
            to: Target::Pod(CHECKOUT, 0),
            load: Tcp {
                connections: 2,
                bytes: 1 << 20,
            },
        },
        Flow {
            label: "same zone, IPv6: frontend -> checkout",
            from: Source::Workload(FRONTEND),
            to: Target::PodV6(CHECKOUT),
            load: Tcp {
                connections: 1,
                bytes: 512 << 10,
            },
        },
        Flow {
            label: "cross-zone: checkout -> db",
            from: Source::Workload(CHECKOUT),
            to: Target::Pod(DB, 0),
            load: Tcp {
                connections: 1,
                bytes: 3 << 20,
            },
        },
        Flow {
            label: "through the Service: frontend -> cart (ClusterIP, both replicas)",
            from: Source::Workload(FRONTEND),
            to: Target::CartService,
            load: Tcp {
                connections: 4,
                bytes: 256 << 10,
            },
        },
        Flow {
            label: "the CronJob's Job, 50 short connections: report -> checkout",
            from: Source::Workload(REPORT),
            to: Target::Pod(CHECKOUT, 0),
            load: Tcp {
                connections: 50,
                bytes: 16 << 10,
            },
        },
        Flow {
            label: "hostNetwork, cross-zone: log-agent on node-b1 -> logs",
            from: Source::Node("node-b1"),
            to: Target::Pod(LOGS, 0),
            load: Tcp {
                connections: 1,
                bytes: 2 << 20,
            },
        },
        Flow {
            label: "hostNetwork, same zone: log-agent on node-a2 -> logs",
            from: Source::Node("node-a2"),
            to: Target::Pod(LOGS, 0),
            load: Tcp {
                connections: 1,
                bytes: 1 << 20,
            },
        },
        Flow {
            label: "UDP metrics: checkout -> logs",
            from: Source::Workload(CHECKOUT),
            to: Target::Pod(LOGS, 0),
            load: Udp {
                datagrams: 200,
                size: 512,
            },
        },
        Flow {
            label: "internet: frontend -> 5.9.1.10 (upload, then a 3 MiB download)",
            from: Source::Workload(FRONTEND),
            to: Target::Internet,
            load: Tcp {
                connections: 1,
                bytes: 1 << 20,
            },
        },
        Flow {
            label: "S3 in the region: checkout -> 52.216.10.20",
            from: Source::Workload(CHECKOUT),
            to: Target::S3,
            load: Tcp {
                connections: 1,
                bytes: 4 << 20,
            },
        },
    ]
}

/// What [`Traffic::run`] reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    Flow(&'a Flow),
    Sent(&'a Sent),
}

/// One connection (or, for UDP, one socket's datagrams) the driver made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub label: &'static str,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// The client's address: the original tuple's source in conntrack.
    pub local: SocketAddr,
    /// The address it sent to (the ClusterIP for the Service): the original destination.
    pub peer: SocketAddr,
    /// Application bytes written and read back.
    pub sent: u64,
    pub received: u64,
    pub started_ms: u64,
    /// When the client had written everything and (TCP) the server had closed.
    pub finished_ms: u64,
}

/// The servers of the workloads and hosts, and what the driver sent through them.
pub struct Traffic {
    tcp: HashMap<String, Vec<TcpSink>>,
    udp: HashMap<String, UdpSink>,
    pub log: Vec<Sent>,
}

impl Traffic {
    /// Starts a server on every pod and host the matrix sends to.
    pub fn start(cluster: &MiniCluster) -> anyhow::Result<Traffic> {
        let mut traffic = Traffic {
            tcp: HashMap::new(),
            udp: HashMap::new(),
            log: Vec::new(),
        };
        for pod in cluster.running_pods() {
            traffic.serve_pod(cluster, pod.spec.name)?;
        }
        for (holder, reply) in [(Holder::Internet, INTERNET_REPLY), (Holder::S3, S3_REPLY)] {
            let ns = cluster.external_ns(&holder)?;
            let ip = match holder {
                Holder::Internet => crate::minicluster::INTERNET_HOST,
                _ => crate::minicluster::S3_HOST,
            };
            let server = tcp_server(&ns, SocketAddr::new(ip.into(), EXTERNAL_PORT), reply)?;
            traffic.tcp.insert(ns, vec![server]);
        }
        Ok(traffic)
    }

    /// Starts the servers of pod `name` (again after it was replaced).
    pub fn serve_pod(&mut self, cluster: &MiniCluster, name: &str) -> anyhow::Result<()> {
        let pod = cluster.pod(name)?;
        let mut servers = Vec::new();
        for (workload, port, reply) in SERVERS {
            if pod.spec.workload != workload {
                continue;
            }
            for ip in [IpAddr::V4(pod.spec.ip()), IpAddr::V6(pod.spec.ip6())] {
                servers.push(tcp_server(&pod.ns, SocketAddr::new(ip, port), reply)?);
            }
        }
        if pod.spec.workload == LOGS {
            let udp = udp_sink(
                &pod.ns,
                SocketAddr::new(pod.spec.ip().into(), LOGS_UDP_PORT),
            )?;
            self.udp.insert(pod.ns.clone(), udp);
        }
        self.tcp.insert(pod.ns.clone(), servers);
        Ok(())
    }

    /// Runs every flow of `flows` once, in order, and logs each connection; `observe` hears
    /// each flow as it starts and each connection as it ends.
    pub fn run(
        &mut self,
        cluster: &MiniCluster,
        flows: &[Flow],
        mut observe: impl FnMut(Event),
    ) -> anyhow::Result<()> {
        for flow in flows {
            observe(Event::Flow(flow));
            let logged = self.log.len();
            self.run_flow(cluster, flow)
                .with_context(|| format!("traffic {:?}", flow.label))?;
            for sent in &self.log[logged..] {
                observe(Event::Sent(sent));
            }
        }
        Ok(())
    }

    fn run_flow(&mut self, cluster: &MiniCluster, flow: &Flow) -> anyhow::Result<()> {
        let ns = match flow.from {
            Source::Workload(workload) => first_pod(cluster, &workload)?.ns.clone(),
            Source::Node(node) => {
                node_spec(node)?;
                cluster.node_ns(node)
            }
        };
        let target = self.target(cluster, flow.to)?;
        match flow.load {
            Load::Tcp { connections, bytes } => {
                for _ in 0..connections {
                    let started_ms = now_ms();
                    let transfer = tcp_send(&ns, target, bytes)?;
                    self.log.push(Sent {
                        label: flow.label,
                        protocol: 6,
                        local: transfer.local,
                        peer: target,
                        sent: transfer.sent,
                        received: transfer.received,
                        started_ms,
                        finished_ms: now_ms(),
                    });
                }
            }
            Load::Udp { datagrams, size } => {
                let started_ms = now_ms();
                let local = udp_send(&ns, target, datagrams, size)?;
                let sink = self.udp.values().find(|s| s.addr() == target);
                if let Some(sink) = sink {
                    let expected = sink.received().datagrams + u64::from(datagrams);
                    // Loss on a veth is not expected; the kernel counts what was sent anyway.
                    sink.wait_for(expected, Duration::from_secs(5));
                }
                self.log.push(Sent {
                    label: flow.label,
                    protocol: 17,
                    local,
                    peer: target,
                    sent: u64::from(datagrams) * size as u64,
                    received: 0,
                    started_ms,
                    finished_ms: now_ms(),
                });
            }
        }
        Ok(())
    }

    fn target(&self, cluster: &MiniCluster, to: Target) -> anyhow::Result<SocketAddr> {
        let port_of = |workload: &Workload| {
            SERVERS
                .iter()
                .find(|(w, ..)| w == workload)
                .map(|(_, port, _)| *port)
                .with_context(|| format!("{workload:?} serves nothing"))
        };
        Ok(match to {
            Target::Pod(workload, n) => {
                let pods = cluster.pods_of(&workload);
                let Some(pod) = pods.get(n) else {
                    bail!("{workload:?} has no pod {n}");
                };
                SocketAddr::new(pod.spec.ip().into(), port_of(&workload)?)
            }
            Target::PodV6(workload) => {
                let pod = first_pod(cluster, &workload)?;
                SocketAddr::new(pod.spec.ip6().into(), port_of(&workload)?)
            }
            Target::CartService => cart_service_addr(),
            Target::Internet => {
                SocketAddr::new(crate::minicluster::INTERNET_HOST.into(), EXTERNAL_PORT)
            }
            Target::S3 => SocketAddr::new(crate::minicluster::S3_HOST.into(), EXTERNAL_PORT),
        })
    }

    /// Application bytes sent and received by all logged connections.
    pub fn application_bytes(&self) -> u64 {
        self.log.iter().map(|s| s.sent + s.received).sum()
    }

    /// The logged connection a conntrack entry with original source `local` and destination
    /// `dst` belongs to: the latest one from `local` to `dst`; where a node saw the connection
    /// after another node's Service DNAT (its destination is the backend, not the ClusterIP),
    /// the latest one from `local` to the Service. (A client may use one local port for
    /// several destinations, so the port alone does not tell.)
    pub fn find(&self, protocol: u8, local: SocketAddr, dst: SocketAddr) -> Option<&Sent> {
        let from_local = || {
            self.log
                .iter()
                .rev()
                .filter(move |s| s.protocol == protocol && s.local == local)
        };
        from_local()
            .find(|s| s.peer == dst)
            .or_else(|| from_local().find(|s| s.peer == cart_service_addr()))
    }

    /// Errors the servers saw (none expected).
    pub fn server_errors(&self) -> Vec<String> {
        self.tcp
            .values()
            .flatten()
            .flat_map(|s| s.errors())
            .collect()
    }
}

fn first_pod<'a>(
    cluster: &'a MiniCluster,
    workload: &Workload,
) -> anyhow::Result<&'a crate::minicluster::RunningPod> {
    cluster
        .pods_of(workload)
        .into_iter()
        .next()
        .with_context(|| format!("{workload:?} has no running pod"))
}
