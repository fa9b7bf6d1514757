//! What survives a collector restart, in `--state-dir` (one directory per collector; on
//! Kubernetes a hostPath):
//!
//! - `connections.state`: the [`DeltaTracker`](crate::delta::DeltaTracker)'s per-connection
//!   counters, written at SIGTERM after the final dump. The next process continues from them
//!   instead of taking a baseline, so the bytes moved between the two processes are counted (in
//!   the new one's first deltas).
//! - `unsent.batches`: batches the broker had not acknowledged by the shutdown deadline. The next
//!   process sends them first, unchanged (same instance id and sequence: downstream dedup holds).
//! - `published.marker`: the end of the last interval whose batches the broker acknowledged,
//!   rewritten after every such interval. A process that finds it but no usable state knows the
//!   previous one stopped without saving (SIGKILL, OOM) and reports the gap it left.
//!
//! Every file starts with the same versioned header: which conntrack table the numbers belong to
//! ([`TableIdentity`]: boot, network namespace, node, dump mode, key scheme) and a time. A state
//! is continued only if all of it matches and it is younger than `--state-max-age` ([`check`]);
//! otherwise it is ignored with one log line saying why ([`Ignored`]) and the first dump is a
//! baseline. The state and the batches are consumed when read (deleted), so they are never
//! applied twice.
//!
//! - this file: what must match, and what a marker says about a gap (plain functions);
//! - `format.rs`: the bytes (encode, decode, checksum), over `Read`/`Write`;
//! - `dir.rs`: the directory ([`StateDir`]): atomic writes, reading at start, and what is logged
//!   and counted.

mod dir;
mod format;

pub use dir::{Previous, StateDir, report_ended_between_processes, report_error};
pub use format::{
    RECORD_BYTES, VERSION, read_batches, read_connections, read_marker, write_batches,
    write_connections, write_marker,
};

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::conntrack::DumpMode;
use crate::delta;

/// The files of a state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// The tracker's per-connection counters, saved at shutdown.
    Connections,
    /// Batches the broker had not acknowledged at shutdown.
    Batches,
    /// The end of the last interval the broker acknowledged.
    Marker,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Connections => b"NMCOLCON",
            FileKind::Batches => b"NMCOLBAT",
            FileKind::Marker => b"NMCOLMRK",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Connections => "connections.state",
            FileKind::Batches => "unsent.batches",
            FileKind::Marker => "published.marker",
        }
    }

    /// The `file` label of `netmeter_collector_state_ignored_total`.
    pub fn label(self) -> &'static str {
        match self {
            FileKind::Connections => "state",
            FileKind::Batches => "batches",
            FileKind::Marker => "marker",
        }
    }
}

/// A network namespace, as the kernel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsId {
    /// Device and inode of its nsfs file (`--netns` or /proc/self/ns/net).
    pub dev: u64,
    pub ino: u64,
    /// SO_NETNS_COOKIE: unlike inode numbers, never reused within a boot (0: unknown).
    pub cookie: u64,
}

/// Which conntrack table counters belong to, and how they were read: counters continue only
/// in the same table, read the same way, keyed the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableIdentity {
    /// /proc/sys/kernel/random/boot_id: a reboot starts every counter over.
    pub boot_id: String,
    pub netns: NetnsId,
    pub node_name: String,
    pub mode: DumpMode,
    /// [`delta::key_scheme`].
    pub key_scheme: u64,
}

impl TableIdentity {
    /// The table this process meters: in `netns` (a path like /run/netns/NAME) or in ours.
    pub fn read(netns: Option<&Path>, node_name: &str, mode: DumpMode) -> io::Result<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
        // /proc/self is the main thread, which never changes namespace.
        let ns_file = netns.unwrap_or(Path::new("/proc/self/ns/net"));
        let meta = std::fs::metadata(ns_file)?;
        let cookie = crate::conntrack::netlink::netns_cookie(netns).unwrap_or(0);
        Ok(TableIdentity {
            boot_id: boot_id.trim().to_string(),
            netns: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
                cookie,
            },
            node_name: node_name.to_string(),
            mode,
            key_scheme: delta::key_scheme(),
        })
    }
}

/// The header of every file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: FileKind,
    pub table: TableIdentity,
    /// Connections: the final dump's start, where the next interval begins. Marker: the end of
    /// the last acknowledged interval. Batches: when they were saved.
    pub time: SystemTime,
    /// Records that follow.
    pub records: u64,
}

/// Why a saved file was not used. Each names the input and the consequence is logged with it.
#[derive(Debug, thiserror::Error)]
pub enum Ignored {
    #[error("cannot read it: {0}")]
    Unreadable(#[source] io::Error),
    #[error("it is corrupt: {0}")]
    Corrupt(String),
    #[error("it has format version {found}, this collector reads version {VERSION}")]
    OtherVersion { found: u32 },
    #[error("it was written by a collector that keys connections differently")]
    OtherKeyScheme,
    #[error("it is from node {saved:?}, this is node {here:?}")]
    OtherNode { saved: String, here: String },
    #[error(
        "the node rebooted since (boot id {saved}, now {here}): the kernel's counters started over"
    )]
    OtherBoot { saved: String, here: String },
    #[error(
        "it is from another network namespace (nsfs device {}, inode {}, cookie {}; this one: device {}, inode {}, cookie {})",
        saved.dev, saved.ino, saved.cookie, here.dev, here.ino, here.cookie
    )]
    OtherNetns { saved: NetnsId, here: NetnsId },
    #[error("it was read with --zero-counters={saved}, this collector runs with {here}")]
    OtherMode { saved: bool, here: bool },
    #[error("it is {}s old, more than --state-max-age {}s", age.as_secs(), max.as_secs())]
    TooOld { age: Duration, max: Duration },
    #[error("it is dated {}s in the future (did the clock go back?)", ahead.as_secs())]
    FromTheFuture { ahead: Duration },
}

impl Ignored {
    /// The `reason` label of the metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Ignored::Unreadable(_) => "unreadable",
            Ignored::Corrupt(_) => "corrupt",
            Ignored::OtherVersion { .. } | Ignored::OtherKeyScheme => "other_version",
            Ignored::OtherNode { .. } => "other_node",
            Ignored::OtherBoot { .. } => "other_boot",
            Ignored::OtherNetns { .. } => "other_netns",
            Ignored::OtherMode { .. } => "other_mode",
            Ignored::TooOld { .. } => "too_old",
            Ignored::FromTheFuture { .. } => "from_the_future",
        }
    }
}

impl From<io::Error> for Ignored {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Ignored::Corrupt("truncated".into()),
            io::ErrorKind::InvalidData => Ignored::Corrupt(e.to_string()),
            _ => Ignored::Unreadable(e),
        }
    }
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Whether counters described by `saved` can be continued here: same node, boot, namespace,
/// dump mode and key scheme, and (with `max_age`) recent enough.
pub fn check(
    saved: &Header,
    here: &TableIdentity,
    now: SystemTime,
    max_age: Option<Duration>,
) -> Result<(), Ignored> {
    let (s, h) = (&saved.table, here);
    if s.node_name != h.node_name {
        return Err(Ignored::OtherNode {
            saved: s.node_name.clone(),
            here: h.node_name.clone(),
        });
    }
    if s.boot_id != h.boot_id {
        return Err(Ignored::OtherBoot {
            saved: s.boot_id.clone(),
            here: h.boot_id.clone(),
        });
    }
    let cookies_differ =
        s.netns.cookie != 0 && h.netns.cookie != 0 && s.netns.cookie != h.netns.cookie;
    if (s.netns.dev, s.netns.ino) != (h.netns.dev, h.netns.ino) || cookies_differ {
        return Err(Ignored::OtherNetns {
            saved: s.netns,
            here: h.netns,
        });
    }
    if s.mode != h.mode {
        return Err(Ignored::OtherMode {
            saved: s.mode == DumpMode::Zero,
            here: h.mode == DumpMode::Zero,
        });
    }
    if s.key_scheme != h.key_scheme {
        return Err(Ignored::OtherKeyScheme);
    }
    match now.duration_since(saved.time) {
        Err(ahead) => Err(Ignored::FromTheFuture {
            ahead: ahead.duration(),
        }),
        Ok(age) => match max_age {
            Some(max) if age > max => Err(Ignored::TooOld { age, max }),
            _ => Ok(()),
        },
    }
}

/// Bytes moved on connections alive across a restart that nobody counted, as the marker tells:
/// from the previous process's last acknowledged interval to our baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub since: SystemTime,
    /// `no_state` (killed, OOM, crashed, or the save failed), or why the state was ignored
    /// ([`Ignored::metric_label`]).
    pub reason: &'static str,
}

/// The gap to report when there is no usable state but a `marker`: `state` is why the state was
/// ignored (None: there was none). A marker of another node or network namespace says nothing
/// about this table (`Err`); one from before a reboot or in another mode still dates the gap.
pub fn restart_gap(
    marker: &Header,
    state: Option<&Ignored>,
    here: &TableIdentity,
    now: SystemTime,
) -> Result<Gap, Ignored> {
    let reason = match check(marker, here, now, None) {
        // The marker only dates the last publication; how connections were keyed is irrelevant.
        Ok(()) | Err(Ignored::OtherKeyScheme) => state.map_or("no_state", Ignored::metric_label),
        Err(e @ (Ignored::OtherBoot { .. } | Ignored::OtherMode { .. })) => e.metric_label(),
        Err(e) => return Err(e),
    };
    Ok(Gap {
        since: marker.time,
        reason,
    })
}

/// Shared by the state's unit tests.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::conntrack::{ConntrackEntry, Counters, Tuple};
    use crate::delta::DeltaTracker;
    use std::time::UNIX_EPOCH;

    pub(super) fn here() -> TableIdentity {
        TableIdentity {
            boot_id: "6f1c9a57-3f2e-4d38-9d7a-2f8c1e0b9a11".into(),
            netns: NetnsId {
                dev: 4,
                ino: 4026531840,
                cookie: 1,
            },
            node_name: "node-a".into(),
            mode: DumpMode::Read,
            key_scheme: delta::key_scheme(),
        }
    }

    pub(super) fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000 + seconds)
    }

    pub(super) fn entry(n: u32, bytes: u64) -> ConntrackEntry {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 | n);
        ConntrackEntry {
            protocol: 17,
            original: Tuple {
                src: ip.into(),
                dst: "10.96.0.10".parse().unwrap(),
                src_port: (n % 50_000) as u16 + 1024,
                dst_port: 53,
            },
            reply: Tuple {
                src: "10.96.0.10".parse().unwrap(),
                dst: ip.into(),
                src_port: 53,
                dst_port: (n % 50_000) as u16 + 1024,
            },
            id: n.wrapping_mul(2_654_435_761),
            zone: 0,
            mark: 0,
            status: 0,
            counters: Some(Counters {
                orig_bytes: bytes,
                orig_packets: bytes / 100 + 1,
                reply_bytes: bytes * 3,
                reply_packets: bytes / 50,
            }),
        }
    }

    /// A tracker after a baseline and one dump of `n` connections, some vanished since.
    pub(super) fn tracker(n: u32) -> DeltaTracker {
        let mut t = DeltaTracker::new(DumpMode::Read);
        for (generation, bytes) in [(0u64, 1_000u64), (1, 5_000)] {
            t.reserve(n as usize);
            t.start_dump();
            for i in 0..n {
                // Every 10th connection is not listed by the last dump: it waits for DESTROY.
                if generation == 1 && i % 10 == 0 {
                    continue;
                }
                t.observe(&entry(i, bytes + u64::from(i)));
            }
            t.finish_dump();
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{at, here};
    use super::*;

    #[test]
    fn a_state_is_continued_only_in_the_same_table_read_the_same_way() {
        let header = |change: fn(&mut TableIdentity)| {
            let mut table = here();
            change(&mut table);
            Header {
                kind: FileKind::Connections,
                table,
                time: at(0),
                records: 0,
            }
        };
        let max = Some(Duration::from_secs(600));
        let label = |h: &Header, now| check(h, &here(), now, max).err().map(|e| e.metric_label());
        assert_eq!(label(&header(|_| {}), at(599)), None);
        assert_eq!(label(&header(|_| {}), at(601)), Some("too_old"));
        assert_eq!(
            label(&header(|_| {}), at(0) - Duration::from_secs(1)),
            Some("from_the_future")
        );
        assert_eq!(
            label(&header(|t| t.boot_id = "another".into()), at(1)),
            Some("other_boot")
        );
        assert_eq!(
            label(&header(|t| t.netns.ino += 1), at(1)),
            Some("other_netns")
        );
        assert_eq!(
            label(&header(|t| t.netns.cookie = 99), at(1)),
            Some("other_netns"),
            "a reused inode number is still another namespace"
        );
        assert_eq!(
            label(&header(|t| t.netns.cookie = 0), at(1)),
            None,
            "no cookie known: device and inode decide"
        );
        assert_eq!(
            label(&header(|t| t.node_name = "node-b".into()), at(1)),
            Some("other_node")
        );
        assert_eq!(
            label(&header(|t| t.mode = DumpMode::Zero), at(1)),
            Some("other_mode")
        );
        assert_eq!(
            label(&header(|t| t.key_scheme ^= 1), at(1)),
            Some("other_version")
        );
        let message = check(&header(|_| {}), &here(), at(700), max)
            .unwrap_err()
            .to_string();
        assert_eq!(message, "it is 700s old, more than --state-max-age 600s");
    }

    #[test]
    fn markers_date_the_gap_unless_they_describe_another_table() {
        let mut bytes = Vec::new();
        write_marker(&mut bytes, &here(), at(100)).unwrap();
        let marker = read_marker(&bytes[..]).unwrap();
        assert_eq!(marker.time, at(100));
        let gap = |marker: &Header, state: Option<&Ignored>| {
            restart_gap(marker, state, &here(), at(160)).map(|g| (g.since, g.reason))
        };
        assert_eq!(gap(&marker, None).unwrap(), (at(100), "no_state"));
        let too_old = Ignored::TooOld {
            age: Duration::from_secs(700),
            max: Duration::from_secs(600),
        };
        assert_eq!(gap(&marker, Some(&too_old)).unwrap().1, "too_old");
        let mut rebooted = marker.clone();
        rebooted.table.boot_id = "before".into();
        assert_eq!(gap(&rebooted, None).unwrap().1, "other_boot");
        let mut elsewhere = marker.clone();
        elsewhere.table.netns.ino += 1;
        assert_eq!(
            gap(&elsewhere, None).unwrap_err().metric_label(),
            "other_netns"
        );
        let mut damaged = bytes.clone();
        damaged[30] ^= 1;
        assert!(read_marker(&damaged[..]).is_err());
    }
}
