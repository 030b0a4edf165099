//! The hyper server: one task per connection, every request routed, handed
//! to the [`Front`] and its answer (or error) turned into a response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::assets;
use crate::error::{self, ApiError, Body};
use crate::front::{Front, Loader, Reply, lines_body};
use crate::route::{Access, Route, route, token};

/// How long in-flight requests may run after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Request bodies the API reads (a failure's reason, an adopt request)
/// are small; anything larger is refused before it is buffered.
const MAX_BODY: usize = 16 * 1024;

/// Answers one request.
pub async fn handle<F, B>(front: &F, req: Request<B>, peer: SocketAddr) -> Response<Body>
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
    let response = match authorize(front, &route, &req) {
        Err(e) => e.into_response(),
        Ok(()) => dispatch(front, route, req, peer).await,
    };
    front.observe(kind, response.status());
    info!(%peer, %method, path, query_len, status = response.status().as_u16(), "http");
    response
}

fn authorize<F: Front, B>(front: &F, route: &Route<'_>, req: &Request<B>) -> Result<(), ApiError> {
    match route.access() {
        Access::Open | Access::Build => Ok(()),
        Access::Operator => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            front.authorize_operator(bearer)
        }
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
        Route::Rearm(mac) => reply(front.rearm(mac, peer).await),
        Route::Hosts => reply(front.hosts().await),
        Route::Timeline(mac) => reply(front.timeline(mac).await),
        Route::InstallerLog(mac) => reply(front.installer_log(mac).await),
        Route::Discovered => reply(front.discovered().await),
        Route::DiscoveryReport(mac) => reply(
            front
                .discovery_report(mac, query.as_deref().unwrap_or_default(), peer)
                .await,
        ),
        Route::Adopt(mac) => match body(req).await {
            Ok(body) => reply(front.adopt(mac, body).await),
            Err(e) => e.into_response(),
        },
        Route::Repo { mirror, path } => {
            let (parts, _) = req.into_parts();
            front
                .repo(mirror, path, Request::from_parts(parts, ()), peer)
                .await
        }
        Route::Cache(op) => reply(front.cache(op).await),
        Route::Status => reply(front.status().await),
        Route::StatusJson => reply(front.status_json().await),
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
        Ok(Reply::Json(value)) => match serde_json::to_vec_pretty(&value) {
            Ok(bytes) => error::with_type(StatusCode::OK, error::full(bytes), "application/json"),
            Err(e) => ApiError::Internal(e.to_string()).into_response(),
        },
        Ok(Reply::JsonLines(lines)) => {
            error::with_type(StatusCode::OK, lines_body(lines), "application/x-ndjson")
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

/// Serves HTTP/1.1 on `listener` until `shutdown` fires, then lets
/// in-flight requests finish for a bounded time.
pub async fn serve<F: Front>(
    listener: TcpListener,
    front: Arc<F>,
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
        let front = front.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(handle(&*front, req, peer).await) }
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
