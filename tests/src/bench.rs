//! What every on-demand benchmark needs: CPU time of this thread, this process, another
//! process and the whole machine; medians and rates; settings from the environment; and the
//! ClickHouse launcher next to a release-built bench.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    fn sysconf(name: i32) -> i64;
}

fn clock_seconds(clock: i32) -> f64 {
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a properly laid out timespec (x86_64/aarch64
    // Linux: two 64-bit fields).
    let rc = unsafe { clock_gettime(clock, &mut t) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// This thread's CPU seconds (user + system), nanosecond resolution.
pub fn thread_cpu() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    clock_seconds(CLOCK_THREAD_CPUTIME_ID)
}

/// This process's CPU seconds, all threads.
pub fn process_cpu_self() -> f64 {
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    clock_seconds(CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_ticks() -> f64 {
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf has no preconditions.
    (unsafe { sysconf(SC_CLK_TCK) }).max(1) as f64
}

/// A process's user + system CPU seconds from /proc (all its threads; 0 once it is gone).
pub fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// CPU seconds the whole machine spent busy (all cores, everything but idle and iowait).
pub fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle) / clock_ticks()
}

/// The median (NaN for no values).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.is_empty() {
        f64::NAN
    } else if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// `n` per `seconds`, as `1.23M` or `456k`.
pub fn rate(n: usize, seconds: f64) -> String {
    let per_second = n as f64 / seconds;
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else {
        format!("{:.0}k", per_second / 1e3)
    }
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// A positive number from `name` (`1_000_000` and `1,000,000` allowed), else `default`.
pub fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => {
            let n: usize = value
                .trim()
                .replace(['_', ','], "")
                .parse()
                .with_context(|| format!("{name}={value:?}: expected a positive number"))?;
            ensure!(n > 0, "{name} must be at least 1");
            Ok(n)
        }
        Err(_) => Ok(default),
    }
}

/// The `netmeter-stack` binary that hosts ClickHouse for a bench whose own binary (or a
/// sibling service binary) is `beside`: the release one there, else the debug build, else
/// `$NETMETER_STACK_BIN`.
pub fn clickhouse_launcher(beside: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NETMETER_STACK_BIN") {
        return Ok(path.into());
    }
    let release = beside.with_file_name("netmeter-stack");
    let debug = release
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("debug/netmeter-stack"));
    let found = [Some(release), debug]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .context(
            "the bench needs the netmeter-stack binary (it hosts ClickHouse): run \
             `cargo build -p netmeter-stack`, or set NETMETER_STACK_BIN",
        )?;
    println!("ClickHouse launcher: {}", found.display());
    Ok(found)
}

/// Names for generated workloads, shared by the benches' data sets.
pub const NAMESPACES: [&str; 20] = [
    "shop",
    "payments",
    "search",
    "checkout",
    "catalog",
    "accounts",
    "ads",
    "analytics",
    "billing",
    "cart",
    "delivery",
    "email",
    "frontend",
    "gateway",
    "identity",
    "inventory",
    "logging",
    "monitoring",
    "orders",
    "recommendations",
];
pub const WORKLOADS: [&str; 30] = [
    "api",
    "web",
    "worker",
    "cache",
    "db",
    "queue",
    "indexer",
    "scheduler",
    "proxy",
    "auth",
    "cart",
    "checkout",
    "catalog",
    "search",
    "ranker",
    "ingest",
    "export",
    "mailer",
    "render",
    "thumbnail",
    "resizer",
    "notifier",
    "payments",
    "ledger",
    "fraud",
    "router",
    "gateway",
    "session",
    "profile",
    "feed",
];

/// The runtime a bench that hosts ClickHouse runs on: 2 workers (as the services run on this
/// 2-core machine), with `NETMETER_STACK_BIN` set to [`clickhouse_launcher`]`(beside)` for the
/// stacks it starts. Call it before any other thread exists: it sets the environment.
pub fn bench_runtime(beside: &Path) -> anyhow::Result<tokio::runtime::Runtime> {
    let launcher = clickhouse_launcher(beside)?;
    // SAFETY: the caller has no other thread yet (the runtime and any Kafka client come
    // after), so nothing reads the environment concurrently.
    unsafe { std::env::set_var("NETMETER_STACK_BIN", &launcher) };
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
