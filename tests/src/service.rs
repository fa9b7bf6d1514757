//! Runs a netmeter service binary as a child process and checks its HTTP endpoint and
//! lifecycle the way Kubernetes probes and stops it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::process::{Lifetime, ManagedProcess};
use crate::stack::Endpoints;
use crate::{Stack, free_port};

/// A service binary started by a test (or the demo), with its HTTP endpoint on a free port.
pub struct RunningService {
    pub process: ManagedProcess,
    pub http_port: u16,
    /// Where its log goes.
    pub log: std::path::PathBuf,
    _log_dir: Option<tempfile::TempDir>,
}

impl RunningService {
    /// Starts `bin` with `args`, pointed at `stack`'s broker, logging in pretty text.
    pub fn start(bin: &Path, stack: &Stack, args: &[&str]) -> anyhow::Result<RunningService> {
        Self::start_with_env(bin, stack, args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(
        bin: &Path,
        stack: &Stack,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningService> {
        Self::launch(bin, &stack.endpoints(), args, env, None)
    }

    /// Starts `bin` against `endpoints` (broker and ClickHouse), logging in pretty text to
    /// `log`, or to a temporary file removed with the service. The process is killed when the
    /// calling thread ends: start services from a thread that outlives them.
    pub fn launch(
        bin: &Path,
        endpoints: &Endpoints,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> anyhow::Result<RunningService> {
        let http_port = free_port();
        let (log, log_dir) = match log {
            Some(path) => (path.to_path_buf(), None),
            None => {
                let dir = tempfile::tempdir()?;
                (dir.path().join("service.log"), Some(dir))
            }
        };
        let mut command = Command::new(bin);
        command
            .args(args)
            .env("NETMETER_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("NETMETER_KAFKA_BROKERS", &endpoints.kafka_bootstrap)
            .env("NETMETER_CLICKHOUSE_URL", &endpoints.clickhouse_url)
            .env("NETMETER_LOG_FORMAT", "pretty")
            .envs(env.iter().copied());
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let process = ManagedProcess::spawn(&name, command, &log, Lifetime::Owned)?;
        Ok(RunningService {
            process,
            http_port,
            log,
            _log_dir: log_dir,
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.http_port, path)
    }

    /// The value of one sample in `/metrics`, e.g. `metric("x_total{reason=\"a\"}")`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").ok()?;
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// The sum of every sample of metric `name`, whatever its labels; `None` if unreachable.
    pub fn metric_total(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").ok()?;
        Some(
            body.lines()
                .filter_map(|line| {
                    let rest = line.strip_prefix(name)?;
                    let value = match rest.strip_prefix('{') {
                        Some(labelled) => labelled.split_once("} ")?.1,
                        None => rest.strip_prefix(' ')?,
                    };
                    value.parse::<f64>().ok()
                })
                .sum(),
        )
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let port = self.http_port;
        self.process.wait_ready(timeout, || {
            matches!(http_get(port, "/readyz"), Ok((200, _)))
        })
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn sigterm(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = self.process.terminate(Duration::from_secs(10));
        (status, started.elapsed())
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1: status code and body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_string()))
}

/// The lifecycle every service must have: healthy, ready against the stack, metrics exposed
/// (every one the README lists for `service`, and no other: [`crate::documented_metrics`]),
/// and a clean exit (code 0) within 5 s of SIGTERM.
pub fn check_lifecycle(
    bin: &Path,
    service: &str,
    stack: &Stack,
    args: &[&str],
) -> anyhow::Result<()> {
    let mut running = RunningService::start(bin, stack, args)?;
    running.wait_ready(Duration::from_secs(30))?;
    let (status, body) = running.get("/healthz")?;
    anyhow::ensure!(
        status == 200 && body == "ok\n",
        "/healthz answered {status} {body:?}"
    );
    let (status, metrics) = running.get("/metrics")?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    let build_info = format!(
        "netmeter_build_info{{service=\"{service}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    anyhow::ensure!(
        metrics.contains(&build_info),
        "/metrics lacks `{build_info}`:\n{metrics}"
    );
    crate::documented_metrics::check(service, &metrics)?;
    let (exit, took) = running.sigterm();
    anyhow::ensure!(
        exit.success(),
        "exit after SIGTERM was {exit}; log:\n{}",
        running.process.log_tail()
    );
    anyhow::ensure!(
        took < Duration::from_secs(5),
        "took {took:?} to exit after SIGTERM"
    );
    Ok(())
}

/// Runs `bin` with a bad configuration: it must exit 2 with one line naming `flag`.
pub fn check_config_error(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    flag: &str,
) -> anyhow::Result<()> {
    let output = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.code() == Some(2),
        "exit code {:?}, stderr: {stderr}",
        output.status.code()
    );
    anyhow::ensure!(stderr.lines().count() == 1, "not one line: {stderr:?}");
    anyhow::ensure!(
        stderr.starts_with("error: ") && stderr.contains(flag),
        "does not name {flag}: {stderr:?}"
    );
    anyhow::ensure!(!stderr.contains("panicked"), "panicked: {stderr}");
    Ok(())
}
