//! The kernel's own byte counters for every connection of a set of node namespaces, read with
//! the `conntrack` tool (libnetfilter_conntrack, independent of our netlink code): the final
//! counters of ended connections from `conntrack -E -e DESTROY` events, watched from before the
//! first connection, and the current counters of live ones from `conntrack -L`.
//!
//! A burst of connections ending together (the garbage collector frees expired entries in
//! batches) can outrun the watcher: the kernel then drops events, and the ledger would silently
//! miss connections. `conntrack -E -b` cannot prevent it in conntrack-tools 1.4.7 (it enlarges
//! another socket than the one it reads events from, seen with strace), so each watcher's event
//! socket is enlarged from here, and a socket that dropped anything fails the snapshot.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::netns::{KernelEntry, conntrack_list, parse_conntrack_events, set_receive_buffer};
use crate::process::KilledOnDrop;

/// A `conntrack -E` watcher per node namespace, writing to a file we can read at any time.
pub struct KernelCounters {
    watchers: Vec<Watcher>,
}

struct Watcher {
    node: String,
    ns: String,
    events: PathBuf,
    process: KilledOnDrop,
}

/// One connection as the kernel counted it on one node.
#[derive(Clone, Debug)]
pub struct Counted {
    pub node: String,
    pub entry: KernelEntry,
    /// Its DESTROY event was seen: the counters are final.
    pub ended: bool,
}

/// How long `conntrack -E` may take to subscribe to the kernel's events (milliseconds, usually).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watcher may take to write the events of connections that just ended (it writes
/// each as it reads it: microseconds, usually).
const EVENTS_WRITTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last TCP connections may take to leave the tables after the traffic ended: a
/// second in the mini-cluster (`nf_conntrack_tcp_timeout_time_wait`, `_close`).
const TCP_ENDED_TIMEOUT: Duration = Duration::from_secs(30);
/// Receive buffer asked for a watcher's event socket; the kernel doubles it: room for about
/// 100,000 events (a DESTROY event takes ~1.3 KB of buffer: the default 212,992 B held 166,
/// measured). The memory is used only while events wait to be read.
const EVENT_BUFFER: libc::c_int = 64 << 20;

impl KernelCounters {
    /// Starts watching `(node name, namespace)` pairs; events go to files under `dir`.
    pub fn start(nodes: &[(String, String)], dir: &Path) -> anyhow::Result<KernelCounters> {
        let mut watchers = Vec::new();
        for (node, ns) in nodes {
            let events = dir.join(format!("conntrack-events-{node}.txt"));
            let create = |path: &Path| {
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))
            };
            let file = create(&events)?;
            let errors = create(&events.with_extension("err"))?;
            // Line-buffered, so a line is in the file as soon as the event happened.
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "stdbuf", "-oL"])
                .args(["conntrack", "-E", "-e", "DESTROY", "-o", "extended,id"])
                .stdout(file)
                .stderr(errors)
                .spawn()
                .context("cannot start `conntrack -E`")?;
            watchers.push(Watcher {
                node: node.clone(),
                ns: ns.clone(),
                events,
                process: KilledOnDrop(child),
            });
        }
        // Connections before the subscription would have no DESTROY event: wait for it.
        for watcher in &watchers {
            if !crate::wait_until(SUBSCRIBE_TIMEOUT, || watcher.subscribed()) {
                crate::interrupt::check()?;
                bail!(
                    "`conntrack -E` in {} did not subscribe to conntrack events within \
                     {SUBSCRIBE_TIMEOUT:?}",
                    watcher.ns
                );
            }
            watcher.enlarge_event_socket()?;
        }
        Ok(KernelCounters { watchers })
    }

    /// Waits until no TCP connection is left in the watched tables and every watcher has read
    /// (and so written) the events the kernel sent it: from then on, every TCP connection made
    /// so far has its final counters in the files. In the mini-cluster a closed connection
    /// leaves its table a second after it closed; UDP entries stay until they time out, and are
    /// read live.
    pub fn wait_tcp_ended(&self) -> anyhow::Result<()> {
        let mut open = Ok(Vec::new());
        let ended = crate::wait_until(TCP_ENDED_TIMEOUT, || {
            open = self.open_tcp();
            open.as_ref().is_ok_and(Vec::is_empty) && self.watchers.iter().all(Watcher::caught_up)
        });
        if ended {
            return Ok(());
        }
        crate::interrupt::check()?;
        let open = open?;
        bail!(
            "after {TCP_ENDED_TIMEOUT:?}, {} TCP connections are still in the tables (or a watcher has \
             not written their events): {open:#?}",
            open.len()
        )
    }

    /// The TCP entries of every watched table now.
    fn open_tcp(&self) -> anyhow::Result<Vec<KernelEntry>> {
        let mut open = Vec::new();
        for watcher in &self.watchers {
            open.extend(
                conntrack_list(&watcher.ns)?
                    .into_iter()
                    .filter(|e| e.protocol == TCP),
            );
        }
        Ok(open)
    }

    /// Every connection seen since the start, with its latest counters: ended ones from their
    /// DESTROY event, live ones from the table now. Multicast and broadcast entries (the
    /// interfaces' IGMP/MLD reports) are left out: they are not traffic anyone sent.
    pub fn snapshot(&self) -> anyhow::Result<Vec<Counted>> {
        let mut all = Vec::new();
        for watcher in &self.watchers {
            // The live table first: a connection that ends after this read is in the events.
            let live = conntrack_list(&watcher.ns)?;
            let ended = watcher.ended_since(&live)?;
            let dropped = watcher.dropped();
            if dropped > 0 {
                bail!(
                    "`conntrack -E` in {} lost {dropped} events (its netlink socket overflowed; \
                     see {}): the kernel's ledger is incomplete",
                    watcher.ns,
                    watcher.events.with_extension("err").display()
                );
            }
            let mut by_key: HashMap<Key, Counted> = HashMap::new();
            for entry in live {
                by_key.insert(
                    key(&entry),
                    Counted {
                        node: watcher.node.clone(),
                        entry,
                        ended: false,
                    },
                );
            }
            for entry in ended {
                by_key.insert(
                    key(&entry),
                    Counted {
                        node: watcher.node.clone(),
                        entry,
                        ended: true,
                    },
                );
            }
            all.extend(
                by_key
                    .into_values()
                    .filter(|c| !is_multicast_or_broadcast(c.entry.orig.dst)),
            );
        }
        all.sort_by_key(|c| (c.node.clone(), c.entry.orig.src_addr(), c.entry.id));
        Ok(all)
    }
}

impl Watcher {
    /// The DESTROY events written so far, read once every entry of `live` that has left the
    /// table since has its event among them (or [`EVENTS_WRITTEN_TIMEOUT`] passed).
    fn ended_since(&self, live: &[KernelEntry]) -> anyhow::Result<Vec<KernelEntry>> {
        let mut ended = Ok(Vec::new());
        crate::wait_until(EVENTS_WRITTEN_TIMEOUT, || {
            ended = self.events();
            let Ok(events) = &ended else {
                return true;
            };
            // Read after the events: an entry in neither ended in between, and is being written.
            let Ok(still_live) = conntrack_list(&self.ns) else {
                return false;
            };
            let known: HashSet<Key> = events.iter().chain(&still_live).map(key).collect();
            live.iter().all(|entry| known.contains(&key(entry)))
        });
        ended
    }

    fn events(&self) -> anyhow::Result<Vec<KernelEntry>> {
        let text = std::fs::read_to_string(&self.events)
            .with_context(|| format!("cannot read {}", self.events.display()))?;
        parse_conntrack_events(&text)
    }

    /// Whether `conntrack -E` has subscribed: from then on the kernel queues every event for it.
    fn subscribed(&self) -> bool {
        !self.event_sockets().is_empty()
    }

    /// The sockets `conntrack -E` receives events on.
    fn event_sockets(&self) -> Vec<NetlinkSocket> {
        netfilter_sockets(self.process.0.id())
            .into_iter()
            .filter(|socket| socket.groups != 0)
            .collect()
    }

    /// Gives each event socket of `conntrack -E` a receive buffer of [`EVENT_BUFFER`] bytes: the
    /// socket is borrowed from the process (`pidfd_getfd`, the same socket, not a copy) and
    /// enlarged as root may (`SO_RCVBUFFORCE`, past `net.core.rmem_max`).
    fn enlarge_event_socket(&self) -> anyhow::Result<()> {
        let pid = self.process.0.id();
        let descriptor = |fd: libc::c_long, call: &str| -> anyhow::Result<OwnedFd> {
            if fd < 0 {
                bail!("{call}: {}", std::io::Error::last_os_error());
            }
            // SAFETY: a descriptor the syscall just opened for us, owned from here on.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        };
        for socket in self.event_sockets() {
            // SAFETY: plain syscalls; their results are checked and owned above.
            let pidfd = descriptor(
                unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) },
                &format!("pidfd_open({pid})"),
            )?;
            let borrowed = descriptor(
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), socket.fd, 0) },
                &format!("pidfd_getfd({pid}, {})", socket.fd),
            )?;
            set_receive_buffer(&borrowed, EVENT_BUFFER).with_context(|| {
                format!(
                    "cannot enlarge `conntrack -E`'s event socket in {}",
                    self.ns
                )
            })?;
        }
        Ok(())
    }

    /// Events the kernel could not queue for `conntrack -E` (its socket was full).
    fn dropped(&self) -> u64 {
        self.event_sockets().iter().map(|socket| socket.drops).sum()
    }

    /// Whether `conntrack -E` has read every event the kernel queued for it (it writes each
    /// line as it reads it).
    fn caught_up(&self) -> bool {
        let subscribed = self.event_sockets();
        !subscribed.is_empty() && subscribed.iter().all(|socket| socket.unread == 0)
    }
}

/// One netfilter netlink socket of a process, from `/proc/<pid>/net/netlink`.
struct NetlinkSocket {
    /// Its file descriptor in the process.
    fd: libc::c_int,
    /// Messages the kernel dropped because its receive buffer was full.
    drops: u64,
    /// The multicast groups it is subscribed to (a bit mask).
    groups: u32,
    /// Bytes queued for it that it has not read yet.
    unread: u64,
}

/// The netfilter netlink sockets process `pid` holds (none if it is gone). The table lists every
/// netlink socket of the process's network namespace; its file descriptors say which are its own.
fn netfilter_sockets(pid: u32) -> Vec<NetlinkSocket> {
    // Socket inode -> file descriptor.
    let own: HashMap<String, libc::c_int> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some((inode.to_string(), fd.file_name().to_str()?.parse().ok()?))
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    let netfilter = libc::NETLINK_NETFILTER.to_string();
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (protocol, groups, unread, drops, inode) = (
                fields.get(1)?,
                fields.get(3)?,
                fields.get(4)?,
                fields.get(8)?,
                fields.get(9)?,
            );
            if *protocol != netfilter {
                return None;
            }
            Some(NetlinkSocket {
                fd: *own.get(*inode)?,
                drops: drops.parse().ok()?,
                groups: u32::from_str_radix(groups, 16).ok()?,
                unread: unread.parse().ok()?,
            })
        })
        .collect()
}

const TCP: u8 = 6;

/// A connection: the kernel's id plus its original tuple (ids are reused).
type Key = (Option<u32>, u8, std::net::SocketAddr, std::net::SocketAddr);

fn key(entry: &KernelEntry) -> Key {
    (
        entry.id,
        entry.protocol,
        entry.orig.src_addr(),
        entry.orig.dst_addr(),
    )
}

pub fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}
