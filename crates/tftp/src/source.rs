//! What the server serves: a root directory plus content the daemon
//! supplies by name (per-host boot scripts, files from its repo cache).

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::OpenError;

/// A boxed future, so [`Source`] stays usable as `dyn Source`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The files a server offers. The daemon implements it over its live
/// generation; [`DirSource`] serves a directory alone.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The content for `path`, which is already normalised (see
    /// [`crate::normalize`]: relative, `/`-separated, no leading `/`):
    /// something the source makes or holds, or [`Content::UnderRoot`], the
    /// file of that name in a directory. One call decides both, so an
    /// implementation over a snapshot that a reload swaps answers every
    /// request from one snapshot. `peer` is who asks. Async: what it serves
    /// may come from a download.
    fn open<'a>(
        &'a self,
        path: &'a str,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Content, OpenError>>;

    /// Whether the server answers at all now: an appliance standing by
    /// for its segment answers no request, and a transfer under way stops,
    /// silent, before its next block once this is false. Asked for every
    /// request and block: one atomic read.
    fn answering(&self) -> bool {
        true
    }

    /// Called once per request when it ends, however it ended: for the
    /// daemon's metrics and the host's timeline.
    fn transfer_ended(&self, peer: SocketAddr, report: &TransferReport) {
        let _ = (peer, report);
    }
}

/// What [`Source::open`] serves. Its size is known before the first block,
/// so `tsize` is always answered truthfully.
#[derive(Debug)]
pub enum Content {
    /// Made in memory: per-host boot scripts and configs.
    Bytes(Bytes),
    /// `size` bytes of a complete file from `offset` (a cache entry keeps
    /// its headers in front of the body). The open file is what is sent,
    /// so a file replaced by rename mid-transfer is still sent whole.
    File { file: File, offset: u64, size: u64 },
    /// A file still arriving, such as a download in progress.
    Growing(Box<dyn Growing>),
    /// The regular file of the requested name below this directory,
    /// read-only (no path out of it, symlinks included).
    UnderRoot(PathBuf),
}

/// A file whose final size is known while its bytes still arrive. The
/// server reads it on the transfer's own thread, so `read_exact_at` may
/// block until the bytes are there.
pub trait Growing: Send + std::fmt::Debug {
    /// The size it will have once complete.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`, waiting for the bytes to arrive. An error
    /// (the download failed or stalled) ends the transfer with an ERROR,
    /// so a client never takes a partial file for a whole one.
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
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
    /// The appliance stopped answering its segment (another took over).
    StoodDown,
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
            TransferOutcome::StoodDown => "stood-down",
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
    fn open<'a>(
        &'a self,
        _path: &'a str,
        _peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Content, OpenError>> {
        Box::pin(std::future::ready(Ok(Content::UnderRoot(
            self.root.clone(),
        ))))
    }
}
