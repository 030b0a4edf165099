//! Installer logs: a small syslog receiver (RFC 3164 and RFC 5424, over
//! UDP and over TCP one message per line, RFC 6587's non-transparent
//! framing) for what installers send with `inst.syslog=`: Anaconda's
//! rsyslog forwards over TCP (`*.* @@host:port`), other senders use UDP.
//! Each message is put in the log of the host whose last known address
//! sent it; messages from addresses no host has are dropped (counted) and
//! their TCP connections closed unread, so a LAN host cannot fill the disk
//! with logs for machines Kickstand does not know. Each host's log is
//! bounded: past [`MAX_LOG_BYTES`] it is rotated once (`.1`), so a host
//! keeps at most twice that.
//!
//! It runs on threads of its own with plain blocking file writes: the
//! writes are small and many, and nothing here needs to be async.

use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use kickstand_profiles::Mac;
use kickstand_profiles::text::escaped;
use kickstand_state::{EventKind, StateStore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A host's current log is rotated past this size.
pub(crate) const MAX_LOG_BYTES: u64 = 1 << 20;
/// Longest line kept; the rest of a datagram is cut.
const MAX_LINE: usize = 4096;
/// Open TCP connections at once: an installer keeps one for its whole
/// install, and only hosts' addresses get one.
const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP connection that sends nothing this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30 * 60);
/// How often a blocked receiver looks at the shutdown token.
const POLL: Duration = Duration::from_millis(500);

/// Where each host's installer log lives.
#[derive(Debug, Clone)]
pub(crate) struct InstallerLogs {
    dir: PathBuf,
}

impl InstallerLogs {
    pub(crate) fn new(state_dir: &Path) -> InstallerLogs {
        InstallerLogs {
            dir: state_dir.join("installer-logs"),
        }
    }

    pub(crate) fn path(&self, mac: Mac) -> PathBuf {
        self.dir
            .join(format!("{}.log", mac.to_string().replace(':', "-")))
    }

    /// Appends one line; says whether it started a new file.
    pub(crate) fn append(&self, mac: Mac, line: &str) -> std::io::Result<bool> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(mac);
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if len >= MAX_LOG_BYTES {
            std::fs::rename(&path, path.with_extension("log.1"))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(file, "{line}")?;
        Ok(len == 0)
    }

    /// The last `max` bytes of the host's current log.
    pub(crate) fn tail(&self, mac: Mac, max: u64) -> std::io::Result<String> {
        let mut file = std::fs::File::open(self.path(mac))?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One syslog datagram as a log line: the severity, then the message as
/// the sender wrote it (timestamp, host, tag), without the `<PRI>` and with
/// control and bidi characters [escaped](escaped).
pub(crate) fn line(datagram: &[u8]) -> String {
    let text = String::from_utf8_lossy(&datagram[..datagram.len().min(MAX_LINE)]);
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let (severity, rest) = match text.strip_prefix('<').and_then(|r| r.split_once('>')) {
        Some((pri, rest)) if pri.len() <= 3 && pri.bytes().all(|b| b.is_ascii_digit()) => {
            let pri: u16 = pri.parse().unwrap_or(13);
            (SEVERITIES[usize::from(pri % 8)], rest)
        }
        _ => ("notice", text),
    };
    // RFC 5424 starts with its version, `1 `.
    let rest = rest.strip_prefix("1 ").unwrap_or(rest);
    format!("{severity}: {}", escaped(rest))
}

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// What the receiver counts, for `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct Counters {
    pub(crate) lines: prometheus_client::metrics::counter::Counter,
    pub(crate) dropped: prometheus_client::metrics::counter::Counter,
}

/// The receiver's sockets: UDP and TCP on one port. With port 0 the
/// kernel picks UDP's and TCP takes the same one, tried a few times in
/// case another program holds it for TCP.
pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    use anyhow::Context as _;
    let tries = if addr.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(addr)
            .with_context(|| format!("binding the installer-log receiver on UDP {addr}"))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    let e = last.map_or_else(|| "no attempt".to_owned(), |e| e.to_string());
    anyhow::bail!("binding the installer-log receiver on TCP {addr}: {e}")
}

/// Where received messages go: the host's log, the counters, and the
/// event that a host's log has started.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    pub(crate) store: StateStore,
    pub(crate) logs: InstallerLogs,
    pub(crate) counters: Counters,
}

impl Sink {
    /// The host a message from `ip` (canonical: an IPv4 client of a
    /// dual-stack socket as IPv4) belongs to: the one whose last known
    /// address it is (the store's, in memory).
    fn host(&self, ip: IpAddr) -> Option<Mac> {
        self.store.host_by_ip(ip)
    }

    /// Puts one message from `ip` (canonical, as for [`Sink::host`]) in its
    /// host's log; a message from an address no host has is dropped.
    fn deliver(&self, ip: IpAddr, message: &[u8]) {
        let Some(mac) = self.host(ip) else {
            self.counters.dropped.inc();
            return;
        };
        match self.logs.append(mac, &line(message)) {
            Ok(started) => {
                self.counters.lines.inc();
                if started {
                    info!(%mac, %ip, "installer log started");
                    let detail = serde_json::json!({
                        "path": self.logs.path(mac).display().to_string(),
                        "ip": ip.to_string(),
                    });
                    self.store
                        .record(mac, EventKind::InstallerLog, detail, SystemTime::now())
                        .value();
                }
            }
            Err(e) => warn!(%mac, error = %e, "syslog: cannot write the installer log"),
        }
    }
}

/// Whether a blocking call only timed out (to look at the shutdown token).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Receives datagrams until `shutdown`; blocking, on a thread of its own.
pub(crate) fn receive(socket: UdpSocket, sink: Sink, shutdown: CancellationToken) {
    // Wakes up now and then to see whether the daemon is stopping.
    if let Err(e) = socket.set_read_timeout(Some(POLL)) {
        warn!(error = %e, "syslog: cannot set a read timeout; the receiver stops at exit only");
    }
    let mut buf = vec![0u8; 65_536];
    while !shutdown.is_cancelled() {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => sink.deliver(from.ip().to_canonical(), &buf[..len]),
            Err(e) if timed_out(&e) => {}
            Err(e) => debug!(error = %e, "syslog: receive failed"),
        }
    }
}

/// Accepts TCP connections until `shutdown`; blocking, on a thread of its
/// own, each host's connection on one more (at most
/// [`MAX_TCP_CONNECTIONS`]). A connection from an address no host has is
/// closed before a byte is read.
pub(crate) fn accept(listener: TcpListener, sink: Sink, shutdown: CancellationToken) {
    if let Err(e) = listener.set_nonblocking(true) {
        warn!(error = %e, "syslog: cannot poll the TCP listener; installer logs over TCP are off");
        return;
    }
    let open = Arc::new(AtomicUsize::new(0));
    while !shutdown.is_cancelled() {
        let (stream, from) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if timed_out(&e) => {
                std::thread::sleep(POLL / 5);
                continue;
            }
            Err(e) => {
                // Out of descriptors and the like: back off.
                debug!(error = %e, "syslog: accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let ip = from.ip().to_canonical();
        if sink.host(ip).is_none() || open.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
            sink.counters.dropped.inc();
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (sink, shutdown, open) = (sink.clone(), shutdown.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("syslog-tcp".into())
            .spawn(move || {
                if let Err(e) = read_lines(stream, ip, &sink, &shutdown) {
                    debug!(%ip, error = %e, "syslog: TCP connection ended");
                }
                open.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "syslog: cannot start a thread for a TCP connection");
        }
    }
}

/// One message per line until the sender closes, goes quiet for
/// [`TCP_IDLE`], or the daemon stops. A line longer than [`MAX_LINE`] is
/// cut there (its rest is a line of its own).
fn read_lines(
    stream: TcpStream,
    ip: IpAddr,
    sink: &Sink,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut reader = BufReader::new(stream);
    let mut message = Vec::with_capacity(256);
    let mut heard = Instant::now();
    while !shutdown.is_cancelled() && heard.elapsed() < TCP_IDLE {
        let room = (MAX_LINE - message.len()) as u64;
        match (&mut reader).take(room).read_until(b'\n', &mut message) {
            Ok(0) if message.is_empty() => return Ok(()),
            Ok(0) => {
                sink.deliver(ip, &message);
                return Ok(());
            }
            Ok(_) if message.ends_with(b"\n") || message.len() >= MAX_LINE => {
                sink.deliver(ip, &message);
                message.clear();
                heard = Instant::now();
            }
            // Part of a line, then the sender paused.
            Ok(_) => heard = Instant::now(),
            // What was read before the timeout is in `message` already.
            Err(e) if timed_out(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_both_formats() {
        assert_eq!(
            line(b"<30>Dec  2 01:02:03 node07 anaconda[1234]: Starting installation\n"),
            "info: Dec  2 01:02:03 node07 anaconda[1234]: Starting installation"
        );
        assert_eq!(
            line(b"<11>1 2026-12-02T01:02:03Z node07 anaconda 1234 - - disk sda not found"),
            "err: 2026-12-02T01:02:03Z node07 anaconda 1234 - - disk sda not found"
        );
        assert_eq!(line(b"no priority\x1b[31m"), "notice: no priority\\x1b[31m");
        assert_eq!(line(b"<999999>x"), "notice: <999999>x");
        assert_eq!(line(&[0xff, 0xfe, b'\n']), "notice: \u{fffd}\u{fffd}");
    }

    #[test]
    fn logs_rotate_and_stay_bounded() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let logs = InstallerLogs::new(dir.path());
        let mac = Mac([0x52, 0x54, 0, 0, 0, 7]);
        assert!(logs.append(mac, "first")?, "the first line starts the file");
        assert!(!logs.append(mac, "second")?);
        let long = "x".repeat(1000);
        for _ in 0..3000 {
            logs.append(mac, &long)?;
        }
        let current = std::fs::metadata(logs.path(mac))?.len();
        let rotated = std::fs::metadata(logs.path(mac).with_extension("log.1"))?.len();
        assert!(current <= MAX_LOG_BYTES + 1001, "{current}");
        assert!(rotated <= MAX_LOG_BYTES + 1001, "{rotated}");
        assert!(logs.tail(mac, 100)?.ends_with("x\n"));
        Ok(())
    }
}
