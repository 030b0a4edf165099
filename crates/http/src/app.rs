use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use kickstand_profiles::Mac;
use kickstand_profiles::model::UnknownPolicy;
use kickstand_render::{BootAction, RenderError, Site};
use kickstand_repo::{RepoProxy, WarmEvent, WarmOutcome, WarmTarget};
use kickstand_state::{Phase, StateStore};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::route::{CacheOp, Refusal, Report, Route, route};

/// Response bodies: small ones are buffered, repo files stream; an `Err`
/// mid-stream aborts the connection so a client never mistakes a broken
/// transfer for a whole file.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How long in-flight requests may run after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// The outcome of the last profile reload, shown on the status page.
#[derive(Debug, Clone, Default)]
pub enum ReloadStatus {
    #[default]
    Loaded,
    /// The last edit was rejected; the previous site is still in force.
    Rejected { errors: Vec<String> },
}

/// Everything the handlers read.
#[derive(Debug)]
pub struct App {
    site: ArcSwap<Site>,
    reload: Mutex<ReloadStatus>,
    states: StateStore,
    /// `None` on an appliance with no cache (the `check` and `render`
    /// commands build an `App` only to render).
    repo: Option<RepoProxy>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Metrics {
    ipxe: AtomicU64,
    kickstarts: AtomicU64,
    reports: AtomicU64,
    not_found: AtomicU64,
    refused: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_rejected: AtomicU64,
}

impl App {
    pub fn new(site: Site, states: StateStore, repo: Option<RepoProxy>) -> App {
        App {
            site: ArcSwap::from_pointee(site),
            reload: Mutex::default(),
            states,
            repo,
            metrics: Metrics::default(),
        }
    }

    pub fn repo(&self) -> Option<&RepoProxy> {
        self.repo.as_ref()
    }

    /// The site every new request will see.
    pub fn site(&self) -> Arc<Site> {
        self.site.load_full()
    }

    pub fn states(&self) -> &StateStore {
        &self.states
    }

    /// Puts a freshly validated site in force.
    pub fn install(&self, site: Site) {
        self.site.store(Arc::new(site));
        *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = ReloadStatus::Loaded;
        self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a rejected reload; the current site stays.
    pub fn reject(&self, errors: Vec<String>) {
        *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = ReloadStatus::Rejected { errors };
        self.metrics
            .reloads_rejected
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What a host's next boot script does.
    pub fn boot_action(&self, mac: &Mac) -> BootAction {
        self.states.get(&mac.to_string()).phase.into()
    }

    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body> {
        let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let response = match route(&method, origin_form, &path) {
            Route::Ipxe(mac) => self.ipxe(mac),
            Route::Loader(name) => self.loader(name).await,
            Route::Kickstart(mac) => self.kickstart(mac),
            Route::Report(mac, report) => self.report(mac, report, peer),
            Route::Hosts => self.hosts(),
            Route::Repo { mirror, path } => match &self.repo {
                Some(repo) => repo.handle(mirror, path, req).await,
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the repo proxy is not enabled on this appliance\n",
                ),
            },
            Route::Cache(op) => self.cache(op),
            Route::Status => self.status(),
            Route::Metrics => self.metrics(),
            Route::Refused(why) => self.refuse(why),
        };
        info!(%peer, %method, path, status = response.status().as_u16(), "http");
        response
    }

    fn ipxe(&self, mac: Mac) -> Response<Body> {
        let site = self.site();
        if site.snapshot.host(&mac).is_none() {
            return self.unknown_ipxe(&site, mac);
        }
        self.metrics.ipxe.fetch_add(1, Ordering::Relaxed);
        rendered(site.ipxe(&mac, self.boot_action(&mac)))
    }

    async fn loader(&self, name: &str) -> Response<Body> {
        let root = self.site().snapshot.appliance.tftp_root.clone();
        match tokio::fs::read(root.join(name)).await {
            Ok(bytes) => {
                let mut resp = Response::new(full(bytes));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/efi"),
                );
                resp
            }
            Err(_) => text(StatusCode::NOT_FOUND, "no such boot loader\n"),
        }
    }

    fn unknown_ipxe(&self, site: &Site, mac: Mac) -> Response<Body> {
        self.metrics.not_found.fetch_add(1, Ordering::Relaxed);
        match site.snapshot.appliance.dhcp.unknown {
            UnknownPolicy::LocalBoot => text(
                StatusCode::OK,
                &format!(
                    "#!ipxe\necho Kickstand: no profile for {mac}; booting the local disk\nexit\n"
                ),
            ),
            UnknownPolicy::Ignore => no_profile(mac),
        }
    }

    fn kickstart(&self, mac: Mac) -> Response<Body> {
        let site = self.site();
        if site.snapshot.host(&mac).is_none() {
            self.metrics.not_found.fetch_add(1, Ordering::Relaxed);
            return no_profile(mac);
        }
        self.metrics.kickstarts.fetch_add(1, Ordering::Relaxed);
        rendered(site.kickstart(&mac))
    }

    fn report(&self, mac: Mac, report: Report, peer: SocketAddr) -> Response<Body> {
        let site = self.site();
        let Some(host) = site.snapshot.host(&mac) else {
            self.metrics.not_found.fetch_add(1, Ordering::Relaxed);
            return no_profile(mac);
        };
        let phase = match report {
            Report::Installing => Phase::Installing,
            Report::Installed => Phase::Installed,
            Report::Rearm => Phase::New,
        };
        self.metrics.reports.fetch_add(1, Ordering::Relaxed);
        match self.states.set(&mac.to_string(), phase) {
            Ok(record) => {
                info!(%mac, hostname = host.hostname, ?phase, %peer, "host state");
                json(StatusCode::OK, &HostRow::new(&site, mac, record))
            }
            Err(e) => {
                warn!(%mac, error = %e, "could not record host state");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("could not record state: {e}\n"),
                )
            }
        }
    }

    fn hosts(&self) -> Response<Body> {
        let site = self.site();
        let rows: Vec<HostRow> = site
            .snapshot
            .hosts
            .keys()
            .map(|mac| HostRow::new(&site, *mac, self.states.get(&mac.to_string())))
            .collect();
        json(StatusCode::OK, &rows)
    }

    fn status(&self) -> Response<Body> {
        let site = self.site();
        let snap = &site.snapshot;
        let mut page = String::from("Kickstand\n=========\n\n");
        let _ = writeln!(page, "serving at   {}", snap.appliance.base_url());
        let _ = writeln!(page, "dhcp mode    {:?}", snap.appliance.dhcp.mode);
        let _ = writeln!(
            page,
            "profiles     {} file(s), {} OS, {} host(s)",
            snap.files.len(),
            snap.oses.len(),
            snap.hosts.len()
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
        if let Some(repo) = &self.repo {
            let s = repo.stats();
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
        }
        page.push_str("\nhosts\n");
        for (mac, host) in &snap.hosts {
            let phase = self.states.get(&mac.to_string()).phase;
            let _ = writeln!(
                page,
                "  {mac}  {:<16} {:<18} {phase:?}",
                host.hostname, host.os
            );
        }
        text(StatusCode::OK, &page)
    }

    fn cache(&self, op: CacheOp<'_>) -> Response<Body> {
        let Some(repo) = self.repo.clone() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the repo proxy is not enabled on this appliance\n",
            );
        };
        match op {
            CacheOp::Stats => {
                let s = repo.stats();
                let body = format!(
                    "entries {}\nbytes {}\nmax_bytes {}\nhits {}\nmisses {}\ncoalesced {}\nrevalidated {}\n\
                     passthrough {}\nupstream_fetches {}\nupstream_bytes {}\nevictions {}\nfailures {}\ndisk_full {}\n",
                    s.entries,
                    s.bytes,
                    s.max_bytes,
                    s.hits,
                    s.misses,
                    s.coalesced,
                    s.revalidated,
                    s.passthrough,
                    s.upstream_fetches,
                    s.upstream_bytes,
                    s.evictions,
                    s.failures,
                    s.disk_full
                );
                text(StatusCode::OK, &body)
            }
            CacheOp::Verify => line_stream(move |out| async move {
                match repo.verify().await {
                    Ok(r) => {
                        for key in &r.corrupt {
                            out(format!(
                                "FAILED {key}: sha256 mismatch; removed from the cache"
                            ));
                        }
                        for (repo, why) in &r.skipped {
                            out(format!("skipped {repo}: {why}"));
                        }
                        out(format!(
                            "verified {} file(s) in {} repo(s): {} ok, {} corrupt",
                            r.checked,
                            r.repos,
                            r.ok,
                            r.corrupt.len()
                        ));
                    }
                    Err(e) => out(format!("error: {e}")),
                }
            }),
            CacheOp::Warm(target) => {
                let targets = match warm_targets(&self.site().snapshot, target) {
                    Ok(t) => t,
                    Err(msg) => return text(StatusCode::NOT_FOUND, &format!("error: {msg}\n")),
                };
                line_stream(move |out| async move {
                    for t in targets {
                        out(format!("warming {}/{}", t.mirror, t.repo_path));
                        let progress = |ev: &WarmEvent| {
                            let outcome = match &ev.outcome {
                                WarmOutcome::AlreadyCached => "cached".to_owned(),
                                WarmOutcome::Fetched { bytes } => format!("fetched:{bytes}"),
                                WarmOutcome::Failed(e) => format!("failed:{e}"),
                                _ => "other".to_owned(),
                            };
                            out(format!(
                                "progress {}/{} {outcome} {}",
                                ev.done, ev.total, ev.path
                            ));
                        };
                        match repo.warm(&t, progress).await {
                            Ok(r) => {
                                for (path, why) in &r.failed {
                                    out(format!("FAILED {path}: {why}"));
                                }
                                out(format!(
                                    "done {}/{}: {} package(s), {} fetched ({} MiB), {} already cached, {} failed",
                                    t.mirror,
                                    t.repo_path,
                                    r.packages,
                                    r.fetched,
                                    r.fetched_bytes >> 20,
                                    r.already_cached,
                                    r.failed.len()
                                ));
                            }
                            Err(e) => out(format!("error: {}/{}: {e}", t.mirror, t.repo_path)),
                        }
                    }
                })
            }
        }
    }

    fn metrics(&self) -> Response<Body> {
        let m = &self.metrics;
        let site = self.site();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, help, value) in [
            (
                "kickstand_ipxe_scripts_total",
                "iPXE boot scripts served",
                get(&m.ipxe),
            ),
            (
                "kickstand_kickstarts_total",
                "kickstarts served",
                get(&m.kickstarts),
            ),
            (
                "kickstand_host_reports_total",
                "install state reports recorded",
                get(&m.reports),
            ),
            (
                "kickstand_unknown_host_requests_total",
                "requests for MACs without a profile",
                get(&m.not_found),
            ),
            (
                "kickstand_refused_requests_total",
                "requests refused (bad path, method, proxy use)",
                get(&m.refused),
            ),
            (
                "kickstand_reloads_total{result=\"ok\"}",
                "profile reloads",
                get(&m.reloads_ok),
            ),
            (
                "kickstand_reloads_total{result=\"rejected\"}",
                "profile reloads",
                get(&m.reloads_rejected),
            ),
            (
                "kickstand_hosts",
                "host profiles in force",
                site.snapshot.hosts.len() as u64,
            ),
        ]
        .into_iter()
        .chain(self.repo.iter().flat_map(repo_metrics))
        {
            let base = name.split('{').next().unwrap_or(name);
            if !out.contains(&format!("# HELP {base} ")) {
                let _ = writeln!(out, "# HELP {base} {help}");
            }
            let _ = writeln!(out, "{name} {value}");
        }
        text(StatusCode::OK, &out)
    }

    fn refuse(&self, why: Refusal) -> Response<Body> {
        self.metrics.refused.fetch_add(1, Ordering::Relaxed);
        match why {
            Refusal::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            Refusal::BadMac => text(
                StatusCode::BAD_REQUEST,
                "not a MAC address (expected 52:54:00:12:34:56)\n",
            ),
            Refusal::MethodNotAllowed => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            Refusal::NotAProxy => text(
                StatusCode::FORBIDDEN,
                "Kickstand is not an open proxy: only /repo/<mirror>/<path> of configured mirrors\n",
            ),
        }
    }
}

fn repo_metrics(repo: &RepoProxy) -> [(&'static str, &'static str, u64); 12] {
    let s = repo.stats();
    [
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
    ]
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
    fn new(site: &Site, mac: Mac, record: kickstand_state::Record) -> HostRow {
        let host = site.snapshot.host(&mac);
        HostRow {
            mac: mac.to_string(),
            hostname: host.map(|h| h.hostname.clone()).unwrap_or_default(),
            os: host.map(|h| h.os.clone()).unwrap_or_default(),
            groups: host.map(|h| h.groups.clone()).unwrap_or_default(),
            phase: record.phase,
            since: record.since,
            next_boot: record.phase.into(),
        }
    }
}

/// What `cache warm <target>` covers: every repo of an OS, or one
/// `<mirror>/<path>`.
fn warm_targets(
    snapshot: &kickstand_profiles::Snapshot,
    target: &str,
) -> Result<Vec<WarmTarget>, String> {
    if let Some(os) = snapshot.oses.get(target) {
        let mut targets = vec![WarmTarget::new(&os.mirror, &os.tree)];
        targets.extend(os.repos.iter().map(|r| WarmTarget::new(&r.mirror, &r.path)));
        return Ok(targets);
    }
    match target.split_once('/') {
        Some((mirror, path)) if snapshot.appliance.mirrors.contains_key(mirror) => {
            Ok(vec![WarmTarget::new(mirror, path)])
        }
        _ => Err(format!(
            "`{target}` is neither an OS nor <mirror>/<path> of a configured mirror"
        )),
    }
}

/// A text body fed line by line by `work`, for long operations whose
/// progress the caller watches.
fn line_stream<F, Fut>(work: F) -> Response<Body>
where
    F: FnOnce(Box<dyn Fn(String) + Send + Sync>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let out: Box<dyn Fn(String) + Send + Sync> = Box::new(move |line| drop(tx.send(line + "\n")));
    tokio::spawn(work(out));
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok(hyper::body::Frame::data(Bytes::from(line))), rx))
    });
    let mut resp = Response::new(http_body_util::StreamBody::new(frames).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn no_profile(mac: Mac) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        &format!(
            "no host profile for {mac}: Kickstand never sends an automated install to an unknown machine\n"
        ),
    )
}

fn rendered(result: Result<String, RenderError>) -> Response<Body> {
    match result {
        Ok(body) => text(StatusCode::OK, &body),
        Err(RenderError::UnknownHost(mac)) => no_profile(mac),
        Err(e) => {
            // Every host rendered when the site was built, so this is a bug,
            // not bad input; say so instead of serving half a script.
            warn!(error = %e, "render failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("render failed: {e}\n"),
            )
        }
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(full(body.to_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => {
            let mut resp = Response::new(full(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` fires, then lets
/// in-flight requests finish for a bounded time.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let app = app.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req, peer).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("http: connections still open after the drain deadline; closing them");
    }
    Ok(())
}
