//! The local stack, one command: a real Kafka-protocol broker (tansu) and a real ClickHouse
//! (26.7, libchdb) on 127.0.0.1, installed on first use, data under `--dir` (`.stack/`).
//!
//!   netmeter-stack install | start | status | stop
//!
//! `start` is idempotent: components already running are left alone. `stop` ends only the
//! processes this command started, by the PIDs it recorded.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use netmeter_tests::process::{Lifetime, ManagedProcess, signal};
use netmeter_tests::stack::{
    BROKER_START_TIMEOUT, CLICKHOUSE_START_TIMEOUT, PARTITIONS, default_topics,
};
use netmeter_tests::{broker, clickhouse, install, wait_until};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "netmeter-stack",
    about = "Run the local Kafka-protocol broker and ClickHouse"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct Where {
    /// Data, logs and state of the stack.
    #[arg(long, env = "NETMETER_STACK_DIR", default_value = ".stack")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install tansu and libchdb into the cache if missing.
    Install,
    /// Start whatever is not running (installs first if needed).
    Start {
        #[command(flatten)]
        at: Where,
        #[arg(long, env = "NETMETER_KAFKA_PORT", default_value_t = 9092)]
        kafka_port: u16,
        #[arg(long, env = "NETMETER_CLICKHOUSE_HTTP_PORT", default_value_t = 8123)]
        clickhouse_http_port: u16,
        #[arg(long, env = "NETMETER_CLICKHOUSE_TCP_PORT", default_value_t = 9000)]
        clickhouse_tcp_port: u16,
    },
    /// Show what runs; exit code 0 only if everything does.
    Status {
        #[command(flatten)]
        at: Where,
    },
    /// Stop both components (their data stays).
    Stop {
        #[command(flatten)]
        at: Where,
    },
    /// Internal: host ClickHouse in this process (what `start` runs).
    #[command(hide = true)]
    ClickhouseServer {
        #[arg(long)]
        lib: PathBuf,
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        http_port: u16,
        #[arg(long)]
        tcp_port: u16,
    },
}

/// What `start` recorded, so `status` and `stop` act on exactly those processes.
#[derive(Serialize, Deserialize, Default)]
struct State {
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

const BROKER_PROGRAM: &str = "tansu";
const CLICKHOUSE_PROGRAM: &str = "clickhouse-server";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Install => install::ensure_tansu()
            .and(install::ensure_chdb())
            .map(|_| ExitCode::SUCCESS),
        Cmd::Start {
            at,
            kafka_port,
            clickhouse_http_port,
            clickhouse_tcp_port,
        } => start(
            &at.dir,
            kafka_port,
            clickhouse_http_port,
            clickhouse_tcp_port,
        ),
        Cmd::Status { at } => Ok(status(&at.dir)),
        Cmd::Stop { at } => stop(&at.dir).map(|_| ExitCode::SUCCESS),
        Cmd::ClickhouseServer {
            lib,
            path,
            http_port,
            tcp_port,
        } => clickhouse::serve(&lib, &path, http_port, tcp_port).map(|_| ExitCode::FAILURE),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}

fn start(dir: &Path, kafka_port: u16, http_port: u16, tcp_port: u16) -> anyhow::Result<ExitCode> {
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
        process.wait_ready(BROKER_START_TIMEOUT, || broker::is_ready(kafka_port))?;
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
        process.wait_ready(CLICKHOUSE_START_TIMEOUT, || clickhouse::is_ready(http_port))?;
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bootstrap = format!("127.0.0.1:{}", state.kafka_port);
    runtime
        .block_on(broker::create_topics(
            &bootstrap,
            &default_topics(),
            PARTITIONS,
        ))
        .context("creating the netmeter topics")?;
    println!(
        "topics     {} ({PARTITIONS} partitions each)",
        default_topics().join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path) -> ExitCode {
    let state = State::load(dir);
    let broker_up = is_ours(state.broker_pid, BROKER_PROGRAM) && broker::is_ready(state.kafka_port);
    let clickhouse_up = is_ours(state.clickhouse_pid, CLICKHOUSE_PROGRAM)
        && clickhouse::is_ready(state.clickhouse_http_port);
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

fn stop(dir: &Path) -> anyhow::Result<()> {
    let mut state = State::load(dir);
    for (name, pid, program) in [
        ("broker", &mut state.broker_pid, BROKER_PROGRAM),
        ("clickhouse", &mut state.clickhouse_pid, CLICKHOUSE_PROGRAM),
    ] {
        if is_ours(*pid, program) {
            let p = pid.unwrap_or_default();
            signal(p, libc::SIGTERM);
            if !wait_until(Duration::from_secs(10), || !is_ours(Some(p), program)) {
                signal(p, libc::SIGKILL);
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
