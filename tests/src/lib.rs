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

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 always works")
}
