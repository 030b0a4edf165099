//! Response bodies. A committed file is read by its body itself, one chunk
//! per frame as hyper asks for it ([`file`]): from the page cache on the
//! runtime when it is there (`preadv2` with `RWF_NOWAIT`), on the blocking
//! pool when the disk must be read, so a cold USB stick never stalls a
//! runtime worker. A small cached body is one frame from memory ([`full`]),
//! read whole beforehand (`fetch`) and often kept there. Everything
//! else (a download still arriving, a pass-through) is fed by a pump task
//! through a small channel: the channel bounds memory per client, and a pump
//! that stops without saying `End` surfaces as a body error, so a client
//! never sees a clean end of a truncated file.

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The body type of every response from [`crate::RepoProxy::handle`].
pub type Body = BoxBody<Bytes, io::Error>;

#[derive(Debug)]
pub(crate) enum Msg {
    Data(Bytes),
    End,
    Err(io::Error),
}

#[derive(Debug)]
struct ChannelBody {
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Msg::Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other("transfer aborted"))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A body and the sender its pump writes to.
pub(crate) fn channel() -> (mpsc::Sender<Msg>, Body) {
    let (tx, rx) = mpsc::channel(1);
    (tx, ChannelBody { rx, done: false }.boxed())
}

/// The body of a cache hit: `len` bytes at `at` in a committed file opened
/// for this response alone, read `chunk` bytes per frame when hyper asks
/// for the next one — from the page cache without leaving the runtime when
/// it holds them, else on the blocking pool. With no pump task and no
/// channel between the disk and the socket a slow client holds one chunk,
/// not a queue of them. With `check`, the bytes are hashed as they go and
/// the last frame is an error if they are not what was committed.
pub(crate) fn file(
    file: Arc<File>,
    at: u64,
    len: u64,
    chunk: u64,
    check: Option<Check>,
    served: Counter,
) -> Body {
    FileBody {
        file,
        at,
        left: len,
        chunk,
        read: None,
        check,
        served,
    }
    .boxed()
}

/// A whole body checked as it streams: the last frame is sent only if
/// everything hashes to `want`; otherwise the client sees the transfer
/// aborted. `verdict` hears the result once.
pub(crate) struct Check {
    hasher: Sha256,
    want: [u8; 32],
    verdict: Option<Box<dyn FnOnce(bool) + Send + Sync>>,
}

impl Check {
    pub(crate) fn new(want: [u8; 32], verdict: impl FnOnce(bool) + Send + Sync + 'static) -> Check {
        Check {
            hasher: Sha256::new(),
            want,
            verdict: Some(Box::new(verdict)),
        }
    }

    /// Takes the next bytes; at the last ones, whether all of them matched.
    fn update(&mut self, bytes: &[u8], last: bool) -> bool {
        self.hasher.update(bytes);
        if !last {
            return true;
        }
        let whole = <[u8; 32]>::from(std::mem::take(&mut self.hasher).finalize()) == self.want;
        if let Some(verdict) = self.verdict.take() {
            verdict(whole);
        }
        whole
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct FileBody {
    file: Arc<File>,
    /// Where the next chunk starts in the file.
    at: u64,
    /// Bytes still to send.
    left: u64,
    chunk: u64,
    read: Option<JoinHandle<io::Result<Bytes>>>,
    check: Option<Check>,
    served: Counter,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.read.is_none() && this.left == 0 {
            return Poll::Ready(None);
        }
        let (file, at, n) = (&this.file, this.at, this.left.min(this.chunk));
        let got = match this.read.as_mut() {
            Some(read) => {
                let got =
                    ready!(Pin::new(read).poll(cx)).unwrap_or_else(|e| Err(io::Error::other(e)));
                this.read = None;
                got
            }
            None => match read_cached(file, at, n) {
                // From the page cache, on the runtime: no blocking-pool trip.
                Some(b) => Ok(b),
                None => {
                    let file = file.clone();
                    this.read = Some(tokio::task::spawn_blocking(move || read_at(&file, at, n)));
                    return self.poll_frame(cx);
                }
            },
        };
        match got {
            Ok(b) => {
                let n = b.len() as u64;
                let last = n == self.left;
                if let Some(check) = self.check.as_mut()
                    && !check.update(&b, last)
                {
                    self.left = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "cached file failed its checksum; it is fetched again next time",
                    ))));
                }
                self.at += n;
                self.left -= n;
                self.served.inc_by(n);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Err(e) => {
                // Nothing more after an error: the client sees an abort.
                self.left = 0;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.read.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Up to `n` bytes at `at` if the page cache holds them, without waiting
/// for the disk (`preadv2` with `RWF_NOWAIT`): `None` when it would have to
/// (EAGAIN), when the kernel or filesystem cannot say (EOPNOTSUPP), or at
/// the end of the file — the blocking read then finds out which, and
/// reports a file cut short. The buffer is zeroed first, as safe code must
/// for `preadv2`; a small body pays that once, when it is read into memory
/// to stay there.
pub(crate) fn read_cached(file: &File, at: u64, n: u64) -> Option<Bytes> {
    let mut buf = vec![0u8; n as usize];
    let got = rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(&mut buf)],
        at,
        rustix::io::ReadWriteFlags::NOWAIT,
    )
    .ok()?;
    if got == 0 {
        return None;
    }
    buf.truncate(got);
    Some(Bytes::from(buf))
}

/// Reads exactly `n` bytes at `at`, blocking: positioned reads (no seek,
/// and a file shared by clones of one open object is fine) straight into
/// the buffer's spare capacity, which is not zeroed first (a zeroing pass
/// costs as much as the read).
pub(crate) fn read_at(file: &File, at: u64, n: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(n as usize);
    while (buf.len() as u64) < n {
        let from = at + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), from) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "cached file shorter than its length",
                ));
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The allocator may have given more room than asked, and the file may
    // go on past the span.
    buf.truncate(n as usize);
    Ok(Bytes::from(buf))
}

/// A body that is all in memory: one frame.
pub(crate) fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn text(s: String) -> Body {
    full(Bytes::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose pages are not in memory (dropped with `fadvise`, as
    /// after a reboot from a USB stick): the runtime read declines it, and
    /// the body still delivers every byte from the blocking pool.
    #[tokio::test]
    async fn a_cold_file_is_read_off_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cold");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = File::open(&path).expect("open");
        file.sync_all().expect("sync");
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        assert!(
            read_cached(&file, 0, data.len() as u64).is_none(),
            "RWF_NOWAIT read pages that were dropped"
        );
        let body = super::file(
            Arc::new(file),
            0,
            data.len() as u64,
            64 * 1024,
            None,
            Counter::default(),
        );
        let got = body.collect().await.expect("whole body").to_bytes();
        assert_eq!(&got[..], &data[..]);
    }
}
