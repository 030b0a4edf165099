//! Asking the mirror again about a file: the conditional GET that
//! revalidates a cached copy (a 304 keeps it), re-reading `.treeinfo` when
//! an image fails the checksum it gave (a respin moves both), and the HEAD
//! after a download that tells whether the file changed while it was
//! fetched. What the answers mean is decided in `commit`.

use http::{HeaderMap, Response, header};
use hyper::body::Incoming;

use crate::Error;
use crate::known::{self, Origin};
use crate::store::CachedFile;
use crate::upstream::{Fetched, Validators};

use super::commit::Checksum;
use super::download::Job;
use super::ensure_boxed;

impl Job {
    /// Sends the request: conditional on the cached copy's validators when
    /// there is one. `None` when the mirror answered 304 — the copy stands,
    /// fresh again for `revalidate_after`.
    pub(super) async fn request(
        &self,
        cached: Option<&CachedFile>,
    ) -> Result<Option<(String, Response<Incoming>)>, Error> {
        let c = &self.inner.counters;
        let cond = cached
            .map(|f| Validators {
                etag: f.meta.etag.clone(),
                last_modified: f.meta.last_modified.clone(),
            })
            .unwrap_or_default();
        c.upstream_requests.inc();
        if cond.etag.is_some() || cond.last_modified.is_some() {
            c.revalidations.inc();
        }
        match self.up.fetch(&self.mirror, &self.path, &cond).await? {
            Fetched::NotModified => {
                self.inner.store.mark_validated(&self.hash);
                Ok(None)
            }
            Fetched::Full { url, response } => Ok(Some((url, response))),
        }
    }

    /// The body did not match the checksum it was expected to have. An
    /// image's checksum comes from `.treeinfo`, which changes with it on a
    /// respin: ask the mirror for `.treeinfo` again and check once more.
    pub(super) async fn recheck(&self, origin: &Origin, digest: [u8; 32]) -> Checksum {
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
    pub(super) async fn changed_since(&self, got: &HeaderMap) -> Option<bool> {
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
}
