//! Shared by the collector's integration tests: the kernel's own counters, read with the
//! `conntrack` tool, as the reference our deltas must add up to.

use std::path::Path;
use std::process::Command;

use netmeter_collector::conntrack::Counters;
use netmeter_tests::kernel::KernelCounters;
use netmeter_tests::netns::KernelEntry;

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

/// The independent reference for ended connections: the kernel's ledger of `ns` (the conntrack
/// tool's DESTROY events, final counters), its files in `dir`. Read with [`ended`].
pub fn kernel_ledger(ns: &str, dir: &Path) -> KernelCounters {
    KernelCounters::start(&[(ns.to_string(), ns.to_string())], dir).unwrap()
}

/// The connections `kernel` saw end, with their final counters.
pub fn ended(kernel: &KernelCounters) -> Vec<KernelEntry> {
    (kernel.snapshot().unwrap().into_iter())
        .filter(|counted| counted.ended)
        .map(|counted| counted.entry)
        .collect()
}
