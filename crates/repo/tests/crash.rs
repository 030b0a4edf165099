//! Restart after a crash: temp files are discarded, committed files intact.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

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
    let rp = open(&cfg);
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
    let rp2 = open(&cfg2);
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

/// A real `kill -9`: this test re-runs itself as a child process that
/// caches one file, starts a download that stalls mid-body, and is then
/// killed with SIGKILL. The next `open` of the same cache discards the
/// temp file and serves the committed file.
#[tokio::test]
async fn kill_9_mid_download() {
    if let Ok(spec) = std::env::var("KS_KILL9_CHILD") {
        // Child: "<cache parent dir>|<mirror base URL>"
        let (dir, base) = spec.split_once('|').unwrap();
        let dir = std::path::Path::new(dir);
        let mut cfg = config(dir, &[("c", vec![base.to_string()])], None);
        cfg.timeouts.stall = Duration::from_secs(3600);
        let rp = open(&cfg);
        let addr = front(rp).await;
        request(addr, "GET", "/repo/c/a.rpm", &[]).await.bytes();
        tokio::spawn(request(addr, "GET", "/repo/c/stuck.rpm", &[]));
        loop {
            if temp_files(dir) == 1 {
                std::fs::write(dir.join("ready"), b"").unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(300_000, 33);
    m.set("/c/a.rpm", Reply::file(data.clone()));
    m.set(
        "/c/stuck.rpm",
        Reply::Stall {
            body: blob(1_000_000, 34),
            send: 500_000,
        },
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_mid_download",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "KS_KILL9_CHILD",
            format!("{}|{}", dir.path().display(), m.url("/c/")),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..500 {
        if dir.path().join("ready").exists() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(ready, "child never reached the mid-download state");
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(tmp.len(), 1, "the killed download left its temp file");
    assert!(tmp[0].metadata().unwrap().len() > 0);

    let (rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    assert_eq!(temp_files(dir.path()), 0, "discarded at open");
    let g = request(addr, "GET", "/repo/c/a.rpm", &[]).await;
    assert_eq!((g.cache(), g.bytes()), ("hit", data));
    assert_eq!(m.hits("/c/a.rpm"), 1);
    assert_eq!(rp.stats().entries, 1, "only the committed file");
}

/// A committed file cut short on disk while a client streams it (a failing
/// disk, an operator's mistake) aborts that response: the client never sees
/// a clean end of fewer bytes than the Content-Length it was promised.
#[tokio::test]
async fn object_truncated_under_a_hit_aborts_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(32 << 20, 35);
    m.set("/c/Packages/big.rpm", Reply::file(data.clone()));
    let (_rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    let first = request(addr, "GET", "/repo/c/Packages/big.rpm", &[]).await;
    assert_eq!(first.bytes(), data);
    let obj = committed_object(dir.path()).await;

    // A slow reader: the socket buffers hold a few MiB at most, so most of
    // the file is still on disk when it is cut.
    let slow = tokio::spawn(request_slow(
        addr,
        "GET",
        "/repo/c/Packages/big.rpm",
        &[],
        Duration::from_millis(5),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&obj)
        .unwrap()
        .set_len(0)
        .unwrap();
    let got = slow.await.unwrap();
    assert_eq!(got.cache(), "hit");
    assert!(
        got.body.is_err(),
        "a clean end after the file was cut: {:?}",
        got.body.as_ref().map(|b| b.len())
    );
}
