//! Range and HEAD, on cached files and on files still downloading.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn range_and_head_on_cached_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(100_000, 20);
    m.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    let (rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    const P: &str = "/repo/c/Packages/a.rpm";

    let head_miss = request(addr, "HEAD", P, &[]).await;
    assert_eq!(head_miss.status, 200);
    assert_eq!(head_miss.headers["content-length"], "100000");
    assert!(head_miss.bytes().is_empty());
    // The HEAD started the download; wait for it to be committed.
    committed_object(dir.path()).await;

    let g = request(addr, "GET", P, &[("range", "bytes=100-199")]).await;
    assert_eq!((g.status.as_u16(), g.cache()), (206, "hit"));
    assert_eq!(g.headers["content-range"], "bytes 100-199/100000");
    assert_eq!(g.headers["content-length"], "100");
    assert_eq!(g.bytes(), data.slice(100..200));

    let g = request(addr, "GET", P, &[("range", "bytes=-50")]).await;
    assert_eq!(g.status, 206);
    assert_eq!(g.bytes(), data.slice(99_950..));

    let g = request(addr, "GET", P, &[("range", "bytes=99990-")]).await;
    assert_eq!(g.bytes(), data.slice(99_990..));

    let g = request(addr, "GET", P, &[("range", "bytes=100000-")]).await;
    assert_eq!(g.status, 416);
    assert_eq!(g.headers["content-range"], "bytes */100000");

    let g = request(addr, "HEAD", P, &[]).await;
    assert_eq!((g.status.as_u16(), g.cache()), (200, "hit"));
    assert_eq!(g.headers["content-length"], "100000");
    assert_eq!(g.headers["accept-ranges"], "bytes");
    assert!(g.bytes().is_empty());

    let g = request(addr, "HEAD", P, &[("range", "bytes=0-9")]).await;
    assert_eq!(g.status, 206);
    assert_eq!(g.headers["content-length"], "10");

    assert_eq!(m.hits("/c/Packages/a.rpm"), 1, "one fetch for all of it");
    // The first hit read the small file into memory; every later one, the
    // ranges and HEADs, came from there.
    let s = rp.stats();
    assert_eq!((s.memory_files, s.memory_hits), (1, 5), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_on_a_file_being_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(1_000_000, 21);
    m.set(
        "/c/Packages/b.rpm",
        Reply::File {
            body: data.clone(),
            etag: None,
            pace: Some((50_000, Duration::from_millis(20))),
            chunked: false,
        },
    );
    let (_rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    const P: &str = "/repo/c/Packages/b.rpm";
    let full = tokio::spawn(request(addr, "GET", P, &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let part = request(addr, "GET", P, &[("range", "bytes=900000-900099")]).await;
    assert_eq!((part.status.as_u16(), part.cache()), (206, "coalesced"));
    assert_eq!(part.bytes(), data.slice(900_000..900_100));
    assert_eq!(full.await.unwrap().bytes(), data);
    assert_eq!(m.hits("/c/Packages/b.rpm"), 1);
}

#[tokio::test]
async fn partial_upstream_answer_is_never_stored() {
    // A mirror that answers 206 to a plain GET (broken) is an error, not a file.
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    m.set("/c/Packages/c.rpm", Reply::Status(206));
    let (_rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    let g = request(addr, "GET", "/repo/c/Packages/c.rpm", &[]).await;
    assert_eq!(g.status, 502);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cached_objects(dir.path()).is_empty());
}
