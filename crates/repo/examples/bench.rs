//! Repo proxy benchmark on loopback (prints figures, asserts nothing):
//!
//! 1. one client on a cold file from a rate-limited upstream (baseline time);
//! 2. N clients at once on another cold file of the same size: upstream
//!    fetches (goal 1) and the last client's time vs the baseline (goal ≤ 1.1×);
//! 3. M clients on a cached file: aggregate hit throughput;
//! 4. peak RSS of the process (proxy + clients, which discard the bytes).
//!
//! `cargo run --release -p kickstand-repo --example bench -- [size_mib] [clients] [rate_mib_s] [hit_clients]`
//! (defaults 100 50 20 64).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kickstand_repo::{RepoConfig, RepoProxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An upstream serving `size` bytes at every path, paced to `rate` bytes/s
/// per connection; counts requests.
async fn upstream(size: usize, rate: f64, count: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One chunk sent over and over: the upstream holds no whole file, so
    // the RSS figure is the proxy's (and the clients', which keep nothing).
    let chunk = Bytes::from(vec![0x5au8; 256 * 1024]);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (count, chunk) = (count.clone(), chunk.clone());
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        line.push_str(&h);
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let w = r.get_mut();
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                    if w.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let start = Instant::now();
                    let mut sent = 0usize;
                    while sent < size {
                        let n = chunk.len().min(size - sent);
                        if w.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                        let due = Duration::from_secs_f64(sent as f64 / rate);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn front(proxy: RepoProxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
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

/// GETs `path`, discarding the body; returns (bytes, elapsed).
async fn fetch(addr: SocketAddr, path: &str) -> (u64, Duration) {
    let start = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "bench")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.expect("body").into_data() {
            n += d.len() as u64;
        }
    }
    (n, start.elapsed())
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size_mib = args.first().copied().unwrap_or(100.0);
    let clients = args.get(1).copied().unwrap_or(50.0) as usize;
    let rate_mib = args.get(2).copied().unwrap_or(20.0);
    let hit_clients = args.get(3).copied().unwrap_or(64.0) as usize;
    let size = (size_mib * 1024.0 * 1024.0) as usize;

    let count = Arc::new(AtomicUsize::new(0));
    let up = upstream(size, rate_mib * 1024.0 * 1024.0, count.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RepoConfig::new(dir.path().join("cache"), 8 * size as u64);
    cfg.mirrors.insert(
        "m".into(),
        vec![format!("http://{up}/").parse().expect("mirror URL")],
    );
    let upstream = Arc::new(kickstand_repo::Upstream::new(&cfg).expect("upstream"));
    let proxy = RepoProxy::open(&cfg, upstream, tokio_util::task::TaskTracker::new()).unwrap();
    let addr = front(proxy.clone()).await;
    println!("RSS at start: {:.1} MiB", peak_rss_mib());
    println!("file {size_mib} MiB, upstream {rate_mib} MiB/s per connection");

    let (n, single) = fetch(addr, "/repo/m/single.rpm").await;
    assert_eq!(n as usize, size);
    println!("cold, 1 client:            {:.2} s", single.as_secs_f64());

    let before = count.load(Ordering::SeqCst);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(fetch(addr, "/repo/m/shared.rpm")))
        .collect();
    let mut last = Duration::ZERO;
    for t in tasks {
        let (n, _) = t.await.unwrap();
        assert_eq!(n as usize, size);
        last = last.max(start.elapsed());
    }
    let fetches = count.load(Ordering::SeqCst) - before;
    println!(
        "cold, {clients} clients:           last done {:.2} s = {:.3}x single; upstream fetches {fetches} (goal 1)",
        last.as_secs_f64(),
        last.as_secs_f64() / single.as_secs_f64()
    );
    println!("peak RSS after cold phase: {:.1} MiB", peak_rss_mib());

    let start = Instant::now();
    let tasks: Vec<_> = (0..hit_clients)
        .map(|_| tokio::spawn(fetch(addr, "/repo/m/single.rpm")))
        .collect();
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap().0;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "hit, {hit_clients} clients:            {:.0} MiB in {secs:.2} s = {:.0} MiB/s aggregate",
        total as f64 / 1048576.0,
        total as f64 / 1048576.0 / secs
    );
    println!(
        "peak RSS (VmHWM, proxy + clients): {:.1} MiB",
        peak_rss_mib()
    );
    println!("stats: {:?}", proxy.stats());
}
