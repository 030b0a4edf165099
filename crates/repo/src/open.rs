//! Cached files for readers that are not HTTP clients: TFTP serves the
//! shim, GRUB, kernel and initrd of an OS tree through the same cache, so
//! the first machine of a rack pulls them through the office proxy and the
//! rest are hits. A miss starts (or joins) the one download exactly as the
//! HTTP route does; the reader then follows the bytes as they arrive.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::Upstream;
use crate::error::Error;
use crate::fetch::{self, Reader, Source};
use crate::inflight::{End, Progress, wait_past};
use crate::{RepoProxy, path};

/// A cached file opened for reading outside HTTP.
#[derive(Debug)]
pub enum Opened {
    /// Committed: `len` bytes of `file` from `offset` (the entry's headers
    /// come first). The open file is the version that was current; a
    /// respin renames a new one in and this reader keeps the old inode.
    Complete { file: File, offset: u64, len: u64 },
    /// Being downloaded now; see [`Arriving`].
    Arriving(Arriving),
}

/// A download in progress, followed by a reader on a thread of its own.
#[derive(Debug)]
pub struct Arriving {
    file: Arc<File>,
    offset: u64,
    len: u64,
    rx: watch::Receiver<Progress>,
    runtime: tokio::runtime::Handle,
    stall: Duration,
}

impl Arriving {
    /// The size the file will have: the mirror's Content-Length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from `at`, blocking until those bytes are on disk. The
    /// last byte is handed out only once the download is verified and
    /// committed, so a failure (truncation, a checksum mismatch) surfaces
    /// as an error before the reader can take the file for whole. Must not
    /// be called on a tokio worker thread.
    pub fn read_exact_at(&mut self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let end = at + buf.len() as u64;
        if end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        loop {
            let seen = match self.runtime.block_on(tokio::time::timeout(
                self.stall,
                wait_past(&mut self.rx, end.saturating_sub(1)),
            )) {
                Ok(seen) => seen,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the download stalled",
                    ));
                }
            };
            match seen.end {
                End::Aborted(e) => return Err(io::Error::other(e.to_string())),
                End::Complete if seen.written < end => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download ended short",
                    ));
                }
                End::Complete => break,
                End::Open if end < self.len && seen.written >= end => break,
                // The last byte waits for the commit; anything else for
                // more bytes.
                End::Open => {
                    let (stall, rx) = (self.stall, &mut self.rx);
                    let changed = self
                        .runtime
                        .block_on(async { tokio::time::timeout(stall, rx.changed()).await });
                    match changed {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(io::Error::other("the download vanished")),
                        Err(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the download stalled",
                            ));
                        }
                    }
                }
            }
        }
        self.file.read_exact_at(buf, self.offset + at)
    }
}

impl RepoProxy {
    /// Opens `path` of `mirror` from the cache, starting or joining its
    /// download on a miss, for a reader that needs the size before the
    /// first byte (TFTP's `tsize`): a miss answers once the mirror's headers
    /// are in, or — for a mirror that sends no Content-Length — once the
    /// whole file is. Call it on the runtime; [`Arriving`] is read off it.
    pub async fn open_file(&self, mirror: &str, path: &str) -> Result<Opened, Error> {
        self.open_file_with(&self.upstream(), mirror, path).await
    }

    /// [`RepoProxy::open_file`] with the mirrors of `upstream` (the
    /// generation the reader's request took).
    pub async fn open_file_with(
        &self,
        upstream: &Arc<Upstream>,
        mirror: &str,
        path: &str,
    ) -> Result<Opened, Error> {
        if !upstream.has_mirror(mirror) {
            return Err(Error::UnknownMirror(mirror.to_string()));
        }
        let path = path::normalize(path)?;
        let stall = upstream.timeouts.stall;
        let mut source = fetch::obtain(&self.inner, upstream, mirror, &path, Reader::File).await?;
        // A reader outside HTTP takes the file as it is, with no stream to
        // cut short: an object not yet checked in this process (after a
        // restart) is checked before it is handed out, and one that fails is
        // fetched again.
        if let Source::Cached(f, _) = &source
            && !f.checked
        {
            let (inner, f2) = (self.inner.clone(), f.clone());
            let whole = tokio::task::spawn_blocking(move || fetch::check_whole(&inner, &f2))
                .await
                .unwrap_or(false);
            if !whole {
                source = fetch::obtain(&self.inner, upstream, mirror, &path, Reader::File).await?;
            }
        }
        match source {
            Source::Cached(f, _) => Ok(Opened::Complete {
                file: Arc::try_unwrap(f.file).or_else(|shared| shared.try_clone())?,
                offset: f.offset,
                len: f.len,
            }),
            Source::Inflight(mut rx, _) => loop {
                let state = rx.borrow_and_update().clone();
                let Progress::Body(b) = state else {
                    return Err(Error::UpstreamBody("download vanished".into()));
                };
                let len = match (b.expected, &b.end) {
                    (_, End::Aborted(e)) => return Err(Error::Shared(e.clone())),
                    (Some(len), _) => Some(len),
                    (None, End::Complete) => Some(b.written),
                    (None, End::Open) => None,
                };
                if let Some(len) = len {
                    return Ok(Opened::Arriving(Arriving {
                        file: b.file,
                        offset: b.offset,
                        len,
                        rx,
                        runtime: tokio::runtime::Handle::current(),
                        stall,
                    }));
                }
                match tokio::time::timeout(stall, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Error::UpstreamBody("download vanished".into())),
                    Err(_) => return Err(Error::UpstreamBody("the download stalled".into())),
                }
            },
            // The disk is full: nothing can be followed from it.
            Source::Pass(_) => Err(Error::DiskFull),
            // `Reader::File` is never handed a copy in memory; were it, the
            // file is opened (and checked, being small) rather than the
            // reader failed.
            Source::InMemory(..) => match fetch::read_cached(&self.inner, mirror, &path).await {
                Some(f) => Ok(Opened::Complete {
                    file: Arc::try_unwrap(f.file).or_else(|shared| shared.try_clone())?,
                    offset: f.offset,
                    len: f.len,
                }),
                None => Err(Error::Io(io::Error::other("cache entry kept vanishing"))),
            },
        }
    }
}
