//! The cache's metric families count what happened: four boots fetching
//! one kernel are one download, and a copy confirmed by a 304 is a hit.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidated_copy_is_a_hit_and_one_download_is_one_download() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let kernel = blob(300_000, 7);
    m.set(
        "/c/images/pxeboot/vmlinuz",
        Reply::File {
            body: kernel.clone(),
            etag: Some("\"k1\"".into()),
            pace: None,
            chunked: false,
        },
    );
    let mut cfg = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    cfg.revalidate_after = Duration::from_millis(200);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    let mut registry = prometheus_client::registry::Registry::default();
    rp.register_metrics(&mut registry);

    // Four machines boot at once, then again after the revalidation interval.
    for round in 0..2 {
        let boots: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    request(addr, "GET", "/repo/c/images/pxeboot/vmlinuz", &[]).await
                })
            })
            .collect();
        for b in boots {
            assert_eq!(b.await.unwrap().bytes(), kernel, "round {round}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = rp.stats();
    assert_eq!(s.downloads, 1, "{s:?}");
    assert_eq!(s.revalidated, 1, "the mirror answered one 304: {s:?}");
    assert_eq!(
        s.misses + s.coalesced + s.hits,
        8,
        "every request counted once: {s:?}"
    );
    assert!(s.hits >= 4, "the second round is served from disk: {s:?}");
    assert_eq!(s.served_bytes, 8 * kernel.len() as u64);
    assert_eq!(s.upstream_bytes, kernel.len() as u64);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert_eq!(sample(&text, "kickstand_cache_hits_total"), s.hits);
    assert_eq!(sample(&text, "kickstand_cache_downloads_total"), 1);
    assert_eq!(sample(&text, "kickstand_cache_not_modified_total"), 1);
    assert_eq!(sample(&text, "kickstand_cache_revalidations_total"), 1);
    assert_eq!(sample(&text, "kickstand_cache_files"), 1);
    // 300,000 bytes: above what is held in memory, every hit reads the file.
    assert_eq!(sample(&text, "kickstand_cache_memory_files"), 0);
    assert_eq!(sample(&text, "kickstand_cache_memory_hits_total"), 0);
    assert_eq!(sample(&text, "kickstand_cache_downloads_in_flight"), 0);
    assert_eq!(
        sample(
            &text,
            "kickstand_cache_upstream_failures_total{kind=\"checksum\"}"
        ),
        0
    );
    for family in [
        "# TYPE kickstand_cache_served_bytes counter",
        "# TYPE kickstand_cache_upstream_bytes counter",
        "# TYPE kickstand_cache_evictions counter",
        "# TYPE kickstand_cache_max_bytes gauge",
        "# TYPE kickstand_cache_coalesced counter",
        "# TYPE kickstand_cache_misses counter",
        "# TYPE kickstand_cache_memory_hits counter",
        "# TYPE kickstand_cache_memory_evictions counter",
        "# TYPE kickstand_cache_memory_bytes gauge",
        "# TYPE kickstand_cache_memory_max_bytes gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
}
