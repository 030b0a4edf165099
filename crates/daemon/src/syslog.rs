//! Installer logs: a small syslog receiver (RFC 3164 and RFC 5424 over
//! UDP) for what installers send with `inst.syslog=`. Each datagram is put
//! in the log of the host whose last known address sent it; datagrams from
//! addresses no host has are dropped (counted), so a LAN host cannot fill
//! the disk with logs for machines Kickstand does not know. Each host's log
//! is bounded: past [`MAX_LOG_BYTES`] it is rotated once (`.1`), so a host
//! keeps at most twice that.
//!
//! It runs on a thread of its own with plain blocking file writes: the
//! writes are small and many, and nothing here needs to be async.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;
use kickstand_profiles::text::escaped;
use kickstand_state::{EventKind, StateStore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A host's current log is rotated past this size.
pub(crate) const MAX_LOG_BYTES: u64 = 1 << 20;
/// Longest line kept; the rest of a datagram is cut.
const MAX_LINE: usize = 4096;

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

/// Receives until `shutdown`; blocking, on a thread of its own. The
/// address → host lookup is the store's, in memory.
pub(crate) fn receive(
    socket: UdpSocket,
    store: StateStore,
    logs: InstallerLogs,
    counters: Counters,
    shutdown: CancellationToken,
) {
    // Wakes up now and then to see whether the daemon is stopping.
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(500))) {
        warn!(error = %e, "syslog: cannot set a read timeout; the receiver stops at exit only");
    }
    let mut buf = vec![0u8; 65_536];
    while !shutdown.is_cancelled() {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                debug!(error = %e, "syslog: receive failed");
                continue;
            }
        };
        let ip = from.ip().to_canonical();
        let Some(mac) = store.host_by_ip(ip) else {
            counters.dropped.inc();
            continue;
        };
        match logs.append(mac, &line(&buf[..len])) {
            Ok(started) => {
                counters.lines.inc();
                if started {
                    info!(%mac, %ip, "installer log started");
                    let detail = serde_json::json!({
                        "path": logs.path(mac).display().to_string(),
                        "ip": ip.to_string(),
                    });
                    store
                        .record(mac, EventKind::InstallerLog, detail, SystemTime::now())
                        .value();
                }
            }
            Err(e) => warn!(%mac, error = %e, "syslog: cannot write the installer log"),
        }
    }
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
