//! N clients on one missing file: one upstream download, identical bytes,
//! and the bytes reach clients while the download is still running.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_download_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start().await;
    let data = blob(2 * 1024 * 1024, 1);
    // 64 KiB every 20 ms: ~0.6 s for the whole file.
    mirror.set(
        "/centos/Packages/big.rpm",
        Reply::File {
            body: data.clone(),
            etag: None,
            pace: Some((64 * 1024, Duration::from_millis(20))),
            chunked: false,
        },
    );
    let (rp, addr) = setup(
        dir.path(),
        &[("centos", vec![mirror.url("/centos/")])],
        None,
    )
    .await;

    let clients: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                // Stagger a little so some clients join mid-download.
                tokio::time::sleep(Duration::from_millis(i * 10)).await;
                request(addr, "GET", "/repo/centos/Packages/big.rpm", &[]).await
            })
        })
        .collect();
    let mut got = Vec::new();
    for c in clients {
        got.push(c.await.unwrap());
    }
    assert_eq!(
        mirror.hits("/centos/Packages/big.rpm"),
        1,
        "exactly one upstream fetch"
    );
    let finished = loop {
        if let Some(f) = mirror.finished.lock().unwrap().first() {
            break f.1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for g in &got {
        assert_eq!(g.status, 200);
        assert_eq!(g.bytes(), data);
        assert!(
            g.first_byte.unwrap() < finished,
            "first bytes must arrive before the upstream finished"
        );
    }
    let caches: Vec<_> = got.iter().map(|g| g.cache().to_string()).collect();
    assert_eq!(
        caches.iter().filter(|c| *c == "miss").count(),
        1,
        "{caches:?}"
    );
    let s = rp.stats();
    assert_eq!((s.misses, s.coalesced, s.upstream_fetches), (1, 19, 1));

    // Now a hit, no new upstream request.
    let g = request(addr, "GET", "/repo/centos/Packages/big.rpm", &[]).await;
    assert_eq!((g.status.as_u16(), g.cache()), (200, "hit"));
    assert_eq!(g.bytes(), data);
    assert_eq!(mirror.hits("/centos/Packages/big.rpm"), 1);
    assert_eq!(cached_objects(dir.path()).len(), 1);
    assert_eq!(temp_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upstream_is_cached_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start().await;
    let data = blob(300_000, 2);
    mirror.set(
        "/c/Packages/x.rpm",
        Reply::File {
            body: data.clone(),
            etag: None,
            pace: Some((50_000, Duration::from_millis(5))),
            chunked: true,
        },
    );
    let (_rp, addr) = setup(dir.path(), &[("c", vec![mirror.url("/c/")])], None).await;
    let (a, b) = tokio::join!(
        request(addr, "GET", "/repo/c/Packages/x.rpm", &[]),
        request(addr, "GET", "/repo/c/Packages/x.rpm", &[])
    );
    assert_eq!(a.bytes(), data);
    assert_eq!(b.bytes(), data);
    let h = request(addr, "GET", "/repo/c/Packages/x.rpm", &[]).await;
    assert_eq!((h.cache(), h.bytes()), ("hit", data));
    assert_eq!(mirror.hits("/c/Packages/x.rpm"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_download_still_fills_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start().await;
    let data = blob(1024 * 1024, 3);
    mirror.set(
        "/c/Packages/y.rpm",
        Reply::File {
            body: data.clone(),
            etag: None,
            pace: Some((64 * 1024, Duration::from_millis(10))),
            chunked: false,
        },
    );
    let (rp, addr) = setup(dir.path(), &[("c", vec![mirror.url("/c/")])], None).await;
    // The client gives up after the first bytes.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(60),
        request(addr, "GET", "/repo/c/Packages/y.rpm", &[]),
    )
    .await;
    assert!(gave_up.is_err());
    committed_object(dir.path()).await;
    // On disk is not yet done with: until the download leaves the
    // in-flight table a request joins it ("coalesced"), not the cache.
    for _ in 0..500 {
        if rp.downloads_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let g = request(addr, "GET", "/repo/c/Packages/y.rpm", &[]).await;
    assert_eq!((g.cache(), g.bytes()), ("hit", data));
    assert_eq!(mirror.hits("/c/Packages/y.rpm"), 1);
}
