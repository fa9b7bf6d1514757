//! Traffic inside namespaces, generated in-process with std sockets created inside a namespace
//! by [`in_netns`]: a socket stays in the namespace it was created in, whichever thread later
//! uses it. All helpers are bounded in time and count, and tests send only between namespaces of
//! a topology (or a mini-cluster).

use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};

use super::namespaces::{in_netns, panic_message};

/// Upper bound for a TCP connect inside the topology (it answers in microseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one blocking read or write, and for waiting for the peer to close.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often background loops check whether they should stop.
const POLL: Duration = Duration::from_millis(20);
/// Socket receive buffer for [`udp_sink`], so a burst is not dropped before we read it.
const UDP_SINK_RCVBUF: libc::c_int = 8 << 20;

/// A TCP listener inside a namespace that accepts any number of connections, reads each to EOF,
/// answers with a fixed number of bytes (none for a plain sink) and then closes it, counting the
/// bytes. Stops (and closes everything) on drop.
#[derive(Debug)]
pub struct TcpSink {
    addr: SocketAddr,
    shared: Arc<SinkShared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SinkShared {
    stop: AtomicBool,
    bytes: AtomicU64,
    accepted: AtomicU64,
    closed: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Bytes written back on every connection once its request has been read.
    reply: u64,
}

impl SinkShared {
    fn error(&self, message: String) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(message);
        }
    }
}

/// Starts a [`TcpSink`] listening on `addr` inside namespace `ns` (port 0 picks a free port; see
/// [`TcpSink::addr`]). Bytes are counted as they arrive, so once a [`tcp_send`] to it returns
/// (it waits for the sink to close), [`TcpSink::received`] includes all of them.
pub fn tcp_sink(ns: &str, addr: SocketAddr) -> anyhow::Result<TcpSink> {
    tcp_server(ns, addr, 0)
}

/// A [`TcpSink`] that answers every connection with `reply` bytes after reading it to EOF: a
/// request/response server (a client's [`tcp_send`] reads the reply before it returns).
pub fn tcp_server(ns: &str, addr: SocketAddr, reply: u64) -> anyhow::Result<TcpSink> {
    let listener = in_netns(ns, move || TcpListener::bind(addr))?
        .with_context(|| format!("cannot listen on {addr} in network namespace {ns}"))?;
    // Non-blocking accept so the loop can notice `stop`; accepted sockets are blocking.
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(SinkShared {
        reply,
        ..SinkShared::default()
    });
    let loop_shared = shared.clone();
    let acceptor = std::thread::Builder::new()
        .name("tcp-sink".into())
        .spawn(move || accept_loop(listener, loop_shared))
        .context("cannot spawn the TCP sink thread")?;
    Ok(TcpSink {
        addr,
        shared,
        acceptor: Some(acceptor),
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<SinkShared>) {
    let mut readers = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let conn_shared = shared.clone();
                readers.push(std::thread::spawn(move || {
                    let answered = drain(&mut stream, &conn_shared)
                        .and_then(|()| write_bytes(&stream, conn_shared.reply));
                    if let Err(e) = answered {
                        conn_shared.error(format!("connection from {peer}: {e:#}"));
                    }
                    // Counted before the close, so a sender that saw the close sees the count.
                    conn_shared.closed.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }));
                readers.retain(|r: &JoinHandle<()>| !r.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                shared.error(format!("accept: {e}"));
                std::thread::sleep(POLL);
            }
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
}

/// Reads `stream` to EOF (or until the sink stops), counting bytes as they arrive.
fn drain(stream: &mut TcpStream, shared: &SinkShared) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl TcpSink {
    /// The address it listens on (with the real port if it was bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Payload bytes received so far, over all connections.
    pub fn received(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections read to EOF and closed (or being closed) so far.
    pub fn closed(&self) -> u64 {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Errors seen on accepted connections (none expected inside a topology).
    pub fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `bytes` were received; false on timeout.
    pub fn wait_received(&self, bytes: u64, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.received() >= bytes)
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One finished TCP connection made by [`tcp_send`] or [`TcpStreamHandle::join`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTransfer {
    /// The client's address: the original tuple's source in conntrack.
    pub local: SocketAddr,
    /// The address connected to, as the client saw it (the VIP for a Service).
    pub peer: SocketAddr,
    /// Payload bytes written.
    pub sent: u64,
    /// Payload bytes the peer sent back before closing (0 for a [`TcpSink`]).
    pub received: u64,
}

/// Connects from namespace `ns` to `to`, writes exactly `bytes` bytes, shuts down its write side
/// and waits (at most 10 s) for the peer to close, so the whole exchange, FIN included, has
/// passed conntrack when it returns.
pub fn tcp_send(ns: &str, to: SocketAddr, bytes: u64) -> anyhow::Result<TcpTransfer> {
    let stream = connect_in(ns, to)?;
    let local = stream.local_addr()?;
    write_bytes(&stream, bytes).with_context(|| format!("sending to {to} from {local}"))?;
    finish(stream, local, to, bytes)
}

fn connect_in(ns: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = in_netns(ns, move || TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))?
        .with_context(|| format!("cannot connect to {to} from network namespace {ns}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn write_bytes(mut stream: &TcpStream, bytes: u64) -> anyhow::Result<()> {
    let buf = [0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream
            .write_all(&buf[..n])
            .with_context(|| format!("write failed with {left} of {bytes} bytes left"))?;
        left -= n as u64;
    }
    Ok(())
}

/// Half-closes, then reads to EOF: returns once the peer has closed its side too.
fn finish(
    mut stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    sent: u64,
) -> anyhow::Result<TcpTransfer> {
    stream
        .shutdown(Shutdown::Write)
        .with_context(|| format!("shutdown of {local} -> {peer}"))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut received = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("waiting for {peer} to close the connection from {local}")
                });
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{peer} kept sending to {local} for {IO_TIMEOUT:?}"
        );
    }
    Ok(TcpTransfer {
        local,
        peer,
        sent,
        received,
    })
}

/// A long-lived connection started by [`tcp_stream`]; stops early (closing cleanly) on drop.
#[derive(Debug)]
pub struct TcpStreamHandle {
    local: SocketAddr,
    peer: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<TcpTransfer>>>,
}

/// Connects from `ns` to `to` and returns as soon as the connection is established; a
/// background thread then writes `chunk` bytes `chunks` times, sleeping `every` between chunks
/// (the first at once), and closes like [`tcp_send`]. It takes about `(chunks - 1) * every`.
pub fn tcp_stream(
    ns: &str,
    to: SocketAddr,
    chunk: u64,
    every: Duration,
    chunks: u32,
) -> anyhow::Result<TcpStreamHandle> {
    let stream = connect_in(ns, to)?;
    let local = stream.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tcp-stream".into())
        .spawn(move || {
            let mut sent = 0u64;
            for i in 0..chunks {
                if i > 0 && !sleep_unless(&thread_stop, every) {
                    break;
                }
                write_bytes(&stream, chunk)
                    .with_context(|| format!("sending chunk {i} to {to} from {local}"))?;
                sent += chunk;
            }
            finish(stream, local, to, sent)
        })
        .context("cannot spawn the TCP stream thread")?;
    Ok(TcpStreamHandle {
        local,
        peer: to,
        stop,
        thread: Some(thread),
    })
}

/// Sleeps `duration` in small steps; false if `stop` was set meanwhile.
fn sleep_unless(stop: &AtomicBool, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

impl TcpStreamHandle {
    /// The client's address, known as soon as the connection is up.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for all chunks to be written and the peer to close.
    pub fn join(mut self) -> anyhow::Result<TcpTransfer> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("the stream from {} was already joined", self.local))?;
        thread.join().map_err(|panic| {
            anyhow!(
                "stream thread from {} panicked: {}",
                self.local,
                panic_message(panic.as_ref())
            )
        })?
    }
}

impl Drop for TcpStreamHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `datagrams` UDP datagrams of `size` payload bytes from namespace `ns` to `to` and
/// returns the source address used (the original tuple's source in conntrack). The socket is
/// bound to the routed source address and not connected, so an ICMP port-unreachable (no
/// listener) cannot fail later sends: exactly `datagrams` datagrams leave the socket.
pub fn udp_send(
    ns: &str,
    to: SocketAddr,
    datagrams: u32,
    size: usize,
) -> anyhow::Result<SocketAddr> {
    let max = if to.is_ipv4() { 65_507 } else { 65_527 };
    ensure!(
        size <= max,
        "a UDP datagram to {to} holds at most {max} bytes, not {size}"
    );
    let socket = in_netns(ns, move || -> std::io::Result<UdpSocket> {
        let any: IpAddr = if to.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        // Connecting a UDP socket only looks up the route: it yields the source address.
        let probe = UdpSocket::bind((any, 0))?;
        probe.connect(to)?;
        UdpSocket::bind((probe.local_addr()?.ip(), 0))
    })?
    .with_context(|| format!("cannot open a UDP socket towards {to} in network namespace {ns}"))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    let local = socket.local_addr()?;
    let payload = vec![0xa5u8; size];
    for i in 0..datagrams {
        let n = socket
            .send_to(&payload, to)
            .with_context(|| format!("sending datagram {i} of {datagrams} from {local} to {to}"))?;
        ensure!(n == size, "sent {n} of {size} bytes from {local} to {to}");
    }
    Ok(local)
}

/// Datagrams and payload bytes a [`UdpSink`] received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpReceived {
    pub datagrams: u64,
    pub bytes: u64,
}

/// A UDP socket inside a namespace that counts what it receives until dropped. Its receive
/// buffer is 8 MiB so bursts from [`udp_send`] are not dropped before they are read (conntrack on
/// the node counts them either way: it sees them before the socket does).
#[derive(Debug)]
pub struct UdpSink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    datagrams: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a [`UdpSink`] bound to `addr` in namespace `ns` (port 0 picks a free port).
pub fn udp_sink(ns: &str, addr: SocketAddr) -> anyhow::Result<UdpSink> {
    let socket = in_netns(ns, move || UdpSocket::bind(addr))?
        .with_context(|| format!("cannot bind UDP {addr} in network namespace {ns}"))?;
    set_receive_buffer(&socket, UDP_SINK_RCVBUF)
        .with_context(|| format!("cannot enlarge the receive buffer of UDP {addr}"))?;
    socket.set_read_timeout(Some(POLL))?;
    let addr = socket.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let datagrams = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (t_stop, t_datagrams, t_bytes) = (stop.clone(), datagrams.clone(), bytes.clone());
    let thread = std::thread::Builder::new()
        .name("udp-sink".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !t_stop.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    t_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    t_datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .context("cannot spawn the UDP sink thread")?;
    Ok(UdpSink {
        addr,
        stop,
        datagrams,
        bytes,
        thread: Some(thread),
    })
}

/// Gives `socket` a receive buffer of `size` bytes (the kernel doubles it): SO_RCVBUFFORCE (we
/// are root in tests) so the size is not capped by the global rmem_max; plain SO_RCVBUF
/// (capped) without CAP_NET_ADMIN.
pub(crate) fn set_receive_buffer(socket: &impl AsRawFd, size: libc::c_int) -> std::io::Result<()> {
    let set = |option| {
        // SAFETY: passes a valid c_int and its size for an option that takes a c_int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl UdpSink {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn received(&self) -> UdpReceived {
        UdpReceived {
            datagrams: self.datagrams.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `datagrams` arrived; false on timeout.
    pub fn wait_for(&self, datagrams: u64, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.received().datagrams >= datagrams)
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
