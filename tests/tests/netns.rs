//! The simulated node is real: traffic between its pods goes through the kernel's bridge,
//! netfilter and NAT, and the node namespace's conntrack table counts it to the byte. Needs root
//! (network namespaces), `ip`, `nft` and `conntrack`.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use netmeter_tests::kernel::KernelCounters;
use netmeter_tests::netns::{
    self, BACKEND_ADDR, KernelEntry, NodeTopology, POD_A_V4, POD_A_V6, POD_B_V4, POD_B_V6,
    SERVICE_ADDR, conntrack_list, in_netns, tcp_send, tcp_sink, tcp_stream, udp_send, udp_sink,
};

/// The node namespace's entry whose original direction starts at `src` with `protocol`.
fn entry_from(entries: &[KernelEntry], protocol: u8, src: SocketAddr) -> KernelEntry {
    let found: Vec<_> = entries
        .iter()
        .filter(|e| e.protocol == protocol && e.orig.src_addr() == src)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one conntrack entry for {src} (protocol {protocol}) expected in {entries:#?}"
    );
    found[0].clone()
}

fn ip_netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Sysctls the topology sets inside the node namespace.
const NODE_SYSCTLS: [&str; 5] = [
    "net.netfilter.nf_conntrack_acct",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
];

fn root_sysctls() -> Vec<String> {
    NODE_SYSCTLS
        .iter()
        .map(|key| std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).unwrap())
        .collect()
}

#[test]
fn node_conntrack_counts_bridged_udp_dnat_tcp_and_ipv6_exactly() {
    let started = Instant::now();
    let root_before = root_sysctls();
    let topology = NodeTopology::create().unwrap();
    // Set inside the node namespace (checked with sysctl(8), not our code), not in ours.
    let mut sysctl = Command::new("ip");
    sysctl.args(["netns", "exec", topology.node_ns_name(), "sysctl", "-n"]);
    let out = sysctl.args(NODE_SYSCTLS).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n".repeat(5));
    assert_eq!(root_sysctls(), root_before);
    let names: Vec<String> = topology.ns_names().map(String::from).to_vec();
    let listed = ip_netns_list();
    for name in &names {
        assert!(listed.contains(name.as_str()), "{name} not in {listed}");
    }
    let (node, pod_a, pod_b) = (
        topology.node_ns_name(),
        topology.pod_a_ns_name(),
        topology.pod_b_ns_name(),
    );
    assert_eq!(
        topology.node_ns_path(),
        std::path::Path::new("/run/netns").join(node)
    );

    // in_netns really runs in the namespace: pod-a owns 10.77.0.2, not 10.77.0.3.
    let own = in_netns(pod_a, || {
        std::net::UdpSocket::bind((POD_A_V4, 0)).map(|_| ())
    })
    .unwrap();
    assert!(own.is_ok(), "{own:?}");
    let foreign = in_netns(pod_a, || std::net::UdpSocket::bind((POD_B_V4, 0))).unwrap();
    assert!(foreign.is_err(), "pod-a could bind pod-b's address");

    // The fresh node namespace tracks nothing yet, apart from the bridge announcing its
    // multicast memberships (IGMP/MLD reports, sent at random moments after link-up).
    let unicast: Vec<_> = conntrack_list(node)
        .unwrap()
        .into_iter()
        .filter(|e| !e.orig.dst.is_multicast())
        .collect();
    assert_eq!(unicast, Vec::new());

    // 1. Bridged pod-to-pod UDP over IPv4: 1000 x (1000 B payload + 20 B IP + 8 B UDP).
    let udp_to = SocketAddr::new(POD_B_V4.into(), 9000);
    let sink = udp_sink(pod_b, udp_to).unwrap();
    let udp_from = udp_send(pod_a, udp_to, 1000, 1000).unwrap();
    assert_eq!(udp_from.ip(), IpAddr::from(POD_A_V4));
    assert!(
        sink.wait_for(1000, Duration::from_secs(5)),
        "{:?}",
        sink.received()
    );
    assert_eq!(sink.received().bytes, 1_000_000);
    let udp = entry_from(&conntrack_list(node).unwrap(), 17, udp_from);
    println!("UDP v4 entry: {udp:?}");
    assert_eq!(udp.family, 2);
    assert_eq!(udp.orig.dst_addr(), udp_to);
    assert_eq!((udp.orig.packets, udp.orig.bytes), (1000, 1_028_000));
    assert_eq!(udp.reply.src_addr(), udp_to);
    assert_eq!(udp.reply.dst_addr(), udp_from);
    assert_eq!((udp.reply.packets, udp.reply.bytes), (0, 0));
    assert!(udp.id.is_some(), "conntrack -o id prints the entry id");

    // 2. TCP to the Service VIP, DNAT'd by the node to pod-b:8080.
    let tcp_sink_b = tcp_sink(pod_b, BACKEND_ADDR).unwrap();
    let transfer = tcp_send(pod_a, SERVICE_ADDR, 1_000_000).unwrap();
    assert_eq!(transfer.peer, SERVICE_ADDR);
    assert_eq!(transfer.sent, 1_000_000);
    assert_eq!(tcp_sink_b.received(), 1_000_000);
    assert_eq!((tcp_sink_b.accepted(), tcp_sink_b.closed()), (1, 1));
    assert!(tcp_sink_b.errors().is_empty(), "{:?}", tcp_sink_b.errors());
    let tcp = entry_from(&conntrack_list(node).unwrap(), 6, transfer.local);
    println!("TCP via VIP entry: {tcp:?}");
    assert_eq!(tcp.orig.dst_addr(), SERVICE_ADDR);
    assert_eq!(tcp.reply.src_addr(), BACKEND_ADDR, "the backend after DNAT");
    assert_eq!(tcp.reply.dst_addr(), transfer.local);
    assert!(tcp.orig.bytes > 1_000_000, "{tcp:?}");
    // Headers only: at least 40 B (IPv4+TCP) per counted packet, at most 60 + 12 of options.
    let headers = tcp.orig.bytes - 1_000_000;
    assert!(
        headers >= 40 * tcp.orig.packets && headers <= 72 * tcp.orig.packets,
        "{tcp:?}"
    );
    assert!(tcp.reply.packets > 0 && tcp.reply.bytes >= 40 * tcp.reply.packets);
    assert!(tcp.flags.iter().any(|f| f == "ASSURED"), "{tcp:?}");

    // 3. Bridged pod-to-pod UDP over IPv6: 1000 x (1000 B + 40 B IPv6 + 8 B UDP).
    let udp6_to = SocketAddr::new(POD_B_V6.into(), 9001);
    let sink6 = udp_sink(pod_b, udp6_to).unwrap();
    let udp6_from = udp_send(pod_a, udp6_to, 1000, 1000).unwrap();
    assert_eq!(udp6_from.ip(), IpAddr::from(POD_A_V6));
    assert!(
        sink6.wait_for(1000, Duration::from_secs(5)),
        "{:?}",
        sink6.received()
    );
    let udp6 = entry_from(&conntrack_list(node).unwrap(), 17, udp6_from);
    println!("UDP v6 entry: {udp6:?}");
    assert_eq!(udp6.family, 10);
    assert_eq!(udp6.orig.dst_addr(), udp6_to);
    assert_eq!((udp6.orig.packets, udp6.orig.bytes), (1000, 1_048_000));

    // 4. A long-lived IPv6 TCP connection: its address is known while it runs, and conntrack
    //    counts it while it is still open.
    let stream_sink = tcp_sink(pod_b, SocketAddr::new(POD_B_V6.into(), 8081)).unwrap();
    let stream = tcp_stream(
        pod_a,
        stream_sink.addr(),
        10_000,
        Duration::from_millis(100),
        5,
    )
    .unwrap();
    assert!(stream_sink.wait_received(10_000, Duration::from_secs(5)));
    let live = entry_from(&conntrack_list(node).unwrap(), 6, stream.local_addr());
    assert_eq!(live.state.as_deref(), Some("ESTABLISHED"), "{live:?}");
    assert!(live.orig.bytes >= 10_000, "{live:?}");
    assert!(!stream.is_finished());
    let streamed = stream.join().unwrap();
    assert_eq!(streamed.sent, 50_000);
    assert_eq!(stream_sink.received(), 50_000);
    let ended = entry_from(&conntrack_list(node).unwrap(), 6, streamed.local);
    assert!(ended.orig.bytes > 50_000, "{ended:?}");
    assert_eq!(ended.family, 10);

    // Sockets first (they keep a namespace alive), then the namespaces.
    drop((sink, sink6, tcp_sink_b, stream_sink));
    topology.delete().unwrap();
    let listed = ip_netns_list();
    for name in &names {
        assert!(!netns::ns_exists(name), "{name} still exists");
        assert!(!listed.contains(name.as_str()), "{name} still in {listed}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn namespaces_are_deleted_when_a_test_panics() {
    let (names_tx, names_rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let topology = NodeTopology::create().unwrap();
        names_tx
            .send(topology.ns_names().map(String::from))
            .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(outcome.is_err());
    let names = names_rx.recv().unwrap();
    let listed = ip_netns_list();
    for name in &names {
        assert!(!netns::ns_exists(name), "{name} still exists");
        assert!(!listed.contains(name.as_str()), "{name} still in {listed}");
    }
}

#[test]
fn in_netns_reports_a_missing_namespace_and_a_panic() {
    let missing = in_netns("nmt-does-not-exist", || ()).unwrap_err();
    assert!(
        format!("{missing:#}").contains("/run/netns/nmt-does-not-exist"),
        "{missing:#}"
    );
    let topology = NodeTopology::create().unwrap();
    let panicked = in_netns::<(), _>(topology.pod_a_ns_name(), || panic!("boom")).unwrap_err();
    assert!(format!("{panicked:#}").contains("boom"), "{panicked:#}");
}

/// The kernel's ledger, which every end-to-end test compares ClickHouse with, keeps every
/// connection of a burst that ends at once (the garbage collector frees expired connections in
/// batches; here a flush of 600 entries): with its default socket buffer `conntrack -E` was sent
/// 166 of them and the ledger silently lacked the rest (a CI run failed on one missing
/// connection). A watcher that drops an event fails the snapshot instead.
#[test]
fn the_kernel_ledger_keeps_every_connection_of_a_burst_that_ends_at_once() {
    const BURST: u16 = 600;
    let topology = NodeTopology::create().unwrap();
    let ns = topology.node_ns_name();
    let dir = tempfile::tempdir().unwrap();
    let kernel = KernelCounters::start(&[("node".into(), ns.into())], dir.path()).unwrap();
    let conntrack = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "conntrack"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "conntrack {args:?}: {out:?}");
    };
    for port in 10_000..10_000 + BURST {
        let port = port.to_string();
        conntrack(&[
            "-I",
            "-p",
            "udp",
            "-s",
            "127.0.0.1",
            "-d",
            "127.0.0.2",
            "--sport",
            &port,
            "--dport",
            "53",
            "-t",
            "600",
        ]);
    }
    conntrack(&["-F"]);
    kernel.wait_tcp_ended().unwrap(); // and every event read
    let mut ports: Vec<u16> = (kernel.snapshot().unwrap().into_iter())
        .filter(|c| c.ended && c.entry.orig.dst_addr() == "127.0.0.2:53".parse().unwrap())
        .map(|c| c.entry.orig.src_addr().port())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, (10_000..10_000 + BURST).collect::<Vec<_>>());
}
