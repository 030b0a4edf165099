//! Loopback peers for the repo proxy tests: a scriptable raw-TCP mirror (so
//! faults like short bodies and stalls are exact), a tiny forward proxy
//! (absolute-form and CONNECT, optional Basic auth), an HTTP front that
//! routes `/repo/<mirror>/<path>` to `RepoProxy::handle`, and a client;
//! `bed` starts the real nginx mirror bed of `tests/beds/mirror`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod bed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kickstand_profiles::model::Proxy;
use kickstand_repo::{RepoConfig, RepoProxy, Upstream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn blob(len: usize, seed: u64) -> Bytes {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body, optionally paced (chunk size, delay between chunks)
    /// and optionally chunked transfer-encoding. Answers 304 to a matching
    /// If-None-Match.
    File {
        body: Bytes,
        etag: Option<String>,
        pace: Option<(usize, Duration)>,
        chunked: bool,
    },
    Status(u16),
    Redirect(String),
    /// Content-Length of the whole body, then only `send` bytes and close.
    Truncate {
        body: Bytes,
        send: usize,
    },
    /// Chunked, `send` bytes, then close without the final chunk.
    TruncateChunked {
        body: Bytes,
        send: usize,
    },
    /// Content-Length of the whole body, `send` bytes, then silence.
    Stall {
        body: Bytes,
        send: usize,
    },
    /// Never answers.
    StallHeaders,
}

impl Reply {
    pub fn file(body: Bytes) -> Reply {
        Reply::File {
            body,
            etag: None,
            pace: None,
            chunked: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Mirror {
    pub addr: SocketAddr,
    pub routes: Arc<Mutex<HashMap<String, Reply>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// (path, when the last body byte was written)
    pub finished: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Mirror {
    pub async fn start() -> Mirror {
        Mirror::listen(None).await
    }

    /// The same mirror behind TLS (the test CA's leaf certificate).
    pub async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Mirror {
        Mirror::listen(Some(acceptor)).await
    }

    async fn listen(tls: Option<tokio_rustls::TlsAcceptor>) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let m = Mirror {
            addr: listener.local_addr().unwrap(),
            routes: Arc::default(),
            seen: Arc::default(),
            connections: Arc::default(),
            finished: Arc::default(),
        };
        let m2 = m.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                m2.connections.fetch_add(1, Ordering::SeqCst);
                let m3 = m2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = match tls {
                        None => m3.serve(s).await,
                        Some(acceptor) => match acceptor.accept(s).await {
                            Ok(stream) => m3.serve(stream).await,
                            Err(_) => Ok(()),
                        },
                    };
                });
            }
        });
        m
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Requests whose path is `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| target_path(&s.target) == path)
            .count()
    }

    pub fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        s: S,
    ) -> std::io::Result<()> {
        let mut r = BufReader::new(s);
        loop {
            let Some((line, headers)) = read_head(&mut r).await? else {
                return Ok(());
            };
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let method_is_head = method == "HEAD";
            self.seen.lock().unwrap().push(Seen {
                method,
                target: target.clone(),
                headers: headers.clone(),
            });
            let path = target_path(&target).to_string();
            let reply = self.routes.lock().unwrap().get(&path).cloned();
            let w = r.get_mut();
            match reply {
                None => {
                    w.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await?
                }
                Some(Reply::Status(code)) => {
                    w.write_all(
                        format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                    )
                    .await?
                }
                Some(Reply::Redirect(loc)) => {
                    w.write_all(
                        format!(
                            "HTTP/1.1 302 Found\r\nlocation: {loc}\r\ncontent-length: 0\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await?
                }
                Some(Reply::StallHeaders) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Some(Reply::Truncate { body, send }) => {
                    w.write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    )
                    .await?;
                    w.write_all(&body[..send]).await?;
                    w.flush().await?;
                    return Ok(());
                }
                Some(Reply::TruncateChunked { body, send }) => {
                    w.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await?;
                    w.write_all(format!("{:x}\r\n", send).as_bytes()).await?;
                    w.write_all(&body[..send]).await?;
                    w.write_all(b"\r\n").await?;
                    w.flush().await?;
                    return Ok(());
                }
                Some(Reply::Stall { body, send }) => {
                    w.write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    )
                    .await?;
                    w.write_all(&body[..send]).await?;
                    w.flush().await?;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Some(Reply::File {
                    body,
                    etag,
                    pace,
                    chunked,
                }) => {
                    let inm = headers
                        .iter()
                        .find(|(k, _)| k == "if-none-match")
                        .map(|(_, v)| v.clone());
                    if etag.is_some() && inm == etag {
                        w.write_all(b"HTTP/1.1 304 Not Modified\r\n\r\n").await?;
                        continue;
                    }
                    if method_is_head {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n",
                            body.len(),
                            etag.as_ref()
                                .map(|e| format!("etag: {e}\r\n"))
                                .unwrap_or_default()
                        );
                        w.write_all(head.as_bytes()).await?;
                        continue;
                    }
                    let mut head =
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-rpm\r\n".to_string();
                    if let Some(e) = &etag {
                        head.push_str(&format!("etag: {e}\r\n"));
                    }
                    if chunked {
                        head.push_str("transfer-encoding: chunked\r\n\r\n");
                    } else {
                        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                    }
                    w.write_all(head.as_bytes()).await?;
                    let (size, delay) = pace.unwrap_or((body.len().max(1), Duration::ZERO));
                    for chunk in body.chunks(size) {
                        if chunked {
                            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                                .await?;
                        }
                        w.write_all(chunk).await?;
                        if chunked {
                            w.write_all(b"\r\n").await?;
                        }
                        w.flush().await?;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                    }
                    if chunked {
                        w.write_all(b"0\r\n\r\n").await?;
                    }
                    w.flush().await?;
                    self.finished.lock().unwrap().push((path, Instant::now()));
                }
            }
        }
    }
}

/// `/a/b` of `http://host/a/b` or `/a/b`.
pub fn target_path(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(String, Vec<(String, String)>)>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Some((line.trim_end().to_string(), headers)))
}

/// A forward proxy: absolute-form requests and CONNECT tunnels, with an
/// optional required `Proxy-Authorization` value.
#[derive(Clone)]
pub struct FwdProxy {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub first_lines: Arc<Mutex<Vec<String>>>,
    pub auth_seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl FwdProxy {
    pub async fn start(require_auth: Option<&str>) -> FwdProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = FwdProxy {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            first_lines: Arc::default(),
            auth_seen: Arc::default(),
        };
        let p2 = p.clone();
        let require = require_auth.map(str::to_string);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                p2.connections.fetch_add(1, Ordering::SeqCst);
                let p3 = p2.clone();
                let require = require.clone();
                tokio::spawn(async move {
                    let _ = p3.serve(s, require).await;
                });
            }
        });
        p
    }

    async fn serve(&self, s: TcpStream, require: Option<String>) -> std::io::Result<()> {
        let mut r = BufReader::new(s);
        let Some((line, headers)) = read_head(&mut r).await? else {
            return Ok(());
        };
        self.first_lines.lock().unwrap().push(line.clone());
        let auth = headers
            .iter()
            .find(|(k, _)| k == "proxy-authorization")
            .map(|(_, v)| v.clone());
        self.auth_seen.lock().unwrap().push(auth.clone());
        if require.is_some() && auth != require {
            r.get_mut()
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"t\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        if method == "CONNECT" {
            let mut up = TcpStream::connect(target).await?;
            r.get_mut()
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            tokio::io::copy_bidirectional(&mut r, &mut up).await?;
            return Ok(());
        }
        let rest = target.strip_prefix("http://").unwrap_or("");
        let hostport = &rest[..rest.find('/').unwrap_or(rest.len())];
        let mut up = TcpStream::connect(hostport).await?;
        let mut head = format!("{line}\r\n");
        for (k, v) in &headers {
            if k != "proxy-authorization" {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        up.write_all(head.as_bytes()).await?;
        // Later requests on this connection go to the same host (the client
        // pools per host), so plain piping is enough for tests.
        tokio::io::copy_bidirectional(&mut r, &mut up).await?;
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// An HTTP front routing `/repo/<mirror>/<path>` to the repo proxy.
pub async fn front(proxy: RepoProxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let proxy = proxy.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let rest = path.strip_prefix("/repo/").unwrap_or("");
                        let (mirror, file) = rest.split_once('/').unwrap_or((rest, ""));
                        Ok::<_, std::convert::Infallible>(proxy.handle(mirror, file, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A config as the appliance's would be: mirror URLs and the proxy go
/// through the profile crate's validation.
pub fn config(
    dir: &std::path::Path,
    mirrors: &[(&str, Vec<String>)],
    proxy: Option<Proxy>,
) -> RepoConfig {
    let mut c = RepoConfig::new(dir.join("cache"), 1 << 30);
    for (name, urls) in mirrors {
        let urls = urls
            .iter()
            .map(|u| u.parse().unwrap_or_else(|e| panic!("mirror {u}: {e}")))
            .collect();
        c.mirrors.insert(name.to_string(), urls);
    }
    c.proxy = proxy;
    c.timeouts.connect = Duration::from_secs(2);
    c.timeouts.headers = Duration::from_secs(2);
    c.timeouts.stall = Duration::from_secs(1);
    c
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, or the error that cut it off.
    pub body: Result<Bytes, String>,
    /// When the first body bytes arrived.
    pub first_byte: Option<Instant>,
}

impl Got {
    pub fn bytes(&self) -> Bytes {
        self.body
            .clone()
            .unwrap_or_else(|e| panic!("body failed: {e}"))
    }
    pub fn cache(&self) -> &str {
        self.headers
            .get("x-kickstand-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    request_slow(addr, method, path, headers, Duration::ZERO).await
}

/// A request on a fresh connection; `delay` sleeps between body frames to
/// make a slow reader.
pub async fn request_slow(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    delay: Duration,
) -> Got {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut buf = Vec::new();
    let mut first_byte = None;
    let result = loop {
        match body.frame().await {
            None => break Ok(Bytes::from(std::mem::take(&mut buf))),
            Some(Err(e)) => break Err(e.to_string()),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if !d.is_empty() && first_byte.is_none() {
                        first_byte = Some(Instant::now());
                    }
                    buf.extend_from_slice(&d);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    };
    Got {
        status: parts.status,
        headers: parts.headers,
        body: result,
        first_byte,
    }
}

/// Sends raw bytes and returns the whole raw answer (until close or 2 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// Files committed to the cache (object files, not temp files).
pub fn cached_objects(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(shards) = std::fs::read_dir(dir.join("cache/objects")) {
        for shard in shards.flatten() {
            for f in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(f.path());
            }
        }
    }
    out
}

/// Waits (up to 5 s) until a download has been committed to the cache and
/// returns the first committed object.
pub async fn committed_object(dir: &std::path::Path) -> std::path::PathBuf {
    for _ in 0..500 {
        if let Some(obj) = cached_objects(dir).pop() {
            return obj;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing was committed to the cache in {}", dir.display());
}

pub fn temp_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("cache/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A repo proxy over `mirrors`, plus its front address.
pub async fn setup(
    dir: &std::path::Path,
    mirrors: &[(&str, Vec<String>)],
    proxy: Option<Proxy>,
) -> (RepoProxy, SocketAddr) {
    let rp = open(&config(dir, mirrors, proxy));
    let addr = front(rp.clone()).await;
    (rp, addr)
}

/// A CA (PEM) and a TLS acceptor for `localhost` signed by it.
pub fn test_ca() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The office proxy at `url`, validated as the config's would be.
pub fn proxy(url: impl AsRef<str>, credentials: Option<(&str, &str)>) -> Proxy {
    let (user, pass) = credentials.unzip();
    Proxy::parse(url.as_ref(), user, pass).unwrap_or_else(|e| panic!("proxy: {e}"))
}

/// Opens the repo proxy on its own upstream and task tracker.
pub fn open(cfg: &RepoConfig) -> RepoProxy {
    let upstream = Arc::new(Upstream::new(cfg).expect("upstream"));
    RepoProxy::open(cfg, upstream, tokio_util::task::TaskTracker::new()).expect("open")
}

/// The DER certificates of a PEM file, as the profile crate reads `mirror_ca_file`.
pub fn ca_roots(path: &std::path::Path) -> Vec<Vec<u8>> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).expect("read CA");
    CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.expect("PEM certificate").to_vec())
        .collect()
}
