//! `RepoProxy::open_file`, the cache as TFTP reads it: the size is known
//! before the first byte, a miss is followed while it arrives, the rest of
//! the rack hits the cache, and a download that fails never reads as whole.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kickstand_repo::{Opened, RepoProxy};

const SHIM: &str = "tree/EFI/BOOT/BOOTX64.EFI";

/// Reads all of an opened file on a thread of its own, as the TFTP server
/// does, in TFTP-sized blocks.
async fn read_all(opened: Opened) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || match opened {
        Opened::Complete { file, offset, len } => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        }
        Opened::Arriving(mut a) => {
            let mut out = Vec::new();
            let mut at = 0u64;
            while at < a.len() {
                let n = 1468.min(a.len() - at) as usize;
                let mut block = vec![0; n];
                a.read_exact_at(&mut block, at)?;
                out.extend_from_slice(&block);
                at += n as u64;
            }
            Ok(out)
        }
    })
    .await
    .unwrap()
}

fn mirror_of(m: &Mirror) -> Vec<(&'static str, Vec<String>)> {
    vec![("c", vec![m.url("/c/")])]
}

#[tokio::test]
async fn a_miss_is_followed_as_it_arrives_and_the_next_reader_hits() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(600_000, 11);
    m.set(
        "/c/tree/EFI/BOOT/BOOTX64.EFI",
        Reply::File {
            body: data.clone(),
            etag: None,
            pace: Some((64 * 1024, Duration::from_millis(30))),
            chunked: false,
        },
    );
    let rp: RepoProxy = open(&config(dir.path(), &mirror_of(&m), None));
    let first = rp.open_file("c", SHIM).await.unwrap();
    let Opened::Arriving(a) = &first else {
        panic!("a miss is a download in progress: {first:?}")
    };
    assert_eq!(a.len(), data.len() as u64, "the size before the bytes");
    // A second reader joins the same download.
    let second = rp.open_file("c", SHIM).await.unwrap();
    let (x, y) = tokio::join!(read_all(first), read_all(second));
    assert_eq!(x.unwrap(), data);
    assert_eq!(y.unwrap(), data);
    let third = rp.open_file("c", SHIM).await.unwrap();
    assert!(matches!(third, Opened::Complete { .. }), "{third:?}");
    assert_eq!(read_all(third).await.unwrap(), data);
    let gets = m
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "GET")
        .count();
    assert_eq!(gets, 1, "one download for every reader");
}

#[tokio::test]
async fn a_download_cut_short_is_an_error_never_a_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let data = blob(300_000, 12);
    m.set(
        "/c/tree/EFI/BOOT/BOOTX64.EFI",
        Reply::Truncate {
            body: data.clone(),
            send: 100_000,
        },
    );
    let rp = open(&config(dir.path(), &mirror_of(&m), None));
    // It fails at the open or at a read, depending on how far the download
    // got by then; never with the whole length read.
    match rp.open_file("c", SHIM).await {
        Ok(opened) => assert!(read_all(opened).await.is_err()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert!(cached_objects(dir.path()).is_empty(), "nothing committed");
}

#[tokio::test]
async fn a_stalled_download_times_out_and_unknown_mirrors_and_hostile_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    m.set(
        "/c/tree/EFI/BOOT/BOOTX64.EFI",
        Reply::Stall {
            body: blob(100_000, 13),
            send: 10_000,
        },
    );
    let rp = open(&config(dir.path(), &mirror_of(&m), None));
    let opened = rp.open_file("c", SHIM).await.unwrap();
    let err = read_all(opened).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::Other
        ),
        "{err}"
    );
    assert!(rp.open_file("nope", SHIM).await.is_err());
    assert!(rp.open_file("c", "../etc/passwd").await.is_err());
    assert!(
        m.seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| !s.target.contains("passwd"))
    );
}

/// A respin of a boot file while a TFTP transfer reads the old one: the
/// reader keeps the whole old file (its open inode), the next reader gets
/// the whole new one — never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_respin_leaves_an_open_reader_the_whole_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let old = blob(400_000, 21);
    let new = blob(400_333, 22);
    let set = |body: &bytes::Bytes, etag: &str| Reply::File {
        body: body.clone(),
        etag: Some(format!("\"{etag}\"")),
        pace: None,
        chunked: false,
    };
    m.set("/c/tree/EFI/BOOT/BOOTX64.EFI", set(&old, "old"));
    let mut cfg = config(dir.path(), &mirror_of(&m), None);
    cfg.revalidate_after = Duration::ZERO;
    let rp = open(&cfg);
    // Fill the cache, then open the committed old copy.
    read_all(rp.open_file("c", SHIM).await.unwrap())
        .await
        .unwrap();
    let reading = rp.open_file("c", SHIM).await.unwrap();
    assert!(matches!(reading, Opened::Complete { .. }), "{reading:?}");

    m.set("/c/tree/EFI/BOOT/BOOTX64.EFI", set(&new, "new"));
    let respun = read_all(rp.open_file("c", SHIM).await.unwrap())
        .await
        .unwrap();
    assert_eq!(sha(&respun), sha(&new), "the next reader gets the new file");
    assert_eq!(
        sha(&read_all(reading).await.unwrap()),
        sha(&old),
        "the open reader keeps the whole old file"
    );
}
