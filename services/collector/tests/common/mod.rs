//! Shared by the collector's integration tests: the kernel's own counters, read with the
//! `conntrack` tool, as the reference our deltas must add up to.

use std::process::{Command, Stdio};

use netmeter_collector::conntrack::Counters;
use netmeter_tests::netns::KernelEntry;
use netmeter_tests::process::KilledOnDrop;

/// An entry's counters, both directions, as ours are kept.
pub fn kernel_counters(entry: &KernelEntry) -> Counters {
    Counters {
        orig_bytes: entry.orig.bytes,
        orig_packets: entry.orig.packets,
        reply_bytes: entry.reply.bytes,
        reply_packets: entry.reply.packets,
    }
}

/// Ended TCP connections leave the table of `ns` (and send DESTROY) a second after closing.
pub fn expire_closed_tcp_quickly(ns: &str) {
    for sysctl in [
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
        "net.netfilter.nf_conntrack_tcp_timeout_close=1",
    ] {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-qw", sysctl])
            .status()
            .unwrap();
        assert!(ok.success(), "{sysctl} in {ns}");
    }
}

/// The independent reference for ended connections: the conntrack tool's DESTROY events in
/// `ns` (final counters). `finish()` it and parse with `netns::parse_conntrack_events`.
pub fn destroy_events(ns: &str) -> KilledOnDrop {
    let events = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "conntrack",
            "-E",
            "-e",
            "DESTROY",
            "-o",
            "extended",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KilledOnDrop(events)
}
