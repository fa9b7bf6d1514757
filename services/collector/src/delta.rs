//! Turns successive conntrack readings into per-connection deltas, without touching the
//! kernel's counters (other readers on the node see what they always saw).
//!
//! A connection is keyed by a 64-bit hash of (conntrack id, zone, protocol, original tuple): a
//! reused id with another tuple is another connection. The hash is xxh3 over a fixed byte
//! layout, so keys stay the same across builds: a state saved by one collector version is read
//! by the next (std's hasher makes no such promise). Per connection we keep only what the next
//! delta needs, in a 32-byte slot of a [`ConnectionTable`], so a million connections fit in
//! under 56 MiB.
//!
//! Rules:
//! - The first dump after start is a baseline: it emits nothing (those bytes predate us).
//!   Unless the tracker continues from the state the previous process saved at shutdown
//!   ([`DeltaTracker::restored`]): then the first dump's deltas count from that state's counters.
//!   Restored connections that no dump lists again and no DESTROY event ends ended while no
//!   collector ran: they are counted ([`TrackerStats::ended_between_processes`]).
//! - A connection first seen later is new: its whole counters are its first delta.
//! - A DESTROY event emits the final delta and forgets the connection. A dump that was already
//!   running may still list it: such late sightings are ignored until a dump that started
//!   after the event has finished, so nothing is counted twice.
//! - A connection a dump no longer lists is kept for [`VANISHED_GRACE_DUMPS`] more dumps before
//!   it is forgotten: the kernel skips expired entries in a dump and destroys them *during* it,
//!   so their DESTROY event arrives after the dump that stopped listing them, and must still
//!   find the last counters (else the event's whole counters would be counted again).
//! - Counters that went down were reset by someone else (e.g. a CTRZERO reader): the delta is
//!   what accumulated since, and the reset is counted.
//! - In [`DumpMode::Zero`] the kernel zeroes on every read, so readings are the deltas.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::conntrack::{ConntrackEntry, Counters, DumpMode};
use crate::table::{ConnectionState, ConnectionTable, REPLY_BYTES_MASK};

/// What one connection transferred since its previous delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackDelta {
    pub entry: ConntrackEntry,
    pub delta: Counters,
    /// First seen since the collector's baseline.
    pub new: bool,
    /// Ended; this is its final delta.
    pub destroyed: bool,
    /// An endpoint is one of the node's own addresses (set when the delta is emitted).
    pub node_endpoint: bool,
}

/// Keys are already hashes: use them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Dumps a vanished connection is kept for, waiting for its DESTROY event.
pub const VANISHED_GRACE_DUMPS: u16 = 3;

/// Counts of what the tracker did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    pub forgotten: u64,
    pub counter_resets: u64,
    pub late_sightings_ignored: u64,
    pub without_counters: u64,
    /// Restored connections forgotten without a dump listing them again or a DESTROY event:
    /// they ended between the previous process's final dump and our first; their last bytes
    /// are unknowable.
    pub ended_between_processes: u64,
}

/// One connection of the tracker's state as it is saved across a restart ([`crate::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedConnection {
    pub key: u64,
    /// The last counters (`seen` unused).
    pub state: ConnectionState,
    /// Dumps since one last listed it: 0 for the table, 1..=[`VANISHED_GRACE_DUMPS`] for
    /// connections waiting for their DESTROY event.
    pub missed_dumps: u16,
}

pub struct DeltaTracker {
    mode: DumpMode,
    previous: ConnectionTable,
    /// Connections the last dumps did not list, kept briefly for their DESTROY event.
    vanished: KeyMap<ConnectionState>,
    /// Destroyed connections, with the generation of the dump running when they ended.
    tombstones: KeyMap<u32>,
    generation: u32,
    baseline_done: bool,
    /// The generation the state was restored at, while restored connections may still be
    /// unresolved (neither listed again nor forgotten).
    restored_at: Option<u32>,
    pub stats: TrackerStats,
}

/// The key of a connection: xxh3-64 of (id, zone, protocol, family, original tuple) laid out
/// as fixed little-endian bytes, IPv4 addresses IPv4-mapped.
pub fn key(entry: &ConntrackEntry) -> u64 {
    let mut bytes = [0u8; 44];
    bytes[0..4].copy_from_slice(&entry.id.to_le_bytes());
    bytes[4..6].copy_from_slice(&entry.zone.to_le_bytes());
    bytes[6] = entry.protocol;
    bytes[7] = if entry.is_ipv6() { 6 } else { 4 };
    let octets = |a: IpAddr| match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    bytes[8..24].copy_from_slice(&octets(entry.original.src));
    bytes[24..40].copy_from_slice(&octets(entry.original.dst));
    bytes[40..42].copy_from_slice(&entry.original.src_port.to_le_bytes());
    bytes[42..44].copy_from_slice(&entry.original.dst_port.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// A fingerprint of [`key`]: the key of a fixed connection. A saved state whose fingerprint
/// differs was keyed by another scheme and cannot be continued (every connection would look
/// new and be counted again).
pub fn key_scheme() -> u64 {
    let a = |s: &str| s.parse().expect("valid literal");
    key(&ConntrackEntry {
        protocol: 6,
        original: crate::conntrack::Tuple {
            src: a("fd00::1"),
            dst: a("10.0.0.2"),
            src_port: 40000,
            dst_port: 443,
        },
        reply: crate::conntrack::Tuple {
            src: a("10.0.0.2"),
            dst: a("fd00::1"),
            src_port: 443,
            dst_port: 40000,
        },
        id: 0x1234_5678,
        zone: 7,
        mark: 0,
        status: 0,
        counters: None,
    })
}

impl DeltaTracker {
    pub fn new(mode: DumpMode) -> Self {
        DeltaTracker {
            mode,
            previous: ConnectionTable::default(),
            vanished: KeyMap::default(),
            tombstones: KeyMap::default(),
            generation: 0,
            baseline_done: false,
            restored_at: None,
            stats: TrackerStats::default(),
        }
    }

    /// A tracker that continues from the state a previous process saved: no baseline, the
    /// first dump's deltas count from the saved counters. `connections` is how many follow
    /// (to size the table once).
    pub fn restored(
        mode: DumpMode,
        connections: usize,
        saved: impl IntoIterator<Item = SavedConnection>,
    ) -> Self {
        let mut tracker = DeltaTracker::new(mode);
        tracker.previous.reserve(connections);
        tracker.baseline_done = true;
        tracker.restored_at = Some(tracker.generation);
        let generation = tracker.generation as u16;
        for c in saved {
            let state = ConnectionState {
                seen: generation.wrapping_sub(c.missed_dumps),
                ..c.state
            };
            match c.missed_dumps {
                0 => tracker.previous.insert(c.key, &state),
                n if n <= VANISHED_GRACE_DUMPS => {
                    tracker.vanished.insert(c.key, state);
                }
                _ => {}
            }
        }
        tracker
    }

    /// The state to save at shutdown: the table and the connections waiting for their DESTROY
    /// event ([`saved_len`](Self::saved_len) of them).
    pub fn saved_connections(&self) -> impl Iterator<Item = SavedConnection> + '_ {
        let generation = self.generation as u16;
        let saved = move |key, state: ConnectionState| SavedConnection {
            key,
            state: ConnectionState { seen: 0, ..state },
            missed_dumps: generation.wrapping_sub(state.seen),
        };
        self.previous
            .iter()
            .map(move |(key, state)| saved(key, state))
            .chain(
                self.vanished
                    .iter()
                    .map(move |(key, state)| saved(*key, *state)),
            )
    }

    /// How many connections [`saved_connections`](Self::saved_connections) yields.
    pub fn saved_len(&self) -> usize {
        self.previous.len() + self.vanished.len()
    }

    /// Whether restored connections may still be unresolved: until then
    /// [`TrackerStats::ended_between_processes`] can still grow.
    pub fn restoring(&self) -> bool {
        self.restored_at.is_some()
    }

    /// Connections currently tracked.
    pub fn tracked(&self) -> usize {
        self.previous.len()
    }

    /// Sizes the state for `connections` (the kernel's conntrack count) before a dump.
    pub fn reserve(&mut self, connections: usize) {
        self.previous.reserve(connections);
    }

    /// Call before feeding a dump's entries.
    pub fn start_dump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// One entry of the running dump; the delta if it transferred anything.
    pub fn observe(&mut self, entry: &ConntrackEntry) -> Option<ConntrackDelta> {
        let Some(counters) = entry.counters else {
            self.stats.without_counters += 1;
            return None;
        };
        let key = key(entry);
        if self.tombstones.contains_key(&key) {
            self.stats.late_sightings_ignored += 1;
            return None;
        }
        let generation = self.generation;
        let baseline = !self.baseline_done;
        let zero_mode = self.mode == DumpMode::Zero;
        let mut reset = false;
        // Listed again after a dump missed it (e.g. an interrupted dump)?
        let last = self
            .previous
            .get(key)
            .or_else(|| self.vanished.remove(&key));
        self.previous.insert(key, &remember(&counters, generation));
        let (delta, new) = match last {
            Some(_) if zero_mode => (counters, false),
            Some(previous) => (since(&previous, &counters, &mut reset), false),
            None => (counters, true),
        };
        if reset {
            self.stats.counter_resets += 1;
        }
        if baseline || delta == Counters::default() {
            return None;
        }
        Some(ConntrackDelta {
            entry: *entry,
            delta,
            new,
            destroyed: false,
            node_endpoint: false,
        })
    }

    /// Call after a dump completed: connections it did not list move to `vanished`, and those
    /// vanished for longer than the grace period are forgotten.
    pub fn finish_dump(&mut self) {
        let generation = self.generation as u16;
        let vanished = &mut self.vanished;
        self.previous.retain(
            |state| state.seen == generation,
            |key, state| {
                vanished.insert(key, state);
            },
        );
        let before = self.vanished.len();
        // Dumps since the restore: a connection last listed longer ago was never listed since.
        let since_restore = self.restored_at.map(|g| self.generation.wrapping_sub(g));
        let mut ended_between_processes = 0;
        self.vanished.retain(|_, p| {
            let missed = generation.wrapping_sub(p.seen);
            let keep = missed <= VANISHED_GRACE_DUMPS;
            if !keep && since_restore.is_some_and(|dumps| u32::from(missed) >= dumps) {
                ended_between_processes += 1;
            }
            keep
        });
        self.stats.forgotten += (before - self.vanished.len()) as u64;
        self.stats.ended_between_processes += ended_between_processes;
        // Every restored connection has been listed again, ended, or been forgotten by now.
        if since_restore.is_some_and(|dumps| dumps > u32::from(VANISHED_GRACE_DUMPS)) {
            self.restored_at = None;
        }
        // A tombstone made during an earlier dump cannot be listed by any later dump.
        self.tombstones.retain(|_, made| *made == self.generation);
        self.baseline_done = true;
    }

    /// A DESTROY event with the final counters: the last delta, then forget.
    pub fn destroyed(&mut self, entry: &ConntrackEntry) -> Option<ConntrackDelta> {
        let Some(counters) = entry.counters else {
            self.stats.without_counters += 1;
            return None;
        };
        let key = key(entry);
        if self.tombstones.insert(key, self.generation).is_some() {
            return None; // the same event twice
        }
        let last = self
            .previous
            .remove(key)
            .or_else(|| self.vanished.remove(&key));
        let (delta, new) = match last {
            Some(previous) if self.mode == DumpMode::Read => {
                let mut reset = false;
                let delta = since(&previous, &counters, &mut reset);
                self.stats.counter_resets += u64::from(reset);
                (delta, false)
            }
            Some(_) => (counters, false),
            // Opened after the baseline and ended before any dump saw it.
            None if self.baseline_done => (counters, true),
            // Ended before the baseline finished: its bytes predate us, like the baseline's.
            None => return None,
        };
        // Emitted even with nothing left to count: consumers learn the connection ended.
        Some(ConntrackDelta {
            entry: *entry,
            delta,
            new,
            destroyed: true,
            node_endpoint: false,
        })
    }
}

fn remember(counters: &Counters, generation: u32) -> ConnectionState {
    ConnectionState {
        orig_bytes: counters.orig_bytes,
        reply_bytes: counters.reply_bytes & REPLY_BYTES_MASK,
        orig_packets: counters.orig_packets as u32,
        reply_packets: counters.reply_packets as u32,
        seen: generation as u16,
    }
}

/// The difference between two readings; counters that went down were reset by someone else.
fn since(previous: &ConnectionState, now: &Counters, reset: &mut bool) -> Counters {
    let now_reply = now.reply_bytes & REPLY_BYTES_MASK;
    if now.orig_bytes < previous.orig_bytes || now_reply < previous.reply_bytes {
        *reset = true;
        return *now;
    }
    Counters {
        orig_bytes: now.orig_bytes - previous.orig_bytes,
        reply_bytes: now_reply - previous.reply_bytes,
        orig_packets: u64::from((now.orig_packets as u32).wrapping_sub(previous.orig_packets)),
        reply_packets: u64::from((now.reply_packets as u32).wrapping_sub(previous.reply_packets)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Tuple;

    /// [`key_scheme`] of the current scheme.
    const KEY_SCHEME_V1: u64 = 0x7f2c_6d8e_5426_af9e;

    fn entry(id: u32, sport: u16, bytes: u64) -> ConntrackEntry {
        let a = |s: &str| s.parse().unwrap();
        ConntrackEntry {
            protocol: 6,
            original: Tuple {
                src: a("10.77.0.2"),
                dst: a("10.77.0.3"),
                src_port: sport,
                dst_port: 80,
            },
            reply: Tuple {
                src: a("10.77.0.3"),
                dst: a("10.77.0.2"),
                src_port: 80,
                dst_port: sport,
            },
            id,
            zone: 0,
            mark: 0,
            status: 0,
            counters: Some(Counters {
                orig_bytes: bytes,
                orig_packets: bytes / 100,
                reply_bytes: bytes / 10,
                reply_packets: bytes / 1000,
            }),
        }
    }

    fn dump(tracker: &mut DeltaTracker, entries: &[ConntrackEntry]) -> Vec<ConntrackDelta> {
        tracker.start_dump();
        let deltas = entries.iter().filter_map(|e| tracker.observe(e)).collect();
        tracker.finish_dump();
        deltas
    }

    fn orig_bytes(deltas: &[ConntrackDelta]) -> u64 {
        deltas.iter().map(|d| d.delta.orig_bytes).sum()
    }

    #[test]
    fn baseline_then_exact_deltas_summing_to_the_kernel_counters() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        assert!(
            dump(&mut t, &[entry(1, 1000, 5_000)]).is_empty(),
            "baseline emits nothing"
        );
        let d = dump(&mut t, &[entry(1, 1000, 7_000), entry(2, 1001, 300)]);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].delta.orig_bytes, d[0].new), (2_000, false));
        assert_eq!(
            (d[1].delta.orig_bytes, d[1].delta.reply_bytes, d[1].new),
            (300, 30, true)
        );
        assert!(
            dump(&mut t, &[entry(1, 1000, 7_000), entry(2, 1001, 300)]).is_empty(),
            "no change, no delta"
        );
        let d = dump(&mut t, &[entry(1, 1000, 9_500), entry(2, 1001, 300)]);
        assert_eq!(orig_bytes(&d), 2_500);
        // Everything entry 2 sent since the baseline was counted exactly once.
    }

    #[test]
    fn short_connection_seen_only_by_its_destroy_event_counts_once() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[]);
        let d = t.destroyed(&entry(9, 2000, 1_234)).unwrap();
        assert!(d.new && d.destroyed);
        assert_eq!(d.delta.orig_bytes, 1_234);
        assert_eq!(
            t.destroyed(&entry(9, 2000, 1_234)),
            None,
            "a repeated event is ignored"
        );
    }

    #[test]
    fn destroy_after_dumps_emits_only_the_remainder_and_late_sightings_are_ignored() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[]);
        assert_eq!(orig_bytes(&dump(&mut t, &[entry(3, 3000, 1_000)])), 1_000);
        // A dump is running when the connection ends; the dump lists it anyway.
        t.start_dump();
        let final_delta = t.destroyed(&entry(3, 3000, 1_600)).unwrap();
        assert_eq!(final_delta.delta.orig_bytes, 600);
        assert_eq!(t.observe(&entry(3, 3000, 1_600)), None);
        t.finish_dump();
        assert_eq!(t.stats.late_sightings_ignored, 1);
        assert_eq!(t.tracked(), 0);
        // Total counted: 1_000 + 600 = the kernel's final 1_600.
    }

    #[test]
    fn reused_id_with_another_tuple_is_another_connection() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[entry(5, 4000, 10_000)]);
        let d = dump(&mut t, &[entry(5, 4001, 100)]);
        assert_eq!((d.len(), d[0].new, d[0].delta.orig_bytes), (1, true, 100));
        for _ in 0..VANISHED_GRACE_DUMPS {
            dump(&mut t, &[entry(5, 4001, 100)]);
        }
        assert_eq!(
            (t.tracked(), t.stats.forgotten),
            (1, 1),
            "the vanished one is forgotten"
        );
    }

    #[test]
    fn destroy_event_after_the_dump_that_stopped_listing_it_counts_only_the_rest() {
        // The kernel evicts an expired entry during a dump and sends DESTROY afterwards.
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[]);
        assert_eq!(
            orig_bytes(&dump(&mut t, &[entry(4, 3500, 300_840)])),
            300_840
        );
        dump(&mut t, &[]); // no longer listed
        let last = t.destroyed(&entry(4, 3500, 300_840)).unwrap();
        assert_eq!(
            (last.delta, last.destroyed, last.new),
            (Counters::default(), true, false)
        );
        assert_eq!(orig_bytes(&dump(&mut t, &[entry(2, 3600, 10)])), 10);
        assert_eq!(
            t.destroyed(&entry(2, 3600, 25)).unwrap().delta.orig_bytes,
            15
        );
    }

    #[test]
    fn counters_reset_by_another_reader_count_what_accumulated_since() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[entry(6, 5000, 10_000)]);
        let d = dump(&mut t, &[entry(6, 5000, 400)]);
        assert_eq!(orig_bytes(&d), 400);
        assert_eq!(t.stats.counter_resets, 1);
    }

    #[test]
    fn zero_mode_readings_are_the_deltas() {
        let mut t = DeltaTracker::new(DumpMode::Zero);
        dump(&mut t, &[entry(7, 6000, 999)]);
        assert_eq!(orig_bytes(&dump(&mut t, &[entry(7, 6000, 250)])), 250);
        assert_eq!(
            t.destroyed(&entry(7, 6000, 50)).unwrap().delta.orig_bytes,
            50
        );
    }

    /// Saves `t` and restores it in a new tracker, as a restart does.
    fn restart(t: &DeltaTracker) -> DeltaTracker {
        let saved: Vec<SavedConnection> = t.saved_connections().collect();
        assert_eq!(saved.len(), t.saved_len());
        DeltaTracker::restored(DumpMode::Read, saved.len(), saved)
    }

    #[test]
    fn a_restored_tracker_continues_where_the_saved_one_stopped() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[entry(1, 1000, 5_000), entry(2, 1001, 100)]);
        let d = dump(&mut t, &[entry(1, 1000, 7_000), entry(2, 1001, 300)]);
        assert_eq!(orig_bytes(&d), 2_200);
        let mut r = restart(&t);
        // Not a baseline: the first dump counts what moved while no collector ran.
        let d = dump(
            &mut r,
            &[
                entry(1, 1000, 9_000),
                entry(2, 1001, 300),
                entry(3, 1002, 50),
            ],
        );
        assert_eq!(orig_bytes(&d), 2_000 + 50);
        assert_eq!(
            d.iter().map(|d| (d.entry.id, d.new)).collect::<Vec<_>>(),
            [(1, false), (3, true)]
        );
        let last = r.destroyed(&entry(2, 1001, 420)).unwrap();
        assert_eq!((last.delta.orig_bytes, last.new), (120, false));
    }

    #[test]
    fn restored_connections_never_seen_again_ended_between_processes() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(
            &mut t,
            &[entry(1, 1000, 10), entry(2, 1001, 10), entry(3, 1002, 10)],
        );
        dump(&mut t, &[entry(1, 1000, 10), entry(2, 1001, 10)]); // 3 waits for its DESTROY
        let mut r = restart(&t);
        assert_eq!(r.saved_len(), 3);
        assert!(r.restoring());
        // 1 is listed again; 2 is not, and 3's DESTROY event never comes.
        for _ in 0..=VANISHED_GRACE_DUMPS {
            dump(&mut r, &[entry(1, 1000, 10)]);
        }
        assert_eq!(r.stats.ended_between_processes, 2);
        assert!(!r.restoring());
        for _ in 0..=VANISHED_GRACE_DUMPS {
            dump(&mut r, &[]);
        }
        assert_eq!(
            (r.stats.ended_between_processes, r.stats.forgotten),
            (2, 3),
            "forgetting 1 later is ordinary"
        );
    }

    #[test]
    fn a_saved_connection_waiting_for_its_destroy_event_gets_only_the_rest() {
        // Evicted by the kernel during the final dump; the event reaches the next process.
        let mut t = DeltaTracker::new(DumpMode::Read);
        dump(&mut t, &[]);
        dump(&mut t, &[entry(4, 3500, 1_000)]);
        dump(&mut t, &[]);
        let mut r = restart(&t);
        dump(&mut r, &[]);
        let last = r.destroyed(&entry(4, 3500, 1_000)).unwrap();
        assert_eq!((last.delta, last.new), (Counters::default(), false));
        assert_eq!(r.stats.ended_between_processes, 0);
    }

    #[test]
    fn keys_do_not_change_between_builds() {
        // A saved state is read by the next collector version: changing the key scheme makes
        // every restart after an upgrade a baseline (states are refused, see state.rs).
        assert_eq!(key_scheme(), KEY_SCHEME_V1);
        let mut v6 = entry(1, 1000, 0);
        v6.original.src = "::ffff:10.77.0.2".parse().unwrap();
        assert_ne!(key(&v6), key(&entry(1, 1000, 0)), "families differ");
    }

    #[test]
    fn packet_counters_wrap_exactly() {
        let mut t = DeltaTracker::new(DumpMode::Read);
        let mut e = entry(8, 7000, 0);
        e.counters = Some(Counters {
            orig_bytes: 10,
            orig_packets: u64::from(u32::MAX) - 1,
            ..Default::default()
        });
        dump(&mut t, &[e]);
        e.counters = Some(Counters {
            orig_bytes: 20,
            orig_packets: u64::from(u32::MAX) + 3,
            ..Default::default()
        });
        assert_eq!(dump(&mut t, &[e])[0].delta.orig_packets, 4);
    }
}
