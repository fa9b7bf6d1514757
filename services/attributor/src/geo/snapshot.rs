//! The four parts as a dated snapshot built into the binary (`data/geo/geo.bin.zst`, see the
//! README there; written by `examples/geo_snapshot.rs` through `scripts/refresh-geo-data`):
//! the table every command uses for a part unless `--geo-dir` holds that part's CSV file.
//!
//! The format, before zstd (every number a LEB128 varint, a string its length then UTF-8), is
//! the lookup table's own content, so decoding builds no index but the interval tables':
//!
//! ```text
//! "netmeter geo snapshot 1\n"
//! per part (GeoPart::ALL order): package@version, publication time (Unix seconds), ranges
//! countries: count, then each code
//! networks: count, AS number deltas (sorted by number), name lengths, the names' bytes
//! pairs: count, countries (0 for none, else 1 + index), networks (likewise)
//! per family (IPv4, IPv6): interval count, byte length of the starts, starts, labels
//! ```
//!
//! A family is its whole address space cut into intervals, each running from its start to the
//! next one's: the starts are deltas from the previous start, and the labels 0 for a gap or
//! 1 + the index of a (country, network) pair. Columns rather than rows compress ~10% better.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use super::load::{self, GeoSource, LoadedGeo, LoadedPart};
use super::ranges::{Range, combine, split};
use super::{GeoError, GeoPart, GeoTable, Labels, NONE, Pair, Parts, V6Table};
use crate::cloud::table::IntervalTable;

const SNAPSHOT: &[u8] = include_bytes!("../../data/geo/geo.bin.zst");
const MAGIC: &[u8] = b"netmeter geo snapshot 1\n";

/// The zstd level of the snapshot: the highest without `--ultra`, decoded as fast as any.
pub const LEVEL: i32 = 19;

/// The built-in table and its parts' provenance, decoded once per process.
pub(super) fn builtin() -> &'static (Arc<GeoTable>, Vec<LoadedPart>) {
    static BUILTIN: OnceLock<(Arc<GeoTable>, Vec<LoadedPart>)> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        let (table, parts) = decode_builtin();
        (Arc::new(table), parts)
    })
}

/// The built-in snapshot, decoded.
pub(super) fn decode_builtin() -> (GeoTable, Vec<LoadedPart>) {
    decode(SNAPSHOT).expect("the built-in geo snapshot is valid (checked by the tests)")
}

/// The built-in snapshot as parts, for replacing some of them.
pub(super) fn builtin_parts() -> (Parts, Vec<LoadedPart>) {
    let raw = zstd::stream::decode_all(SNAPSHOT).expect("the built-in geo snapshot is zstd");
    Contents::read(&raw)
        .and_then(Contents::into_parts)
        .expect("the built-in geo snapshot is valid (checked by the tests)")
}

/// Where one package's data comes from: `@ip-location-db/asn@2.3.2026061719` and when that
/// version's data was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSource {
    pub package: String,
    pub published: SystemTime,
}

/// A snapshot (zstd-compressed, ready to be written to `data/geo/geo.bin.zst`) of the four
/// CSV files in `dir`, all of which must be there, from the packages `country` and `network`.
/// Checked before it is returned: it answers like a table built from the files, at the first
/// and last address of every range and the address after.
pub fn build(
    dir: &Path,
    country: &SnapshotSource,
    network: &SnapshotSource,
) -> Result<Vec<u8>, GeoError> {
    let mut parts = Parts::default();
    for part in GeoPart::ALL {
        let path = dir.join(part.file_name());
        parts.ranges[part.index()] = load::read_part(part, &path, parts.labels_mut(part))?
            .ok_or_else(|| GeoError::Read {
                path: path.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
    }
    let sources = GeoPart::ALL.map(|part| if part.is_country() { country } else { network });
    let compressed = zstd::bulk::compress(&encode(&parts, &sources), LEVEL)
        .expect("compressing in memory cannot fail");
    let (decoded, _) = decode(&compressed).expect("a snapshot just encoded decodes");
    let from_files = parts.clone().build();
    for part in GeoPart::ALL {
        for range in &parts.ranges[part.index()] {
            for address in [
                Some(range.first),
                Some(range.last),
                range.last.checked_add(1),
            ] {
                let Some(ip) = address.and_then(|a| ip(part, a)) else {
                    continue;
                };
                assert_eq!(
                    decoded.lookup(ip),
                    from_files.lookup(ip),
                    "{ip}: the snapshot differs from the files"
                );
            }
        }
    }
    Ok(compressed)
}

/// `address` of the part's family; `None` past the end of IPv4.
fn ip(part: GeoPart, address: u128) -> Option<IpAddr> {
    if part.is_v6() {
        Some(Ipv6Addr::from(address).into())
    } else {
        u32::try_from(address)
            .ok()
            .map(|a| Ipv4Addr::from(a).into())
    }
}

/// A snapshot's table and its parts' provenance; an error says what is wrong with the bytes.
pub fn decode_snapshot(compressed: &[u8]) -> Result<LoadedGeo, String> {
    let (table, parts) = decode(compressed)?;
    Ok(LoadedGeo {
        table: Arc::new(table),
        parts,
    })
}

/// The uncompressed snapshot of `parts`, each part from `sources[part]`. Labels are
/// renumbered by number and text (pairs likewise), and those no range uses are left out.
fn encode(parts: &Parts, sources: &[&SnapshotSource; 4]) -> Vec<u8> {
    let used = |country: bool| {
        GeoPart::ALL
            .into_iter()
            .filter(move |part| part.is_country() == country)
            .flat_map(|part| parts.ranges[part.index()].iter().map(|r| r.label))
    };
    let (countries, country_index) = renumber(&parts.countries, used(true));
    let (networks, network_index) = renumber(&parts.networks, used(false));
    let renumbered = |part: GeoPart| {
        let index = if part.is_country() {
            &country_index
        } else {
            &network_index
        };
        parts.ranges[part.index()]
            .iter()
            .map(|r| Range {
                label: index[r.label as usize],
                ..*r
            })
            .collect::<Vec<_>>()
    };
    let mut pairs = Vec::new();
    let mut known = std::collections::HashMap::new();
    let mut pair = |country: Option<u32>, network: Option<u32>| {
        let key = (country.unwrap_or(NONE), network.unwrap_or(NONE));
        *known.entry(key).or_insert_with(|| {
            pairs.push(key);
            (pairs.len() - 1) as u32
        })
    };
    let mut families = [
        combine(
            &renumbered(GeoPart::CountryV4),
            &renumbered(GeoPart::NetworkV4),
            &mut pair,
        ),
        combine(
            &renumbered(GeoPart::CountryV6),
            &renumbered(GeoPart::NetworkV6),
            &mut pair,
        ),
    ];
    // Pairs by country then network: neighbours in the file are alike.
    let mut order: Vec<u32> = (0..pairs.len() as u32).collect();
    order.sort_by_key(|&i| pairs[i as usize]);
    let mut pair_index = vec![0; pairs.len()];
    for (new, &old) in order.iter().enumerate() {
        pair_index[old as usize] = new as u32;
    }
    for family in &mut families {
        for range in family.iter_mut() {
            range.label = pair_index[range.label as usize];
        }
    }

    let mut out = Writer::default();
    out.bytes(MAGIC);
    for part in GeoPart::ALL {
        let source = sources[part.index()];
        out.string(&source.package);
        let seconds = source
            .published
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        out.varint(seconds.into());
        out.varint(parts.ranges[part.index()].len() as u128);
    }
    out.varint(countries.len() as u128);
    for (_, code) in countries.iter() {
        out.string(code);
    }
    out.varint(networks.len() as u128);
    let mut previous = 0;
    for (asn, _) in networks.iter() {
        out.varint((asn - previous).into());
        previous = asn;
    }
    for (_, name) in networks.iter() {
        out.varint(name.len() as u128);
    }
    for (_, name) in networks.iter() {
        out.bytes(name.as_bytes());
    }
    out.varint(order.len() as u128);
    let optional = |index: u32| {
        if index == NONE {
            0
        } else {
            1 + u128::from(index)
        }
    };
    for &old in &order {
        out.varint(optional(pairs[old as usize].0));
    }
    for &old in &order {
        out.varint(optional(pairs[old as usize].1));
    }
    for (family, end) in families.iter().zip([u32::MAX.into(), u128::MAX]) {
        let intervals = intervals(family, end);
        let mut starts = Writer::default();
        let mut previous = 0;
        for &(start, _) in &intervals {
            starts.varint(start - previous);
            previous = start;
        }
        out.varint(intervals.len() as u128);
        out.varint(starts.0.len() as u128);
        out.bytes(&starts.0);
        for &(_, label) in &intervals {
            out.varint(label.map_or(0, |l| 1 + u128::from(l)));
        }
    }
    out.0
}

/// The labels `used` refers to, sorted by number then text, and each old index's new one.
fn renumber(labels: &Labels, used: impl Iterator<Item = u32>) -> (Labels, Vec<u32>) {
    let mut is_used = vec![false; labels.len()];
    for label in used {
        is_used[label as usize] = true;
    }
    let mut order: Vec<u32> = (0..labels.len() as u32)
        .filter(|&i| is_used[i as usize])
        .collect();
    order.sort_by_key(|&i| labels.get(i));
    let mut renumbered = Labels::default();
    let mut index = vec![NONE; labels.len()];
    for old in order {
        let (number, text) = labels.get(old);
        index[old as usize] = renumbered.push(number, text);
    }
    (renumbered, index)
}

/// A family's space up to `end` cut into intervals: `(start, label)`, `None` for the gaps
/// between `ranges`, the first starting at 0.
fn intervals(ranges: &[Range], end: u128) -> Vec<(u128, Option<u32>)> {
    let mut intervals = Vec::with_capacity(2 * ranges.len() + 1);
    // The first address not covered yet; `None` past the end of the space.
    let mut next = Some(0);
    for range in ranges {
        if let Some(gap) = next.filter(|&n| n < range.first) {
            intervals.push((gap, None));
        }
        intervals.push((range.first, Some(range.label)));
        next = range.last.checked_add(1);
    }
    if let Some(gap) = next.filter(|&n| n <= end) {
        intervals.push((gap, None));
    }
    intervals
}

fn decode(compressed: &[u8]) -> Result<(GeoTable, Vec<LoadedPart>), String> {
    let raw = zstd::stream::decode_all(compressed).map_err(|e| format!("not zstd: {e}"))?;
    let Contents {
        parts,
        countries,
        networks,
        pairs,
        families: [v4, v6],
    } = Contents::read(&raw)?;
    let table = GeoTable {
        v4: v4.v4_table(pairs.len())?,
        v6: V6Table::build(&v6.ranges(pairs.len())?),
        pairs: Pair::resolve(&pairs, &networks),
        countries,
        networks,
        id: super::next_table_id(),
    };
    Ok((table, parts))
}

/// A snapshot read but its intervals not yet decoded.
struct Contents<'a> {
    /// Where each part came from.
    parts: Vec<LoadedPart>,
    countries: Labels,
    networks: Labels,
    /// (country, network) per pair, [`NONE`] for none.
    pairs: Vec<(u32, u32)>,
    /// IPv4, IPv6.
    families: [Intervals<'a>; 2],
}

impl<'a> Contents<'a> {
    fn read(raw: &'a [u8]) -> Result<Self, String> {
        let mut input = Reader::new(raw);
        if input.take(MAGIC.len())? != MAGIC {
            return Err("not a netmeter geo snapshot (version 1)".into());
        }
        let mut parts = Vec::with_capacity(GeoPart::ALL.len());
        for part in GeoPart::ALL {
            let package = input.string()?.to_string();
            let published = SystemTime::UNIX_EPOCH + Duration::from_secs(input.number()?);
            parts.push(LoadedPart {
                part,
                source: GeoSource::Snapshot { package },
                published,
                ranges: input.number()? as usize,
            });
        }
        let mut countries = Labels::default();
        for _ in 0..input.number()? {
            countries.push(0, input.string()?);
        }
        let count = input.number()? as usize;
        let mut asns = Vec::with_capacity(count);
        let mut asn = 0u32;
        for _ in 0..count {
            let delta = u32::try_from(input.number()?).map_err(|_| "an AS number too large")?;
            asn = asn.checked_add(delta).ok_or("an AS number too large")?;
            asns.push(asn);
        }
        let lengths = (0..count)
            .map(|_| input.number().map(|n| n as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let names = std::str::from_utf8(input.take(lengths.iter().sum())?)
            .map_err(|_| "AS names that are not UTF-8")?;
        let mut networks = Labels::default();
        networks.text.reserve(names.len());
        networks.entries.reserve(count);
        let mut at = 0;
        for (asn, length) in asns.into_iter().zip(lengths) {
            let name = names
                .get(at..at + length)
                .ok_or("an AS name cut inside a character")?;
            networks.push(asn, name);
            at += length;
        }
        let count = input.number()? as usize;
        let index = |input: &mut Reader<'_>, labels: usize| match input.number()? {
            0 => Ok(NONE),
            n if n as usize <= labels => Ok(n as u32 - 1),
            _ => Err("a pair with a label out of range".to_string()),
        };
        let countries_of_pairs = (0..count)
            .map(|_| index(&mut input, countries.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let pairs = countries_of_pairs
            .into_iter()
            .map(|country| Ok((country, index(&mut input, networks.len())?)))
            .collect::<Result<Vec<_>, String>>()?;
        let families = [
            Intervals::read(&mut input, u32::MAX.into())?,
            Intervals::read(&mut input, u128::MAX)?,
        ];
        if !input.rest().is_empty() {
            return Err("bytes after the last family".into());
        }
        Ok(Contents {
            parts,
            countries,
            networks,
            pairs,
            families,
        })
    }

    /// The four parts again, each family's pairs split into its country and network ranges.
    fn into_parts(self) -> Result<(Parts, Vec<LoadedPart>), String> {
        let [v4, v6] = &self.families;
        let (v4, v6) = (v4.ranges(self.pairs.len())?, v6.ranges(self.pairs.len())?);
        let pairs = &self.pairs;
        let country = |label: u32| Some(pairs[label as usize].0).filter(|&c| c != NONE);
        let network = |label: u32| Some(pairs[label as usize].1).filter(|&n| n != NONE);
        let parts = Parts {
            ranges: [
                split(&v4, country),
                split(&v6, country),
                split(&v4, network),
                split(&v6, network),
            ],
            countries: self.countries,
            networks: self.networks,
        };
        Ok((parts, self.parts))
    }
}

/// One family's columns, not yet decoded.
struct Intervals<'a> {
    count: usize,
    starts: &'a [u8],
    labels: &'a [u8],
    /// The last address of the family.
    end: u128,
}

impl<'a> Intervals<'a> {
    fn read(input: &mut Reader<'a>, end: u128) -> Result<Self, String> {
        let count = input.number()? as usize;
        let length = input.number()? as usize;
        let starts = input.take(length)?;
        // The labels are the varints up to the next family: find where they end.
        let mut labels = Reader::new(input.rest());
        for _ in 0..count {
            labels.wide()?;
        }
        let labels = input.take(labels.at)?;
        Ok(Intervals {
            count,
            starts,
            labels,
            end,
        })
    }

    /// Calls `f(first, last, pair index)` for every labelled interval; checks that the
    /// intervals are in order within the family and the labels below `pairs`.
    fn for_each(&self, pairs: usize, mut f: impl FnMut(u128, u128, u32)) -> Result<(), String> {
        let (mut starts, mut codes) = (Reader::new(self.starts), Reader::new(self.labels));
        let label = |code: u128| {
            u32::try_from(code - 1)
                .ok()
                .filter(|&l| (l as usize) < pairs)
                .ok_or("a label out of range")
        };
        // The previous interval: its start and its label code (0 for a gap).
        let mut previous: Option<(u128, u128)> = None;
        for _ in 0..self.count {
            let delta = starts.wide()?;
            let code = codes.wide()?;
            let start = match previous {
                None if delta == 0 => 0,
                None => return Err("the first interval does not start at 0".into()),
                Some((start, code)) => {
                    let next = start
                        .checked_add(delta)
                        .filter(|&next| delta > 0 && next <= self.end)
                        .ok_or("intervals out of order")?;
                    if code > 0 {
                        f(start, next - 1, label(code)?);
                    }
                    next
                }
            };
            previous = Some((start, code));
        }
        if let Some((start, code)) = previous.filter(|&(_, code)| code > 0) {
            f(start, self.end, label(code)?);
        }
        Ok(())
    }

    /// The IPv4 lookup table (the addresses checked by [`Self::for_each`] to be IPv4).
    fn v4_table(&self, pairs: usize) -> Result<IntervalTable<u32>, String> {
        let mut ranges = Vec::with_capacity(self.count / 2 + 1);
        self.for_each(pairs, |first, last, label| {
            ranges.push((first as u32, last as u32, label))
        })?;
        Ok(IntervalTable::build(ranges))
    }

    /// The labelled ranges, by first address.
    fn ranges(&self, pairs: usize) -> Result<Vec<Range>, String> {
        let mut ranges = Vec::with_capacity(self.count / 2 + 1);
        self.for_each(pairs, |first, last, label| {
            ranges.push(Range { first, last, label })
        })?;
        Ok(ranges)
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut n: u128) {
        while n >= 0x80 {
            self.0.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn string(&mut self, text: &str) {
        self.varint(text.len() as u128);
        self.0.extend_from_slice(text.as_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    #[inline]
    fn wide(&mut self) -> Result<u128, String> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("cut short")?;
            self.at += 1;
            value |= u128::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("a number longer than 128 bits".into())
    }

    fn number(&mut self) -> Result<u64, String> {
        u64::try_from(self.wide()?).map_err(|_| "a count longer than 64 bits".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let bytes = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or("cut short")?;
        self.at += n;
        Ok(bytes)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        let n = self.number()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "a string that is not UTF-8".into())
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot taken apart into its four parts and encoded again is the same bytes: the
    /// format and the combining of parts lose nothing.
    #[test]
    fn the_snapshot_reencodes_to_the_same_bytes() {
        let raw = zstd::stream::decode_all(SNAPSHOT).unwrap();
        let (parts, loaded) = Contents::read(&raw).unwrap().into_parts().unwrap();
        let sources: Vec<SnapshotSource> = loaded
            .iter()
            .map(|p| SnapshotSource {
                package: match &p.source {
                    GeoSource::Snapshot { package } => package.clone(),
                    other => panic!("{other:?}"),
                },
                published: p.published,
            })
            .collect();
        let sources = [&sources[0], &sources[1], &sources[2], &sources[3]];
        assert!(encode(&parts, &sources) == raw);
        for (part, loaded) in GeoPart::ALL.iter().zip(&loaded) {
            assert_eq!(parts.ranges[part.index()].len(), loaded.ranges, "{part:?}");
        }
    }
}
