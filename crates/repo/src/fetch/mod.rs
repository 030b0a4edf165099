//! Coalesced downloads. The first client to miss a file starts one
//! download task; it writes the body to a temp file and publishes how many
//! bytes are on disk through a `watch` channel. Every client (the first
//! included) reads the temp file up to the published length, so all of them
//! stream as the bytes arrive. The task keeps the file only after a
//! complete, verified body.
//!
//! By concern:
//! - here, [`obtain`]: a request finds its bytes — a small body in memory,
//!   a committed file, a download to join or start, or the mirror itself —
//!   and [`ensure`] does the same for `warm`, waiting for the file to be in;
//! - `download`: the download task, upstream → temp file → keep or not;
//! - `commit`: the commit decision, a pure function of what the download
//!   saw, with its table test;
//! - `revalidate`: asking the mirror again (conditional GET, `.treeinfo`
//!   after a mismatch, HEAD after a download);
//! - `intact`: whether a cached object is still what was committed;
//! - `learn`: checksums learnt from the metadata that passes through;
//! - `respond`: the response for what was found, and `pass` for the mirror
//!   passed through uncached when the disk is full.

mod commit;
mod download;
mod intact;
mod learn;
mod pass;
mod respond;
mod revalidate;

use std::fs::File;
use std::io;
use std::sync::Arc;

use http::Response;
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::body;
use crate::inflight::{End, Progress, wait_past};
use crate::memory::{self, InMemory};
use crate::path::{CachePolicy, RepoPath, policy};
use crate::store::{self, CachedFile, Damage, Opening, Presence, Trust};
use crate::upstream::Upstream;
use crate::{CacheStatus, Error, Inner};

pub(crate) use intact::{body_sha256, check_whole, expected_digest};
use intact::{load, open_entry};
pub(crate) use learn::learn_from_cache;
pub(crate) use respond::{Head, respond};

enum Decision {
    Hit,
    Pass,
    Join(watch::Receiver<Progress>, CacheStatus),
}

/// Who reads the bytes of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// A response: a small body is sent from memory — the copy kept there,
    /// or read whole for it (and kept when it may be).
    Response,
    /// A reader that needs the file itself (TFTP), or only to know that it
    /// is cached (`warm`): nothing is read, nothing put in memory.
    File,
}

/// Where a response's bytes come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A small committed body, whole in memory; only for [`Reader::Response`].
    InMemory(InMemory, CacheStatus),
    Cached(CachedFile, CacheStatus),
    Inflight(watch::Receiver<Progress>, CacheStatus),
    Pass(Response<Incoming>),
}

/// A committed object opened for a reader.
#[derive(Debug)]
pub(crate) enum Found {
    InMemory(InMemory),
    File(CachedFile),
}

impl Found {
    fn trust(&self) -> Trust {
        match self {
            Found::InMemory(m) => m.meta().trust,
            Found::File(f) => f.meta.trust,
        }
    }

    fn source(self, status: CacheStatus) -> Source {
        match self {
            Found::InMemory(m) => Source::InMemory(m, status),
            Found::File(f) => Source::Cached(f, status),
        }
    }
}

fn key_of(mirror: &str, path: &RepoPath) -> String {
    format!("{mirror}/{path}")
}

fn is_repomd(path: &RepoPath) -> bool {
    let p = path.as_str();
    p == "repodata/repomd.xml" || p.ends_with("/repodata/repomd.xml")
}

fn is_treeinfo(path: &RepoPath) -> bool {
    let p = path.as_str();
    p == ".treeinfo" || p.ends_with("/.treeinfo")
}

/// Opens a committed object for a hit: on the runtime when that needs no
/// disk I/O (the common case for a file served before), else on the
/// blocking pool, which is where a cold disk may keep it waiting. For a
/// response, a small body is read whole here (and kept in memory when it
/// may be): it goes out as one frame.
async fn open(inner: &Arc<Inner>, hash: &str, reader: Reader) -> Option<Found> {
    let f = match inner.store.open_hot(hash) {
        Opening::Hot(f) => f,
        Opening::Damaged(file) => {
            let (inner, hash) = (inner.clone(), hash.to_string());
            let _ = tokio::task::spawn_blocking(move || {
                inner.store.drop_damaged(&hash, &file, Damage::Size)
            })
            .await;
            return None;
        }
        Opening::Cold => {
            return match reader {
                Reader::Response => load(inner, hash).await,
                Reader::File => open_entry(inner, hash).await.map(Found::File),
            };
        }
    };
    if reader == Reader::File || f.len > memory::MAX_EACH {
        return Some(Found::File(f));
    }
    // Opened hot, so checked in this process already: read it whole, from
    // the page cache on the runtime when it has every byte.
    let body = match body::read_cached(&f.file, f.offset, f.len) {
        Some(b) if b.len() as u64 == f.len => b,
        _ if f.len == 0 => bytes::Bytes::new(),
        _ => {
            let (file, at, n) = (f.file.clone(), f.offset, f.len);
            match blocking(move || body::read_at(&file, at, n)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(object = hash, error = %e, "cached file could not be read");
                    return None;
                }
            }
        }
    };
    let copy = InMemory::new(f.meta.clone(), body);
    inner.store.keep(&f, &copy);
    Some(Found::InMemory(copy))
}

/// Finds the bytes for `mirror/path`: a small body in memory (for a
/// response), a committed file, a download in progress (joined or
/// started), or — with the disk full — the mirror itself.
pub(crate) async fn obtain(
    inner: &Arc<Inner>,
    up: &Arc<Upstream>,
    mirror: &str,
    path: &RepoPath,
    reader: Reader,
) -> Result<Source, Error> {
    let key = key_of(mirror, path);
    let hash = store::hash_key(&key);
    let max_age = match policy(path) {
        CachePolicy::Immutable => None,
        _ => Some(up.revalidate_after),
    };
    let c = &inner.counters;
    // A copy in memory is of a fresh, final, checked entry: it needs no
    // download, so not the coalescing lock either, which is there to order
    // the starts of downloads.
    if reader == Reader::Response
        && let Some(m) = inner.store.in_memory(&hash, max_age)
    {
        c.hits.inc();
        c.memory_hits.inc();
        return Ok(Source::InMemory(m, CacheStatus::Hit));
    }
    // A file evicted or replaced between the index check and the open is
    // simply looked up again; three rounds are plenty.
    for _ in 0..3 {
        let claimed = inner.inflight.claim(&hash, |slot| {
            match inner.store.presence(&hash, max_age) {
                Presence::Fresh => Decision::Hit,
                Presence::Missing if inner.store.disk_full() => Decision::Pass,
                presence @ (Presence::Missing | Presence::Stale) => {
                    let (permit, rx) = slot.lead();
                    let job = download::Job {
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
            Decision::Hit => match open(inner, &hash, reader).await {
                // After a restart the index learns that an object is
                // unconfirmed from its header: decide again, now as stale.
                Some(f) if f.trust() == Trust::Unconfirmed => continue,
                Some(f) => {
                    c.hits.inc();
                    return Ok(f.source(CacheStatus::Hit));
                }
                None => continue,
            },
            Decision::Pass => return pass::pass_through(inner, up, mirror, path).await,
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
                Progress::NotModified | Progress::Cached => {
                    match open(inner, &hash, reader).await {
                        Some(f) => {
                            c.hits.inc();
                            let status = if matches!(state, Progress::Cached) {
                                CacheStatus::Updating
                            } else {
                                CacheStatus::Revalidated
                            };
                            return Ok(f.source(status));
                        }
                        None => break,
                    }
                }
                Progress::Body(_) => {
                    let counter = if status == CacheStatus::Coalesced {
                        &c.coalesced
                    } else {
                        &c.misses
                    };
                    counter.inc();
                    return Ok(Source::Inflight(rx, status));
                }
                Progress::Failed(e) => {
                    if matches!(*e, Error::DiskFull) {
                        return pass::pass_through(inner, up, mirror, path).await;
                    }
                    // A mirror that is down must not break installs from a
                    // cache that still holds the previous copy.
                    let gone = matches!(&*e, Error::UpstreamStatus { status, .. } if status.is_client_error());
                    if !gone
                        && inner.store.presence(&hash, None) != Presence::Missing
                        && let Some(f) = open(inner, &hash, reader).await
                    {
                        tracing::warn!(key, error = %e, "revalidation failed, serving stale copy");
                        c.stale.inc();
                        return Ok(f.source(CacheStatus::Stale));
                    }
                    return Err(Error::Shared(e));
                }
            }
        }
    }
    Err(Error::Io(io::Error::other("cache entry kept vanishing")))
}

/// A reader over `len` body bytes at `offset` of `file`.
pub(crate) fn body_reader(
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<impl io::BufRead + Send + use<>> {
    use std::io::{Read as _, Seek as _};
    let mut f = file.try_clone()?;
    f.seek(io::SeekFrom::Start(offset))?;
    Ok(io::BufReader::with_capacity(64 * 1024, f.take(len)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Makes sure `mirror/path` is in the cache (for `warm`), waiting for the
/// download to finish. Returns whether it was already there.
pub(crate) async fn ensure(
    inner: &Arc<Inner>,
    up: &Arc<Upstream>,
    mirror: &str,
    path: &RepoPath,
) -> Result<Ensured, Error> {
    match obtain(inner, up, mirror, path, Reader::File).await? {
        Source::Cached(..) | Source::InMemory(..) => Ok(Ensured::Present),
        Source::Pass(_) => Err(Error::DiskFull),
        Source::Inflight(mut rx, _) => {
            let mut need = 0;
            loop {
                let seen = wait_past(&mut rx, need).await;
                match seen.end {
                    End::Complete => {
                        // The bytes are final; wait for the task to end too
                        // (commit, a new `repomd.xml`'s records), so the
                        // caller finds the file committed.
                        while rx.changed().await.is_ok() {}
                        return Ok(Ensured::Fetched(seen.written));
                    }
                    End::Aborted(e) => return Err(Error::Shared(e)),
                    End::Open => need = seen.written,
                }
            }
        }
    }
}

/// [`ensure`] for use inside a download task: boxed, so the task's future
/// type does not contain itself (a download may ensure another file).
fn ensure_boxed(
    inner: Arc<Inner>,
    up: Arc<Upstream>,
    mirror: String,
    path: RepoPath,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Ensured, Error>> + Send>> {
    Box::pin(async move { ensure(&inner, &up, &mirror, &path).await })
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{RepoConfig, RepoProxy};

    static ARMED: AtomicBool = AtomicBool::new(false);

    /// The test hook of the download task (`download::Job::download`): panics once, on purpose,
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
