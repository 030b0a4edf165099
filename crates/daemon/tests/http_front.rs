//! `kickstand serve` on port 0, driven by a real HTTP client.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::{Bed, Daemon};

const NODE01: &str = "52:54:00:10:00:01";

#[test]
fn serves_kickstarts_and_boot_scripts_from_the_profiles() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let port = daemon.base.rsplit(':').next().expect("port").to_owned();

    let (status, script) = daemon.get(&format!("/boot/{NODE01}.ipxe"));
    assert_eq!(status, 200);
    let token = support::token_in(&script).expect("a build token");
    assert!(
        script.contains(&format!(
            "inst.ks=http://127.0.0.1:{port}/ks/{NODE01}?token={token}"
        )),
        "{script}"
    );
    assert!(script.contains("\nboot\n"), "{script}");

    // The kickstart (the host's secrets) only with the host's token.
    assert_eq!(daemon.get(&format!("/ks/{NODE01}")).0, 403);
    assert_eq!(daemon.get(&format!("/ks/{NODE01}?token=guess")).0, 403);
    let (status, ks) = daemon.get(&format!("/ks/{NODE01}?token={token}"));
    assert_eq!(status, 200, "{ks}");
    assert!(
        ks.contains(&format!(
            "url --url=http://127.0.0.1:{port}/repo/centos/9-stream/BaseOS/x86_64/os/"
        )),
        "URLs name the bound port:\n{ks}"
    );
    assert!(ks.contains("--hostname=node01"), "{ks}");
    assert!(ks.contains(&format!("/installed?token={token}")), "{ks}");

    let (status, hosts) = daemon.get("/api/hosts");
    assert_eq!(status, 200);
    let hosts: serde_json::Value = serde_json::from_str(&hosts).expect("json");
    assert_eq!(hosts.as_array().map(Vec::len), Some(4), "{hosts}");
}

#[test]
fn unknown_machines_get_no_install() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    for path in ["/ks/52:54:00:ff:00:01", "/boot/52:54:00:ff:00:01.ipxe"] {
        let (status, body) = daemon.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("never sends an automated install"), "{body}");
        assert!(!body.contains("inst.ks"), "{body}");
    }
    let (status, _) = daemon.post("/api/hosts/52:54:00:ff:00:01/installed");
    assert_eq!(status, 404);
}

#[test]
fn unknown_machines_may_be_sent_to_their_disk_when_configured() {
    let bed = Bed::new();
    bed.edit(
        "profiles/kickstand.yaml",
        "unknown: ignore",
        "unknown: local-boot",
    );
    let daemon = Daemon::start(&bed.config());
    let (status, body) = daemon.get("/boot/52:54:00:ff:00:01.ipxe");
    assert_eq!(status, 200);
    assert!(
        body.starts_with("#!ipxe\n") && body.contains("\nexit\n") && !body.contains("kernel"),
        "{body}"
    );
    assert_eq!(
        daemon.get("/ks/52:54:00:ff:00:01").0,
        404,
        "still never a kickstart"
    );
}

#[test]
fn installed_hosts_boot_their_disk_until_rearmed() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let token = daemon.build_token(NODE01);
    let (status, ks) = daemon.get(&format!("/ks/{NODE01}?token={token}"));
    assert_eq!(status, 200, "{ks}");
    assert_eq!(
        daemon
            .post(&format!("/api/hosts/{NODE01}/installing?token={token}"))
            .0,
        200
    );
    let (_, script) = daemon.get(&format!("/boot/{NODE01}.ipxe"));
    assert!(script.contains("kernel "), "still installing: {script}");
    assert_eq!(
        support::token_in(&script).as_deref(),
        Some(token.as_str()),
        "one build token per install"
    );

    let (status, body) = daemon.post(&format!("/api/hosts/{NODE01}/installed?token={token}"));
    assert_eq!(status, 200, "{body}");
    let (_, script) = daemon.get(&format!("/boot/{NODE01}.ipxe"));
    assert!(
        script.contains("\nexit\n") && !script.contains("kernel "),
        "boot once:\n{script}"
    );
    // The install is over: its token is dead.
    assert_eq!(daemon.get(&format!("/ks/{NODE01}?token={token}")).0, 403);

    // The state survives a restart of the daemon.
    assert!(daemon.stop(), "clean shutdown on SIGTERM");
    let daemon = Daemon::start(&bed.config());
    let (_, script) = daemon.get(&format!("/boot/{NODE01}.ipxe"));
    assert!(script.contains("\nexit\n"), "{script}");

    // Re-arming needs the operator.
    let rearm = format!("/api/hosts/{NODE01}/rearm");
    assert_eq!(daemon.post(&rearm).0, 403);
    assert_eq!(
        daemon.post_as(&rearm, Some(&token), "").0,
        403,
        "a build token is no operator token"
    );
    let operator = daemon.operator_token(&bed);
    assert_eq!(daemon.https("POST", &rearm, Some(&operator)).0, 200);
    let (_, script) = daemon.get(&format!("/boot/{NODE01}.ipxe"));
    assert!(script.contains("kernel "), "re-armed:\n{script}");
    let fresh = support::token_in(&script).expect("a new token");
    assert_ne!(fresh, token, "a re-armed host gets a new build token");
    assert_eq!(
        daemon.get(&format!("/ks/{NODE01}?token={token}")).0,
        403,
        "the old one stays dead"
    );
    assert_eq!(daemon.get(&format!("/ks/{NODE01}?token={fresh}")).0, 200);
}

fn raw(daemon: &Daemon, request: &str) -> String {
    let addr = daemon.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn hostile_requests_are_refused() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    for (path, want) in [
        ("/ks/../../etc/passwd", 400),
        ("/ks/%2e%2e%2fetc%2fpasswd", 400),
        ("/boot/..%2f..%2fetc%2fpasswd.ipxe", 400),
        ("/etc/passwd", 404),
        ("/api/hosts/52:54:00:10:00:01/format-disk", 404),
    ] {
        let (status, body) = daemon.get(path);
        assert_eq!(status, want, "{path}: {body}");
    }
    let absolute = raw(
        &daemon,
        "GET http://example.invalid/ HTTP/1.1\r\nHost: example.invalid\r\nConnection: close\r\n\r\n",
    );
    assert!(absolute.starts_with("HTTP/1.1 403"), "{absolute}");
    let connect = raw(
        &daemon,
        "CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid:443\r\nConnection: close\r\n\r\n",
    );
    assert!(connect.starts_with("HTTP/1.1 403"), "{connect}");
    let garbage = raw(&daemon, "\x00\x01\x02 not http at all\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    // Still serving after all of that.
    let token = daemon.build_token(NODE01);
    assert_eq!(daemon.get(&format!("/ks/{NODE01}?token={token}")).0, 200);
}

#[test]
fn status_and_metrics() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let token = daemon.build_token(NODE01);
    daemon.get(&format!("/ks/{NODE01}?token={token}"));
    daemon.get(&format!("/ks/{NODE01}?token=wrong"));
    let (status, page) = daemon.get("/status");
    assert_eq!(status, 200);
    assert!(
        page.contains("last reload  ok") && page.contains("node01"),
        "{page}"
    );
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.contains("kickstand_kickstarts_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kickstand_profiles_hosts 4"), "{metrics}");
    for line in [
        "kickstand_hosts{phase=\"new\"} 3",
        "kickstand_hosts{phase=\"installing\"} 1",
        "kickstand_http_requests_total{route=\"kickstart\",status=\"403\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(
        metrics.contains("kickstand_token_rejections_total 1"),
        "{metrics}"
    );
}

/// `/api/status?rows=…` is one page of the rack, filtered and sorted by
/// the appliance (what the status page polls); without `rows` it is the
/// whole rack, as scripts read it.
#[test]
fn the_status_document_pages_the_rack() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let doc = |query: &str| -> serde_json::Value {
        let (status, body) = daemon.get(&format!("/api/status{query}"));
        assert_eq!(status, 200, "{query}: {body}");
        serde_json::from_str(&body).expect("JSON")
    };
    let names = |doc: &serde_json::Value| -> Vec<String> {
        doc["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| h["hostname"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let whole = doc("");
    assert_eq!(names(&whole).len(), 4);
    assert!(whole["hosts_page"].is_null());

    let first = doc("?rows=2&sort=hostname");
    assert_eq!(names(&first), ["db01", "node01"]);
    assert_eq!(
        first["hosts_page"],
        serde_json::json!({"total": 4, "matching": 4, "page": 0, "rows": 2})
    );
    // Past the end: the last page there is, in the order asked.
    let last = doc("?rows=3&page=9&sort=hostname&dir=-1");
    assert_eq!(names(&last), ["db01"]);
    assert_eq!(last["hosts_page"]["page"], 1);
    let found = doc("?rows=10&filter=%20NODE0%20");
    assert_eq!(names(&found), ["node01", "node02"]);
    assert_eq!(found["hosts_page"]["matching"], 2);
    assert_eq!(found["hosts_page"]["total"], 4);

    for bad in [
        "?rows=0",
        "?rows=501",
        "?rows=5&sort=token",
        "?rows=5&page=x",
    ] {
        assert_eq!(daemon.get(&format!("/api/status{bad}")).0, 400, "{bad}");
    }
}
