//! What ClickHouse must hold, derived independently of netmeter's code, and what it holds: per
//! observing node, local workload, remote workload, direction and class, the bytes, packets and
//! dollars. The expectation comes from the kernel's counters of every connection the traffic
//! driver made ([`crate::kernel`]), who held each address at the time (the mini-cluster's own
//! record) and the README's rules:
//!
//! - the local endpoint is the one on the observing node; a connection between two endpoints of
//!   one node is recorded once, from the source's side; one between nodes by both nodes;
//! - `out` is what the local endpoint sent, `in` what it received; a direction without packets
//!   has no record;
//! - classes: same node `INTRA_NODE`, same zone `INTRA_ZONE`, other zone `INTER_ZONE`, the
//!   internet host `INTERNET`, S3 in the cluster's region `INTRA_REGION`;
//! - prices ($/GiB, AWS list prices in us-east-1): `INTER_ZONE` 0.01 each way, `INTERNET` 0.09
//!   out, free in; the rest free;
//! - paths ([`crate::minicluster::RULES`]): traffic from zone us-east-1a to a public address
//!   other than S3 takes the NAT gateway, $0.045/GiB processed each way, on top; its records
//!   name the path.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::kernel::Counted;
use crate::minicluster::{
    Holder, INTERNET_HOST, MiniCluster, NAT_PATH, NAT_PROCESSING, REGION, ZONES,
};
use crate::traffic::Traffic;

/// One line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The observing node (the record's `local_node`).
    pub node: String,
    pub local: String,
    pub remote: String,
    pub direction: String,
    pub class: String,
    /// The priced path (NAT gateway) the traffic took; empty: none.
    pub path: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub bytes: u64,
    pub packets: u64,
    /// Transfer plus processing.
    pub cost_usd: f64,
    /// The path's processing charge (part of `cost_usd`).
    pub processing_usd: f64,
}

pub type Ledger = BTreeMap<Key, Totals>;

const GIB: f64 = (1u64 << 30) as f64;

/// `namespace/kind/name` for a workload, `node/<name>` for a node's own address, the cloud
/// service for S3, the address for the internet host: how [`STORED_SQL`] names endpoints too.
fn label(holder: &Holder) -> String {
    match holder {
        Holder::Pod { pod, .. } => format!(
            "{}/{}/{}",
            pod.workload.namespace, pod.workload.kind, pod.workload.name
        ),
        Holder::Node(node) => format!("node/{}", node.name),
        Holder::S3 => format!("aws/{REGION}/S3"),
        Holder::Internet => format!("ip/::ffff:{INTERNET_HOST}"),
    }
}

fn zone(holder: &Holder) -> Option<&'static str> {
    match holder {
        Holder::Pod { zone, .. } => Some(zone),
        Holder::Node(node) => Some(node.zone),
        Holder::Internet | Holder::S3 => None,
    }
}

/// The class, the transfer price and the path with its processing price the README promises
/// between `local` and `remote` ($/GiB out and in).
struct Price {
    class: &'static str,
    transfer: (f64, f64),
    path: &'static str,
    processing: (f64, f64),
}

fn price(local: &Holder, remote: &Holder) -> anyhow::Result<Price> {
    let (class, out, inbound) = class_and_price(local, remote)?;
    let through_nat = matches!(remote, Holder::Internet) && zone(local) == Some(ZONES[0]);
    let (path, processing) = if through_nat {
        (NAT_PATH, (NAT_PROCESSING, NAT_PROCESSING))
    } else {
        ("", (0.0, 0.0))
    };
    Ok(Price {
        class,
        transfer: (out, inbound),
        path,
        processing,
    })
}

/// The class and the transfer $/GiB (out, in) between `local` and `remote`.
fn class_and_price(local: &Holder, remote: &Holder) -> anyhow::Result<(&'static str, f64, f64)> {
    Ok(match (remote, zone(local), zone(remote)) {
        (Holder::Internet, ..) => ("INTERNET", 0.09, 0.0),
        (Holder::S3, ..) => ("INTRA_REGION", 0.0, 0.0),
        (_, Some(_), Some(_)) if local.node() == remote.node() => ("INTRA_NODE", 0.0, 0.0),
        (_, Some(a), Some(b)) if a == b => ("INTRA_ZONE", 0.0, 0.0),
        (_, Some(_), Some(_)) => ("INTER_ZONE", 0.01, 0.01),
        _ => bail!("no class for {local:?} -> {remote:?}"),
    })
}

/// The expected ledger for the connections the kernel counted. Every counted connection must
/// be one the driver made, and every connection the driver made must have been counted.
pub fn expected(
    cluster: &MiniCluster,
    traffic: &Traffic,
    counted: &[Counted],
) -> anyhow::Result<Ledger> {
    let mut ledger = Ledger::new();
    let mut seen = std::collections::HashSet::new();
    for c in counted {
        let e = &c.entry;
        let sent = traffic
            .find(e.protocol, e.orig.src_addr(), e.orig.dst_addr())
            .with_context(|| format!("node {} counted a connection nobody made: {e:?}", c.node))?;
        seen.insert((sent.protocol, sent.local, sent.peer));
        let at = sent.started_ms;
        let holder = |ip| {
            cluster
                .holder_at(ip, at)
                .with_context(|| format!("nobody held {ip} at {at}"))
        };
        // After a Service DNAT the reply's source is the real backend.
        let (src, dst) = (holder(e.orig.src)?, holder(e.reply.src)?);
        let on_node = |h: &Holder| h.node() == Some(c.node.as_str());
        let (local, remote, local_is_src) = if on_node(&src) {
            (&src, &dst, true)
        } else if on_node(&dst) {
            (&dst, &src, false)
        } else {
            bail!(
                "node {} counted a connection of neither of its endpoints: {e:?}",
                c.node
            );
        };
        let price = price(local, remote)?;
        let (out, inbound) = if local_is_src {
            (&e.orig, &e.reply)
        } else {
            (&e.reply, &e.orig)
        };
        for (direction, tuple, transfer, processing) in [
            ("out", out, price.transfer.0, price.processing.0),
            ("in", inbound, price.transfer.1, price.processing.1),
        ] {
            if tuple.packets == 0 && tuple.bytes == 0 {
                continue;
            }
            let totals = ledger
                .entry(Key {
                    node: c.node.clone(),
                    local: label(local),
                    remote: label(remote),
                    direction: direction.into(),
                    class: price.class.into(),
                    path: price.path.into(),
                })
                .or_default();
            totals.bytes += tuple.bytes;
            totals.packets += tuple.packets;
            let processing = tuple.bytes as f64 / GIB * processing;
            totals.cost_usd += tuple.bytes as f64 / GIB * transfer + processing;
            totals.processing_usd += processing;
        }
    }
    let unseen: Vec<_> = traffic
        .log
        .iter()
        .filter(|s| !seen.contains(&(s.protocol, s.local, s.peer)))
        .collect();
    if !unseen.is_empty() {
        bail!("the kernel counted no connection for {unseen:#?}");
    }
    Ok(ledger)
}

/// The same ledger from `{table} FINAL` of cluster `{cluster}` since `{since}` (multicast left
/// out, like the kernel side).
pub const STORED_SQL: &str = "
SELECT local_node,
       multiIf(local_workload_name != '', concat(local_namespace, '/', local_workload_kind, '/', local_workload_name),
               local_host_network, concat('node/', local_node),
               concat('ip/', toString(local_ip))) AS local,
       multiIf(remote_workload_name != '', concat(remote_namespace, '/', remote_workload_kind, '/', remote_workload_name),
               remote_host_network, concat('node/', remote_node),
               remote_service != '', concat(remote_cloud, '/', remote_region, '/', remote_service),
               concat('ip/', toString(remote_ip))) AS remote,
       direction, class, path, sum(bytes), sum(packets), sum(cost_usd), sum(processing_cost_usd)
FROM {db}.{table} FINAL
WHERE cluster = '{cluster}' AND {since} AND class != 'MULTICAST'
GROUP BY ALL
ORDER BY ALL";

/// Where [`stored`] reads the ledger from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredIn {
    /// The records (`flows`), from `since_ms` on.
    Records,
    /// The per-connection detail (`connection_minutes`), from the minute of `since_ms` on.
    Detail,
}

/// Reads the stored ledger of `cluster` from database `db`, records from `since_ms` on.
pub async fn stored(
    client: &clickhouse::Client,
    db: &str,
    (cluster, since_ms): (&str, u64),
    table: StoredIn,
) -> anyhow::Result<Ledger> {
    let (table, since) = match table {
        StoredIn::Records => ("flows", format!("interval_start_unix_ms >= {since_ms}")),
        StoredIn::Detail => (
            "connection_minutes",
            format!(
                "interval_start >= toStartOfMinute(fromUnixTimestamp64Milli(toInt64({since_ms}), 'UTC'))"
            ),
        ),
    };
    let sql = STORED_SQL
        .replace("{db}", db)
        .replace("{table}", table)
        .replace("{cluster}", cluster)
        .replace("{since}", &since);
    let text = crate::clickhouse::query_text_checked(client, &sql, "TabSeparated").await?;
    let mut ledger = Ledger::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [
            node,
            local,
            remote,
            direction,
            class,
            path,
            bytes,
            packets,
            cost,
            processing,
        ] = f[..]
        else {
            bail!("unexpected row {line:?}");
        };
        ledger.insert(
            Key {
                node: node.into(),
                local: local.into(),
                remote: remote.into(),
                direction: direction.into(),
                class: class.into(),
                path: path.into(),
            },
            Totals {
                bytes: bytes.parse()?,
                packets: packets.parse()?,
                cost_usd: cost.parse()?,
                processing_usd: processing.parse()?,
            },
        );
    }
    Ok(ledger)
}

/// `None` when the ledgers agree (bytes and packets exactly, dollars to 1e-9 relative), else
/// the lines that differ.
pub fn difference(expected: &Ledger, stored: &Ledger) -> Option<String> {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<&Key> = expected.keys().chain(stored.keys()).collect();
    for key in keys {
        let (e, s) = (expected.get(key), stored.get(key));
        let same = match (e, s) {
            (Some(e), Some(s)) => {
                e.bytes == s.bytes
                    && e.packets == s.packets
                    && (e.cost_usd - s.cost_usd).abs() <= 1e-9 * e.cost_usd.abs().max(1e-9)
                    && (e.processing_usd - s.processing_usd).abs()
                        <= 1e-9 * e.processing_usd.abs().max(1e-9)
            }
            _ => false,
        };
        if !same {
            let _ = writeln!(out, "{key:?}: expected {e:?}, stored {s:?}");
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The sum of the ledger's bytes.
pub fn total_bytes(ledger: &Ledger) -> u64 {
    ledger.values().map(|t| t.bytes).sum()
}

/// Application bytes and kernel bytes of one line of the traffic matrix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overhead {
    pub label: &'static str,
    pub connections: u64,
    /// Payload written and read back by the driver, both ways.
    pub application: u64,
    /// What the kernel counted for the same connections (IP and TCP/UDP headers, handshakes
    /// and acknowledgements included), both ways, on one node.
    pub wire: u64,
}

/// Per line of the traffic matrix, the header overhead: kernel bytes against application
/// bytes, each connection counted once (on its client's node).
pub fn overhead(traffic: &Traffic, counted: &[Counted]) -> Vec<Overhead> {
    let mut lines: Vec<Overhead> = Vec::new();
    for sent in &traffic.log {
        let wire = counted
            .iter()
            .find(|c| c.entry.protocol == sent.protocol && c.entry.orig.src_addr() == sent.local)
            .map_or(0, |c| c.entry.orig.bytes + c.entry.reply.bytes);
        let at = match lines.iter().position(|l| l.label == sent.label) {
            Some(at) => at,
            None => {
                lines.push(Overhead {
                    label: sent.label,
                    ..Overhead::default()
                });
                lines.len() - 1
            }
        };
        let line = &mut lines[at];
        line.connections += 1;
        line.application += sent.sent + sent.received;
        line.wire += wire;
    }
    lines
}

/// What [`verify`] found.
#[derive(Debug)]
pub struct Verified {
    pub expected: Ledger,
    pub counted: Vec<Counted>,
    /// How long ClickHouse took to hold it all.
    pub waited: std::time::Duration,
}

/// Checks the end-to-end promise for the traffic so far: ClickHouse (database `db`, records of
/// `cluster_name` from `since_ms` on) holds exactly what the kernel counted for every connection
/// the driver made, line by line, within `timeout`; and no record id is there twice.
pub async fn verify(
    client: &clickhouse::Client,
    db: &str,
    cluster_name: &str,
    since_ms: u64,
    (cluster, traffic, kernel): (&MiniCluster, &Traffic, &crate::kernel::KernelCounters),
    timeout: std::time::Duration,
) -> anyhow::Result<Verified> {
    let started = std::time::Instant::now();
    // The kernel is read again on every round: packets still in flight when the traffic ended
    // (a last ACK, a datagram in a queue) reach both its counters and, later, ClickHouse, so
    // the two are compared once both have them, not against an early reading.
    let (counted, expected) = loop {
        crate::interrupt::check()?;
        let counted = kernel.snapshot()?;
        let expected = expected(cluster, traffic, &counted)?;
        let stored = stored(client, db, (cluster_name, since_ms), StoredIn::Records).await?;
        match difference(&expected, &stored) {
            None => break (counted, expected),
            Some(diff) if started.elapsed() > timeout => {
                let mut twice = stored_twice(client, db, cluster_name, since_ms).await?;
                if twice.trim().is_empty() {
                    twice = "none\n".into();
                }
                bail!(
                    "ClickHouse does not hold what the kernel counted after {timeout:?}:\n{diff}\
                     records of one connection, direction and interval stored under several ids:\n{twice}"
                )
            }
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    };
    let waited = started.elapsed();
    let sql = format!(
        "SELECT count() - uniqExact(record_id) FROM {db}.flows FINAL \
         WHERE cluster = '{cluster_name}' AND interval_start_unix_ms >= {since_ms}"
    );
    let duplicates = crate::clickhouse::query_text_checked(client, &sql, "TabSeparated").await?;
    if duplicates.trim() != "0" {
        bail!("{} record ids are stored twice", duplicates.trim());
    }
    Ok(Verified {
        expected,
        counted,
        waited,
    })
}

/// Diagnosis for a failed [`verify`]: the same connection, direction and interval stored under
/// more than one record id (the first few).
async fn stored_twice(
    client: &clickhouse::Client,
    db: &str,
    cluster: &str,
    since_ms: u64,
) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT local_node, toString(local_ip), local_port, toString(remote_ip), remote_port, \
                direction, interval_start_unix_ms, groupArray((toString(record_id), generation, bytes)) \
         FROM {db}.flows FINAL \
         WHERE cluster = '{cluster}' AND interval_start_unix_ms >= {since_ms} \
         GROUP BY ALL HAVING count() > 1 LIMIT 10"
    );
    crate::clickhouse::query_text_checked(client, &sql, "TabSeparated").await
}
