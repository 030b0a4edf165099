//! Broken upstreams: each fault gives the client a clear error (or an
//! aborted body), fails over where that can help, and never leaves a
//! partial file in the cache.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const P: &str = "/repo/c/Packages/a.rpm";

async fn assert_nothing_cached(dir: &std::path::Path) {
    // The fetch task cleans up right after the client sees the error.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        cached_objects(dir).is_empty(),
        "no partial file may be committed"
    );
    assert_eq!(temp_files(dir), 0, "temp file must be discarded");
}

#[tokio::test]
async fn upstream_closes_mid_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(500_000, 3);
    m.set(
        "/c/Packages/a.rpm",
        Reply::Truncate {
            body: data.clone(),
            send: 200_000,
        },
    );
    let (_rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    let (a, b) = tokio::join!(request(addr, "GET", P, &[]), request(addr, "GET", P, &[]));
    for g in [&a, &b] {
        assert_eq!(g.status, 200, "headers were already sent");
        assert!(
            g.body.is_err(),
            "client must see the transfer aborted, not a clean end"
        );
    }
    assert_nothing_cached(dir.path()).await;
    // Once the mirror is fixed the file is fetched again, whole.
    m.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    let g = request(addr, "GET", P, &[]).await;
    assert_eq!(g.bytes(), data);
    assert_eq!(cached_objects(dir.path()).len(), 1);
}

#[tokio::test]
async fn chunked_upstream_without_final_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    m.set(
        "/c/Packages/a.rpm",
        Reply::TruncateChunked {
            body: blob(100_000, 4),
            send: 60_000,
        },
    );
    let (_rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    let g = request(addr, "GET", P, &[]).await;
    assert!(g.body.is_err());
    assert_nothing_cached(dir.path()).await;
}

#[tokio::test]
async fn fewer_bytes_than_content_length_then_stall() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    m.set(
        "/c/Packages/a.rpm",
        Reply::Stall {
            body: blob(100_000, 5),
            send: 30_000,
        },
    );
    let (rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    let started = std::time::Instant::now();
    let g = request(addr, "GET", P, &[]).await;
    assert!(g.body.is_err(), "stalled transfer must abort the client");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_cached(dir.path()).await;
    assert_eq!(rp.stats().failures, 1);
}

#[tokio::test]
async fn stalled_headers_time_out_with_504() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    m.set("/c/Packages/a.rpm", Reply::StallHeaders);
    let mut cfg = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    cfg.timeouts.connect = Duration::from_millis(300);
    cfg.timeouts.headers = Duration::from_millis(300);
    let addr = front(open(&cfg)).await;
    let g = request(addr, "GET", P, &[]).await;
    assert_eq!(g.status, 504);
    assert_nothing_cached(dir.path()).await;
}

#[tokio::test]
async fn server_error_fails_over_to_next_base() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Mirror::start().await;
    let good = Mirror::start().await;
    let data = blob(10_000, 6);
    bad.set("/c/Packages/a.rpm", Reply::Status(500));
    good.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    let (_rp, addr) = setup(
        dir.path(),
        &[("c", vec![bad.url("/c/"), good.url("/c/")])],
        None,
    )
    .await;
    let g = request(addr, "GET", P, &[]).await;
    assert_eq!(g.bytes(), data);
    assert_eq!(
        (
            bad.hits("/c/Packages/a.rpm"),
            good.hits("/c/Packages/a.rpm")
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn connect_error_fails_over_and_all_bad_is_502() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, never listened on, held to the
    // end, so no other test's server is given it meanwhile (connections
    // to it are refused).
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let closed = held.local_addr().unwrap().as_socket().unwrap();
    let good = Mirror::start().await;
    let data = blob(10_000, 7);
    good.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    let (_rp, addr) = setup(
        dir.path(),
        &[
            ("c", vec![format!("http://{closed}/c/"), good.url("/c/")]),
            ("dead", vec![format!("http://{closed}/")]),
        ],
        None,
    )
    .await;
    assert_eq!(request(addr, "GET", P, &[]).await.bytes(), data);
    let g = request(addr, "GET", "/repo/dead/x.rpm", &[]).await;
    assert_eq!(g.status, 502);
}

#[tokio::test]
async fn upstream_404_is_404_and_not_failed_over() {
    let dir = tempfile::tempdir().unwrap();
    let a = Mirror::start().await;
    let b = Mirror::start().await;
    let (_rp, addr) = setup(dir.path(), &[("c", vec![a.url("/c/"), b.url("/c/")])], None).await;
    assert_eq!(request(addr, "GET", P, &[]).await.status, 404);
    assert_eq!((a.total(), b.total()), (1, 0));
    assert_nothing_cached(dir.path()).await;
}

#[tokio::test]
async fn redirects_followed_only_to_mirror_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let other_mirror = Mirror::start().await;
    let stranger = Mirror::start().await;
    let data = blob(5_000, 8);
    // A redirect loop.
    m.set("/c/loop.rpm", Reply::Redirect("/c/loop2.rpm".into()));
    m.set("/c/loop2.rpm", Reply::Redirect(m.url("/c/loop.rpm")));
    // A redirect to a configured mirror's host (another mirror) is fine.
    m.set(
        "/c/moved.rpm",
        Reply::Redirect(other_mirror.url("/pub/moved.rpm")),
    );
    other_mirror.set("/pub/moved.rpm", Reply::file(data.clone()));
    // A redirect elsewhere is refused before anything is sent there.
    m.set("/c/evil.rpm", Reply::Redirect(stranger.url("/x.rpm")));
    stranger.set("/x.rpm", Reply::file(data.clone()));
    let (_rp, addr) = setup(
        dir.path(),
        &[
            ("c", vec![m.url("/c/")]),
            ("other", vec![other_mirror.url("/pub/")]),
        ],
        None,
    )
    .await;
    let g = request(addr, "GET", "/repo/c/loop.rpm", &[]).await;
    assert_eq!(g.status, 502);
    assert!(m.total() <= 6 + 1, "bounded hops: {}", m.total());
    assert_eq!(
        request(addr, "GET", "/repo/c/moved.rpm", &[]).await.bytes(),
        data
    );
    assert_eq!(
        request(addr, "GET", "/repo/c/evil.rpm", &[]).await.status,
        502
    );
    assert_eq!(
        stranger
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cached_objects(dir.path()).len(), 1, "only moved.rpm");
}

#[tokio::test]
async fn office_proxy_with_and_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(50_000, 9);
    m.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    m.set("/c/Packages/b.rpm", Reply::file(data.clone()));
    let proxy = FwdProxy::start(Some("Basic a2ljazpzZWNyZXQ=")).await;
    let purl = format!("http://{}", proxy.addr);
    let mirrors = [("c", vec![m.url("/c/")])];

    let (_rp, addr) = setup(
        &dir.path().join("a"),
        &mirrors,
        Some(common::proxy(&purl, None)),
    )
    .await;
    let g = request(addr, "GET", P, &[]).await;
    assert_eq!(g.status, 502, "407 from the proxy is a gateway error");
    assert_eq!(m.total(), 0);
    assert_nothing_cached(&dir.path().join("a")).await;

    let (_rp, addr) = setup(
        &dir.path().join("b"),
        &mirrors,
        Some(common::proxy(&purl, Some(("kick", "secret")))),
    )
    .await;
    assert_eq!(request(addr, "GET", P, &[]).await.bytes(), data);
    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/b.rpm", &[])
            .await
            .bytes(),
        data
    );
    let lines = proxy.first_lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("GET {} ", m.url("/c/Packages/a.rpm")))),
        "absolute-form: {lines:?}"
    );
    // Keep-alive: both files over one proxy connection (plus the refused one).
    assert_eq!(proxy.count(), 2, "{lines:?}");
}
