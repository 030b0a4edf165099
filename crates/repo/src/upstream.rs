//! The upstream client: hyper's pooled HTTP/1.1 client over a connector that
//! reaches mirrors through the office proxy (absolute-form for http, CONNECT +
//! rustls for https) or directly, plus redirects and failover between bases.
//! A parent appliance ([`MirrorKind::Appliance`]) is always reached
//! directly: it sits on the site's network, which the office proxy (there
//! to reach the internet) may not even allow.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use kickstand_profiles::model::{MirrorKind, MirrorUrl, Proxy};

use crate::Error;
use crate::config::{Mirrors, RepoConfig, Timeouts};
use crate::path::RepoPath;

/// Validators of the cached copy, for a conditional GET.
#[derive(Debug, Clone, Default)]
pub(crate) struct Validators {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

/// What the mirror answered.
#[derive(Debug)]
pub(crate) enum Fetched {
    NotModified,
    Full {
        url: String,
        response: Response<Incoming>,
    },
}

/// One generation of upstream settings: the mirror table, the office proxy
/// and the TLS roots, with the pooled client that uses them. Built once per
/// accepted config (the daemon builds it with the rest of a generation, so
/// `check` fails where `serve` would); `RepoProxy::reconfigure` swaps it.
#[derive(Debug)]
pub struct Upstream {
    /// How mirrors are reached: through the office proxy when there is one.
    mirror_route: Route,
    /// How parent appliances are reached: directly.
    appliance_route: Route,
    pub(crate) mirrors: Mirrors,
    pub(crate) timeouts: Timeouts,
    pub(crate) revalidate_after: Duration,
    max_redirects: usize,
}

impl Upstream {
    /// Fails only when an extra CA certificate is not valid X.509: every
    /// other setting was validated with the profiles.
    pub fn new(cfg: &RepoConfig) -> Result<Upstream, Error> {
        let tls = TlsConnector::from(Arc::new(tls_config(&cfg.extra_roots)?));
        let proxy = cfg.proxy.as_ref().map(ProxyTarget::new);
        Ok(Upstream {
            mirror_route: Route::new(proxy, tls.clone(), cfg.timeouts.connect),
            appliance_route: Route::new(None, tls, cfg.timeouts.connect),
            mirrors: Mirrors::new(&cfg.mirrors),
            timeouts: cfg.timeouts,
            revalidate_after: cfg.revalidate_after,
            max_redirects: cfg.max_redirects,
        })
    }

    pub(crate) fn has_mirror(&self, name: &str) -> bool {
        self.mirrors.by_name.contains_key(name)
    }

    /// GET `path` from `mirror`, trying its base URLs in order; connect
    /// errors, timeouts and 5xx move on to the next base.
    pub(crate) async fn fetch(
        &self,
        mirror: &str,
        path: &RepoPath,
        cond: &Validators,
    ) -> Result<Fetched, Error> {
        self.request(Method::GET, mirror, path, cond).await
    }

    /// HEAD `path` on `mirror` (redirects and failover as for GET): what
    /// the mirror says about the file now, to compare with a download.
    pub(crate) async fn head(&self, mirror: &str, path: &RepoPath) -> Result<HeaderMap, Error> {
        match self
            .request(Method::HEAD, mirror, path, &Validators::default())
            .await?
        {
            Fetched::Full { response, .. } => Ok(response.headers().clone()),
            Fetched::NotModified => Err(Error::UpstreamBody("unexpected 304 to HEAD".into())),
        }
    }

    async fn request(
        &self,
        method: Method,
        mirror: &str,
        path: &RepoPath,
        cond: &Validators,
    ) -> Result<Fetched, Error> {
        let bases = self
            .mirrors
            .by_name
            .get(mirror)
            .ok_or_else(|| Error::UnknownMirror(mirror.to_string()))?;
        let wire = path.to_wire();
        let mut last = None;
        for base in bases {
            let url = base.url_for(&wire);
            match self.fetch_url(self.route(base), &method, url, cond).await {
                Ok(f) => return Ok(f),
                Err(e) if e.fails_over() => {
                    tracing::warn!(mirror, error = %e, "upstream failed, trying next base");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::UnknownMirror(mirror.to_string())))
    }

    fn route(&self, base: &MirrorUrl) -> &Route {
        match base.kind {
            MirrorKind::Mirror => &self.mirror_route,
            MirrorKind::Appliance => &self.appliance_route,
        }
    }

    async fn fetch_url(
        &self,
        route: &Route,
        method: &Method,
        mut url: String,
        cond: &Validators,
    ) -> Result<Fetched, Error> {
        for _hop in 0..=self.max_redirects {
            let response = self.send(route, method, &url, cond).await?;
            let status = response.status();
            if status == StatusCode::NOT_MODIFIED
                && (cond.etag.is_some() || cond.last_modified.is_some())
            {
                return Ok(Fetched::NotModified);
            }
            if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
                return Err(Error::ProxyAuth);
            }
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Error::UpstreamStatus {
                        url: url.clone(),
                        status,
                    })?;
                let next = resolve_location(&url, location)
                    .ok_or_else(|| Error::RedirectRefused(location.to_string()))?;
                if !self.mirrors.redirect_allowed(&next) {
                    return Err(Error::RedirectRefused(next.to_string()));
                }
                tracing::debug!(from = %url, to = %next, "following redirect");
                url = next.into();
                continue;
            }
            if status != StatusCode::OK {
                return Err(Error::UpstreamStatus { url, status });
            }
            return Ok(Fetched::Full { url, response });
        }
        Err(Error::TooManyRedirects(self.max_redirects))
    }

    async fn send(
        &self,
        route: &Route,
        method: &Method,
        url: &str,
        cond: &Validators,
    ) -> Result<Response<Incoming>, Error> {
        let uri: Uri = url.parse().map_err(|_| Error::Connect {
            url: url.to_string(),
            reason: "bad URL".into(),
        })?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(
                header::USER_AGENT,
                concat!("kickstand/", env!("CARGO_PKG_VERSION")),
            );
        if uri.scheme_str() == Some("http")
            && let Some(auth) = &route.proxy_auth
        {
            req = req.header(header::PROXY_AUTHORIZATION, auth.clone());
        }
        if let Some(etag) = &cond.etag {
            req = req.header(header::IF_NONE_MATCH, etag.as_str());
        }
        if let Some(lm) = &cond.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, lm.as_str());
        }
        let req = req.body(Empty::new()).map_err(|e| Error::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        match tokio::time::timeout(
            self.timeouts.headers + self.timeouts.connect,
            route.client.request(req),
        )
        .await
        {
            Err(_) => Err(Error::Timeout("waiting for response headers")),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(classify_client_error(url, &e)),
        }
    }
}

fn classify_client_error(url: &str, err: &hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>()
            && let Some(ce) = io.get_ref().and_then(|i| i.downcast_ref::<ConnectError>())
        {
            return match ce {
                ConnectError::ProxyAuth => Error::ProxyAuth,
                ConnectError::Timeout => Error::Timeout("connecting"),
                other => Error::Connect {
                    url: url.to_string(),
                    reason: other.to_string(),
                },
            };
        }
        source = s.source();
    }
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    Error::Connect {
        url: url.to_string(),
        reason,
    }
}

/// Resolves a `Location` against the URL that answered with it, as RFC
/// 3986 says (`../` and `./` segments included).
pub(crate) fn resolve_location(base: &str, location: &str) -> Option<url::Url> {
    url::Url::parse(base).ok()?.join(location.trim()).ok()
}

fn tls_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (n, der) in extra_roots.iter().enumerate() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| Error::Config(format!("mirror_ca_file: certificate {}: {e}", n + 1)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One way out: a pooled client over a connector, through the office proxy
/// or not.
#[derive(Debug)]
struct Route {
    client: Client<Connector, Empty<Bytes>>,
    /// `Proxy-Authorization` for absolute-form requests: only when the
    /// route goes through the office proxy and it wants credentials.
    proxy_auth: Option<HeaderValue>,
}

impl Route {
    fn new(proxy: Option<ProxyTarget>, tls: TlsConnector, connect_timeout: Duration) -> Route {
        let proxy_auth = proxy.as_ref().and_then(|p| p.auth.clone());
        let connector = Connector {
            proxy: proxy.map(Arc::new),
            tls,
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(connector);
        Route { client, proxy_auth }
    }
}

/// The office proxy as the connector uses it.
#[derive(Debug, Clone)]
struct ProxyTarget {
    host: String,
    port: u16,
    /// `Proxy-Authorization: Basic …`, sent on absolute-form requests and
    /// on CONNECT.
    auth: Option<HeaderValue>,
}

impl ProxyTarget {
    fn new(proxy: &Proxy) -> ProxyTarget {
        use base64::Engine as _;
        let auth = proxy.credentials.as_ref().and_then(|c| {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            // Base64 is always a valid header value.
            let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        ProxyTarget {
            host: proxy.host.clone(),
            port: proxy.port,
            auth,
        }
    }
}

/// Why the connector could not produce a connection.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("office proxy demands authentication (407)")]
    ProxyAuth,
    #[error("office proxy refused CONNECT: {0}")]
    ProxyRefused(String),
    #[error("connect timed out")]
    Timeout,
    #[error("unsupported URL {0}")]
    BadUri(String),
}

fn connect_error(e: ConnectError) -> io::Error {
    io::Error::other(e)
}

#[derive(Clone)]
struct Connector {
    proxy: Option<Arc<ProxyTarget>>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            match tokio::time::timeout(this.connect_timeout, this.connect(uri)).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(connect_error(ConnectError::Timeout)),
            }
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> io::Result<Stream> {
        let bad = || connect_error(ConnectError::BadUri(uri.to_string()));
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let host = uri
            .host()
            .ok_or_else(bad)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = match &self.proxy {
            Some(p) => TcpStream::connect((p.host.as_str(), p.port)).await?,
            None => TcpStream::connect((host.as_str(), port)).await?,
        };
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(Stream::Plain {
                tcp,
                proxied: self.proxy.is_some(),
            });
        }
        let mut tcp = tcp;
        if let Some(p) = &self.proxy {
            connect_tunnel(&mut tcp, &host, port, p.auth.as_ref()).await?;
        }
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| bad())?;
        let tls = self.tls.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// Opens a CONNECT tunnel on `tcp` and consumes the proxy's response head.
///
/// Written here rather than with hyper-util's `Tunnel`: its error type is
/// not nameable outside hyper-util, so a 407 could not become
/// [`Error::ProxyAuth`] without matching message text, and it drops the
/// proxy's status line, which is what an operator needs to read when the
/// office proxy refuses a mirror.
async fn connect_tunnel(
    tcp: &mut TcpStream,
    host: &str,
    port: u16,
    auth: Option<&HeaderValue>,
) -> io::Result<()> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(a) = auth {
        head.push_str("Proxy-Authorization: ");
        head.push_str(a.to_str().unwrap_or(""));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    // The server speaks second in TLS, so nothing follows the proxy's head
    // and reading byte-wise up to the blank line consumes exactly the head.
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 || tcp.read(&mut byte).await? == 0 {
            return Err(connect_error(ConnectError::ProxyRefused(
                "malformed or truncated response".into(),
            )));
        }
        buf.push(byte[0]);
    }
    let status_line =
        String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)])
            .to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    match code {
        "200" => Ok(()),
        "407" => Err(connect_error(ConnectError::ProxyAuth)),
        _ => Err(connect_error(ConnectError::ProxyRefused(status_line))),
    }
}

/// A connection to the proxy or a mirror.
#[derive(Debug)]
enum Stream {
    Plain { tcp: TcpStream, proxied: bool },
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            // `proxy(true)` keeps the absolute-form request target.
            Stream::Plain { proxied, .. } => Connected::new().proxy(*proxied),
            Stream::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_location;

    #[test]
    fn locations() {
        let b = "http://m:8080/centos/9/os/x.rpm";
        let table = [
            ("https://other/y", "https://other/y"),
            ("//m2/z", "http://m2/z"),
            ("/abs/p", "http://m:8080/abs/p"),
            ("rel.rpm", "http://m:8080/centos/9/os/rel.rpm"),
            ("../../8/os/x.rpm", "http://m:8080/centos/8/os/x.rpm"),
            ("./y.rpm", "http://m:8080/centos/9/os/y.rpm"),
        ];
        for (loc, want) in table {
            assert_eq!(
                resolve_location(b, loc).map(String::from).as_deref(),
                Some(want),
                "{loc}"
            );
        }
    }
}
