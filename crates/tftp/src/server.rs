//! The driver: owns the sockets, reads files, and carries out what
//! [`crate::protocol::Transfer`] decides. No protocol decisions live here.
//!
//! Requests arrive on a tokio socket; each transfer then runs on a thread
//! of its own with a blocking socket, as tftp-hpa runs a process per
//! transfer. A lockstep transfer is a ping-pong with one client, and the
//! kernel serves that best when one thread sends a block and sleeps in
//! `recv` at once: the client is woken on the same CPU and its ACK wakes
//! the thread directly. On one runtime shared by every transfer, the worker
//! that sent a block went on to other tasks while the woken client waited
//! behind it, and each ACK came back through `epoll` and the scheduler;
//! with 32 clients on two cores that halved the throughput. A thread per
//! transfer also lets file reads block on the page cache (or a slow disk)
//! holding up nobody else, so no read goes through the blocking pool.

use std::fs::File;
use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::libc;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use thiserror::Error;
use tokio::io::Interest;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Span, debug, info, info_span, warn};

use crate::cache::FileCache;
use crate::packet::{self, Direction, ErrorCode, Mode, Packet, Request};
use crate::path::{self, PathError, normalize};
use crate::protocol::{Action, Event, Limits, Transfer, negotiate};
use crate::source::{Content, Growing, Source, TransferOutcome, TransferReport};

/// Server settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub limits: Limits,
    /// Transfers running at once; requests beyond it are dropped (the
    /// client retries) so a flood of requests cannot exhaust ports,
    /// threads or memory.
    pub max_transfers: usize,
    /// How long [`serve`] waits for transfers to send their farewell ERROR
    /// after shutdown before it returns anyway.
    pub shutdown_grace: Duration,
    /// Files up to this size are read once into memory and shared by every
    /// transfer of the same version of the file: boot loaders are fetched
    /// by a whole rack at once. Larger files are read from the page cache
    /// as they are sent.
    pub memory_file_max: u64,
    /// Memory held by those files in all; the least recently served are
    /// dropped first.
    pub memory_total: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_transfers: 512,
            shutdown_grace: Duration::from_secs(2),
            memory_file_max: 8 << 20,
            memory_total: 64 << 20,
        }
    }
}

/// Why a requested file cannot be served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("file not found")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("permission denied")]
    PermissionDenied,
    #[error("file too large for netascii mode")]
    TooLargeForNetascii,
    #[error("cannot read file: {0}")]
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Self::NotFound,
            io::ErrorKind::PermissionDenied => Self::PermissionDenied,
            _ => Self::Io(e),
        }
    }
}

impl OpenError {
    /// The ERROR packet a client gets. I/O details stay in the log.
    pub fn to_wire(&self) -> (ErrorCode, &'static str) {
        match self {
            Self::Path(_) => (ErrorCode::AccessViolation, "illegal file name"),
            Self::NotFound | Self::NotAFile => (ErrorCode::FileNotFound, "file not found"),
            Self::PermissionDenied => (ErrorCode::AccessViolation, "permission denied"),
            Self::TooLargeForNetascii => (ErrorCode::NotDefined, "use octet mode for this file"),
            Self::Io(_) => (ErrorCode::NotDefined, "read error"),
        }
    }
}

/// Serves read requests arriving on `socket` until `shutdown` is cancelled,
/// with default [`Config`].
pub async fn serve(
    socket: tokio::net::UdpSocket,
    source: Arc<dyn Source>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with(socket, source, Config::default(), shutdown).await
}

/// Serves read requests arriving on `socket` until `shutdown` is cancelled.
///
/// Each request gets its own thread and its own ephemeral-port socket
/// (RFC 1350 transfer IDs), so a client that aborts and asks again from the
/// same port simply starts a second, independent transfer. Returns once the
/// transfers have stopped or [`Config::shutdown_grace`] has passed.
pub async fn serve_with(
    socket: tokio::net::UdpSocket,
    source: Arc<dyn Source>,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let listening_ip = socket.local_addr()?.ip();
    ask_for_destinations(&socket)?;
    // Transfer threads reach the source's async side through this.
    let runtime = tokio::runtime::Handle::current();
    let tracker = TaskTracker::new();
    let cache = Arc::new(FileCache::new(config.memory_file_max, config.memory_total));
    // Requests are small, but a full datagram buffer keeps an oversized one
    // from being silently truncated into something that parses.
    let mut buf = vec![0u8; 65_536];
    let result = loop {
        let (len, peer, destination) = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            received = socket.async_io(Interest::READABLE, || receive(&socket, &mut buf)) => match received {
                Ok(received) => received,
                Err(e) if is_transient(&e) => continue,
                Err(e) => break Err(e),
            },
        };
        let datagram = &buf[..len];
        let request = match Packet::parse(datagram) {
            Ok(Packet::Request(request)) => Ok(request),
            // Only something that claims to be a request earns a reply; other
            // junk on port 69 is dropped so the server is no reflector.
            Err(e) if matches!(datagram, [0, 1 | 2, ..]) => Err(e),
            other => {
                debug!(%peer, ?other, "ignoring datagram on the request port");
                continue;
            }
        };
        if !source.answering() {
            debug!(%peer, "standing by: request not answered");
            continue;
        }
        if tracker.len() >= config.max_transfers {
            warn!(%peer, running = tracker.len(), "too many transfers; request dropped");
            continue;
        }
        let file = request
            .as_ref()
            .map(|r| String::from_utf8_lossy(&r.filename).into_owned());
        let span = info_span!("tftp", %peer, file = file.as_deref().unwrap_or_default());
        let job = Job {
            local_ip: destination.filter(bindable).unwrap_or(listening_ip),
            peer,
            source: source.clone(),
            cache: cache.clone(),
            runtime: runtime.clone(),
            limits: config.limits.clone(),
            // A child per transfer: a token shared by every transfer would
            // contend on one lock per check.
            shutdown: shutdown.child_token(),
            span,
        };
        // The thread holds `done` until it ends; the tracked task that
        // waits for it is what `max_transfers` and the shutdown drain count.
        let (done, ended) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("tftp-transfer".into())
            .stack_size(TRANSFER_STACK)
            .spawn(move || {
                let _done = done;
                job.run(request);
            });
        match spawned {
            Ok(_) => {
                tracker.spawn(async move {
                    let _ = ended.await;
                });
            }
            Err(e) => warn!(%peer, error = %e, "cannot start a transfer thread; request dropped"),
        }
    };
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(left = tracker.len(), "transfers still running at shutdown");
    }
    result
}

/// A transfer's thread needs little stack: it holds one datagram buffer on
/// the heap and calls no deep code.
const TRANSFER_STACK: usize = 256 * 1024;

/// Longest a transfer sleeps in `recv` before it looks at the shutdown
/// token, so shutdown takes well under [`Config::shutdown_grace`].
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}

/// How a request ended; logged once per request.
#[derive(Debug)]
enum Outcome {
    Sent {
        bytes: u64,
        elapsed: Duration,
    },
    Malformed(packet::ParseError),
    WriteRefused,
    Refused(OpenError),
    /// The client sent an ERROR, typically PXE firmware that only wanted
    /// `tsize`.
    ClientAborted {
        code: ErrorCode,
        message: String,
        bytes: u64,
    },
    /// The client's port is closed (ICMP port unreachable).
    ClientGone,
    GaveUp {
        bytes: u64,
    },
    ShutDown,
    /// The source stopped answering mid-transfer ([`Source::answering`]):
    /// nothing more is sent, not even an ERROR.
    StoodDown,
}

impl Outcome {
    /// What the source hears of it.
    fn report(&self, file: String, duration: Duration) -> TransferReport {
        let refused = |reason: String| (TransferOutcome::Refused { reason }, 0);
        let (outcome, bytes) = match self {
            Outcome::Sent { bytes, .. } => (TransferOutcome::Complete, *bytes),
            Outcome::Malformed(e) => refused(e.to_string()),
            Outcome::WriteRefused => refused("write request".into()),
            Outcome::Refused(e) => refused(e.to_string()),
            Outcome::ClientAborted {
                code,
                message,
                bytes,
            } => (
                TransferOutcome::ClientAborted {
                    code: code.as_u16(),
                    message: message.clone(),
                },
                *bytes,
            ),
            Outcome::ClientGone => (TransferOutcome::ClientGone, 0),
            Outcome::GaveUp { bytes } => (TransferOutcome::TimedOut, *bytes),
            Outcome::ShutDown => (TransferOutcome::ShutDown, 0),
            Outcome::StoodDown => (TransferOutcome::StoodDown, 0),
        };
        TransferReport {
            file,
            outcome,
            bytes,
            duration,
        }
    }
}

/// What the thread that serves one request needs besides the request.
#[derive(Debug)]
struct Job {
    local_ip: IpAddr,
    /// Where the client is, as the socket reached it: an IPv4 client of a
    /// dual-stack socket is an IPv4-mapped IPv6 address here.
    peer: SocketAddr,
    source: Arc<dyn Source>,
    cache: Arc<FileCache>,
    runtime: tokio::runtime::Handle,
    limits: Limits,
    shutdown: CancellationToken,
    span: Span,
}

impl Job {
    /// The client as the source sees it: an IPv4 client is an IPv4
    /// address, whichever socket it came in on.
    fn client(&self) -> SocketAddr {
        SocketAddr::new(self.peer.ip().to_canonical(), self.peer.port())
    }

    fn run(self, request: Result<Request, packet::ParseError>) {
        let _entered = self.span.enter();
        // The source's callbacks may spawn tasks and set timers; this
        // thread is not one of the runtime's, so it enters its context.
        let _runtime = self.runtime.enter();
        let started = Instant::now();
        let file = request
            .as_ref()
            .map(|r| String::from_utf8_lossy(&r.filename).into_owned())
            .unwrap_or_default();
        let socket = match bind_transfer_socket(self.local_ip, self.peer) {
            Ok(socket) => socket,
            Err(e) => return warn!(error = %e, "cannot open a transfer socket"),
        };
        let outcome = match request {
            Ok(request) => transfer(&socket, request, &self),
            Err(e) => Ok(Outcome::Malformed(e)),
        };
        let outcome = match outcome {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Outcome::ClientGone,
            Err(e) => {
                let report = TransferReport {
                    file,
                    outcome: TransferOutcome::Failed {
                        reason: e.to_string(),
                    },
                    bytes: 0,
                    duration: started.elapsed(),
                };
                self.source.transfer_ended(self.client(), &report);
                // The client hears why, if it still listens.
                let _ = socket.send(&packet::encode_error(ErrorCode::NotDefined, "read error"));
                return warn!(error = %e, "transfer failed");
            }
            Ok(outcome) => outcome,
        };
        self.source
            .transfer_ended(self.client(), &outcome.report(file, started.elapsed()));
        let reply = match &outcome {
            Outcome::Malformed(_) => Some((ErrorCode::IllegalOperation, "malformed request")),
            Outcome::WriteRefused => Some((ErrorCode::AccessViolation, "read-only server")),
            Outcome::Refused(e) => Some(e.to_wire()),
            Outcome::GaveUp { .. } => Some((ErrorCode::NotDefined, "timed out")),
            Outcome::ShutDown => Some((ErrorCode::NotDefined, "server shutting down")),
            Outcome::Sent { .. }
            | Outcome::ClientAborted { .. }
            | Outcome::ClientGone
            | Outcome::StoodDown => None,
        };
        if let Some((code, message)) = reply
            && let Err(e) = socket.send(&packet::encode_error(code, message))
        {
            debug!(error = %e, "could not send ERROR");
        }
        match outcome {
            Outcome::Sent { bytes, elapsed } => info!(bytes, ?elapsed, "sent"),
            Outcome::Malformed(e) => warn!(error = %e, "malformed request"),
            Outcome::Refused(e) => info!(error = %e, "request refused"),
            Outcome::ClientAborted {
                code,
                message,
                bytes,
            } => info!(?code, %message, bytes, "client aborted"),
            Outcome::GaveUp { bytes } => warn!(bytes, "no ACK after retries; gave up"),
            other => info!(outcome = ?other, "transfer ended"),
        }
    }
}

/// Asks the kernel to say, with each datagram, the address it was sent to.
fn ask_for_destinations(socket: &tokio::net::UdpSocket) -> io::Result<()> {
    let set = match socket.local_addr()? {
        SocketAddr::V4(_) => setsockopt(socket, sockopt::Ipv4PacketInfo, &true),
        // Also IPv4 datagrams on a dual-stack socket, as mapped addresses.
        SocketAddr::V6(_) => setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true),
    };
    set.map_err(io::Error::from)
}

/// One datagram, its sender, and the address it was sent to (`None` if
/// the kernel did not say).
///
/// A transfer answers from the address its request came to: a socket
/// listening on a wildcard address would otherwise send from whichever
/// address the kernel picks for the client, and on an interface with
/// several (an IPv6 segment's SLAAC address beside the appliance's own, a
/// second IPv4 address) firmware drops packets from any server address but
/// the one it asked (EDK2 does).
fn receive(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let peer = message
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in6()
                .map(|a| SocketAddr::V6((*a).into()))
                .or_else(|| a.as_sockaddr_in().map(|a| SocketAddr::V4((*a).into())))
        })
        .ok_or_else(|| io::Error::other("a datagram without a sender's address"))?;
    let destination = message.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)))
        }
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from_be(info.ipi_spec_dst.s_addr),
        ))),
        _ => None,
    });
    Ok((message.bytes, peer, destination))
}

/// Whether a transfer socket can be bound to `ip` with no more than the
/// address: a link-local one would need its interface (the wildcard then
/// answers from the right one, there being one per link), a multicast one
/// is no source.
fn bindable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_multicast() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_multicast() && !v6.is_unicast_link_local(),
    }
}

fn bind_transfer_socket(local_ip: IpAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
    // Connected: the kernel drops datagrams from other transfer IDs, and a
    // closed client port surfaces as ECONNREFUSED instead of retries.
    socket.connect(peer)?;
    socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
    Ok(socket)
}

fn transfer(socket: &UdpSocket, request: Request, job: &Job) -> io::Result<Outcome> {
    let (limits, shutdown) = (&job.limits, &job.shutdown);
    if request.direction == Direction::Write {
        return Ok(Outcome::WriteRefused);
    }
    let mut body = match Body::open(job, &request.filename) {
        Ok(body) => body,
        Err(e) => return Ok(Outcome::Refused(e)),
    };
    if request.mode == Mode::NetAscii {
        body = match body.into_netascii() {
            Ok(body) => body,
            Err(e) => return Ok(Outcome::Refused(e)),
        };
    }
    let size = body.size();
    let negotiated = negotiate(&request.options, size, limits);
    let (mut transfer, mut action) = Transfer::start(negotiated, size, limits);
    let params = transfer.params().clone();
    debug!(blksize = params.blksize, windowsize = params.windowsize, mode = ?request.mode, "transfer starts");
    let started = Instant::now();
    let mut out = Vec::with_capacity(usize::from(params.blksize) + 4);
    // An ACK is 4 bytes and an ERROR short; anything longer is not for us.
    let mut inbox = [0u8; 1024];
    let mut client_error = None;
    let mut deadline = started + params.timeout;
    // Timeouts in a row since the client last made progress.
    let mut backoff = 0u32;
    let mut waits = Waits::new(socket);
    loop {
        match action {
            Action::SendOack => {
                let oack = params.oack.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                socket.send(&packet::encode_oack(oack))?;
                deadline = Instant::now() + params.timeout * (1 << backoff);
            }
            Action::SendBlocks { .. } if !job.source.answering() => {
                return Ok(Outcome::StoodDown);
            }
            Action::SendBlocks { first, last } => {
                for n in first..=last {
                    let block = transfer.block(n);
                    out.clear();
                    packet::encode_data_header(&mut out, block.wire);
                    out.extend_from_slice(body.read(block.offset, block.len)?);
                    socket.send(&out)?;
                }
                deadline = Instant::now() + params.timeout * (1 << backoff);
            }
            Action::Ignore => {}
            Action::Complete => {
                let elapsed = started.elapsed();
                return Ok(Outcome::Sent {
                    bytes: size,
                    elapsed,
                });
            }
            Action::Aborted => {
                let (code, message) =
                    client_error.unwrap_or((ErrorCode::NotDefined, String::new()));
                let bytes = transfer.acked_bytes();
                return Ok(Outcome::ClientAborted {
                    code,
                    message,
                    bytes,
                });
            }
            Action::GaveUp => {
                return Ok(Outcome::GaveUp {
                    bytes: transfer.acked_bytes(),
                });
            }
        }
        let event = match waits.recv(&mut inbox, deadline, shutdown)? {
            Received::Datagram(len) => match Packet::parse(&inbox[..len]) {
                Ok(Packet::Ack { block }) => Event::Ack(block),
                Ok(Packet::Error { code, message }) => {
                    client_error = Some((code, message));
                    Event::ClientError
                }
                other => {
                    debug!(?other, "ignoring unexpected packet");
                    action = Action::Ignore;
                    continue;
                }
            },
            Received::Timeout => Event::Timeout,
            Received::ShutDown => return Ok(Outcome::ShutDown),
        };
        action = transfer.handle(event);
        // Each retransmission waits twice as long as the one before (RFC 1123
        // 4.2.3.2). Besides easing a congested link, the gap lets clients
        // that re-ACK a duplicate block only once (atftp) reach their own
        // timeout and ACK again, instead of ignoring retransmissions until
        // the server gives up.
        backoff = match (event, action) {
            (Event::Timeout, _) => (backoff + 1).min(MAX_BACKOFF),
            (_, Action::Ignore) => backoff,
            _ => 0,
        };
    }
}

/// At most 2^4 times the negotiated timeout between retransmissions: with
/// five retries and the default 1 s, a silent client is given up after
/// 1 + 2 + 4 + 8 + 16 s.
const MAX_BACKOFF: u32 = 4;

/// What one wait for the client ended with.
#[derive(Debug)]
enum Received {
    Datagram(usize),
    Timeout,
    ShutDown,
}

/// Blocking receives bounded by the retransmission deadline and the
/// shutdown token. The socket's read timeout stays at [`SHUTDOWN_POLL`]
/// while the client answers in time, so the hot path is one `recv` per
/// ACK; it is shortened only for the last stretch before a deadline.
#[derive(Debug)]
struct Waits<'a> {
    socket: &'a UdpSocket,
    timeout: Duration,
}

impl<'a> Waits<'a> {
    fn new(socket: &'a UdpSocket) -> Self {
        Self {
            socket,
            timeout: SHUTDOWN_POLL,
        }
    }

    fn recv(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        shutdown: &CancellationToken,
    ) -> io::Result<Received> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(Received::ShutDown);
            }
            match self.socket.recv(buf) {
                Ok(len) => return Ok(Received::Datagram(len)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                self.set_timeout(SHUTDOWN_POLL)?;
                return Ok(Received::Timeout);
            }
            // Never zero: a zero read timeout is refused by the kernel.
            let left = (deadline - now).max(Duration::from_millis(1));
            self.set_timeout(left.min(SHUTDOWN_POLL))?;
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if timeout != self.timeout {
            self.socket.set_read_timeout(Some(timeout))?;
            self.timeout = timeout;
        }
        Ok(())
    }
}

/// Largest file served in netascii mode; larger ones are binaries that
/// want `octet` anyway.
const NETASCII_MAX: u64 = 16 * 1024 * 1024;

/// Bytes read per `pread` of a file too large for memory: one system call
/// per 44 lockstep blocks of 1468 bytes, and a buffer the transfer reuses.
const READ_AHEAD: usize = 64 * 1024;

/// The content of one transfer.
#[derive(Debug)]
enum Body {
    /// Generated, or a file held in memory (see [`FileCache`]).
    Memory(Bytes),
    File {
        file: File,
        /// Where the content starts in `file`.
        offset: u64,
        size: u64,
        buf: Vec<u8>,
        /// File offset of `buf[0]`; `buf` holds what was read there.
        buf_at: u64,
    },
    Growing {
        file: Box<dyn Growing>,
        buf: Vec<u8>,
    },
}

impl Body {
    fn open(job: &Job, raw: &[u8]) -> Result<Self, OpenError> {
        let path = normalize(raw)?;
        // This thread is not one of the runtime's, so it may block on it.
        let supplied = job.runtime.block_on(job.source.open(&path, job.client()))?;
        let cache = &job.cache;
        let (file, offset, size) = match supplied {
            Content::Bytes(bytes) => return Ok(Self::Memory(bytes)),
            Content::Growing(file) => {
                return Ok(Self::Growing {
                    file,
                    buf: Vec::new(),
                });
            }
            Content::File { file, offset, size } => (file, offset, size),
            Content::UnderRoot(root) => {
                let (file, size) = path::open_file(&root, &path)?;
                (file, 0, size)
            }
        };
        if cache.admits(size) {
            let bytes = cache.get_or_read(Path::new(&path), &file, offset, size)?;
            return Ok(Self::Memory(bytes));
        }
        Ok(Self::File {
            file,
            offset,
            size,
            buf: Vec::new(),
            buf_at: 0,
        })
    }

    /// Netascii is converted in memory: it is meant for small text files
    /// (tftp-hpa's client asks for it unless told `-m octet`), and the
    /// converted size must be known up front for `tsize`.
    fn into_netascii(self) -> Result<Self, OpenError> {
        let raw = match self {
            Self::Memory(bytes) => bytes,
            Self::File {
                file, offset, size, ..
            } => {
                let len = usize::try_from(size)
                    .ok()
                    .filter(|&len| len as u64 <= NETASCII_MAX)
                    .ok_or(OpenError::TooLargeForNetascii)?;
                let mut buf = vec![0; len];
                file.read_exact_at(&mut buf, offset)?;
                Bytes::from(buf)
            }
            Self::Growing { mut file, .. } => {
                let len = usize::try_from(file.size())
                    .ok()
                    .filter(|&len| len as u64 <= NETASCII_MAX)
                    .ok_or(OpenError::TooLargeForNetascii)?;
                let mut buf = vec![0; len];
                file.read_exact_at(&mut buf, 0)?;
                Bytes::from(buf)
            }
        };
        Ok(Self::Memory(packet::to_netascii(&raw).into()))
    }

    fn size(&self) -> u64 {
        match self {
            Self::Memory(bytes) => bytes.len() as u64,
            Self::File { size, .. } => *size,
            Self::Growing { file, .. } => file.size(),
        }
    }

    /// `offset + len` never exceeds [`Body::size`]: blocks come from it.
    fn read(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        match self {
            Self::Memory(bytes) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                Ok(&bytes[start..start + len])
            }
            Self::Growing { file, buf } => {
                // Block by block: only the first machine to ask for a file
                // reads it while it arrives.
                buf.resize(len, 0);
                file.read_exact_at(buf, offset)?;
                Ok(&buf[..])
            }
            Self::File {
                file,
                offset: start,
                size,
                buf,
                buf_at,
            } => {
                let end = offset + len as u64;
                if offset < *buf_at || end > *buf_at + buf.len() as u64 {
                    let want = usize::try_from(*size - offset)
                        .unwrap_or(usize::MAX)
                        .min(READ_AHEAD.max(len));
                    buf.resize(want, 0);
                    // A file that shrinks under a transfer fails the read
                    // (UnexpectedEof) rather than ending the transfer early.
                    file.read_exact_at(buf, *start + offset)?;
                    *buf_at = offset;
                }
                let start = (offset - *buf_at) as usize;
                Ok(&buf[start..start + len])
            }
        }
    }
}
