//! The live state as each protocol crate sees it: [`Front`] for HTTP,
//! [`Boot`] for ProxyDHCP, [`Source`] for TFTP. The boot script rule is
//! written once ([`Live::boot_script`]) and serves HTTP and TFTP alike.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Response, StatusCode};
use http_body_util::BodyExt as _;
use kickstand_dhcp::{Boot, HostStatus};
use kickstand_http::route::{CacheOp, Report};
use kickstand_http::{ApiError, Body, Front, Loader, Reply, RouteKind};
use kickstand_profiles::{Mac, urls};
use kickstand_render::{BootAction, RenderError};
use kickstand_state::Phase;
use serde::Serialize;
use tracing::{info, warn};

use crate::cache::{self, CacheEvent};
use crate::generation::{BootDecision, Generation};
use crate::live::{Live, ReloadStatus};

impl Live {
    /// A machine's iPXE script, over HTTP or TFTP: its boot decision made
    /// into a script. A machine that is to be ignored gets none.
    pub(crate) fn boot_script(&self, mac: Mac) -> Result<String, ApiError> {
        let generation = self.current();
        let site = &generation.site;
        let rendered = match self.boot_for(&generation, mac) {
            BootDecision::Install => site.ipxe(&mac, BootAction::Install),
            BootDecision::LocalDisk => site.ipxe(&mac, BootAction::LocalDisk),
            BootDecision::UnknownLocalBoot => site.unknown_ipxe(&mac),
            BootDecision::Ignore => {
                self.counters
                    .unknown_host_requests
                    .fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::NoProfile(mac));
            }
        };
        self.counters.boot_scripts.fetch_add(1, Ordering::Relaxed);
        rendered.map_err(render_error)
    }
}

fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::UnknownHost(mac) => ApiError::NoProfile(mac),
        e => {
            // Every host rendered when the generation was built, so this is
            // a bug, not bad input; say so instead of serving half a script.
            warn!(error = %e, "render failed");
            ApiError::Internal(format!("render failed: {e}"))
        }
    }
}

impl Boot for Live {
    fn context(&self) -> Arc<kickstand_dhcp::Context> {
        self.current().dhcp.clone()
    }

    async fn host(&self, mac: Mac) -> HostStatus {
        match self.boot_for(&self.current(), mac) {
            BootDecision::Install | BootDecision::LocalDisk | BootDecision::UnknownLocalBoot => {
                HostStatus::Netboot
            }
            BootDecision::Ignore => HostStatus::Unknown,
        }
    }
}

impl kickstand_tftp::Source for Live {
    /// Asked per request, so a reload that moves `tftp.root` takes effect
    /// for the next transfer.
    fn root(&self) -> std::path::PathBuf {
        self.current().appliance().tftp_root.clone()
    }

    /// `boot/<mac>.ipxe`, for iPXE builds without HTTP: the same script the
    /// HTTP route serves.
    fn generated(&self, path: &str) -> Option<Bytes> {
        let mac = urls::parse_boot_script_name(path)?.ok()?;
        self.boot_script(mac).ok().map(Bytes::from)
    }
}

impl Front for Live {
    async fn boot_script(&self, mac: Mac, _peer: SocketAddr) -> Result<String, ApiError> {
        Live::boot_script(self, mac)
    }

    async fn loader(&self, file: &str) -> Result<Loader, ApiError> {
        let root = self.current().appliance().tftp_root.clone();
        let not_found = || ApiError::NotFound("no such boot loader".into());
        // TFTP's own rules, so the two protocols refuse the same names.
        let name = kickstand_tftp::normalize(file.as_bytes()).map_err(|_| not_found())?;
        let (file, len) =
            tokio::task::spawn_blocking(move || kickstand_tftp::path::open_file(&root, &name))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|_| not_found())?;
        Ok(Loader {
            file: tokio::fs::File::from_std(file),
            len,
        })
    }

    async fn kickstart(&self, mac: Mac, _peer: SocketAddr) -> Result<String, ApiError> {
        let generation = self.current();
        if generation.snapshot().host(&mac).is_none() {
            self.counters
                .unknown_host_requests
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::NoProfile(mac));
        }
        self.counters.kickstarts.fetch_add(1, Ordering::Relaxed);
        generation.site.kickstart(&mac).map_err(render_error)
    }

    async fn report(&self, mac: Mac, report: Report, peer: SocketAddr) -> Result<Reply, ApiError> {
        let generation = self.current();
        let Some(host) = generation.snapshot().host(&mac) else {
            self.counters
                .unknown_host_requests
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::NoProfile(mac));
        };
        let phase = match report {
            Report::Installing => Phase::Installing,
            Report::Installed => Phase::Installed,
            Report::Rearm => Phase::New,
        };
        self.counters.reports.fetch_add(1, Ordering::Relaxed);
        let record = self.states.set(&mac.to_string(), phase).map_err(|e| {
            warn!(%mac, error = %e, "could not record host state");
            ApiError::Internal(format!("could not record state: {e}"))
        })?;
        info!(%mac, hostname = host.hostname, ?phase, %peer, "host state");
        json(&HostRow::new(&generation, mac, record))
    }

    async fn hosts(&self) -> Result<Reply, ApiError> {
        let generation = self.current();
        let rows: Vec<HostRow> = generation
            .snapshot()
            .hosts
            .keys()
            .map(|mac| HostRow::new(&generation, *mac, self.states.get(&mac.to_string())))
            .collect();
        json(&rows)
    }

    async fn repo(&self, mirror: &str, path: &str, req: http::Request<()>) -> Response<Body> {
        self.repo
            .handle(mirror, path, req)
            .await
            .map(|body| body.boxed_unsync())
    }

    async fn cache(&self, op: CacheOp<'_>) -> Result<Reply, ApiError> {
        let repo = self.repo.clone();
        match op {
            CacheOp::Stats => json(&repo.stats()),
            CacheOp::Verify => Ok(events(cache::verify(repo, &self.tasks))),
            CacheOp::Warm(target) => {
                let targets = cache::warm_targets(self.current().snapshot(), target)
                    .map_err(ApiError::NotFound)?;
                Ok(events(cache::warm(repo, targets, &self.tasks)))
            }
        }
    }

    async fn status(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Text(self.status_page()))
    }

    async fn metrics(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Text(self.metrics_text()))
    }

    fn observe(&self, route: RouteKind, _status: StatusCode) {
        if route == RouteKind::Refused {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A stream of cache events as the JSON lines the CLI reads.
fn events(stream: futures_util::stream::BoxStream<'static, CacheEvent>) -> Reply {
    Reply::JsonLines(
        stream
            .map(|event| serde_json::to_value(event).unwrap_or_default())
            .boxed(),
    )
}

fn json<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(value)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Debug, Serialize)]
struct HostRow {
    mac: String,
    hostname: String,
    os: String,
    groups: Vec<String>,
    phase: Phase,
    since: u64,
    next_boot: BootAction,
}

impl HostRow {
    fn new(generation: &Generation, mac: Mac, record: kickstand_state::Record) -> HostRow {
        let host = generation.snapshot().host(&mac);
        let next_boot = match generation.boot_for(mac, record.phase) {
            BootDecision::Install => BootAction::Install,
            _ => BootAction::LocalDisk,
        };
        HostRow {
            mac: mac.to_string(),
            hostname: host.map(|h| h.hostname.clone()).unwrap_or_default(),
            os: host.map(|h| h.os.clone()).unwrap_or_default(),
            groups: host.map(|h| h.groups.clone()).unwrap_or_default(),
            phase: record.phase,
            since: record.since,
            next_boot,
        }
    }
}

impl Live {
    fn status_page(&self) -> String {
        let generation = self.current();
        let snap = generation.snapshot();
        let mut page = String::from("Kickstand\n=========\n\n");
        let _ = writeln!(page, "serving at   {}", generation.urls().base());
        let _ = writeln!(page, "dhcp mode    {}", snap.appliance.dhcp.mode.as_str());
        let _ = writeln!(
            page,
            "profiles     {} file(s), {} OS, {} host(s); generation {} loaded {}",
            snap.files.len(),
            snap.oses.len(),
            snap.hosts.len(),
            generation.id,
            humantime::format_rfc3339_seconds(generation.loaded_at)
        );
        match self.reload_status() {
            ReloadStatus::Loaded => page.push_str("last reload  ok\n"),
            ReloadStatus::Rejected { errors } => {
                page.push_str(
                    "last reload  REJECTED — the previous profiles are still in force:\n",
                );
                for e in errors {
                    let _ = writeln!(page, "  {e}");
                }
            }
        }
        let s = self.repo.stats();
        let _ = writeln!(
            page,
            "cache        {} file(s), {} of {} MiB; {} hit(s), {} download(s), {} failure(s){}",
            s.entries,
            s.bytes >> 20,
            s.max_bytes >> 20,
            s.hits,
            s.upstream_fetches,
            s.failures,
            if s.disk_full {
                "; DISK FULL: passing through"
            } else {
                ""
            }
        );
        page.push_str("\nhosts\n");
        for (mac, host) in &snap.hosts {
            let _ = writeln!(
                page,
                "  {mac}  {:<16} {:<18} {:?}",
                host.hostname,
                host.os,
                self.phase(*mac)
            );
        }
        page
    }

    fn metrics_text(&self) -> String {
        let c = &self.counters;
        let get = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        let s = self.repo.stats();
        let hosts = self.current().snapshot().hosts.len() as u64;
        let mut out = String::new();
        for (name, help, value) in [
            (
                "kickstand_ipxe_scripts_total",
                "iPXE boot scripts served",
                get(&c.boot_scripts),
            ),
            (
                "kickstand_kickstarts_total",
                "kickstarts served",
                get(&c.kickstarts),
            ),
            (
                "kickstand_host_reports_total",
                "install state reports recorded",
                get(&c.reports),
            ),
            (
                "kickstand_unknown_host_requests_total",
                "requests for MACs without a profile",
                get(&c.unknown_host_requests),
            ),
            (
                "kickstand_refused_requests_total",
                "requests refused (bad path, method, proxy use)",
                get(&c.refused),
            ),
            (
                "kickstand_reloads_total{result=\"ok\"}",
                "profile reloads",
                get(&c.reloads_ok),
            ),
            (
                "kickstand_reloads_total{result=\"rejected\"}",
                "profile reloads",
                get(&c.reloads_rejected),
            ),
            ("kickstand_hosts", "host profiles in force", hosts),
            (
                "kickstand_cache_hits_total",
                "repo files served from the cache",
                s.hits,
            ),
            (
                "kickstand_cache_misses_total",
                "repo files that started a download",
                s.misses,
            ),
            (
                "kickstand_cache_coalesced_total",
                "requests that joined a download in progress",
                s.coalesced,
            ),
            (
                "kickstand_cache_revalidations_total",
                "conditional requests to a mirror",
                s.revalidated,
            ),
            (
                "kickstand_cache_passthrough_total",
                "files served without caching (disk full)",
                s.passthrough,
            ),
            (
                "kickstand_upstream_fetches_total",
                "downloads from mirrors",
                s.upstream_fetches,
            ),
            (
                "kickstand_upstream_bytes_total",
                "bytes downloaded from mirrors",
                s.upstream_bytes,
            ),
            (
                "kickstand_upstream_failures_total",
                "failed downloads",
                s.failures,
            ),
            (
                "kickstand_cache_evictions_total",
                "files evicted from the cache",
                s.evictions,
            ),
            ("kickstand_cache_entries", "files in the cache", s.entries),
            ("kickstand_cache_bytes", "bytes in the cache", s.bytes),
            ("kickstand_cache_max_bytes", "cache size limit", s.max_bytes),
        ] {
            let base = name.split('{').next().unwrap_or(name);
            if !out.contains(&format!("# HELP {base} ")) {
                let _ = writeln!(out, "# HELP {base} {help}");
            }
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
