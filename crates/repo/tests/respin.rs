//! A mirror respin: a revalidated file changes upstream while clients are
//! downloading it. Every client gets the whole old or the whole new file.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const P: &str = "/repo/c/images/install.img";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respin_serves_whole_old_or_whole_new() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let old = blob(1024 * 1024, 10);
    let new = blob(1024 * 1024 + 333, 11);
    m.set(
        "/c/images/install.img",
        Reply::File {
            body: old.clone(),
            etag: Some("\"old\"".into()),
            pace: None,
            chunked: false,
        },
    );
    let mut cfg = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    cfg.revalidate_after = Duration::ZERO;
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;

    let first = request(addr, "GET", P, &[]).await;
    assert_eq!((first.cache(), sha(&first.bytes())), ("miss", sha(&old)));

    // Slow readers of the cached old file (revalidated with a 304).
    let slow: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                request_slow(addr, "GET", P, &[], Duration::from_millis(30)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The respin: a new file, streamed slowly, while more clients arrive.
    m.set(
        "/c/images/install.img",
        Reply::File {
            body: new.clone(),
            etag: Some("\"new\"".into()),
            pace: Some((64 * 1024, Duration::from_millis(15))),
            chunked: false,
        },
    );
    let fresh: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 40)).await;
                request(addr, "GET", P, &[]).await
            })
        })
        .collect();

    let (sha_old, sha_new) = (sha(&old), sha(&new));
    for s in slow {
        let g = s.await.unwrap();
        assert_eq!(g.cache(), "revalidated");
        assert_eq!(
            sha(&g.bytes()),
            sha_old,
            "a reader of the old file gets the whole old file"
        );
    }
    for f in fresh {
        let g = f.await.unwrap();
        let got = sha(&g.bytes());
        assert!(got == sha_new || got == sha_old, "never a mix");
        assert_eq!(got, sha_new, "requests after the respin see the new file");
    }
    let after = request(addr, "GET", P, &[]).await;
    assert_eq!(sha(&after.bytes()), sha_new);
    // A client that already holds the new file gets a 304.
    let cond = request(addr, "GET", P, &[("if-none-match", "\"new\"")]).await;
    assert_eq!(cond.status, 304);
    assert!(cond.bytes().is_empty());
    let stale_tag = request(addr, "GET", P, &[("if-none-match", "\"old\"")]).await;
    assert_eq!(sha(&stale_tag.bytes()), sha_new);
    assert_eq!(cached_objects(dir.path()).len(), 1, "replaced in place");
    let s = rp.stats();
    assert!(s.revalidated >= 2, "{s:?}");
    assert_eq!(temp_files(dir.path()), 0);
}
