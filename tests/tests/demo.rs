//! The README's first command, as a user runs it (`netmeter-demo`, which `scripts/demo` builds
//! and starts), on a stack of its own (free ports, a temporary directory):
//! - `--keep` runs the whole demo, prints the answers, and leaves the cluster, the services and
//!   the stack running in the background; `--stop` ends all of it and leaves nothing behind;
//! - Ctrl-C in the middle of a run also cleans up everything the run started.
//!
//! Needs root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netmeter_stack::local_stack;
use netmeter_tests::process::{is_alive, signal};
use netmeter_tests::{free_port, netns, workspace_bin};

/// Whether any network namespace's name starts with `prefix`.
fn namespaces_named(prefix: &str) -> bool {
    netns::names().iter().any(|n| n.starts_with(prefix))
}

/// `netmeter-demo` on free ports with its data in `dir`.
fn demo(dir: &Path) -> Command {
    let mut command = Command::new(workspace_bin("netmeter-demo").unwrap());
    command
        .args(["--rounds", "1"])
        .arg("--dir")
        .arg(dir)
        .args(["--kafka-port", &free_port().to_string()])
        .args(["--clickhouse-http-port", &free_port().to_string()])
        .args(["--clickhouse-tcp-port", &free_port().to_string()]);
    command
}

/// The namespaces of the mini-cluster the demo printed it made (`namespaces nmc-…-*`).
fn cluster_prefix(output: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.contains("namespaces nmc-"))
        .unwrap_or_else(|| panic!("no namespaces line in {output}"));
    let at = line.find("nmc-").unwrap();
    line[at..].split("-*").next().unwrap().to_string()
}

/// Runs `netmeter-demo --stop` on its directory when dropped, so that a failed assertion does
/// not leave a kept demo running (after a successful `--stop` it finds nothing to stop).
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = demo(self.0).arg("--stop").output();
    }
}

#[test]
fn e2e_demo_keep_leaves_the_metered_cluster_running_and_stop_ends_everything() {
    let dir = tempfile::tempdir().unwrap();
    let _stop = StopOnDrop(dir.path());
    let started = Instant::now();
    let output = demo(dir.path()).arg("--keep").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    println!(
        "--keep returned after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for expected in [
        "exact to the byte",
        "latency from bytes sent to queryable",
        "netmeter report: ",
        "1. Overview",
        "2. Cross-zone and cross-region traffic",
        "3. Cloud services and the internet",
        "4. Where internet egress goes",
        "DE ",
        "5. Who opens connections",
        "6. Load balance across replicas",
        "7. Node throughput",
        "8. Cost by namespace and workload",
        "FROM netmeter.flows FINAL",
        "only receives",
        "report.html",
        "Left running",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in the output");
    }
    let prefix = cluster_prefix(&stdout);
    assert!(namespaces_named(&prefix), "the cluster was not kept");
    assert!(
        local_stack::is_running(dir.path()),
        "the stack was not kept"
    );
    // The services answer where the output says.
    let metrics_port: u16 = stdout
        .lines()
        .find(|l| l.contains("sink:") && l.contains("/metrics"))
        .and_then(|l| l.split("127.0.0.1:").nth(1))
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no sink metrics line in {stdout}"));
    let (status, body) = netmeter_tests::service::http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("netmeter_sink_rows_inserted_total"), "{body}");

    let stop = demo(dir.path()).arg("--stop").output().unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!namespaces_named(&prefix), "namespaces left behind");
    assert!(!local_stack::is_running(dir.path()), "the stack still runs");
    let (status, _) =
        netmeter_tests::service::http_get(metrics_port, "/metrics").unwrap_or((0, String::new()));
    assert_eq!(status, 0, "the sink still answers");
}

#[test]
fn e2e_demo_ctrl_c_in_the_middle_cleans_up_everything_the_run_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = demo(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut output = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Interrupt once the traffic runs: the stack, the cluster and the services are all up.
    let deadline = Instant::now() + Duration::from_secs(300);
    for line in lines.by_ref() {
        let line = line.unwrap();
        output.push_str(&line);
        output.push('\n');
        if line.contains("4/6 traffic") {
            break;
        }
        assert!(Instant::now() < deadline, "{output}");
    }
    let prefix = cluster_prefix(&output);
    assert!(namespaces_named(&prefix));
    let children = child_pids(pid);
    assert!(
        children.len() >= 6,
        "collectors, attributors, sink: {children:?}"
    );
    signal(pid, libc::SIGINT);
    for line in lines {
        output.push_str(&line.unwrap());
        output.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{output}");
    assert!(!namespaces_named(&prefix), "namespaces left behind");
    assert!(!local_stack::is_running(dir.path()), "the stack still runs");
    for pid in children {
        assert!(
            !is_alive(pid),
            "process {pid} ({}) still runs",
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        );
    }
}

/// The pids of the processes `parent` started.
fn child_pids(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`; comm may hold spaces, so split after ')'.
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}
