//! The local stack, one command: a real Kafka-protocol broker (tansu) and a real ClickHouse
//! (26.7, libchdb) on 127.0.0.1, installed on first use, data under `--dir` (`.stack/`).
//! `install` also puts helm and kubectl into the cache, for the chart's tests.
//!
//!   netmeter-stack install | start | status | stop
//!
//! `start` is idempotent: components already running are left alone. `stop` ends only the
//! processes this command started, by the PIDs it recorded.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netmeter_stack::{clickhouse, install, local_stack};

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
    /// Install tansu, libchdb, helm and kubectl into the cache if missing.
    Install,
    /// Start whatever is not running (installs first if needed).
    Start {
        #[command(flatten)]
        at: Where,
        #[command(flatten)]
        ports: local_stack::Ports,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Install => install::ensure_tansu()
            .and(install::ensure_chdb())
            .and(install::ensure_kube_tools())
            .map(|_| ExitCode::SUCCESS),
        Cmd::Start { at, ports } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(local_stack::start(&at.dir, ports)))
            .map(|_| ExitCode::SUCCESS),
        Cmd::Status { at } => Ok(local_stack::status(&at.dir)),
        Cmd::Stop { at } => local_stack::stop(&at.dir).map(|_| ExitCode::SUCCESS),
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
