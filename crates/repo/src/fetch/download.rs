//! The download task: one per missing (or stale) file, whoever asked
//! first. It asks the mirror (conditionally when a copy is cached, see
//! `revalidate`), writes the body to a temp file while publishing its
//! progress to every client following it, gathers what the commit decision
//! needs (`commit`), and keeps the file or not. It outlives its clients, so
//! an abandoned download still fills the cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::task::JoinSet;

use crate::inflight::{BodyState, End, Permit, Progress};
use crate::known;
use crate::metadata;
use crate::path::RepoPath;
use crate::store::{Meta, Trust, is_disk_full};
use crate::upstream::Upstream;
use crate::{Error, Inner};

use super::commit::{Checksum, NotKept, Outcome, Refused, Seen, decide};
use super::intact::open_entry;
use super::learn::{blocking_repodata, learn, learn_file};
use super::{blocking, body_reader, ensure_boxed, is_repomd, is_treeinfo};

/// Records of a new `repomd.xml` fetched at once before it is committed.
const GENERATION_FETCHES: usize = 4;

/// One download: upstream → temp file → commit.
pub(super) struct Job {
    pub(super) inner: Arc<Inner>,
    pub(super) up: Arc<Upstream>,
    pub(super) mirror: String,
    pub(super) path: RepoPath,
    pub(super) key: String,
    pub(super) hash: String,
    /// A copy is cached: the request is conditional.
    pub(super) revalidate: bool,
    /// Held for the whole download; whatever ends it, its `Drop` clears
    /// the in-flight entry.
    pub(super) permit: Permit,
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

/// A body as received, in its temp file.
struct Received {
    tmp: NamedTempFile,
    /// The temp file, shared with the clients that follow the download.
    file: Arc<File>,
    /// The header written before the body (length and sha256 still zero).
    meta: Meta,
    /// Where the body starts in the file.
    offset: u64,
    headers: HeaderMap,
    announced: Option<u64>,
    written: u64,
    digest: [u8; 32],
    /// A new `repomd.xml` replacing a cached one, shown to nobody until
    /// its generation is in: clients get the cached one meanwhile.
    hold: bool,
}

impl Received {
    fn whole_by_framing(&self) -> bool {
        self.announced.is_none_or(|n| n == self.written)
    }
}

impl Job {
    pub(super) async fn run(self) {
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
        super::tests::maybe_panic(&self.key);
        let cached = if self.revalidate {
            open_entry(&self.inner, &self.hash).await
        } else {
            None
        };
        let Some((url, response)) = self.request(cached.as_ref()).await? else {
            return Ok(Done::NotModified);
        };
        let hold = is_repomd(&self.path) && cached.is_some();
        let got = self.receive(&url, response, hold).await?;
        let outcome = self.judge(&got).await?;
        self.settle(got, outcome).await
    }

    /// Writes the body to a temp file, publishing its progress.
    async fn receive(
        &self,
        url: &str,
        response: Response<Incoming>,
        hold: bool,
    ) -> Result<Received, Error> {
        let inner = &self.inner;
        let c = &inner.counters;
        c.downloads.inc();
        let headers = response.headers().clone();
        let announced = content_length(&headers);
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
        if hold {
            self.permit.send_replace(Progress::Cached);
        } else {
            self.permit.send_replace(Progress::Body(BodyState {
                file: file.clone(),
                offset,
                meta: Arc::new(meta.clone()),
                expected: announced,
                written: 0,
                end: End::Open,
            }));
        }

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
            if announced.is_some_and(|n| written + data.len() as u64 > n) {
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
                let need = announced.map_or(len, |n| n - written);
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
        Ok(Received {
            tmp,
            file,
            meta,
            offset,
            headers,
            announced,
            written,
            digest: hasher.finalize().into(),
            hold,
        })
    }

    /// Gathers what the commit decision needs — asking the mirror and the
    /// metadata only what the answers so far leave open — and decides.
    async fn judge(&self, got: &Received) -> Result<Outcome, Error> {
        let inner = &self.inner;
        let whole = got.whole_by_framing();
        if whole && is_treeinfo(&self.path) {
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
                got.file.clone(),
            );
            let (offset, len) = (got.offset, got.written);
            let _ =
                tokio::task::spawn_blocking(move || learn_file(&i, &m, &p, &h, &f, offset, len))
                    .await;
        }
        let checksum = match inner.known.expected(&self.hash) {
            _ if !whole => Checksum::Unknown,
            None => Checksum::Unknown,
            Some(want) if want.sha256 == got.digest => Checksum::Matches,
            Some(want) => self.recheck(&want.origin, got.digest).await,
        };
        let mut records_verified = false;
        if whole && checksum != Checksum::Mismatch && is_repomd(&self.path) {
            if !got.hold {
                // Nobody waits on the records for a first copy: the mirror's
                // repomd.xml is all there is to give.
                self.permit.send_modify(|p| {
                    if let Progress::Body(b) = p {
                        b.end = End::Complete;
                    }
                });
            }
            self.fetch_generation(&got.file, got.offset, got.written)
                .await?;
            records_verified = true;
        }
        let vouched = checksum == Checksum::Matches || records_verified;
        let changed = if whole && !vouched {
            self.changed_since(&got.headers).await
        } else {
            None
        };
        let date = |name| {
            got.headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
        };
        Ok(decide(&Seen {
            received: got.written,
            announced: got.announced,
            checksum,
            records_verified,
            modified_ago: date(header::DATE)
                .zip(date(header::LAST_MODIFIED))
                .and_then(|(now, modified)| now.duration_since(modified).ok()),
            last_modified: got.headers.contains_key(header::LAST_MODIFIED),
            changed,
            fits: inner.store.fits(got.offset + got.written),
            disk_full: inner.store.disk_full(),
        }))
    }

    /// Acts on the outcome: keeps the file (its header completed, then a
    /// durable rename), or says why not.
    async fn settle(&self, got: Received, outcome: Outcome) -> Result<Done, Error> {
        let inner = &self.inner;
        let trust = match outcome {
            Outcome::Abort(Refused::Length) => {
                return Err(Error::Incomplete {
                    expected: got.announced.unwrap_or(got.written),
                    got: got.written,
                });
            }
            Outcome::Abort(Refused::Checksum) => return Err(Error::Checksum(self.key.clone())),
            Outcome::ServeButDontKeep(why @ (NotKept::StillBeingWritten | NotKept::Changed)) => {
                return Ok(Done::Uncommitted(why.as_str()));
            }
            Outcome::ServeButDontKeep(why) => {
                // Clients still get the whole file from the open temp file.
                tracing::info!(key = %self.key, bytes = got.written, why = why.as_str(), "not caching");
                return Ok(Done::Complete);
            }
            Outcome::Commit => Trust::Final,
            Outcome::KeepUnconfirmed => Trust::Unconfirmed,
        };
        // The header learns what the body is, so a damaged copy is told
        // from a whole one later, after a restart too.
        let done = Meta {
            length: Some(got.written),
            sha256: Some(got.digest),
            trust,
            ..got.meta
        };
        let (store_inner, hash, tmp, offset) =
            (inner.clone(), self.hash.clone(), got.tmp, got.offset);
        let committed = blocking(move || {
            let head = done.encode();
            if head.len() as u64 != offset {
                return Err(io::Error::other("cache header changed length"));
            }
            tmp.as_file().write_all_at(&head, 0)?;
            store_inner.store.commit(tmp, &hash, Arc::new(done), offset)
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
            &got.file,
            got.offset,
            got.written,
        )
        .await;
        Ok(Done::Complete)
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

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn disk_error(inner: &Inner, e: io::Error) -> Error {
    if is_disk_full(&e) {
        inner.store.set_disk_full();
        Error::DiskFull
    } else {
        Error::Io(e)
    }
}
