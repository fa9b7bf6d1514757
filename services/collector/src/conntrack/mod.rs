//! Linux conntrack as the collector sees it: entries read over netlink ([`netlink`]) and
//! decoded from their raw attributes ([`attributes`]) into plain [`ConntrackEntry`] values.

pub mod attributes;
pub mod netlink;

use std::net::IpAddr;

pub use attributes::{ParseError, parse_entry};
pub use netlink::{ConntrackSocket, DumpMode};

/// One direction of a connection as conntrack records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP/SCTP/DCCP ports; the ICMP id in `src_port`; 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
}

/// Byte and packet counters of both directions (need `nf_conntrack_acct=1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub orig_bytes: u64,
    pub orig_packets: u64,
    pub reply_bytes: u64,
    pub reply_packets: u64,
}

/// A conntrack table entry, from a dump or an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackEntry {
    /// IANA protocol number.
    pub protocol: u8,
    pub original: Tuple,
    pub reply: Tuple,
    pub id: u32,
    pub zone: u16,
    pub mark: u32,
    /// `IPS_*` status bits.
    pub status: u32,
    /// `None` when accounting is off for this entry (no counter attributes at all).
    pub counters: Option<Counters>,
}

/// `--mark VALUE/MASK`: entries with `mark & mask == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkFilter {
    pub value: u32,
    pub mask: u32,
}

/// Which entries the collector meters. Loopback is never metered: it never leaves the host.
/// Everything else is kept, incl. hostNetwork pods and node processes (the attributor decides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub zone: Option<u16>,
    pub mark: Option<MarkFilter>,
}

impl EntryFilter {
    pub fn wants(&self, entry: &ConntrackEntry) -> bool {
        !entry.is_loopback()
            && self.zone.is_none_or(|zone| entry.zone == zone)
            && self.mark.is_none_or(|m| entry.mark & m.mask == m.value)
    }
}

/// Conntrack status bits we use (linux/netfilter/nf_conntrack_common.h).
pub mod status {
    pub const ASSURED: u32 = 1 << 2;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
}

impl ConntrackEntry {
    pub fn is_ipv6(&self) -> bool {
        self.original.src.is_ipv6()
    }

    pub fn assured(&self) -> bool {
        self.status & status::ASSURED != 0
    }

    pub fn nat(&self) -> bool {
        self.status & (status::SRC_NAT | status::DST_NAT) != 0
    }

    /// Both ends on loopback: never leaves the host, never billed.
    pub fn is_loopback(&self) -> bool {
        self.original.src.is_loopback() && self.original.dst.is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(src: &str, zone: u16, mark: u32) -> ConntrackEntry {
        let a = |s: &str| s.parse().unwrap();
        let tuple = Tuple {
            src: a(src),
            dst: a(src),
            src_port: 1,
            dst_port: 2,
        };
        ConntrackEntry {
            protocol: 17,
            original: tuple,
            reply: tuple,
            id: 1,
            zone,
            mark,
            status: 0,
            counters: None,
        }
    }

    #[test]
    fn filter_by_zone_and_mark_and_never_loopback() {
        let all = EntryFilter::default();
        assert!(all.wants(&entry("10.0.0.1", 0, 0)));
        assert!(!all.wants(&entry("127.0.0.1", 0, 0)));
        assert!(!all.wants(&entry("::1", 0, 0)));
        let zone = EntryFilter {
            zone: Some(3),
            mark: None,
        };
        assert!(zone.wants(&entry("10.0.0.1", 3, 0)) && !zone.wants(&entry("10.0.0.1", 0, 0)));
        let mark = EntryFilter {
            zone: None,
            mark: Some(MarkFilter {
                value: 0x10,
                mask: 0xf0,
            }),
        };
        assert!(
            mark.wants(&entry("10.0.0.1", 0, 0x1f)) && !mark.wants(&entry("10.0.0.1", 0, 0x2f))
        );
    }
}
