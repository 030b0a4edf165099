//! What the server serves: a root directory plus files the daemon
//! generates (per-host boot scripts) without touching the disk.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

/// A boxed future, so [`Source`] stays usable as `dyn Source`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The files a server offers. The daemon implements it over its live
/// generation; [`DirSource`] serves a directory alone.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Directory whose regular files are served, read-only. Asked once per
    /// request and returned owned, so an implementation over a snapshot
    /// that a reload swaps can hand out its current value.
    fn root(&self) -> PathBuf;

    /// A generated file for `path`, which is already normalised (see
    /// [`crate::normalize`]: relative, `/`-separated, no leading `/`). It
    /// shadows a file of the same name under [`Source::root`]. `peer` is
    /// who asks. Async: what it generates may depend on state kept in a
    /// database.
    fn generated<'a>(&'a self, path: &'a str, peer: SocketAddr) -> BoxFuture<'a, Option<Bytes>> {
        let _ = (path, peer);
        Box::pin(std::future::ready(None))
    }

    /// Called once per request when it ends, however it ended: for the
    /// daemon's metrics and the host's timeline.
    fn transfer_ended(&self, peer: SocketAddr, report: &TransferReport) {
        let _ = (peer, report);
    }
}

/// How one request ended, as [`Source::transfer_ended`] hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferReport {
    /// The requested name as sent (lossy UTF-8), or empty when the request
    /// did not parse.
    pub file: String,
    pub outcome: TransferOutcome,
    /// Bytes of the file sent and acknowledged (the whole file when complete).
    pub bytes: u64,
    pub duration: Duration,
}

/// The end of a request, named.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferOutcome {
    Complete,
    /// The client sent an ERROR (PXE firmware that only wanted `tsize`
    /// sends code 8).
    ClientAborted {
        code: u16,
        message: String,
    },
    /// No ACK after every retransmission.
    TimedOut,
    /// Refused: not found, illegal name, write request, malformed.
    Refused {
        reason: String,
    },
    /// The client's port went away (ICMP port unreachable).
    ClientGone,
    /// The server is shutting down.
    ShutDown,
    Failed {
        reason: String,
    },
}

impl TransferOutcome {
    /// The name metrics and events use.
    pub fn name(&self) -> &'static str {
        match self {
            TransferOutcome::Complete => "complete",
            TransferOutcome::ClientAborted { .. } => "aborted",
            TransferOutcome::TimedOut => "timed-out",
            TransferOutcome::Refused { .. } => "refused",
            TransferOutcome::ClientGone => "client-gone",
            TransferOutcome::ShutDown => "shut-down",
            TransferOutcome::Failed { .. } => "error",
        }
    }
}

/// A [`Source`] that serves one directory and generates nothing.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl Source for DirSource {
    fn root(&self) -> PathBuf {
        self.root.clone()
    }
}
