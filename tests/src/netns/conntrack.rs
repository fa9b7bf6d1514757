//! The reference conntrack reader: the `conntrack` tool (libnetfilter_conntrack), an
//! implementation independent of ours, run in a namespace and its output parsed, so tests can
//! compare the collector's netlink reader against it.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use anyhow::{Context, anyhow, bail, ensure};

use super::namespaces::run;

/// One direction of a conntrack entry, as `conntrack -L -o extended` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for protocols without ports (see `icmp`).
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 type, code and id, for those protocols.
    pub icmp: Option<IcmpTuple>,
    pub packets: u64,
    pub bytes: u64,
}

impl KernelTuple {
    pub fn src_addr(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }

    pub fn dst_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpTuple {
    pub kind: u8,
    pub code: u8,
    pub id: u16,
}

/// A conntrack entry as the `conntrack` tool (libnetfilter_conntrack) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    /// Address family number: 2 (IPv4) or 10 (IPv6).
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    /// `tcp`, `udp`, ...
    pub protocol_name: String,
    /// Seconds until the entry expires.
    pub timeout_secs: u64,
    /// Protocol state for stateful protocols, e.g. `ESTABLISHED`, `TIME_WAIT`.
    pub state: Option<String>,
    /// The original direction (the initiator's view: dst is the VIP before DNAT).
    pub orig: KernelTuple,
    /// The reply direction (src is the backend after DNAT).
    pub reply: KernelTuple,
    /// Bracketed flags such as `ASSURED`, `UNREPLIED`.
    pub flags: Vec<String>,
    pub mark: Option<u32>,
    pub zone: Option<u16>,
    /// CTA_ID: the kernel's id of the entry, unique among live entries.
    pub id: Option<u32>,
}

/// Lists the conntrack table of namespace `ns` with the `conntrack` tool (an implementation
/// independent of ours): `ip netns exec NS conntrack -L -f ipv4|ipv6 -o extended,id`. Errors if
/// an entry has no counters, which means `nf_conntrack_acct` was off when it was created.
pub fn conntrack_list(ns: &str) -> anyhow::Result<Vec<KernelEntry>> {
    let mut entries = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            ns,
            "conntrack",
            "-L",
            "-f",
            family,
            "-o",
            "extended,id",
        ]);
        let out = run(command, None)?;
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            entries.push(
                parse_conntrack_line(line)
                    .with_context(|| format!("cannot parse conntrack output line: {line}"))?,
            );
        }
    }
    Ok(entries)
}

#[derive(Default)]
struct PartialTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    icmp_id: Option<u16>,
    packets: Option<u64>,
    bytes: Option<u64>,
}

impl PartialTuple {
    fn finish(self, which: &str) -> anyhow::Result<KernelTuple> {
        let icmp = match (self.icmp_type, self.icmp_code, self.icmp_id) {
            (Some(kind), Some(code), Some(id)) => Some(IcmpTuple { kind, code, id }),
            _ => None,
        };
        Ok(KernelTuple {
            src: self
                .src
                .ok_or_else(|| anyhow!("{which} tuple has no src"))?,
            dst: self
                .dst
                .ok_or_else(|| anyhow!("{which} tuple has no dst"))?,
            sport: self.sport,
            dport: self.dport,
            icmp,
            packets: self.packets.ok_or_else(|| {
                anyhow!("{which} tuple has no counters (nf_conntrack_acct was 0)")
            })?,
            bytes: self.bytes.ok_or_else(|| {
                anyhow!("{which} tuple has no counters (nf_conntrack_acct was 0)")
            })?,
        })
    }
}

/// Parses one line of `conntrack -L -o extended,id`, e.g.
/// `ipv4 2 tcp 6 119 TIME_WAIT src=.. dst=.. sport=.. dport=.. packets=5 bytes=5268 src=..
/// dst=.. sport=.. dport=.. packets=3 bytes=164 [ASSURED] mark=0 use=1 id=2537237267`.
/// A tuple's fields run from its `src=` to its `bytes=`; `id=` inside a tuple is the ICMP id,
/// after the reply tuple it is the entry id.
pub fn parse_conntrack_line(line: &str) -> anyhow::Result<KernelEntry> {
    let mut tokens = line.split_whitespace();
    let mut next = |what: &str| tokens.next().ok_or_else(|| anyhow!("missing {what}"));
    let _family_name = next("family name")?;
    let family: u8 = next("family number")?
        .parse()
        .context("bad family number")?;
    let protocol_name = next("protocol name")?.to_string();
    let protocol: u8 = next("protocol number")?
        .parse()
        .context("bad protocol number")?;
    let timeout_secs: u64 = next("timeout")?.parse().context("bad timeout")?;

    let mut state = None;
    let mut tuples: Vec<PartialTuple> = Vec::new();
    // Whether the last tuple is still open (its `bytes=` not seen yet).
    let mut in_tuple = false;
    let mut flags = Vec::new();
    let (mut mark, mut zone, mut id) = (None, None, None);
    for token in tokens {
        if let Some(flag) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            flags.push(flag.to_string());
            continue;
        }
        let Some((key, value)) = token.split_once('=') else {
            ensure!(
                tuples.is_empty() && state.is_none(),
                "unexpected token {token:?}"
            );
            state = Some(token.to_string());
            continue;
        };
        if key == "src" {
            ensure!(tuples.len() < 2, "more than two tuples");
            tuples.push(PartialTuple::default());
            in_tuple = true;
        }
        let bad = || format!("bad value in {token:?}");
        match (in_tuple, tuples.last_mut()) {
            (true, Some(tuple)) => match key {
                "src" => tuple.src = Some(value.parse().with_context(bad)?),
                "dst" => tuple.dst = Some(value.parse().with_context(bad)?),
                "sport" => tuple.sport = value.parse().with_context(bad)?,
                "dport" => tuple.dport = value.parse().with_context(bad)?,
                "type" => tuple.icmp_type = Some(value.parse().with_context(bad)?),
                "code" => tuple.icmp_code = Some(value.parse().with_context(bad)?),
                "id" => tuple.icmp_id = Some(value.parse().with_context(bad)?),
                "packets" => tuple.packets = Some(value.parse().with_context(bad)?),
                "bytes" => {
                    tuple.bytes = Some(value.parse().with_context(bad)?);
                    in_tuple = false;
                }
                // E.g. `mark=` right after a tuple when accounting is off: the tuple ended.
                "mark" | "use" | "zone" | "secctx" | "labels" => {
                    in_tuple = false;
                    apply_trailing(key, value, &mut mark, &mut zone, &mut id).with_context(bad)?;
                }
                _ => {}
            },
            _ => apply_trailing(key, value, &mut mark, &mut zone, &mut id).with_context(bad)?,
        }
    }
    ensure!(
        tuples.len() == 2,
        "expected 2 tuples, found {}",
        tuples.len()
    );
    let reply = tuples.pop().map(|t| t.finish("reply")).transpose()?;
    let orig = tuples.pop().map(|t| t.finish("original")).transpose()?;
    let (Some(orig), Some(reply)) = (orig, reply) else {
        bail!("expected 2 tuples");
    };
    Ok(KernelEntry {
        family,
        protocol,
        protocol_name,
        timeout_secs,
        state,
        orig,
        reply,
        flags,
        mark,
        zone,
        id,
    })
}

fn apply_trailing(
    key: &str,
    value: &str,
    mark: &mut Option<u32>,
    zone: &mut Option<u16>,
    id: &mut Option<u32>,
) -> anyhow::Result<()> {
    match key {
        "mark" => *mark = Some(value.parse()?),
        "zone" => *zone = Some(value.parse()?),
        "id" => *id = Some(value.parse()?),
        _ => {}
    }
    Ok(())
}

/// Parses the output of `conntrack -E -e DESTROY -o extended` (the kernel's final counters of
/// ended connections): each line is a `-L` line behind an `[EVENT]` tag, with a `portid=`
/// trailer on events caused by userspace. Lines that are not events are skipped.
pub fn parse_conntrack_events(text: &str) -> anyhow::Result<Vec<KernelEntry>> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("[DESTROY]"))
        .map(|event| {
            let mut line: Vec<&str> = event
                .split_whitespace()
                .filter(|t| !t.starts_with("portid="))
                .collect();
            // Events from the kernel's timers carry no timeout field: the entry has none left.
            if line.get(4).is_some_and(|t| t.parse::<u64>().is_err()) {
                line.insert(4, "0");
            }
            parse_conntrack_line(&line.join(" ")).with_context(|| format!("event line {event:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{BACKEND_ADDR, POD_A_V6, SERVICE_ADDR};

    #[test]
    fn parses_dnat_tcp_with_id() {
        let e = parse_conntrack_line(
            "ipv4     2 tcp      6 119 TIME_WAIT src=10.77.0.2 dst=10.96.0.10 sport=50748 \
             dport=80 packets=5 bytes=5268 src=10.77.0.3 dst=10.77.0.2 sport=8080 dport=50748 \
             packets=3 bytes=164 [ASSURED] mark=0 use=1 id=2537237267",
        )
        .unwrap();
        assert_eq!((e.family, e.protocol, e.timeout_secs), (2, 6, 119));
        assert_eq!(e.protocol_name, "tcp");
        assert_eq!(e.state.as_deref(), Some("TIME_WAIT"));
        assert_eq!(e.orig.src_addr(), "10.77.0.2:50748".parse().unwrap());
        assert_eq!(e.orig.dst_addr(), SERVICE_ADDR);
        assert_eq!((e.orig.packets, e.orig.bytes), (5, 5268));
        assert_eq!(e.reply.src_addr(), BACKEND_ADDR);
        assert_eq!((e.reply.packets, e.reply.bytes), (3, 164));
        assert_eq!(e.flags, ["ASSURED"]);
        assert_eq!((e.mark, e.zone, e.id), (Some(0), None, Some(2_537_237_267)));
    }

    #[test]
    fn parses_unreplied_udp6_without_id() {
        let e = parse_conntrack_line(
            "ipv6     10 udp      17 29 src=fd77::2 dst=fd77::3 sport=43198 dport=9001 \
             packets=1 bytes=1048 [UNREPLIED] src=fd77::3 dst=fd77::2 sport=9001 dport=43198 \
             packets=0 bytes=0 mark=0 use=1",
        )
        .unwrap();
        assert_eq!((e.family, e.protocol, e.state), (10, 17, None));
        assert_eq!(e.orig.src, IpAddr::V6(POD_A_V6));
        assert_eq!(e.orig.bytes, 1048);
        assert_eq!(e.reply.bytes, 0);
        assert_eq!(e.flags, ["UNREPLIED"]);
        assert_eq!(e.id, None);
    }

    #[test]
    fn icmp_id_is_not_the_entry_id() {
        let e = parse_conntrack_line(
            "ipv4     2 icmp     1 29 src=10.77.0.2 dst=10.77.0.3 type=8 code=0 id=4242 \
             packets=1 bytes=84 src=10.77.0.3 dst=10.77.0.2 type=0 code=0 id=4242 packets=1 \
             bytes=84 mark=0 use=1 id=99",
        )
        .unwrap();
        assert_eq!(
            e.orig.icmp,
            Some(IcmpTuple {
                kind: 8,
                code: 0,
                id: 4242
            })
        );
        assert_eq!(e.reply.icmp.map(|i| i.kind), Some(0));
        assert_eq!((e.orig.sport, e.orig.dport), (0, 0));
        assert_eq!(e.id, Some(99));
    }

    #[test]
    fn missing_counters_are_an_error_that_says_why() {
        let err = parse_conntrack_line(
            "ipv4     2 udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 [UNREPLIED] \
             src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1 id=7",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("nf_conntrack_acct"), "{err:#}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_conntrack_line("").is_err());
        assert!(parse_conntrack_line("ipv4 2 udp 17 29 src=10.0.0.1").is_err());
        assert!(parse_conntrack_line("ipv4 2 udp 17 29 src=nope dst=10.0.0.1").is_err());
    }
}
