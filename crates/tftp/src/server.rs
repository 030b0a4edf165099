//! The tokio driver: owns the sockets, reads files, and carries out what
//! [`crate::protocol::Transfer`] decides. No protocol decisions live here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::packet::{self, Direction, ErrorCode, Mode, Packet, Request};
use crate::path::{self, PathError, normalize};
use crate::protocol::{Action, Event, Limits, Transfer, negotiate};
use crate::source::{Source, TransferOutcome, TransferReport};

/// Server settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub limits: Limits,
    /// Transfers running at once; requests beyond it are dropped (the
    /// client retries) so a flood of requests cannot exhaust ports or
    /// memory.
    pub max_transfers: usize,
    /// How long [`serve`] waits for transfers to send their farewell ERROR
    /// after shutdown before it returns anyway.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_transfers: 512,
            shutdown_grace: Duration::from_secs(2),
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
    socket: UdpSocket,
    source: Arc<dyn Source>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with(socket, source, Config::default(), shutdown).await
}

/// Serves read requests arriving on `socket` until `shutdown` is cancelled.
///
/// Each request gets its own task and its own ephemeral-port socket
/// (RFC 1350 transfer IDs), so a client that aborts and asks again from the
/// same port simply starts a second, independent transfer. Returns once the
/// transfers have stopped or [`Config::shutdown_grace`] has passed.
pub async fn serve_with(
    socket: UdpSocket,
    source: Arc<dyn Source>,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let local_ip = socket.local_addr()?.ip();
    let tracker = TaskTracker::new();
    // Requests are small, but a full datagram buffer keeps an oversized one
    // from being silently truncated into something that parses.
    let mut buf = vec![0u8; 65_536];
    let result = loop {
        let (len, peer) = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            received = socket.recv_from(&mut buf) => match received {
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
        if tracker.len() >= config.max_transfers {
            warn!(%peer, running = tracker.len(), "too many transfers; request dropped");
            continue;
        }
        let file = request
            .as_ref()
            .map(|r| String::from_utf8_lossy(&r.filename).into_owned());
        let span = info_span!("tftp", %peer, file = file.as_deref().unwrap_or_default());
        let task = handle_request(
            local_ip,
            peer,
            request,
            source.clone(),
            config.limits.clone(),
            // A child per transfer: polling a token shared by every transfer
            // would contend on one lock per packet.
            shutdown.child_token(),
        );
        tracker.spawn(task.instrument(span));
    };
    tracker.close();
    if timeout_at(Instant::now() + config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(left = tracker.len(), "transfers still running at shutdown");
    }
    result
}

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
}

impl Outcome {
    /// What the source hears of it.
    fn report(&self, file: String, elapsed: Duration) -> TransferReport {
        let (outcome, bytes) = match self {
            Outcome::Sent { bytes, .. } => (TransferOutcome::Complete, *bytes),
            Outcome::Malformed(e) => (
                TransferOutcome::Refused {
                    reason: e.to_string(),
                },
                0,
            ),
            Outcome::WriteRefused => (
                TransferOutcome::Refused {
                    reason: "write request".into(),
                },
                0,
            ),
            Outcome::Refused(e) => (
                TransferOutcome::Refused {
                    reason: e.to_string(),
                },
                0,
            ),
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
        };
        TransferReport {
            file,
            outcome,
            bytes,
            duration: elapsed,
        }
    }
}

async fn handle_request(
    local_ip: IpAddr,
    peer: SocketAddr,
    request: Result<Request, packet::ParseError>,
    source: Arc<dyn Source>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let file = request
        .as_ref()
        .map(|r| String::from_utf8_lossy(&r.filename).into_owned())
        .unwrap_or_default();
    let socket = match bind_transfer_socket(local_ip, peer).await {
        Ok(socket) => socket,
        Err(e) => return warn!(error = %e, "cannot open a transfer socket"),
    };
    let outcome = match request {
        Ok(request) => transfer(&socket, peer, request, &*source, &limits, &shutdown).await,
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
            source.transfer_ended(peer, &report);
            return warn!(error = %e, "transfer failed");
        }
        Ok(outcome) => outcome,
    };
    source.transfer_ended(peer, &outcome.report(file, started.elapsed()));
    let reply = match &outcome {
        Outcome::Malformed(_) => Some((ErrorCode::IllegalOperation, "malformed request")),
        Outcome::WriteRefused => Some((ErrorCode::AccessViolation, "read-only server")),
        Outcome::Refused(e) => Some(e.to_wire()),
        Outcome::GaveUp { .. } => Some((ErrorCode::NotDefined, "timed out")),
        Outcome::ShutDown => Some((ErrorCode::NotDefined, "server shutting down")),
        Outcome::Sent { .. } | Outcome::ClientAborted { .. } | Outcome::ClientGone => None,
    };
    if let Some((code, message)) = reply
        && let Err(e) = socket.send(&packet::encode_error(code, message)).await
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

async fn bind_transfer_socket(local_ip: IpAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    // Connected: the kernel drops datagrams from other transfer IDs, and a
    // closed client port surfaces as ECONNREFUSED instead of retries.
    socket.connect(peer).await?;
    Ok(socket)
}

async fn transfer(
    socket: &UdpSocket,
    peer: SocketAddr,
    request: Request,
    source: &dyn Source,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> io::Result<Outcome> {
    if request.direction == Direction::Write {
        return Ok(Outcome::WriteRefused);
    }
    let mut body = match Body::open(source, &request.filename, peer).await {
        Ok(body) => body,
        Err(e) => return Ok(Outcome::Refused(e)),
    };
    if request.mode == Mode::NetAscii {
        body = match body.into_netascii().await {
            Ok(body) => body,
            Err(e) => return Ok(Outcome::Refused(e)),
        };
    }
    let negotiated = negotiate(&request.options, body.size(), limits);
    let (mut transfer, mut action) = Transfer::start(negotiated, body.size(), limits);
    let params = transfer.params().clone();
    debug!(blksize = params.blksize, windowsize = params.windowsize, mode = ?request.mode, "transfer starts");
    let started = Instant::now();
    let mut out = Vec::with_capacity(usize::from(params.blksize) + 4);
    let mut inbox = [0u8; 2048];
    let mut client_error = None;
    // Built once: a fresh timer and shutdown waiter per packet cost more
    // than a lockstep round trip. The timer is re-armed lazily, only when it
    // fires before the latest deadline.
    let mut deadline = started + params.timeout;
    let timer = tokio::time::sleep_until(deadline);
    let cancelled = shutdown.cancelled();
    tokio::pin!(timer, cancelled);
    loop {
        match action {
            Action::SendOack => {
                let oack = params.oack.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                socket.send(&packet::encode_oack(oack)).await?;
                deadline = Instant::now() + params.timeout;
            }
            Action::SendBlocks { first, last } => {
                for n in first..=last {
                    let block = transfer.block(n);
                    out.clear();
                    packet::encode_data_header(&mut out, block.wire);
                    out.extend_from_slice(&body.read(block.offset, block.len).await?);
                    socket.send(&out).await?;
                }
                deadline = Instant::now() + params.timeout;
            }
            Action::Ignore => {}
            Action::Complete => {
                let (bytes, elapsed) = (body.size(), started.elapsed());
                return Ok(Outcome::Sent { bytes, elapsed });
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
        let event = tokio::select! {
            biased;
            received = socket.recv(&mut inbox) => match Packet::parse(&inbox[..received?]) {
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
            () = &mut timer => {
                if Instant::now() < deadline {
                    timer.as_mut().reset(deadline);
                    action = Action::Ignore;
                    continue;
                }
                // Every action after a timeout moves the deadline on, so
                // the fired timer is re-armed on its next poll.
                Event::Timeout
            }
            () = &mut cancelled => return Ok(Outcome::ShutDown),
        };
        action = transfer.handle(event);
    }
}

/// Largest file served in netascii mode; larger ones are binaries that
/// want `octet` anyway.
const NETASCII_MAX: u64 = 16 * 1024 * 1024;

/// Bytes read from disk per blocking read: large enough that a lockstep
/// transfer at blksize 512 costs one thread hop per 512 blocks.
const READ_AHEAD: usize = 256 * 1024;

/// The content of one transfer.
#[derive(Debug)]
enum Body {
    Generated(Bytes),
    File {
        file: Arc<std::fs::File>,
        size: u64,
        cache: Bytes,
        cache_at: u64,
    },
}

impl Body {
    async fn open(source: &dyn Source, raw: &[u8], peer: SocketAddr) -> Result<Self, OpenError> {
        let path = normalize(raw)?;
        if let Some(bytes) = source.generated(&path, peer).await {
            return Ok(Self::Generated(bytes));
        }
        let root = source.root();
        tokio::task::spawn_blocking(move || {
            let (file, size) = path::open_file(&root, &path)?;
            Ok(Self::File {
                file: Arc::new(file),
                size,
                cache: Bytes::new(),
                cache_at: 0,
            })
        })
        .await
        .map_err(|e| OpenError::Io(io::Error::other(e)))?
    }

    /// Netascii is converted in memory: it is meant for small text files
    /// (tftp-hpa's client asks for it unless told `-m octet`), and the
    /// converted size must be known up front for `tsize`.
    async fn into_netascii(self) -> Result<Self, OpenError> {
        let raw = match self {
            Self::Generated(bytes) => bytes,
            Self::File { file, size, .. } => {
                if size > NETASCII_MAX {
                    return Err(OpenError::TooLargeForNetascii);
                }
                tokio::task::spawn_blocking(move || {
                    use std::io::Read;
                    let mut buf = Vec::new();
                    (&*file).read_to_end(&mut buf)?;
                    io::Result::Ok(Bytes::from(buf))
                })
                .await
                .map_err(|e| OpenError::Io(io::Error::other(e)))??
            }
        };
        Ok(Self::Generated(packet::to_netascii(&raw).into()))
    }

    fn size(&self) -> u64 {
        match self {
            Self::Generated(bytes) => bytes.len() as u64,
            Self::File { size, .. } => *size,
        }
    }

    /// `offset + len` never exceeds [`Body::size`]: blocks come from it.
    async fn read(&mut self, offset: u64, len: usize) -> io::Result<Bytes> {
        match self {
            Self::Generated(bytes) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                Ok(bytes.slice(start..start + len))
            }
            Self::File {
                file,
                size,
                cache,
                cache_at,
            } => {
                let end = offset + len as u64;
                if offset < *cache_at || end > *cache_at + cache.len() as u64 {
                    let want = usize::try_from(*size - offset)
                        .unwrap_or(usize::MAX)
                        .min(READ_AHEAD.max(len));
                    let file = file.clone();
                    // A file that shrinks under a transfer fails the read
                    // (UnexpectedEof) rather than ending the transfer early.
                    *cache = tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut buf = vec![0; want];
                        file.read_exact_at(&mut buf, offset)?;
                        io::Result::Ok(Bytes::from(buf))
                    })
                    .await
                    .map_err(io::Error::other)??;
                    *cache_at = offset;
                }
                let start = (offset - *cache_at) as usize;
                Ok(cache.slice(start..start + len))
            }
        }
    }
}
