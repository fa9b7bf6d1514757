//! The local stack of `netmeter-stack start` and the demo: a broker and a ClickHouse started
//! as detached processes on fixed ports (9092, 8123, 9000 by default), data, logs and the PIDs
//! they run as under one directory (`.stack/`). Starting is idempotent (what runs is left
//! alone); stopping ends exactly the processes that were started, by PID.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::broker::{PARTITIONS, default_topics};
use crate::process::{Lifetime, ManagedProcess, is_alive, signal};
use crate::{Endpoints, broker, clickhouse, install, wait_until_even_if_interrupted};

/// What `start` recorded, so `status` and `stop` act on exactly those processes.
#[derive(Serialize, Deserialize, Default)]
pub struct State {
    kafka_port: u16,
    clickhouse_http_port: u16,
    clickhouse_tcp_port: u16,
    broker_pid: Option<u32>,
    clickhouse_pid: Option<u32>,
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join("stack.json")
    }

    fn load(dir: &Path) -> State {
        std::fs::read(Self::path(dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(Self::path(dir), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

/// True if `pid` is alive and is the program we started (not a reused PID).
fn is_ours(pid: Option<u32>, program: &str) -> bool {
    let Some(pid) = pid else { return false };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(program))
        .unwrap_or(false)
}

/// Where the local stack listens on 127.0.0.1 (flags of `netmeter-stack start` and the demo).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Ports {
    #[arg(long, env = "NETMETER_KAFKA_PORT", default_value_t = 9092)]
    pub kafka_port: u16,
    #[arg(long, env = "NETMETER_CLICKHOUSE_HTTP_PORT", default_value_t = 8123)]
    pub clickhouse_http_port: u16,
    #[arg(long, env = "NETMETER_CLICKHOUSE_TCP_PORT", default_value_t = 9000)]
    pub clickhouse_tcp_port: u16,
}

impl Ports {
    /// The same ports as flags, to pass on to another process.
    pub fn args(&self) -> Vec<String> {
        [
            ("--kafka-port", self.kafka_port),
            ("--clickhouse-http-port", self.clickhouse_http_port),
            ("--clickhouse-tcp-port", self.clickhouse_tcp_port),
        ]
        .iter()
        .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
        .collect()
    }
}

const BROKER_PROGRAM: &str = "tansu";
const CLICKHOUSE_PROGRAM: &str = "clickhouse-server";

/// Starts whatever of the stack is not running (installing first if needed) and creates the
/// topics; returns where the stack answers.
pub async fn start(dir: &Path, ports: Ports) -> anyhow::Result<Endpoints> {
    let Ports {
        kafka_port,
        clickhouse_http_port: http_port,
        clickhouse_tcp_port: tcp_port,
    } = ports;
    let tansu = install::ensure_tansu()?;
    let lib = install::ensure_chdb()?;
    std::fs::create_dir_all(dir.join("broker"))?;
    std::fs::create_dir_all(dir.join("clickhouse"))?;
    let dir = dir.canonicalize()?;
    let mut state = State::load(&dir);
    if is_ours(state.broker_pid, BROKER_PROGRAM) {
        println!(
            "broker     already running (pid {}) on 127.0.0.1:{}",
            state.broker_pid.unwrap_or_default(),
            state.kafka_port
        );
    } else {
        let command = broker::command(&tansu, &dir.join("broker"), kafka_port);
        let mut process = ManagedProcess::spawn(
            "broker",
            command,
            &dir.join("broker.log"),
            Lifetime::Detached,
        )?;
        process.wait_ready(broker::START_TIMEOUT, || broker::is_ready(kafka_port))?;
        state.broker_pid = Some(process.pid());
        state.kafka_port = kafka_port;
        std::mem::forget(process); // detached: it outlives this command
        println!(
            "broker     started (pid {}) on 127.0.0.1:{kafka_port}",
            state.broker_pid.unwrap_or_default()
        );
    }
    state.save(&dir)?;
    if is_ours(state.clickhouse_pid, CLICKHOUSE_PROGRAM) {
        println!(
            "clickhouse already running (pid {}) on http://127.0.0.1:{}",
            state.clickhouse_pid.unwrap_or_default(),
            state.clickhouse_http_port
        );
    } else {
        let launcher = clickhouse::launcher()?;
        let command = clickhouse::command(
            &launcher,
            &lib,
            &dir.join("clickhouse"),
            http_port,
            tcp_port,
        );
        let mut process = ManagedProcess::spawn(
            "clickhouse",
            command,
            &dir.join("clickhouse.log"),
            Lifetime::Detached,
        )?;
        process.wait_ready(clickhouse::START_TIMEOUT, || {
            clickhouse::is_ready(http_port)
        })?;
        state.clickhouse_pid = Some(process.pid());
        state.clickhouse_http_port = http_port;
        state.clickhouse_tcp_port = tcp_port;
        std::mem::forget(process);
        println!(
            "clickhouse started (pid {}) on http://127.0.0.1:{http_port} (native {tcp_port})",
            state.clickhouse_pid.unwrap_or_default()
        );
    }
    state.save(&dir)?;
    let bootstrap = format!("127.0.0.1:{}", state.kafka_port);
    broker::create_topics(&bootstrap, &default_topics(), PARTITIONS)
        .await
        .context("creating the netmeter topics")?;
    println!(
        "topics     {} ({PARTITIONS} partitions each)",
        default_topics().join(", ")
    );
    Ok(Endpoints {
        kafka_bootstrap: bootstrap,
        clickhouse_url: format!("http://127.0.0.1:{}", state.clickhouse_http_port),
    })
}

/// Whether the broker and ClickHouse of the stack in `dir` run and answer.
fn up(dir: &Path) -> (State, bool, bool) {
    let state = State::load(dir);
    let broker_up = is_ours(state.broker_pid, BROKER_PROGRAM) && broker::is_ready(state.kafka_port);
    let clickhouse_up = is_ours(state.clickhouse_pid, CLICKHOUSE_PROGRAM)
        && clickhouse::is_ready(state.clickhouse_http_port);
    (state, broker_up, clickhouse_up)
}

/// Whether both components of the stack in `dir` run.
pub fn is_running(dir: &Path) -> bool {
    let (_, broker_up, clickhouse_up) = up(dir);
    broker_up && clickhouse_up
}

/// Prints what runs; `ExitCode` 0 only if everything does (3 otherwise).
pub fn status(dir: &Path) -> ExitCode {
    let (state, broker_up, clickhouse_up) = up(dir);
    let word = |up| if up { "running" } else { "stopped" };
    println!(
        "broker     {} 127.0.0.1:{}",
        word(broker_up),
        state.kafka_port
    );
    println!(
        "clickhouse {} http://127.0.0.1:{}",
        word(clickhouse_up),
        state.clickhouse_http_port
    );
    if broker_up && clickhouse_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// Stops both components (their data stays).
pub fn stop(dir: &Path) -> anyhow::Result<()> {
    let mut state = State::load(dir);
    for (name, pid, program) in [
        ("broker", &mut state.broker_pid, BROKER_PROGRAM),
        ("clickhouse", &mut state.clickhouse_pid, CLICKHOUSE_PROGRAM),
    ] {
        if is_ours(*pid, program) {
            let p = pid.unwrap_or_default();
            signal(p, libc::SIGTERM);
            if !wait_until_even_if_interrupted(Duration::from_secs(10), || !is_alive(p)) {
                signal(p, libc::SIGKILL);
                if !wait_until_even_if_interrupted(Duration::from_secs(10), || !is_alive(p)) {
                    anyhow::bail!("{name} (pid {p}) did not end after SIGKILL");
                }
            }
            println!("{name:<10} stopped (pid {p})");
        } else {
            println!("{name:<10} was not running");
        }
        *pid = None;
    }
    if dir.is_dir() {
        state.save(dir)?;
    }
    Ok(())
}
