//! Caching install-repo proxy. Installers ask Kickstand for
//! `/repo/<mirror>/<path>`; this crate maps that onto a configured mirror,
//! fetches it through the office proxy (or directly), and keeps one copy on
//! disk so a rack downloads each file once. It owns request mapping and
//! path refusal ([`path`]), the upstream client with redirects and failover
//! (`upstream`), coalesced misses that stream to every waiting client while
//! the one download runs (`fetch`, split by concern: the download task, the
//! pure commit decision, revalidation, integrity checks, responses,
//! pass-through), atomic durable commits and LRU eviction (`store`),
//! revalidation policy, and `cache warm` / `verify` over repodata (`warm`). It does not own HTTP routing, listening sockets or the config
//! file format: the HTTP front calls [`RepoProxy::handle`]; the daemon
//! builds a [`RepoConfig`] from the validated appliance config (mirror URLs
//! and the office proxy arrive parsed and checked, never parsed again here)
//! and an [`Upstream`] with each generation, and swaps both in with
//! [`RepoProxy::reconfigure`].
//!
//! Layout: `serve` holds the pure request decisions (method, Range),
//! `body` the channel-fed response body, `error` the one error → status map,
//! `metadata` the readers of `repomd.xml`, primary and `.treeinfo`, `known`
//! the checksums learnt from them, `memory` the bounded copies of small
//! bodies, `metrics` the one set of counters,
//! `pulls` the files each install pulled (for `cache warm --like`), `open`
//! cached files for TFTP, which needs a file's size before its first byte.
//!
//! Guarantees, and how:
//! - *Whole or nothing.* A download goes to `cache/tmp/` and is renamed
//!   into `cache/objects/` only when its length matches Content-Length (or
//!   the final chunk arrived) and, when repodata gave one, its sha256
//!   matches. Every file whose checksum the metadata gives (repodata from
//!   `repomd.xml`, packages from primary, images from `.treeinfo`) is
//!   checked before it is committed; a respin's `.treeinfo` teaches its
//!   checksums as soon as it passes through, kept or not. A file with no
//!   checksum anywhere cannot be told whole from torn — a writer rewriting
//!   it in place may pause for any length of time — so it is never kept as
//!   final: it is served and not kept while the mirror is visibly writing it
//!   (`Last-Modified` seconds before `Date`) or when it changed during the
//!   download (a HEAD afterwards disagrees); otherwise it is kept
//!   *unconfirmed* and served only after the mirror confirms it for the
//!   request at hand (or, the mirror down, as stale). Clients streaming a
//!   download that fails see the body aborted; the last byte is held back
//!   until the commit, which syncs the file and then its directory, so a
//!   late failure is still visible under Content-Length framing and a
//!   power cut loses no file a client was told was whole. Header and body
//!   share one file, so a respin replaces both with one rename and an open
//!   reader keeps the old inode. Temp files left by a crash are removed by
//!   [`RepoProxy::open`].
//! - *Whole at rest.* Each object records its body's length and sha256. A
//!   hit compares the open file's size with it (a stat, no read), and the
//!   first whole serve of an object in a process checks its sha256 (before
//!   serving a small one, while streaming a large one); a damaged object is
//!   dropped and fetched again, never served as complete.
//! - *Cheap hits.* A small body (up to 256 KiB: most packages, the
//!   repodata) once read whole and checked is kept in memory, within a
//!   budget ([`RepoConfig::memory_bytes`], least recently used out first):
//!   a hit of it is one lock and one copy, into the socket — no `open`,
//!   `read` or `close`. Each copy is of one version of its index entry, so a
//!   respin's commit, an eviction or a damaged file takes it along. Other
//!   hits of a file served before open it with `openat2` (`RESOLVE_CACHED`,
//!   the header known from the index) and read it with `preadv2`
//!   (`RWF_NOWAIT`) on the runtime, and only what would wait for the disk
//!   goes to the blocking pool: the appliance runs from a USB stick, and a
//!   runtime worker must never wait on it.
//! - *One download per file.* The first miss spawns a fetch task that
//!   publishes the bytes on disk through a `watch` channel; later requests
//!   join it and read the temp file up to that length.
//! - *One metadata generation.* A new `repomd.xml` is committed only once
//!   every record it names is cached and verified; until then clients get
//!   the previous one, so none is handed a `repomd.xml` naming a primary
//!   the cache cannot serve.
//! - *Not an open proxy.* Only configured mirrors (and redirects to their
//!   hosts) are contacted; hostile paths are refused by [`path::normalize`]
//!   before anything leaves the process.
//!
//! Responses carry `X-Kickstand-Cache: hit|miss|coalesced|revalidated|stale|updating|pass`.

mod body;
mod config;
mod error;
mod fetch;
mod inflight;
mod known;
mod memory;
mod metadata;
mod metrics;
mod open;
pub mod path;
mod pulls;
mod serve;
mod store;
mod upstream;
mod warm;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use http::{Response, StatusCode, header};
use tokio_util::task::TaskTracker;

pub use body::Body;
pub use config::{RepoConfig, Timeouts};
pub use error::{Error, status_for};
pub use open::{Arriving, Opened};
pub use upstream::Upstream;
pub use warm::{VerifyReport, WarmEvent, WarmOutcome, WarmProgress, WarmReport, WarmTarget};

use inflight::Inflight;
use known::Known;
use metrics::Counters;
use store::Store;

/// The repo proxy. Cheap to clone; clones share the cache and the upstream.
#[derive(Debug, Clone)]
pub struct RepoProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Swapped whole by a reload; read by every request, which takes no
    /// lock and touches no shared count for it.
    upstream: ArcSwap<Upstream>,
    store: Store,
    /// Downloads in progress, by object hash: the coalescing lock.
    inflight: Inflight,
    /// Where download tasks run: the daemon's tracker, so shutdown drains them.
    tasks: TaskTracker,
    /// Checksums learnt from the metadata that passed through: a fetch of
    /// such a file is checked before it is committed.
    known: Known,
    /// Files each install pulled, until it reports done.
    pulls: pulls::Pulls,
    counters: Counters,
}

/// Counters for the status page and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Requests served from a committed file, after a 304 from the mirror
    /// too.
    pub hits: u64,
    /// Of those, hits served from the copy in memory, without the disk.
    pub memory_hits: u64,
    /// Small bodies held in memory now, the bytes they count for and the
    /// budget (see [`RepoConfig::memory_bytes`]).
    pub memory_files: u64,
    pub memory_bytes: u64,
    pub memory_max_bytes: u64,
    /// Copies pushed out of memory to stay within the budget (their files
    /// stay cached on disk).
    pub memory_evictions: u64,
    /// Requests that started a download.
    pub misses: u64,
    /// Requests that joined a download another client started.
    pub coalesced: u64,
    /// Requests served a stale copy because the mirror failed.
    pub stale: u64,
    /// Conditional requests the mirror answered 304.
    pub revalidated: u64,
    /// Requests served straight from upstream because the disk is full.
    pub passthrough: u64,
    /// File bodies downloaded from a mirror.
    pub downloads: u64,
    /// Requests sent to a mirror: downloads and revalidations (failover
    /// to another base URL within one is not counted again).
    pub upstream_fetches: u64,
    pub upstream_bytes: u64,
    /// Body bytes sent to clients.
    pub served_bytes: u64,
    /// Downloads served whole but not cached: the mirror was still writing
    /// the file, or it changed while it was fetched.
    pub uncommitted: u64,
    pub evictions: u64,
    /// Cached files found damaged on disk (cut short, rotted, unreadable
    /// header) and dropped instead of served; each is fetched again.
    pub damaged: u64,
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
    /// The cached copy, while a new generation of the repository's
    /// metadata is fetched behind it.
    Updating,
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
            CacheStatus::Updating => "updating",
            CacheStatus::Pass => "pass",
        }
    }
}

impl RepoProxy {
    /// Opens the cache (creating it) and discards temp files a crash left
    /// behind. Downloads run on `tasks`. Opening is synchronous; serving
    /// needs a tokio runtime. The checksums the cached metadata gives are
    /// read again in the background (on the runtime, when there is one).
    pub fn open(
        config: &RepoConfig,
        upstream: Arc<Upstream>,
        tasks: TaskTracker,
    ) -> Result<Self, Error> {
        let store = Store::open(
            &config.cache_dir,
            config.max_cache_bytes,
            config.memory_bytes,
        )?;
        let proxy = RepoProxy {
            inner: Arc::new(Inner {
                upstream: ArcSwap::new(upstream),
                store,
                inflight: Inflight::default(),
                tasks,
                known: Known::default(),
                pulls: pulls::Pulls::new(&config.cache_dir),
                counters: Counters::default(),
            }),
        };
        let inner = proxy.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || fetch::learn_from_cache(&inner))),
            Err(_) => fetch::learn_from_cache(&inner),
        }
        Ok(proxy)
    }

    /// Registers the cache's metric families in `registry`. They read the
    /// same counters as [`RepoProxy::stats`]: one counter per fact.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        metrics::register(&self.inner, registry);
    }

    /// Live reload of mirrors, proxy, timeouts and the size limits, built
    /// beforehand (see [`Upstream::new`]) so nothing here can fail.
    /// Downloads in progress finish with the settings they started with;
    /// `cache_dir` cannot change.
    pub fn reconfigure(&self, config: &RepoConfig, upstream: Arc<Upstream>) {
        self.inner.upstream.store(upstream);
        self.inner.store.set_max_bytes(config.max_cache_bytes);
        self.inner.store.set_memory_bytes(config.memory_bytes);
    }

    /// Downloads in flight now.
    pub fn downloads_in_flight(&self) -> usize {
        self.inner.inflight.len()
    }

    fn upstream(&self) -> Arc<Upstream> {
        self.inner.upstream.load_full()
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
        self.handle_with(&self.upstream(), mirror, path, req).await
    }

    /// [`RepoProxy::handle`] with the mirrors, office proxy and time-outs
    /// of `upstream`: the daemon passes the generation its request took, so
    /// a request never sees one profile set's routes and the next one's
    /// mirrors.
    pub async fn handle_with<B>(
        &self,
        upstream: &Arc<Upstream>,
        mirror: &str,
        path: &str,
        req: http::Request<B>,
    ) -> Response<Body> {
        match self.try_handle(upstream, mirror, path, &req).await {
            Ok(r) => r,
            // A server error is the appliance's or the mirror's fault: an
            // operator must see why (the front logs only its status).
            Err(e) if status_for(&e).is_server_error() => {
                tracing::warn!(mirror, path, error = %e, "repo request failed");
                error_response(&e)
            }
            Err(e) => {
                tracing::info!(mirror, path, error = %e, "repo request failed");
                error_response(&e)
            }
        }
    }

    async fn try_handle<B>(
        &self,
        upstream: &Arc<Upstream>,
        mirror: &str,
        path: &str,
        req: &http::Request<B>,
    ) -> Result<Response<Body>, Error> {
        let want = serve::check_request(req)?;
        if !upstream.has_mirror(mirror) {
            return Err(Error::UnknownMirror(mirror.to_string()));
        }
        let path = path::normalize(path)?;
        let source = fetch::obtain(
            &self.inner,
            upstream,
            mirror,
            &path,
            fetch::Reader::Response,
        )
        .await?;
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
        let (memory_files, memory_bytes, memory_max_bytes, memory_evictions) =
            self.inner.store.memory_usage();
        CacheStats {
            entries,
            bytes,
            max_bytes,
            hits: c.hits.get(),
            memory_hits: c.memory_hits.get(),
            memory_files,
            memory_bytes,
            memory_max_bytes,
            memory_evictions,
            misses: c.misses.get(),
            coalesced: c.coalesced.get(),
            stale: c.stale.get(),
            revalidated: c.not_modified.get(),
            passthrough: c.passthrough.get(),
            downloads: c.downloads.get(),
            upstream_fetches: c.upstream_requests.get(),
            upstream_bytes: c.upstream_bytes.get(),
            served_bytes: c.served_bytes.get(),
            uncommitted: c.uncommitted.get(),
            evictions: self.inner.store.evictions.load(Ordering::Relaxed),
            damaged: self.inner.store.damaged.total(),
            failures: c.failures_total(),
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
