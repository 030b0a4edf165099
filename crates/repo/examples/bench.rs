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
//!
//! Small-file hits, the shape of an install's package stage from a warm
//! cache: `… --example bench -- small [files] [kib] [connections] [secs] [hold_secs]`
//! (defaults 2000 16 64 10 0) caches `files` files of `kib` KiB, then
//! `connections` keep-alive clients request them round-robin for `secs`
//! seconds and the request rate is printed. With `hold_secs` the front stays
//! up that long afterwards and a `wrk` script over the same paths is written,
//! so an outside load generator can be pointed at it.
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
    if std::env::args().nth(1).as_deref() == Some("small") {
        return small_files().await;
    }
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

/// Requests `paths` round-robin over one keep-alive connection until
/// `until`; returns how many were answered whole.
async fn keep_alive_client(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    first: usize,
    until: Instant,
) -> u64 {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut done = 0u64;
    let mut i = first;
    while Instant::now() < until {
        let req = http::Request::get(&paths[i % paths.len()])
            .header("host", "bench")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("whole body");
        done += 1;
        i += 1;
    }
    done
}

async fn small_files() {
    let args: Vec<f64> = std::env::args()
        .skip(2)
        .filter_map(|a| a.parse().ok())
        .collect();
    let files = args.first().copied().unwrap_or(2000.0) as usize;
    let kib = args.get(1).copied().unwrap_or(16.0);
    let connections = args.get(2).copied().unwrap_or(64.0) as usize;
    let secs = args.get(3).copied().unwrap_or(10.0);
    let hold = args.get(4).copied().unwrap_or(0.0);
    let size = (kib * 1024.0) as usize;

    let count = Arc::new(AtomicUsize::new(0));
    let up = upstream(size, 1e12, count.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RepoConfig::new(dir.path().join("cache"), 1 << 40);
    cfg.mirrors.insert(
        "m".into(),
        vec![format!("http://{up}/").parse().expect("mirror URL")],
    );
    let upstream = Arc::new(kickstand_repo::Upstream::new(&cfg).expect("upstream"));
    let proxy = RepoProxy::open(&cfg, upstream, tokio_util::task::TaskTracker::new()).unwrap();
    let addr = front(proxy.clone()).await;
    let paths: Arc<Vec<String>> = Arc::new(
        (0..files)
            .map(|i| format!("/repo/m/Packages/p{i:05}.rpm"))
            .collect(),
    );
    for p in paths.iter() {
        assert_eq!(fetch(addr, p).await.0 as usize, size);
    }
    let fetched = count.load(Ordering::SeqCst);
    println!("{files} files of {kib} KiB cached ({fetched} upstream fetches)");

    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(keep_alive_client(
                addr,
                paths.clone(),
                c * files / connections.max(1),
                until,
            ))
        })
        .collect();
    let mut total = 0u64;
    for c in clients {
        total += c.await.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "small hits, {connections} keep-alive connections: {total} requests in {took:.1} s = {:.0} req/s",
        total as f64 / took
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        fetched,
        "every request was a hit"
    );
    if hold > 0.0 {
        let script = dir.path().join("paths.lua");
        let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
        std::fs::write(
            &script,
            format!(
                "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1])\nend\n",
                list.join(",")
            ),
        )
        .unwrap();
        println!(
            "holding {hold} s: wrk -t2 -c{connections} -d{secs}s -s {} http://{addr}",
            script.display()
        );
        tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    }
    println!("stats: {:?}", proxy.stats());
}
