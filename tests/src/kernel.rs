//! The kernel's own byte counters for every connection of a set of node namespaces, read with
//! the `conntrack` tool (libnetfilter_conntrack, independent of our netlink code): the final
//! counters of ended connections from `conntrack -E -e DESTROY` events, watched from before the
//! first connection, and the current counters of live ones from `conntrack -L`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::netns::{KernelEntry, conntrack_list, parse_conntrack_events};
use crate::process::KilledOnDrop;

/// A `conntrack -E` watcher per node namespace, writing to a file we can read at any time.
pub struct KernelCounters {
    watchers: Vec<Watcher>,
}

struct Watcher {
    node: String,
    ns: String,
    events: PathBuf,
    _process: KilledOnDrop,
}

/// One connection as the kernel counted it on one node.
#[derive(Clone, Debug)]
pub struct Counted {
    pub node: String,
    pub entry: KernelEntry,
    /// Its DESTROY event was seen: the counters are final.
    pub ended: bool,
}

/// How long `conntrack -E` needs to subscribe before it sees events.
const SUBSCRIBE: Duration = Duration::from_millis(500);

impl KernelCounters {
    /// Starts watching `(node name, namespace)` pairs; events go to files under `dir`.
    pub fn start(nodes: &[(String, String)], dir: &Path) -> anyhow::Result<KernelCounters> {
        let mut watchers = Vec::new();
        for (node, ns) in nodes {
            let events = dir.join(format!("conntrack-events-{node}.txt"));
            let file = std::fs::File::create(&events)
                .with_context(|| format!("cannot create {}", events.display()))?;
            // Line-buffered, so a line is in the file as soon as the event happened.
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "stdbuf", "-oL"])
                .args(["conntrack", "-E", "-e", "DESTROY", "-o", "extended,id"])
                .stdout(file)
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start `conntrack -E`")?;
            watchers.push(Watcher {
                node: node.clone(),
                ns: ns.clone(),
                events,
                _process: KilledOnDrop(child),
            });
        }
        std::thread::sleep(SUBSCRIBE);
        Ok(KernelCounters { watchers })
    }

    /// Every connection seen since the start, with its latest counters: ended ones from their
    /// DESTROY event, live ones from the table now. Multicast and broadcast entries (the
    /// interfaces' IGMP/MLD reports) are left out: they are not traffic anyone sent.
    pub fn snapshot(&self) -> anyhow::Result<Vec<Counted>> {
        let mut all = Vec::new();
        for watcher in &self.watchers {
            // The live table first: a connection that ends after this read is in the events.
            let live = conntrack_list(&watcher.ns)?;
            std::thread::sleep(Duration::from_millis(100));
            let text = std::fs::read_to_string(&watcher.events)
                .with_context(|| format!("cannot read {}", watcher.events.display()))?;
            let ended = parse_conntrack_events(&text)?;
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
