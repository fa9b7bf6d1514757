//! A simulated Kubernetes node in network namespaces, for tests that need the real kernel's
//! conntrack: a "node" namespace with a bridge (the CNI bridge), two "pod" namespaces plugged into
//! it with veth pairs, and a Service VIP that is DNAT'd to a pod like kube-proxy does.
//!
//! ```text
//!   pod-a ns            node ns                                         pod-b ns
//!  ┌──────────────┐   ┌──────────────────────────────────────────┐   ┌──────────────┐
//!  │ eth0         ├───┤ veth-a ─ br0 10.77.0.1 fd77::1 ─ veth-b  ├───┤ eth0         │
//!  │ 10.77.0.2/24 │   │ nft: ct state on forward, input, output  │   │ 10.77.0.3/24 │
//!  │ fd77::2/64   │   │ DNAT 10.96.0.10:80 -> 10.77.0.3:8080     │   │ fd77::3/64   │
//!  └──────────────┘   └──────────────────────────────────────────┘   └──────────────┘
//! ```
//!
//! Why it looks like this:
//! - Conntrack only tracks a namespace's traffic once a netfilter rule there uses `ct` or NAT, so
//!   the node namespace gets an nftables table with `ct state` rules on forward, input and output.
//! - Pod-to-pod traffic on one node is bridged, not routed; netfilter (and so conntrack) sees
//!   bridged IP packets only with br_netfilter's `bridge-nf-call-iptables=1` (and `ip6tables`),
//!   which is per namespace. That is also what makes the DNAT'd reply (pod-b answering pod-a
//!   directly on the bridge) get un-NATed: exactly the setting Kubernetes requires.
//! - `nf_conntrack_acct=1` is per namespace and must be set before entries exist, or they carry
//!   no byte/packet counters.
//! - IPv6 addresses are added with `nodad` (and `accept_dad=0`) so they are usable at once.
//!
//! Every instance has its own namespaces (`nmt-<pid>-<n>-node`, `-pod-a`, `-pod-b`), so tests
//! run in parallel; the addresses are the same in every instance because each lives in its own
//! namespaces. Dropping a [`NodeTopology`] deletes exactly the namespaces it created.
//!
//! Traffic is generated in-process with std sockets created inside a namespace by
//! [`in_netns`] (`setns(2)` on a fresh thread): a socket stays in the namespace it was created
//! in, whichever thread later uses it. All helpers are bounded in time and count, and tests send
//! only between namespaces of a topology.
//!
//! [`conntrack_list`] is an independent reference reader (the `conntrack` command, not our
//! netlink code), so tests can compare the collector's reader against it.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};

/// Where `ip netns` keeps named namespaces (bind mounts of nsfs files).
pub const NETNS_DIR: &str = "/run/netns";

/// The node's address on the bridge, and the pods' IPv4 default gateway.
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const POD_A_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const POD_B_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// Prefix length of the pod network (10.77.0.0/24).
pub const PREFIX_V4: u8 = 24;
/// The node's IPv6 address on the bridge, and the pods' IPv6 default gateway.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const POD_A_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
pub const POD_B_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
/// Prefix length of the IPv6 pod network (fd77::/64).
pub const PREFIX_V6: u8 = 64;

/// The Service's cluster IP; TCP to it on [`SERVICE_PORT`] is DNAT'd to [`BACKEND_ADDR`].
pub const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const SERVICE_PORT: u16 = 80;
/// The Service's target port on pod-b.
pub const BACKEND_PORT: u16 = 8080;
/// `10.96.0.10:80`: what clients connect to.
pub const SERVICE_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(SERVICE_VIP, SERVICE_PORT));
/// `10.77.0.3:8080`: where a server behind the Service must listen (in pod-b).
pub const BACKEND_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(POD_B_V4, BACKEND_PORT));

/// The nftables table (family `inet`) in the node namespace.
pub const NFT_TABLE: &str = "netmeter_test";

/// Upper bound for one helper command (`ip`, `nft`, `conntrack`); they take milliseconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a TCP connect inside the topology (it answers in microseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one blocking read or write, and for waiting for the peer to close.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often background loops check whether they should stop.
const POLL: Duration = Duration::from_millis(20);
/// Socket receive buffer for [`udp_sink`], so a burst is not dropped before we read it.
const UDP_SINK_RCVBUF: libc::c_int = 8 << 20;

/// The path `ip netns` gives namespace `ns_name`: what `setns(2)` and `--netns` take.
pub fn ns_path(ns_name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns_name)
}

/// Whether a named network namespace `ns_name` exists.
pub fn ns_exists(ns_name: &str) -> bool {
    ns_path(ns_name).exists()
}

/// Network namespaces created by one owner (a [`NodeTopology`], a mini-cluster), deleted in
/// reverse order on [`delete_all`](Self::delete_all) or drop. Names are
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

/// A simulated Kubernetes node: three network namespaces (node, pod-a, pod-b) wired as described
/// in the [module docs](self). Dropping it deletes them, also when a test panics.
#[derive(Debug)]
pub struct NodeTopology {
    node: String,
    pod_a: String,
    pod_b: String,
    namespaces: Namespaces,
}

impl NodeTopology {
    /// Creates the namespaces, links, addresses, routes, sysctls and nftables rules. On failure
    /// everything created so far is deleted again and the error names the command that failed.
    pub fn create() -> anyhow::Result<NodeTopology> {
        let namespaces = Namespaces::new("nmt");
        let prefix = namespaces.prefix().to_string();
        let mut topology = NodeTopology {
            node: namespaces.name("node"),
            pod_a: namespaces.name("pod-a"),
            pod_b: namespaces.name("pod-b"),
            namespaces,
        };
        // On error `topology` is dropped here, which deletes what was created.
        topology
            .build()
            .with_context(|| format!("cannot create the simulated node {prefix}"))?;
        Ok(topology)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        for role in ["node", "pod-a", "pod-b"] {
            self.namespaces.add(role)?;
        }

        let node = self.node.as_str();
        // Counters must be on before the first entry is created: entries keep what they got.
        sysctl(node, "net.netfilter.nf_conntrack_acct", "1")?;
        sysctl(node, "net.ipv4.ip_forward", "1")?;
        sysctl(node, "net.ipv6.conf.all.forwarding", "1")?;
        // Without these, bridged pod-to-pod packets bypass netfilter: no conntrack entry, and
        // the DNAT'd reply from the backend would reach the client un-NATed.
        sysctl(node, "net.bridge.bridge-nf-call-iptables", "1").context(
            "br_netfilter is needed for bridged traffic to be tracked (modprobe br_netfilter)",
        )?;
        sysctl(node, "net.bridge.bridge-nf-call-ip6tables", "1")?;

        run(
            ip(&["-n", node, "link", "add", "br0", "type", "bridge"]),
            None,
        )?;
        let node_v4 = format!("{NODE_V4}/{PREFIX_V4}");
        let node_v6 = format!("{NODE_V6}/{PREFIX_V6}");
        run(
            ip(&["-n", node, "addr", "add", &node_v4, "dev", "br0"]),
            None,
        )?;
        run(
            ip(&["-n", node, "addr", "add", &node_v6, "dev", "br0", "nodad"]),
            None,
        )?;
        run(ip(&["-n", node, "link", "set", "br0", "up"]), None)?;

        for (pod, veth, v4, v6) in [
            (self.pod_a.as_str(), "veth-a", POD_A_V4, POD_A_V6),
            (self.pod_b.as_str(), "veth-b", POD_B_V4, POD_B_V6),
        ] {
            // Created inside the node namespace with the peer directly in the pod: no
            // interface ever appears in the root namespace, so names cannot collide.
            run(
                ip(&[
                    "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                    "netns", pod,
                ]),
                None,
            )?;
            run(
                ip(&["-n", node, "link", "set", veth, "master", "br0"]),
                None,
            )?;
            run(ip(&["-n", node, "link", "set", veth, "up"]), None)?;
            let pod_v4 = format!("{v4}/{PREFIX_V4}");
            let pod_v6 = format!("{v6}/{PREFIX_V6}");
            run(
                ip(&["-n", pod, "addr", "add", &pod_v4, "dev", "eth0"]),
                None,
            )?;
            run(
                ip(&["-n", pod, "addr", "add", &pod_v6, "dev", "eth0", "nodad"]),
                None,
            )?;
            run(ip(&["-n", pod, "link", "set", "eth0", "up"]), None)?;
            run(
                ip(&[
                    "-n",
                    pod,
                    "route",
                    "add",
                    "default",
                    "via",
                    &NODE_V4.to_string(),
                ]),
                None,
            )?;
            run(
                ip(&[
                    "-n",
                    pod,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &NODE_V6.to_string(),
                ]),
                None,
            )?;
        }

        nft_apply(node, &nft_ruleset())?;
        Ok(())
    }

    /// Name of the node namespace (for `ip netns exec`, [`in_netns`], [`conntrack_list`]).
    pub fn node_ns_name(&self) -> &str {
        &self.node
    }

    /// `/run/netns/<node>`: what the collector's `--netns` takes.
    pub fn node_ns_path(&self) -> PathBuf {
        ns_path(&self.node)
    }

    /// Name of the pod-a namespace (10.77.0.2, fd77::2).
    pub fn pod_a_ns_name(&self) -> &str {
        &self.pod_a
    }

    /// Name of the pod-b namespace (10.77.0.3, fd77::3; the Service backend).
    pub fn pod_b_ns_name(&self) -> &str {
        &self.pod_b
    }

    /// The three namespace names: node, pod-a, pod-b.
    pub fn ns_names(&self) -> [&str; 3] {
        [&self.node, &self.pod_a, &self.pod_b]
    }

    /// Deletes the namespaces now and reports failures (drop only prints them). Sockets and
    /// threads still inside a namespace keep it alive, unnamed, until they end.
    pub fn delete(mut self) -> anyhow::Result<()> {
        self.namespaces.delete_all()
    }
}

/// The node namespace's nftables table: conntrack on every hook that node traffic passes
/// (forward for routed and bridged pod traffic, input/output for the node itself) and the
/// Service DNAT (prerouting for pods, output for clients on the node itself). Hairpin traffic
/// (pod-b to the VIP landing on pod-b) would need masquerading and is not set up.
fn nft_ruleset() -> String {
    format!(
        "table inet {NFT_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {SERVICE_VIP} tcp dport {SERVICE_PORT} dnat ip to {POD_B_V4}:{BACKEND_PORT}
  }}
  chain output_nat {{
    type nat hook output priority -100; policy accept;
    ip daddr {SERVICE_VIP} tcp dport {SERVICE_PORT} dnat ip to {POD_B_V4}:{BACKEND_PORT}
  }}
  chain forward {{
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// A TCP listener inside a namespace that accepts any number of connections, reads each to EOF,
/// answers with a fixed number of bytes (none for a plain sink) and then closes it, counting the
/// bytes. Stops (and closes everything) on drop.
#[derive(Debug)]
pub struct TcpSink {
    addr: SocketAddr,
    shared: Arc<SinkShared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SinkShared {
    stop: AtomicBool,
    bytes: AtomicU64,
    accepted: AtomicU64,
    closed: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Bytes written back on every connection once its request has been read.
    reply: u64,
}

impl SinkShared {
    fn error(&self, message: String) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(message);
        }
    }
}

/// Starts a [`TcpSink`] listening on `addr` inside namespace `ns` (port 0 picks a free port; see
/// [`TcpSink::addr`]). Bytes are counted as they arrive, so once a [`tcp_send`] to it returns
/// (it waits for the sink to close), [`TcpSink::received`] includes all of them.
pub fn tcp_sink(ns: &str, addr: SocketAddr) -> anyhow::Result<TcpSink> {
    tcp_server(ns, addr, 0)
}

/// A [`TcpSink`] that answers every connection with `reply` bytes after reading it to EOF: a
/// request/response server (a client's [`tcp_send`] reads the reply before it returns).
pub fn tcp_server(ns: &str, addr: SocketAddr, reply: u64) -> anyhow::Result<TcpSink> {
    let listener = in_netns(ns, move || TcpListener::bind(addr))?
        .with_context(|| format!("cannot listen on {addr} in network namespace {ns}"))?;
    // Non-blocking accept so the loop can notice `stop`; accepted sockets are blocking.
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(SinkShared {
        reply,
        ..SinkShared::default()
    });
    let loop_shared = shared.clone();
    let acceptor = std::thread::Builder::new()
        .name("tcp-sink".into())
        .spawn(move || accept_loop(listener, loop_shared))
        .context("cannot spawn the TCP sink thread")?;
    Ok(TcpSink {
        addr,
        shared,
        acceptor: Some(acceptor),
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<SinkShared>) {
    let mut readers = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let conn_shared = shared.clone();
                readers.push(std::thread::spawn(move || {
                    let answered = drain(&mut stream, &conn_shared)
                        .and_then(|()| write_bytes(&stream, conn_shared.reply));
                    if let Err(e) = answered {
                        conn_shared.error(format!("connection from {peer}: {e:#}"));
                    }
                    // Counted before the close, so a sender that saw the close sees the count.
                    conn_shared.closed.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }));
                readers.retain(|r: &JoinHandle<()>| !r.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                shared.error(format!("accept: {e}"));
                std::thread::sleep(POLL);
            }
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
}

/// Reads `stream` to EOF (or until the sink stops), counting bytes as they arrive.
fn drain(stream: &mut TcpStream, shared: &SinkShared) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl TcpSink {
    /// The address it listens on (with the real port if it was bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Payload bytes received so far, over all connections.
    pub fn received(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections read to EOF and closed (or being closed) so far.
    pub fn closed(&self) -> u64 {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Errors seen on accepted connections (none expected inside a topology).
    pub fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `bytes` were received; false on timeout.
    pub fn wait_received(&self, bytes: u64, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.received() >= bytes)
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One finished TCP connection made by [`tcp_send`] or [`TcpStreamHandle::join`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTransfer {
    /// The client's address: the original tuple's source in conntrack.
    pub local: SocketAddr,
    /// The address connected to, as the client saw it (the VIP for a Service).
    pub peer: SocketAddr,
    /// Payload bytes written.
    pub sent: u64,
    /// Payload bytes the peer sent back before closing (0 for a [`TcpSink`]).
    pub received: u64,
}

/// Connects from namespace `ns` to `to`, writes exactly `bytes` bytes, shuts down its write side
/// and waits (at most 10 s) for the peer to close, so the whole exchange, FIN included, has
/// passed conntrack when it returns.
pub fn tcp_send(ns: &str, to: SocketAddr, bytes: u64) -> anyhow::Result<TcpTransfer> {
    let stream = connect_in(ns, to)?;
    let local = stream.local_addr()?;
    write_bytes(&stream, bytes).with_context(|| format!("sending to {to} from {local}"))?;
    finish(stream, local, to, bytes)
}

fn connect_in(ns: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = in_netns(ns, move || TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))?
        .with_context(|| format!("cannot connect to {to} from network namespace {ns}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn write_bytes(mut stream: &TcpStream, bytes: u64) -> anyhow::Result<()> {
    let buf = [0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream
            .write_all(&buf[..n])
            .with_context(|| format!("write failed with {left} of {bytes} bytes left"))?;
        left -= n as u64;
    }
    Ok(())
}

/// Half-closes, then reads to EOF: returns once the peer has closed its side too.
fn finish(
    mut stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    sent: u64,
) -> anyhow::Result<TcpTransfer> {
    stream
        .shutdown(Shutdown::Write)
        .with_context(|| format!("shutdown of {local} -> {peer}"))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut received = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("waiting for {peer} to close the connection from {local}")
                });
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{peer} kept sending to {local} for {IO_TIMEOUT:?}"
        );
    }
    Ok(TcpTransfer {
        local,
        peer,
        sent,
        received,
    })
}

/// A long-lived connection started by [`tcp_stream`]; stops early (closing cleanly) on drop.
#[derive(Debug)]
pub struct TcpStreamHandle {
    local: SocketAddr,
    peer: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<TcpTransfer>>>,
}

/// Connects from `ns` to `to` and returns as soon as the connection is established; a
/// background thread then writes `chunk` bytes `chunks` times, sleeping `every` between chunks
/// (the first at once), and closes like [`tcp_send`]. It takes about `(chunks - 1) * every`.
pub fn tcp_stream(
    ns: &str,
    to: SocketAddr,
    chunk: u64,
    every: Duration,
    chunks: u32,
) -> anyhow::Result<TcpStreamHandle> {
    let stream = connect_in(ns, to)?;
    let local = stream.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tcp-stream".into())
        .spawn(move || {
            let mut sent = 0u64;
            for i in 0..chunks {
                if i > 0 && !sleep_unless(&thread_stop, every) {
                    break;
                }
                write_bytes(&stream, chunk)
                    .with_context(|| format!("sending chunk {i} to {to} from {local}"))?;
                sent += chunk;
            }
            finish(stream, local, to, sent)
        })
        .context("cannot spawn the TCP stream thread")?;
    Ok(TcpStreamHandle {
        local,
        peer: to,
        stop,
        thread: Some(thread),
    })
}

/// Sleeps `duration` in small steps; false if `stop` was set meanwhile.
fn sleep_unless(stop: &AtomicBool, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

impl TcpStreamHandle {
    /// The client's address, known as soon as the connection is up.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for all chunks to be written and the peer to close.
    pub fn join(mut self) -> anyhow::Result<TcpTransfer> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("the stream from {} was already joined", self.local))?;
        thread.join().map_err(|panic| {
            anyhow!(
                "stream thread from {} panicked: {}",
                self.local,
                panic_message(panic.as_ref())
            )
        })?
    }
}

impl Drop for TcpStreamHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `datagrams` UDP datagrams of `size` payload bytes from namespace `ns` to `to` and
/// returns the source address used (the original tuple's source in conntrack). The socket is
/// bound to the routed source address and not connected, so an ICMP port-unreachable (no
/// listener) cannot fail later sends: exactly `datagrams` datagrams leave the socket.
pub fn udp_send(
    ns: &str,
    to: SocketAddr,
    datagrams: u32,
    size: usize,
) -> anyhow::Result<SocketAddr> {
    let max = if to.is_ipv4() { 65_507 } else { 65_527 };
    ensure!(
        size <= max,
        "a UDP datagram to {to} holds at most {max} bytes, not {size}"
    );
    let socket = in_netns(ns, move || -> std::io::Result<UdpSocket> {
        let any: IpAddr = if to.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        // Connecting a UDP socket only looks up the route: it yields the source address.
        let probe = UdpSocket::bind((any, 0))?;
        probe.connect(to)?;
        UdpSocket::bind((probe.local_addr()?.ip(), 0))
    })?
    .with_context(|| format!("cannot open a UDP socket towards {to} in network namespace {ns}"))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    let local = socket.local_addr()?;
    let payload = vec![0xa5u8; size];
    for i in 0..datagrams {
        let n = socket
            .send_to(&payload, to)
            .with_context(|| format!("sending datagram {i} of {datagrams} from {local} to {to}"))?;
        ensure!(n == size, "sent {n} of {size} bytes from {local} to {to}");
    }
    Ok(local)
}

/// Datagrams and payload bytes a [`UdpSink`] received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpReceived {
    pub datagrams: u64,
    pub bytes: u64,
}

/// A UDP socket inside a namespace that counts what it receives until dropped. Its receive
/// buffer is 8 MiB so bursts from [`udp_send`] are not dropped before they are read (conntrack on
/// the node counts them either way: it sees them before the socket does).
#[derive(Debug)]
pub struct UdpSink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    datagrams: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a [`UdpSink`] bound to `addr` in namespace `ns` (port 0 picks a free port).
pub fn udp_sink(ns: &str, addr: SocketAddr) -> anyhow::Result<UdpSink> {
    let socket = in_netns(ns, move || UdpSocket::bind(addr))?
        .with_context(|| format!("cannot bind UDP {addr} in network namespace {ns}"))?;
    set_receive_buffer(&socket, UDP_SINK_RCVBUF)
        .with_context(|| format!("cannot enlarge the receive buffer of UDP {addr}"))?;
    socket.set_read_timeout(Some(POLL))?;
    let addr = socket.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let datagrams = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (t_stop, t_datagrams, t_bytes) = (stop.clone(), datagrams.clone(), bytes.clone());
    let thread = std::thread::Builder::new()
        .name("udp-sink".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !t_stop.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    t_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    t_datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .context("cannot spawn the UDP sink thread")?;
    Ok(UdpSink {
        addr,
        stop,
        datagrams,
        bytes,
        thread: Some(thread),
    })
}

/// SO_RCVBUFFORCE (we are root in tests) so the size is not capped by the global rmem_max;
/// plain SO_RCVBUF (capped) without CAP_NET_ADMIN.
fn set_receive_buffer(socket: &UdpSocket, size: libc::c_int) -> std::io::Result<()> {
    let set = |option| {
        // SAFETY: passes a valid c_int and its size for an option that takes a c_int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl UdpSink {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn received(&self) -> UdpReceived {
        UdpReceived {
            datagrams: self.datagrams.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `datagrams` arrived; false on timeout.
    pub fn wait_for(&self, datagrams: u64, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.received().datagrams >= datagrams)
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference conntrack reader
// ---------------------------------------------------------------------------------------------

/// One direction of a conntrack entry, as `conntrack -L -o extended` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for protocols without ports (see `icmp`).
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 type, code and id, for those protocols.
    pub icmp: Option<IcmpTuple>,
    pub packets: u64,
    pub bytes: u64,
}

impl KernelTuple {
    pub fn src_addr(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }

    pub fn dst_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpTuple {
    pub kind: u8,
    pub code: u8,
    pub id: u16,
}

/// A conntrack entry as the `conntrack` tool (libnetfilter_conntrack) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    /// Address family number: 2 (IPv4) or 10 (IPv6).
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    /// `tcp`, `udp`, ...
    pub protocol_name: String,
    /// Seconds until the entry expires.
    pub timeout_secs: u64,
    /// Protocol state for stateful protocols, e.g. `ESTABLISHED`, `TIME_WAIT`.
    pub state: Option<String>,
    /// The original direction (the initiator's view: dst is the VIP before DNAT).
    pub orig: KernelTuple,
    /// The reply direction (src is the backend after DNAT).
    pub reply: KernelTuple,
    /// Bracketed flags such as `ASSURED`, `UNREPLIED`.
    pub flags: Vec<String>,
    pub mark: Option<u32>,
    pub zone: Option<u16>,
    /// CTA_ID: the kernel's id of the entry, unique among live entries.
    pub id: Option<u32>,
}

/// Lists the conntrack table of namespace `ns` with the `conntrack` tool (an implementation
/// independent of ours): `ip netns exec NS conntrack -L -f ipv4|ipv6 -o extended,id`. Errors if
/// an entry has no counters, which means `nf_conntrack_acct` was off when it was created.
pub fn conntrack_list(ns: &str) -> anyhow::Result<Vec<KernelEntry>> {
    let mut entries = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            ns,
            "conntrack",
            "-L",
            "-f",
            family,
            "-o",
            "extended,id",
        ]);
        let out = run(command, None)?;
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            entries.push(
                parse_conntrack_line(line)
                    .with_context(|| format!("cannot parse conntrack output line: {line}"))?,
            );
        }
    }
    Ok(entries)
}

#[derive(Default)]
struct PartialTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    icmp_id: Option<u16>,
    packets: Option<u64>,
    bytes: Option<u64>,
}

impl PartialTuple {
    fn finish(self, which: &str) -> anyhow::Result<KernelTuple> {
        let icmp = match (self.icmp_type, self.icmp_code, self.icmp_id) {
            (Some(kind), Some(code), Some(id)) => Some(IcmpTuple { kind, code, id }),
            _ => None,
        };
        Ok(KernelTuple {
            src: self
                .src
                .ok_or_else(|| anyhow!("{which} tuple has no src"))?,
            dst: self
                .dst
                .ok_or_else(|| anyhow!("{which} tuple has no dst"))?,
            sport: self.sport,
            dport: self.dport,
            icmp,
            packets: self.packets.ok_or_else(|| {
                anyhow!("{which} tuple has no counters (nf_conntrack_acct was 0)")
            })?,
            bytes: self.bytes.ok_or_else(|| {
                anyhow!("{which} tuple has no counters (nf_conntrack_acct was 0)")
            })?,
        })
    }
}

/// Parses one line of `conntrack -L -o extended,id`, e.g.
/// `ipv4 2 tcp 6 119 TIME_WAIT src=.. dst=.. sport=.. dport=.. packets=5 bytes=5268 src=..
/// dst=.. sport=.. dport=.. packets=3 bytes=164 [ASSURED] mark=0 use=1 id=2537237267`.
/// A tuple's fields run from its `src=` to its `bytes=`; `id=` inside a tuple is the ICMP id,
/// after the reply tuple it is the entry id.
pub fn parse_conntrack_line(line: &str) -> anyhow::Result<KernelEntry> {
    let mut tokens = line.split_whitespace();
    let mut next = |what: &str| tokens.next().ok_or_else(|| anyhow!("missing {what}"));
    let _family_name = next("family name")?;
    let family: u8 = next("family number")?
        .parse()
        .context("bad family number")?;
    let protocol_name = next("protocol name")?.to_string();
    let protocol: u8 = next("protocol number")?
        .parse()
        .context("bad protocol number")?;
    let timeout_secs: u64 = next("timeout")?.parse().context("bad timeout")?;

    let mut state = None;
    let mut tuples: Vec<PartialTuple> = Vec::new();
    // Whether the last tuple is still open (its `bytes=` not seen yet).
    let mut in_tuple = false;
    let mut flags = Vec::new();
    let (mut mark, mut zone, mut id) = (None, None, None);
    for token in tokens {
        if let Some(flag) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            flags.push(flag.to_string());
            continue;
        }
        let Some((key, value)) = token.split_once('=') else {
            ensure!(
                tuples.is_empty() && state.is_none(),
                "unexpected token {token:?}"
            );
            state = Some(token.to_string());
            continue;
        };
        if key == "src" {
            ensure!(tuples.len() < 2, "more than two tuples");
            tuples.push(PartialTuple::default());
            in_tuple = true;
        }
        let bad = || format!("bad value in {token:?}");
        match (in_tuple, tuples.last_mut()) {
            (true, Some(tuple)) => match key {
                "src" => tuple.src = Some(value.parse().with_context(bad)?),
                "dst" => tuple.dst = Some(value.parse().with_context(bad)?),
                "sport" => tuple.sport = value.parse().with_context(bad)?,
                "dport" => tuple.dport = value.parse().with_context(bad)?,
                "type" => tuple.icmp_type = Some(value.parse().with_context(bad)?),
                "code" => tuple.icmp_code = Some(value.parse().with_context(bad)?),
                "id" => tuple.icmp_id = Some(value.parse().with_context(bad)?),
                "packets" => tuple.packets = Some(value.parse().with_context(bad)?),
                "bytes" => {
                    tuple.bytes = Some(value.parse().with_context(bad)?);
                    in_tuple = false;
                }
                // E.g. `mark=` right after a tuple when accounting is off: the tuple ended.
                "mark" | "use" | "zone" | "secctx" | "labels" => {
                    in_tuple = false;
                    apply_trailing(key, value, &mut mark, &mut zone, &mut id).with_context(bad)?;
                }
                _ => {}
            },
            _ => apply_trailing(key, value, &mut mark, &mut zone, &mut id).with_context(bad)?,
        }
    }
    ensure!(
        tuples.len() == 2,
        "expected 2 tuples, found {}",
        tuples.len()
    );
    let reply = tuples.pop().map(|t| t.finish("reply")).transpose()?;
    let orig = tuples.pop().map(|t| t.finish("original")).transpose()?;
    let (Some(orig), Some(reply)) = (orig, reply) else {
        bail!("expected 2 tuples");
    };
    Ok(KernelEntry {
        family,
        protocol,
        protocol_name,
        timeout_secs,
        state,
        orig,
        reply,
        flags,
        mark,
        zone,
        id,
    })
}

fn apply_trailing(
    key: &str,
    value: &str,
    mark: &mut Option<u32>,
    zone: &mut Option<u16>,
    id: &mut Option<u32>,
) -> anyhow::Result<()> {
    match key {
        "mark" => *mark = Some(value.parse()?),
        "zone" => *zone = Some(value.parse()?),
        "id" => *id = Some(value.parse()?),
        _ => {}
    }
    Ok(())
}

/// Parses the output of `conntrack -E -e DESTROY -o extended` (the kernel's final counters of
/// ended connections): each line is a `-L` line behind an `[EVENT]` tag, with a `portid=`
/// trailer on events caused by userspace. Lines that are not events are skipped.
pub fn parse_conntrack_events(text: &str) -> anyhow::Result<Vec<KernelEntry>> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("[DESTROY]"))
        .map(|event| {
            let mut line: Vec<&str> = event
                .split_whitespace()
                .filter(|t| !t.starts_with("portid="))
                .collect();
            // Events from the kernel's timers carry no timeout field: the entry has none left.
            if line.get(4).is_some_and(|t| t.parse::<u64>().is_err()) {
                line.insert(4, "0");
            }
            parse_conntrack_line(&line.join(" ")).with_context(|| format!("event line {event:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnat_tcp_with_id() {
        let e = parse_conntrack_line(
            "ipv4     2 tcp      6 119 TIME_WAIT src=10.77.0.2 dst=10.96.0.10 sport=50748 \
             dport=80 packets=5 bytes=5268 src=10.77.0.3 dst=10.77.0.2 sport=8080 dport=50748 \
             packets=3 bytes=164 [ASSURED] mark=0 use=1 id=2537237267",
        )
        .unwrap();
        assert_eq!((e.family, e.protocol, e.timeout_secs), (2, 6, 119));
        assert_eq!(e.protocol_name, "tcp");
        assert_eq!(e.state.as_deref(), Some("TIME_WAIT"));
        assert_eq!(e.orig.src_addr(), "10.77.0.2:50748".parse().unwrap());
        assert_eq!(e.orig.dst_addr(), SERVICE_ADDR);
        assert_eq!((e.orig.packets, e.orig.bytes), (5, 5268));
        assert_eq!(e.reply.src_addr(), BACKEND_ADDR);
        assert_eq!((e.reply.packets, e.reply.bytes), (3, 164));
        assert_eq!(e.flags, ["ASSURED"]);
        assert_eq!((e.mark, e.zone, e.id), (Some(0), None, Some(2_537_237_267)));
    }

    #[test]
    fn parses_unreplied_udp6_without_id() {
        let e = parse_conntrack_line(
            "ipv6     10 udp      17 29 src=fd77::2 dst=fd77::3 sport=43198 dport=9001 \
             packets=1 bytes=1048 [UNREPLIED] src=fd77::3 dst=fd77::2 sport=9001 dport=43198 \
             packets=0 bytes=0 mark=0 use=1",
        )
        .unwrap();
        assert_eq!((e.family, e.protocol, e.state), (10, 17, None));
        assert_eq!(e.orig.src, IpAddr::V6(POD_A_V6));
        assert_eq!(e.orig.bytes, 1048);
        assert_eq!(e.reply.bytes, 0);
        assert_eq!(e.flags, ["UNREPLIED"]);
        assert_eq!(e.id, None);
    }

    #[test]
    fn icmp_id_is_not_the_entry_id() {
        let e = parse_conntrack_line(
            "ipv4     2 icmp     1 29 src=10.77.0.2 dst=10.77.0.3 type=8 code=0 id=4242 \
             packets=1 bytes=84 src=10.77.0.3 dst=10.77.0.2 type=0 code=0 id=4242 packets=1 \
             bytes=84 mark=0 use=1 id=99",
        )
        .unwrap();
        assert_eq!(
            e.orig.icmp,
            Some(IcmpTuple {
                kind: 8,
                code: 0,
                id: 4242
            })
        );
        assert_eq!(e.reply.icmp.map(|i| i.kind), Some(0));
        assert_eq!((e.orig.sport, e.orig.dport), (0, 0));
        assert_eq!(e.id, Some(99));
    }

    #[test]
    fn missing_counters_are_an_error_that_says_why() {
        let err = parse_conntrack_line(
            "ipv4     2 udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 [UNREPLIED] \
             src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1 id=7",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("nf_conntrack_acct"), "{err:#}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_conntrack_line("").is_err());
        assert!(parse_conntrack_line("ipv4 2 udp 17 29 src=10.0.0.1").is_err());
        assert!(parse_conntrack_line("ipv4 2 udp 17 29 src=nope dst=10.0.0.1").is_err());
    }
}
