//! Coalesced downloads. The first client to miss a file starts one fetch
//! task; it writes the body to a temp file and publishes how many bytes are
//! on disk through a `watch` channel. Every client (the first included)
//! reads the temp file up to the published length, so all of them stream as
//! the bytes arrive. The task commits by rename only after a complete,
//! verified body, and outlives the clients so an abandoned download still
//! fills the cache.
//!
//! Before a commit: a file whose checksum the metadata gives must match it;
//! a file with none must not be still being written on the mirror, nor
//! have changed while it was fetched; a `repomd.xml` must have every record
//! it names cached first. A download that fails those is served (it is
//! what the mirror sent) but not committed, so the next request fetches it
//! again; one that fails a checksum is aborted for its clients.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::body::{self, Body, Msg};
use crate::inflight::{BodyState, End, Permit, Progress, wait_past};
use crate::known::{self, Origin};
use crate::metadata;
use crate::path::{CachePolicy, RepoPath, policy};
use crate::serve::{Span, Want, not_modified, span};
use crate::store::{self, CachedFile, Damage, Meta, Presence, Trust, is_disk_full};
use crate::upstream::{Fetched, Upstream, Validators};
use crate::{CacheStatus, Error, Inner};

/// Bytes read from disk per body frame; with the channel depth this bounds
/// memory per client.
const CHUNK: u64 = 512 * 1024;

/// A file with no checksum whose `Last-Modified` is less than this before
/// the response's `Date` is being written right now (mirrors are not
/// atomic: nginx sends the size of the moment): it is served, not even
/// kept. An older one may still be mid-write too — a writer may pause for
/// any length of time — which is why no such file is ever kept as final
/// (see [`Trust::Unconfirmed`]); this only spares a disk write of a file
/// that is visibly changing.
const STILL_WRITING: Duration = Duration::from_secs(10);

/// How a downloaded body compares with the checksum the metadata gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksum {
    Matches,
    /// Also after `.treeinfo` was read again (a respin).
    Mismatch,
    /// No metadata gives one (or the body was not whole, so it was not asked).
    Unknown,
}

/// What a download saw, gathered by the task that ran it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// Body bytes received, and the Content-Length announced, if any.
    pub(crate) received: u64,
    pub(crate) announced: Option<u64>,
    pub(crate) checksum: Checksum,
    /// A `repomd.xml` whose every record was fetched and verified: it
    /// parsed whole (a torn XML document does not), and what it names is
    /// checked by checksum.
    pub(crate) records_verified: bool,
    /// How long before the response the mirror says the file was last
    /// written (`Date` − `Last-Modified`).
    pub(crate) modified_ago: Option<Duration>,
    /// The mirror sent `Last-Modified`: the body is a file on its disk,
    /// which a writer may rewrite in place.
    pub(crate) last_modified: bool,
    /// A HEAD after the download disagreed with the GET (`Some(true)`) or
    /// agreed; `None` when it was not asked or not answered.
    pub(crate) changed: Option<bool>,
    /// The body fits the cache's size limit at all.
    pub(crate) fits: bool,
    pub(crate) disk_full: bool,
}

/// What becomes of a finished download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Whole by its checksum (or by the mirror's word, with nothing to
    /// doubt it): kept as final.
    Commit,
    /// Whole by its framing, but only the mirror vouches for it and a
    /// writer may still be rewriting it: kept, confirmed with the mirror
    /// before every serve.
    KeepUnconfirmed,
    /// Its clients get it whole; it is not kept, so the next request
    /// fetches it again.
    ServeButDontKeep(NotKept),
    /// Its clients see the transfer aborted; nothing is kept.
    Abort(Refused),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotKept {
    StillBeingWritten,
    Changed,
    TooLarge,
    DiskFull,
}

impl NotKept {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotKept::StillBeingWritten => {
                "modified on the mirror seconds ago: it may still be being written"
            }
            NotKept::Changed => "changed on the mirror during the download (a respin in progress)",
            NotKept::TooLarge => "larger than the whole cache",
            NotKept::DiskFull => "the cache's disk is full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Fewer (or more) bytes than Content-Length announced.
    Length,
    /// The bytes are not what the metadata says they must be.
    Checksum,
}

/// The commit decision: whole, verified, settled — or why not.
pub(crate) fn decide(seen: &Seen) -> Outcome {
    if seen.announced.is_some_and(|n| n != seen.received) {
        return Outcome::Abort(Refused::Length);
    }
    if seen.checksum == Checksum::Mismatch {
        return Outcome::Abort(Refused::Checksum);
    }
    let vouched = seen.checksum == Checksum::Matches || seen.records_verified;
    if !vouched {
        if seen.changed == Some(true) {
            return Outcome::ServeButDontKeep(NotKept::Changed);
        }
        if seen.modified_ago.is_some_and(|age| age < STILL_WRITING) {
            return Outcome::ServeButDontKeep(NotKept::StillBeingWritten);
        }
    }
    if seen.disk_full {
        return Outcome::ServeButDontKeep(NotKept::DiskFull);
    }
    if !seen.fits {
        return Outcome::ServeButDontKeep(NotKept::TooLarge);
    }
    if vouched || !seen.last_modified {
        // Without Last-Modified the body is not a file the mirror says it
        // wrote at some time (a generated answer, or a server that tells
        // nothing): there is no in-place writer to wait for.
        Outcome::Commit
    } else {
        Outcome::KeepUnconfirmed
    }
}

/// Records of a new `repomd.xml` fetched at once before it is committed.
const GENERATION_FETCHES: usize = 4;

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

fn is_repomd(path: &RepoPath) -> bool {
    let p = path.as_str();
    p == "repodata/repomd.xml" || p.ends_with("/repodata/repomd.xml")
}

fn is_treeinfo(path: &RepoPath) -> bool {
    let p = path.as_str();
    p == ".treeinfo" || p.ends_with("/.treeinfo")
}

/// Objects up to this size are hashed before their first serve in this
/// process — one read, which the serve then finds in the page cache; larger
/// ones are hashed while their first whole serve streams (see `respond`).
const CHECK_BEFORE_SERVING: u64 = 1 << 20;

/// Opens a committed object (on the blocking pool); a small one not yet
/// checked in this process is checked against its recorded sha256 first.
async fn open_entry(inner: &Arc<Inner>, hash: &str) -> Option<CachedFile> {
    let inner2 = inner.clone();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || {
        let f = inner2.store.open_entry(&hash)?;
        if !f.checked && f.len <= CHECK_BEFORE_SERVING && !check_whole(&inner2, &hash, &f) {
            return None;
        }
        Some(f)
    })
    .await
    .ok()
    .flatten()
}

/// The sha256 a cached body must have: the one recorded at its commit, or
/// for an object written before those were recorded, what the metadata
/// says.
pub(crate) fn expected_digest(inner: &Inner, hash: &str, meta: &Meta) -> Option<[u8; 32]> {
    meta.sha256
        .or_else(|| inner.known.expected(hash).map(|e| e.sha256))
}

/// Hashes a cached body (blocking) and compares it with what it must be:
/// a match is remembered, a mismatch drops the object. Whether it may be
/// served.
pub(crate) fn check_whole(inner: &Inner, hash: &str, f: &CachedFile) -> bool {
    let Some(want) = expected_digest(inner, hash, &f.meta) else {
        inner.store.mark_checked(hash);
        return true;
    };
    let got = body_reader(&f.file, f.offset, f.len).and_then(|mut r| {
        let mut h = Sha256::new();
        io::copy(&mut r, &mut h)?;
        Ok(<[u8; 32]>::from(h.finalize()))
    });
    match got {
        Ok(got) if got == want => {
            inner.store.mark_checked(hash);
            true
        }
        Ok(_) => {
            inner.store.drop_damaged(hash, &f.file, Damage::Checksum);
            false
        }
        Err(e) => {
            tracing::warn!(object = hash, error = %e, "cached file could not be read");
            false
        }
    }
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
                // After a restart the index learns that an object is
                // unconfirmed from its header: decide again, now as stale.
                Some(f) if f.meta.trust == Trust::Unconfirmed => continue,
                Some(f) => {
                    c.hits.inc();
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
                Progress::NotModified | Progress::Cached => match open_entry(inner, &hash).await {
                    Some(f) => {
                        c.hits.inc();
                        let status = if matches!(state, Progress::Cached) {
                            CacheStatus::Updating
                        } else {
                            CacheStatus::Revalidated
                        };
                        return Ok(Source::Cached(f, status));
                    }
                    None => break,
                },
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
                        c.stale.inc();
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
    inner.counters.passthrough.inc();
    inner.counters.upstream_requests.inc();
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

/// How a download ended.
#[derive(Debug)]
enum Done {
    NotModified,
    /// Committed, or served whole without caching (too large, disk full).
    Complete,
    /// Served whole but not cached, on purpose; the reason is logged.
    Uncommitted(&'static str),
}

impl Job {
    async fn run(self) {
        let result = self.download().await;
        let (inner, permit) = (self.inner, self.permit);
        let c = &inner.counters;
        let finish_body = |permit: Permit| {
            permit.finish(|p| {
                if let Progress::Body(b) = p {
                    b.end = End::Complete;
                }
            })
        };
        match result {
            Ok(Done::NotModified) => {
                c.not_modified.inc();
                permit.finish(|p| {
                    if !matches!(p, Progress::Cached) {
                        *p = Progress::NotModified;
                    }
                });
            }
            Ok(Done::Complete) => finish_body(permit),
            Ok(Done::Uncommitted(why)) => {
                c.uncommitted.inc();
                tracing::info!(key = %self.key, why, "served without caching; fetched again next time");
                finish_body(permit);
            }
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "download failed");
                c.failed(&e);
                let e = Arc::new(e);
                permit.finish(|p| match p {
                    Progress::Body(b) if !matches!(b.end, End::Complete) => b.end = End::Aborted(e),
                    Progress::Body(_) | Progress::Cached => {}
                    other => *other = Progress::Failed(e),
                });
            }
        }
    }

    async fn download(&self) -> Result<Done, Error> {
        #[cfg(test)]
        tests::maybe_panic(&self.key);
        let inner = &self.inner;
        let c = &inner.counters;
        let cached = if self.revalidate {
            open_entry(inner, &self.hash).await
        } else {
            None
        };
        let cond = cached
            .as_ref()
            .map(|f| Validators {
                etag: f.meta.etag.clone(),
                last_modified: f.meta.last_modified.clone(),
            })
            .unwrap_or_default();
        c.upstream_requests.inc();
        if cond.etag.is_some() || cond.last_modified.is_some() {
            c.revalidations.inc();
        }
        let (url, response) = match self.up.fetch(&self.mirror, &self.path, &cond).await? {
            Fetched::NotModified => {
                inner.store.mark_validated(&self.hash);
                return Ok(Done::NotModified);
            }
            Fetched::Full { url, response } => (url, response),
        };
        c.downloads.inc();
        let headers = response.headers().clone();
        let expected = content_length(&headers);
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
            ..Meta::default()
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
        let body_state = BodyState {
            file: file.clone(),
            offset,
            meta: Arc::new(meta),
            expected,
            written: 0,
            end: End::Open,
        };
        // A new `repomd.xml` replacing a cached one is not shown to anyone
        // until its generation is in: clients get the cached one meanwhile.
        let hold = is_repomd(&self.path) && cached.is_some();
        if hold {
            self.permit.send_replace(Progress::Cached);
        } else {
            self.permit.send_replace(Progress::Body(body_state.clone()));
        }

        let want = inner.known.expected(&self.hash);
        let mut hasher = Sha256::new();
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
            hasher.update(&data);
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
            c.upstream_bytes.inc_by(len);
            if !hold {
                self.permit.send_modify(|p| {
                    if let Progress::Body(b) = p {
                        b.written = written;
                    }
                });
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let complete = expected.is_none_or(|n| n == written);
        if complete && is_treeinfo(&self.path) {
            // What `.treeinfo` says is learnt from every whole copy that
            // passed through, kept or not: a respin's new `.treeinfo` is
            // served before it can be kept (it was just written), and the
            // new images it names must be checked against it, not refused
            // against the old one until it is.
            let (i, m, p, h, f) = (
                inner.clone(),
                self.mirror.clone(),
                self.path.clone(),
                self.hash.clone(),
                file.clone(),
            );
            let _ = tokio::task::spawn_blocking(move || {
                learn_file(&i, &m, &p, &h, &f, offset, written)
            })
            .await;
        }
        let checksum = match &want {
            _ if !complete => Checksum::Unknown,
            None => Checksum::Unknown,
            Some(want) if want.sha256 == digest => Checksum::Matches,
            Some(want) => self.recheck(&want.origin, digest).await,
        };
        let mut records_verified = false;
        if complete && checksum != Checksum::Mismatch && is_repomd(&self.path) {
            if !hold {
                // Nobody waits on the records for a first copy: the mirror's
                // repomd.xml is all there is to give.
                self.permit.send_modify(|p| {
                    if let Progress::Body(b) = p {
                        b.end = End::Complete;
                    }
                });
            }
            self.fetch_generation(&file, offset, written).await?;
            records_verified = true;
        }
        let vouched = checksum == Checksum::Matches || records_verified;
        let changed = if complete && !vouched {
            self.changed_since(&headers).await
        } else {
            None
        };
        let date = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
        };
        let seen = Seen {
            received: written,
            announced: expected,
            checksum,
            records_verified,
            modified_ago: date(header::DATE)
                .zip(date(header::LAST_MODIFIED))
                .and_then(|(now, modified)| now.duration_since(modified).ok()),
            last_modified: headers.contains_key(header::LAST_MODIFIED),
            changed,
            fits: inner.store.fits(offset + written),
            disk_full: inner.store.disk_full(),
        };
        let trust = match decide(&seen) {
            Outcome::Abort(Refused::Length) => {
                return Err(Error::Incomplete {
                    expected: expected.unwrap_or(written),
                    got: written,
                });
            }
            Outcome::Abort(Refused::Checksum) => return Err(Error::Checksum(self.key.clone())),
            Outcome::ServeButDontKeep(why @ (NotKept::StillBeingWritten | NotKept::Changed)) => {
                return Ok(Done::Uncommitted(why.as_str()));
            }
            Outcome::ServeButDontKeep(why) => {
                // Clients still get the whole file from the open temp file.
                tracing::info!(key = %self.key, bytes = written, why = why.as_str(), "not caching");
                return Ok(Done::Complete);
            }
            Outcome::Commit => Trust::Final,
            Outcome::KeepUnconfirmed => Trust::Unconfirmed,
        };
        // The header learns what the body is, so a damaged copy is told
        // from a whole one later, after a restart too.
        let done = Meta {
            length: Some(written),
            sha256: Some(digest),
            trust,
            ..(*body_state.meta).clone()
        };
        let store_inner = inner.clone();
        let hash = self.hash.clone();
        let committed = blocking(move || {
            let head = done.encode();
            if head.len() as u64 != offset {
                return Err(io::Error::other("cache header changed length"));
            }
            tmp.as_file().write_all_at(&head, 0)?;
            store_inner.store.commit(tmp, &hash, trust)
        })
        .await;
        if let Err(e) = committed {
            if is_disk_full(&e) {
                inner.store.set_disk_full();
            }
            tracing::warn!(key = %self.key, error = %e, "commit failed; served without caching");
            return Ok(Done::Complete);
        }
        if trust == Trust::Unconfirmed {
            tracing::info!(key = %self.key, "kept unconfirmed: no checksum vouches for it, so the mirror is asked before each serve");
        }
        learn(
            inner,
            &self.mirror,
            &self.path,
            &self.hash,
            &file,
            offset,
            written,
        )
        .await;
        Ok(Done::Complete)
    }

    /// The body did not match the checksum it was expected to have. An
    /// image's checksum comes from `.treeinfo`, which changes with it on a
    /// respin: ask the mirror for `.treeinfo` again and check once more.
    async fn recheck(&self, origin: &Origin, digest: [u8; 32]) -> Checksum {
        let Origin::Treeinfo { mirror, path } = origin else {
            return Checksum::Mismatch;
        };
        let inner = &self.inner;
        inner.store.expire(&known::object_hash(mirror, path));
        let refreshed = ensure_boxed(inner.clone(), self.up.clone(), mirror.clone(), path.clone());
        if let Err(e) = refreshed.await {
            tracing::warn!(key = %self.key, error = %e, "could not re-read .treeinfo after a checksum mismatch");
            return Checksum::Mismatch;
        }
        match inner.known.expected(&self.hash) {
            Some(now) if now.sha256 == digest => Checksum::Matches,
            _ => Checksum::Mismatch,
        }
    }

    /// Whether the mirror's file changed while it was downloaded (a HEAD
    /// afterwards disagrees with the GET's validators): `None` when the
    /// GET gave none to compare, or the mirror gave no answer.
    async fn changed_since(&self, got: &HeaderMap) -> Option<bool> {
        if !got.contains_key(header::ETAG) && !got.contains_key(header::LAST_MODIFIED) {
            return None;
        }
        match self.up.head(&self.mirror, &self.path).await {
            Ok(now) => Some(
                [header::ETAG, header::CONTENT_LENGTH, header::LAST_MODIFIED]
                    .into_iter()
                    .any(|h| match (got.get(&h), now.get(&h)) {
                        (Some(a), Some(b)) => a != b,
                        _ => false,
                    }),
            ),
            // A mirror that refuses HEAD, or went away since, cannot say the
            // file changed; the body was whole by its own framing. Refusing
            // to keep it here would make `.treeinfo` uncacheable on such a
            // mirror, and offline installs impossible.
            Err(e) => {
                tracing::debug!(key = %self.key, error = %e, "HEAD after download failed");
                None
            }
        }
    }

    /// Fetches (and so verifies) every record a new `repomd.xml` names.
    async fn fetch_generation(&self, file: &Arc<File>, offset: u64, len: u64) -> Result<(), Error> {
        let Some(prefix) = known::repo_prefix(&self.path, "repodata/repomd.xml") else {
            return Ok(());
        };
        let f = file.clone();
        let records =
            blocking_repodata(move || metadata::parse_repomd(body_reader(&f, offset, len)?))
                .await?;
        let inner = &self.inner;
        inner.known.learn_repomd(&self.mirror, &prefix, &records);
        let mut todo = records.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < GENERATION_FETCHES {
                let Some(r) = todo.next() else { break };
                let Some(path) = known::join(&prefix, &r.file.href) else {
                    continue;
                };
                let (inner, up, mirror) = (inner.clone(), self.up.clone(), self.mirror.clone());
                let fetched = ensure_boxed(inner, up, mirror, path.clone());
                running.spawn(async move { (path, fetched.await) });
            }
            let Some(joined) = running.join_next().await else {
                return Ok(());
            };
            let (path, result) =
                joined.map_err(|e| Error::UpstreamBody(format!("generation task: {e}")))?;
            if let Err(e) = result {
                return Err(Error::Generation {
                    repomd: self.key.clone(),
                    record: path.to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
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

async fn blocking_repodata<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Repodata(format!("task: {e}"))))
}

/// After a commit: what the file says about others becomes known.
async fn learn(
    inner: &Arc<Inner>,
    mirror: &str,
    path: &RepoPath,
    hash: &str,
    file: &Arc<File>,
    offset: u64,
    len: u64,
) {
    let (inner2, mirror2, path2, hash2, f) = (
        inner.clone(),
        mirror.to_string(),
        path.clone(),
        hash.to_string(),
        file.clone(),
    );
    let work = move || learn_file(&inner2, &mirror2, &path2, &hash2, &f, offset, len);
    if inner.known.primary(hash).is_some() {
        // Primary metadata can be large: its packages become known in the
        // background, the download is done.
        tokio::task::spawn_blocking(work);
    } else if is_repomd(path) {
        let _ = tokio::task::spawn_blocking(work).await;
    }
    // (`.treeinfo` was learnt before the commit decision, kept or not.)
}

fn learn_file(
    inner: &Inner,
    mirror: &str,
    path: &RepoPath,
    hash: &str,
    file: &File,
    offset: u64,
    len: u64,
) {
    let result = (|| -> Result<(), Error> {
        if let Some(at) = inner.known.primary(hash) {
            let packages = metadata::parse_primary(body_reader(file, offset, len)?, &at.href)?;
            inner
                .known
                .learn_packages(&at.mirror, &at.prefix, &packages);
        } else if let Some(prefix) = known::repo_prefix(path, "repodata/repomd.xml")
            && is_repomd(path)
        {
            let records = metadata::parse_repomd(body_reader(file, offset, len)?)?;
            inner.known.learn_repomd(mirror, &prefix, &records);
        } else if is_treeinfo(path)
            && let Some(prefix) = known::repo_prefix(path, ".treeinfo")
        {
            let mut text = String::new();
            io::Read::read_to_string(&mut body_reader(file, offset, len)?, &mut text)?;
            let files = metadata::parse_treeinfo(&text)?;
            inner.known.learn_treeinfo(mirror, path, &prefix, &files);
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(key = %format!("{mirror}/{path}"), error = %e, "cached metadata could not be read");
    }
}

/// Rebuilds what the cached metadata says (checksums of repodata, packages,
/// images), e.g. after a restart. Blocking: it reads every cached file's
/// header once.
pub(crate) fn learn_from_cache(inner: &Inner) {
    let started = std::time::Instant::now();
    let mut metadata_files = Vec::new();
    for hash in inner.store.hashes() {
        let Some(f) = inner.store.open_entry(&hash) else {
            continue;
        };
        let Some((mirror, rest)) = f.meta.key.split_once('/') else {
            continue;
        };
        let Ok(path) = crate::path::normalize(rest) else {
            continue;
        };
        if is_repomd(&path) || is_treeinfo(&path) {
            metadata_files.push((mirror.to_string(), path, hash, f));
        }
    }
    let mut primaries = Vec::new();
    for (mirror, path, hash, f) in &metadata_files {
        learn_file(inner, mirror, path, hash, &f.file, f.offset, f.len);
        if is_repomd(path)
            && let Some(prefix) = known::repo_prefix(path, "repodata/repomd.xml")
        {
            primaries.push((mirror.clone(), prefix));
        }
    }
    for (mirror, prefix) in primaries {
        let Some(repomd) = known::join(&prefix, "repodata/repomd.xml") else {
            continue;
        };
        let Some(f) = inner
            .store
            .open_entry(&known::object_hash(&mirror, &repomd))
        else {
            continue;
        };
        let Ok(records) = body_reader(&f.file, f.offset, f.len)
            .map_err(Error::Io)
            .and_then(metadata::parse_repomd)
        else {
            continue;
        };
        for r in records.iter().filter(|r| r.kind == "primary") {
            let Some(path) = known::join(&prefix, &r.file.href) else {
                continue;
            };
            let hash = known::object_hash(&mirror, &path);
            if let Some(p) = inner.store.open_entry(&hash) {
                learn_file(inner, &mirror, &path, &hash, &p.file, p.offset, p.len);
            }
        }
    }
    if !metadata_files.is_empty() {
        tracing::info!(
            files = metadata_files.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "checksums read from the cached metadata"
        );
    }
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
            // The first whole serve of an object not yet checked in this
            // process checks it as it streams: the last bytes go out only
            // once they hash to what was committed.
            let check = match (sp, f.checked) {
                (Span::Whole, false) => expected_digest(inner, &f.hash, m).map(|want| {
                    let (inner, hash, file) = (inner.clone(), f.hash.clone(), f.file.clone());
                    body::Check::new(want, move |whole| {
                        if whole {
                            inner.store.mark_checked(&hash);
                        } else {
                            drop(tokio::task::spawn_blocking(move || {
                                inner.store.drop_damaged(&hash, &file, Damage::Checksum)
                            }));
                        }
                    })
                }),
                _ => None,
            };
            Ok(finish(resp, range, want, |start, end| {
                body::file(
                    f.file.clone(),
                    f.offset + start,
                    end.unwrap_or(f.len) - start,
                    CHUNK,
                    check,
                    inner.counters.served_bytes.clone(),
                )
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
            Ok(finish(resp, range, want, |start, end| {
                let (tx, body) = body::channel();
                let served = inner.counters.served_bytes.clone();
                tokio::spawn(pump(b.file, b.offset, start, end, rx, tx, served));
                body
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
                                inner.counters.upstream_bytes.inc_by(d.len() as u64);
                                inner.counters.served_bytes.inc_by(d.len() as u64);
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

/// The response with its body: `body(start, end)` makes the body of the
/// range `head` chose, when the request wants one.
fn finish(
    resp: http::response::Builder,
    range: Option<(u64, Option<u64>)>,
    want: Want,
    body: impl FnOnce(u64, Option<u64>) -> Body,
) -> Response<Body> {
    let body = match (range, want) {
        (Some((start, end)), Want::Body) => body(start, end),
        _ => body::empty(),
    };
    resp.body(body)
        .unwrap_or_else(|e| crate::error_response(&Error::Io(io::Error::other(e))))
}

/// Copies `[start, end)` of a download's body (at `offset` in its temp
/// file) into the client's channel, waiting for the download to publish
/// more.
async fn pump(
    file: Arc<File>,
    offset: u64,
    start: u64,
    end: Option<u64>,
    mut rx: watch::Receiver<Progress>,
    tx: mpsc::Sender<Msg>,
    served: Counter,
) {
    let mut pos = start;
    // Wait until the download has more than this many bytes (or ended).
    let mut need = pos;
    loop {
        let seen = wait_past(&mut rx, need).await;
        let complete = matches!(seen.end, End::Complete);
        let mut limit = end.map_or(seen.written, |e| e.min(seen.written));
        // With Content-Length framing a client that has every byte sees a
        // clean end whatever happens next, so the last byte waits until the
        // fetch has verified and committed the file: a late failure
        // (checksum, trailing garbage) still reaches the client as an abort.
        if let Some(e) = end
            && !complete
        {
            limit = limit.min(e.saturating_sub(1));
        }
        if pos < limit {
            let n = (limit - pos).min(CHUNK) as usize;
            let f = file.clone();
            let at = offset + pos;
            // The temp file is shared by every client streaming it:
            // positioned reads only.
            let read = blocking(move || {
                let mut buf = vec![0; n];
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
            served.inc_by(n as u64);
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
