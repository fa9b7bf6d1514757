//! The ctnetlink socket: table dumps (optionally zeroing counters) and DESTROY events, in our
//! own network namespace or a given one. Blocking I/O: callers run it on a dedicated thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::{ConntrackEntry, ParseError, parse_entry};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// GET_CTRZERO: dump and atomically zero the counters (no typed variant in the crate).
const IPCTNL_MSG_CT_GET_CTRZERO: u8 = 3;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// Large enough for any dump chunk the kernel sends (it fills up to ~32 KiB per recv).
const RECV_BUFFER: usize = 1 << 16;

/// How a dump treats the kernel's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpMode {
    /// Read only: other conntrack readers on the node are unaffected (default).
    Read,
    /// GET_CTRZERO: read and zero atomically. Cheaper (no per-connection state needed for
    /// deltas) but steals the counts of every other reader on the node.
    Zero,
}

/// What a finished dump reports besides its entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub entries: u64,
    /// Messages we could not decode (counted, skipped).
    pub malformed: u64,
    /// The kernel flagged the dump as interrupted by concurrent table changes
    /// (NLM_F_DUMP_INTR): entries may be missing or repeated in this dump.
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot enter network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("netlink socket: {0} (the collector needs CAP_NET_ADMIN)")]
    Socket(io::Error),
    #[error("conntrack dump failed: {0}")]
    Dump(io::Error),
    #[error("event socket overrun (ENOBUFS): events were lost")]
    Overrun,
    #[error(
        "conntrack accounting is off in {0}, so there are no byte counters: run with --enable-acct, or set net.netfilter.nf_conntrack_acct=1 there"
    )]
    AccountingOff(String),
}

pub struct ConntrackSocket {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

impl From<Socket> for ConntrackSocket {
    fn from(socket: Socket) -> Self {
        ConntrackSocket {
            socket,
            buffer: vec![0; RECV_BUFFER],
            sequence: 0,
        }
    }
}

impl ConntrackSocket {
    /// A socket for dumps, in `netns` (a path like /run/netns/NAME) or in ours.
    pub fn open(netns: Option<&Path>) -> Result<Self, NetlinkError> {
        let socket = in_netns(netns, || {
            let mut socket = Socket::new(NETLINK_NETFILTER)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        })?;
        Ok(Self::from(socket))
    }

    /// A socket subscribed to DESTROY events (final counters of ended connections).
    pub fn destroy_events(
        netns: Option<&Path>,
        receive_buffer: usize,
    ) -> Result<Self, NetlinkError> {
        let socket = in_netns(netns, move || {
            let mut socket = Socket::new(NETLINK_NETFILTER)?;
            socket.bind_auto()?;
            socket.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
            set_receive_buffer(&socket, receive_buffer)?;
            Ok(socket)
        })?;
        Ok(Self::from(socket))
    }

    /// Makes blocking receives return `WouldBlock` after `timeout`, so readers can stop.
    pub fn set_receive_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<(), NetlinkError> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Dumps the IPv4 and IPv6 tables, calling `on_entry` for each entry.
    pub fn dump(
        &mut self,
        mode: DumpMode,
        mut on_entry: impl FnMut(ConntrackEntry),
    ) -> Result<DumpStats, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let message = match mode {
            DumpMode::Read => ConntrackMessage::Get(vec![]),
            DumpMode::Zero => ConntrackMessage::Other {
                message_type: IPCTNL_MSG_CT_GET_CTRZERO,
                attributes: vec![],
            },
        };
        let mut request = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            message,
        ));
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        request.header.sequence_number = self.sequence;
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(NetlinkError::Dump)?;

        let mut stats = DumpStats::default();
        loop {
            let received = self.receive().map_err(NetlinkError::Dump)?;
            let mut done = false;
            for_each_message(&self.buffer[..received], |kind, flags, payload| {
                if flags & NLM_F_DUMP_INTR != 0 {
                    stats.interrupted = true;
                }
                match kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                    }
                    _ if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                        match parse_entry(payload) {
                            Ok(entry) => {
                                stats.entries += 1;
                                on_entry(entry);
                            }
                            Err(_) => stats.malformed += 1,
                        }
                    }
                    _ => {}
                }
                Ok(())
            })
            .map_err(NetlinkError::Dump)?;
            if done {
                return Ok(stats);
            }
        }
    }

    /// Waits for the next batch of events; `on_destroy` gets each destroyed entry.
    /// Returns `Overrun` when the kernel dropped events (the caller resyncs from a dump).
    pub fn next_events(
        &mut self,
        mut on_destroy: impl FnMut(Result<ConntrackEntry, ParseError>),
    ) -> Result<(), NetlinkError> {
        let received = match self.receive() {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(NetlinkError::Overrun),
            Err(e) => return Err(NetlinkError::Dump(e)),
        };
        for_each_message(&self.buffer[..received], |kind, _, payload| {
            if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE {
                on_destroy(parse_entry(payload));
            }
            Ok(())
        })
        .map_err(NetlinkError::Dump)
    }

    fn receive(&mut self) -> io::Result<usize> {
        loop {
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Walks the netlink messages in one datagram: `(type, flags, payload)`.
fn for_each_message(
    mut buf: &[u8],
    mut f: impl FnMut(u16, u16, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink message of {len} bytes in {}", buf.len()),
            ));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        f(kind, flags, &buf[NLMSG_HDRLEN..len])?;
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(())
}

fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    let size = bytes as libc::c_int;
    // SO_RCVBUFFORCE (root / CAP_NET_ADMIN) goes past net.core.rmem_max; fall back if denied.
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

/// Checks that conntrack accounting (byte/packet counters) is on in `netns`; with `enable`,
/// switches it on (it is a per-namespace sysctl). Without it every delta would be zero.
pub fn ensure_accounting(netns: Option<&Path>, enable: bool) -> Result<(), NetlinkError> {
    const SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";
    let where_ = netns
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "this network namespace".into());
    // /proc/sys/net shows the namespace of the reading thread, so read it from inside.
    let on = in_netns(netns, move || {
        let value = std::fs::read_to_string(SYSCTL)?;
        if value.trim() != "0" {
            return Ok(true);
        }
        if enable {
            std::fs::write(SYSCTL, "1")?;
            return Ok(true);
        }
        Ok(false)
    })?;
    if on {
        Ok(())
    } else {
        Err(NetlinkError::AccountingOff(where_))
    }
}

/// The cookie of `netns` (or ours): a 64-bit id the kernel never reuses within a boot, unlike
/// the namespace's inode number (SO_NETNS_COOKIE, Linux 5.14+).
pub fn netns_cookie(netns: Option<&Path>) -> Result<u64, NetlinkError> {
    in_netns(netns, || {
        // Any socket belongs to the namespace it was created in; this one binds nothing.
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let mut cookie: u64 = 0;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `cookie`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cookie)
    })
}

/// Moves the calling thread into `netns` (other threads stay where they are).
pub fn enter_netns(netns: &Path) -> Result<(), NetlinkError> {
    let netns_error = |source| NetlinkError::Netns {
        path: netns.to_path_buf(),
        source,
    };
    let file = File::open(netns).map_err(netns_error)?;
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(netns_error(io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `open` with the calling context in `netns`: on a short-lived thread that joined the
/// namespace, since setns changes only the calling thread. Sockets keep their namespace.
fn in_netns<T: Send + 'static>(
    netns: Option<&Path>,
    open: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, NetlinkError> {
    let Some(path) = netns else {
        return open().map_err(NetlinkError::Socket);
    };
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        enter_netns(&path)?;
        open().map_err(NetlinkError::Socket)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetlinkError::Socket(io::Error::other(
            "namespace thread panicked",
        )))
    })
}
