//! Coalesced downloads. The first client to miss a file starts one fetch
//! task; it writes the body to a temp file and publishes how many bytes are
//! on disk through a `watch` channel. Every client (the first included)
//! reads the temp file up to the published length, so all of them stream as
//! the bytes arrive. The task commits by rename only after a complete,
//! verified body, and outlives the clients so an abandoned download still
//! fills the cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::body::{self, Body, Msg};
use crate::inflight::{BodyState, End, Permit, Progress, Seen, wait_past};
use crate::path::{CachePolicy, RepoPath, policy};
use crate::serve::{Span, Want, not_modified, span};
use crate::store::{self, CachedFile, Meta, Presence, is_disk_full};
use crate::upstream::{Fetched, Upstream, Validators};
use crate::{CacheStatus, Error, Inner};

/// Bytes read from disk per body frame; with the channel depth this bounds
/// memory per client.
const CHUNK: u64 = 512 * 1024;

enum Decision {
    Hit,
    Pass,
    Join(watch::Receiver<Progress>, CacheStatus),
}

/// Where a response's bytes come from.
#[derive(Debug)]
pub(crate) enum Source {
    Cached(CachedFile, CacheStatus),
    Inflight(watch::Receiver<Progress>, CacheStatus),
    Pass(Response<Incoming>),
}

fn key_of(mirror: &str, path: &RepoPath) -> String {
    format!("{mirror}/{path}")
}

async fn open_entry(inner: &Arc<Inner>, hash: &str) -> Option<CachedFile> {
    let inner2 = inner.clone();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || inner2.store.open_entry(&hash))
        .await
        .ok()
        .flatten()
}

/// Finds the bytes for `mirror/path`: a committed file, a download in
/// progress (joined or started), or — with the disk full — the mirror itself.
pub(crate) async fn obtain(
    inner: &Arc<Inner>,
    up: &Arc<Upstream>,
    mirror: &str,
    path: &RepoPath,
) -> Result<Source, Error> {
    let key = key_of(mirror, path);
    let hash = store::hash_key(&key);
    let max_age = match policy(path) {
        CachePolicy::Immutable => None,
        _ => Some(up.revalidate_after),
    };
    let c = &inner.counters;
    // A file evicted or replaced between the index check and the open is
    // simply looked up again; three rounds are plenty.
    for _ in 0..3 {
        let claimed = inner.inflight.claim(&hash, |slot| {
            match inner.store.presence(&hash, max_age) {
                Presence::Fresh => Decision::Hit,
                Presence::Missing if inner.store.disk_full() => Decision::Pass,
                presence @ (Presence::Missing | Presence::Stale) => {
                    let (permit, rx) = slot.lead();
                    let job = Job {
                        inner: inner.clone(),
                        up: up.clone(),
                        mirror: mirror.to_string(),
                        path: path.clone(),
                        key: key.clone(),
                        hash: hash.clone(),
                        revalidate: presence == Presence::Stale,
                        permit,
                    };
                    // On the daemon's tracker: shutdown waits for it.
                    inner.tasks.spawn(job.run());
                    Decision::Join(rx, CacheStatus::Miss)
                }
            }
        });
        let decision = match claimed {
            Ok(rx) => Decision::Join(rx, CacheStatus::Coalesced),
            Err(decision) => decision,
        };
        let (mut rx, status) = match decision {
            Decision::Hit => match open_entry(inner, &hash).await {
                Some(f) => {
                    c.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Source::Cached(f, CacheStatus::Hit));
                }
                None => continue,
            },
            Decision::Pass => return pass_through(inner, up, mirror, path).await,
            Decision::Join(rx, status) => (rx, status),
        };
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                Progress::Connecting => {
                    if rx.changed().await.is_err() && matches!(*rx.borrow(), Progress::Connecting) {
                        return Err(Error::UpstreamBody("download task ended".into()));
                    }
                }
                Progress::NotModified => match open_entry(inner, &hash).await {
                    Some(f) => return Ok(Source::Cached(f, CacheStatus::Revalidated)),
                    None => break,
                },
                Progress::Body(_) => {
                    let counter = if status == CacheStatus::Coalesced {
                        &c.coalesced
                    } else {
                        &c.misses
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return Ok(Source::Inflight(rx, status));
                }
                Progress::Failed(e) => {
                    if matches!(*e, Error::DiskFull) {
                        return pass_through(inner, up, mirror, path).await;
                    }
                    // A mirror that is down must not break installs from a
                    // cache that still holds the previous copy.
                    let gone = matches!(&*e, Error::UpstreamStatus { status, .. } if status.is_client_error());
                    if !gone
                        && inner.store.presence(&hash, None) != Presence::Missing
                        && let Some(f) = open_entry(inner, &hash).await
                    {
                        tracing::warn!(key, error = %e, "revalidation failed, serving stale copy");
                        return Ok(Source::Cached(f, CacheStatus::Stale));
                    }
                    return Err(Error::Shared(e));
                }
            }
        }
    }
    Err(Error::Io(io::Error::other("cache entry kept vanishing")))
}

async fn pass_through(
    inner: &Arc<Inner>,
    up: &Arc<Upstream>,
    mirror: &str,
    path: &RepoPath,
) -> Result<Source, Error> {
    inner.counters.passthrough.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .upstream_fetches
        .fetch_add(1, Ordering::Relaxed);
    match up.fetch(mirror, path, &Validators::default()).await? {
        Fetched::Full { response, .. } => Ok(Source::Pass(response)),
        Fetched::NotModified => Err(Error::UpstreamBody("unexpected 304".into())),
    }
}

/// One download: upstream → temp file → commit.
struct Job {
    inner: Arc<Inner>,
    up: Arc<Upstream>,
    mirror: String,
    path: RepoPath,
    key: String,
    hash: String,
    revalidate: bool,
    /// Held for the whole download; whatever ends it, its `Drop` clears
    /// the in-flight entry.
    permit: Permit,
}

impl Job {
    async fn run(self) {
        let result = self.download().await;
        let (inner, permit) = (self.inner, self.permit);
        match result {
            Ok(Done::NotModified) => {
                inner.counters.revalidated.fetch_add(1, Ordering::Relaxed);
                permit.finish(|p| *p = Progress::NotModified);
            }
            Ok(Done::Complete) => permit.finish(|p| {
                if let Progress::Body(b) = p {
                    b.end = End::Complete;
                }
            }),
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "download failed");
                inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                let e = Arc::new(e);
                permit.finish(|p| match p {
                    Progress::Body(b) => b.end = End::Aborted(e),
                    other => *other = Progress::Failed(e),
                });
            }
        }
    }

    async fn download(&self) -> Result<Done, Error> {
        #[cfg(test)]
        tests::maybe_panic(&self.key);
        let inner = &self.inner;
        let cond = if self.revalidate {
            open_entry(inner, &self.hash)
                .await
                .map(|f| Validators {
                    etag: f.meta.etag,
                    last_modified: f.meta.last_modified,
                })
                .unwrap_or_default()
        } else {
            Validators::default()
        };
        inner
            .counters
            .upstream_fetches
            .fetch_add(1, Ordering::Relaxed);
        let (url, response) = match self.up.fetch(&self.mirror, &self.path, &cond).await? {
            Fetched::NotModified => {
                inner.store.mark_validated(&self.hash);
                return Ok(Done::NotModified);
            }
            Fetched::Full { url, response } => (url, response),
        };
        let headers = response.headers();
        let expected = content_length(headers);
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let meta = Meta {
            key: self.key.clone(),
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        };
        let head = meta.encode();
        let offset = head.len() as u64;
        let store_inner = inner.clone();
        let tmp = blocking(move || {
            let tmp = store_inner.store.new_temp()?;
            tmp.as_file().write_all_at(&head, 0)?;
            Ok(tmp)
        })
        .await
        .map_err(|e| disk_error(inner, e))?;
        let file = Arc::new(tmp.as_file().try_clone().map_err(Error::Io)?);
        self.permit.send_replace(Progress::Body(BodyState {
            file: file.clone(),
            offset,
            meta: Arc::new(meta),
            expected,
            written: 0,
            end: End::Open,
        }));

        let want_sha = inner
            .known_sha
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.hash)
            .copied();
        let mut hasher = want_sha.map(|_| Sha256::new());
        let mut body = response.into_body();
        let mut written = 0u64;
        loop {
            let frame = match tokio::time::timeout(self.up.timeouts.stall, body.frame()).await {
                Err(_) => return Err(Error::Timeout("mid-transfer (stalled)")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(Error::UpstreamBody(format!("{url}: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if expected.is_some_and(|n| written + data.len() as u64 > n) {
                return Err(Error::UpstreamBody(format!(
                    "{url}: more bytes than Content-Length"
                )));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&data);
            }
            let at = offset + written;
            let len = data.len() as u64;
            let write = |data: Bytes| {
                let f = file.clone();
                blocking(move || f.write_all_at(&data, at))
            };
            if let Err(e) = write(data.clone()).await {
                // If our own cache filled the disk, older files make way for
                // this one — but only when that can make the whole file fit.
                let need = expected.map_or(len, |n| n - written);
                if !(is_disk_full(&e) && inner.store.evict_for(need)) {
                    return Err(disk_error(inner, e));
                }
                write(data).await.map_err(|e| disk_error(inner, e))?;
            }
            written += len;
            inner
                .counters
                .upstream_bytes
                .fetch_add(len, Ordering::Relaxed);
            self.permit.send_modify(|p| {
                if let Progress::Body(b) = p {
                    b.written = written;
                }
            });
        }
        if let Some(n) = expected
            && n != written
        {
            return Err(Error::Incomplete {
                expected: n,
                got: written,
            });
        }
        if let (Some(want), Some(h)) = (want_sha, hasher)
            && h.finalize().as_slice() != want
        {
            return Err(Error::Checksum(self.key.clone()));
        }
        if !inner.store.fits(offset + written) || inner.store.disk_full() {
            // Clients still get the whole file from the open temp file.
            tracing::info!(key = %self.key, bytes = written, "not caching (too large or disk full)");
            return Ok(Done::Complete);
        }
        let store_inner = inner.clone();
        let hash = self.hash.clone();
        if let Err(e) = blocking(move || store_inner.store.commit(tmp, &hash)).await {
            if is_disk_full(&e) {
                inner.store.set_disk_full();
            }
            tracing::warn!(key = %self.key, error = %e, "commit failed; served without caching");
        }
        Ok(Done::Complete)
    }
}

#[derive(Debug)]
enum Done {
    NotModified,
    Complete,
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

fn disk_error(inner: &Inner, e: io::Error) -> Error {
    if is_disk_full(&e) {
        inner.store.set_disk_full();
        Error::DiskFull
    } else {
        Error::Io(e)
    }
}

/// Builds the response for a source and starts the pump that feeds its body.
pub(crate) async fn respond(
    inner: &Arc<Inner>,
    source: Source,
    req: &HeaderMap,
    want: Want,
    stall: Duration,
) -> Result<Response<Body>, Error> {
    match source {
        Source::Cached(f, status) => {
            let m = &f.meta;
            if not_modified(req, m.etag.as_deref(), m.last_modified.as_deref()) {
                let (resp, _) = head(m, None, Span::Whole, status);
                return resp
                    .status(StatusCode::NOT_MODIFIED)
                    .body(body::empty())
                    .map_err(|e| Error::Io(io::Error::other(e)));
            }
            let sp = span(req, f.len, m.etag.as_deref(), m.last_modified.as_deref());
            let (resp, range) = head(m, Some(f.len), sp, status);
            Ok(finish(resp, range, want, |tx, start, end| {
                tokio::spawn(pump(f.file, f.offset, start, end, Watch::Done(f.len), tx));
            }))
        }
        Source::Inflight(mut rx, status) => {
            let Progress::Body(b) = rx.borrow_and_update().clone() else {
                return Err(Error::UpstreamBody("download vanished".into()));
            };
            let sp = match b.expected {
                Some(len) => span(
                    req,
                    len,
                    b.meta.etag.as_deref(),
                    b.meta.last_modified.as_deref(),
                ),
                None => Span::Whole,
            };
            let (resp, range) = head(&b.meta, b.expected, sp, status);
            Ok(finish(resp, range, want, |tx, start, end| {
                tokio::spawn(pump(b.file, b.offset, start, end, Watch::Live(rx), tx));
            }))
        }
        Source::Pass(upstream) => {
            let (parts, incoming) = upstream.into_parts();
            let mut resp = Response::builder().status(StatusCode::OK);
            for name in [
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::ETAG,
                header::LAST_MODIFIED,
            ] {
                if let Some(v) = parts.headers.get(&name) {
                    resp = resp.header(name, v.clone());
                }
            }
            resp = resp.header("x-kickstand-cache", CacheStatus::Pass.as_str());
            if want == Want::HeadersOnly {
                return resp
                    .body(body::empty())
                    .map_err(|e| Error::Io(io::Error::other(e)));
            }
            let (tx, b) = body::channel();
            let inner = inner.clone();
            tokio::spawn(async move {
                let mut incoming = incoming;
                loop {
                    let msg = match tokio::time::timeout(stall, incoming.frame()).await {
                        Err(_) => {
                            Msg::Err(io::Error::new(io::ErrorKind::TimedOut, "upstream stalled"))
                        }
                        Ok(None) => Msg::End,
                        Ok(Some(Err(e))) => Msg::Err(io::Error::other(e)),
                        Ok(Some(Ok(f))) => match f.into_data() {
                            Ok(d) => {
                                inner
                                    .counters
                                    .upstream_bytes
                                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                                Msg::Data(d)
                            }
                            Err(_) => continue,
                        },
                    };
                    let last = !matches!(msg, Msg::Data(_));
                    if tx.send(msg).await.is_err() || last {
                        return;
                    }
                }
            });
            resp.body(b).map_err(|e| Error::Io(io::Error::other(e)))
        }
    }
}

/// Status line and headers for a file of `len` bytes (unknown while a
/// chunked download runs) and the byte range to send.
fn head(
    meta: &Meta,
    len: Option<u64>,
    sp: Span,
    status: CacheStatus,
) -> (http::response::Builder, Option<(u64, Option<u64>)>) {
    let mut r = Response::builder()
        .header(
            header::CONTENT_TYPE,
            meta.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        )
        .header("x-kickstand-cache", status.as_str());
    for (name, v) in [
        (header::ETAG, &meta.etag),
        (header::LAST_MODIFIED, &meta.last_modified),
    ] {
        if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            r = r.header(name, v);
        }
    }
    let Some(len) = len else {
        return (r.status(StatusCode::OK), Some((0, None)));
    };
    r = r.header(header::ACCEPT_RANGES, "bytes");
    match sp {
        Span::Whole => (
            r.status(StatusCode::OK).header(header::CONTENT_LENGTH, len),
            Some((0, Some(len))),
        ),
        Span::Part { start, end } => (
            r.status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, end - start + 1)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
            Some((start, Some(end + 1))),
        ),
        Span::Unsatisfiable => (
            r.status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_LENGTH, 0)
                .header(header::CONTENT_RANGE, format!("bytes */{len}")),
            None,
        ),
    }
}

fn finish(
    resp: http::response::Builder,
    range: Option<(u64, Option<u64>)>,
    want: Want,
    start_pump: impl FnOnce(mpsc::Sender<Msg>, u64, Option<u64>),
) -> Response<Body> {
    let body = match (range, want) {
        (Some((start, end)), Want::Body) => {
            let (tx, b) = body::channel();
            start_pump(tx, start, end);
            b
        }
        _ => body::empty(),
    };
    resp.body(body)
        .unwrap_or_else(|e| crate::error_response(&Error::Io(io::Error::other(e))))
}

/// What a pump knows about how much of the file exists.
enum Watch {
    Done(u64),
    Live(watch::Receiver<Progress>),
}

/// Copies `[start, end)` of the body (at `offset` in `file`) into the
/// client's channel, waiting for a live download to publish more.
async fn pump(
    file: Arc<File>,
    offset: u64,
    start: u64,
    end: Option<u64>,
    mut src: Watch,
    tx: mpsc::Sender<Msg>,
) {
    let mut pos = start;
    // Wait until the download has more than this many bytes (or ended).
    let mut need = pos;
    loop {
        let (seen, live) = match &mut src {
            Watch::Done(len) => (
                Seen {
                    written: *len,
                    end: End::Complete,
                },
                false,
            ),
            Watch::Live(rx) => (wait_past(rx, need).await, true),
        };
        let complete = matches!(seen.end, End::Complete);
        let mut limit = end.map_or(seen.written, |e| e.min(seen.written));
        // With Content-Length framing a client that has every byte sees a
        // clean end whatever happens next, so the last byte waits until the
        // fetch has verified and committed the file: a late failure
        // (checksum, trailing garbage) still reaches the client as an abort.
        if let Some(e) = end
            && live
            && !complete
        {
            limit = limit.min(e.saturating_sub(1));
        }
        if pos < limit {
            let n = (limit - pos).min(CHUNK) as usize;
            let f = file.clone();
            let at = offset + pos;
            let read = blocking(move || {
                let mut buf = vec![0u8; n];
                f.read_exact_at(&mut buf, at)?;
                Ok(Bytes::from(buf))
            })
            .await;
            let msg = match read {
                Ok(b) => Msg::Data(b),
                Err(e) => {
                    let _ = tx.send(Msg::Err(e)).await;
                    return;
                }
            };
            if tx.send(msg).await.is_err() {
                return; // client went away
            }
            pos += n as u64;
            need = pos;
            continue;
        }
        match seen.end {
            End::Complete => {
                let _ = tx.send(Msg::End).await;
                return;
            }
            End::Aborted(e) => {
                let _ = tx.send(Msg::Err(io::Error::other(e.to_string()))).await;
                return;
            }
            // Everything on disk is sent (or held back): wait for more.
            End::Open => need = seen.written,
        }
    }
}

/// Makes sure `mirror/path` is in the cache (for `warm`), waiting for the
/// download to finish. Returns whether it was already there.
pub(crate) async fn ensure(
    inner: &Arc<Inner>,
    up: &Arc<Upstream>,
    mirror: &str,
    path: &RepoPath,
) -> Result<Ensured, Error> {
    match obtain(inner, up, mirror, path).await? {
        Source::Cached(..) => Ok(Ensured::Present),
        Source::Pass(_) => Err(Error::DiskFull),
        Source::Inflight(mut rx, _) => {
            let mut need = 0;
            loop {
                let seen = wait_past(&mut rx, need).await;
                match seen.end {
                    End::Complete => return Ok(Ensured::Fetched(seen.written)),
                    End::Aborted(e) => return Err(Error::Shared(e)),
                    End::Open => need = seen.written,
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ensured {
    Present,
    Fetched(u64),
}

/// Reads a committed file whole (small repodata files only).
pub(crate) async fn read_cached(
    inner: &Arc<Inner>,
    mirror: &str,
    path: &RepoPath,
) -> Option<CachedFile> {
    open_entry(inner, &store::hash_key(&key_of(mirror, path))).await
}

pub(crate) fn object_hash(mirror: &str, path: &RepoPath) -> String {
    store::hash_key(&key_of(mirror, path))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{RepoConfig, RepoProxy};

    static ARMED: AtomicBool = AtomicBool::new(false);

    /// The test hook of [`super::Job::download`]: panics once, on purpose,
    /// for a file named `panic-on-purpose` while armed.
    pub(crate) fn maybe_panic(key: &str) {
        if key.ends_with("panic-on-purpose") && ARMED.swap(false, Ordering::SeqCst) {
            panic!("a download task panics on purpose");
        }
    }

    /// A mirror that answers every request with the same small file.
    async fn mirror() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_download_that_panics_does_not_break_the_file_for_the_next_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = mirror().await;
        let mut cfg = RepoConfig::new(dir.path().join("cache"), 1 << 20);
        cfg.mirrors.insert(
            "m".into(),
            vec![format!("http://{addr}/").parse().expect("mirror url")],
        );
        let upstream = std::sync::Arc::new(crate::Upstream::new(&cfg).expect("upstream"));
        let rp =
            RepoProxy::open(&cfg, upstream, tokio_util::task::TaskTracker::new()).expect("open");
        let get = || {
            http::Request::get("/repo/m/panic-on-purpose")
                .body(())
                .expect("request")
        };
        ARMED.store(true, Ordering::SeqCst);
        let first = rp.handle("m", "panic-on-purpose", get()).await;
        assert_ne!(
            first.status(),
            http::StatusCode::OK,
            "the panicked download is an error"
        );
        let second = rp.handle("m", "panic-on-purpose", get()).await;
        assert_eq!(second.status(), http::StatusCode::OK);
        let body = http_body_util::BodyExt::collect(second.into_body())
            .await
            .expect("whole body")
            .to_bytes();
        assert_eq!(&body[..], b"hello");
    }
}
