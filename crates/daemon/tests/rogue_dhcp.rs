//! A second ProxyDHCP on the segment (dnsmasq, offering another boot file)
//! is noticed: a warning in the log once per server, on the status page
//! and as a metric, cleared when it has been quiet for
//! `dhcp.rogue_forget_after`. Kickstand never answers or fights it. What
//! a forged offer carries (boot file, server name, boot menu) cannot write
//! lines into `/metrics`.
//!
//! ```text
//!  ns ks-rg-0: ksbr0 10.78.0.1 ── kickstand serve (ProxyDHCP on ksbr0)
//!  ns ks-rg-1: 10.78.0.9       ── dnsmasq, proxy mode, offers evil.efi
//!  ns ks-rg-2: 10.78.0.50      ── a PXE DISCOVER (OVMF's, captured) now and then
//! ```

mod support;

use std::time::Duration;

use support::segment::{APPLIANCE, OVMF_DISCOVER, Segment};
use support::{Bed, eventually};

/// The members: the rogue server and the PXE client.
const ROGUE: usize = 1;
const CLIENT: usize = 2;

/// What the appliance answers at `path` with an `Accept` header.
fn get_accepting(net: &Segment, path: &str, accept: &str) -> String {
    let header = format!("Accept: {accept}");
    net.curl(APPLIANCE, &net.url(path), &["-H", &header]).1
}

/// The segment (`test` tells apart the namespaces of tests run by one
/// process) with `kickstand serve` in proxy mode, watching for other
/// servers on ksbr0.
fn serve(test: &str, bed: &Bed) -> Segment {
    let mut net = Segment::up(test, "10.78.0", &[Some(9), Some(50)], bed);
    net.configure(bed, "proxy\n  rogue_forget_after: 3s");
    // The captured client has a profile: Kickstand answers it too.
    bed.write(
        "profiles/hosts/client.yaml",
        "hosts:\n  \"52:54:00:00:00:02\":\n    hostname: client02\n",
    );
    net.serve(&bed.config());
    assert!(net.log().contains("rogue_watch=true"), "{}", net.log());
    net
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq; run by .ci/run"]
fn a_second_proxydhcp_is_warned_about_and_forgotten_when_it_stops() {
    let bed = Bed::new();
    let net = serve("rg", &bed);

    let rogue = net.dnsmasq(
        ROGUE,
        &[
            "--dhcp-range=10.78.0.0,proxy,255.255.255.0",
            "--pxe-service=X86-64_EFI,evil-boot,evil.efi",
        ],
    );
    let status = eventually(Duration::from_secs(30), || {
        net.discover(CLIENT, OVMF_DISCOVER);
        net.rogues().filter(|r| !r.is_empty())
    })
    .unwrap_or_else(|| panic!("the second ProxyDHCP went unnoticed:\n{}", net.log()));
    assert_eq!(status[0]["server"], "10.78.0.9", "{status:?}");
    // dnsmasq offers its menu item by a boot server list (option 43).
    assert!(
        status[0]["offered"]
            .as_str()
            .is_some_and(|o| o.contains("PXE")),
        "{status:?}"
    );
    // Kickstand answered the same client, and never the rogue.
    let logged = net.log();
    // Its first answer to a machine in a while is logged at info.
    assert!(logged.contains("dhcp: answered"), "{logged}");
    let warnings = logged
        .lines()
        .filter(|l| l.contains("another server offers boot information"))
        .count();
    assert_eq!(
        warnings, 1,
        "warned once per server, not per offer:\n{logged}"
    );
    let metrics = net.get("/metrics");
    assert!(
        metrics.contains("kickstand_rogue_dhcp_servers{server=\"10.78.0.9\""),
        "{metrics}"
    );

    // It stops: the warning goes once it has been quiet for 3 s.
    let mut rogue = rogue;
    let _ = rogue.kill();
    let _ = rogue.wait();
    net.assert_rogues_forgotten(|| net.discover(CLIENT, OVMF_DISCOVER));
}

/// What a hostile server puts in its offers: a boot file that, written
/// unescaped, would end its series and add a `kickstand_hosts` line.
const FORGED: &str = "x\"} 1\nkickstand_hosts{phase=\"installed\"} 999";

/// Broadcasts, from the rogue namespace, three forged OFFERs to a PXE
/// client: the text in option 67 (and the server name), in the header's
/// file field only, and as a boot menu item (option 43).
fn forge_offers(net: &Segment) {
    let script = format!(
        r#"import socket, struct
forged = {FORGED:?}.encode()
def offer(server, sname=b"", file=b"", options=b""):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0x4b53, 0, 0x8000,
        bytes(4), bytes(4), socket.inet_aton(server), bytes(4),
        bytes.fromhex("525400000002"), sname, file)
    options = bytes([53, 1, 2, 54, 4]) + socket.inet_aton(server) + bytes([60, 9]) + b"PXEClient" + options
    return head + bytes.fromhex("63825363") + options + bytes([255])
item = struct.pack("!HB", 0x8000, len(forged)) + forged
menu = bytes([9, len(item)]) + item
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 67))
for p in [offer("10.78.0.9", sname=forged, options=bytes([67, len(forged)]) + forged),
          offer("10.78.0.10", file=forged + b"\\"),
          offer("10.78.0.11", options=bytes([43, len(menu)]) + menu)]:
    s.sendto(p, ("255.255.255.255", 68))
"#
    );
    net.python(ROGUE, &script, &[]);
}

#[test]
#[ignore = "peer: needs root/netns, promtool; run by .ci/run"]
fn a_forged_offer_cannot_write_lines_into_metrics() {
    let bed = Bed::new();
    let net = serve("rf", &bed);
    let rogues = eventually(Duration::from_secs(30), || {
        forge_offers(&net);
        net.rogues().filter(|r| r.len() == 3)
    })
    .unwrap_or_else(|| panic!("the forged offers went unnoticed:\n{}", net.log()));
    // The status page shows the text as it came (JSON escapes it).
    assert!(rogues.iter().any(|r| r["offered"] == FORGED), "{rogues:?}");

    if let Some(complaints) = support::promtool_complaints(&net.get("/metrics")) {
        panic!(
            "promtool check metrics:\n{complaints}\n{}",
            net.get("/metrics")
        );
    }
    let escaped = r#"x\"} 1\nkickstand_hosts{phase=\"installed\"} 999"#;
    for (accept, metrics) in [
        ("text", net.get("/metrics")),
        (
            "openmetrics",
            get_accepting(&net, "/metrics", "application/openmetrics-text"),
        ),
    ] {
        let forged_lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("kickstand_hosts{phase=\"installed\"} 99"))
            .collect();
        assert!(
            forged_lines.is_empty(),
            "{accept}: {forged_lines:?}\n{metrics}"
        );
        for series in [
            format!(r#"kickstand_rogue_dhcp_servers{{server="10.78.0.9",offered="{escaped}"}} 1"#),
            format!(
                r#"kickstand_rogue_dhcp_servers{{server="10.78.0.10",offered="{escaped}\\"}} 1"#
            ),
            format!(
                r#"kickstand_rogue_dhcp_servers{{server="10.78.0.11",offered="a PXE boot menu ({escaped})"}} 1"#
            ),
        ] {
            assert!(
                metrics.lines().any(|l| l == series),
                "{accept}: no line {series}\n{metrics}"
            );
        }
    }
}
