//! Integrity of what the cache serves, against the real nginx mirror bed
//! (issue 21, "the rack's worst minute"): an object cut short or rotted on
//! disk is dropped and fetched again, never served as complete; a respin
//! that rewrites `.treeinfo` never makes the new image unservable; and a
//! file no checksum vouches for, caught mid-write by a writer that paused
//! for longer than any window, is never kept as a hit. A small file's copy
//! in memory is replaced by a respin's new file, and outlives damage to its
//! file on disk — what was committed is served — until the disk is next
//! read, which drops the damaged file.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::bed::{Bed, OS, date_back};
use common::*;

fn url(rel: &str) -> String {
    format!("/repo/centos/{OS}/{rel}")
}

/// The cache's object file for `rel` of the tree.
fn object(dir: &std::path::Path, rel: &str) -> std::path::PathBuf {
    let hash = sha(format!("centos/{OS}/{rel}").as_bytes());
    dir.join("cache/objects").join(&hash[..2]).join(hash)
}

fn content_length(g: &Got) -> Option<u64> {
    g.headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `truncate -s -N`.
fn cut(path: &std::path::Path, n: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - n).unwrap();
}

/// Flips bytes near the end of a file: same size, other content.
fn rot(path: &std::path::Path) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = f.metadata().unwrap().len() - 100;
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, at).unwrap();
    for x in &mut b {
        *x ^= 0x5a;
    }
    f.write_all_at(&b, at).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs nginx (tests/beds/mirror); run by .ci/run"]
async fn a_truncated_object_is_fetched_again_and_served_whole() {
    let bed = Bed::start("truncated");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("centos", vec![bed.url()])], None);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    // The repodata gives the package's checksum, so it is a final copy.
    assert_eq!(
        request(addr, "GET", &url("repodata/repomd.xml"), &[])
            .await
            .status,
        200
    );
    let rel = "Packages/ks-payload-1.0-1.noarch.rpm";
    let want = bed.read(rel);
    assert_eq!(request(addr, "GET", &url(rel), &[]).await.bytes(), want);
    let obj = object(dir.path(), rel);
    assert!(obj.exists(), "committed before the last byte went out");

    // `truncate -s -100K` on the cached RPM while the proxy runs.
    cut(&obj, 100 << 10);
    let g = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(
        content_length(&g),
        Some(want.len() as u64),
        "never the short length"
    );
    assert_eq!(sha(&g.bytes()), sha(&want), "the whole file");
    assert_eq!(g.cache(), "miss", "dropped and fetched again");
    assert_eq!(bed.gets(rel), 2);
    assert_eq!(rp.stats().damaged, 1);

    // Cut again, then a restart: the length recorded in the object tells.
    cut(&obj, 100 << 10);
    let rp2 = open(&cfg);
    let addr2 = front(rp2.clone()).await;
    let g = request(addr2, "GET", &url(rel), &[]).await;
    assert_eq!(content_length(&g), Some(want.len() as u64));
    assert_eq!((g.cache(), sha(&g.bytes())), ("miss", sha(&want)));
    assert_eq!(bed.gets(rel), 3);
    let h = request(addr2, "GET", &url(rel), &[]).await;
    assert_eq!((h.cache(), sha(&h.bytes())), ("hit", sha(&want)));
    assert_eq!(rp2.stats().damaged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs nginx (tests/beds/mirror); run by .ci/run"]
async fn a_corrupt_object_is_dropped_on_its_first_serve_after_a_restart() {
    let bed = Bed::start("rotted");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("centos", vec![bed.url()])], None);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    // The repodata gives every package's checksum.
    assert_eq!(
        request(addr, "GET", &url("repodata/repomd.xml"), &[])
            .await
            .status,
        200
    );
    let small = "Packages/ks-hello-1.0-1.noarch.rpm";
    let large = "Packages/ks-payload-1.0-1.noarch.rpm";
    for rel in [small, large] {
        assert_eq!(
            request(addr, "GET", &url(rel), &[]).await.bytes(),
            bed.read(rel)
        );
        rot(&object(dir.path(), rel));
    }
    drop(rp);

    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    // A small object is checked before it is served: this very request
    // fetches it again.
    let g = request(addr, "GET", &url(small), &[]).await;
    assert_eq!(
        (g.cache(), sha(&g.bytes())),
        ("miss", sha(&bed.read(small)))
    );
    // A large one is checked as it streams: its last bytes never go out.
    let g = request(addr, "GET", &url(large), &[]).await;
    match &g.body {
        Err(_) => {}
        Ok(b) => assert_eq!(
            sha(b),
            sha(&bed.read(large)),
            "a complete 200 of rotten bytes"
        ),
    }
    let g = request(addr, "GET", &url(large), &[]).await;
    assert_eq!(
        (g.cache(), sha(&g.bytes())),
        ("miss", sha(&bed.read(large)))
    );
    assert_eq!(rp.stats().damaged, 2);
    assert_eq!((bed.gets(small), bed.gets(large)), (2, 2));
    // Checked once per object: now plain hits.
    for rel in [small, large] {
        let h = request(addr, "GET", &url(rel), &[]).await;
        assert_eq!((h.cache(), sha(&h.bytes())), ("hit", sha(&bed.read(rel))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs nginx (tests/beds/mirror); run by .ci/run"]
async fn a_respin_that_rewrites_treeinfo_serves_the_new_image_at_once() {
    let bed = Bed::start("respin");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[("centos", vec![bed.url()])], None);
    cfg.revalidate_after = Duration::ZERO;
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    let rel = "images/pxeboot/vmlinuz";
    assert_eq!(
        request(addr, "GET", &url(".treeinfo"), &[]).await.status,
        200
    );
    assert_eq!(
        request(addr, "GET", &url(rel), &[]).await.bytes(),
        bed.read(rel)
    );

    // The respin, by rename: the image, then a `.treeinfo` naming it, both
    // written a moment ago — too young for `.treeinfo` to be kept yet.
    let new = blob(300_000, 90);
    bed.replace(rel, &new, Duration::ZERO);
    bed.set_treeinfo_sum(rel, &sha(&new), Duration::ZERO);
    let g = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(sha(&g.bytes()), sha(&new), "the correct new image, whole");
    let again = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(sha(&again.bytes()), sha(&new));
    assert_eq!(rp.stats().failures, 0, "{:?}", rp.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs nginx (tests/beds/mirror); run by .ci/run"]
async fn a_torn_file_whose_writer_paused_long_ago_is_never_a_hit() {
    let bed = Bed::start("paused");
    let dir = tempfile::tempdir().unwrap();
    // The default revalidation interval: no window may save a torn copy.
    let cfg = config(dir.path(), &[("centos", vec![bed.url()])], None);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    // Not in `.treeinfo`: no checksum anywhere.
    let rel = "images/extra.img";
    let whole = blob(3 << 20, 91);
    // A writer rewriting it in place wrote the first MiB and has been
    // paused for an hour (far past the old 10 s window).
    std::fs::write(bed.file(rel), &whole[..1 << 20]).unwrap();
    date_back(&bed.file(rel), Duration::from_secs(3600));
    let torn = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(
        torn.bytes().len(),
        1 << 20,
        "nginx sends the size of the moment"
    );
    // While it stays paused the copy is served on the mirror's word only.
    let paused = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(paused.bytes().len(), 1 << 20);
    assert_eq!(
        paused.cache(),
        "revalidated",
        "confirmed with the mirror, not a hit"
    );

    // The writer resumes and finishes.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(bed.file(rel))
        .unwrap();
    f.write_all_at(&whole[1 << 20..], 1 << 20).unwrap();
    drop(f);
    date_back(&bed.file(rel), Duration::from_secs(60));
    let after = request(addr, "GET", &url(rel), &[]).await;
    assert_ne!(after.cache(), "hit");
    assert_eq!(sha(&after.bytes()), sha(&whole), "the whole file, at once");
    let later = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(
        (later.cache(), sha(&later.bytes())),
        ("revalidated", sha(&whole))
    );
    assert_eq!(bed.gets(rel), 4, "two downloads and two conditional GETs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs nginx (tests/beds/mirror); run by .ci/run"]
async fn a_respin_replaces_the_copy_in_memory() {
    let bed = Bed::start("memory-respin");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[("centos", vec![bed.url()])], None);
    // Long enough for a plain hit (from memory) between two revalidations.
    cfg.revalidate_after = Duration::from_secs(1);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    let rel = "images/pxeboot/vmlinuz";
    assert_eq!(
        request(addr, "GET", &url(".treeinfo"), &[]).await.status,
        200
    );
    let old = bed.read(rel);
    assert!(old.len() < 256 << 10, "small enough to be held in memory");
    for want in ["miss", "hit", "hit"] {
        let g = request(addr, "GET", &url(rel), &[]).await;
        assert_eq!((g.cache(), sha(&g.bytes())), (want, sha(&old)));
    }
    let s = rp.stats();
    // (`.treeinfo` is kept unconfirmed, so never in memory.)
    assert_eq!((s.memory_files, s.memory_hits), (1, 1), "{s:?}");

    // The respin, by rename; the copy in memory is of the old kernel.
    let new = blob(100_000, 92);
    bed.replace(rel, &new, Duration::ZERO);
    bed.set_treeinfo_sum(rel, &sha(&new), Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let g = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(g.cache(), "miss", "revalidated: the mirror has another");
    assert_eq!(sha(&g.bytes()), sha(&new));
    // Read from disk once, then from memory: the new kernel both times.
    for _ in 0..2 {
        let g = request(addr, "GET", &url(rel), &[]).await;
        assert_eq!((g.cache(), sha(&g.bytes())), ("hit", sha(&new)));
    }
    let s = rp.stats();
    assert_eq!(s.memory_hits, 2, "{s:?}");
    assert_eq!((s.failures, s.damaged), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs nginx (tests/beds/mirror); run by .ci/run"]
async fn a_copy_in_memory_outlives_damage_on_disk_until_the_disk_is_read() {
    let bed = Bed::start("memory-cut");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[("centos", vec![bed.url()])], None);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    // `.treeinfo` gives the kernel's checksum: a final copy, a plain hit
    // for `revalidate_after`.
    assert_eq!(
        request(addr, "GET", &url(".treeinfo"), &[]).await.status,
        200
    );
    let rel = "images/pxeboot/vmlinuz";
    let want = bed.read(rel);
    for cache in ["miss", "hit"] {
        let g = request(addr, "GET", &url(rel), &[]).await;
        assert_eq!((g.cache(), sha(&g.bytes())), (cache, sha(&want)));
    }

    // Cut short on disk while its copy is in memory: the copy was checked
    // and is what was committed, so it is served whole, with no disk read
    // to find the damage.
    let obj = object(dir.path(), rel);
    cut(&obj, 100);
    let g = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(content_length(&g), Some(want.len() as u64));
    assert_eq!((g.cache(), sha(&g.bytes())), ("hit", sha(&want)));
    let s = rp.stats();
    assert_eq!((s.memory_hits, s.damaged), (1, 0), "{s:?}");
    assert_eq!(bed.gets(rel), 1);

    // Memory is needed for other files (here: its budget cut to nothing):
    // the next hit reads the disk, which tells the damage, drops the file
    // and fetches it again.
    cfg.memory_bytes = 0;
    rp.reconfigure(
        &cfg,
        std::sync::Arc::new(kickstand_repo::Upstream::new(&cfg).unwrap()),
    );
    assert_eq!(rp.stats().memory_files, 0);
    let g = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!(content_length(&g), Some(want.len() as u64));
    assert_eq!((g.cache(), sha(&g.bytes())), ("miss", sha(&want)));
    assert_eq!((rp.stats().damaged, bed.gets(rel)), (1, 2));
    let h = request(addr, "GET", &url(rel), &[]).await;
    assert_eq!((h.cache(), sha(&h.bytes())), ("hit", sha(&want)));
}
