//! The local stack: a real Kafka-protocol broker (tansu) and a real ClickHouse (the 26.7 engine,
//! libchdb) on 127.0.0.1. The `netmeter-stack` command installs and runs it, the demo starts it,
//! and the tests (`netmeter-tests`) build a private one per test from the same pieces:
//!
//! - [`install`]: puts the real components (tansu, the ClickHouse engine, helm and kubectl) in a
//!   cache outside the clone, once.
//! - [`process`]: child processes we start, end by PID, and never leak.
//! - [`broker`], [`clickhouse`]: how to run and probe each component; the netmeter topics.
//! - [`local_stack`]: both on fixed ports, detached (`netmeter-stack start|status|stop`).
//! - [`interrupt`]: Ctrl-C and SIGTERM as a flag that long waits ([`wait_until`]) check.

pub mod broker;
pub mod clickhouse;
pub mod install;
pub mod interrupt;
pub mod local_stack;
pub mod process;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where a broker and a ClickHouse answer: the local stack, or a test's private stack.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub kafka_bootstrap: String,
    pub clickhouse_url: String,
}

impl Endpoints {
    /// A client of the ClickHouse (not bound to a database).
    pub fn clickhouse_client(&self) -> ::clickhouse::Client {
        ::clickhouse::Client::default().with_url(&self.clickhouse_url)
    }
}

/// Polls `ready` every 50 ms until it returns true or `timeout` passes (or the command was
/// interrupted, see [`interrupt`]).
pub fn wait_until(timeout: Duration, ready: impl FnMut() -> bool) -> bool {
    poll(timeout, true, ready)
}

/// [`wait_until`] that Ctrl-C does not cut short: for clean-up, which is what runs after one.
pub fn wait_until_even_if_interrupted(timeout: Duration, ready: impl FnMut() -> bool) -> bool {
    poll(timeout, false, ready)
}

fn poll(timeout: Duration, interruptible: bool, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline || (interruptible && interrupt::interrupted()) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A binary of this workspace, as cargo built it: the current executable if it is that binary,
/// else its sibling in cargo's target directory (test binaries run from `target/<profile>/deps/`).
/// `cargo test --workspace` builds every binary of the workspace, because each package with one
/// has integration tests.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
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
