//! [`NativeBlock`]: a batch of [`FlowRow`]s in ClickHouse's `Native` format, the columnar format
//! `clickhouse-client` sends. The sink writes it rather than the `clickhouse` crate's row-wise
//! `RowBinary` because the server parses rows one value at a time: with 22 `LowCardinality`
//! columns (23 since schema version 4) that cost ~65% of an insert's server time (measured by
//! `benches/insert.rs`). In `Native`, each `LowCardinality` column arrives as the batch's
//! dictionary plus one small index per row, which the server merges without hashing every value.
//!
//! Format (ClickHouse `NativeWriter`, no block info, as over HTTP): column count and row count
//! as varints, then per column its name, its type and its values. Values are little-endian
//! fixed-width, or length-prefixed strings; `UUID` is two little-endian 64-bit halves, `IPv6`
//! its 16 bytes in network order. A `LowCardinality(String)` column is written as
//! `clickhouse-client` writes it: serialization version 1 (`SharedDictionariesWithAdditionalKeys`),
//! then the index width and flags, the dictionary (key count and keys), and the row count and
//! one index per row.

use std::hash::BuildHasher;

use clickhouse::Compression;
use clickhouse::insert_formatted::CompressedData;
use rustc_hash::FxBuildHasher;

use crate::row::FlowRow;

/// How the sink's client talks to ClickHouse, and so how blocks are compressed ahead.
pub const COMPRESSION: Compression = Compression::Lz4;

/// The size of the frames a block is compressed in (the `clickhouse` crate's own buffer size).
pub const FRAME_BYTES: usize = 256 * 1024;

/// A batch encoded and compressed, ready to be the body of one insert (and spent by it).
pub struct NativeBlock {
    pub frames: Vec<CompressedData>,
}

/// `body` in [`COMPRESSION`] frames of [`FRAME_BYTES`], as the client sends a body.
pub fn compressed_frames(body: &[u8]) -> Vec<CompressedData> {
    body.chunks(FRAME_BYTES)
        .map(|frame| CompressedData::new(frame, COMPRESSION).expect("LZ4 is compiled in"))
        .collect()
}

/// `INSERT INTO table (columns) FORMAT Native`, the statement a [`NativeBlock`] is the body of.
pub fn insert_statement(table: &str) -> String {
    let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
    format!("INSERT INTO {table} ({}) FORMAT Native", names.join(", "))
}

/// How one column is read from a [`FlowRow`] and written.
#[derive(Clone, Copy)]
enum Cell {
    /// A fixed-width type, appended as stored.
    Fixed(&'static str, fn(&FlowRow, &mut Vec<u8>)),
    /// `String`: varint length, then bytes.
    Text(fn(&FlowRow) -> &str),
    /// `LowCardinality(String)`: a dictionary of the batch's distinct values and an index per row.
    Dictionary(fn(&FlowRow) -> &str),
}

impl Cell {
    fn ty(self) -> &'static str {
        match self {
            Cell::Fixed(ty, _) => ty,
            Cell::Text(_) => "String",
            Cell::Dictionary(_) => "LowCardinality(String)",
        }
    }
}

/// The insertable columns of `flows` (all but the materialized `interval_start`) in table order;
/// a unit test holds names and types equal to `schema::tables::flows`.
const COLUMNS: [(&str, Cell); 44] = {
    use Cell::{Dictionary as D, Fixed as F, Text as T};
    [
        ("record_id", F("UUID", |r, o| put_uuid(o, &r.record_id))),
        ("generation", F("UInt64", |r, o| put(o, r.generation))),
        (
            "interval_start_unix_ms",
            F("UInt64", |r, o| put(o, r.interval_start_unix_ms)),
        ),
        (
            "interval_seconds",
            F("UInt32", |r, o| put(o, r.interval_seconds)),
        ),
        ("cluster", D(|r| &r.cluster)),
        ("direction", D(|r| &r.direction)),
        ("protocol", D(|r| &r.protocol)),
        ("class", D(|r| &r.class)),
        ("path", D(|r| &r.path)),
        ("local_cloud", D(|r| &r.local_cloud)),
        ("local_region", D(|r| &r.local_region)),
        ("local_zone", D(|r| &r.local_zone)),
        ("local_node", D(|r| &r.local_node)),
        ("local_namespace", D(|r| &r.local_namespace)),
        ("local_pod", T(|r| &r.local_pod)),
        ("local_workload_kind", D(|r| &r.local_workload_kind)),
        ("local_workload_name", D(|r| &r.local_workload_name)),
        ("local_app", D(|r| &r.local_app)),
        (
            "local_ip",
            F("IPv6", |r, o| o.extend_from_slice(&r.local_ip.octets())),
        ),
        ("local_port", F("UInt16", |r, o| put(o, r.local_port))),
        (
            "local_host_network",
            F("Bool", |r, o| o.push(u8::from(r.local_host_network))),
        ),
        (
            "local_initiated",
            F("Bool", |r, o| o.push(u8::from(r.local_initiated))),
        ),
        ("local_instance_type", D(|r| &r.local_instance_type)),
        ("remote_cloud", D(|r| &r.remote_cloud)),
        ("remote_region", D(|r| &r.remote_region)),
        ("remote_zone", D(|r| &r.remote_zone)),
        ("remote_node", D(|r| &r.remote_node)),
        ("remote_namespace", D(|r| &r.remote_namespace)),
        ("remote_pod", T(|r| &r.remote_pod)),
        ("remote_workload_kind", D(|r| &r.remote_workload_kind)),
        ("remote_workload_name", D(|r| &r.remote_workload_name)),
        ("remote_app", D(|r| &r.remote_app)),
        (
            "remote_ip",
            F("IPv6", |r, o| o.extend_from_slice(&r.remote_ip.octets())),
        ),
        ("remote_port", F("UInt16", |r, o| put(o, r.remote_port))),
        (
            "remote_host_network",
            F("Bool", |r, o| o.push(u8::from(r.remote_host_network))),
        ),
        ("remote_service", D(|r| &r.remote_service)),
        ("remote_network", D(|r| &r.remote_network)),
        ("remote_country", D(|r| &r.remote_country)),
        ("remote_asn", F("UInt32", |r, o| put(o, r.remote_asn))),
        ("remote_as_name", D(|r| &r.remote_as_name)),
        ("bytes", F("UInt64", |r, o| put(o, r.bytes))),
        ("packets", F("UInt64", |r, o| put(o, r.packets))),
        ("cost_usd", F("Float64", |r, o| put(o, r.cost_usd))),
        (
            "processing_cost_usd",
            F("Float64", |r, o| put(o, r.processing_cost_usd)),
        ),
    ]
};

/// A little-endian fixed-width value.
trait LittleEndian {
    fn append(self, out: &mut Vec<u8>);
}

macro_rules! little_endian {
    ($($t:ty),*) => {$(
        impl LittleEndian for $t {
            fn append(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
little_endian!(u16, u32, u64, f64);

fn put(out: &mut Vec<u8>, value: impl LittleEndian) {
    value.append(out);
}

fn put_varuint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    put_varuint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn put_uuid(out: &mut Vec<u8>, id: &uuid::Uuid) {
    let (high, low) = id.as_u64_pair();
    put(out, high);
    put(out, low);
}

/// One column being built: fixed or text values, or a dictionary and the rows' indexes into it.
#[derive(Default)]
struct Column {
    values: Vec<u8>,
    dictionary: Dictionary,
    indexes: Vec<u32>,
}

impl Column {
    fn clear(&mut self) {
        self.values.clear();
        self.dictionary.clear();
        self.indexes.clear();
    }
}

/// A column's distinct values in first-seen order, each found again by its hash. Written by
/// hand on a `hashbrown` table because the lookup is half of encoding (23 per row): the keys'
/// bytes sit in one buffer, and a key is compared by its full hash before its bytes.
#[derive(Default)]
struct Dictionary {
    table: hashbrown::HashTable<u32>,
    /// Per key: its hash, and where its bytes start and end in `text`.
    entries: Vec<(u64, u32, u32)>,
    text: Vec<u8>,
}

impl Dictionary {
    fn clear(&mut self) {
        self.table.clear();
        self.entries.clear();
        self.text.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn key(&self, index: usize) -> &[u8] {
        let (_, start, end) = self.entries[index];
        &self.text[start as usize..end as usize]
    }

    /// The index of `value`, added if new.
    fn index(&mut self, value: &str) -> u32 {
        let value = value.as_bytes();
        let hash = FxBuildHasher.hash_one(value);
        let found = self.table.find(hash, |&i| {
            self.entries[i as usize].0 == hash && same(self.key(i as usize), value)
        });
        if let Some(&index) = found {
            return index;
        }
        let index = self.entries.len() as u32;
        let start = self.text.len() as u32;
        self.text.extend_from_slice(value);
        self.entries.push((hash, start, self.text.len() as u32));
        let entries = &self.entries;
        self.table
            .insert_unique(hash, index, |&i| entries[i as usize].0);
        index
    }

    /// The keys in index order, as `Native` strings.
    fn put_keys(&self, out: &mut Vec<u8>) {
        for index in 0..self.len() {
            let key = self.key(index);
            put_varuint(out, key.len() as u64);
            out.extend_from_slice(key);
        }
    }
}

/// Byte equality, inlined word by word: the keys are short, and a call to `memcmp` per lookup
/// cost more than the comparison.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("8 bytes"));
    (&mut a8).zip(&mut b8).all(|(x, y)| word(x) == word(y))
        && a8
            .remainder()
            .iter()
            .zip(b8.remainder())
            .all(|(x, y)| x == y)
}

/// Encodes batches into [`NativeBlock`]s. Kept from batch to batch by the sink: its buffers
/// keep their capacity, so a batch does not fault in tens of megabytes of fresh pages.
#[derive(Default)]
pub struct NativeEncoder {
    columns: Vec<Column>,
    body: Vec<u8>,
}

impl NativeBlock {
    /// Encodes `rows` with a fresh [`NativeEncoder`].
    pub fn encode(rows: &[FlowRow]) -> NativeBlock {
        NativeEncoder::default().encode(rows)
    }
}

impl NativeEncoder {
    /// Encodes `rows` and compresses the result in [`COMPRESSION`] frames, as the client would
    /// while sending; done ahead, the insert only has to send.
    pub fn encode(&mut self, rows: &[FlowRow]) -> NativeBlock {
        self.encode_body(rows);
        NativeBlock {
            frames: compressed_frames(&self.body),
        }
    }

    /// Encodes `rows` into `self.body` in one pass over the rows, all columns at once: a pass
    /// per column would fetch each row's strings 23 times from wherever the heap put them
    /// (measured 2 µs per row instead of well under 1).
    fn encode_body(&mut self, rows: &[FlowRow]) {
        self.columns.resize_with(COLUMNS.len(), Column::default);
        for column in &mut self.columns {
            column.clear();
        }
        for row in rows {
            for ((_, cell), column) in COLUMNS.iter().zip(self.columns.iter_mut()) {
                match *cell {
                    Cell::Fixed(_, put) => put(row, &mut column.values),
                    Cell::Text(get) => put_string(&mut column.values, get(row)),
                    Cell::Dictionary(get) => {
                        let index = column.dictionary.index(get(row));
                        column.indexes.push(index);
                    }
                }
            }
        }
        let out = &mut self.body;
        out.clear();
        put_varuint(out, COLUMNS.len() as u64);
        put_varuint(out, rows.len() as u64);
        for ((name, cell), column) in COLUMNS.iter().zip(&self.columns) {
            put_string(out, name);
            put_string(out, cell.ty());
            match cell {
                Cell::Dictionary(_) => put_dictionary(out, column),
                _ => out.extend_from_slice(&column.values),
            }
        }
    }
}

/// A `LowCardinality(String)` column: its dictionary, then one index per row in the narrowest
/// width that holds the dictionary.
fn put_dictionary(out: &mut Vec<u8>, column: &Column) {
    const SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS: u64 = 1;
    const HAS_ADDITIONAL_KEYS: u64 = 1 << 9;
    const NEED_UPDATE_DICTIONARY: u64 = 1 << 10;
    put(out, SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS);
    let width: u64 = match column.dictionary.len() {
        0..=0x100 => 0,
        0x101..=0x1_0000 => 1,
        _ => 2,
    };
    put(out, width | HAS_ADDITIONAL_KEYS | NEED_UPDATE_DICTIONARY);
    put(out, column.dictionary.len() as u64);
    column.dictionary.put_keys(out);
    put(out, column.indexes.len() as u64);
    match width {
        0 => out.extend(column.indexes.iter().map(|&i| i as u8)),
        1 => out.extend(
            column
                .indexes
                .iter()
                .flat_map(|&i| (i as u16).to_le_bytes()),
        ),
        _ => out.extend(column.indexes.iter().flat_map(|&i| i.to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_the_insertable_columns_of_flows_with_their_types() {
        let table: Vec<(String, &str)> =
            crate::schema::tables::flow_columns(crate::schema::SCHEMA_VERSION)
                .into_iter()
                .filter(|c| !c.extra.starts_with("MATERIALIZED"))
                .map(|c| (c.name, c.ty))
                .collect();
        let ours: Vec<(String, &str)> = COLUMNS
            .iter()
            .map(|(name, cell)| (name.to_string(), cell.ty()))
            .collect();
        assert_eq!(ours, table);
    }

    #[test]
    fn columns_are_the_proto_fields_with_their_types() {
        let columns: Vec<(&str, &str)> = COLUMNS
            .iter()
            .map(|(name, cell)| (*name, cell.ty()))
            .collect();
        let wrong = crate::schema::proto_fields::type_mismatches(
            "the Native columns (services/sink/src/native.rs, COLUMNS)",
            &columns,
            crate::schema::proto_fields::column_types,
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// A fixed-width column writes as many bytes per row as its type takes, so the `FlowRow`
    /// field it reads has that type.
    #[test]
    fn fixed_columns_write_the_width_of_their_type() {
        let row = FlowRow::try_from(netmeter_proto::flows::Flow {
            record_id: uuid::Uuid::nil().to_string(),
            local_ip: "10.0.0.1".into(),
            remote_ip: "10.0.0.2".into(),
            ..Default::default()
        })
        .unwrap();
        for (name, cell) in &COLUMNS {
            let Cell::Fixed(ty, put) = cell else { continue };
            let width = match *ty {
                "Bool" => 1,
                "UInt16" => 2,
                "UInt32" => 4,
                "UInt64" | "Float64" => 8,
                "UUID" | "IPv6" => 16,
                other => panic!("Native column {name}: no width known for {other}"),
            };
            let mut out = Vec::new();
            put(&row, &mut out);
            assert_eq!(
                out.len(),
                width,
                "Native column {name} is {ty} but writes {} bytes: FlowRow.{name} has another \
                 type (services/sink/src/native.rs, services/sink/src/row.rs)",
                out.len()
            );
        }
    }

    #[test]
    fn a_block_is_laid_out_as_clickhouse_reads_it() {
        let row = |app: &str| {
            FlowRow::try_from(netmeter_proto::flows::Flow {
                record_id: uuid::Uuid::nil().to_string(),
                local_ip: "10.0.0.1".into(),
                remote_ip: "10.0.0.2".into(),
                local_app: app.into(),
                ..Default::default()
            })
            .unwrap()
        };
        let mut encoder = NativeEncoder::default();
        encoder.encode_body(&[row("a"), row("b"), row("a")]);
        let bytes = &encoder.body;
        assert_eq!(&bytes[..2], &[COLUMNS.len() as u8, 3]);
        // The `local_app` column: name, type, version, flags (UInt8 indexes), keys, indexes.
        let mut expected = Vec::new();
        put_string(&mut expected, "local_app");
        put_string(&mut expected, "LowCardinality(String)");
        put(&mut expected, 1u64);
        put(&mut expected, (1u64 << 9) | (1 << 10));
        put(&mut expected, 2u64);
        put_string(&mut expected, "a");
        put_string(&mut expected, "b");
        put(&mut expected, 3u64);
        expected.extend([0, 1, 0]);
        assert!(
            bytes.windows(expected.len()).any(|w| w == expected),
            "the local_app column is not in the block as expected"
        );
    }

    #[test]
    fn a_dictionary_tells_near_equal_keys_apart() {
        let mut dictionary = Dictionary::default();
        let keys = [
            "",
            "a",
            "ab",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "abcdefgh\0",
            "é",
        ];
        let first: Vec<u32> = keys.iter().map(|k| dictionary.index(k)).collect();
        let again: Vec<u32> = keys.iter().map(|k| dictionary.index(k)).collect();
        assert_eq!(first, (0..keys.len() as u32).collect::<Vec<_>>());
        assert_eq!(again, first);
        let mut expected = Vec::new();
        keys.iter().for_each(|k| put_string(&mut expected, k));
        let mut written = Vec::new();
        dictionary.put_keys(&mut written);
        assert_eq!(written, expected);
    }

    #[test]
    fn index_width_grows_with_the_dictionary() {
        let width = |keys: usize| {
            let mut column = Column::default();
            for key in 0..keys {
                column.dictionary.index(&key.to_string());
            }
            let mut out = Vec::new();
            put_dictionary(&mut out, &column);
            u64::from_le_bytes(out[8..16].try_into().unwrap()) & 0xff
        };
        assert_eq!(
            [
                width(1),
                width(256),
                width(257),
                width(65_536),
                width(65_537)
            ],
            [0, 0, 1, 1, 2]
        );
    }
}
