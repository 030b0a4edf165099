//! A parent appliance (`kickstand://host:port/<mirror>`) is reached
//! directly, past the office proxy, and is never sent the office proxy's
//! credentials; an ordinary mirror of the same appliance still goes through
//! the proxy.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn a_parent_is_reached_directly_and_never_sees_the_proxy_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(50_000, 4);
    // Stands for the parent's HTTP front: its repo route for mirror `c`.
    let parent = Mirror::start().await;
    parent.set("/repo/c/Packages/a.rpm", Reply::file(data.clone()));
    let mirror = Mirror::start().await;
    mirror.set("/d/Packages/a.rpm", Reply::file(data.clone()));
    let office = FwdProxy::start(Some("Basic a2ljazpzZWNyZXQ=")).await;
    let (_rp, addr) = setup(
        dir.path(),
        &[
            ("c", vec![format!("kickstand://{}/c", parent.addr)]),
            ("d", vec![mirror.url("/d/")]),
        ],
        Some(common::proxy(
            format!("http://{}", office.addr),
            Some(("kick", "secret")),
        )),
    )
    .await;

    assert_eq!(
        request(addr, "GET", "/repo/c/Packages/a.rpm", &[])
            .await
            .bytes(),
        data
    );
    assert_eq!(
        office.count(),
        0,
        "the parent was reached through the proxy"
    );
    let seen = parent.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|s| s.method == "GET"), "{seen:?}");
    for s in &seen {
        // Origin-form, as to a server, not absolute-form as to a proxy.
        assert_eq!(s.target, "/repo/c/Packages/a.rpm", "{s:?}");
        assert!(
            s.headers.iter().all(|(k, _)| k != "proxy-authorization"),
            "the office proxy's credentials went to the parent: {s:?}"
        );
    }

    assert_eq!(
        request(addr, "GET", "/repo/d/Packages/a.rpm", &[])
            .await
            .bytes(),
        data
    );
    assert!(office.count() >= 1, "a mirror went around the office proxy");
    assert!(
        office
            .auth_seen
            .lock()
            .unwrap()
            .iter()
            .all(|a| a.as_deref() == Some("Basic a2ljazpzZWNyZXQ=")),
    );
}
