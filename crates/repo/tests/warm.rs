//! `cache warm` and `verify` over real repodata (repomd.xml + gzip primary).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use bytes::Bytes;
use common::*;
use kickstand_repo::{WarmOutcome, WarmProgress, WarmTarget};

/// Publishes a repo at `/c/os/` with `pkgs` (name, bytes, advertised sha).
fn publish(m: &Mirror, pkgs: &[(&str, Bytes, String)]) {
    let mut primary = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm">"#,
    );
    for (name, _, sum) in pkgs {
        primary.push_str(&format!(
            r#"<package type="rpm"><name>{name}</name><checksum type="sha256" pkgid="YES">{sum}</checksum><location href="Packages/{name}.rpm"/><format><rpm:provides><rpm:entry name="{name}"/></rpm:provides></format></package>"#
        ));
    }
    primary.push_str("</metadata>");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(primary.as_bytes()).unwrap();
    let gz = Bytes::from(gz.finish().unwrap());
    let gz_sha = sha(&gz);
    let href = format!("repodata/{gz_sha}-primary.xml.gz");
    let repomd = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
<data type="primary"><checksum type="sha256">{gz_sha}</checksum><location href="{href}"/></data></repomd>"#
    );
    m.set(
        "/c/os/repodata/repomd.xml",
        Reply::file(Bytes::from(repomd)),
    );
    m.set(&format!("/c/os/{href}"), Reply::file(gz));
    for (name, body, _) in pkgs {
        m.set(
            &format!("/c/os/Packages/{name}.rpm"),
            Reply::file(body.clone()),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fetches_and_verifies_every_package() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let good: Vec<_> = (0..12)
        .map(|i| (format!("pkg{i}"), blob(20_000 + i * 100, 100 + i as u64)))
        .collect();
    let bad = blob(5_000, 999);
    let mut pkgs: Vec<(&str, Bytes, String)> = good
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone(), sha(b)))
        .collect();
    pkgs.push(("tampered", bad.clone(), sha(b"something else")));
    publish(&m, &pkgs);
    let (rp, addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;

    // One package is already cached through a client.
    request(addr, "GET", "/repo/c/os/Packages/pkg0.rpm", &[])
        .await
        .bytes();
    let mut events = Vec::new();
    let mut target = WarmTarget::new("c", "os/");
    target.concurrency = 3;
    let report = rp
        .warm(&target, |p| {
            if let WarmProgress::File(e) = p {
                events.push(e)
            }
        })
        .await
        .unwrap();
    // repomd.xml, primary and 13 packages.
    assert_eq!(report.files, 15);
    assert_eq!(report.packages, 13);
    // pkg0 was there; repomd.xml and primary were fetched to read the plan.
    assert_eq!(report.already_cached, 1);
    assert_eq!(report.fetched, 13);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(report.failed[0].0.ends_with("tampered.rpm"));
    assert!(report.failed[0].1.contains("sha256"), "{:?}", report.failed);
    assert_eq!(events.len(), 15);
    assert_eq!(events.last().unwrap().done, 15);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.outcome, WarmOutcome::Failed(_)))
    );
    // repomd + primary + 12 good packages; the tampered one is not committed.
    assert_eq!(cached_objects(dir.path()).len(), 14);
    for (name, body) in &good {
        let g = request(addr, "GET", &format!("/repo/c/os/Packages/{name}.rpm"), &[]).await;
        assert_eq!((g.cache(), g.bytes()), ("hit", body.clone()));
    }

    // The sha256 is known now: a client fetching the tampered file sees
    // its transfer aborted, and it is not committed.
    let t = request(addr, "GET", "/repo/c/os/Packages/tampered.rpm", &[]).await;
    assert!(t.body.is_err(), "checksum failure must abort the client");
    assert_eq!(cached_objects(dir.path()).len(), 14);

    // A second warm finds everything in place.
    let again = rp.warm(&target, |_| {}).await.unwrap();
    assert_eq!((again.already_cached, again.fetched), (14, 0));

    // Bit rot on disk: verify finds it and removes the file.
    let v = rp.verify().await.unwrap();
    // Primary and the 12 good packages.
    assert_eq!((v.repos, v.checked, v.ok), (1, 13, 13), "{v:?}");
    // The object whose header names pkg5.
    let victim = cached_objects(dir.path())
        .into_iter()
        .find(|p| {
            let b = std::fs::read(p).unwrap();
            String::from_utf8_lossy(&b[..b.len().min(200)])
                .contains("key: c/os/Packages/pkg5.rpm\n")
        })
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let v = rp.verify().await.unwrap();
    assert_eq!((v.checked, v.ok), (13, 12), "{v:?}");
    assert_eq!(v.corrupt, vec!["c/os/Packages/pkg5.rpm".to_string()]);
    let g = request(addr, "GET", "/repo/c/os/Packages/pkg5.rpm", &[]).await;
    assert_eq!((g.cache(), g.bytes()), ("miss", good[5].1.clone()));
}

#[tokio::test]
async fn warm_of_unknown_mirror_or_missing_repo_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let (rp, _addr) = setup(dir.path(), &[("c", vec![m.url("/c/")])], None).await;
    assert!(
        rp.warm(&WarmTarget::new("nope", "os/"), |_| {})
            .await
            .is_err()
    );
    let e = rp
        .warm(&WarmTarget::new("c", "os/"), |_| {})
        .await
        .unwrap_err();
    assert_eq!(kickstand_repo::status_for(&e), 404, "{e}");
    assert!(
        rp.warm(&WarmTarget::new("c", "../x/"), |_| {})
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_like_an_install_fetches_what_it_pulled_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    let pkgs: Vec<(String, Bytes)> = (0..6)
        .map(|i| (format!("pkg{i}"), blob(10_000 + i * 10, 300 + i as u64)))
        .collect();
    let listed: Vec<(&str, Bytes, String)> = pkgs
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone(), sha(b)))
        .collect();
    publish(&m, &listed);
    let mirrors = [("c", vec![m.url("/c/")])];
    {
        let (rp, addr) = setup(dir.path(), &mirrors, None).await;
        // One install: repomd.xml, primary (named in it) and two packages.
        let repomd = request(addr, "GET", "/repo/c/os/repodata/repomd.xml", &[])
            .await
            .bytes();
        let text = String::from_utf8_lossy(&repomd).to_string();
        let primary = text
            .split("location href=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        for path in [
            "os/repodata/repomd.xml".to_string(),
            format!("os/{primary}"),
            "os/Packages/pkg1.rpm".into(),
            "os/Packages/pkg4.rpm".into(),
        ] {
            request(addr, "GET", &format!("/repo/c/{path}"), &[])
                .await
                .bytes();
            rp.note_pull("52:54:00:00:00:07", "c", &path);
        }
        assert_eq!(rp.install_completed("52:54:00:00:00:07", "el9").unwrap(), 4);
    }
    // A wiped cache (a new appliance of the rack keeps the list it is given).
    std::fs::remove_dir_all(dir.path().join("cache/objects")).unwrap();
    let (rp, addr) = setup(dir.path(), &mirrors, None).await;
    let files = rp.learned_install("el9", "52:54:00:00:00:07").unwrap();
    assert_eq!(files.len(), 4);
    let report = rp.warm_files(&files, 2, |_| {}).await.unwrap();
    // Primary comes in with repomd.xml's generation: already there at its turn.
    assert_eq!(
        (
            report.files,
            report.fetched + report.already_cached,
            report.failed.len()
        ),
        (4, 4, 0),
        "{report:?}"
    );
    assert_eq!(
        cached_objects(dir.path()).len(),
        4,
        "only what the install pulled"
    );
    // The mirror goes away: the install's files are all there.
    for (name, _) in &pkgs {
        m.set(&format!("/c/os/Packages/{name}.rpm"), Reply::Status(503));
    }
    m.set("/c/os/repodata/repomd.xml", Reply::Status(503));
    for p in ["pkg1", "pkg4"] {
        let g = request(addr, "GET", &format!("/repo/c/os/Packages/{p}.rpm"), &[]).await;
        assert_eq!(g.status, 200);
    }
    let g = request(addr, "GET", "/repo/c/os/repodata/repomd.xml", &[]).await;
    assert_eq!(g.status, 200, "a stale repomd.xml beats none");
    assert!(rp.learned_install("el9", "52:54:00:00:00:08").is_err());
}
