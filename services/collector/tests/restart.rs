//! Collector restarts on a simulated node (network namespaces, real kernel conntrack),
//! publishing through the real broker, checked against the kernel's own counters:
//!
//! - a rolling update (SIGTERM, a pause, a new process) loses no byte: the deltas of both
//!   processes add up to the kernel's final counters exactly;
//! - a kill (no state saved) loses exactly what moved during the gap, and says how long it was;
//! - a saved state that does not fit (another namespace, too old, corrupt) is ignored with the
//!   reason, and the new process counts from a baseline;
//! - batches the broker did not acknowledge before the shutdown deadline are sent by the next
//!   process first.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use netmeter_collector::conntrack::Counters;
use netmeter_proto::raw::ConntrackBatch;
use netmeter_proto::{DEFAULT_TOPIC_PREFIX, Schema};
use netmeter_tests::netns::{self, KernelEntry, NodeTopology};
use netmeter_tests::records::TopicReader;
use netmeter_tests::service::RunningService;
use netmeter_tests::{Stack, broker};

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-collector");
const UDP_PAYLOAD: usize = 500;
/// A datagram as conntrack counts it: payload + UDP and IPv4 headers.
const UDP_BYTES: u64 = UDP_PAYLOAD as u64 + 28;

/// A collector on the node namespace `netns` with 1 s intervals and `state_dir`, once ready
/// (its baseline taken or its state restored).
fn start_collector(
    stack: &Stack,
    netns: &Path,
    state_dir: &Path,
    extra: &[&str],
) -> RunningService {
    let netns = format!("--netns={}", netns.display());
    let state = format!("--state-dir={}", state_dir.display());
    let mut args = vec!["--node-name=node-a", "--interval=1s", &netns, &state];
    args.extend_from_slice(extra);
    let mut collector = RunningService::start(Path::new(BIN), stack, &args).unwrap();
    collector.wait_ready(Duration::from_secs(30)).unwrap();
    collector
}

/// SIGTERM, as Kubernetes stops a pod: a clean exit within the default 4 s deadline (+ slack).
fn stop(collector: &mut RunningService) {
    let (status, took) = collector.sigterm();
    let log = collector.process.log_tail();
    assert!(status.success(), "exit {status} after SIGTERM; log:\n{log}");
    assert!(took < Duration::from_secs(5), "took {took:?}; log:\n{log}");
}

fn raw_topic() -> String {
    Schema::RawV1.topic(DEFAULT_TOPIC_PREFIX)
}

/// Every batch published to the raw topic, in order.
async fn published(stack: &Stack) -> Vec<ConntrackBatch> {
    let records = broker::read_topic(
        &stack.kafka_bootstrap(),
        &raw_topic(),
        netmeter_tests::stack::PARTITIONS,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(
        records.windows(2).all(|w| w[0].partition == w[1].partition),
        "one node, one partition: batches stay in order"
    );
    records
        .iter()
        .map(|r| netmeter_proto::decode_batch(&r.payload).unwrap())
        .collect()
}

/// The batches of each collector instance, instances in the order they first published.
fn by_instance(batches: &[ConntrackBatch]) -> Vec<Vec<&ConntrackBatch>> {
    let mut instances: Vec<(&str, Vec<&ConntrackBatch>)> = Vec::new();
    for b in batches {
        match instances
            .iter_mut()
            .find(|(id, _)| *id == b.collector_instance_id)
        {
            Some((_, list)) => list.push(b),
            None => instances.push((&b.collector_instance_id, vec![b])),
        }
    }
    instances.into_iter().map(|(_, list)| list).collect()
}

/// Published deltas summed per connection, keyed by (protocol, original source port).
fn sums<'a>(batches: impl IntoIterator<Item = &'a ConntrackBatch>) -> HashMap<(u8, u16), Counters> {
    let mut sums: HashMap<(u8, u16), Counters> = HashMap::new();
    for d in batches.into_iter().flat_map(|b| &b.deltas) {
        let port = d.original.as_ref().map_or(0, |t| t.src_port as u16);
        let sum = sums.entry((d.protocol as u8, port)).or_default();
        sum.orig_bytes += d.orig_bytes;
        sum.orig_packets += d.orig_packets;
        sum.reply_bytes += d.reply_bytes;
        sum.reply_packets += d.reply_packets;
    }
    sums
}

fn find(entries: &[KernelEntry], protocol: u8, sport: u16) -> Counters {
    let entry = entries
        .iter()
        .find(|e| e.protocol == protocol && e.orig.sport == sport)
        .unwrap_or_else(|| panic!("no kernel entry for protocol {protocol} port {sport}"));
    common::kernel_counters(entry)
}

fn minus(a: Counters, b: Counters) -> Counters {
    Counters {
        orig_bytes: a.orig_bytes - b.orig_bytes,
        orig_packets: a.orig_packets - b.orig_packets,
        reply_bytes: a.reply_bytes - b.reply_bytes,
        reply_packets: a.reply_packets - b.reply_packets,
    }
}

/// A UDP socket in `ns`, kept: what it sends stays one conntrack entry.
fn udp_socket(ns: &str) -> UdpSocket {
    netns::in_netns(ns, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap()
}

fn send_udp(socket: &UdpSocket, to: SocketAddr, datagrams: u32) {
    for _ in 0..datagrams {
        socket.send_to(&[0x5a; UDP_PAYLOAD], to).unwrap();
    }
}

/// A UDP flow pod-a -> pod-b:5353 from one kept socket, sent to at chosen moments.
struct UdpFlow {
    socket: UdpSocket,
    to: SocketAddr,
    /// Its source port: the key of its conntrack entry.
    port: u16,
    sink: netns::UdpSink,
    sent: u64,
}

impl UdpFlow {
    fn open(topology: &NodeTopology) -> UdpFlow {
        let to: SocketAddr = (netns::POD_B_V4, 5353).into();
        let sink = netns::udp_sink(topology.pod_b_ns_name(), to).unwrap();
        let socket = udp_socket(topology.pod_a_ns_name());
        let port = socket.local_addr().unwrap().port();
        UdpFlow {
            socket,
            to,
            port,
            sink,
            sent: 0,
        }
    }

    /// Sends `datagrams` and returns once pod-b received them all.
    fn send(&mut self, datagrams: u32) {
        send_udp(&self.socket, self.to, datagrams);
        self.sent += u64::from(datagrams);
        assert!(self.sink.wait_for(self.sent, Duration::from_secs(5)));
    }
}

/// `per_tick` datagrams every 100 ms for `ticks` ticks from one socket in `ns`; the socket's
/// address when done.
fn udp_stream(ns: &str, to: SocketAddr, per_tick: u32, ticks: u32) -> netns::NetnsThread<u16> {
    netns::spawn_in_netns(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..ticks {
            send_udp(&socket, to, per_tick);
            // Pacing: the flow lasts across the restart.
            std::thread::sleep(Duration::from_millis(100));
        }
        socket.local_addr().unwrap().port()
    })
    .unwrap()
}

fn assert_logged(collector: &RunningService, text: &str) {
    let log = collector.process.log_tail();
    assert!(log.contains(text), "no {text:?} in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_update_loses_no_byte() {
    let stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    let node = topology.node_ns_name().to_string();
    common::expire_closed_tcp_quickly(&node);
    let state_dir = tempfile::tempdir().unwrap();
    let kernel = common::kernel_ledger(&node, state_dir.path());
    let mut old = start_collector(&stack, &topology.node_ns_path(), state_dir.path(), &[]);

    // ~6 s of traffic across the restart: a TCP stream through the Service VIP (DNAT), one
    // straight to the backend, and a UDP flow.
    let (pod_a, pod_b) = (topology.pod_a_ns_name(), topology.pod_b_ns_name());
    let tcp_sink = netns::tcp_sink(pod_b, netns::BACKEND_ADDR).unwrap();
    let udp_to: SocketAddr = (netns::POD_B_V4, 5353).into();
    let _udp_sink = netns::udp_sink(pod_b, udp_to).unwrap();
    let every = Duration::from_millis(200);
    let via_service = netns::tcp_stream(pod_a, netns::SERVICE_ADDR, 100_000, every, 30).unwrap();
    let direct = netns::tcp_stream(pod_a, netns::BACKEND_ADDR, 30_000, every, 30).unwrap();
    let udp = udp_stream(pod_a, udp_to, 10, 60);
    // And a flow that ends while no collector runs: what it sent after the old process's final
    // dump cannot be known by anyone.
    let short_lived = udp_socket(pod_a);
    let short_lived_port = short_lived.local_addr().unwrap().port();
    send_udp(&short_lived, udp_to, 10);
    // The old process meters two seconds of the traffic before the update.
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop(&mut old);
    assert_logged(&old, "saved the counter state");
    // A rolling update's pause: the traffic goes on with no collector.
    send_udp(&short_lived, udp_to, 5);
    let counted = || {
        let live = netns::conntrack_list(&node).unwrap();
        (live.iter())
            .any(|e| e.protocol == 17 && e.orig.sport == short_lived_port && e.orig.packets == 15)
    };
    assert!(
        netmeter_tests::wait_until(Duration::from_secs(5), counted),
        "the kernel never counted the short-lived flow's 15 datagrams"
    );
    delete_udp_entry(&node, short_lived_port);
    // The pause goes on a while after the flow ended.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut new = start_collector(&stack, &topology.node_ns_path(), state_dir.path(), &[]);
    assert_eq!(
        new.metric("netmeter_collector_state_restores_total"),
        Some(1.0),
        "{}",
        new.process.log_tail()
    );
    assert_logged(
        &new,
        "continuing from the state the previous collector saved",
    );
    assert_eq!(
        new.metric("netmeter_collector_restart_gaps_total{reason=\"no_state\"}"),
        None
    );

    let tcp_ports = [via_service.local_addr().port(), direct.local_addr().port()];
    via_service.join().unwrap();
    direct.join().unwrap();
    let udp_port = udp.join().unwrap();
    assert_eq!(tcp_sink.received(), 30 * 130_000);
    // The TCP connections end (1 s timeouts): their DESTROY events are queued for the
    // collector, which hands them on when it stops (with the UDP flow's last counters).
    let tcp_ended = || {
        let live = netns::conntrack_list(&node).unwrap();
        !(live.iter()).any(|e| e.protocol == 6 && tcp_ports.contains(&e.orig.sport))
    };
    assert!(
        netmeter_tests::wait_until(Duration::from_secs(30), tcp_ended),
        "the TCP connections never left the table"
    );
    let live = netns::conntrack_list(&node).unwrap();
    assert_eq!(
        new.metric("netmeter_collector_restart_ended_connections_total"),
        Some(1.0),
        "{}",
        new.process.log_tail()
    );
    assert_logged(
        &new,
        "connections of the restored state ended while no collector ran",
    );
    stop(&mut new);
    let ended = common::ended(&kernel);

    let batches = published(&stack).await;
    let instances = by_instance(&batches);
    assert_eq!(instances.len(), 2, "two collector processes published");
    for batches in &instances {
        let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
        let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
        assert_eq!(
            sequences, expected,
            "each process: every batch once, in order"
        );
    }
    let old_end = instances[0].iter().map(|b| b.interval_end_unix_ms).max();
    let new_start = instances[1].iter().map(|b| b.interval_start_unix_ms).min();
    assert_eq!(
        old_end, new_start,
        "the new process's first interval starts where the old one's last ended"
    );

    let ours = sums(&batches);
    let (old_sums, new_sums) = (sums(instances[0].clone()), sums(instances[1].clone()));
    let connections = [
        (6, tcp_ports[0], find(&ended, 6, tcp_ports[0])),
        (6, tcp_ports[1], find(&ended, 6, tcp_ports[1])),
        (17, udp_port, find(&live, 17, udp_port)),
    ];
    for (protocol, port, kernel) in connections {
        assert_eq!(
            ours[&(protocol, port)],
            kernel,
            "protocol {protocol} port {port}: both processes' deltas vs the kernel's final counters"
        );
        assert!(
            old_sums[&(protocol, port)].orig_bytes > 0
                && new_sums[&(protocol, port)].orig_bytes > 0,
            "protocol {protocol} port {port} moved bytes under both processes"
        );
    }
    assert_eq!(find(&live, 17, udp_port).orig_packets, 600);
    let short_lived_final = find(&ended, 17, short_lived_port);
    assert_eq!(short_lived_final.orig_packets, 15);
    assert_eq!(
        ours[&(17, short_lived_port)],
        Counters {
            orig_bytes: 10 * UDP_BYTES,
            orig_packets: 10,
            ..Default::default()
        },
        "ended unseen: counted up to the old process's final dump, the rest is unknowable"
    );
}

/// Ends a UDP flow now, as its timeout would: `conntrack -D` in the node namespace.
fn delete_udp_entry(node: &str, sport: u16) {
    let deleted = std::process::Command::new("ip")
        .args(["netns", "exec", node, "conntrack", "-D", "-p", "udp"])
        .args(["--orig-port-src", &sport.to_string()])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_loses_exactly_the_gap_and_says_how_long_it_was() {
    let stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    let node = topology.node_ns_name().to_string();
    let state_dir = tempfile::tempdir().unwrap();
    let mut old = start_collector(&stack, &topology.node_ns_path(), state_dir.path(), &[]);

    // One UDP flow and one TCP connection, kept open and written to at chosen moments.
    let (pod_a, pod_b) = (topology.pod_a_ns_name(), topology.pod_b_ns_name());
    let mut udp = UdpFlow::open(&topology);
    let udp_port = udp.port;
    let tcp_sink = netns::tcp_sink(pod_b, netns::BACKEND_ADDR).unwrap();
    let mut tcp = netns::in_netns(pod_a, || TcpStream::connect(netns::BACKEND_ADDR))
        .unwrap()
        .unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let mut tcp_sent = 0;
    let mut send = |datagrams: u32, bytes: usize| {
        udp.send(datagrams);
        tcp.write_all(&vec![0xa5; bytes]).unwrap();
        tcp_sent += bytes as u64;
        assert!(tcp_sink.wait_received(tcp_sent, Duration::from_secs(5)));
        // The receiver's last ACKs pass too: after this, nothing moves. (No counter says when
        // the last ACK has passed: a settling time.)
        std::thread::sleep(Duration::from_millis(300));
    };
    let counters = || {
        let live = netns::conntrack_list(&node).unwrap();
        (find(&live, 17, udp_port), find(&live, 6, tcp_port))
    };

    send(200, 300_000);
    // Wait until the old process published everything the kernel counted so far.
    let before_kill = counters();
    let mut reader = TopicReader::new(
        &stack.kafka_bootstrap(),
        &raw_topic(),
        netmeter_tests::stack::PARTITIONS,
    )
    .unwrap();
    let all_published = reader
        .read_until(Duration::from_secs(20), |messages| {
            let batches: Vec<_> = messages
                .iter()
                .map(|m| netmeter_proto::decode_batch(&m.payload).unwrap())
                .collect();
            let ours = sums(&batches);
            ours.get(&(17, udp_port)) == Some(&before_kill.0)
                && ours.get(&(6, tcp_port)) == Some(&before_kill.1)
        })
        .await;
    assert!(
        all_published,
        "the old process published what the kernel counted"
    );

    old.process.kill();
    let at_kill = counters();
    assert_eq!(at_kill, before_kill, "nothing moved before the kill");
    send(100, 200_000); // during the gap: nobody counts it
    let gap_start = std::time::Instant::now();
    let before_restart = counters();
    // The gap under test lasts at least a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut new = start_collector(&stack, &topology.node_ns_path(), state_dir.path(), &[]);
    let gap_at_least = gap_start.elapsed().as_secs();
    assert_eq!(
        new.metric("netmeter_collector_restart_gaps_total{reason=\"no_state\"}"),
        Some(1.0),
        "{}",
        new.process.log_tail()
    );
    let gap_seconds = new
        .metric("netmeter_collector_restart_gap_seconds_total")
        .unwrap();
    assert!(gap_seconds >= gap_at_least as f64, "{gap_seconds} s");
    assert_logged(
        &new,
        "previous collector stopped without saving its state (killed?); bytes moved between",
    );
    assert_eq!(new.metric("netmeter_collector_state_restores_total"), None);

    send(50, 100_000); // counted again
    // The new process meters a few intervals before it stops.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let at_end = counters();
    stop(&mut new);

    let ours = sums(&published(&stack).await);
    let gap = (
        minus(before_restart.0, at_kill.0),
        minus(before_restart.1, at_kill.1),
    );
    assert_eq!(gap.0.orig_bytes, 100 * UDP_BYTES);
    assert_eq!(
        ours[&(17, udp_port)],
        minus(at_end.0, gap.0),
        "UDP: kernel final minus what moved during the gap"
    );
    assert_eq!(
        ours[&(6, tcp_port)],
        minus(at_end.1, gap.1),
        "TCP: kernel final minus what moved during the gap"
    );
}

/// A saved state a collector must not continue from.
struct Unusable<'a> {
    case: &'static str,
    /// The state file's bytes.
    state: Vec<u8>,
    args: &'static [&'static str],
    /// The node the collector meters.
    node: &'a NodeTopology,
    /// The `reason` label it is ignored with.
    reason: &'static str,
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_states_are_ignored_with_the_reason_and_counting_restarts_from_a_baseline() {
    let stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    let elsewhere = NodeTopology::create().unwrap();
    let saved = tempfile::tempdir().unwrap();
    // A real state: a collector that ran and was stopped.
    let mut first = start_collector(&stack, &topology.node_ns_path(), saved.path(), &[]);
    let mut udp = UdpFlow::open(&topology);
    udp.send(20);
    // It meters a while before it stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(&mut first);
    let state_file = saved.path().join("connections.state");
    let state = std::fs::read(&state_file).unwrap();
    let marker = std::fs::read(saved.path().join("published.marker")).unwrap();

    let mut corrupt = state.clone();
    let at = corrupt.len() - 20;
    corrupt[at] ^= 0x01;
    let cases = [
        Unusable {
            case: "another namespace",
            state: state.clone(),
            args: &[],
            node: &elsewhere,
            reason: "other_netns",
        },
        Unusable {
            case: "too old",
            state: state.clone(),
            args: &["--state-max-age=1s"],
            node: &topology,
            reason: "too_old",
        },
        Unusable {
            case: "corrupt",
            state: corrupt,
            args: &[],
            node: &topology,
            reason: "corrupt",
        },
    ];
    for Unusable {
        case,
        state: bytes,
        args,
        node,
        reason,
    } in cases
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("connections.state"), &bytes).unwrap();
        std::fs::write(dir.path().join("published.marker"), &marker).unwrap();
        // Bytes moved while no collector ran: a baseline does not count them.
        udp.send(30);
        tokio::time::sleep(Duration::from_millis(1100)).await; // older than 1 s for "too old"
        let mut collector = start_collector(&stack, &node.node_ns_path(), dir.path(), args);
        let ignored =
            format!("netmeter_collector_state_ignored_total{{file=\"state\",reason=\"{reason}\"}}");
        assert_eq!(
            collector.metric(&ignored),
            Some(1.0),
            "{case}: {}",
            collector.process.log_tail()
        );
        assert_logged(&collector, "ignoring the saved state: it ");
        assert_logged(&collector, "the first dump is a baseline");
        assert_eq!(
            collector.metric("netmeter_collector_state_restores_total"),
            None
        );
        assert!(
            !dir.path().join("connections.state").exists(),
            "{case}: the state is consumed"
        );
        // The marker still dates the gap on this table; another namespace's says nothing here.
        let gap = format!("netmeter_collector_restart_gaps_total{{reason=\"{reason}\"}}");
        let expected_gap = (reason != "other_netns").then_some(1.0);
        assert_eq!(collector.metric(&gap), expected_gap, "{case}");
        // Counting runs: what moves now is published, from a baseline. (The pacing: a while
        // before and after the flow moves again.)
        tokio::time::sleep(Duration::from_millis(1500)).await;
        udp.send(10);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop(&mut collector);
    }

    let batches = published(&stack).await;
    let instances = by_instance(&batches);
    assert_eq!(instances.len(), 4);
    assert_eq!(
        sums(instances[0].clone())[&(17, udp.port)].orig_bytes,
        20 * UDP_BYTES
    );
    assert!(
        !sums(instances[1].clone()).contains_key(&(17, udp.port)),
        "another namespace's collector does not see this flow"
    );
    for (instance, case) in [(2, "too old"), (3, "corrupt")] {
        assert_eq!(
            sums(instances[instance].clone())[&(17, udp.port)],
            Counters {
                orig_bytes: 10 * UDP_BYTES,
                orig_packets: 10,
                ..Default::default()
            },
            "{case}: only what moved after the baseline"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_state_dir_is_reported_and_the_collector_runs_without() {
    let stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    // Under a regular file: cannot be created, even by root.
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut collector = start_collector(
        &stack,
        &topology.node_ns_path(),
        &file.path().join("state"),
        &[],
    );
    assert_eq!(
        collector.metric("netmeter_collector_state_errors_total{operation=\"open\"}"),
        Some(1.0)
    );
    assert_logged(&collector, "cannot use --state-dir");
    stop(&mut collector);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_unacknowledged_at_shutdown_are_sent_first_by_the_next_process() {
    let mut stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let mut old = start_collector(&stack, &topology.node_ns_path(), state_dir.path(), &[]);
    let mut udp = UdpFlow::open(&topology);
    udp.send(100);
    // The timeline under test: two intervals published, then two dumped with no broker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.stop_broker();
    udp.send(100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&mut old);
    assert_logged(&old, "the next collector on this node sends them first");
    assert!(state_dir.path().join("unsent.batches").exists());

    stack.start_broker().unwrap();
    let mut new = start_collector(&stack, &topology.node_ns_path(), state_dir.path(), &[]);
    assert_eq!(
        new.metric("netmeter_collector_state_restores_total"),
        Some(1.0)
    );
    udp.send(50);
    // The new process meters a few intervals before it stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restored_batches = new
        .metric("netmeter_collector_restored_batches_total")
        .unwrap();
    let kernel = find(
        &netns::conntrack_list(topology.node_ns_name()).unwrap(),
        17,
        udp.port,
    );
    stop(&mut new);
    assert_eq!(kernel.orig_packets, 250);

    let batches = published(&stack).await;
    // A batch the old broker wrote but never acknowledged is sent again: identical, dropped by
    // downstream dedup (same instance and sequence). Count each once.
    let mut unique: Vec<&ConntrackBatch> = Vec::new();
    for b in &batches {
        match unique.iter().find(|u| {
            u.collector_instance_id == b.collector_instance_id && u.sequence == b.sequence
        }) {
            Some(u) => assert_eq!(*u, b, "a resent batch is identical"),
            None => unique.push(b),
        }
    }
    let instances = by_instance(&batches);
    assert_eq!(instances.len(), 2);
    let old_sequences: Vec<u64> = instances[0].iter().map(|b| b.sequence).collect();
    let last = *old_sequences.iter().max().unwrap();
    assert!(
        (1..=last).all(|s| old_sequences.contains(&s)),
        "the old process's batches all arrived: {old_sequences:?}"
    );
    assert!(restored_batches >= 1.0);
    let first_new = batches
        .iter()
        .position(|b| b.collector_instance_id != batches[0].collector_instance_id)
        .unwrap();
    assert!(
        batches[first_new..]
            .iter()
            .all(|b| b.collector_instance_id != batches[0].collector_instance_id),
        "the saved batches went out before the new process's own"
    );
    assert_eq!(
        sums(unique)[&(17, udp.port)],
        kernel,
        "nothing lost, nothing twice"
    );
}
