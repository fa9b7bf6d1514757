//! The per-connection state of the delta tracker: a flat open-addressing table of 32-byte
//! slots, sized to the number of connections rather than to a power of two, so a million
//! connections take 37-56 MiB instead of the ~82 MiB of a `std` HashMap of the same values.
//!
//! Keys are already uniform 64-bit hashes, so the home slot is `key * capacity >> 64` and
//! collisions are resolved by linear probing; deletion shifts followers back (no tombstones).
//! Key 0 marks an empty slot; a real key of 0 is stored as 1 (two keys colliding there is a
//! 2^-63 event).

/// Grow when this share of the slots is used; probing stays short below it.
const MAX_LOAD: f64 = 0.85;
/// Load after [`ConnectionTable::reserve`]: room to grow before the next resize.
const RESERVE_LOAD: f64 = 0.7;
const MIN_CAPACITY: usize = 1024;

/// What the tracker keeps per connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionState {
    pub orig_bytes: u64,
    /// Reply bytes modulo 2^48 (256 TiB per interval is out of reach).
    pub reply_bytes: u64,
    /// Packet counts modulo 2^32 (4 billion packets per interval is out of reach).
    pub orig_packets: u32,
    pub reply_packets: u32,
    /// Generation of the last dump that listed the connection, modulo 2^16.
    pub seen: u16,
}

/// Reply bytes are kept modulo 2^48.
pub const REPLY_BYTES_MASK: u64 = (1 << 48) - 1;

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    orig_bytes: u64,
    /// Low 48 bits: reply bytes; high 16 bits: `seen`.
    reply_bytes_seen: u64,
    orig_packets: u32,
    reply_packets: u32,
}

impl Slot {
    fn new(key: u64, state: &ConnectionState) -> Slot {
        Slot {
            key,
            orig_bytes: state.orig_bytes,
            reply_bytes_seen: (state.reply_bytes & REPLY_BYTES_MASK)
                | (u64::from(state.seen) << 48),
            orig_packets: state.orig_packets,
            reply_packets: state.reply_packets,
        }
    }

    fn state(&self) -> ConnectionState {
        ConnectionState {
            orig_bytes: self.orig_bytes,
            reply_bytes: self.reply_bytes_seen & REPLY_BYTES_MASK,
            orig_packets: self.orig_packets,
            reply_packets: self.reply_packets,
            seen: (self.reply_bytes_seen >> 48) as u16,
        }
    }
}

pub struct ConnectionTable {
    slots: Vec<Slot>,
    len: usize,
}

impl Default for ConnectionTable {
    fn default() -> Self {
        ConnectionTable {
            slots: vec![Slot::default(); MIN_CAPACITY],
            len: 0,
        }
    }
}

fn stored(key: u64) -> u64 {
    key.max(1)
}

impl ConnectionTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the slots.
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
    }

    fn home(&self, key: u64) -> usize {
        ((u128::from(key) * self.slots.len() as u128) >> 64) as usize
    }

    fn find(&self, key: u64) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            match self.slots[i].key {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) % self.slots.len(),
            }
        }
    }

    pub fn get(&self, key: u64) -> Option<ConnectionState> {
        self.find(stored(key)).map(|i| self.slots[i].state())
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: u64, state: &ConnectionState) {
        let key = stored(key);
        if let Some(i) = self.find(key) {
            self.slots[i] = Slot::new(key, state);
            return;
        }
        if (self.len + 1) as f64 > self.slots.len() as f64 * MAX_LOAD {
            self.grow();
        }
        let mut i = self.home(key);
        while self.slots[i].key != 0 {
            i = (i + 1) % self.slots.len();
        }
        self.slots[i] = Slot::new(key, state);
        self.len += 1;
    }

    pub fn remove(&mut self, key: u64) -> Option<ConnectionState> {
        let mut hole = self.find(stored(key))?;
        let removed = self.slots[hole].state();
        self.slots[hole] = Slot::default();
        self.len -= 1;
        // Shift back followers whose home is not between the hole and their slot.
        let n = self.slots.len();
        let mut j = (hole + 1) % n;
        while self.slots[j].key != 0 {
            let home = self.home(self.slots[j].key);
            let distance_to_home = (j + n - home) % n;
            let distance_to_hole = (j + n - hole) % n;
            if distance_to_home >= distance_to_hole {
                self.slots[hole] = self.slots[j];
                self.slots[j] = Slot::default();
                hole = j;
            }
            j = (j + 1) % n;
        }
        Some(removed)
    }

    /// Every connection, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, ConnectionState)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != 0)
            .map(|s| (s.key, s.state()))
    }

    /// Removes every connection for which `keep` is false, passing it to `removed`.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&ConnectionState) -> bool,
        mut removed: impl FnMut(u64, ConnectionState),
    ) {
        let gone: Vec<u64> = self
            .slots
            .iter()
            .filter(|s| s.key != 0 && !keep(&s.state()))
            .map(|s| s.key)
            .collect();
        for key in gone {
            if let Some(state) = self.remove(key) {
                removed(key, state);
            }
        }
    }

    /// Makes room for `connections` so that inserting them does not grow the table. Growing
    /// holds the old and the new slots at once; sizing the table before a dump of a known
    /// table size (the kernel's conntrack count) avoids that peak when it is still empty.
    pub fn reserve(&mut self, connections: usize) {
        if connections as f64 > self.slots.len() as f64 * MAX_LOAD {
            self.resize((connections as f64 / RESERVE_LOAD) as usize);
        }
    }

    fn grow(&mut self) {
        self.resize(self.slots.len() * 3 / 2);
    }

    fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(MIN_CAPACITY);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); capacity]);
        self.len = 0;
        for slot in old.into_iter().filter(|s| s.key != 0) {
            let state = slot.state();
            self.insert(slot.key, &state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn state(n: u64) -> ConnectionState {
        ConnectionState {
            orig_bytes: n,
            reply_bytes: n * 3,
            orig_packets: n as u32,
            reply_packets: (n * 2) as u32,
            seen: n as u16,
        }
    }

    /// A deterministic stream of uniform keys (xorshift).
    fn keys(count: usize) -> Vec<u64> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..count)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    }

    #[test]
    fn slots_are_32_bytes() {
        assert_eq!(size_of::<Slot>(), 32);
    }

    #[test]
    fn behaves_like_a_map_through_growth_and_removals() {
        let mut table = ConnectionTable::default();
        let mut model = HashMap::new();
        let keys = keys(50_000);
        for (n, key) in keys.iter().enumerate() {
            table.insert(*key, &state(n as u64));
            model.insert(*key, state(n as u64));
        }
        for key in keys.iter().step_by(3) {
            assert_eq!(table.remove(*key), model.remove(key));
        }
        assert_eq!(table.remove(12345), None);
        for (n, key) in keys.iter().enumerate().step_by(7) {
            table.insert(*key, &state(n as u64 + 1));
            model.insert(*key, state(n as u64 + 1));
        }
        assert_eq!(table.len(), model.len());
        for key in &keys {
            assert_eq!(table.get(*key), model.get(key).copied(), "key {key}");
        }
        let mut gone = 0;
        table.retain(|s| s.orig_bytes % 2 == 0, |_, _| gone += 1);
        model.retain(|_, s| s.orig_bytes % 2 == 0);
        assert_eq!((table.len(), gone > 0), (model.len(), true));
        for key in &keys {
            assert_eq!(table.get(*key), model.get(key).copied());
        }
    }

    #[test]
    fn reply_bytes_wrap_at_48_bits_and_key_zero_works() {
        let mut table = ConnectionTable::default();
        let big = ConnectionState {
            reply_bytes: (1 << 48) + 5,
            seen: u16::MAX,
            ..Default::default()
        };
        table.insert(0, &big);
        let back = table.get(0).unwrap();
        assert_eq!((back.reply_bytes, back.seen), (5, u16::MAX));
    }

    #[test]
    fn reserve_sizes_the_table_once() {
        let mut table = ConnectionTable::default();
        table.reserve(1_000_000);
        let reserved = table.allocated_bytes();
        for key in keys(1_000_000) {
            table.insert(key, &ConnectionState::default());
        }
        assert_eq!(table.allocated_bytes(), reserved, "no growth while filling");
        assert!(reserved <= 46 << 20, "{reserved} bytes");
        table.reserve(10); // never shrinks
        assert_eq!(table.allocated_bytes(), reserved);
    }

    #[test]
    fn a_million_connections_fit_in_56_mib() {
        let mut table = ConnectionTable::default();
        for key in keys(1_000_000) {
            table.insert(key, &ConnectionState::default());
        }
        assert_eq!(table.len(), 1_000_000);
        assert!(
            table.allocated_bytes() <= 56 << 20,
            "{} bytes",
            table.allocated_bytes()
        );
    }
}
