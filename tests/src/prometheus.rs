//! The real Prometheus for tests: Debian's `prometheus` package (2.42; `scripts/install-deps --tests`
//! installs it), run as a child process that scrapes the given `/metrics` endpoints every second
//! into a temporary directory and answers PromQL over its HTTP API; and `promtool check
//! metrics`, Prometheus's own linter for a `/metrics` body.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::free_port;
use crate::process::{Lifetime, ManagedProcess};
use crate::service::http_get;

pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";
/// How to get both, for "not installed" errors.
pub const INSTALL_HINT: &str = "install Debian's `prometheus` package: `apt-get install prometheus` (./scripts/install-deps --tests)";

/// How often every target is scraped.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One `scrape_configs` entry: `/metrics` of each port on 127.0.0.1, under job `name`.
#[derive(Clone, Debug)]
pub struct ScrapeJob {
    pub name: String,
    pub ports: Vec<u16>,
}

impl ScrapeJob {
    pub fn new(name: &str, ports: impl IntoIterator<Item = u16>) -> ScrapeJob {
        ScrapeJob {
            name: name.into(),
            ports: ports.into_iter().collect(),
        }
    }
}

/// The labels of one series of a query result.
pub type Labels = BTreeMap<String, String>;

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    pub process: ManagedProcess,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second, and waits until it is ready.
    pub fn start(jobs: &[ScrapeJob]) -> anyhow::Result<Prometheus> {
        Self::start_with_rules(jobs, &[])
    }

    /// [`start`](Self::start) with rule files (alerting and recording rules), evaluated every
    /// second.
    pub fn start_with_rules(
        jobs: &[ScrapeJob],
        rule_files: &[&Path],
    ) -> anyhow::Result<Prometheus> {
        let bin = require(PROMETHEUS_BIN)?;
        let dir = tempfile::Builder::new()
            .prefix("netmeter-prometheus-")
            .tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(jobs, rule_files))?;
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let log = dir.path().join("prometheus.log");
        let mut process = ManagedProcess::spawn("prometheus", command, &log, Lifetime::Owned)?;
        process.wait_ready(READY_TIMEOUT, || {
            matches!(http_get(port, "/-/ready"), Ok((200, _)))
        })?;
        Ok(Prometheus { process, port, dir })
    }

    /// Where its configuration, data and log are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET path` of the HTTP API, e.g. `/api/v1/rules`: the `data` of a `success` answer.
    pub fn api(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) =
            http_get(self.port, path).with_context(|| format!("Prometheus GET {path}"))?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("Prometheus GET {path} answered {status}: {body}"))?;
        if answer["status"] != "success" {
            bail!(
                "Prometheus GET {path} answered {status}: {} {}",
                answer["errorType"].as_str().unwrap_or_default(),
                answer["error"].as_str().unwrap_or(&body)
            );
        }
        Ok(answer["data"].clone())
    }

    /// Evaluates `promql` now; it must give an instant vector: its series' labels and values.
    pub fn query(&self, promql: &str) -> anyhow::Result<Vec<(Labels, f64)>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .with_context(|| format!("query {promql}"))?;
        if data["resultType"] != "vector" {
            bail!(
                "query {promql}: a {} instead of an instant vector",
                data["resultType"]
            );
        }
        let series = data["result"].as_array().cloned().unwrap_or_default();
        series
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .with_context(|| format!("query {promql}: no value in {s}"))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// The health of every target: (job, instance, `up`/`down`/`unknown`, last error).
    pub fn targets(&self) -> anyhow::Result<Vec<(String, String, String, String)>> {
        let data = self.api("/api/v1/targets?state=active")?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    text(&t["labels"]["job"]),
                    text(&t["labels"]["instance"]),
                    text(&t["health"]),
                    text(&t["lastError"]),
                )
            })
            .collect())
    }

    /// Waits until every target has been scraped successfully.
    pub fn wait_targets_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut last = Vec::new();
        let up = crate::wait_until(timeout, || {
            last = self.targets().unwrap_or_default();
            !last.is_empty() && last.iter().all(|(_, _, health, _)| health == "up")
        });
        if !up {
            bail!("Prometheus targets not all up after {timeout:?}: {last:?}");
        }
        Ok(())
    }

    /// Stops it (SIGTERM, then SIGKILL).
    pub fn stop(mut self) {
        self.process.terminate(Duration::from_secs(5));
    }
}

/// The configuration: `jobs` scraped every second, `rule_files` evaluated every second.
pub fn config_yaml(jobs: &[ScrapeJob], rule_files: &[&Path]) -> String {
    let seconds = SCRAPE_INTERVAL.as_secs();
    let mut yaml = format!(
        "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: {seconds}s\n  evaluation_interval: {seconds}s\n"
    );
    if !rule_files.is_empty() {
        yaml.push_str("rule_files:\n");
        for file in rule_files {
            yaml.push_str(&format!("  - {:?}\n", file.display().to_string()));
        }
    }
    yaml.push_str("scrape_configs:\n");
    for job in jobs {
        let targets: Vec<String> = job
            .ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        yaml.push_str(&format!(
            "  - job_name: {:?}\n    static_configs:\n      - targets: [{}]\n",
            job.name,
            targets.join(", ")
        ));
    }
    yaml
}

/// What `promtool check metrics` finds wrong in a `/metrics` body (naming, missing help, ...),
/// one line per problem; empty when it is clean.
pub fn check_metrics(body: &str) -> anyhow::Result<Vec<String>> {
    let bin = require(PROMTOOL_BIN)?;
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = body.to_string();
    // Written from a thread: a large body would fill the pipe while promtool's output does too.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to promtool panicked"))?
        .context("writing the metrics to promtool")?;
    let problems: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&output.stdout).lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    match output.status.code() {
        Some(0) => Ok(Vec::new()),
        // 3: lint problems; 1: the body does not parse.
        Some(1 | 3) if !problems.is_empty() => Ok(problems),
        _ => bail!(
            "promtool check metrics failed ({}): {problems:?}",
            output.status
        ),
    }
}

fn require(path: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{} is not installed: {INSTALL_HINT}", path.display());
    }
    Ok(path)
}

/// `text` as a URL query value: everything but RFC 3986's unreserved characters escaped.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_encoding() {
        let yaml = config_yaml(
            &[ScrapeJob::new("attributor", [9001, 9002])],
            &[Path::new("/tmp/alerts.yaml")],
        );
        assert_eq!(
            yaml,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"/tmp/alerts.yaml\"\n\
             scrape_configs:\n  - job_name: \"attributor\"\n    static_configs:\n      \
             - targets: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n"
        );
        assert_eq!(
            percent_encode("sum by (a) (x{b=\"c d\"})"),
            "sum%20by%20%28a%29%20%28x%7Bb%3D%22c%20d%22%7D%29"
        );
    }
}
