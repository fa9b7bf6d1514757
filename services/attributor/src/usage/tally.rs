//! One batch's records summed per series, so the shared series are touched once per series and
//! batch: the per-record part of the usage metrics, on the attributor's hot path.

use netmeter_proto::FlowView;
use rustc_hash::FxHashMap;

use super::{WorkloadLabels, zone_label};
use crate::classify::{Class, Direction};

/// Bytes or dollars by `[class as usize][direction as usize]`.
pub(super) type ByClass<T> = [[T; 2]; Class::ALL.len()];

/// Where a record's local label strings live: (address, length) of the local namespace,
/// workload kind, workload name and zone, and the host-network flag. The strings of a batch's
/// records borrow from the inventory snapshot, the rules and the batch, which stay alive and
/// unchanged until the batch is done; so within one [`Tally`], equal spots mean equal labels,
/// and a record costs a few word compares instead of hashing its strings. Unequal spots may
/// carry equal labels (two pods of one Deployment): [`super::Series::add`] merges those.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Spot([usize; 9]);

impl std::hash::Hash for Spot {
    /// The addresses of the workload name, the namespace and the zone tell spots apart well
    /// enough; equality still compares everything.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.0[4] ^ self.0[0].rotate_left(21) ^ self.0[6].rotate_left(42));
    }
}

impl Spot {
    #[inline]
    fn of(flow: &FlowView) -> Spot {
        let local = &flow.local;
        let at = |s: &str| s.as_ptr() as usize;
        Spot([
            at(local.namespace),
            local.namespace.len(),
            at(local.workload_kind),
            local.workload_kind.len(),
            at(local.workload_name),
            local.workload_name.len(),
            at(local.zone),
            local.zone.len(),
            local.host_network as usize,
        ])
    }
}

/// One local workload's (and zone's) sums.
pub(super) struct WorkloadSums {
    pub labels: WorkloadLabels,
    /// Index into [`Tally::zones`] of the local zone.
    zone: u32,
    pub records: u64,
    pub bytes: ByClass<u64>,
    pub dollars: ByClass<f64>,
    /// Bit `class * 2 + direction` is set once a record was counted there: the series exists
    /// then, even at 0 bytes.
    pub seen: u32,
}

/// One zone pair's sums.
pub(super) struct PairSums {
    pub zone: u32,
    pub remote_zone: u32,
    /// By `direction as usize`; `None`: no record.
    pub bytes: [Option<u64>; 2],
}

/// One batch's records by series. Build a new one per batch: spots are only meaningful while
/// the batch's inventory snapshot is held.
#[derive(Default)]
pub struct Tally {
    workloads: Vec<WorkloadSums>,
    by_spot: FxHashMap<Spot, u32>,
    /// Zone labels (`"none"` for no zone), by first appearance.
    zones: Vec<String>,
    pairs: Vec<PairSums>,
    /// By `zone << 32 | remote_zone`.
    by_pair: FxHashMap<u64, u32>,
    /// Bytes sent to the internet and other clouds by the destination's country code ("" when
    /// unknown); few per batch, so a scan.
    countries: Vec<(String, u64)>,
    last: Option<Last>,
}

/// The previous record: where its strings live (the remote zone's and the class name's too),
/// and where it was counted. The `out` and `in` records of a connection follow each other.
#[derive(Clone, Copy)]
struct Last {
    spot: Spot,
    remote_zone: [usize; 2],
    class_name: [usize; 2],
    workload: u32,
    pair: u32,
    class: Class,
}

impl Tally {
    /// Counts one record.
    #[inline]
    pub fn add(&mut self, flow: &FlowView) {
        let spot = Spot::of(flow);
        let remote_spot = [flow.remote.zone.as_ptr() as usize, flow.remote.zone.len()];
        let (workload, pair, class) = match self.last {
            // The `out` and `in` records of a connection: same labels, same class.
            Some(last)
                if last.spot == spot
                    && last.remote_zone == remote_spot
                    && last.class_name == [flow.class.as_ptr() as usize, flow.class.len()] =>
            {
                (last.workload, last.pair, last.class)
            }
            _ => {
                let Some(class) = Class::from_name(flow.class) else {
                    debug_assert!(false, "a record of class {:?}", flow.class);
                    return;
                };
                let workload = self.workload(spot, flow);
                let zone = self.workloads[workload as usize].zone;
                let remote_zone = self.zone(flow.remote.zone);
                let pair = self.pair(zone, remote_zone);
                self.last = Some(Last {
                    spot,
                    remote_zone: remote_spot,
                    class_name: [flow.class.as_ptr() as usize, flow.class.len()],
                    workload,
                    pair,
                    class,
                });
                (workload, pair, class)
            }
        };
        let direction = match flow.direction.as_bytes() {
            b"out" => Direction::Out,
            _ => Direction::In,
        };
        let sums = &mut self.workloads[workload as usize];
        debug_assert_eq!(
            (
                &sums.labels,
                self.zones[sums.zone as usize].as_str(),
                class.name()
            ),
            (
                &WorkloadLabels::of(&flow.local),
                zone_label(flow.local.zone),
                flow.class
            ),
            "a spot changed labels within one batch"
        );
        let (c, d) = (class as usize, direction as usize);
        sums.records += 1;
        sums.bytes[c][d] += flow.bytes;
        sums.dollars[c][d] += flow.cost_usd;
        sums.seen |= 1 << (c * 2 + d);
        *self.pairs[pair as usize].bytes[d].get_or_insert(0) += flow.bytes;
        if direction == Direction::Out && matches!(class, Class::Internet | Class::InterCloud) {
            let country = flow.remote_geo.country;
            match self.countries.iter_mut().find(|(c, _)| c == country) {
                Some((_, bytes)) => *bytes += flow.bytes,
                None => self.countries.push((country.to_string(), flow.bytes)),
            }
        }
    }

    fn workload(&mut self, spot: Spot, flow: &FlowView) -> u32 {
        if let Some(&at) = self.by_spot.get(&spot) {
            return at;
        }
        let zone = self.zone(flow.local.zone);
        let at = self.workloads.len() as u32;
        self.workloads.push(WorkloadSums {
            labels: WorkloadLabels::of(&flow.local),
            zone,
            records: 0,
            bytes: Default::default(),
            dollars: Default::default(),
            seen: 0,
        });
        self.by_spot.insert(spot, at);
        at
    }

    fn zone(&mut self, zone: &str) -> u32 {
        let label = zone_label(zone);
        // Zones are few: a scan beats hashing.
        match self.zones.iter().position(|z| z == label) {
            Some(at) => at as u32,
            None => {
                self.zones.push(label.to_string());
                self.zones.len() as u32 - 1
            }
        }
    }

    fn pair(&mut self, zone: u32, remote_zone: u32) -> u32 {
        let key = (zone as u64) << 32 | remote_zone as u64;
        *self.by_pair.entry(key).or_insert_with(|| {
            self.pairs.push(PairSums {
                zone,
                remote_zone,
                bytes: [None; 2],
            });
            self.pairs.len() as u32 - 1
        })
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    /// Records counted.
    pub fn records(&self) -> u64 {
        self.workloads.iter().map(|w| w.records).sum()
    }

    pub(super) fn workloads(&self) -> &[WorkloadSums] {
        &self.workloads
    }

    pub(super) fn pairs(&self) -> &[PairSums] {
        &self.pairs
    }

    /// Bytes sent to the internet and other clouds, by country code ("": unknown).
    pub(super) fn countries(&self) -> &[(String, u64)] {
        &self.countries
    }

    /// The label of zone `index`.
    pub(super) fn zone_name(&self, index: u32) -> &str {
        &self.zones[index as usize]
    }
}
