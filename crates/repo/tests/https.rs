//! https mirrors: CONNECT through the office proxy, then TLS verified
//! against a private CA given as `extra_roots`; also directly.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// A TLS mirror signed by a fresh test CA, and that CA's PEM file in `dir`.
async fn tls_mirror(dir: &std::path::Path) -> (Mirror, std::path::PathBuf) {
    let (ca_pem, acceptor) = test_ca();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    (Mirror::start_tls(acceptor).await, ca_path)
}

#[tokio::test]
async fn https_mirror_through_connect_and_direct() {
    let dir = tempfile::tempdir().unwrap();
    let (m, ca_path) = tls_mirror(dir.path()).await;
    let data = blob(300_000, 40);
    m.set("/c/Packages/a.rpm", Reply::file(data.clone()));
    m.set("/c/Packages/b.rpm", Reply::file(data.clone()));
    let base = format!("https://localhost:{}/c/", m.addr.port());
    let proxy = FwdProxy::start(Some("Basic a2ljazpzZWNyZXQ=")).await;
    let pcfg = common::proxy(format!("http://{}", proxy.addr), Some(("kick", "secret")));

    // Through the proxy with the CA.
    let mut cfg = config(
        &dir.path().join("a"),
        &[("c", vec![base.clone()])],
        Some(pcfg.clone()),
    );
    cfg.extra_roots = ca_roots(&ca_path);
    let rp = open(&cfg);
    let addr = front(rp).await;
    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/a.rpm", &[])
            .await
            .bytes(),
        data
    );
    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/b.rpm", &[])
            .await
            .bytes(),
        data
    );
    let lines = proxy.first_lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        vec![format!("CONNECT localhost:{} HTTP/1.1", m.addr.port())],
        "one tunnel, reused"
    );

    // Without the CA the mirror's certificate is not trusted.
    let cfg = config(
        &dir.path().join("b"),
        &[("c", vec![base.clone()])],
        Some(pcfg),
    );
    let rp = open(&cfg);
    let addr = front(rp).await;
    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/a.rpm", &[])
            .await
            .status,
        502
    );

    // Direct, no proxy.
    let mut cfg = config(&dir.path().join("c"), &[("c", vec![base])], None);
    cfg.extra_roots = ca_roots(&ca_path);
    let rp = open(&cfg);
    let addr = front(rp).await;
    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/a.rpm", &[])
            .await
            .bytes(),
        data
    );
}

#[tokio::test]
async fn connect_refused_by_proxy_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (m, ca_path) = tls_mirror(dir.path()).await;
    m.set("/c/a.rpm", Reply::file(blob(10, 1)));
    let proxy = FwdProxy::start(Some("Basic a2ljazpzZWNyZXQ=")).await;
    let mut cfg = config(
        dir.path(),
        &[("c", vec![format!("https://localhost:{}/c/", m.addr.port())])],
        Some(common::proxy(format!("http://{}", proxy.addr), None)),
    );
    cfg.extra_roots = ca_roots(&ca_path);
    let rp = open(&cfg);
    let addr = front(rp).await;
    let g = request(addr, "GET", "/repo/c/a.rpm", &[]).await;
    assert_eq!(g.status, 502);
    assert!(
        String::from_utf8_lossy(&g.bytes()).contains("407"),
        "{:?}",
        g.body
    );
    assert_eq!(m.total(), 0);
}

#[test]
fn an_extra_ca_that_is_not_x509_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        &[("c", vec!["https://localhost/".into()])],
        None,
    );
    cfg.extra_roots = vec![b"not a certificate".to_vec()];
    assert!(matches!(
        kickstand_repo::Upstream::new(&cfg),
        Err(kickstand_repo::Error::Config(_))
    ));
}
