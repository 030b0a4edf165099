//! The hyper server: one task per connection, every request routed, handed
//! to the [`Front`] and its answer (or error) turned into a response. The
//! same server runs on plain HTTP ([`serve_with`]) and on TLS
//! ([`serve_tls`]); each request knows its [`Channel`], and operator routes
//! are authorized with it and recorded for the audit log however they end.
//!
//! One LAN host cannot take the server down: connections are capped in
//! total (below the file-descriptor limit, with room for cache files,
//! upstream, TFTP and DHCP sockets) and per client address; a connection
//! over either cap is closed at once, counted, and logged once per address
//! per minute. A connection that sends no complete request head for
//! [`Limits::header_timeout`] — a slow header, or an idle keep-alive — is
//! closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::assets;
use crate::error::{self, ApiError, Body, Cause};
use crate::front::{
    Channel, Front, Loader, OperatorAct, Reply, RouteKind, array_body, lines_body, token_id,
};
use crate::route::{Access, Refusal, Route, route, serves_mirror_bytes, token};

/// How long in-flight requests may run after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Request bodies the API reads (a failure's reason, an adopt request)
/// are small; anything larger is refused before it is buffered.
const MAX_BODY: usize = 16 * 1024;

/// Answers one request that came over plain HTTP.
pub async fn handle<F, B>(front: &F, req: Request<B>, peer: SocketAddr) -> Response<Body>
where
    F: Front,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    handle_paced(front, req, peer, Channel::Http, None).await
}

/// Answers one request that came in on `channel`, the views paced per
/// address by `pacer`. An operator action is recorded for the audit log
/// whatever its answer, refusals included.
async fn handle_paced<F, B>(
    front: &F,
    req: Request<B>,
    peer: SocketAddr,
    channel: Channel,
    pacer: Option<&Pacer>,
) -> Response<Body>
where
    F: Front,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
    let path = req.uri().path().to_owned();
    // Its length only: a query may carry a build token.
    let query_len = req.uri().query().map_or(0, str::len);
    let method = req.method().clone();
    let route = route(&method, origin_form, &path);
    let kind = route.kind();
    let paced = match pacer {
        Some(p)
            if matches!(
                kind,
                RouteKind::Status | RouteKind::Metrics | RouteKind::Hosts
            ) =>
        {
            p.wait(peer.ip()).await
        }
        _ => Ok(()),
    };
    let mut response = match (paced, route.audited()) {
        (Err(e), _) => e.into_response(),
        (Ok(()), Some((action, target))) => {
            let token_id = bearer(&req).map(token_id);
            let result = match authorize(front, &route, &req, channel) {
                Ok(()) => operator(front, route, req, peer).await,
                Err(e) => Err(e),
            };
            front.record_operator(OperatorAct {
                peer: peer.ip(),
                token_id,
                action,
                target,
                error: result.as_ref().err().map(ToString::to_string),
            });
            reply(result)
        }
        (Ok(()), None) => match authorize(front, &route, &req, channel) {
            Err(e) => e.into_response(),
            Ok(()) => dispatch(front, route, req, peer).await,
        },
    };
    if serves_mirror_bytes(&path) {
        never_a_page(response.headers_mut());
    }
    front.observe(kind, response.status());
    let status = response.status().as_u16();
    match response.extensions_mut().remove::<Cause>() {
        Some(Cause(cause)) => warn!(%peer, %method, path, query_len, status, cause, "http"),
        None => info!(%peer, %method, path, query_len, status, "http"),
    }
    response
}

/// What `/repo/` and `/os/` answer comes from a mirror, which may be plain
/// HTTP or tampered with and send HTML: a browser must neither guess a
/// type from the bytes (`nosniff`) nor run their script as the
/// appliance's origin, where the status page keeps the operator token
/// (`sandbox`: a unique origin, no script). Installers and firmware read
/// bytes and ignore both.
fn never_a_page(headers: &mut header::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("sandbox"),
    );
}

/// The token in `Authorization: Bearer …`, if any.
fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn authorize<F: Front, B>(
    front: &F,
    route: &Route<'_>,
    req: &Request<B>,
    channel: Channel,
) -> Result<(), ApiError> {
    match route.access() {
        Access::Open | Access::Build => Ok(()),
        Access::Operator => front.authorize_operator(bearer(req), channel),
    }
}

/// The routes that change state or start downloads (and the cache
/// statistics that share their module), answered before they become a
/// response so the audit log gets their error as text.
async fn operator<F, B>(
    front: &F,
    route: Route<'_>,
    req: Request<B>,
    peer: SocketAddr,
) -> Result<Reply, ApiError>
where
    F: Front,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match route {
        Route::Rearm(mac) => front.rearm(mac, peer).await,
        Route::Power(mac, verb) => front.power(mac, verb, body(req).await?, peer).await,
        Route::Forget(mac) => front.forget(mac).await,
        Route::Adopt(mac) => front.adopt(mac, body(req).await?).await,
        Route::Cache(op) => front.cache(op).await,
        _ => Err(Refusal::NotFound.into()),
    }
}

async fn dispatch<F, B>(
    front: &F,
    route: Route<'_>,
    req: Request<B>,
    peer: SocketAddr,
) -> Response<Body>
where
    F: Front,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let query = req.uri().query().map(str::to_owned);
    let build_token = token(query.as_deref());
    match route {
        Route::Ipxe(mac) => text(front.boot_script(mac, peer).await),
        Route::Loader(name) => match front.loader(name, peer).await {
            Ok(loader) => loader_response(loader),
            Err(e) => e.into_response(),
        },
        Route::Kickstart(mac) => text(front.kickstart(mac, build_token.as_deref(), peer).await),
        Route::Report(mac, report) => match body(req).await {
            Ok(detail) => reply(
                front
                    .report(mac, report, build_token.as_deref(), detail, peer)
                    .await,
            ),
            Err(e) => e.into_response(),
        },
        Route::Hosts => reply(front.hosts().await),
        Route::Timeline(mac) => reply(front.timeline(mac).await),
        Route::InstallerLog(mac) => reply(front.installer_log(mac).await),
        Route::Discovered => reply(front.discovered().await),
        Route::DiscoveryReport(mac) => reply(
            front
                .discovery_report(mac, query.as_deref().unwrap_or_default(), peer)
                .await,
        ),
        Route::OsFile { os, path } => {
            let (parts, _) = req.into_parts();
            front
                .os_file(os, path, Request::from_parts(parts, ()), peer)
                .await
        }
        Route::Repo { mirror, path } => {
            let (parts, _) = req.into_parts();
            front
                .repo(mirror, path, Request::from_parts(parts, ()), peer)
                .await
        }
        Route::Rearm(_)
        | Route::Power(..)
        | Route::Forget(_)
        | Route::Adopt(_)
        | Route::Cache(_) => reply(operator(front, route, req, peer).await),
        Route::Audit => reply(front.audit().await),
        Route::Status => reply(front.status().await),
        Route::StatusJson => reply(
            front
                .status_json(query.as_deref().unwrap_or_default())
                .await,
        ),
        Route::Page => error::with_type(
            StatusCode::OK,
            error::full(assets::PAGE),
            "text/html; charset=utf-8",
        ),
        Route::Asset(name) => assets::asset(name),
        Route::Metrics => {
            // OpenMetrics to who asks for it (Prometheus does), the older
            // text format to everyone else (promtool, curl).
            let openmetrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            match front.metrics().await {
                Ok(Reply::OpenMetrics(text)) if !openmetrics => error::with_type(
                    StatusCode::OK,
                    error::full(crate::metrics::prometheus_text(&text)),
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                other => reply(other),
            }
        }
        Route::Refused(why) => ApiError::from(why).into_response(),
    }
}

/// The request body, whole, if it is at most [`MAX_BODY`] bytes.
async fn body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::BadRequest(format!("request body: {e} (at most {MAX_BODY} bytes)")))
}

fn text(result: Result<String, ApiError>) -> Response<Body> {
    reply(result.map(Reply::Text))
}

fn reply(result: Result<Reply, ApiError>) -> Response<Body> {
    match result {
        Ok(Reply::Text(body)) => error::text(StatusCode::OK, body),
        Ok(Reply::OpenMetrics(body)) => error::with_type(
            StatusCode::OK,
            error::full(body),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Ok(Reply::Html(body)) => error::with_type(
            StatusCode::OK,
            error::full(body),
            "text/html; charset=utf-8",
        ),
        Ok(Reply::Encoded { body, content_type }) => {
            error::with_type(StatusCode::OK, error::full(body), content_type)
        }
        Ok(Reply::Json(value)) => match serde_json::to_vec_pretty(&value) {
            Ok(bytes) => error::with_type(StatusCode::OK, error::full(bytes), "application/json"),
            Err(e) => ApiError::Internal(e.to_string()).into_response(),
        },
        Ok(Reply::JsonLines(lines)) => {
            error::with_type(StatusCode::OK, lines_body(lines), "application/x-ndjson")
        }
        Ok(Reply::JsonArray(items)) => {
            error::with_type(StatusCode::OK, array_body(items), "application/json")
        }
        Err(e) => e.into_response(),
    }
}

fn loader_response(loader: Loader) -> Response<Body> {
    use futures_util::TryStreamExt as _;
    let stream = tokio_util::io::ReaderStream::new(loader.file).map_ok(hyper::body::Frame::data);
    let mut resp = error::with_type(
        StatusCode::OK,
        http_body_util::StreamBody::new(stream).boxed_unsync(),
        "application/efi",
    );
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(loader.len),
    );
    resp
}

/// The heavy views (status, metrics, host lists and timelines) from one
/// address: at most this many a second on average, a burst of twice that.
/// A status page polls every two seconds and Prometheus every few; a
/// client past it waits its turn (up to [`PACE_WAIT`]) or is told 429, so
/// a flood of them from one address costs the daemon that rate, and the
/// boot scripts of every other address never queue behind it.
const VIEWS_PER_SECOND: u32 = 20;
const PACE_WAIT: Duration = Duration::from_secs(2);
/// Addresses whose pace is remembered, least recently seen forgotten.
const PACED_ADDRESSES: usize = 4096;

/// The per-address pace of the views.
#[derive(Debug)]
struct Pacer {
    flows: Mutex<kickstand_limit::Keyed<IpAddr>>,
    started: Instant,
    stats: Arc<ConnectionStats>,
}

impl Pacer {
    fn new(stats: Arc<ConnectionStats>) -> Pacer {
        Pacer {
            flows: Mutex::new(kickstand_limit::Keyed::new(
                kickstand_limit::Rate::per_second(VIEWS_PER_SECOND, 2 * VIEWS_PER_SECOND),
                PACED_ADDRESSES,
            )),
            started: Instant::now(),
            stats,
        }
    }

    async fn wait(&self, ip: IpAddr) -> Result<(), ApiError> {
        let admit = self
            .flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(ip, self.started.elapsed(), PACE_WAIT);
        match admit {
            kickstand_limit::Admit::Now => Ok(()),
            kickstand_limit::Admit::After(wait) => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            kickstand_limit::Admit::Refused => {
                self.stats.views_refused.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::TooMany(ip))
            }
        }
    }
}

/// How many connections the server keeps, and for how long an idle one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections, all clients together.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_per_client: usize,
    /// A request head must arrive within this long, on a new connection
    /// and between keep-alive requests alike.
    pub header_timeout: Duration,
}

impl Limits {
    pub const DEFAULT_PER_CLIENT: usize = 256;

    pub fn new(max_connections: usize, max_per_client: usize) -> Limits {
        Limits {
            max_connections: max_connections.max(1),
            max_per_client: max_per_client.max(1),
            header_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(4096, Limits::DEFAULT_PER_CLIENT)
    }
}

/// What the connection caps did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_per_client: AtomicU64,
    refused_total: AtomicU64,
    views_refused: AtomicU64,
}

impl ConnectionStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections taken since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed at once because their address had too many open.
    pub fn refused_per_client(&self) -> u64 {
        self.refused_per_client.load(Ordering::Relaxed)
    }
    /// Connections closed at once because the server had too many open.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }
    /// View requests refused (429) because their address was past its pace.
    pub fn views_refused(&self) -> u64 {
        self.views_refused.load(Ordering::Relaxed)
    }
}

impl ConnectionStats {
    /// Registers the connection families in `registry`, read from these
    /// counters at each scrape.
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut prometheus_client::registry::Registry,
    ) {
        registry.register_collector(Box::new(StatsCollector(self.clone())));
    }
}

#[derive(Debug)]
struct StatsCollector(Arc<ConnectionStats>);

impl prometheus_client::collector::Collector for StatsCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let s = &self.0;
        ConstGauge::new(s.open()).encode(encoder.encode_descriptor(
            "kickstand_http_connections_open",
            "HTTP connections open now",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(s.accepted()).encode(encoder.encode_descriptor(
            "kickstand_http_connections_accepted",
            "HTTP connections taken",
            None,
            MetricType::Counter,
        )?)?;
        let mut family = encoder.encode_descriptor(
            "kickstand_http_connections_refused",
            "HTTP connections closed at once by a connection cap, by cap",
            None,
            MetricType::Counter,
        )?;
        for (cap, n) in [
            ("per-client", s.refused_per_client()),
            ("total", s.refused_total()),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&[("cap", cap)])?)?;
        }
        ConstCounter::new(s.views_refused()).encode(encoder.encode_descriptor(
            "kickstand_http_views_refused",
            "status, metrics and host-view requests refused (429) because their address asked past its pace",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// A refusal is logged once per address per this long, not per connection.
const LOG_REFUSED_EVERY: Duration = Duration::from_secs(60);
/// Bound on the addresses remembered for that: a flood of sources empties
/// the table rather than growing it.
const MAX_REMEMBERED: usize = 4096;

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    PerClient,
    Total,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    logged: HashMap<IpAddr, Instant>,
}

/// The open-connection counts, shared with every connection's guard.
#[derive(Debug)]
struct Gate {
    limits: Limits,
    table: Mutex<Table>,
    stats: Arc<ConnectionStats>,
}

/// An admitted connection; dropping it frees its place.
struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.gate.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.by_client.remove(&self.ip);
            }
        }
        self.gate.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every update is a few integer steps: a panic cannot leave it torn.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, or says which cap refuses it (and
    /// whether to log that now).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, (Refused, bool)> {
        let mut t = self.lock();
        let from_ip = t.by_client.get(&ip).copied().unwrap_or(0);
        let refused = if from_ip >= self.limits.max_per_client {
            Some(Refused::PerClient)
        } else if t.total >= self.limits.max_connections {
            Some(Refused::Total)
        } else {
            None
        };
        if let Some(why) = refused {
            let counter = match why {
                Refused::PerClient => &self.stats.refused_per_client,
                Refused::Total => &self.stats.refused_total,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if t.logged.len() >= MAX_REMEMBERED {
                t.logged.clear();
            }
            let now = Instant::now();
            let log = match t.logged.get(&ip) {
                Some(at) if now.duration_since(*at) < LOG_REFUSED_EVERY => false,
                _ => {
                    t.logged.insert(ip, now);
                    true
                }
            };
            return Err((why, log));
        }
        t.total += 1;
        *t.by_client.entry(ip).or_insert(0) += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            gate: self.clone(),
            ip,
        })
    }
}

/// Serves HTTP/1.1 on `listener` with the default [`Limits`] until
/// `shutdown` fires.
pub async fn serve<F: Front>(
    listener: TcpListener,
    front: Arc<F>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, front, Limits::default(), Arc::default(), shutdown).await
}

/// Serves HTTP/1.1 on `listener` within `limits`, counting in `stats`,
/// until `shutdown` fires, then lets in-flight requests finish for a
/// bounded time.
pub async fn serve_with<F: Front>(
    listener: TcpListener,
    front: Arc<F>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listen(listener, None, front, limits, stats, shutdown).await
}

/// As [`serve_with`], over TLS: the operator's channel. A client gets
/// [`Limits::header_timeout`] for its handshake as for a request head.
pub async fn serve_tls<F: Front>(
    listener: TcpListener,
    tls: TlsAcceptor,
    front: Arc<F>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listen(listener, Some(tls), front, limits, stats, shutdown).await
}

async fn listen<F: Front>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    front: Arc<F>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let pacer = Arc::new(Pacer::new(stats.clone()));
    let gate = Arc::new(Gate {
        limits,
        table: Mutex::default(),
        stats,
    });
    let channel = if tls.is_some() {
        Channel::Https
    } else {
        Channel::Http
    };
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
        // An IPv4 client of a dual-stack listener (`::`) is an IPv4
        // address to everything past this point: its per-client cap, its
        // token binding, the family of the URLs it is sent.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let admitted = match gate.admit(peer.ip()) {
            Ok(a) => a,
            Err((why, log)) => {
                // Closed before a byte is read: it costs the descriptor
                // for a moment, nothing more.
                drop(stream);
                if log {
                    match why {
                        Refused::PerClient => warn!(
                            client = %peer.ip(),
                            limit = limits.max_per_client,
                            "http: too many connections from one address; refusing more (logged once a minute)"
                        ),
                        Refused::Total => warn!(
                            client = %peer.ip(),
                            limit = limits.max_connections,
                            "http: connection limit reached; refusing new connections (logged once a minute per address)"
                        ),
                    }
                }
                continue;
            }
        };
        // A response is a head and a body, often written apart: with Nagle
        // on, a small body waits for the client's delayed ACK of the head
        // (some 40 ms), which made a small cache hit cost that much.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let (front, pacer) = (front.clone(), pacer.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (front, pacer) = (front.clone(), pacer.clone());
            async move {
                Ok::<_, Infallible>(handle_paced(&*front, req, peer, channel, Some(&pacer)).await)
            }
        });
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let ended = match tls {
                None => connection(stream, service, limits, watcher).await,
                Some(tls) => {
                    match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, service, limits, watcher).await,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "https: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "https: no TLS handshake in time");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
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

/// One HTTP/1.1 connection over `io`, closed gracefully at shutdown.
async fn connection<I, S>(
    io: I,
    service: S,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Send + 'static,
    S::Future: Send,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_then_in_total_and_frees_on_drop() {
        let gate = Arc::new(Gate {
            limits: Limits::new(3, 2),
            table: Mutex::default(),
            stats: Arc::default(),
        });
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = gate.admit(a).expect("first from a");
        let _a2 = gate.admit(a).expect("second from a");
        assert_eq!(gate.admit(a).err(), Some((Refused::PerClient, true)));
        assert_eq!(
            gate.admit(a).err(),
            Some((Refused::PerClient, false)),
            "logged once a minute"
        );
        let _b1 = gate.admit(b).expect("another address is served");
        assert_eq!(gate.admit(b).err(), Some((Refused::Total, true)));
        drop(a1);
        let _a3 = gate.admit(a).expect("a place was freed");
        assert_eq!(gate.stats.open(), 3);
        assert_eq!(gate.stats.refused_per_client(), 2);
        assert_eq!(gate.stats.refused_total(), 1);
    }
}
