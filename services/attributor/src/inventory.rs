//! Who held which IP address, and when: the time-correct half of attribution.
//!
//! Pod IPs are reused (a pod is deleted, a new one gets its address), so an address is mapped
//! to a list of [`Tenure`]s with validity intervals, and a delta is attributed to the owner that
//! held the address during the delta's interval. A grace period covers clock skew and traffic
//! that trails a deleted pod (TIME_WAIT, late final deltas), but never reaches into a
//! neighbouring tenure of the same address.
//!
//! Tenures come from the Kubernetes index of every replica and from the inventory topic
//! (which persists them for restarts and replays); [`IpOwnerHistory::record`] merges them
//! idempotently, so the same tenure arriving twice, or from two replicas, changes nothing.

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::Arc;

use netmeter_proto::inventory as wire;

/// What kind of thing held an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    Pod,
    /// A node's own address: node processes and hostNetwork pods.
    Node,
    /// A Service ClusterIP (seen when traffic to it was not DNATed on the observing node).
    Service,
    /// An EndpointSlice address that is not a pod (a selector-less Service's backend).
    Endpoint,
    /// A host from the static inventory file.
    Static,
}

impl OwnerKind {
    pub fn name(self) -> &'static str {
        match self {
            OwnerKind::Pod => "pod",
            OwnerKind::Node => "node",
            OwnerKind::Service => "service",
            OwnerKind::Endpoint => "endpoint",
            OwnerKind::Static => "static",
        }
    }

    fn parse(name: &str) -> Option<OwnerKind> {
        [
            OwnerKind::Pod,
            OwnerKind::Node,
            OwnerKind::Service,
            OwnerKind::Endpoint,
            OwnerKind::Static,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// The holder of an address, with everything a flow record says about an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    /// Pod, node, Service or host name.
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub zone: String,
    pub region: String,
    pub cloud: String,
    pub workload_kind: String,
    pub workload_name: String,
    pub app: String,
    pub host_network: bool,
    pub instance_type: String,
    pub instance_id: String,
}

impl Owner {
    pub fn new(kind: OwnerKind, name: impl Into<String>) -> Owner {
        Owner {
            kind,
            name: name.into(),
            namespace: String::new(),
            node: String::new(),
            zone: String::new(),
            region: String::new(),
            cloud: String::new(),
            workload_kind: String::new(),
            workload_name: String::new(),
            app: String::new(),
            host_network: false,
            instance_type: String::new(),
            instance_id: String::new(),
        }
    }

    /// The pod name, for pods only (a node's name is already in `node`).
    pub fn pod(&self) -> &str {
        if self.kind == OwnerKind::Pod {
            &self.name
        } else {
            ""
        }
    }
}

/// One owner's hold on one address. `end_ms == None` while it still holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenure {
    pub ip: IpAddr,
    /// uid of the Kubernetes object, or `static/<name>`.
    pub uid: String,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub owner: Arc<Owner>,
}

/// Why a tenure from the inventory topic was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TenureError {
    #[error("inventory record has an invalid IP address {0:?}")]
    Ip(String),
    #[error("inventory record for {0} has no owner")]
    NoOwner(String),
    #[error("inventory record for {ip} has an unknown owner kind {kind:?}")]
    Kind { ip: String, kind: String },
}

impl Tenure {
    pub fn to_wire(&self) -> wire::IpTenure {
        let o = &self.owner;
        wire::IpTenure {
            ip: self.ip.to_string(),
            owner_uid: self.uid.clone(),
            start_unix_ms: self.start_ms,
            end_unix_ms: self.end_ms.unwrap_or(0),
            owner: Some(wire::Owner {
                kind: o.kind.name().into(),
                name: o.name.clone(),
                namespace: o.namespace.clone(),
                node: o.node.clone(),
                zone: o.zone.clone(),
                region: o.region.clone(),
                cloud: o.cloud.clone(),
                workload_kind: o.workload_kind.clone(),
                workload_name: o.workload_name.clone(),
                app: o.app.clone(),
                host_network: o.host_network,
                instance_type: o.instance_type.clone(),
                instance_id: o.instance_id.clone(),
            }),
        }
    }

    pub fn from_wire(t: wire::IpTenure) -> Result<Tenure, TenureError> {
        let ip = t.ip.parse().map_err(|_| TenureError::Ip(t.ip.clone()))?;
        let o = t.owner.ok_or_else(|| TenureError::NoOwner(t.ip.clone()))?;
        let kind = OwnerKind::parse(&o.kind).ok_or_else(|| TenureError::Kind {
            ip: t.ip.clone(),
            kind: o.kind.clone(),
        })?;
        Ok(Tenure {
            ip,
            uid: t.owner_uid,
            start_ms: t.start_unix_ms,
            end_ms: (t.end_unix_ms != 0).then_some(t.end_unix_ms),
            owner: Arc::new(Owner {
                kind,
                name: o.name,
                namespace: o.namespace,
                node: o.node,
                zone: o.zone,
                region: o.region,
                cloud: o.cloud,
                workload_kind: o.workload_kind,
                workload_name: o.workload_name,
                app: o.app,
                host_network: o.host_network,
                instance_type: o.instance_type,
                instance_id: o.instance_id,
            }),
        })
    }

    /// The inventory topic key: a later record with the same key replaces the earlier one.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ip, self.uid)
    }
}

/// The tenures of one address, sorted by start. Almost every address has had one owner, so
/// that one is stored inline: a lookup then touches the hash table and nothing else.
#[derive(Debug)]
enum Tenures {
    One(Tenure),
    Many(Vec<Tenure>),
}

impl Tenures {
    fn as_slice(&self) -> &[Tenure] {
        match self {
            Tenures::One(t) => std::slice::from_ref(t),
            Tenures::Many(v) => v,
        }
    }

    fn into_vec(self) -> Vec<Tenure> {
        match self {
            Tenures::One(t) => vec![t],
            Tenures::Many(v) => v,
        }
    }

    fn from_vec(mut v: Vec<Tenure>) -> Tenures {
        if v.len() == 1 {
            Tenures::One(v.pop().expect("one"))
        } else {
            Tenures::Many(v)
        }
    }
}

/// What [`IpOwnerHistory::record`] did with a tenure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    New,
    Changed,
    Unchanged,
}

/// IP -> the owners it had over time, plus the latest known place of every node.
///
/// FxHash, not SipHash: two lookups per delta dominate enrichment, and keys are only ever
/// inserted from the Kubernetes API (a flow's address is looked up, never inserted), so there
/// is no hash-flooding input.
#[derive(Debug, Default)]
pub struct IpOwnerHistory {
    by_ip: FxHashMap<IpAddr, Tenures>,
    nodes: FxHashMap<String, Arc<Owner>>,
    grace_ms: u64,
}

impl IpOwnerHistory {
    pub fn new(grace_ms: u64) -> Self {
        IpOwnerHistory {
            grace_ms,
            ..Default::default()
        }
    }

    /// Merges a tenure. For the same (ip, uid): the earliest start wins, the earliest end wins
    /// (the first observer of a deletion is the most accurate), and the owner is replaced by
    /// the newer one (labels or the node's zone may have been learned later).
    pub fn record(&mut self, tenure: Tenure) -> Recorded {
        if tenure.owner.kind == OwnerKind::Node {
            self.nodes
                .insert(tenure.owner.node.clone(), tenure.owner.clone());
        }
        let slot = self
            .by_ip
            .entry(tenure.ip)
            .or_insert_with(|| Tenures::Many(Vec::new()));
        let mut tenures = std::mem::replace(slot, Tenures::Many(Vec::new())).into_vec();
        let outcome = match tenures.iter_mut().find(|t| t.uid == tenure.uid) {
            Some(existing) => {
                let merged = Tenure {
                    start_ms: existing.start_ms.min(tenure.start_ms),
                    end_ms: match (existing.end_ms, tenure.end_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                    ..tenure
                };
                if *existing == merged {
                    Recorded::Unchanged
                } else {
                    *existing = merged;
                    Recorded::Changed
                }
            }
            None => {
                tenures.push(tenure);
                Recorded::New
            }
        };
        if outcome != Recorded::Unchanged {
            tenures.sort_by_key(|t| (t.start_ms, t.end_ms.unwrap_or(u64::MAX)));
        }
        *slot = Tenures::from_vec(tenures);
        outcome
    }

    /// The owner of `ip` during `[start_ms, end_ms)`: the tenure whose validity (widened by
    /// the grace period, but never into the neighbouring tenures) overlaps the interval most;
    /// a tie goes to the later tenure.
    pub fn owner_at(&self, ip: IpAddr, start_ms: u64, end_ms: u64) -> Option<&Arc<Owner>> {
        let tenures = self.by_ip.get(&ip)?.as_slice();
        if let [only] = tenures {
            // The common case: one owner ever.
            let valid_from = only.start_ms.saturating_sub(self.grace_ms);
            let valid_to = only
                .end_ms
                .map_or(u64::MAX, |e| e.saturating_add(self.grace_ms));
            return (overlap(start_ms, end_ms, valid_from, valid_to) > 0).then_some(&only.owner);
        }
        let mut best: Option<(u64, &Tenure)> = None;
        // Each tenure reaches back by the grace period, but not into the previous tenure's
        // (grace-widened) validity: trailing traffic of the old owner stays the old owner's.
        let mut previous_valid_to = 0;
        for (i, t) in tenures.iter().enumerate() {
            let next_start = tenures.get(i + 1).map_or(u64::MAX, |n| n.start_ms);
            let valid_from = t
                .start_ms
                .saturating_sub(self.grace_ms)
                .max(previous_valid_to.min(t.start_ms));
            let valid_to = match t.end_ms {
                Some(end) => end.saturating_add(self.grace_ms).min(next_start.max(end)),
                None => u64::MAX,
            };
            previous_valid_to = valid_to;
            let covered = overlap(start_ms, end_ms, valid_from, valid_to);
            if covered > 0 && best.is_none_or(|(b, _)| covered >= b) {
                best = Some((covered, t));
            }
        }
        best.map(|(_, t)| &t.owner)
    }

    /// The latest known node object by name (its zone, region, cloud).
    pub fn node(&self, name: &str) -> Option<&Arc<Owner>> {
        self.nodes.get(name)
    }

    /// Forgets tenures that ended before `cutoff_ms` (older than anything left to replay).
    /// Returns how many were removed.
    pub fn prune(&mut self, cutoff_ms: u64) -> usize {
        let mut removed = 0;
        self.by_ip.retain(|_, slot| {
            let mut tenures = std::mem::replace(slot, Tenures::Many(Vec::new())).into_vec();
            let before = tenures.len();
            tenures.retain(|t| t.end_ms.is_none_or(|end| end >= cutoff_ms));
            removed += before - tenures.len();
            let keep = !tenures.is_empty();
            *slot = Tenures::from_vec(tenures);
            keep
        });
        removed
    }

    /// Every tenure, for re-publishing and tests.
    pub fn tenures(&self) -> impl Iterator<Item = &Tenure> {
        self.by_ip.values().flat_map(Tenures::as_slice)
    }

    pub fn len(&self) -> usize {
        self.by_ip.values().map(|t| t.as_slice().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// Length of the intersection of `[a_start, a_end)` and `[b_start, b_end)`; a zero-length
/// first interval (a point in time) counts as 1 when the point is inside.
fn overlap(a_start: u64, a_end: u64, b_start: u64, b_end: u64) -> u64 {
    if a_end <= a_start {
        return u64::from(a_start >= b_start && a_start < b_end);
    }
    a_end.min(b_end).saturating_sub(a_start.max(b_start))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn pod(name: &str, node: &str, zone: &str) -> Arc<Owner> {
        Arc::new(Owner {
            namespace: "shop".into(),
            node: node.into(),
            zone: zone.into(),
            workload_kind: "Deployment".into(),
            workload_name: name.trim_end_matches(char::is_numeric).into(),
            ..Owner::new(OwnerKind::Pod, name)
        })
    }

    fn tenure(ip: &str, uid: &str, start: u64, end: Option<u64>, owner: Arc<Owner>) -> Tenure {
        Tenure {
            ip: ip.parse().unwrap(),
            uid: uid.into(),
            start_ms: start,
            end_ms: end,
            owner,
        }
    }

    fn name_at(h: &IpOwnerHistory, ip: &str, start: u64, end: u64) -> Option<String> {
        h.owner_at(ip.parse().unwrap(), start, end)
            .map(|o| o.name.clone())
    }

    #[test]
    fn a_reused_address_is_attributed_to_whoever_held_it_at_the_time() {
        let mut h = IpOwnerHistory::new(30_000);
        h.record(tenure(
            "10.0.0.5",
            "a",
            1_000_000,
            Some(2_000_000),
            pod("a", "n1", "z1"),
        ));
        h.record(tenure(
            "10.0.0.5",
            "b",
            2_005_000,
            None,
            pod("b", "n2", "z2"),
        ));
        assert_eq!(
            name_at(&h, "10.0.0.5", 1_500_000, 1_510_000).as_deref(),
            Some("a")
        );
        // Trailing traffic of A inside the grace period, before B existed.
        assert_eq!(
            name_at(&h, "10.0.0.5", 2_001_000, 2_004_000).as_deref(),
            Some("a")
        );
        // The grace period never reaches into B's tenure.
        assert_eq!(
            name_at(&h, "10.0.0.5", 2_006_000, 2_016_000).as_deref(),
            Some("b")
        );
        // An interval across the switch goes to whoever covered more of it.
        assert_eq!(
            name_at(&h, "10.0.0.5", 2_003_000, 2_015_000).as_deref(),
            Some("b")
        );
        assert_eq!(
            name_at(&h, "10.0.0.5", 1_999_000, 2_009_000).as_deref(),
            Some("a")
        );
        assert_eq!(
            name_at(&h, "10.0.0.5", 1_990_000, 2_006_000).as_deref(),
            Some("a")
        );
        // Before anyone held it (beyond the grace period), and other addresses: nobody.
        assert_eq!(name_at(&h, "10.0.0.5", 1, 10), None);
        assert_eq!(name_at(&h, "10.0.0.6", 1_500_000, 1_510_000), None);
    }

    #[test]
    fn a_single_tenure_honours_the_grace_period_on_both_ends() {
        let mut h = IpOwnerHistory::new(30_000);
        h.record(tenure(
            "fd00::5",
            "a",
            100_000,
            Some(200_000),
            pod("a", "n1", "z1"),
        ));
        assert_eq!(name_at(&h, "fd00::5", 75_000, 80_000).as_deref(), Some("a"));
        assert_eq!(
            name_at(&h, "fd00::5", 225_000, 229_000).as_deref(),
            Some("a")
        );
        assert_eq!(name_at(&h, "fd00::5", 231_000, 240_000), None);
        assert_eq!(name_at(&h, "fd00::5", 60_000, 69_000), None);
        // A point in time.
        assert_eq!(
            name_at(&h, "fd00::5", 150_000, 150_000).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn recording_is_idempotent_and_merges_what_replicas_learned() {
        let mut h = IpOwnerHistory::new(0);
        let open = tenure("10.0.0.5", "a", 1_000, None, pod("a", "n1", ""));
        assert_eq!(h.record(open.clone()), Recorded::New);
        assert_eq!(h.record(open.clone()), Recorded::Unchanged);
        // Another replica saw the deletion; a third saw it later; a stale open copy arrives last.
        let ended = Tenure {
            end_ms: Some(5_000),
            owner: pod("a", "n1", "z1"),
            ..open.clone()
        };
        assert_eq!(h.record(ended.clone()), Recorded::Changed);
        assert_eq!(
            h.record(Tenure {
                end_ms: Some(5_300),
                ..ended.clone()
            }),
            Recorded::Unchanged
        );
        assert_eq!(
            h.record(Tenure {
                owner: pod("a", "n1", "z1"),
                ..open
            }),
            Recorded::Unchanged
        );
        assert_eq!(h.len(), 1);
        let t = h.tenures().next().unwrap();
        assert_eq!(
            (t.start_ms, t.end_ms, t.owner.zone.as_str()),
            (1_000, Some(5_000), "z1")
        );
    }

    #[test]
    fn wire_round_trip_and_pruning() {
        let mut h = IpOwnerHistory::new(0);
        let t = tenure("10.0.0.7", "uid-7", 10, Some(20), pod("c", "n1", "z1"));
        let back = Tenure::from_wire(t.to_wire()).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.key(), "10.0.0.7/uid-7");
        h.record(back);
        h.record(tenure("10.0.0.8", "uid-8", 10, None, pod("d", "n1", "z1")));
        assert_eq!(h.prune(21), 1);
        assert_eq!(h.len(), 1);
        let mut broken = t.to_wire();
        broken.ip = "10.0.0.999".into();
        assert!(
            Tenure::from_wire(broken)
                .unwrap_err()
                .to_string()
                .contains("10.0.0.999")
        );
    }
}
