//! Live reload of mirrors and proxy; invalid configs keep the running one.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn reconfigure_swaps_mirrors_and_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let a = Mirror::start().await;
    let b = Mirror::start().await;
    let data = blob(1000, 50);
    a.set("/x.rpm", Reply::file(data.clone()));
    b.set("/y.rpm", Reply::file(data.clone()));
    let cfg = config(dir.path(), &[("a", vec![a.url("/")])], None);
    let rp = open(&cfg);
    let addr = front(rp.clone()).await;
    assert_eq!(request(addr, "GET", "/repo/a/x.rpm", &[]).await.status, 200);
    assert_eq!(request(addr, "GET", "/repo/b/y.rpm", &[]).await.status, 404);

    // An upstream that cannot be built is refused before it reaches the
    // proxy; the old one stays in force.
    let mut bad = config(dir.path(), &[("b", vec![b.url("/")])], None);
    bad.extra_roots = vec![b"not a certificate".to_vec()];
    assert!(kickstand_repo::Upstream::new(&bad).is_err());
    assert_eq!(
        request(addr, "GET", "/repo/a/x.rpm", &[]).await.cache(),
        "hit"
    );

    // Mirror b added through a proxy, mirror a removed.
    let proxy = FwdProxy::start(None).await;
    let new = config(
        dir.path(),
        &[("b", vec![b.url("/")])],
        Some(common::proxy(format!("http://{}", proxy.addr), None)),
    );
    rp.reconfigure(
        &new,
        std::sync::Arc::new(kickstand_repo::Upstream::new(&new).unwrap()),
    );
    assert_eq!(
        request(addr, "GET", "/repo/b/y.rpm", &[]).await.bytes(),
        data
    );
    assert_eq!(proxy.count(), 1);
    assert_eq!(request(addr, "GET", "/repo/a/x.rpm", &[]).await.status, 404);
}
