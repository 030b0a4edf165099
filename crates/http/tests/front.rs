//! The HTTP front in process: `serve` on port 0, a real HTTP/1.1 client
//! (hyper's), and a small [`Front`] that answers from fixed data and records
//! what it was asked. What is tested is this crate's part: routing, the one
//! error mapping, streamed bodies, refusals, counting and shutdown.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kickstand_http::route::{CacheOp, PowerVerb, Report};
use kickstand_http::{
    ApiError, Body, Channel, Front, Loader, OperatorAct, Reply, RouteKind, serve, token_id,
};
use kickstand_profiles::Mac;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const KNOWN: Mac = Mac([0x52, 0x54, 0, 0x10, 0, 1]);

#[derive(Default)]
struct Fixed {
    loader_dir: Option<tempfile::TempDir>,
    asked: Mutex<Vec<String>>,
    observed: Mutex<Vec<(RouteKind, u16)>>,
    acts: Mutex<Vec<OperatorAct>>,
    /// Lines the warm stream sends; it waits for `go` between them.
    go: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>>>,
}

impl Fixed {
    fn ask(&self, what: String) {
        self.asked.lock().unwrap().push(what);
    }
}

impl Front for Fixed {
    async fn boot_script(&self, mac: Mac, peer: SocketAddr) -> Result<String, ApiError> {
        self.ask(format!("boot {mac} from {}", peer.ip()));
        if mac == KNOWN {
            Ok("#!ipxe\nexit\n".into())
        } else {
            Err(ApiError::NoProfile(mac))
        }
    }

    async fn loader(&self, file: &str, _peer: SocketAddr) -> Result<Loader, ApiError> {
        let dir = self.loader_dir.as_ref().unwrap();
        let f = tokio::fs::File::open(dir.path().join(file))
            .await
            .map_err(|_| ApiError::NotFound("no such boot loader".into()))?;
        let len = f.metadata().await.unwrap().len();
        Ok(Loader { file: f, len })
    }

    async fn kickstart(
        &self,
        mac: Mac,
        token: Option<&str>,
        _peer: SocketAddr,
    ) -> Result<String, ApiError> {
        self.ask(format!("kickstart {mac} token {token:?}"));
        Err(ApiError::NoProfile(mac))
    }

    async fn report(
        &self,
        mac: Mac,
        report: Report,
        token: Option<&str>,
        detail: Bytes,
        _peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        self.ask(format!(
            "report {mac} {report:?} token {token:?} detail {:?}",
            String::from_utf8_lossy(&detail)
        ));
        Ok(Reply::Json(serde_json::json!({"mac": mac.to_string()})))
    }

    fn authorize_operator(
        &self,
        presented: Option<&str>,
        channel: Channel,
    ) -> Result<(), ApiError> {
        assert_eq!(channel, Channel::Http, "serve() is plain HTTP");
        match presented {
            Some("operator-secret") => Ok(()),
            _ => Err(ApiError::Forbidden("operator token needed".into())),
        }
    }

    fn record_operator(&self, act: OperatorAct) {
        self.acts.lock().unwrap().push(act);
    }

    async fn audit(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Json(serde_json::json!([])))
    }

    async fn rearm(&self, mac: Mac, _peer: SocketAddr) -> Result<Reply, ApiError> {
        self.ask(format!("rearm {mac}"));
        Ok(Reply::Json(serde_json::json!({"mac": mac.to_string()})))
    }

    async fn power(
        &self,
        mac: Mac,
        verb: PowerVerb,
        body: Bytes,
        _peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        self.ask(format!(
            "power {mac} {} {}",
            verb.as_str(),
            String::from_utf8_lossy(&body)
        ));
        Ok(Reply::Json(serde_json::json!({"mac": mac.to_string()})))
    }

    async fn timeline(&self, mac: Mac) -> Result<Reply, ApiError> {
        Ok(Reply::Text(format!("timeline of {mac}\n")))
    }

    async fn installer_log(&self, mac: Mac) -> Result<Reply, ApiError> {
        Err(ApiError::NotFound(format!(
            "no installer log for {mac} yet"
        )))
    }

    async fn discovered(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Json(serde_json::json!([])))
    }

    async fn discovery_report(
        &self,
        mac: Mac,
        query: &str,
        _peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        self.ask(format!("discovery {mac} {query}"));
        Ok(Reply::Text("#!ipxe\n".into()))
    }

    async fn adopt(&self, mac: Mac, body: Bytes) -> Result<Reply, ApiError> {
        self.ask(format!("adopt {mac} {}", String::from_utf8_lossy(&body)));
        Ok(Reply::Json(serde_json::json!({"mac": mac.to_string()})))
    }

    async fn forget(&self, mac: Option<Mac>) -> Result<Reply, ApiError> {
        self.ask(format!("forget {mac:?}"));
        Ok(Reply::Json(serde_json::json!({"forgotten": 1})))
    }

    async fn hosts(&self) -> Result<Reply, ApiError> {
        Err(ApiError::Internal("the disk is on fire".into()))
    }

    async fn os_file(
        &self,
        os: &str,
        path: &str,
        req: Request<()>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        self.ask(format!("os-file {} {os} {path}", req.method()));
        Response::new(
            http_body_util::Full::new(Bytes::from_static(b"shim"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }

    async fn repo(
        &self,
        mirror: &str,
        path: &str,
        req: Request<()>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        self.ask(format!("repo {} {mirror} {path}", req.method()));
        let mut resp = Response::new(
            http_body_util::Full::new(Bytes::from_static(b"rpm"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        resp.headers_mut()
            .insert("x-kickstand-cache", http::HeaderValue::from_static("hit"));
        resp
    }

    async fn cache(&self, op: CacheOp<'_>) -> Result<Reply, ApiError> {
        self.ask(format!("cache {op:?}"));
        let rx = self.go.lock().unwrap().take().unwrap();
        let lines =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|v| (v, rx)) },
            );
        Ok(Reply::JsonLines(lines.boxed()))
    }

    async fn status(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Text("ok\n".into()))
    }

    async fn status_json(&self, _query: &str) -> Result<Reply, ApiError> {
        Ok(Reply::Json(serde_json::json!({"hosts": []})))
    }

    async fn metrics(&self) -> Result<Reply, ApiError> {
        Err(ApiError::Unavailable("no metrics here".into()))
    }

    fn observe(&self, route: RouteKind, status: StatusCode) {
        self.observed.lock().unwrap().push((route, status.as_u16()));
    }
}

async fn start(front: Arc<Fixed>) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { serve(listener, front, shutdown).await.unwrap() }
    });
    (addr, shutdown, task)
}

/// One request on a fresh connection: status, headers and the body (or
/// the error that cut it off).
async fn send(
    addr: SocketAddr,
    req: Request<Empty<Bytes>>,
) -> (StatusCode, http::HeaderMap, Result<Bytes, String>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (parts.status, parts.headers, body)
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "kickstand")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn routes_reach_the_front_and_errors_map_to_their_status() {
    let front = Arc::new(Fixed::default());
    let (addr, shutdown, task) = start(front.clone()).await;

    // iPXE percent-encodes the MAC's colons.
    let (status, headers, body) = send(addr, get("/boot/52%3A54%3A00%3A10%3A00%3A01.ipxe")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body.unwrap(), "#!ipxe\nexit\n");

    let (status, _, body) = send(addr, get("/boot/52:54:00:99:99:01.ipxe")).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body.unwrap()).contains("never sends an automated install"),);
    let (status, _, _) = send(addr, get("/ks/52:54:00:99:99:01")).await;
    assert_eq!(status, 404);
    assert_eq!(send(addr, get("/api/hosts")).await.0, 500);
    assert_eq!(send(addr, get("/metrics")).await.0, 503);
    assert_eq!(send(addr, get("/boot/zz.ipxe")).await.0, 400);
    assert_eq!(send(addr, get("/nope")).await.0, 404);
    assert_eq!(
        send(addr, get("/api/hosts/52:54:00:10:00:01/installed"))
            .await
            .0,
        405
    );

    let post = Request::post("/api/hosts/52-54-00-10-00-01/installed?token=t0k-3n_")
        .header("host", "kickstand")
        .body(Empty::new())
        .unwrap();
    let (status, headers, body) = send(addr, post).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(v["mac"], "52:54:00:10:00:01");

    // The repo route hands over method, mirror and the raw rest of the path.
    let head = Request::head("/repo/centos/9-stream/a%20b.rpm")
        .header("host", "kickstand")
        .body(Empty::new())
        .unwrap();
    let (status, headers, _) = send(addr, head).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-kickstand-cache"], "hit");
    // Mirror bytes, never a page of the appliance's origin.
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-security-policy"], "sandbox");

    // Not an open proxy: absolute-form targets never reach the front.
    let absolute = Request::get("http://example.invalid/x")
        .header("host", "example.invalid")
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(addr, absolute).await.0, 403);

    let asked = front.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            "boot 52:54:00:10:00:01 from 127.0.0.1",
            "boot 52:54:00:99:99:01 from 127.0.0.1",
            "kickstart 52:54:00:99:99:01 token None",
            "report 52:54:00:10:00:01 Installed token Some(\"t0k-3n_\") detail \"\"",
            "repo HEAD centos 9-stream/a%20b.rpm",
        ]
    );
    let observed = front.observed.lock().unwrap().clone();
    assert_eq!(observed.len(), 11, "{observed:?}");
    assert!(
        observed.contains(&(RouteKind::Refused, 403)),
        "{observed:?}"
    );
    assert!(
        observed.contains(&(RouteKind::BootScript, 200)),
        "{observed:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
}

#[tokio::test]
async fn loaders_stream_with_their_length() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("ipxe.efi"), &data).unwrap();
    let front = Arc::new(Fixed {
        loader_dir: Some(dir),
        ..Fixed::default()
    });
    let (addr, _shutdown, _task) = start(front).await;
    let (status, headers, body) = send(addr, get("/boot/ipxe.efi")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], data.len().to_string().as_str());
    assert_eq!(headers["content-type"], "application/efi");
    assert_eq!(body.unwrap(), data);
    assert_eq!(send(addr, get("/boot/snponly.efi")).await.0, 404);
    assert_eq!(send(addr, get("/boot/.hidden")).await.0, 404);
}

#[tokio::test]
async fn progress_lines_arrive_as_they_happen() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let front = Arc::new(Fixed {
        go: Mutex::new(Some(rx)),
        ..Fixed::default()
    });
    let (addr, _shutdown, _task) = start(front).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/api/cache/warm/centos-stream-9")
        .header("host", "kickstand")
        .header("authorization", "Bearer operator-secret")
        .body(Empty::<Bytes>::new())
        .unwrap();
    tx.send(serde_json::json!({"event": "warming", "target": "centos/x"}))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();
    // The first line is readable while the operation is still running.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first line arrives before the stream ends")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(
        &first[..],
        b"{\"event\":\"warming\",\"target\":\"centos/x\"}\n"
    );
    tx.send(serde_json::json!({"event": "warmed"})).unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"{\"event\":\"warmed\"}\n");
}

async fn send_full(
    addr: SocketAddr,
    req: Request<http_body_util::Full<Bytes>>,
) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn post(
    path: &str,
    bearer: Option<&str>,
    body: &'static [u8],
) -> Request<http_body_util::Full<Bytes>> {
    let mut req = Request::post(path).header("host", "kickstand");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    req.body(http_body_util::Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn get_as(path: &str, bearer: &str) -> Request<http_body_util::Full<Bytes>> {
    Request::get(path)
        .header("host", "kickstand")
        .header("authorization", format!("Bearer {bearer}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap()
}

/// Operator routes are called only with the operator token; installer
/// routes get the build token from the query and never look at a bearer.
#[tokio::test]
async fn operator_routes_need_the_operator_token_and_build_tokens_come_from_the_query() {
    let front = Arc::new(Fixed::default());
    let (addr, _shutdown, _task) = start(front.clone()).await;
    let rearm = "/api/hosts/52:54:00:10:00:01/rearm";
    for bearer in [None, Some("wrong"), Some("")] {
        assert_eq!(
            send_full(addr, post(rearm, bearer, b"")).await.0,
            403,
            "{bearer:?}"
        );
    }
    assert_eq!(
        send_full(addr, post(rearm, Some("operator-secret"), b""))
            .await
            .0,
        200
    );
    let cycle = "/api/hosts/52:54:00:10:00:01/power/cycle";
    assert_eq!(send_full(addr, post(cycle, None, b"")).await.0, 403);
    assert_eq!(
        send_full(
            addr,
            post(cycle, Some("operator-secret"), b"{\"pxe\":true}")
        )
        .await
        .0,
        200
    );
    let adopt = "/api/discovered/52:54:00:10:00:02/adopt";
    assert_eq!(send_full(addr, post(adopt, None, b"{}")).await.0, 403);
    assert_eq!(
        send_full(
            addr,
            post(adopt, Some("operator-secret"), b"{\"hostname\":\"n9\"}")
        )
        .await
        .0,
        200
    );
    for op in ["/api/cache/verify", "/api/cache/warm/centos-stream-9"] {
        assert_eq!(
            send_full(addr, post(op, Some("t0k"), b"")).await.0,
            403,
            "{op}"
        );
    }
    // A failure's reason is the body; the token is the query's.
    let failed = "/api/hosts/52:54:00:10:00:01/failed?token=abc";
    let (status, _) = send_full(
        addr,
        post(failed, Some("operator-secret"), b"disk sda not found"),
    )
    .await;
    assert_eq!(status, 200);
    // Bodies are bounded.
    let big: &'static [u8] = Box::leak(vec![b'x'; 17 * 1024].into_boxed_slice());
    assert_eq!(send_full(addr, post(failed, None, big)).await.0, 400);
    let (status, _, _) = send(addr, get("/ks/52:54:00:10:00:01?token=k1&x=2")).await;
    assert_eq!(status, 404);
    let (status, _, body) = send(
        addr,
        get("/api/discover/52:54:00:10:00:03?uuid=u-1&serial=S%201"),
    )
    .await;
    assert_eq!(
        (status, body.unwrap()),
        (StatusCode::OK, Bytes::from_static(b"#!ipxe\n"))
    );

    let asked = front.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            "rearm 52:54:00:10:00:01",
            "power 52:54:00:10:00:01 cycle {\"pxe\":true}",
            "adopt 52:54:00:10:00:02 {\"hostname\":\"n9\"}",
            "report 52:54:00:10:00:01 Failed token Some(\"abc\") detail \"disk sda not found\"",
            "kickstart 52:54:00:10:00:01 token Some(\"k1\")",
            "discovery 52:54:00:10:00:03 uuid=u-1&serial=S%201",
        ]
    );
    // Every operator action is recorded with who asked, refusals too; the
    // token shows only as its id; a read of the log is no action.
    assert_eq!(
        send_full(addr, get_as("/api/audit", "operator-secret"))
            .await
            .0,
        200
    );
    let acts = front.acts.lock().unwrap().clone();
    let seen: Vec<(&str, Option<String>, bool)> = acts
        .iter()
        .map(|a| (a.action, a.token_id.clone(), a.error.is_none()))
        .collect();
    let id = |t: &str| Some(token_id(t));
    assert_eq!(
        seen,
        [
            ("rearm", None, false),
            ("rearm", id("wrong"), false),
            ("rearm", None, false),
            ("rearm", id("operator-secret"), true),
            ("power-cycle", None, false),
            ("power-cycle", id("operator-secret"), true),
            ("adopt", None, false),
            ("adopt", id("operator-secret"), true),
            ("cache-verify", id("t0k"), false),
            ("cache-warm", id("t0k"), false),
        ]
    );
    assert_eq!(acts[0].target, "52:54:00:10:00:01");
    assert_eq!(acts[9].target, "centos-stream-9");
    assert_eq!(acts[0].peer.to_string(), "127.0.0.1");
    assert_eq!(acts[0].error.as_deref(), Some("operator token needed"));
    assert_eq!(token_id("operator-secret").len(), 8);
}
