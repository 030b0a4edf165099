//! Restart after a crash: temp files are discarded, committed files intact.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kickstand_repo::RepoProxy;

#[tokio::test]
async fn leftover_temp_files_removed_and_commits_survive() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(200_000, 30);
    m.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    m.set(
        "/c/Packages/stuck.rpm",
        Reply::Stall {
            body: blob(100_000, 31),
            send: 40_000,
        },
    );
    let mut cfg = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    cfg.timeouts.stall = Duration::from_secs(60);
    let rp = RepoProxy::open(&cfg).unwrap();
    let addr = front(rp.clone()).await;
    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/a.rpm", &[])
            .await
            .bytes(),
        data
    );

    // A download in flight holds a temp file: the state a kill -9 leaves.
    let stuck = tokio::spawn(request(addr, "GET", "/repo/c/Packages/stuck.rpm", &[]));
    for _ in 0..100 {
        if temp_files(dir.path()) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(temp_files(dir.path()), 1);
    std::fs::write(dir.path().join("cache/tmp/fetch-left-by-crash"), b"partial").unwrap();
    stuck.abort();

    // The restarted process opens the same directory.
    let cfg2 = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    let rp2 = RepoProxy::open(&cfg2).unwrap();
    assert_eq!(
        temp_files(dir.path()),
        0,
        "leftover temp files discarded at open"
    );
    let addr2 = front(rp2.clone()).await;
    let g = request(addr2, "GET", "/repo/c/Packages/a.rpm", &[]).await;
    assert_eq!((g.cache(), g.bytes()), ("hit", data));
    assert_eq!(m.hits("/c/Packages/a.rpm"), 1);
    assert_eq!(rp2.stats().entries, 1);
}

#[tokio::test]
async fn corrupt_object_header_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(1000, 32);
    m.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    let (_rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    request(addr, "GET", "/repo/c/Packages/a.rpm", &[])
        .await
        .bytes();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let obj = cached_objects(dir.path()).pop().unwrap();
    std::fs::write(&obj, b"garbage").unwrap();
    let (_rp2, addr2) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    let g = request(addr2, "GET", "/repo/c/Packages/a.rpm", &[]).await;
    assert_eq!(g.bytes(), data);
    assert_eq!(m.hits("/c/Packages/a.rpm"), 2);
}
