//! Where on the internet a public address is: its country (ISO 3166-1 alpha-2) and its network
//! (AS number and name), from the open `@ip-location-db` data sets (country:
//! `geo-whois-asn-country`, network: `asn`), IPv4 and IPv6.
//!
//! - `snapshot.rs`: the four parts as a dated snapshot built into the binary
//!   (`data/geo/geo.bin.zst`, see the README there): the default.
//! - `load.rs`: [`GeoTable::load`], per part the package's CSV file in `--geo-dir` if there is
//!   one, else the snapshot; and where each part came from and how old its data is.
//! - `csv.rs`: the packages' CSV files (`first,last,country` and `first,last,asn,name`).
//! - `ranges.rs`: the data's overlapping rows made disjoint (the narrowest row wins), and a
//!   family's two parts combined into one set of ranges and back.
//!
//! Lookups reuse the cloud ranges' [`IntervalTable`] (sorted intervals, a /16 index, a binary
//! search): one per address, over the family's country and network ranges combined, each
//! interval labelled with a (country, network) pair: half the searches of one table a part.

mod csv;
mod load;
mod ranges;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use load::{GeoLoaded, GeoSource, LoadedGeo, LoadedPart};

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::cloud::table::{Address, BUCKET_BITS, IntervalTable};

/// What the data says about an address; `""` and `0` where it says nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeoLabel<'a> {
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: &'a str,
    /// The AS number of the network announcing the address.
    pub asn: u32,
    /// The AS's organisation name, e.g. `Google LLC`.
    pub as_name: &'a str,
}

impl GeoLabel<'_> {
    /// Nothing known: neither a country nor a network.
    pub fn is_empty(&self) -> bool {
        self.country.is_empty() && self.asn == 0
    }
}

/// One of the four parts of the table, each read from its own file of the packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeoPart {
    CountryV4,
    CountryV6,
    NetworkV4,
    NetworkV6,
}

impl GeoPart {
    pub const ALL: [GeoPart; 4] = [
        GeoPart::CountryV4,
        GeoPart::CountryV6,
        GeoPart::NetworkV4,
        GeoPart::NetworkV6,
    ];

    /// The file's name in the npm package, and in a `--geo-dir`.
    pub fn file_name(self) -> &'static str {
        match self {
            GeoPart::CountryV4 => "geo-whois-asn-country-ipv4.csv",
            GeoPart::CountryV6 => "geo-whois-asn-country-ipv6.csv",
            GeoPart::NetworkV4 => "asn-ipv4.csv",
            GeoPart::NetworkV6 => "asn-ipv6.csv",
        }
    }

    /// The npm package that ships the file.
    pub fn package(self) -> &'static str {
        if self.is_country() {
            "@ip-location-db/geo-whois-asn-country"
        } else {
            "@ip-location-db/asn"
        }
    }

    /// `country-ipv4`, ..., for logs.
    pub fn name(self) -> &'static str {
        match self {
            GeoPart::CountryV4 => "country-ipv4",
            GeoPart::CountryV6 => "country-ipv6",
            GeoPart::NetworkV4 => "asn-ipv4",
            GeoPart::NetworkV6 => "asn-ipv6",
        }
    }

    fn is_country(self) -> bool {
        matches!(self, GeoPart::CountryV4 | GeoPart::CountryV6)
    }

    fn is_v6(self) -> bool {
        matches!(self, GeoPart::CountryV6 | GeoPart::NetworkV6)
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error(
        "{path} is not a directory: point --geo-dir at a directory holding newer CSV files of \
         the @ip-location-db packages ({}, {}, {}, {}; any of them), or leave it unset for the \
         built-in snapshot",
        GeoPart::CountryV4.file_name(), GeoPart::CountryV6.file_name(),
        GeoPart::NetworkV4.file_name(), GeoPart::NetworkV6.file_name()
    )]
    NoDirectory { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} line {line}: {reason}; expected `{}` as {} ships it",
        csv::columns(*.part), .part.package()
    )]
    Row {
        part: GeoPart,
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The countries and networks of every address. Immutable: [`GeoTable::builtin`] or
/// [`GeoTable::load`].
#[derive(Clone)]
pub struct GeoTable {
    v4: IntervalTable<u32>,
    v6: V6Table,
    /// What the intervals' labels stand for: a country and a network.
    pairs: Vec<Pair>,
    /// The country codes (`number` 0).
    countries: Labels,
    /// AS numbers and names.
    networks: Labels,
    /// Tells this table's entries in the lookup memo from another table's.
    id: u64,
}

/// A new [`GeoTable::id`].
fn next_table_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Slots of the per-thread lookup memo.
const MEMO_SLOTS: usize = 4096;

/// One remembered lookup: the table, the address (IPv4 as its mapped IPv6 form) and its pair
/// ([`NO_PAIR`]: none).
#[derive(Clone, Copy)]
struct Memo {
    table: u64,
    address: u128,
    pair: u32,
}

const NO_PAIR: u32 = u32::MAX;

thread_local! {
    /// The last lookups of this thread, direct-mapped by address. A node talks to the same
    /// outside addresses interval after interval, and a miss in the table costs several cache
    /// misses (index, intervals, pair): measured in the enrichment benchmark, the memo takes
    /// the lookups from ~0.5x to ~0.1x of a batch's decode time.
    static MEMO: std::cell::RefCell<Vec<Memo>> = std::cell::RefCell::new(
        vec![Memo { table: 0, address: 0, pair: NO_PAIR }; MEMO_SLOTS],
    );
}

/// No country, or no network, in a [`GeoTable::pairs`] entry.
const NONE: u32 = u32::MAX;

impl GeoTable {
    /// The snapshot built into the binary, decoded on the first call (~80 ms) and shared after.
    pub fn builtin() -> Arc<GeoTable> {
        snapshot::builtin().0.clone()
    }

    /// Decodes the built-in snapshot anew on every call (what [`builtin`](Self::builtin) does
    /// once), for tools and benchmarks.
    pub fn decode_builtin() -> GeoTable {
        snapshot::decode_builtin().0
    }

    /// The country and network of `ip`. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// looked up as its IPv4 address; private, loopback, link-local, multicast, documentation
    /// and other special-purpose addresses get the empty label, whatever the data says.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> GeoLabel<'_> {
        let ip = ip.to_canonical();
        let address = match ip {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let slot = ((address as u64 ^ (address >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - MEMO_SLOTS.trailing_zeros())) as usize;
        let pair = MEMO.with_borrow_mut(|memo| {
            let entry = &mut memo[slot];
            if entry.table == self.id && entry.address == address {
                return entry.pair;
            }
            let pair = self.search(ip).unwrap_or(NO_PAIR);
            *entry = Memo {
                table: self.id,
                address,
                pair,
            };
            pair
        });
        if pair == NO_PAIR {
            return GeoLabel::default();
        }
        let pair = self.pairs[pair as usize];
        let country = if pair.country == NONE {
            ""
        } else {
            self.countries.get(pair.country).1
        };
        let as_name = self
            .networks
            .text
            .get(pair.name_start as usize..pair.name_end as usize)
            .unwrap_or_default();
        GeoLabel {
            country,
            asn: pair.asn,
            as_name,
        }
    }

    /// The pair of `ip` (canonical) in the tables, without the memo.
    fn search(&self, ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(v4) => {
                let address = u32::from(v4);
                if is_special_v4(address) {
                    return None;
                }
                self.v4.get(address)
            }
            IpAddr::V6(v6) => {
                let address = u128::from(v6);
                if is_special_v6(address) {
                    return None;
                }
                self.v6.get(address)
            }
        }
    }

    /// Intervals (gaps included) of each family, pairs, countries and networks: the size.
    fn sizes(&self) -> [usize; 5] {
        [
            self.v4.len(),
            self.v6.len(),
            self.pairs.len(),
            self.countries.len(),
            self.networks.len(),
        ]
    }
}

impl std::fmt::Debug for GeoTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [v4, v6, pairs, countries, networks] = self.sizes();
        f.debug_struct("GeoTable")
            .field("v4_intervals", &v4)
            .field("v6_intervals", &v6)
            .field("pairs", &pairs)
            .field("countries", &countries)
            .field("networks", &networks)
            .finish()
    }
}

/// A table's content before it is built: every part's ranges (disjoint, by first address),
/// their labels indexing `countries` (country parts) or `networks` (network parts).
#[derive(Clone, Debug, Default)]
struct Parts {
    countries: Labels,
    networks: Labels,
    /// In [`GeoPart::ALL`] order.
    ranges: [Vec<ranges::Range>; 4],
}

impl Parts {
    fn labels_mut(&mut self, part: GeoPart) -> &mut Labels {
        if part.is_country() {
            &mut self.countries
        } else {
            &mut self.networks
        }
    }

    /// The lookup table: each family's two parts combined, each distinct (country, network)
    /// pair labelled once.
    fn build(self) -> GeoTable {
        let [country_v4, country_v6, network_v4, network_v6] = &self.ranges;
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        let mut known = HashMap::new();
        let mut pair = |country: Option<u32>, network: Option<u32>| {
            let key = (country.unwrap_or(NONE), network.unwrap_or(NONE));
            *known.entry(key).or_insert_with(|| {
                pairs.push(key);
                (pairs.len() - 1) as u32
            })
        };
        let v4 = ranges::combine(country_v4, network_v4, &mut pair);
        let v6 = ranges::combine(country_v6, network_v6, &mut pair);
        GeoTable {
            v4: v4_table(&v4),
            v6: V6Table::build(&v6),
            pairs: Pair::resolve(&pairs, &self.networks),
            countries: self.countries,
            networks: self.networks,
            id: next_table_id(),
        }
    }
}

/// What an interval's label stands for, resolved so that a lookup reads one entry: the
/// country's index into [`GeoTable::countries`] ([`NONE`] for none), the AS number (0 for
/// none) and the AS name as a span of the networks' text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    country: u32,
    asn: u32,
    name_start: u32,
    name_end: u32,
}

impl Pair {
    /// `(country index, network index)` pairs, [`NONE`] for none, resolved with `networks`.
    fn resolve(pairs: &[(u32, u32)], networks: &Labels) -> Vec<Pair> {
        pairs
            .iter()
            .map(|&(country, network)| {
                let (asn, name_start, name_end) = if network == NONE {
                    (0, 0, 0)
                } else {
                    networks.span(network)
                };
                Pair {
                    country,
                    asn,
                    name_start,
                    name_end,
                }
            })
            .collect()
    }
}

/// An IPv4 family's table (the data's ranges are within the family by construction).
fn v4_table(ranges: &[ranges::Range]) -> IntervalTable<u32> {
    IntervalTable::build(
        ranges
            .iter()
            .map(|r| (r.first as u32, r.last as u32, r.label))
            .collect(),
    )
}

/// An IPv6 family's table, in two levels to halve its memory: almost every range of the data
/// starts and ends on a /64 boundary, so the intervals are kept by their top 64 bits (16 bytes
/// an interval instead of 32); the few /64s that some range starts or ends inside (~2% of the
/// country rows, from geofeeds) are marked [`FINE`] there and cut at full width in a second,
/// small table.
#[derive(Clone)]
struct V6Table {
    by_64: IntervalTable<u64>,
    fine: IntervalTable<u128>,
}

/// The label of a /64 that [`V6Table::fine`] cuts further (no label index gets this high).
const FINE: u32 = u32::MAX - 1;

impl V6Table {
    /// `ranges`: disjoint, by first address.
    fn build(ranges: &[ranges::Range]) -> V6Table {
        const LOW: u128 = u64::MAX as u128;
        let block = |address: u128| (address >> 64) as u64;
        // The /64s a range starts or ends inside. A range covering a whole /64 is the only
        // one in it, so no range covers a fine /64 whole.
        let mut fine_blocks: Vec<u64> = ranges
            .iter()
            .flat_map(|r| {
                [
                    (r.first & LOW != 0).then(|| block(r.first)),
                    (r.last & LOW != LOW).then(|| block(r.last)),
                ]
            })
            .flatten()
            .collect();
        fine_blocks.dedup(); // sorted already: the ranges are
        let is_fine = |b: u64| fine_blocks.binary_search(&b).is_ok();
        let mut by_64: Vec<(u64, u64, u32)> = fine_blocks.iter().map(|&b| (b, b, FINE)).collect();
        let mut fine = Vec::new();
        for r in ranges {
            let (mut first, mut last) = (Some(block(r.first)), Some(block(r.last)));
            if is_fine(block(r.first)) {
                fine.push((r.first, r.last.min(r.first | LOW), r.label));
                first = block(r.first).checked_add(1);
            }
            if is_fine(block(r.last)) {
                if block(r.last) != block(r.first) {
                    fine.push((r.last & !LOW, r.last, r.label));
                }
                last = block(r.last).checked_sub(1);
            }
            if let (Some(first), Some(last)) = (first, last)
                && first <= last
            {
                by_64.push((first, last, r.label));
            }
        }
        V6Table {
            by_64: IntervalTable::build(by_64),
            fine: IntervalTable::build(fine),
        }
    }

    #[inline]
    fn get(&self, address: u128) -> Option<u32> {
        match self.by_64.get((address >> 64) as u64) {
            Some(FINE) => self.fine.get(address),
            label => label,
        }
    }

    /// Intervals of both levels.
    fn len(&self) -> usize {
        self.by_64.len() + self.fine.len()
    }
}

/// The top 64 bits of an IPv6 address, for [`V6Table::by_64`].
impl Address for u64 {
    const ZERO: Self = 0;
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn bucket(self) -> usize {
        (self >> (64 - BUCKET_BITS)) as usize
    }
    fn bucket_start(bucket: usize) -> Self {
        (bucket as u64) << (64 - BUCKET_BITS)
    }
}

/// The labels of one kind, indexed by the intervals' label index: a number (the AS number;
/// 0 for countries) and a text (the AS name or the country code), the texts in one string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Labels {
    /// `(number, end of text in `text`)`; a text starts where the previous one ends.
    entries: Vec<(u32, u32)>,
    text: String,
}

impl Labels {
    fn push(&mut self, number: u32, text: &str) -> u32 {
        self.text.push_str(text);
        let end = u32::try_from(self.text.len()).expect("label texts under 4 GB");
        self.entries.push((number, end));
        (self.entries.len() - 1) as u32
    }

    #[inline]
    fn get(&self, index: u32) -> (u32, &str) {
        let (number, start, end) = self.span(index);
        (number, &self.text[start as usize..end as usize])
    }

    /// The label's number, and where its text starts and ends in `text`.
    #[inline]
    fn span(&self, index: u32) -> (u32, u32, u32) {
        let index = index as usize;
        let start = index
            .checked_sub(1)
            .map_or(0, |previous| self.entries[previous].1);
        let (number, end) = self.entries[index];
        (number, start, end)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.entries.len() as u32).map(|i| self.get(i))
    }
}

/// Adds labels to a [`Labels`] once each: the index of an equal label already there, else a
/// new one. Keyed by the text's hash so that a row's label is found without allocating; on a
/// (vanishingly rare) collision the label is simply added twice.
struct LabelInterner<'a> {
    labels: &'a mut Labels,
    known: HashMap<(u32, u64), u32>,
}

impl<'a> LabelInterner<'a> {
    fn new(labels: &'a mut Labels) -> Self {
        let known = labels
            .iter()
            .enumerate()
            .map(|(i, (number, text))| ((number, xxh3_64(text.as_bytes())), i as u32))
            .collect();
        LabelInterner { labels, known }
    }

    fn intern(&mut self, number: u32, text: &str) -> u32 {
        let key = (number, xxh3_64(text.as_bytes()));
        if let Some(&index) = self.known.get(&key)
            && self.labels.get(index) == (number, text)
        {
            return index;
        }
        let index = self.labels.push(number, text);
        self.known.insert(key, index);
        index
    }
}

/// Special-purpose IPv4 blocks (RFC 6890 and successors) that are never on the internet:
/// `(network, prefix length)`.
const SPECIAL_V4: [(u32, u32); 15] = [
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 carrier-grade NAT
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 documentation (TEST-NET-1)
    (0xc058_6300, 24), // 192.88.99.0/24 deprecated 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 documentation (TEST-NET-2)
    (0xcb00_7100, 24), // 203.0.113.0/24 documentation (TEST-NET-3)
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, and the broadcast address
];

/// Special-purpose IPv6 blocks that are never on the internet.
const SPECIAL_V6: [(u128, u32); 9] = [
    (0, 128),                                       // :: unspecified
    (1, 128),                                       // ::1 loopback
    (0x0100_0000_0000_0000 << 64, 64),              // 100::/64 discard
    (0x2001_0db8 << 96, 32),                        // 2001:db8::/32 documentation
    (0x3fff << 112, 20),                            // 3fff::/20 documentation
    (0xfc00 << 112, 7),                             // fc00::/7 unique local
    (0xfe80 << 112, 10),                            // fe80::/10 link-local
    (0xfec0 << 112, 10),                            // fec0::/10 site-local (deprecated)
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8), // ff00::/8 multicast
];

/// Without an early exit: no branch to mispredict on random addresses.
#[inline]
fn is_special_v4(address: u32) -> bool {
    SPECIAL_V4.iter().fold(false, |special, &(network, len)| {
        special | (address >> (32 - len) == network >> (32 - len))
    })
}

#[inline]
fn is_special_v6(address: u128) -> bool {
    SPECIAL_V6.iter().fold(false, |special, &(network, len)| {
        special | (address >> (128 - len) == network >> (128 - len))
    })
}
