//! Hostile requests are refused before anything reaches the proxy or mirror.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::*;

#[tokio::test]
async fn hostile_paths_never_go_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::start().await;
    m.set("/c/etc/passwd", Reply::file(blob(10, 1)));
    let proxy = FwdProxy::start(None).await;
    let (_rp, addr) = setup(
        dir.path(),
        &[("c", vec![m.url("/c/")])],
        Some(common::proxy(format!("http://{}", proxy.addr), None)),
    )
    .await;
    let mh = m.addr;
    let cases: Vec<(String, &str)> = vec![
        ("GET /repo/c/../../etc/passwd HTTP/1.1".into(), "400"),
        ("GET /repo/c/x/..%2f..%2fetc/passwd HTTP/1.1".into(), "400"),
        (
            "GET /repo/c/%2e%2e/%2e%2e/etc/passwd HTTP/1.1".into(),
            "400",
        ),
        ("GET /repo/c/.%2E/x HTTP/1.1".into(), "400"),
        ("GET /repo/c/a%2fb HTTP/1.1".into(), "400"),
        ("GET /repo/c/a%5c..%5cb HTTP/1.1".into(), "400"),
        ("GET /repo/c/a%00b HTTP/1.1".into(), "400"),
        ("GET /repo/c/a%0d%0aX:%20y HTTP/1.1".into(), "400"),
        ("GET /repo/c/http://evil.example/x HTTP/1.1".into(), "400"),
        (
            "GET /repo/c/http:%2f%2fevil.example/x HTTP/1.1".into(),
            "400",
        ),
        ("GET /repo/c/%zz HTTP/1.1".into(), "400"),
        (format!("GET http://{mh}/repo/c/etc/passwd HTTP/1.1"), "400"),
        (format!("CONNECT {mh} HTTP/1.1"), "400"),
        ("POST /repo/c/etc/passwd HTTP/1.1".into(), "405"),
        ("GET /repo/nope/etc/passwd HTTP/1.1".into(), "404"),
        ("GET /repo/../c/etc/passwd HTTP/1.1".into(), "404"),
    ];
    for (line, want) in &cases {
        let answer = raw(
            addr,
            format!("{line}\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let status = answer.split_whitespace().nth(1).unwrap_or("(none)");
        assert_eq!(status, *want, "{line} → {answer:?}");
    }
    assert_eq!(
        m.connections.load(Ordering::SeqCst),
        0,
        "nothing reached the mirror"
    );
    assert_eq!(proxy.count(), 0, "nothing reached the office proxy");
    assert!(cached_objects(dir.path()).is_empty());

    // The legitimate request works through the same proxy.
    let ok = request(addr, "GET", "/repo/c/etc/passwd", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(proxy.count(), 1);
}
