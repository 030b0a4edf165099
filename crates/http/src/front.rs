//! What the HTTP front asks of the daemon: one method per use case. The
//! daemon answers each call from the generation in force, so a request
//! sees one generation from start to end; this crate never holds the live
//! state itself.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{Response, StatusCode};
use kickstand_profiles::Mac;

use crate::error::{ApiError, Body};
use crate::route::{CacheOp, PowerVerb, Report};

/// A boot loader opened under the TFTP root, streamed to the client.
#[derive(Debug)]
pub struct Loader {
    pub file: tokio::fs::File,
    pub len: u64,
}

/// A successful answer to an API call.
pub enum Reply {
    /// One JSON document.
    Json(serde_json::Value),
    /// Plain text.
    Text(String),
    /// Metrics in the OpenMetrics text format (what Prometheus scrapes).
    OpenMetrics(String),
    /// A page for a browser.
    Html(String),
    /// A document already encoded, shared by every reader of it (the
    /// status document, rebuilt once for all who poll it).
    Encoded {
        body: Bytes,
        content_type: &'static str,
    },
    /// A long operation's progress, one JSON document per line, streamed
    /// as it happens (`kickstand cache warm`).
    JsonLines(BoxStream<'static, serde_json::Value>),
    /// A JSON array too big to hold whole (every host of a 5,000-host
    /// rack), written element by element as the stream yields them: the
    /// same bytes `Json` sends for the whole array. An error ends the body
    /// early, so the client sees a broken transfer, never a short array.
    JsonArray(BoxStream<'static, std::io::Result<serde_json::Value>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Reply::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Reply::OpenMetrics(t) => f.debug_tuple("OpenMetrics").field(t).finish(),
            Reply::Html(t) => f.debug_tuple("Html").field(t).finish(),
            Reply::Encoded { body, content_type } => f
                .debug_struct("Encoded")
                .field("bytes", &body.len())
                .field("content_type", content_type)
                .finish(),
            Reply::JsonLines(_) => f.write_str("JsonLines(..)"),
            Reply::JsonArray(_) => f.write_str("JsonArray(..)"),
        }
    }
}

/// Which listener a request came in on. Only HTTPS carries the operator
/// token: on plain HTTP anyone on the rack LAN can read it off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Installers, firmware and iPXE (which cannot be assumed to do TLS),
    /// and the read-only views.
    Http,
    /// The operator's channel: everything HTTP serves, and operator routes.
    Https,
}

/// An operator route as it was asked for and how it ended: one row of
/// the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAct {
    pub peer: IpAddr,
    /// An id of the token presented ([`token_id`]), never the token;
    /// `None` when none came.
    pub token_id: Option<String>,
    /// `rearm`, `adopt`, `forget`, `cache-warm`, `cache-verify`.
    pub action: &'static str,
    pub target: String,
    /// `None`: done (a cache operation: started); the error it got otherwise.
    pub error: Option<String>,
}

/// The first 8 hex digits of the token's SHA-256: enough to tell which
/// token did what, useless for presenting it.
pub fn token_id(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The route a request took, for counting (`/metrics`) — never a path an
/// outsider chose, so label values stay few.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    BootScript,
    Loader,
    Kickstart,
    Report,
    /// Operator actions: rearm, adopt.
    Operator,
    /// Host views: list, timeline, installer log, discovered machines.
    Hosts,
    Discovery,
    Repo,
    Cache,
    Status,
    Metrics,
    Refused,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::BootScript => "boot-script",
            RouteKind::Loader => "loader",
            RouteKind::Kickstart => "kickstart",
            RouteKind::Report => "report",
            RouteKind::Operator => "operator",
            RouteKind::Hosts => "hosts",
            RouteKind::Discovery => "discovery",
            RouteKind::Repo => "repo",
            RouteKind::Cache => "cache",
            RouteKind::Status => "status",
            RouteKind::Metrics => "metrics",
            RouteKind::Refused => "refused",
        }
    }
}

/// The daemon's side of every route. Build tokens are checked by the
/// daemon (only the host state knows them); the operator token is checked
/// by [`Front::authorize_operator`] before an operator route is called.
pub trait Front: Send + Sync + 'static {
    /// `GET /boot/<mac>.ipxe`: the host's iPXE script, as its boot
    /// decision makes it.
    fn boot_script(
        &self,
        mac: Mac,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// `GET /boot/<file>`: a boot loader from the TFTP root, resolved the
    /// way TFTP resolves it (no path out of the root, symlinks included).
    fn loader(
        &self,
        file: &str,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Loader, ApiError>> + Send;

    /// `GET /ks/<mac>?token=…`.
    fn kickstart(
        &self,
        mac: Mac,
        token: Option<&str>,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// `POST /api/hosts/<mac>/<report>?token=…`; `detail` is the request
    /// body (the reason of a `failed`), bounded.
    fn report(
        &self,
        mac: Mac,
        report: Report,
        token: Option<&str>,
        detail: Bytes,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// Whether `presented`, on `channel`, is the operator's; operator
    /// routes are called only after this said yes.
    fn authorize_operator(&self, presented: Option<&str>, channel: Channel)
    -> Result<(), ApiError>;

    /// An operator action was asked for (and done, or refused): for the
    /// audit log. Never waits for the disk.
    fn record_operator(&self, act: OperatorAct);

    /// `GET /api/audit` (operator): the newest operator actions.
    fn audit(&self) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `POST /api/hosts/<mac>/rearm` (operator).
    fn rearm(
        &self,
        mac: Mac,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `POST /api/hosts/<mac>/power/<verb>` (operator): `body` is JSON
    /// (`{"pxe": true, "yes": true}`) or empty.
    fn power(
        &self,
        mac: Mac,
        verb: PowerVerb,
        body: Bytes,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /api/hosts`.
    fn hosts(&self) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /api/hosts/<mac>/timeline`: events and the diagnosis.
    fn timeline(&self, mac: Mac) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /api/hosts/<mac>/log`: the installer's log.
    fn installer_log(&self, mac: Mac) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /api/discovered`.
    fn discovered(&self) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /api/discover/<mac>?…`: what iPXE reports of a machine with no
    /// profile; `query` is the raw query string.
    fn discovery_report(
        &self,
        mac: Mac,
        query: &str,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `POST /api/discovered/<mac>/adopt` (operator): `body` is JSON.
    fn adopt(&self, mac: Mac, body: Bytes) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `POST /api/discovered/<mac>/forget`, or with `None`
    /// `POST /api/discovered/clear` (operator).
    fn forget(&self, mac: Option<Mac>) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET|HEAD /os/<os>/<path>`: an OS boot file from the repo cache,
    /// answered whole like [`Front::repo`] (404 for any other path).
    fn os_file(
        &self,
        os: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// `GET|HEAD /repo/<mirror>/<path>`: the repo proxy answers whole,
    /// errors included. `req` carries the method and headers.
    fn repo(
        &self,
        mirror: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// `/api/cache/…`.
    fn cache(&self, op: CacheOp<'_>) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /status`: text for a terminal.
    fn status(&self) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /api/status`: everything the status page shows, in one JSON
    /// document (the page polls it; it never asks per host). `query` may
    /// ask for one page of the hosts.
    fn status_json(&self, query: &str) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// `GET /metrics`, Prometheus text.
    fn metrics(&self) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// Every request, once answered.
    fn observe(&self, route: RouteKind, status: StatusCode);
}

pub(crate) fn lines_body(lines: BoxStream<'static, serde_json::Value>) -> Body {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt;
    let frames = lines.map(|value| {
        let mut line = serde_json::to_vec(&value).unwrap_or_else(|e| {
            // A Value always serialises; keep the stream whole regardless.
            format!("{{\"event\":\"error\",\"message\":\"{e}\"}}").into_bytes()
        });
        line.push(b'\n');
        Ok(hyper::body::Frame::data(Bytes::from(line)))
    });
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames))
}

/// The body of a `Reply::JsonArray`: `[`, each element pretty-printed one
/// level in, `,` between them, `]` — what `serde_json::to_vec_pretty` makes
/// of the whole array, one chunk per element.
pub(crate) fn array_body(items: BoxStream<'static, std::io::Result<serde_json::Value>>) -> Body {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt;
    let chunks = futures_util::stream::unfold(Some((items, true)), |state| async move {
        let (mut items, first) = state?;
        match items.next().await {
            Some(Ok(value)) => Some((array_element(&value, first), Some((items, false)))),
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((
                Ok(Bytes::from_static(if first { b"[]" } else { b"\n]" })),
                None,
            )),
        }
    });
    let frames = chunks.map(|chunk| chunk.map(hyper::body::Frame::data));
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames))
}

/// One element with what goes before it. JSON strings carry no raw
/// newlines, so indenting every line indents the element and nothing in it.
fn array_element(value: &serde_json::Value, first: bool) -> std::io::Result<Bytes> {
    let pretty = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    let mut chunk = String::from(if first { "[\n" } else { ",\n" });
    for (i, line) in pretty.lines().enumerate() {
        if i > 0 {
            chunk.push('\n');
        }
        chunk.push_str("  ");
        chunk.push_str(line);
    }
    Ok(Bytes::from(chunk))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;
    use serde_json::json;

    use super::array_body;

    async fn streamed(items: Vec<serde_json::Value>) -> Vec<u8> {
        let stream = futures_util::stream::iter(items.into_iter().map(Ok)).boxed();
        let body = array_body(stream).collect().await;
        body.map(|b| b.to_bytes().to_vec()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_streamed_array_is_the_array_pretty_printed_whole() {
        let host = |n: u32| {
            json!({"hostname": format!("n{n}"), "groups": [], "power": null,
            "last_event": {"kind": "a\nb", "detail": {"x": [1, 2]}}})
        };
        for n in [0, 1, 3] {
            let items: Vec<_> = (0..n).map(host).collect();
            let whole = serde_json::to_vec_pretty(&items).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&streamed(items).await),
                String::from_utf8_lossy(&whole),
                "{n} element(s)"
            );
        }
    }
}
