//! The collector on real kernel conntrack, in a simulated node (a bridge, two pods, a
//! Service-like DNAT): its deltas must add up, per connection and direction, to the kernel's
//! own counters, read independently with the `conntrack` tool (`-E` for the final counters of
//! ended connections, `-L` for live ones).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use netmeter_collector::collect::{self, Beginning, CollectSettings};
use netmeter_collector::conntrack::{Counters, DumpMode};
use netmeter_collector::output::Interval;
use netmeter_tests::netns::{self, NodeTopology};
use tokio::sync::mpsc;

/// Our deltas summed per connection, keyed by (protocol, original source port).
fn sum_by_source_port(intervals: &[Interval]) -> HashMap<(u8, u16), (Counters, bool)> {
    let mut sums: HashMap<(u8, u16), (Counters, bool)> = HashMap::new();
    for d in intervals.iter().flat_map(|i| &i.deltas) {
        let (sum, destroyed) = sums
            .entry((d.entry.protocol, d.entry.original.src_port))
            .or_default();
        sum.orig_bytes += d.delta.orig_bytes;
        sum.orig_packets += d.delta.orig_packets;
        sum.reply_bytes += d.delta.reply_bytes;
        sum.reply_packets += d.delta.reply_packets;
        *destroyed |= d.destroyed;
    }
    sums
}

/// The collection threads on the topology's node namespace, with 1 s intervals.
struct Collecting {
    collection: collect::Collection,
    intervals: mpsc::Receiver<Interval>,
    /// Intervals taken off the channel by [`Collecting::wait_for`].
    received: Vec<Interval>,
}

impl Collecting {
    /// Returns once the baseline is taken.
    async fn start(topology: &NodeTopology, mode: DumpMode) -> Collecting {
        let (tx, intervals) = mpsc::channel(1000);
        let settings = CollectSettings {
            netns: Some(topology.node_ns_path()),
            interval: Duration::from_secs(1),
            mode,
            enable_acct: false,
            filter: Default::default(),
            state: None,
        };
        let collection =
            tokio::task::spawn_blocking(move || collect::start(settings, Beginning::Baseline, tx))
                .await
                .unwrap()
                .unwrap();
        Collecting {
            collection,
            intervals,
            received: Vec::new(),
        }
    }

    /// Waits until `done(every interval emitted so far)` holds; false after `timeout`.
    fn wait_for(&mut self, timeout: Duration, mut done: impl FnMut(&[Interval]) -> bool) -> bool {
        netmeter_tests::wait_until(timeout, || {
            while let Ok(interval) = self.intervals.try_recv() {
                self.received.push(interval);
            }
            done(&self.received)
        })
    }

    /// Stops the collection and returns every interval it emitted.
    fn finish(mut self) -> Vec<Interval> {
        drop(self.collection);
        let mut intervals = self.received;
        while let Ok(interval) = self.intervals.try_recv() {
            intervals.push(interval);
        }
        intervals
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deltas_add_up_to_the_kernel_counters_exactly() {
    let topology = NodeTopology::create().unwrap();
    let node = topology.node_ns_name().to_string();
    common::expire_closed_tcp_quickly(&node);
    let ledger_dir = tempfile::tempdir().unwrap();
    let kernel = common::kernel_ledger(&node, ledger_dir.path());

    let mut collecting = Collecting::start(&topology, DumpMode::Read).await;

    let pod_a = topology.pod_a_ns_name().to_string();
    let pod_b = topology.pod_b_ns_name().to_string();
    let backend: SocketAddr = (netns::POD_B_V4, 8080).into();
    let vip: SocketAddr = (netns::SERVICE_VIP, 80).into();
    let tcp_sink = netns::tcp_sink(&pod_b, backend).unwrap();
    let udp_sink = netns::udp_sink(&pod_b, (netns::POD_B_V4, 5353).into()).unwrap();
    let udp6_sink = netns::udp_sink(&pod_b, (netns::POD_B_V6, 5353).into()).unwrap();

    // Longer than three intervals, through the Service VIP (DNAT): 5 x 200 kB, 1 s apart.
    let long = netns::tcp_stream(&pod_a, vip, 200_000, Duration::from_secs(1), 5).unwrap();
    // Shorter than one interval: opens, sends 300 kB, closes.
    let short = netns::tcp_send(&pod_a, backend, 300_000).unwrap();
    let udp = netns::udp_send(&pod_a, (netns::POD_B_V4, 5353).into(), 1000, 1000).unwrap();
    let udp6 = netns::udp_send(&pod_a, (netns::POD_B_V6, 5353).into(), 500, 1200).unwrap();
    let long_local = long.local_addr();
    long.join().unwrap();
    // Both TCP connections end (1 s timeouts) and their final deltas are handed on.
    let tcp_ports = [short.local.port(), long_local.port()];
    let handed_on = collecting.wait_for(Duration::from_secs(30), |intervals| {
        let ours = sum_by_source_port(intervals);
        (tcp_ports.iter()).all(|port| {
            ours.get(&(6, *port))
                .is_some_and(|(_, destroyed)| *destroyed)
        })
    });
    assert!(handed_on, "no final delta for both TCP connections");

    let live = netns::conntrack_list(&node).unwrap();
    let intervals = collecting.finish();
    let ended = common::ended(&kernel);
    let ours = sum_by_source_port(&intervals);

    // Short TCP and the long DNAT'd TCP have ended: compare with their DESTROY counters.
    for (name, port, payload) in [
        ("short", short.local.port(), 300_000u64),
        ("long", long_local.port(), 1_000_000),
    ] {
        let kernel = ended
            .iter()
            .find(|e| e.protocol == 6 && e.orig.sport == port)
            .unwrap_or_else(|| panic!("{name}: no DESTROY event"));
        let (sum, destroyed) = ours[&(6, port)];
        assert_eq!(
            sum,
            common::kernel_counters(kernel),
            "{name}: our deltas vs the kernel's final counters"
        );
        assert!(destroyed, "{name}: the final delta is flagged destroyed");
        assert!(sum.orig_bytes > payload, "{name}: bytes include headers");
    }
    let long_dnat = ended
        .iter()
        .find(|e| e.orig.sport == long_local.port())
        .unwrap();
    assert_eq!(
        (
            long_dnat.orig.dst,
            long_dnat.reply.src,
            long_dnat.reply.sport
        ),
        (netns::SERVICE_VIP.into(), netns::POD_B_V4.into(), 8080)
    );
    let long_intervals = intervals
        .iter()
        .filter(|i| {
            i.deltas
                .iter()
                .any(|d| d.entry.original.src_port == long_local.port())
        })
        .count();
    assert!(
        long_intervals >= 4,
        "the long connection spans {long_intervals} intervals"
    );
    let long_delta = intervals
        .iter()
        .flat_map(|i| &i.deltas)
        .find(|d| d.entry.original.src_port == long_local.port())
        .unwrap();
    assert_eq!(
        long_delta.entry.reply.src,
        std::net::IpAddr::from(netns::POD_B_V4),
        "backend in the reply tuple"
    );
    assert!(long_delta.entry.nat());
    assert_eq!(tcp_sink.received(), 1_300_000);

    // UDP flows are still live: compare with `conntrack -L`, and with arithmetic.
    for (port, bytes, packets) in [
        (udp.port(), 1_028_000u64, 1000u64),
        (udp6.port(), 500 * 1248, 500),
    ] {
        let kernel = live
            .iter()
            .find(|e| e.protocol == 17 && e.orig.sport == port)
            .expect("live UDP flow");
        let (sum, destroyed) = ours[&(17, port)];
        assert_eq!(sum, common::kernel_counters(kernel), "UDP from port {port}");
        assert_eq!(
            (sum.orig_bytes, sum.orig_packets, destroyed),
            (bytes, packets, false)
        );
    }
    assert_eq!(udp_sink.received().bytes, 1_000_000);
    assert_eq!(udp6_sink.received().bytes, 600_000);
}

/// Sends `datagrams` UDP datagrams of `size` bytes pod-a -> pod-b and returns the flow's
/// source port, once pod-b received them all.
fn udp_flow(topology: &NodeTopology, port: u16, datagrams: u32, size: usize) -> u16 {
    let to: SocketAddr = (netns::POD_B_V4, port).into();
    let sink = netns::udp_sink(topology.pod_b_ns_name(), to).unwrap();
    let from = netns::udp_send(topology.pod_a_ns_name(), to, datagrams, size).unwrap();
    assert!(sink.wait_for(u64::from(datagrams), Duration::from_secs(5)));
    from.port()
}

fn kernel_udp_bytes(topology: &NodeTopology, sport: u16) -> u64 {
    let live = netns::conntrack_list(topology.node_ns_name()).unwrap();
    live.iter()
        .find(|e| e.protocol == 17 && e.orig.sport == sport)
        .expect("live UDP flow")
        .orig
        .bytes
}

/// Runs the collection for `seconds` (1 s intervals) around `traffic`; what it emitted.
async fn collect_for(
    topology: &NodeTopology,
    mode: DumpMode,
    seconds: u64,
    traffic: impl FnOnce(),
) -> Vec<Interval> {
    let collecting = Collecting::start(topology, mode).await;
    traffic();
    // The collection runs this long: what the callers compare is what it saw meanwhile.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    collecting.finish()
}

#[tokio::test(flavor = "multi_thread")]
async fn other_readers_keep_their_counters_unless_zeroing_is_asked_for() {
    let topology = NodeTopology::create().unwrap();
    // Default mode: after three of our dumps, `conntrack -L` still sees the full 500 x 300 B.
    let mut sport = 0;
    let intervals = collect_for(&topology, DumpMode::Read, 3, || {
        sport = udp_flow(&topology, 7001, 500, 300)
    })
    .await;
    assert_eq!(
        kernel_udp_bytes(&topology, sport),
        500 * 328,
        "another reader's view is unchanged"
    );
    assert_eq!(
        sum_by_source_port(&intervals)[&(17, sport)].0.orig_bytes,
        500 * 328
    );

    // Opt-in zeroing: our deltas are still exact, but the kernel's counter was taken from others.
    let intervals = collect_for(&topology, DumpMode::Zero, 3, || {
        sport = udp_flow(&topology, 7002, 500, 300)
    })
    .await;
    assert_eq!(
        sum_by_source_port(&intervals)[&(17, sport)].0.orig_bytes,
        500 * 328
    );
    assert_eq!(
        kernel_udp_bytes(&topology, sport),
        0,
        "zeroing mode resets what others read"
    );
}

#[test]
fn output_stdout_prints_one_json_object_per_delta() {
    let topology = NodeTopology::create().unwrap();
    let node_ns = topology.node_ns_path();
    let http_port = netmeter_tests::free_port();
    let collector = Command::new(env!("CARGO_BIN_EXE_netmeter-collector"))
        .args([
            "--output",
            "stdout",
            "--interval",
            "1s",
            "--node-name",
            "node-a",
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
        ])
        .arg("--netns")
        .arg(&node_ns)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let collector = netmeter_tests::process::KilledOnDrop(collector);
    // Ready once the baseline is taken.
    let ready = || {
        matches!(
            netmeter_tests::service::http_get(http_port, "/readyz"),
            Ok((200, _))
        )
    };
    assert!(
        netmeter_tests::wait_until(Duration::from_secs(30), ready),
        "the collector never took its baseline"
    );
    let sport = udp_flow(&topology, 7003, 100, 100);
    // Two intervals for the flow's delta to be printed: what it printed can only be read once
    // it has stopped, so this is a fixed time.
    std::thread::sleep(Duration::from_millis(2500));
    let out = collector.finish();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ours: Vec<&serde_json::Value> = lines.iter().filter(|l| l["orig_sport"] == sport).collect();
    assert_eq!(ours.len(), 1, "one delta for the flow: {out}");
    let line = ours[0];
    assert_eq!(line["proto"], "udp");
    assert_eq!(line["orig_src"], netns::POD_A_V4.to_string());
    assert_eq!(line["orig_dst"], netns::POD_B_V4.to_string());
    assert_eq!(line["orig_dport"], 7003);
    assert_eq!(line["reply_src"], netns::POD_B_V4.to_string());
    assert_eq!(
        (line["orig_bytes"].as_u64(), line["orig_packets"].as_u64()),
        (Some(100 * 128), Some(100))
    );
    assert_eq!(
        (line["reply_bytes"].as_u64(), line["destroyed"].as_bool()),
        (Some(0), Some(false))
    );
    let start = line["interval_start"].as_str().unwrap();
    let end = line["interval_end"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(start).unwrap() < humantime::parse_rfc3339(end).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_of_the_node_itself_is_kept_and_flagged() {
    let topology = NodeTopology::create().unwrap();
    let to_node: SocketAddr = (netns::NODE_V4, 7100).into();
    let node_sink = netns::udp_sink(topology.node_ns_name(), to_node).unwrap();
    let mut ports = (0, 0);
    let intervals = collect_for(&topology, DumpMode::Read, 3, || {
        let to_pod = udp_flow(&topology, 7101, 10, 100);
        let to_node = netns::udp_send(topology.pod_a_ns_name(), to_node, 20, 100)
            .unwrap()
            .port();
        ports = (to_pod, to_node);
    })
    .await;
    assert!(node_sink.wait_for(20, Duration::from_secs(5)));
    let deltas: Vec<_> = intervals.iter().flat_map(|i| &i.deltas).collect();
    let find = |port| {
        deltas
            .iter()
            .find(|d| d.entry.original.src_port == port)
            .expect("a delta")
    };
    let (pod, node) = (find(ports.0), find(ports.1));
    assert!(!pod.node_endpoint, "pod to pod");
    assert!(node.node_endpoint, "pod to the node's own address");
    assert_eq!(
        sum_by_source_port(&intervals)[&(17, ports.1)].0.orig_bytes,
        20 * 128
    );
}
