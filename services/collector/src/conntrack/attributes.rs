//! Decodes one ctnetlink message payload (after the netlink header) into a [`ConntrackEntry`],
//! without allocating. netlink-packet-netfilter has no typed counters, id or zone attributes
//! and its typed parser allocates per entry; at a million entries per dump this walk over the
//! raw attributes is the hot path, so it is written here, once, and tested on byte fixtures.
//!
//! Layout (linux/netfilter/nfnetlink_conntrack.h): a 4-byte `nfgenmsg` (family, version,
//! res_id), then attributes `{len: u16, type: u16, value, pad to 4}`; values are big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ConntrackEntry, Counters, Tuple};

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;

/// The kernel may set NLA_F_NESTED / NLA_F_NET_BYTEORDER in the type field.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFGENMSG_LEN: usize = 4;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("attribute at offset {0} overruns the message")]
    Truncated(usize),
    #[error("entry has no {0} tuple")]
    MissingTuple(&'static str),
    #[error("tuple has no addresses or protocol")]
    IncompleteTuple,
    #[error("attribute {kind} has {len} bytes, expected {expected}")]
    BadLength {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
}

/// Iterates the attributes in `buf` as `(type, value)`.
struct Attributes<'a> {
    buf: &'a [u8],
    offset: usize,
    base: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.offset..];
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            let at = self.base + self.offset;
            self.offset = self.buf.len();
            return Some(Err(ParseError::Truncated(at)));
        }
        let value = &rest[4..len];
        self.offset += (len + 3) & !3;
        self.offset = self.offset.min(self.buf.len());
        Some(Ok((kind, value)))
    }
}

fn attributes(buf: &[u8], base: usize) -> Attributes<'_> {
    Attributes {
        buf,
        offset: 0,
        base,
    }
}

/// The value as exactly `N` big-endian bytes, or a length error naming the attribute.
fn be<const N: usize>(v: &[u8], kind: &'static str) -> Result<[u8; N], ParseError> {
    v.try_into().map_err(|_| ParseError::BadLength {
        kind,
        len: v.len(),
        expected: N,
    })
}

fn be_u16(v: &[u8], kind: &'static str) -> Result<u16, ParseError> {
    be(v, kind).map(u16::from_be_bytes)
}

fn be_u32(v: &[u8], kind: &'static str) -> Result<u32, ParseError> {
    be(v, kind).map(u32::from_be_bytes)
}

fn be_u64(v: &[u8], kind: &'static str) -> Result<u64, ParseError> {
    be(v, kind).map(u64::from_be_bytes)
}

/// Parses a ctnetlink payload (starting at `nfgenmsg`) into an entry.
pub fn parse_entry(payload: &[u8]) -> Result<ConntrackEntry, ParseError> {
    if payload.len() < NFGENMSG_LEN {
        return Err(ParseError::Truncated(0));
    }
    let mut original = None;
    let mut reply = None;
    let mut protocol = 0;
    let mut entry_counters = Counters::default();
    let mut has_counters = false;
    let (mut id, mut zone, mut mark, mut status) = (0, 0, 0, 0);
    for attribute in attributes(&payload[NFGENMSG_LEN..], NFGENMSG_LEN) {
        let (kind, value) = attribute?;
        match kind {
            CTA_TUPLE_ORIG => {
                let (tuple, proto) = parse_tuple(value)?;
                original = Some(tuple);
                protocol = proto;
            }
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(value)?.0),
            CTA_STATUS => status = be_u32(value, "CTA_STATUS")?,
            CTA_MARK => mark = be_u32(value, "CTA_MARK")?,
            CTA_ID => id = be_u32(value, "CTA_ID")?,
            CTA_ZONE => zone = be_u16(value, "CTA_ZONE")?,
            CTA_COUNTERS_ORIG => {
                (entry_counters.orig_packets, entry_counters.orig_bytes) = parse_counters(value)?;
                has_counters = true;
            }
            CTA_COUNTERS_REPLY => {
                (entry_counters.reply_packets, entry_counters.reply_bytes) = parse_counters(value)?;
                has_counters = true;
            }
            _ => {}
        }
    }
    Ok(ConntrackEntry {
        protocol,
        original: original.ok_or(ParseError::MissingTuple("original"))?,
        reply: reply.ok_or(ParseError::MissingTuple("reply"))?,
        id,
        zone,
        mark,
        status,
        counters: has_counters.then_some(entry_counters),
    })
}

fn parse_tuple(buf: &[u8]) -> Result<(Tuple, u8), ParseError> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut src_port, mut dst_port) = (0, 0);
    for attribute in attributes(buf, 0) {
        let (kind, value) = attribute?;
        match kind {
            CTA_TUPLE_IP => {
                for ip in attributes(value, 0) {
                    let (kind, value) = ip?;
                    match kind {
                        CTA_IP_V4_SRC => src = Some(ipv4(value)?),
                        CTA_IP_V4_DST => dst = Some(ipv4(value)?),
                        CTA_IP_V6_SRC => src = Some(ipv6(value)?),
                        CTA_IP_V6_DST => dst = Some(ipv6(value)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for proto in attributes(value, 0) {
                    let (kind, value) = proto?;
                    match kind {
                        CTA_PROTO_NUM => protocol = value.first().copied(),
                        CTA_PROTO_SRC_PORT => src_port = be_u16(value, "CTA_PROTO_SRC_PORT")?,
                        CTA_PROTO_DST_PORT => dst_port = be_u16(value, "CTA_PROTO_DST_PORT")?,
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                            src_port = be_u16(value, "CTA_PROTO_ICMP_ID")?
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (src, dst, protocol) {
        (Some(src), Some(dst), Some(protocol)) => Ok((
            Tuple {
                src,
                dst,
                src_port,
                dst_port,
            },
            protocol,
        )),
        _ => Err(ParseError::IncompleteTuple),
    }
}

fn ipv4(v: &[u8]) -> Result<IpAddr, ParseError> {
    be::<4>(v, "CTA_IP_V4").map(|octets| IpAddr::V4(Ipv4Addr::from(octets)))
}

fn ipv6(v: &[u8]) -> Result<IpAddr, ParseError> {
    be::<16>(v, "CTA_IP_V6").map(|octets| IpAddr::V6(Ipv6Addr::from(octets)))
}

/// `(packets, bytes)`; the kernel sends 64-bit counters, older kernels 32-bit ones.
fn parse_counters(buf: &[u8]) -> Result<(u64, u64), ParseError> {
    let (mut packets, mut bytes) = (0, 0);
    for attribute in attributes(buf, 0) {
        let (kind, value) = attribute?;
        match kind {
            CTA_COUNTERS_PACKETS => packets = be_u64(value, "CTA_COUNTERS_PACKETS")?,
            CTA_COUNTERS_BYTES => bytes = be_u64(value, "CTA_COUNTERS_BYTES")?,
            CTA_COUNTERS32_PACKETS => packets = u64::from(be_u32(value, "CTA_COUNTERS32_PACKETS")?),
            CTA_COUNTERS32_BYTES => bytes = u64::from(be_u32(value, "CTA_COUNTERS32_BYTES")?),
            _ => {}
        }
    }
    Ok((packets, bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds attributes the way the kernel lays them out (native-endian header, padding).
    pub(crate) fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    pub(crate) fn nested(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | 0x8000, &children.concat())
    }

    pub(crate) fn tuple(
        kind: u16,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let ip = |kind4, kind6, addr: IpAddr| match addr {
            IpAddr::V4(a) => attr(kind4, &a.octets()),
            IpAddr::V6(a) => attr(kind6, &a.octets()),
        };
        nested(
            kind,
            &[
                nested(
                    CTA_TUPLE_IP,
                    &[
                        ip(CTA_IP_V4_SRC, CTA_IP_V6_SRC, src),
                        ip(CTA_IP_V4_DST, CTA_IP_V6_DST, dst),
                    ],
                ),
                nested(
                    CTA_TUPLE_PROTO,
                    &[
                        attr(CTA_PROTO_NUM, &[proto]),
                        attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
                        attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    pub(crate) fn counters(kind: u16, packets: u64, bytes: u64) -> Vec<u8> {
        nested(
            kind,
            &[
                attr(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
                attr(CTA_COUNTERS_BYTES, &bytes.to_be_bytes()),
            ],
        )
    }

    /// A DNAT'd TCP connection 10.77.0.2:40000 -> VIP 10.96.0.10:80, backend 10.77.0.3:8080.
    pub(crate) fn dnat_message(id: u32, orig: (u64, u64), reply: (u64, u64)) -> Vec<u8> {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        [
            vec![2, 0, 0, 0],
            tuple(
                CTA_TUPLE_ORIG,
                a("10.77.0.2"),
                a("10.96.0.10"),
                6,
                40000,
                80,
            ),
            tuple(
                CTA_TUPLE_REPLY,
                a("10.77.0.3"),
                a("10.77.0.2"),
                6,
                8080,
                40000,
            ),
            attr(CTA_STATUS, &(0x1be_u32).to_be_bytes()),
            attr(CTA_MARK, &7u32.to_be_bytes()),
            counters(CTA_COUNTERS_ORIG, orig.0, orig.1),
            counters(CTA_COUNTERS_REPLY, reply.0, reply.1),
            attr(CTA_ID, &id.to_be_bytes()),
            attr(CTA_ZONE, &3u16.to_be_bytes()),
        ]
        .concat()
    }

    #[test]
    fn dnat_entry_decodes_with_backend_in_reply_tuple() {
        let entry = parse_entry(&dnat_message(0xdead_beef, (12, 1_000_676), (10, 520))).unwrap();
        assert_eq!(entry.protocol, 6);
        assert_eq!(entry.original.dst, "10.96.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(entry.reply.src, "10.77.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(
            (entry.reply.src_port, entry.original.src_port),
            (8080, 40000)
        );
        assert_eq!((entry.id, entry.zone, entry.mark), (0xdead_beef, 3, 7));
        assert!(entry.assured() && entry.nat());
        assert_eq!(
            entry.counters,
            Some(Counters {
                orig_packets: 12,
                orig_bytes: 1_000_676,
                reply_packets: 10,
                reply_bytes: 520
            })
        );
    }

    #[test]
    fn ipv6_udp_without_accounting_has_no_counters() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let msg = [
            vec![10, 0, 0, 0],
            tuple(CTA_TUPLE_ORIG, a("fd77::2"), a("fd77::3"), 17, 5353, 53),
            tuple(CTA_TUPLE_REPLY, a("fd77::3"), a("fd77::2"), 17, 53, 5353),
        ]
        .concat();
        let entry = parse_entry(&msg).unwrap();
        assert!(entry.is_ipv6());
        assert_eq!(entry.counters, None);
        assert_eq!((entry.id, entry.zone, entry.status), (0, 0, 0));
    }

    #[test]
    fn broken_input_is_an_error_not_a_panic() {
        let full = dnat_message(1, (1, 1), (1, 1));
        for cut in 0..full.len() {
            let _ = parse_entry(&full[..cut]); // any result, never a panic
        }
        assert_eq!(
            parse_entry(&[2, 0, 0, 0]),
            Err(ParseError::MissingTuple("original"))
        );
        let mut bad = full.clone();
        bad[4] = 0xff; // first attribute claims 255+ bytes
        assert!(matches!(parse_entry(&bad), Err(ParseError::Truncated(4))));
    }
}
