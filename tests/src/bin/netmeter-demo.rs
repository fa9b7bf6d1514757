//! `netmeter-demo`: netmeter metering a small cluster end to end on this machine, the README's
//! first command (through `scripts/demo`).
//!
//! It starts the local stack (broker + ClickHouse), builds the mini-cluster (3 nodes in 2 zones
//! in network namespaces, served through a Kubernetes API server), starts one collector per
//! node, two attributors and the sink, drives the traffic matrix, waits until ClickHouse holds
//! exactly what the kernel counted, and prints the answers with the SQL behind them. Then it
//! tears everything down, or with `--keep` leaves it running in the background (`--stop` ends
//! it). Ctrl-C at any point cleans up too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use netmeter_report::render::{self, TerminalStyle, human_bytes};
use netmeter_report::{Connection, Options, TimeRange, html};
use netmeter_stack::local_stack;
use netmeter_tests::kernel::KernelCounters;
use netmeter_tests::minicluster::{MiniCluster, NODES};
use netmeter_tests::pipeline::{self, Pipeline, Settings};
use netmeter_tests::process::{Lifetime, ManagedProcess, is_alive, signal};
use netmeter_tests::records::now_ms;
use netmeter_tests::traffic::{self, Event, Sent, Traffic};
use netmeter_tests::{interrupt, ledger};

#[derive(Parser)]
#[command(
    name = "netmeter-demo",
    about = "Meter a simulated two-zone cluster end to end and print the answers"
)]
struct Cli {
    /// Leave the cluster, the services and the stack running after the report (in the
    /// background); `--stop` ends them.
    #[arg(long)]
    keep: bool,
    /// Stop a demo left running with --keep, and the local stack.
    #[arg(long, conflicts_with = "keep")]
    stop: bool,
    /// Rounds of the traffic matrix.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Data, logs and state of the local stack and the demo.
    #[arg(long, env = "NETMETER_STACK_DIR", default_value = ".stack")]
    dir: PathBuf,
    #[command(flatten)]
    ports: local_stack::Ports,
    /// Internal: run as the background process that holds a --keep demo.
    #[arg(long, hide = true)]
    hold: bool,
}

/// The `--cluster` of the demo's records.
const CLUSTER: &str = "demo";
/// The last line the background process of `--keep` prints once the report is out.
const READY_MARKER: &str = "netmeter-demo: running in the background";
/// How long ClickHouse may take to hold the last bytes after the traffic ended.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the demo looks at ClickHouse while the traffic runs.
const POLL: Duration = Duration::from_millis(250);
/// Pacing: the rounds of traffic are spread over time, as a cluster's traffic is.
const PAUSE_BETWEEN_ROUNDS: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    interrupt::install();
    let result = if cli.stop {
        stop(&cli.dir)
    } else if cli.keep && !cli.hold {
        run_in_background(&cli)
    } else {
        run(&cli)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if interrupt::interrupted() => {
            eprintln!("netmeter-demo: interrupted ({err:#}); everything it started is stopped");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("netmeter-demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo_dir(dir: &Path) -> PathBuf {
    dir.join("demo")
}

fn pid_file(dir: &Path) -> PathBuf {
    demo_dir(dir).join("holder.pid")
}

/// Empties the demo's directory (logs, state, kubeconfig of the previous run).
fn fresh_demo_dir(dir: &Path) -> anyhow::Result<()> {
    let demo = demo_dir(dir);
    if demo.exists() {
        std::fs::remove_dir_all(&demo)
            .with_context(|| format!("cannot empty {}", demo.display()))?;
    }
    std::fs::create_dir_all(&demo).with_context(|| format!("cannot create {}", demo.display()))
}

/// The pid of a `--keep` demo still running, if any.
fn running_holder(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("netmeter-demo")
        .then_some(pid)
}

/// Ends a demo left running with `--keep` (it tears down its cluster and services itself).
fn stop_holder(dir: &Path) -> anyhow::Result<()> {
    if let Some(pid) = running_holder(dir) {
        println!("stopping the demo left running (pid {pid})");
        signal(pid, libc::SIGTERM);
        // Until the process is gone, not its pid file: it removes that before it tears down.
        let gone = netmeter_tests::wait_until(Duration::from_secs(60), || !is_alive(pid));
        if !gone {
            bail!(
                "the demo (pid {pid}) did not stop within 60 s; its log: {}",
                demo_dir(dir).join("demo.log").display()
            );
        }
    }
    let _ = std::fs::remove_file(pid_file(dir));
    Ok(())
}

fn stop(dir: &Path) -> anyhow::Result<()> {
    stop_holder(dir)?;
    netmeter_tests::netns::sweep_orphans();
    local_stack::stop(dir)
}

/// `--keep`: runs the demo in a process of its own that outlives this one, shows its output
/// until the report is out, and returns.
fn run_in_background(cli: &Cli) -> anyhow::Result<()> {
    stop_holder(&cli.dir)?;
    fresh_demo_dir(&cli.dir)?;
    let log = demo_dir(&cli.dir).join("demo.log");
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--keep", "--hold", "--rounds", &cli.rounds.to_string()])
        .args(cli.ports.args())
        .arg("--dir")
        .arg(&cli.dir);
    let mut holder = ManagedProcess::spawn("netmeter-demo", command, &log, Lifetime::Detached)?;
    let mut shown = 0;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let upto = text.find(READY_MARKER);
        let new = &text[shown..upto.unwrap_or(text.len())];
        // Whole lines only, so a line being written is not cut.
        let end = if upto.is_some() {
            new.len()
        } else {
            new.rfind('\n').map_or(0, |i| i + 1)
        };
        print!("{}", &new[..end]);
        shown += end;
        if upto.is_some() {
            std::mem::forget(holder); // it runs on
            return Ok(());
        }
        if let Some(status) = holder.exit_status() {
            print!("{}", &text[shown..]);
            bail!("the demo exited with {status}; log: {}", log.display());
        }
        if interrupt::interrupted() {
            holder.terminate(Duration::from_secs(60));
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints progress lines with the time since the start.
struct Progress {
    started: Instant,
}

impl Progress {
    fn step(&self, step: u32, text: &str) {
        println!(
            "[{:>5.1}s] {step}/6 {text}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn detail(&self, text: &str) {
        println!(
            "[{:>5.1}s]       {text}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Stops the local stack when dropped, if this run started it.
struct StackGuard<'a> {
    dir: &'a Path,
    stop: bool,
}

impl Drop for StackGuard<'_> {
    fn drop(&mut self) {
        if self.stop
            && let Err(err) = local_stack::stop(self.dir)
        {
            eprintln!("netmeter-demo: cannot stop the local stack: {err:#}");
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and reads conntrack: run it as root");
    }
    let progress = Progress {
        started: Instant::now(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // In the background process of --keep, the one that started it did this (its log is there).
    if !cli.hold {
        stop_holder(&cli.dir)?;
        fresh_demo_dir(&cli.dir)?;
    }
    let dir = demo_dir(&cli.dir);
    let since_ms = now_ms();

    progress.step(
        1,
        "local stack: Kafka-protocol broker (tansu) and ClickHouse 26.7",
    );
    let already_running = local_stack::is_running(&cli.dir);
    let endpoints = runtime.block_on(local_stack::start(&cli.dir, cli.ports))?;
    let _stack = StackGuard {
        dir: &cli.dir,
        stop: !already_running && !cli.keep,
    };
    interrupt::check()?;

    progress.step(
        2,
        "mini-cluster: 3 nodes in 2 zones of us-east-1, in network namespaces",
    );
    let cluster = MiniCluster::create()?;
    progress.detail(&format!(
        "namespaces {}-*: router, internet host 5.9.1.10, S3 host 52.216.10.20, nodes {}, {} pods",
        cluster.prefix(),
        NODES.map(|n| format!("{} ({})", n.name, n.zone)).join(", "),
        cluster.running_pods().len() + NODES.len()
    ));
    progress.detail(&format!(
        "Kubernetes API (nodes, pods, ReplicaSets, a Job, a StatefulSet, a hostNetwork DaemonSet, Service shop/cart) at {}",
        cluster.api().url()
    ));
    interrupt::check()?;

    progress.step(3, "netmeter: 3 collectors, 2 attributors, the sink");
    let kernel = KernelCounters::start(&cluster.node_namespaces(), &dir)?;
    let settings = Settings {
        cluster: CLUSTER.into(),
        ..Settings::default()
    };
    let pipeline = Pipeline::start(&endpoints, &cluster, &dir, settings, &mut |what| {
        progress.detail(what)
    })?;
    interrupt::check()?;

    progress.step(4, &format!("traffic: {} rounds of the matrix", cli.rounds));
    let mut traffic = Traffic::start(&cluster)?;
    let client = pipeline.launcher.clickhouse();
    let latencies = drive(
        &runtime,
        &cluster,
        &mut traffic,
        &client,
        cli.rounds,
        since_ms,
        &progress,
    )?;
    interrupt::check()?;

    progress.step(5, "waiting until ClickHouse holds what the kernel counted");
    kernel.wait_tcp_ended()?; // the last connections end
    let verified = runtime.block_on(ledger::verify(
        &client,
        pipeline::DATABASE,
        CLUSTER,
        since_ms,
        (&cluster, &traffic, &kernel),
        SETTLE_TIMEOUT,
    ))?;
    let (expected, counted) = (&verified.expected, &verified.counted);
    let overhead = ledger::overhead(&traffic, counted);
    let application: u64 = overhead.iter().map(|o| o.application).sum();
    let wire: u64 = overhead.iter().map(|o| o.wire).sum();
    progress.detail(&format!(
        "exact to the byte: {} connections on 3 nodes, {} lines of (node, workload pair, direction, class) equal to the kernel's counters, {} in total",
        traffic.log.len(),
        expected.len(),
        human_bytes(ledger::total_bytes(expected) as f64),
    ));
    progress.detail(&format!(
        "application bytes {} -> {} on the wire for the same connections: {:.1}% IP/TCP/UDP header overhead",
        human_bytes(application as f64),
        human_bytes(wire as f64),
        (wire as f64 / application as f64 - 1.0) * 100.0
    ));
    progress.detail(&latency_line(&latencies, &pipeline));

    progress.step(6, "the answers: netmeter report");
    let clickhouse_url = pipeline.launcher.endpoints().clickhouse_url.clone();
    let connection = Connection::new(&clickhouse_url, "default", "", pipeline::DATABASE);
    let mut options = Options::new(TimeRange::new(
        UNIX_EPOCH + Duration::from_millis(since_ms),
        SystemTime::now(),
    )?);
    options.filters.cluster = Some(CLUSTER.into());
    let report = runtime.block_on(netmeter_report::build(&connection, &options))?;
    println!();
    print!("{}", render::terminal(&report, &TerminalStyle::default()));
    let page = dir.join("report.html");
    std::fs::write(&page, html::render(&report))?;
    println!(
        "\nThe same report as one self-contained page (opens offline): {}",
        page.display()
    );
    println!(
        "Again, or over another range: netmeter report --clickhouse-url {clickhouse_url} --cluster {CLUSTER} --since 15m [--html FILE] [--format json|csv]\n"
    );

    if cli.keep {
        hold(cli, &pipeline, &cluster)?;
    } else {
        progress.detail("tearing down (run with --keep to leave it running)");
    }
    drop(traffic);
    pipeline.stop();
    cluster.delete()?;
    Ok(())
}

/// Drives the traffic rounds on a thread of its own while this one watches ClickHouse for each
/// connection's bytes: the latency from the end of a send to its bytes being queryable.
fn drive(
    runtime: &tokio::runtime::Runtime,
    cluster: &MiniCluster,
    traffic: &mut Traffic,
    client: &clickhouse::Client,
    rounds: u32,
    since_ms: u64,
    progress: &Progress,
) -> anyhow::Result<Vec<Duration>> {
    let (sent_tx, sent_rx) = mpsc::channel::<Sent>();
    let matrix = traffic::matrix();
    std::thread::scope(|scope| {
        let driver = scope.spawn(|| -> anyhow::Result<()> {
            for round in 1..=rounds {
                for flow in &matrix {
                    interrupt::check()?;
                    if round == 1 {
                        progress.detail(flow.label);
                    }
                    traffic.run(cluster, std::slice::from_ref(flow), |event| {
                        if let Event::Sent(sent) = event {
                            let _ = sent_tx.send(sent.clone());
                        }
                    })?;
                }
                progress.detail(&format!("round {round} of {rounds} sent"));
                if round < rounds {
                    std::thread::sleep(PAUSE_BETWEEN_ROUNDS);
                }
            }
            drop(sent_tx);
            Ok(())
        });
        let mut pending: Vec<Sent> = Vec::new();
        let mut latencies = Vec::new();
        let mut traffic_done = false;
        let deadline_after_traffic = SETTLE_TIMEOUT;
        let mut done_at = None;
        loop {
            loop {
                match sent_rx.try_recv() {
                    Ok(sent) => pending.push(sent),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        traffic_done = true;
                        break;
                    }
                }
            }
            if traffic_done && done_at.is_none() {
                done_at = Some(Instant::now());
            }
            if !pending.is_empty() {
                let sent_bytes = runtime.block_on(sent_by_client(client, since_ms))?;
                let now = now_ms();
                pending.retain(|s| {
                    let stored = sent_bytes.get(&s.local).copied().unwrap_or(0);
                    if stored >= s.sent {
                        latencies.push(Duration::from_millis(now.saturating_sub(s.finished_ms)));
                        false
                    } else {
                        true
                    }
                });
            }
            if traffic_done && pending.is_empty() {
                break;
            }
            if done_at.is_some_and(|t| t.elapsed() > deadline_after_traffic)
                || interrupt::interrupted()
            {
                break;
            }
            std::thread::sleep(POLL);
        }
        match driver.join() {
            Ok(result) => result?,
            Err(_) => bail!("the traffic driver panicked"),
        }
        if !pending.is_empty() {
            bail!(
                "{} connections never showed up in ClickHouse: {pending:#?}",
                pending.len()
            );
        }
        Ok(latencies)
    })
}

/// Bytes each client address sent, as ClickHouse has them now.
async fn sent_by_client(
    client: &clickhouse::Client,
    since_ms: u64,
) -> anyhow::Result<HashMap<SocketAddr, u64>> {
    let sql = format!(
        "SELECT toString(local_ip), local_port, sum(bytes) FROM {}.flows FINAL \
         WHERE cluster = '{CLUSTER}' AND interval_start_unix_ms >= {since_ms} AND direction = 'out' \
         GROUP BY ALL",
        pipeline::DATABASE
    );
    let text = netmeter_tests::clickhouse::query_text_checked(client, &sql, "TabSeparated").await?;
    let mut sums = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(ip), Some(port), Some(bytes)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!("unexpected row {line:?}");
        };
        let ip: IpAddr = ip.parse::<IpAddr>().context("local_ip")?.to_canonical();
        sums.insert(SocketAddr::new(ip, port.parse()?), bytes.parse()?);
    }
    Ok(sums)
}

fn latency_line(latencies: &[Duration], pipeline: &Pipeline) -> String {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let settings = pipeline.launcher.settings();
    format!(
        "latency from bytes sent to queryable in ClickHouse, over {} connections: p50 {:.1} s, p99 {:.1} s, max {:.1} s (collector interval {}, sink batch age {})",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        humantime::format_duration(settings.interval),
        humantime::format_duration(settings.batch_age)
    )
}

/// `--keep`: say how to look around, then wait for `--stop` (SIGTERM) or Ctrl-C.
fn hold(cli: &Cli, pipeline: &Pipeline, cluster: &MiniCluster) -> anyhow::Result<()> {
    let endpoints = pipeline.launcher.endpoints();
    println!("Left running. Query ClickHouse:");
    println!(
        "  curl '{}/?query=SELECT+class,sum(bytes)+FROM+netmeter.flows+FINAL+GROUP+BY+class'",
        endpoints.clickhouse_url
    );
    println!(
        "  or open {}/play in a browser on this machine",
        endpoints.clickhouse_url
    );
    println!("Metrics (Prometheus text):");
    for (node, collector) in &pipeline.collectors {
        println!(
            "  collector on {node}: http://127.0.0.1:{}/metrics",
            collector.http_port
        );
    }
    for (i, attributor) in pipeline.attributors.iter().enumerate() {
        println!(
            "  attributor {i}:      http://127.0.0.1:{}/metrics",
            attributor.http_port
        );
    }
    println!(
        "  sink:              http://127.0.0.1:{}/metrics",
        pipeline.sink.http_port
    );
    println!("Logs: {}", pipeline.launcher.log_dir().display());
    println!(
        "Kubernetes API: {} (kubeconfig {})",
        cluster.api().url(),
        demo_dir(&cli.dir).join("kubeconfig").display()
    );
    println!(
        "Namespaces: ip netns list | grep {}; e.g. ip netns exec {} conntrack -L",
        cluster.prefix(),
        cluster.node_ns("node-a1")
    );
    println!("Stop: ./scripts/demo --stop");
    std::fs::write(pid_file(&cli.dir), std::process::id().to_string())?;
    println!("{READY_MARKER}");
    while !interrupt::interrupted() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(pid_file(&cli.dir));
    Ok(())
}
