//! Network namespaces that are ours: created under names that say who made them, deleted in
//! reverse order (also those a process that died left behind), and code or helper commands
//! (`ip`, `nft`, `conntrack`) run inside one. A socket created inside a namespace by
//! [`in_netns`] (`setns(2)` on a fresh thread) stays in it, whichever thread later uses it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};

/// Where `ip netns` keeps named namespaces (bind mounts of nsfs files).
pub const NETNS_DIR: &str = "/run/netns";

/// Upper bound for one helper command (`ip`, `nft`, `conntrack`); they take milliseconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The path `ip netns` gives namespace `ns_name`: what `setns(2)` and `--netns` take.
pub fn ns_path(ns_name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns_name)
}

/// Whether a named network namespace `ns_name` exists.
pub fn ns_exists(ns_name: &str) -> bool {
    ns_path(ns_name).exists()
}

/// Network namespaces created by one owner (a [`NodeTopology`](super::NodeTopology), a
/// mini-cluster), deleted in reverse order on [`delete_all`](Self::delete_all) or drop. Names are
/// `<kind>-<pid>-<n>-<role>`: the pid of the creating process makes every instance unique (tests
/// run in parallel) and lets [`Namespaces::new`] delete the leftovers of creators that died
/// without cleaning up (SIGKILL, a Ctrl-C of the test harness).
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    /// Namespaces this set created and still owns, in creation order. Only these are ever
    /// deleted: creation fails rather than adopting a namespace that already exists.
    created: Vec<String>,
}

/// Prefixes of the namespaces tests and the demo create (`nmt`: a single node, `nmc`: a
/// mini-cluster).
const NAMESPACE_KINDS: [&str; 2] = ["nmt", "nmc"];

impl Namespaces {
    /// A new, empty set named `<kind>-<pid>-<n>`; first deletes namespaces of our kinds whose
    /// creating process is gone.
    pub fn new(kind: &str) -> Namespaces {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        sweep_orphans();
        Namespaces {
            prefix: format!(
                "{kind}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            created: Vec::new(),
        }
    }

    /// `<prefix>`: what every name of this set starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name `role` gets in this set.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Creates namespace `role` with loopback up and IPv6 duplicate address detection off (so
    /// addresses are usable at once); returns its name.
    pub fn add(&mut self, role: &str) -> anyhow::Result<String> {
        let ns = self.name(role);
        // `ip netns add` fails if the name exists, so we never take over a namespace.
        run(ip(&["netns", "add", &ns]), None)?;
        self.created.push(ns.clone());
        // Before any interface exists, so the veth ends inherit it from `default`.
        sysctl(&ns, "net.ipv6.conf.default.accept_dad", "0")?;
        sysctl(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
        run(ip(&["-n", &ns, "link", "set", "lo", "up"]), None)?;
        Ok(ns)
    }

    /// Deletes one namespace of this set (its interfaces go with it).
    pub fn remove(&mut self, role: &str) -> anyhow::Result<()> {
        let ns = self.name(role);
        let Some(at) = self.created.iter().position(|n| *n == ns) else {
            bail!("network namespace {ns} is not one of ours");
        };
        self.created.remove(at);
        run(ip(&["netns", "del", &ns]), None).map(drop)
    }

    /// Deletes every namespace of the set now and reports failures (drop only prints them).
    /// Sockets and threads still inside a namespace keep it alive, unnamed, until they end.
    pub fn delete_all(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        while let Some(ns) = self.created.pop() {
            if let Err(e) = run(ip(&["netns", "del", &ns]), None) {
                errors.push(format!("{e:#}"));
            }
        }
        ensure!(
            errors.is_empty(),
            "cannot delete network namespaces: {}",
            errors.join("; ")
        );
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Err(e) = self.delete_all() {
            eprintln!("netmeter-tests: {e:#}");
        }
    }
}

/// Deletes the namespaces of our kinds whose creating process no longer runs. A pid that was
/// reused by an unrelated process keeps its namespaces until that process ends: we never
/// delete what a running process may own.
pub fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '-');
        let (Some(kind), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if NAMESPACE_KINDS.contains(&kind) && !Path::new(&format!("/proc/{pid}")).exists() {
            match run(ip(&["netns", "del", &name]), None) {
                Ok(_) => eprintln!("netmeter-tests: deleted {name}, left behind by process {pid}"),
                Err(e) => eprintln!("netmeter-tests: cannot delete leftover {name}: {e:#}"),
            }
        }
    }
}

/// A thread started by [`spawn_in_netns`], inside a network namespace.
#[derive(Debug)]
pub struct NetnsThread<T> {
    ns: String,
    handle: JoinHandle<anyhow::Result<T>>,
}

impl<T> NetnsThread<T> {
    /// Waits for the thread; a panic in it becomes an error.
    pub fn join(self) -> anyhow::Result<T> {
        match self.handle.join() {
            Ok(result) => result,
            Err(panic) => Err(anyhow!(
                "thread in network namespace {} panicked: {}",
                self.ns,
                panic_message(panic.as_ref())
            )),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Starts `f` on a fresh OS thread that first joins network namespace `ns_name` (setns(2)
/// changes only the calling thread, which is why this is a thread of its own and never a pooled
/// one). Sockets `f` creates stay in that namespace wherever they are used afterwards, and
/// processes it spawns start in it. Errors opening the namespace are returned at once.
pub fn spawn_in_netns<T, F>(ns_name: &str, f: F) -> anyhow::Result<NetnsThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = ns_path(ns_name);
    let ns_file = File::open(&path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    let ns = ns_name.to_string();
    let thread_ns = ns.clone();
    let handle = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // SAFETY: setns only reads the descriptor, which `ns_file` keeps open for the call.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns into network namespace {thread_ns} failed"));
            }
            drop(ns_file);
            Ok(f())
        })
        .context("cannot spawn a thread")?;
    Ok(NetnsThread { ns, handle })
}

/// Runs `f` inside network namespace `ns_name` (see [`spawn_in_netns`]) and returns its result.
pub fn in_netns<T, F>(ns_name: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in_netns(ns_name, f)?.join()
}

/// Sets a sysctl (dotted name) inside `ns` and reads it back. /proc/sys/net resolves against the
/// calling thread's namespace, so writing it from a thread inside `ns` is enough.
pub(crate) fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let wanted = value.to_string();
    let read_back = in_netns(ns, move || -> std::io::Result<String> {
        std::fs::write(&path, &wanted)?;
        std::fs::read_to_string(&path)
    })?
    .with_context(|| format!("cannot set {key}={value} in network namespace {ns}"))?;
    ensure!(
        read_back.trim() == value,
        "{key} in network namespace {ns} is {} after setting it to {value}",
        read_back.trim()
    );
    Ok(())
}

/// Loads an nftables ruleset into namespace `ns`.
pub(crate) fn nft_apply(ns: &str, ruleset: &str) -> anyhow::Result<()> {
    let mut nft = Command::new("ip");
    nft.args(["netns", "exec", ns, "nft", "-f", "-"]);
    run(nft, Some(ruleset)).map(drop)
}

/// A node namespace's nftables table `table`, as kube-proxy's nftables mode and a node's
/// conntrack need it: the Service rule `dispatch` on prerouting (traffic from pods) and on
/// output (the node's own processes), the chains it jumps to (`extra_chains`, whole chain
/// definitions), and `ct state` on every hook node traffic passes (forward for routed and
/// bridged pod traffic, input/output for the node itself), so conntrack sees it all.
pub(crate) fn node_ruleset(table: &str, dispatch: &str, extra_chains: &str) -> String {
    format!(
        "table inet {table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {dispatch}
  }}
  chain output_nat {{
    type nat hook output priority -100; policy accept;
    {dispatch}
  }}
{extra_chains}  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state new,established,related counter accept
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    ct state new,established,related counter accept
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    ct state new,established,related counter accept
  }}
}}
"
    )
}

/// The names of the network namespaces that exist (`ip netns list`, without ids).
pub fn names() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn ip(args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(args);
    command
}

/// Runs a helper command with `stdin` as its input, killing it after [`COMMAND_TIMEOUT`].
/// Returns its stdout; a failure names the command line and carries its stderr.
pub(crate) fn run(mut command: Command, stdin: Option<&str>) -> anyhow::Result<String> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take())
        && let Err(e) = pipe.write_all(input.as_bytes())
    {
        // Our own child, by its handle: do not leave it running or unreaped.
        let _ = child.kill();
        let _ = child.wait();
        return Err(e).with_context(|| format!("cannot write the input of `{line}`"));
    }
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let collect = |reader: Option<JoinHandle<Vec<u8>>>| {
        reader
            .and_then(|r| r.join().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let out = collect(stdout);
    let err = collect(stderr);
    ensure!(
        status.success(),
        "`{line}` failed ({status}): {}",
        err.trim()
    );
    Ok(out)
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
