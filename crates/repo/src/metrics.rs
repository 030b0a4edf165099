//! The repo proxy's counters: one set, as `prometheus-client` metrics, read
//! both by [`crate::RepoProxy::stats`] (status page, `cache stats`) and by a
//! Prometheus registry ([`crate::RepoProxy::register_metrics`]), so the two
//! can never disagree. What is counted is what happened to a request: a
//! file served from disk after the mirror answered 304 is a hit, not a
//! download.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::Error;
use crate::inflight::Inflight;
use crate::store::Store;

/// Why a download failed, as a metric label: few values, never a URL.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Could not connect, TLS, CONNECT refused, proxy auth.
    Connect,
    Timeout,
    /// The mirror answered an error status.
    Status,
    /// Fewer (or more) bytes than announced, or the connection broke.
    Truncated,
    /// The bytes did not match the checksum the metadata gives.
    Checksum,
    /// A `repomd.xml` whose records the mirror could not serve.
    Generation,
    /// The cache's own disk.
    Disk,
    Other,
}

impl FailureKind {
    pub(crate) const ALL: [FailureKind; 8] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Status,
        FailureKind::Truncated,
        FailureKind::Checksum,
        FailureKind::Generation,
        FailureKind::Disk,
        FailureKind::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Status => "status",
            FailureKind::Truncated => "truncated",
            FailureKind::Checksum => "checksum",
            FailureKind::Generation => "generation",
            FailureKind::Disk => "disk",
            FailureKind::Other => "other",
        }
    }

    pub(crate) fn of(e: &Error) -> FailureKind {
        match e {
            Error::Shared(e) => FailureKind::of(e),
            Error::Connect { .. }
            | Error::ProxyAuth
            | Error::RedirectRefused(_)
            | Error::TooManyRedirects(_) => FailureKind::Connect,
            Error::Timeout(_) => FailureKind::Timeout,
            Error::UpstreamStatus { .. } => FailureKind::Status,
            Error::UpstreamBody(_) | Error::Incomplete { .. } => FailureKind::Truncated,
            Error::Checksum(_) => FailureKind::Checksum,
            Error::Generation { .. } => FailureKind::Generation,
            Error::Io(_) | Error::DiskFull => FailureKind::Disk,
            _ => FailureKind::Other,
        }
    }
}

impl EncodeLabelValue for FailureKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
}

/// Every counter of the repo proxy.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests served from a committed file (after a 304 too).
    pub(crate) hits: Counter,
    /// Of those, served from the copy in memory.
    pub(crate) memory_hits: Counter,
    /// Requests that started a download.
    pub(crate) misses: Counter,
    /// Requests that joined a download another request started.
    pub(crate) coalesced: Counter,
    /// Requests served straight from the mirror (disk full).
    pub(crate) passthrough: Counter,
    /// Requests served a stale copy because the mirror failed.
    pub(crate) stale: Counter,
    /// Requests sent to a mirror (conditional or not; HEAD checks and
    /// failover within one download not counted again).
    pub(crate) upstream_requests: Counter,
    /// Conditional requests sent to a mirror.
    pub(crate) revalidations: Counter,
    /// Of those, answered 304: the cached copy stands.
    pub(crate) not_modified: Counter,
    /// Bodies fetched from a mirror (a 200 that started a download).
    pub(crate) downloads: Counter,
    /// Downloads served whole but not committed: still being written on
    /// the mirror, or changed while they were fetched.
    pub(crate) uncommitted: Counter,
    pub(crate) upstream_bytes: Counter,
    /// Body bytes sent to clients, from the cache or a download.
    pub(crate) served_bytes: Counter,
    pub(crate) failures: Family<Failure, Counter>,
}

impl Counters {
    pub(crate) fn failed(&self, e: &Error) {
        self.failures
            .get_or_create(&Failure {
                kind: FailureKind::of(e),
            })
            .inc();
    }

    pub(crate) fn failures_total(&self) -> u64 {
        FailureKind::ALL
            .iter()
            .map(|&kind| self.failures.get_or_create(&Failure { kind }).get())
            .sum()
    }
}

/// Reads the cache's size and downloads in flight at scrape time.
#[derive(Debug)]
pub(crate) struct Usage {
    pub(crate) inner: Arc<crate::Inner>,
}

impl Usage {
    fn store(&self) -> &Store {
        &self.inner.store
    }
    fn inflight(&self) -> &Inflight {
        &self.inner.inflight
    }
}

impl Collector for Usage {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (files, bytes, max) = self.store().usage();
        let (memory_files, memory_bytes, memory_max, memory_evictions) =
            self.store().memory_usage();
        let evictions = self
            .store()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, value, kind) in [
            (
                "kickstand_cache_files",
                "files in the cache",
                files,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_bytes",
                "bytes in the cache",
                bytes,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_max_bytes",
                "the cache's size limit",
                max,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_memory_files",
                "small cached files whose body is also held in memory",
                memory_files,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_memory_bytes",
                "bytes the bodies held in memory count for",
                memory_bytes,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_memory_max_bytes",
                "the budget of bodies held in memory",
                memory_max,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_downloads_in_flight",
                "downloads from mirrors running now",
                self.inflight().len() as u64,
                MetricType::Gauge,
            ),
            (
                "kickstand_cache_disk_full",
                "1 while the cache's disk is full and files pass through uncached",
                u64::from(self.store().disk_full()),
                MetricType::Gauge,
            ),
        ] {
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, kind)?)?;
        }
        let damaged = &self.store().damaged;
        let mut family = encoder.encode_descriptor(
            "kickstand_cache_damaged",
            "cached files found damaged on disk and dropped (fetched again), by kind",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in [
            ("header", &damaged.header),
            ("size", &damaged.size),
            ("checksum", &damaged.checksum),
        ] {
            let labels = [("kind", kind)];
            prometheus_client::metrics::counter::ConstCounter::new(
                n.load(std::sync::atomic::Ordering::Relaxed),
            )
            .encode(family.encode_family(&labels)?)?;
        }
        prometheus_client::metrics::counter::ConstCounter::new(evictions).encode(
            encoder.encode_descriptor(
                "kickstand_cache_evictions",
                "files evicted from the cache to stay under its limit",
                None,
                MetricType::Counter,
            )?,
        )?;
        prometheus_client::metrics::counter::ConstCounter::new(memory_evictions).encode(
            encoder.encode_descriptor(
                "kickstand_cache_memory_evictions",
                "bodies pushed out of memory to stay within its budget (still cached on disk)",
                None,
                MetricType::Counter,
            )?,
        )?;
        Ok(())
    }
}

/// Registers the counters (shared, not copied) and the usage collector.
pub(crate) fn register(inner: &Arc<crate::Inner>, registry: &mut Registry) {
    let c = &inner.counters;
    let counters: [(&str, &str, &Counter); 13] = [
        (
            "kickstand_cache_upstream_requests",
            "requests sent to mirrors (downloads and revalidations)",
            &c.upstream_requests,
        ),
        (
            "kickstand_cache_hits",
            "repo requests served from the cache (304-revalidated included)",
            &c.hits,
        ),
        (
            "kickstand_cache_memory_hits",
            "repo requests served from a body held in memory (part of the hits)",
            &c.memory_hits,
        ),
        (
            "kickstand_cache_misses",
            "repo requests that started a download",
            &c.misses,
        ),
        (
            "kickstand_cache_coalesced",
            "repo requests that joined a download in progress",
            &c.coalesced,
        ),
        (
            "kickstand_cache_passthrough",
            "repo requests served from the mirror uncached (disk full)",
            &c.passthrough,
        ),
        (
            "kickstand_cache_stale",
            "repo requests served a stale copy because the mirror failed",
            &c.stale,
        ),
        (
            "kickstand_cache_revalidations",
            "conditional requests sent to a mirror",
            &c.revalidations,
        ),
        (
            "kickstand_cache_not_modified",
            "conditional requests the mirror answered 304",
            &c.not_modified,
        ),
        (
            "kickstand_cache_downloads",
            "file bodies downloaded from mirrors",
            &c.downloads,
        ),
        (
            "kickstand_cache_uncommitted",
            "downloads served but not cached (still being written upstream, or changed mid-download)",
            &c.uncommitted,
        ),
        (
            "kickstand_cache_upstream_bytes",
            "body bytes downloaded from mirrors",
            &c.upstream_bytes,
        ),
        (
            "kickstand_cache_served_bytes",
            "body bytes sent to repo clients",
            &c.served_bytes,
        ),
    ];
    for (name, help, counter) in counters {
        registry.register(name, help, counter.clone());
    }
    for kind in FailureKind::ALL {
        // Every kind shows, at 0 until it happens.
        let _ = c.failures.get_or_create(&Failure { kind });
    }
    registry.register(
        "kickstand_cache_upstream_failures",
        "failed downloads, by kind",
        c.failures.clone(),
    );
    registry.register_collector(Box::new(Usage {
        inner: inner.clone(),
    }));
}
