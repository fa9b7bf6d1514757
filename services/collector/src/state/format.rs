//! The bytes of the state files. Little-endian; every file is a header, records, and the xxh3
//! checksum (u64) of everything before it:
//!
//! - header: magic (8 bytes, one per file kind), version (u32), dump mode (u8), boot id and node
//!   name (u16 length + UTF-8 each), netns device, inode and cookie (u64 each), key scheme (u64),
//!   time (Unix ms, u64), record count (u64);
//! - a connection: 32 bytes — key, original bytes, reply bytes (low 48 bits) with missed dumps
//!   (high 16), original packets (u32), reply packets (u32): the tracker's own slot, written
//!   straight from its table (no copy of it is made);
//! - a batch: interval end if the batch completes one (Unix ms, 0 if not), sequence, deltas,
//!   payload length (u64 each), payload.
//!
//! Readers check the header before reading on, the size before allocating, and the checksum at
//! the end: a truncated or damaged file is [`Ignored::Corrupt`], never half applied.

use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::Xxh3Default;

use super::{FileKind, Header, Ignored, NetnsId, TableIdentity, check, corrupt};
use crate::conntrack::DumpMode;
use crate::delta::{DeltaTracker, SavedConnection};
use crate::publish::EncodedBatch;
use crate::table::{ConnectionState, REPLY_BYTES_MASK};

/// Format version of every file; files of another version are ignored.
pub const VERSION: u32 = 1;
/// Bytes per saved connection.
pub const RECORD_BYTES: u64 = 32;
const CHECKSUM_BYTES: u64 = 8;
/// Longest boot id or node name read back (a corrupt length must not allocate much).
const MAX_NAME_BYTES: u16 = 1024;
/// Largest batch payload read back (`--max-message-bytes` is at most 100 MB).
const MAX_BATCH_BYTES: u64 = 128 << 20;

/// A reader or writer that hashes what passes through it, for the checksum trailer.
struct Checked<T> {
    inner: T,
    hash: Xxh3Default,
    bytes: u64,
}

impl<T> Checked<T> {
    fn new(inner: T) -> Self {
        Checked {
            inner,
            hash: Xxh3Default::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Checked<W> {
    /// Writes the checksum of everything written so far.
    fn finish(mut self) -> io::Result<()> {
        let sum = self.hash.digest();
        self.inner.write_all(&sum.to_le_bytes())?;
        self.inner.flush()
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: Read> Checked<R> {
    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0; N];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    fn u16(&mut self) -> io::Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> io::Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> io::Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> io::Result<String> {
        let len = self.u16()?;
        if len > MAX_NAME_BYTES {
            return Err(corrupt(format!("a {what} of {len} bytes")));
        }
        let mut bytes = vec![0; usize::from(len)];
        self.read_exact(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| corrupt(format!("the {what} is not UTF-8")))
    }

    /// Reads the checksum trailer and compares it with what was read, then expects the end.
    fn verify(mut self) -> Result<(), Ignored> {
        let expected = self.hash.digest();
        let mut sum = [0; 8];
        self.inner.read_exact(&mut sum)?;
        if u64::from_le_bytes(sum) != expected {
            return Err(Ignored::Corrupt("checksum mismatch".into()));
        }
        if self.inner.read(&mut [0])? != 0 {
            return Err(Ignored::Corrupt("data after the checksum".into()));
        }
        Ok(())
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn mode_byte(mode: DumpMode) -> u8 {
    match mode {
        DumpMode::Read => 0,
        DumpMode::Zero => 1,
    }
}

impl Header {
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let t = &self.table;
        out.write_all(self.kind.magic())?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&[mode_byte(t.mode)])?;
        for s in [&t.boot_id, &t.node_name] {
            let len = u16::try_from(s.len())
                .ok()
                .filter(|n| *n <= MAX_NAME_BYTES)
                .ok_or_else(|| io::Error::other(format!("{s:?} is too long to save")))?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(s.as_bytes())?;
        }
        for n in [
            t.netns.dev,
            t.netns.ino,
            t.netns.cookie,
            t.key_scheme,
            unix_ms(self.time),
            self.records,
        ] {
            out.write_all(&n.to_le_bytes())?;
        }
        Ok(())
    }

    fn read(input: &mut Checked<impl Read>, kind: FileKind) -> Result<Header, Ignored> {
        let magic: [u8; 8] = input.array()?;
        if &magic != kind.magic() {
            return Err(Ignored::Corrupt(format!(
                "it does not start like a {} file",
                kind.file_name()
            )));
        }
        let version = input.u32()?;
        if version != VERSION {
            return Err(Ignored::OtherVersion { found: version });
        }
        let mode = match input.array::<1>()?[0] {
            0 => DumpMode::Read,
            1 => DumpMode::Zero,
            n => return Err(Ignored::Corrupt(format!("dump mode {n}"))),
        };
        let boot_id = input.string("boot id")?;
        let node_name = input.string("node name")?;
        let netns = NetnsId {
            dev: input.u64()?,
            ino: input.u64()?,
            cookie: input.u64()?,
        };
        let key_scheme = input.u64()?;
        let time = from_unix_ms(input.u64()?);
        let records = input.u64()?;
        Ok(Header {
            kind,
            table: TableIdentity {
                boot_id,
                netns,
                node_name,
                mode,
                key_scheme,
            },
            time,
            records,
        })
    }
}

/// Starts writing a file: a checksumming writer with the header written.
fn start_file<W: Write>(
    out: W,
    kind: FileKind,
    table: &TableIdentity,
    time: SystemTime,
    records: u64,
) -> io::Result<Checked<W>> {
    let header = Header {
        kind,
        table: table.clone(),
        time,
        records,
    };
    let mut out = Checked::new(out);
    header.write(&mut out)?;
    Ok(out)
}

fn encode_connection(c: &SavedConnection) -> [u8; RECORD_BYTES as usize] {
    let mut r = [0; RECORD_BYTES as usize];
    let reply = (c.state.reply_bytes & REPLY_BYTES_MASK) | (u64::from(c.missed_dumps) << 48);
    r[0..8].copy_from_slice(&c.key.to_le_bytes());
    r[8..16].copy_from_slice(&c.state.orig_bytes.to_le_bytes());
    r[16..24].copy_from_slice(&reply.to_le_bytes());
    r[24..28].copy_from_slice(&c.state.orig_packets.to_le_bytes());
    r[28..32].copy_from_slice(&c.state.reply_packets.to_le_bytes());
    r
}

fn decode_connection(r: &[u8; RECORD_BYTES as usize]) -> SavedConnection {
    let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"));
    let reply = u64_at(16);
    SavedConnection {
        key: u64_at(0),
        state: ConnectionState {
            orig_bytes: u64_at(8),
            reply_bytes: reply & REPLY_BYTES_MASK,
            orig_packets: u32_at(24),
            reply_packets: u32_at(28),
            seen: 0,
        },
        missed_dumps: (reply >> 48) as u16,
    }
}

/// Writes the tracker's state, streaming from its table: a header, a 32-byte record per
/// connection, the checksum. `since` is the final dump's start: where the next interval begins.
pub fn write_connections(
    out: impl Write,
    table: &TableIdentity,
    since: SystemTime,
    tracker: &DeltaTracker,
) -> io::Result<()> {
    let records = tracker.saved_len() as u64;
    let mut out = start_file(out, FileKind::Connections, table, since, records)?;
    let mut written = 0;
    for c in tracker.saved_connections() {
        out.write_all(&encode_connection(&c))?;
        written += 1;
    }
    if written != records {
        return Err(io::Error::other(format!(
            "{written} connections written, {records} announced"
        )));
    }
    out.finish()
}

/// Reads a state written by [`write_connections`] (`len`: the file's size) into a tracker that
/// continues from it, if it may be continued here (see [`check`]). The header is checked before
/// the records are read.
pub fn read_connections(
    input: impl Read,
    len: u64,
    here: &TableIdentity,
    now: SystemTime,
    max_age: Duration,
) -> Result<(Header, DeltaTracker), Ignored> {
    let mut input = Checked::new(input);
    let header = Header::read(&mut input, FileKind::Connections)?;
    let expected = header
        .records
        .checked_mul(RECORD_BYTES)
        .and_then(|n| n.checked_add(input.bytes + CHECKSUM_BYTES));
    if expected != Some(len) {
        return Err(Ignored::Corrupt(format!(
            "{len} bytes, but the header announces {} connections",
            header.records
        )));
    }
    check(&header, here, now, Some(max_age))?;
    let mut failed = None;
    let saved = (0..header.records).map_while(|_| match input.array() {
        Ok(record) => Some(decode_connection(&record)),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let tracker = DeltaTracker::restored(here.mode, header.records as usize, saved);
    if let Some(e) = failed {
        return Err(e.into());
    }
    input.verify()?;
    Ok((header, tracker))
}

/// Writes the marker: the broker acknowledged every interval up to `published_through`.
pub fn write_marker(
    out: impl Write,
    table: &TableIdentity,
    published_through: SystemTime,
) -> io::Result<()> {
    start_file(out, FileKind::Marker, table, published_through, 0)?.finish()
}

/// Reads a marker written by [`write_marker`]; what it means is [`restart_gap`]'s business.
pub fn read_marker(input: impl Read) -> Result<Header, Ignored> {
    let mut input = Checked::new(input);
    let header = Header::read(&mut input, FileKind::Marker)?;
    if header.records != 0 {
        return Err(Ignored::Corrupt(format!("{} records", header.records)));
    }
    input.verify()?;
    Ok(header)
}

/// Writes batches that were not acknowledged, in sending order.
pub fn write_batches(
    out: impl Write,
    table: &TableIdentity,
    saved_at: SystemTime,
    batches: &[EncodedBatch],
) -> io::Result<()> {
    let records = batches.len() as u64;
    let mut out = start_file(out, FileKind::Batches, table, saved_at, records)?;
    for b in batches {
        for n in [
            b.completes_interval_at.map_or(0, unix_ms),
            b.sequence,
            b.deltas as u64,
            b.payload.len() as u64,
        ] {
            out.write_all(&n.to_le_bytes())?;
        }
        out.write_all(&b.payload)?;
    }
    out.finish()
}

/// Reads batches written by [`write_batches`] (`len`: the file's size). They are deltas already
/// computed, so only the node must match: they are published under its name.
pub fn read_batches(
    input: impl Read,
    len: u64,
    here: &TableIdentity,
) -> Result<Vec<EncodedBatch>, Ignored> {
    let mut input = Checked::new(input);
    let header = Header::read(&mut input, FileKind::Batches)?;
    if header.table.node_name != here.node_name {
        return Err(Ignored::OtherNode {
            saved: header.table.node_name,
            here: here.node_name.clone(),
        });
    }
    let mut batches = Vec::new();
    for _ in 0..header.records {
        let completes = input.u64()?;
        let sequence = input.u64()?;
        let deltas = input.u64()?;
        let size = input.u64()?;
        if size > MAX_BATCH_BYTES || input.bytes + size + CHECKSUM_BYTES > len {
            return Err(Ignored::Corrupt(format!(
                "batch {sequence} claims {size} bytes"
            )));
        }
        let mut payload = vec![0; size as usize];
        input.read_exact(&mut payload)?;
        batches.push(EncodedBatch {
            sequence,
            deltas: deltas as usize,
            payload,
            completes_interval_at: (completes != 0).then(|| from_unix_ms(completes)),
        });
    }
    input.verify()?;
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, entry, here, tracker};
    use super::*;

    fn encoded_state(t: &DeltaTracker, since: SystemTime) -> Vec<u8> {
        let mut out = Vec::new();
        write_connections(&mut out, &here(), since, t).unwrap();
        out
    }

    fn decode_state(bytes: &[u8], now: SystemTime) -> Result<(Header, DeltaTracker), Ignored> {
        read_connections(
            bytes,
            bytes.len() as u64,
            &here(),
            now,
            Duration::from_secs(600),
        )
    }

    #[test]
    fn a_million_connections_round_trip_in_32_bytes_each() {
        let t = tracker(1_000_000);
        let bytes = encoded_state(&t, at(0));
        let header_len = bytes.len() as u64 - 1_000_000 * RECORD_BYTES - CHECKSUM_BYTES;
        assert!(header_len < 128, "header of {header_len} bytes");
        let (header, restored) = decode_state(&bytes, at(30)).unwrap();
        assert_eq!((header.records, header.time), (1_000_000, at(0)));
        assert_eq!(header.table, here());
        let mut saved: Vec<_> = t.saved_connections().collect();
        let mut back: Vec<_> = restored.saved_connections().collect();
        saved.sort_by_key(|c| c.key);
        back.sort_by_key(|c| c.key);
        assert_eq!(saved.len(), 1_000_000);
        assert_eq!(
            saved, back,
            "every connection, its counters and its missed dumps"
        );
        assert_eq!(
            saved.iter().filter(|c| c.missed_dumps == 1).count(),
            100_000
        );
    }

    #[test]
    fn the_restored_tracker_counts_from_the_saved_counters() {
        let t = tracker(100);
        let (_, mut restored) = decode_state(&encoded_state(&t, at(0)), at(5)).unwrap();
        restored.start_dump();
        let d = restored.observe(&entry(7, 5_007 + 300)).unwrap();
        assert_eq!(
            (d.delta.orig_bytes, d.delta.reply_bytes, d.new),
            (300, 900, false)
        );
        // Waiting for its DESTROY event when saved: the event counts only the rest.
        let last = restored.destroyed(&entry(10, 1_010 + 40)).unwrap();
        assert_eq!((last.delta.orig_bytes, last.new), (40, false));
    }

    #[test]
    fn truncated_or_damaged_states_are_refused_as_corrupt() {
        let bytes = encoded_state(&tracker(50), at(0));
        // Cut anywhere: inside the magic, the header, a record, the checksum.
        for cut in [
            0,
            5,
            20,
            60,
            bytes.len() / 2,
            bytes.len() - 8,
            bytes.len() - 1,
        ] {
            let cut = &bytes[..cut];
            let err = decode_state(cut, at(1)).err().unwrap();
            assert_eq!(err.metric_label(), "corrupt", "cut at {}: {err}", cut.len());
        }
        // One flipped bit anywhere in the records or the checksum.
        for at_byte in [bytes.len() - 200, bytes.len() - 33, bytes.len() - 3] {
            let mut damaged = bytes.clone();
            damaged[at_byte] ^= 0x10;
            let err = decode_state(&damaged, at(1)).err().unwrap();
            assert_eq!(err.to_string(), "it is corrupt: checksum mismatch");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 32]);
        assert_eq!(
            decode_state(&longer, at(1)).err().unwrap().metric_label(),
            "corrupt",
            "a record too many"
        );
        let mut other_kind = bytes.clone();
        other_kind[..8].copy_from_slice(FileKind::Marker.magic());
        assert!(matches!(
            decode_state(&other_kind, at(1)),
            Err(Ignored::Corrupt(_))
        ));
        let mut other_version = bytes.clone();
        other_version[8] = 2;
        assert_eq!(
            decode_state(&other_version, at(1))
                .err()
                .unwrap()
                .to_string(),
            "it has format version 2, this collector reads version 1"
        );
    }

    #[test]
    fn a_huge_record_count_in_a_damaged_header_allocates_nothing() {
        let mut bytes = encoded_state(&tracker(3), at(0));
        let count_at = bytes.len() - 3 * RECORD_BYTES as usize - 16;
        bytes[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = decode_state(&bytes, at(1)).err().unwrap();
        assert!(matches!(err, Ignored::Corrupt(_)), "{err}");
    }

    #[test]
    fn unsent_batches_round_trip_and_stay_on_their_node() {
        let batches: Vec<EncodedBatch> = (0..3)
            .map(|i| EncodedBatch {
                sequence: 40 + i,
                deltas: i as usize * 10,
                payload: vec![i as u8; 1000 * i as usize],
                completes_interval_at: (i == 2).then(|| at(5)),
            })
            .collect();
        let mut bytes = Vec::new();
        write_batches(&mut bytes, &here(), at(9), &batches).unwrap();
        let back = read_batches(&bytes[..], bytes.len() as u64, &here()).unwrap();
        let key = |b: &EncodedBatch| {
            (
                b.sequence,
                b.deltas,
                b.payload.clone(),
                b.completes_interval_at,
            )
        };
        assert_eq!(
            back.iter().map(key).collect::<Vec<_>>(),
            batches.iter().map(key).collect::<Vec<_>>()
        );
        let mut other = here();
        other.node_name = "node-b".into();
        other.boot_id = "after a reboot: still this node's deltas".into();
        assert_eq!(
            read_batches(&bytes[..], bytes.len() as u64, &other)
                .unwrap_err()
                .metric_label(),
            "other_node"
        );
        let cut = &bytes[..bytes.len() - 500];
        assert!(matches!(
            read_batches(cut, cut.len() as u64, &here()),
            Err(Ignored::Corrupt(_))
        ));
    }
}
