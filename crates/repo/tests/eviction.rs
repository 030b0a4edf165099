//! LRU eviction under a tiny size limit; files above the limit pass through.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn least_recently_used_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    for (i, name) in ["a", "b", "c", "d", "huge"].iter().enumerate() {
        let len = if *name == "huge" { 300_000 } else { 100_000 };
        m.set(&format!("/c/{name}.rpm"), Reply::file(blob(len, i as u64)));
    }
    let mut cfg = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    cfg.max_cache_bytes = 250_000;
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    let get = |n: &'static str| async move {
        request(addr, "GET", &format!("/repo/c/{n}.rpm"), &[]).await
    };

    get("a").await.bytes();
    settle().await;
    get("b").await.bytes();
    settle().await;
    get("c").await.bytes(); // evicts a
    settle().await;
    assert_eq!(cached_objects(dir.path()).len(), 2);
    assert_eq!(get("b").await.cache(), "hit"); // b is now the most recent
    get("d").await.bytes(); // evicts c
    settle().await;
    assert_eq!(get("b").await.cache(), "hit");
    assert_eq!(get("d").await.cache(), "hit");
    assert_eq!(get("c").await.cache(), "miss");
    assert_eq!(get("a").await.cache(), "miss");
    settle().await;
    let s = rp.stats();
    assert!(s.bytes <= 250_000, "{s:?}");
    assert!(s.evictions >= 4, "{s:?}");

    // Too big to cache: served whole every time, never stored.
    let huge = blob(300_000, 4);
    for _ in 0..2 {
        assert_eq!(get("huge").await.bytes(), huge);
    }
    settle().await;
    assert_eq!(m.hits("/c/huge.rpm"), 2);
    assert!(rp.stats().bytes <= 250_000);
    assert_eq!(temp_files(dir.path()), 0);
}
