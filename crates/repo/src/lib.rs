//! Caching install-repo proxy. Installers ask Kickstand for
//! `/repo/<mirror>/<path>`; this crate maps that onto a configured mirror,
//! fetches it through the office proxy (or directly), and keeps one copy on
//! disk so a rack downloads each file once. It owns request mapping and
//! path refusal ([`path`]), the upstream client with redirects and failover
//! (`upstream`), coalesced misses that stream to every waiting client while
//! the one download runs (`fetch`), atomic commits and LRU eviction
//! (`store`), revalidation policy, and `cache warm` / `verify` over repodata
//! (`warm`). It does not own HTTP routing, listening sockets or the config
//! file format: the HTTP front calls [`RepoProxy::handle`]; the daemon
//! builds a [`RepoConfig`] from the validated appliance config (mirror URLs
//! and the office proxy arrive parsed and checked, never parsed again here)
//! and an [`Upstream`] with each generation, and swaps both in with
//! [`RepoProxy::reconfigure`].
//!
//! Layout: `serve` holds the pure request decisions (method, Range),
//! `body` the channel-fed response body, `error` the one error → status map.
//!
//! Guarantees, and how:
//! - *Whole or nothing.* A download goes to `cache/tmp/` and is renamed
//!   into `cache/objects/` only when its length matches Content-Length (or
//!   the final chunk arrived) and, when repodata gave one, its sha256
//!   matches. Clients streaming a download that fails see the body aborted;
//!   the last byte is held back until the commit so a late failure is still
//!   visible under Content-Length framing. Header and body share one file,
//!   so a respin replaces both with one rename and an open reader keeps the
//!   old inode. Temp files left by a crash are removed by [`RepoProxy::open`].
//! - *One download per file.* The first miss spawns a fetch task that
//!   publishes the bytes on disk through a `watch` channel; later requests
//!   join it and read the temp file up to that length.
//! - *Not an open proxy.* Only configured mirrors (and redirects to their
//!   hosts) are contacted; hostile paths are refused by [`path::normalize`]
//!   before anything leaves the process.
//!
//! Responses carry `X-Kickstand-Cache: hit|miss|coalesced|revalidated|stale|pass`.

mod body;
mod config;
mod error;
mod fetch;
mod inflight;
pub mod path;
mod serve;
mod store;
mod upstream;
mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use http::{Response, StatusCode, header};
use tokio_util::task::TaskTracker;

pub use body::Body;
pub use config::{RepoConfig, Timeouts};
pub use error::{Error, status_for};
pub use upstream::Upstream;
pub use warm::{VerifyReport, WarmEvent, WarmOutcome, WarmReport, WarmTarget};

use inflight::Inflight;
use store::Store;

/// The repo proxy. Cheap to clone; clones share the cache and the upstream.
#[derive(Debug, Clone)]
pub struct RepoProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: RwLock<Arc<Upstream>>,
    store: Store,
    /// Downloads in progress, by object hash: the coalescing lock.
    inflight: Inflight,
    /// Where download tasks run: the daemon's tracker, so shutdown drains them.
    tasks: TaskTracker,
    /// sha256 of packages learnt from repodata, by object hash: a fetch of
    /// such a file is checked before it is committed.
    known_sha: Mutex<HashMap<String, [u8; 32]>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    revalidated: AtomicU64,
    passthrough: AtomicU64,
    upstream_fetches: AtomicU64,
    upstream_bytes: AtomicU64,
    failures: AtomicU64,
}

/// Counters for the status page and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Served from a committed file.
    pub hits: u64,
    /// Started a download.
    pub misses: u64,
    /// Joined a download another client started.
    pub coalesced: u64,
    /// The mirror answered 304 to a conditional GET.
    pub revalidated: u64,
    /// Served straight from upstream because the disk is full.
    pub passthrough: u64,
    /// Downloads and revalidations sent to a mirror (failover to another
    /// base URL within one download is not counted again).
    pub upstream_fetches: u64,
    pub upstream_bytes: u64,
    pub evictions: u64,
    /// Downloads that failed (upstream error, truncation, checksum).
    pub failures: u64,
    pub disk_full: bool,
}

/// How a response was served, sent as `X-Kickstand-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    Hit,
    Miss,
    Coalesced,
    Revalidated,
    /// The mirror could not be reached; a stale copy was served.
    Stale,
    Pass,
}

impl CacheStatus {
    fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Stale => "stale",
            CacheStatus::Pass => "pass",
        }
    }
}

impl RepoProxy {
    /// Opens the cache (creating it) and discards temp files a crash left
    /// behind. Downloads run on `tasks`. Opening is synchronous; serving
    /// needs a tokio runtime.
    pub fn open(
        config: &RepoConfig,
        upstream: Arc<Upstream>,
        tasks: TaskTracker,
    ) -> Result<Self, Error> {
        let store = Store::open(&config.cache_dir, config.max_cache_bytes)?;
        Ok(RepoProxy {
            inner: Arc::new(Inner {
                upstream: RwLock::new(upstream),
                store,
                inflight: Inflight::default(),
                tasks,
                known_sha: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// Live reload of mirrors, proxy, timeouts and the size limit, built
    /// beforehand (see [`Upstream::new`]) so nothing here can fail.
    /// Downloads in progress finish with the settings they started with;
    /// `cache_dir` cannot change.
    pub fn reconfigure(&self, config: &RepoConfig, upstream: Arc<Upstream>) {
        *self
            .inner
            .upstream
            .write()
            .unwrap_or_else(|p| p.into_inner()) = upstream;
        self.inner.store.set_max_bytes(config.max_cache_bytes);
    }

    /// Downloads in flight now.
    pub fn downloads_in_flight(&self) -> usize {
        self.inner.inflight.len()
    }

    fn upstream(&self) -> Arc<Upstream> {
        self.inner
            .upstream
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `GET`/`HEAD /repo/<mirror>/<path>`. `path` is the raw
    /// (still percent-encoded) remainder of the request path without the
    /// query string. Never fails: errors become a response via
    /// [`error_response`].
    pub async fn handle<B>(
        &self,
        mirror: &str,
        path: &str,
        req: http::Request<B>,
    ) -> Response<Body> {
        match self.try_handle(mirror, path, &req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(mirror, path, error = %e, "repo request failed");
                error_response(&e)
            }
        }
    }

    async fn try_handle<B>(
        &self,
        mirror: &str,
        path: &str,
        req: &http::Request<B>,
    ) -> Result<Response<Body>, Error> {
        let want = serve::check_request(req)?;
        let upstream = self.upstream();
        if !upstream.has_mirror(mirror) {
            return Err(Error::UnknownMirror(mirror.to_string()));
        }
        let path = path::normalize(path)?;
        let source = fetch::obtain(&self.inner, &upstream, mirror, &path).await?;
        fetch::respond(
            &self.inner,
            source,
            req.headers(),
            want,
            upstream.timeouts.stall,
        )
        .await
    }

    /// Counters and cache usage.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let (entries, bytes, max_bytes) = self.inner.store.usage();
        CacheStats {
            entries,
            bytes,
            max_bytes,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            revalidated: c.revalidated.load(Ordering::Relaxed),
            passthrough: c.passthrough.load(Ordering::Relaxed),
            upstream_fetches: c.upstream_fetches.load(Ordering::Relaxed),
            upstream_bytes: c.upstream_bytes.load(Ordering::Relaxed),
            evictions: self.inner.store.evictions.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            disk_full: self.inner.store.disk_full(),
        }
    }
}

/// The response sent for an error: its status and a one-line text body.
pub fn error_response(err: &Error) -> Response<Body> {
    let status = status_for(err);
    let mut r = Response::new(body::text(format!("{err}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
    }
    r
}
