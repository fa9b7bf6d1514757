//! Test support for netmeter, reused by every integration test, the local stack command
//! (`netmeter-stack`) and the demo:
//!
//! - [`bench`]: CPU clocks, medians and settings for the on-demand benchmarks.
//! - [`install`]: puts the real components (tansu broker, ClickHouse 26.7 engine) in a cache.
//! - [`process`]: child processes we start, end by PID, and never leak.
//! - [`broker`], [`clickhouse`]: how to run and probe each component.
//! - [`stack`]: a broker plus ClickHouse on free ports, with the netmeter topics created;
//!   [`local_stack`]: the same on fixed ports, detached (`netmeter-stack start`, the demo).
//! - [`cluster`]: Kubernetes objects (nodes, pods with owner chains, Services) for [`kube_api`].
//! - [`records`]: raw batches to feed a pipeline, and its output read back.
//! - [`service`]: runs a netmeter binary against a stack and checks its HTTP endpoint.
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
pub mod cluster;
pub mod install;
pub mod interrupt;
pub mod kernel;
pub mod kube_api;
pub mod ledger;
pub mod local_stack;
pub mod minicluster;
pub mod netns;
pub mod pipeline;
pub mod process;
pub mod prometheus;
pub mod records;
pub mod secure_broker;
pub mod service;
pub mod stack;
pub mod traffic;

pub use stack::Stack;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 always works")
}

/// Polls `ready` every 50 ms until it returns true or `timeout` passes (or the command was
/// interrupted, see [`interrupt`]).
pub fn wait_until(timeout: std::time::Duration, ready: impl FnMut() -> bool) -> bool {
    poll(timeout, true, ready)
}

/// [`wait_until`] that Ctrl-C does not cut short: for clean-up, which is what runs after one.
pub fn wait_until_even_if_interrupted(
    timeout: std::time::Duration,
    ready: impl FnMut() -> bool,
) -> bool {
    poll(timeout, false, ready)
}

fn poll(
    timeout: std::time::Duration,
    interruptible: bool,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline || (interruptible && interrupt::interrupted()) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A binary of this workspace, as cargo built it: the current executable if it is that binary,
/// else its sibling in cargo's target directory (test binaries run from `target/<profile>/deps/`).
/// `cargo test --workspace` builds every service binary, because each has integration tests.
pub fn workspace_bin(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == name) {
        return Ok(exe);
    }
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", exe.display()))?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let bin = profile_dir.join(name);
    anyhow::ensure!(
        bin.is_file(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        bin.display()
    );
    Ok(bin)
}
