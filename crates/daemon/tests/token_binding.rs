//! A host's build token goes only to the address its own DHCP exchange was
//! given, as a hostile LAN host would test it: a real exchange with the
//! office DHCP server (dnsmasq) from the host's MAC, a second address on
//! the segment that asks for the same boot script over HTTP and TFTP, a
//! token read off the wire replayed from there, and a forged REQUEST that
//! claims the MAC for another address.
//!
//! ```text
//!  ns ks-tb-0: ksbr0 10.78.0.1   ── kickstand serve (ProxyDHCP on ksbr0)
//!  ns ks-tb-1: 10.78.0.2         ── dnsmasq, the office DHCP server
//!  ns ks-tb-2: 52:54:00:00:00:02 ── the host: busybox udhcpc, then curl
//!  ns ks-tb-3: 10.78.0.66        ── the stranger: curl, curl tftp://, a forged REQUEST
//! ```
//!
//! The QEMU tests of `netboot.rs` install BIOS, UEFI and Secure Boot
//! machines through the same binding (Kickstand runs in proxy mode there).

mod support;

use std::time::Duration;

use support::segment::{APPLIANCE, Segment, sh};
use support::{Bed, eventually, token_in};

const MAC: &str = "52:54:00:00:00:02";
const STRANGER: &str = "10.78.0.66";
const OFFICE: usize = 1;
const HOST: usize = 2;
const STRANGER_NS: usize = 3;

fn get(net: &Segment, ns: usize, path: &str) -> (u16, String) {
    net.curl(ns, &net.url(path), &[])
}

/// The status document, built after this call: one built before is
/// shared for a second.
fn status_doc(net: &Segment) -> serde_json::Value {
    std::thread::sleep(Duration::from_millis(1100));
    serde_json::from_str(&net.get("/api/status")).unwrap_or_default()
}

fn host_row(net: &Segment) -> serde_json::Value {
    status_doc(net)["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["mac"] == MAC).cloned())
        .unwrap_or_default()
}

/// The host's own DHCP exchange with the office server: DISCOVER, OFFER,
/// REQUEST (option 50, the office's server id), ACK. Returns the leased
/// address, configured on the host's interface.
fn lease(net: &Segment) -> String {
    sh(&[
        "ip",
        "-n",
        net.name(HOST),
        "link",
        "set",
        "eth0",
        "address",
        MAC,
    ]);
    net.dhcp_lease(HOST, "eth0")
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq, busybox udhcpc; run by .ci/run"]
fn the_build_token_goes_only_to_the_address_the_hosts_dhcp_exchange_gave_it() {
    let bed = Bed::new();
    let mut net = Segment::up("tb", "10.78.0", &[Some(2), None, Some(66)], &bed);
    net.configure(&bed, "proxy");
    bed.edit("profiles/kickstand.yaml", "tftp_port: 0", "tftp_port: 6969");
    bed.write(
        "profiles/hosts/client.yaml",
        &format!("hosts:\n  \"{MAC}\":\n    hostname: client02\n"),
    );
    net.serve(&bed.config());
    let office = net.dnsmasq(
        OFFICE,
        &[
            "--dhcp-range=10.78.0.100,10.78.0.150,255.255.255.0,1h",
            "--dhcp-authoritative",
        ],
    );
    net.keep(office);
    let script = format!("/boot/{MAC}.ipxe");

    // Before the host's exchange: nobody gets its token, and a fetch
    // moves nothing.
    let (code, body) = get(&net, STRANGER_NS, &script);
    assert_eq!(code, 200, "{body}");
    assert!(token_in(&body).is_none(), "{body}");
    assert!(
        body.contains("no DHCP exchange of this machine was seen"),
        "{body}"
    );
    assert_eq!(
        host_row(&net)["phase"],
        "new",
        "an anonymous fetch moves no phase"
    );

    // The host's own exchange with the office server.
    let leased = lease(&net);
    assert!(leased.starts_with("10.78.0.1"), "{leased}");

    // The stranger asks again, over HTTP and over TFTP: no token, and its
    // console would say why.
    let (code, body) = get(&net, STRANGER_NS, &script);
    assert_eq!(code, 200, "{body}");
    assert!(token_in(&body).is_none(), "{body}");
    assert!(
        body.contains(&format!("gave it {leased}, not this address")),
        "{body}"
    );
    let grub = net.curl(
        STRANGER_NS,
        &format!(
            "tftp://10.78.0.1:6969/grub/grub.cfg-01-{}",
            MAC.replace(':', "-")
        ),
        &[],
    );
    assert!(!grub.1.contains("token="), "{grub:?}");
    assert!(grub.1.contains("not this address"), "{grub:?}");
    let row = host_row(&net);
    assert_ne!(row["phase"], "booting", "{row}");
    let status = status_doc(&net);
    let withheld = status["appliance"]["tokens_withheld"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        withheld
            .iter()
            .any(|w| w["mac"] == MAC && w["ip"] == STRANGER && w["reason"] == "other-address"),
        "{withheld:?}"
    );
    let metrics = get(&net, APPLIANCE, "/metrics").1;
    assert!(
        metrics.contains("kickstand_build_tokens_withheld_total{name=\"other-address\"}"),
        "{metrics}"
    );
    let timeline = get(&net, APPLIANCE, &format!("/api/hosts/{MAC}/timeline")).1;
    assert!(timeline.contains("token-withheld"), "{timeline}");

    // The host itself gets its token; read off the wire and replayed from
    // the stranger's address, it opens nothing.
    let (code, body) = get(&net, HOST, &script);
    assert_eq!(code, 200, "{body}");
    let token = token_in(&body).unwrap_or_else(|| panic!("no token for the host:\n{body}"));
    assert_eq!(host_row(&net)["phase"], "booting");
    let ks = format!("/ks/{MAC}?token={token}");
    let (code, stolen) = get(&net, STRANGER_NS, &ks);
    assert_eq!(code, 403, "{stolen}");
    let out = net
        .exec(STRANGER_NS)
        .args([
            "curl",
            "-sS",
            "-m",
            "10",
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!(
            "http://10.78.0.1:8080/api/hosts/{MAC}/installed?token={token}"
        ))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "403",
        "the stranger cannot mark it installed"
    );
    let (code, kickstart) = get(&net, HOST, &ks);
    assert_eq!(code, 200, "{kickstart}");
    assert!(kickstart.contains("rootpw"), "{kickstart}");

    // A forged REQUEST claims the MAC for the stranger's address: the
    // alarm, both addresses, the host held and its token revoked.
    net.forge_request(STRANGER_NS, MAC, STRANGER, "10.78.0.2");
    let held = eventually(Duration::from_secs(10), || {
        let row = host_row(&net);
        (row["phase"] == "failed").then_some(row)
    })
    .unwrap_or_else(|| panic!("the forged REQUEST raised no alarm:\n{}", net.log()));
    let status = status_doc(&net);
    let alarm = status["appliance"]["tokens_withheld"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["reason"] == "conflict").cloned())
        .unwrap_or_else(|| panic!("no spoofing warning: {status}"));
    assert_eq!(alarm["mac"], MAC);
    assert_eq!(alarm["addresses"], serde_json::json!([leased, STRANGER]));
    let page = net.get("/status");
    assert!(
        page.contains(&format!(
            "WARNING      two addresses claim {MAC}: possible spoofing ({leased}, {STRANGER})"
        )),
        "{page}"
    );
    assert!(
        net.log()
            .contains("two addresses claim one MAC: possible spoofing"),
        "{}",
        net.log()
    );
    let (code, _) = get(&net, HOST, &ks);
    assert_eq!(code, 403, "the revoked token opens nothing: {held}");
    let (_, body) = get(&net, HOST, &script);
    assert!(
        token_in(&body).is_none(),
        "a held host gets no install:\n{body}"
    );
}
