//! Tests against real peers (squid) or needing root (a tiny tmpfs for a full
//! disk). Ignored by default; `.ci/run` runs them with `--include-ignored`,
//! and they fail — not skip — when the peer is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

struct Squid {
    child: Child,
    port: u16,
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts squid on a free loopback port with Basic auth (kick/secret) and
/// no caching of its own, so every request reaches the mirror.
async fn squid(dir: &std::path::Path) -> Squid {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let passwd = dir.join("passwd");
    let out = Command::new("htpasswd")
        .args(["-bc"])
        .arg(&passwd)
        .args(["kick", "secret"])
        .output()
        .expect("htpasswd (apache2-utils) is required");
    assert!(out.status.success(), "htpasswd: {out:?}");
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let conf = format!(
        "http_port 127.0.0.1:{port}\n\
         pid_filename {d}/squid.pid\n\
         cache_log {d}/cache.log\n\
         access_log {d}/access.log\n\
         coredump_dir {d}\n\
         cache deny all\n\
         cache_mem 8 MB\n\
         shutdown_lifetime 0 seconds\n\
         auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/passwd\n\
         auth_param basic realm kickstand-test\n\
         acl ks_local src 127.0.0.0/8\n\
         acl ks_authed proxy_auth REQUIRED\n\
         http_access allow ks_local ks_authed\n\
         http_access deny all\n"
    );
    std::fs::write(dir.join("squid.conf"), conf).unwrap();
    let child = Command::new("squid")
        .arg("-N")
        .arg("-f")
        .arg(dir.join("squid.conf"))
        .spawn()
        .expect("squid is required");
    let s = Squid { child, port };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "squid did not start: {}",
        std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs squid and htpasswd; run by .ci/run"]
async fn through_real_squid() {
    let dir = tempfile::tempdir().unwrap();
    let sq = squid(&dir.path().join("squid").tap_mkdir()).await;
    let m = Mirror::start().await;
    let data = blob(3 * 1024 * 1024, 60);
    m.set(
        "/c/Packages/big.rpm",
        Reply::File {
            body: data.clone(),
            etag: None,
            pace: Some((128 * 1024, Duration::from_millis(10))),
            chunked: false,
        },
    );
    let purl = format!("http://127.0.0.1:{}", sq.port);
    let mirrors = [("c", vec![m.url("/c/")])];

    let (_rp, addr) = setup(
        &dir.path().join("a"),
        &mirrors,
        Some(common::proxy(&purl, None)),
    )
    .await;
    let g = request(addr, "GET", "/repo/c/Packages/big.rpm", &[]).await;
    assert_eq!(g.status, 502, "squid's 407 without credentials");
    assert_eq!(m.total(), 0);

    let mut cfg = config(
        &dir.path().join("b"),
        &mirrors,
        Some(common::proxy(&purl, Some(("kick", "secret")))),
    );
    cfg.timeouts.stall = Duration::from_secs(10);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(request(addr, "GET", "/repo/c/Packages/big.rpm", &[])))
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap().bytes(), data);
    }
    assert_eq!(
        m.hits("/c/Packages/big.rpm"),
        1,
        "one fetch through squid for 8 clients"
    );
    let g = request(addr, "GET", "/repo/c/Packages/big.rpm", &[]).await;
    assert_eq!((g.cache(), g.bytes()), ("hit", data));
    let log = std::fs::read_to_string(dir.path().join("squid/access.log")).unwrap_or_default();
    assert!(
        log.contains("/c/Packages/big.rpm"),
        "squid logged the fetch: {log}"
    );

    // An https mirror through squid's CONNECT, trusted via the extra CA.
    let (ca_pem, acceptor) = test_ca();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let tls = Mirror::start_tls(acceptor).await;
    let small = blob(200_000, 64);
    tls.set("/s/Packages/t.rpm", Reply::file(small.clone()));
    let mut cfg = config(
        &dir.path().join("c"),
        &[(
            "s",
            vec![format!("https://localhost:{}/s/", tls.addr.port())],
        )],
        Some(common::proxy(&purl, Some(("kick", "secret")))),
    );
    cfg.extra_roots = ca_roots(&ca_path);
    let addr = front(open(&cfg)).await;
    assert_eq!(
        request(addr, "GET", "/repo/s/Packages/t.rpm", &[])
            .await
            .bytes(),
        small
    );
    assert_eq!(tls.hits("/s/Packages/t.rpm"), 1);
    // (squid logs a CONNECT only when the tunnel closes; the pooled
    // tunnel is still open here, so the log cannot be checked yet.)
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs root to mount a tmpfs; run by .ci/run"]
async fn full_disk_stops_caching_but_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs (root required)");
    let _guard = Tmpfs(cache.clone());

    let m = Mirror::start().await;
    let smalls: Vec<_> = (0..3).map(|i| blob(250_000, 70 + i)).collect();
    for (i, b) in smalls.iter().enumerate() {
        m.set(&format!("/c/small{i}.rpm"), Reply::file(b.clone()));
    }
    let medium = blob(400_000, 63);
    let big = blob(3 * 1024 * 1024, 62);
    m.set("/c/medium.rpm", Reply::file(medium.clone()));
    m.set("/c/big.rpm", Reply::file(big.clone()));
    let mut cfg = config(dir.path(), &[("c", vec![m.url("/c/")])], None);
    cfg.max_cache_bytes = 1 << 30; // the limit is not what stops us: the disk is
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;

    for (i, b) in smalls.iter().enumerate() {
        assert_eq!(
            &request(addr, "GET", &format!("/repo/c/small{i}.rpm"), &[])
                .await
                .bytes(),
            b
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ENOSPC while our own files fill the disk: the oldest make way.
    let g = request(addr, "GET", "/repo/c/medium.rpm", &[]).await;
    assert_eq!(g.bytes(), medium);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rp.stats().evictions >= 1, "{:?}", rp.stats());
    assert!(!rp.stats().disk_full);
    assert_eq!(
        request(addr, "GET", "/repo/c/medium.rpm", &[])
            .await
            .cache(),
        "hit"
    );

    // A file that cannot fit even after evicting everything.
    let first = request(addr, "GET", "/repo/c/big.rpm", &[]).await;
    assert!(
        first.body.is_err(),
        "the download that hit ENOSPC is aborted, never cut short silently"
    );
    assert!(rp.stats().disk_full);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(temp_files(dir.path()), 0, "partial temp file removed");

    let again = request(addr, "GET", "/repo/c/big.rpm", &[]).await;
    assert_eq!((again.cache(), again.bytes()), ("pass", big));
    let hit = request(addr, "GET", "/repo/c/small2.rpm", &[]).await;
    assert_eq!((hit.cache(), hit.bytes()), ("hit", smalls[2].clone()));
}
