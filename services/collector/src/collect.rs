//! The collection loop, on dedicated threads (netlink I/O is blocking): a DESTROY-event reader
//! and an interval dumper share one [`DeltaTracker`]; each interval's deltas go to a channel.
//!
//! Order matters at start: the event socket is open before the baseline dump (the dump
//! thread's first), so a connection that ends after the baseline is always seen, by a dump or
//! by its event. A tracker restored from the previous process's state takes no baseline: its
//! first dump runs at once and counts from the saved counters.
//!
//! And at the end ([`Collection::request_final_dump`], on SIGTERM): a final dump, then the event
//! reader drains what the kernel already queued and stops, those final deltas join the final
//! interval, and only then is the tracker saved — so every change to it was handed on, and
//! nothing moves it after the save.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::conntrack::netlink::NetlinkError;
use crate::conntrack::{ConntrackSocket, DumpMode, EntryFilter};
use crate::delta::{ConntrackDelta, DeltaTracker};
use crate::output::Interval;
use crate::state::StateDir;

/// Socket buffer for events: bursts of short connections must not overrun it.
const EVENT_BUFFER_BYTES: usize = 8 << 20;
/// At the end, the event reader drains its socket until it is quiet this long, or for at most
/// [`EVENT_DRAIN_LIMIT`] (on a busy node connections keep ending).
const EVENT_DRAIN_QUIET: Duration = Duration::from_millis(10);
const EVENT_DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// What the collection threads need to know.
#[derive(Clone, Debug)]
pub struct CollectSettings {
    pub netns: Option<std::path::PathBuf>,
    pub interval: Duration,
    pub mode: DumpMode,
    /// Switch accounting on if it is off, instead of refusing to start.
    pub enable_acct: bool,
    pub filter: EntryFilter,
    /// Where the tracker is saved after the final dump (None: not saved).
    pub state: Option<StateDir>,
}

/// How counting begins.
pub enum Beginning {
    /// The first dump is a baseline: it emits nothing, those bytes predate us.
    Baseline,
    /// Continue from the state the previous process saved: the first interval starts at
    /// `since` (where that process's last one ended) and its dump runs at once.
    Restored {
        tracker: DeltaTracker,
        since: SystemTime,
    },
}

struct Shared {
    filter: EntryFilter,
    tracker: Mutex<DeltaTracker>,
    /// Final deltas from events since the last dump.
    ended: Mutex<Vec<ConntrackDelta>>,
    stop: AtomicBool,
    /// Take the final dump now, save the state, end.
    final_dump: AtomicBool,
    /// The event reader is to drain its socket and end; it clears `events_running` when done.
    events_stop: AtomicBool,
    events_running: AtomicBool,
}

/// Handle to the running collection; dropping it stops the threads.
pub struct Collection {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    counting_since: SystemTime,
}

impl Collection {
    /// Where counting began: the baseline's start, or the restored state's time.
    pub fn counting_since(&self) -> SystemTime {
        self.counting_since
    }

    /// Asks for the final dump (returns at once): the dump thread takes it after any running
    /// dump, hands on its deltas and those of DESTROY events queued meanwhile, saves the state
    /// if every part of the interval was handed on, and ends. The interval channel then closes.
    pub fn request_final_dump(&self) {
        self.shared.final_dump.store(true, Ordering::Relaxed);
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens the sockets (failing fast with a clear error), takes the baseline (unless restored),
/// and starts the threads. Each finished interval is sent to `intervals`.
pub fn start(
    settings: CollectSettings,
    beginning: Beginning,
    intervals: mpsc::Sender<Interval>,
) -> Result<Collection, NetlinkError> {
    let netns = settings.netns.as_deref();
    crate::conntrack::netlink::ensure_accounting(netns, settings.enable_acct)?;
    let mut events = ConntrackSocket::destroy_events(netns, EVENT_BUFFER_BYTES)?;
    events.set_receive_timeout(Duration::from_millis(200))?;
    let dumps = ConntrackSocket::open(netns)?;
    let (tracker, restored_since) = match beginning {
        Beginning::Baseline => (DeltaTracker::new(settings.mode), None),
        Beginning::Restored { tracker, since } => (tracker, Some(since)),
    };
    let shared = Arc::new(Shared {
        filter: settings.filter,
        tracker: Mutex::new(tracker),
        ended: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        final_dump: AtomicBool::new(false),
        events_stop: AtomicBool::new(false),
        events_running: AtomicBool::new(true),
    });
    let mut threads = Vec::new();
    let s = shared.clone();
    threads.push(
        std::thread::Builder::new()
            .name("ct-events".into())
            .spawn(move || read_events(events, &s))
            .expect("spawn"),
    );
    let s = shared.clone();
    let (baseline_tx, baseline) = std::sync::mpsc::sync_channel(1);
    threads.push(
        std::thread::Builder::new()
            .name("ct-dump".into())
            .spawn(move || dump_every(dumps, settings, restored_since, &s, baseline_tx, intervals))
            .expect("spawn"),
    );
    let mut collection = Collection {
        shared,
        threads,
        counting_since: SystemTime::now(),
    };
    // Return once the baseline is taken: what happens from now on is counted.
    match baseline.recv() {
        Ok(Ok(since)) => {
            collection.counting_since = since;
            Ok(collection)
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(NetlinkError::Dump(std::io::Error::other(
            "the dump thread ended before the baseline",
        ))),
    }
}

/// Deltas are handed on in chunks of this many, so an interval in which a million
/// connections transferred is never held in memory at once.
const CHUNK: usize = 10_000;

/// One dump: every wanted entry goes through the tracker, and the resulting deltas go to `emit`
/// in full chunks (not the interval's last part); the rest, with the final deltas from DESTROY
/// events, is returned. On a netlink error the deltas already computed are still emitted (their
/// state is updated), then the error is returned.
fn dump_once(
    socket: &mut ConntrackSocket,
    mode: DumpMode,
    shared: &Shared,
    table_count: Option<usize>,
    emit: &mut dyn FnMut(Vec<ConntrackDelta>, bool),
) -> Result<Vec<ConntrackDelta>, NetlinkError> {
    let started = Instant::now();
    let mut chunk = Vec::new();
    let mut tracker = lock(&shared.tracker);
    if let Some(count) = table_count {
        tracker.reserve(count);
    }
    tracker.start_dump();
    let result = socket.dump(mode, |entry| {
        if shared.filter.wants(&entry)
            && let Some(delta) = tracker.observe(&entry)
        {
            chunk.push(delta);
            if chunk.len() >= CHUNK {
                emit(std::mem::take(&mut chunk), false);
            }
        }
    });
    let stats = match result {
        Ok(stats) => stats,
        Err(err) => {
            drop(tracker);
            emit(chunk, false);
            return Err(err);
        }
    };
    tracker.finish_dump();
    metrics::histogram!(crate::metric_list::DUMP_DURATION.name)
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!(crate::metric_list::CONNTRACK_ENTRIES.name).set(stats.entries as f64);
    metrics::gauge!(crate::metric_list::TRACKED_CONNECTIONS.name).set(tracker.tracked() as f64);
    metrics::counter!(crate::metric_list::MALFORMED_ENTRIES.name).increment(stats.malformed);
    if stats.interrupted {
        metrics::counter!(crate::metric_list::DUMP_INTERRUPTED.name).increment(1);
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(crate::metric_list::LAST_DUMP_TIMESTAMP.name).set(now.as_secs_f64());
    drop(tracker);
    chunk.append(&mut lock(&shared.ended));
    Ok(chunk)
}

fn count(deltas: &[ConntrackDelta]) {
    for d in deltas {
        metrics::counter!(crate::metric_list::BYTES.name, "direction" => "original")
            .increment(d.delta.orig_bytes);
        metrics::counter!(crate::metric_list::BYTES.name, "direction" => "reply")
            .increment(d.delta.reply_bytes);
        metrics::counter!(crate::metric_list::PACKETS.name, "direction" => "original")
            .increment(d.delta.orig_packets);
        metrics::counter!(crate::metric_list::PACKETS.name, "direction" => "reply")
            .increment(d.delta.reply_packets);
    }
    metrics::counter!(crate::metric_list::DELTAS.name).increment(deltas.len() as u64);
}

fn dump_every(
    mut socket: ConntrackSocket,
    settings: CollectSettings,
    restored_since: Option<SystemTime>,
    shared: &Shared,
    ready: std::sync::mpsc::SyncSender<Result<SystemTime, NetlinkError>>,
    intervals: mpsc::Sender<Interval>,
) {
    // In the node's namespace, /proc/sys/net shows that namespace's conntrack count.
    if let Some(netns) = &settings.netns
        && let Err(err) = crate::conntrack::netlink::enter_netns(netns)
    {
        tracing::warn!(error = %err, "conntrack table fill level will not be reported");
    }
    let mut table = TableFill::default();
    // An interval runs from one dump's start to the next one's.
    let (mut start, mut next) = match restored_since {
        // The first dump, at once, counts what moved since the previous process's last one.
        Some(since) => {
            let _ = ready.send(Ok(since));
            (since, Instant::now())
        }
        // The first dump is the baseline: it emits nothing, its bytes predate us.
        None => {
            let baseline_start = SystemTime::now();
            let table_count = table.report();
            let first = dump_once(
                &mut socket,
                settings.mode,
                shared,
                table_count,
                &mut |_, _| {},
            );
            let failed = first.is_err();
            let _ = ready.send(first.map(|_| baseline_start));
            if failed {
                return;
            }
            (baseline_start, Instant::now() + settings.interval)
        }
    };
    let mut restoring = lock(&shared.tracker).restoring();
    let mut receiver_gone = false;
    while !shared.stop.load(Ordering::Relaxed) && !receiver_gone {
        let final_dump = shared.final_dump.load(Ordering::Relaxed);
        if !final_dump && Instant::now() < next {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
            continue;
        }
        next += settings.interval;
        let table_count = table.report();
        let node_addresses = local_addresses();
        let end = SystemTime::now();
        let mut emit = |mut deltas: Vec<ConntrackDelta>, last_part: bool| {
            for d in &mut deltas {
                d.node_endpoint = [
                    d.entry.original.src,
                    d.entry.original.dst,
                    d.entry.reply.src,
                ]
                .iter()
                .any(|a| node_addresses.contains(a));
            }
            count(&deltas);
            let interval = Interval {
                start,
                end,
                deltas,
                last_part,
            };
            receiver_gone |= intervals.blocking_send(interval).is_err();
        };
        let dumped = match dump_once(&mut socket, settings.mode, shared, table_count, &mut emit) {
            Ok(mut rest) => {
                if final_dump {
                    stop_events(shared);
                    rest.append(&mut lock(&shared.ended));
                }
                emit(rest, true);
                true
            }
            Err(err) => {
                // Counted and retried next interval: what was not emitted accumulates.
                metrics::counter!(crate::metric_list::DUMP_ERRORS.name).increment(1);
                tracing::warn!(error = %err, "conntrack dump failed; retrying next interval");
                false
            }
        };
        if dumped {
            start = end;
        }
        if restoring {
            let tracker = lock(&shared.tracker);
            restoring = tracker.restoring();
            if !restoring && let Some(since) = restored_since {
                crate::state::report_ended_between_processes(
                    tracker.stats.ended_between_processes,
                    since,
                );
            }
        }
        if final_dump {
            save_state(&settings, shared, dumped && !receiver_gone, start);
            return;
        }
    }
    // Stopped before the final dump could be taken or handed on (shutdown deadline).
    if shared.final_dump.load(Ordering::Relaxed) {
        save_state(&settings, shared, false, start);
    }
}

/// After the final dump: saves the tracker if the final interval was handed on whole (else the
/// next process must not continue from counters whose deltas may be lost).
fn save_state(settings: &CollectSettings, shared: &Shared, handed_on: bool, since: SystemTime) {
    let Some(state) = &settings.state else {
        return;
    };
    if handed_on {
        state.save_connections(&lock(&shared.tracker), since);
    } else {
        crate::state::report_error(
            "save_state",
            "the counter state is not saved",
            &"the final dump failed, or its deltas could not be handed on before the shutdown deadline",
            "the next collector starts from a baseline and reports the gap",
            true,
        );
    }
}

/// Lets the event reader drain what the kernel already queued, and waits (bounded) until it
/// has ended: after this the tracker changes no more.
fn stop_events(shared: &Shared) {
    shared.events_stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + EVENT_DRAIN_LIMIT + Duration::from_millis(500);
    while shared.events_running.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn read_events(mut socket: ConntrackSocket, shared: &Shared) {
    read_events_until_stopped(&mut socket, shared);
    shared.events_running.store(false, Ordering::Relaxed);
}

fn read_events_until_stopped(socket: &mut ConntrackSocket, shared: &Shared) {
    let mut overrun_logged = false;
    let mut draining_since: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if draining_since.is_none() && shared.events_stop.load(Ordering::Relaxed) {
            // Read what is queued; the first quiet moment ends it.
            let _ = socket.set_receive_timeout(EVENT_DRAIN_QUIET);
            draining_since = Some(Instant::now());
        }
        if draining_since.is_some_and(|since| since.elapsed() > EVENT_DRAIN_LIMIT) {
            return;
        }
        let result = socket.next_events(|event| match event {
            Ok(entry) if shared.filter.wants(&entry) => {
                metrics::counter!(crate::metric_list::EVENTS.name).increment(1);
                if let Some(delta) = lock(&shared.tracker).destroyed(&entry) {
                    lock(&shared.ended).push(delta);
                }
            }
            Ok(_) => {}
            Err(_) => metrics::counter!(crate::metric_list::MALFORMED_ENTRIES.name).increment(1),
        });
        match result {
            Ok(()) => {}
            Err(NetlinkError::Overrun) => {
                // Lost events: those connections' last bytes since the previous dump are lost;
                // the next dump forgets them. Nothing is counted twice.
                metrics::counter!(crate::metric_list::EVENT_OVERRUNS.name).increment(1);
                if !overrun_logged {
                    tracing::warn!(
                        "conntrack event socket overran; final deltas of some ended connections were lost (counted in netmeter_collector_event_overruns_total)"
                    );
                    overrun_logged = true;
                }
            }
            Err(NetlinkError::Dump(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if draining_since.is_some() {
                    return;
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "conntrack event socket failed");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The conntrack table's fill level: when it is full the kernel drops new connections.
#[derive(Default)]
struct TableFill {
    warned: bool,
}

impl TableFill {
    /// Warn above this share of `nf_conntrack_max`.
    const WARN_AT: f64 = 0.9;

    /// Reports the fill level and returns the number of entries.
    fn report(&mut self) -> Option<usize> {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let (Some(count), Some(max)) = (read("nf_conntrack_count"), read("nf_conntrack_max"))
        else {
            return None;
        };
        metrics::gauge!(crate::metric_list::CONNTRACK_TABLE_ENTRIES.name).set(count);
        metrics::gauge!(crate::metric_list::CONNTRACK_TABLE_MAX.name).set(max);
        let near_full = max > 0.0 && count / max >= Self::WARN_AT;
        if near_full && !self.warned {
            tracing::warn!(
                count,
                max,
                "conntrack table is over 90% full: the kernel drops new connections when it is full; raise net.netfilter.nf_conntrack_max"
            );
        }
        self.warned = near_full;
        Some(count as usize)
    }
}

/// The addresses of this thread's network namespace (the node's): deltas with an endpoint
/// among them come from node processes or hostNetwork pods.
fn local_addresses() -> std::collections::HashSet<std::net::IpAddr> {
    let mut addresses = std::collections::HashSet::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we only read and then free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return addresses;
        }
        let mut item = list;
        while !item.is_null() {
            let addr = (*item).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        addresses.insert(
                            std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into(),
                        );
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        addresses.insert(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into());
                    }
                    _ => {}
                }
            }
            item = (*item).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    addresses
}
