//! Where deltas go: JSON lines on stdout (debugging, laptops) and, at the edge, the protobuf
//! wire type of the raw topic.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netmeter_proto::raw;
use serde::Serialize;

use crate::conntrack::Tuple;
use crate::delta::ConntrackDelta;

/// Deltas of one interval `[start, end)`. An interval is handed on in parts of at most
/// 10,000 deltas, each an `Interval` with the same bounds.
#[derive(Debug, Clone)]
pub struct Interval {
    pub start: SystemTime,
    pub end: SystemTime,
    pub deltas: Vec<ConntrackDelta>,
    /// The interval's last part: once it is published, the whole interval is.
    pub last_part: bool,
}

/// One line of `--output stdout`.
#[derive(Serialize)]
struct JsonDelta {
    /// As flow records name it ([`netmeter_proto::protocol_name`]).
    proto: &'static str,
    orig_src: IpAddr,
    orig_dst: IpAddr,
    orig_sport: u16,
    orig_dport: u16,
    reply_src: IpAddr,
    reply_dst: IpAddr,
    reply_sport: u16,
    reply_dport: u16,
    orig_bytes: u64,
    orig_packets: u64,
    reply_bytes: u64,
    reply_packets: u64,
    interval_start: String,
    interval_end: String,
    new: bool,
    destroyed: bool,
    node_endpoint: bool,
    assured: bool,
    nat: bool,
    conntrack_id: u32,
    zone: u16,
}

/// Writes one JSON object per delta, one per line.
pub fn write_json_lines(interval: &Interval, out: &mut impl Write) -> std::io::Result<()> {
    let start = humantime::format_rfc3339_millis(interval.start).to_string();
    let end = humantime::format_rfc3339_millis(interval.end).to_string();
    for d in &interval.deltas {
        let line = JsonDelta {
            proto: netmeter_proto::protocol_name(d.entry.protocol.into()),
            orig_src: d.entry.original.src,
            orig_dst: d.entry.original.dst,
            orig_sport: d.entry.original.src_port,
            orig_dport: d.entry.original.dst_port,
            reply_src: d.entry.reply.src,
            reply_dst: d.entry.reply.dst,
            reply_sport: d.entry.reply.src_port,
            reply_dport: d.entry.reply.dst_port,
            orig_bytes: d.delta.orig_bytes,
            orig_packets: d.delta.orig_packets,
            reply_bytes: d.delta.reply_bytes,
            reply_packets: d.delta.reply_packets,
            interval_start: start.clone(),
            interval_end: end.clone(),
            new: d.new,
            destroyed: d.destroyed,
            node_endpoint: d.node_endpoint,
            assured: d.entry.assured(),
            nat: d.entry.nat(),
            conntrack_id: d.entry.id,
            zone: d.entry.zone,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

fn wire_tuple(t: &Tuple) -> raw::Tuple {
    let bytes = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    raw::Tuple {
        src: bytes(t.src),
        dst: bytes(t.dst),
        src_port: u32::from(t.src_port),
        dst_port: u32::from(t.dst_port),
    }
}

/// The wire form of one delta.
pub fn wire_delta(d: &ConntrackDelta) -> raw::ConnectionDelta {
    let family = if d.entry.is_ipv6() {
        raw::AddressFamily::Ipv6
    } else {
        raw::AddressFamily::Ipv4
    };
    raw::ConnectionDelta {
        family: family as i32,
        protocol: u32::from(d.entry.protocol),
        original: Some(wire_tuple(&d.entry.original)),
        reply: Some(wire_tuple(&d.entry.reply)),
        conntrack_id: d.entry.id,
        zone: u32::from(d.entry.zone),
        orig_bytes: d.delta.orig_bytes,
        orig_packets: d.delta.orig_packets,
        reply_bytes: d.delta.reply_bytes,
        reply_packets: d.delta.reply_packets,
        new: d.new,
        destroyed: d.destroyed,
        assured: d.entry.assured(),
        nat: d.entry.nat(),
        mark: d.entry.mark,
        node_endpoint: d.node_endpoint,
    }
}

/// Interval bounds in the wire's Unix milliseconds.
pub fn wire_interval(interval: &Interval) -> (u64, u64) {
    (unix_ms(interval.start), unix_ms(interval.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{ConntrackEntry, Counters};

    fn delta() -> ConntrackDelta {
        let a = |s: &str| s.parse().unwrap();
        ConntrackDelta {
            entry: ConntrackEntry {
                protocol: 6,
                original: Tuple {
                    src: a("10.77.0.2"),
                    dst: a("10.96.0.10"),
                    src_port: 40000,
                    dst_port: 80,
                },
                reply: Tuple {
                    src: a("10.77.0.3"),
                    dst: a("10.77.0.2"),
                    src_port: 8080,
                    dst_port: 40000,
                },
                id: 42,
                zone: 0,
                mark: 0,
                status: 0x1be,
                counters: None,
            },
            delta: Counters {
                orig_bytes: 1_000_676,
                orig_packets: 12,
                reply_bytes: 520,
                reply_packets: 10,
            },
            new: true,
            destroyed: false,
            node_endpoint: false,
        }
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        let interval = Interval {
            start: UNIX_EPOCH + Duration::from_secs(1_764_000_000),
            end: UNIX_EPOCH + Duration::from_secs(1_764_000_005),
            deltas: vec![delta()],
            last_part: true,
        };
        let mut out = Vec::new();
        write_json_lines(&interval, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["orig_dst"], "10.96.0.10");
        assert_eq!(v["reply_src"], "10.77.0.3");
        assert_eq!(v["reply_sport"], 8080);
        assert_eq!(v["orig_bytes"], 1_000_676);
        assert_eq!(v["interval_start"], "2025-11-24T16:00:00.000Z");
        assert_eq!(v["interval_end"], "2025-11-24T16:00:05.000Z");
        assert_eq!(v["destroyed"], false);
        assert_eq!(v["nat"], true);
    }

    #[test]
    fn wire_delta_keeps_addresses_as_bytes() {
        let w = wire_delta(&delta());
        assert_eq!(w.original.unwrap().dst, vec![10, 96, 0, 10]);
        assert_eq!(w.reply.unwrap().src_port, 8080);
        assert_eq!(
            (w.family, w.orig_bytes, w.nat, w.new),
            (raw::AddressFamily::Ipv4 as i32, 1_000_676, true, true)
        );
    }
}
