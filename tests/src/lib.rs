//! Test support for netmeter, reused by every integration test and the demo. The local stack
//! and what it is made of (installs, processes, the broker and ClickHouse) are the
//! `netmeter-stack` crate (`services/stack/`); the parts tests use are re-exported here, so a test
//! names one crate:
//!
//! - [`install`], [`process`], [`interrupt`], [`wait_until`], [`workspace_bin`]: from
//!   `netmeter-stack`, as they are.
//! - [`broker`], [`clickhouse`]: `netmeter-stack`'s, plus reading a topic back and exact query
//!   output.
//! - [`stack`]: a broker plus ClickHouse on free ports for one test, with the netmeter topics
//!   created.
//! - [`clickhouse_cluster`]: ClickHouse servers on free ports forming the shards of a cluster.
//! - [`bench`]: CPU clocks, medians and settings for the on-demand benchmarks.
//! - [`cluster`]: Kubernetes objects (nodes, pods with owner chains, Services) for [`kube_api`].
//! - [`records`]: raw batches to feed a pipeline, and its output read back.
//! - [`service`]: runs a netmeter binary against a stack and checks its HTTP endpoint.
//! - [`documented_metrics`]: the README's metric lists against a service's `/metrics`.
//! - [`secure_broker`]: a broker that requires TLS and SASL/SCRAM, like managed Kafka.
//! - [`kube_api`]: an in-process Kubernetes API server (list/watch, 410s, outages) for kube-rs.
//! - [`netns`]: a simulated Kubernetes node in network namespaces, traffic, and a reference
//!   conntrack reader.
//! - [`minicluster`]: a three-node, two-zone cluster in network namespaces, served through
//!   [`kube_api`]; [`traffic`] drives a matrix of flows through it and logs every connection.
//! - [`pipeline`]: collectors, attributors and the sink running on a mini-cluster.
//! - [`kernel`]: the kernel's own counters of every connection (the `conntrack` tool), and
//!   [`ledger`]: what ClickHouse must hold for them, and what it holds.
//! - [`prometheus`]: the real Prometheus scraping services, PromQL queries, `promtool check metrics`.

pub mod bench;
pub mod broker;
pub mod clickhouse;
pub mod clickhouse_cluster;
pub mod cluster;
pub mod documented_metrics;
pub mod kernel;
pub mod kube_api;
pub mod ledger;
pub mod minicluster;
pub mod netns;
pub mod pipeline;
pub mod prometheus;
pub mod records;
pub mod secure_broker;
pub mod service;
pub mod stack;
pub mod traffic;

pub use netmeter_stack::{
    install, interrupt, process, wait_until, wait_until_even_if_interrupted, workspace_bin,
};
pub use stack::Stack;

/// A port on 127.0.0.1 that was free a moment ago, for a server a test starts.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768-60999 by default),
/// not from it (`bind(0)`): between this check and the server's own bind, a client's outgoing
/// connection (Kafka, HTTP) can take an ephemeral port, and the server then fails with "address
/// already in use" (seen in CI-like runs). Ports are handed out in turn within the process,
/// from a start that depends on the process id, so the tests of one binary, which run in
/// parallel, and other test processes do not pick the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_start.saturating_sub(LOW);
    if span < 1_000 {
        // No room below the ephemeral range: what the kernel hands out.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0 always works");
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {ephemeral_start}")
}
