//! A `boot_vlan` host's installer takes its own address on the install
//! VLAN, and its build token follows it there once; any other second
//! address for its MAC still raises the spoofing alarm. Real exchanges
//! with the office DHCP server (dnsmasq) on both networks, busybox udhcpc
//! as the host, curl as its installer.
//!
//! ```text
//!  ns ks-bv-0: ksbr0 10.79.0.1, ksvl20 10.79.20.1 ── kickstand serve
//!              (ProxyDHCP on both; interface_vlans: {ksvl20: 20})
//!  ns ks-bv-1: eth0 10.79.0.2, eth1 10.79.20.2 ── dnsmasq, the office DHCP server
//!  ns ks-bv-2: eth0 (boot network), eth1 (VLAN 20) ── the host
//!  ns ks-bv-3: 10.79.0.66 ── the stranger: a forged REQUEST
//! ```
//!
//! This machine's kernel has no 802.1Q (`CONFIG_VLAN_8021Q`,
//! `CONFIG_BRIDGE_VLAN_FILTERING` unset), so VLAN 20 is a bridge of its
//! own here, as an appliance on the VLAN's access port sees it: which
//! interface is which VLAN is what `server.interface_vlans` says.

mod support;

use std::time::Duration;

use support::segment::{APPLIANCE, Segment, plug_veth, sh};
use support::{Bed, eventually, token_in};

const MAC: &str = "52:54:00:00:20:01";
/// A second host with `boot_vlan`, for the forged claim.
const SPOOFED_MAC: &str = "52:54:00:00:20:02";
const STRANGER: &str = "10.79.0.66";
const OFFICE: usize = 1;
const HOST: usize = 2;
const STRANGER_NS: usize = 3;

/// VLAN 20's segment: a bridge in the appliance's namespace with
/// 10.79.20.1, the office's `eth1` (10.79.20.2) and the host's `eth1`.
fn vlan_segment(net: &Segment) {
    let a = net.name(APPLIANCE);
    sh(&["ip", "-n", a, "link", "add", "ksvl20", "type", "bridge"]);
    sh(&[
        "ip",
        "-n",
        a,
        "addr",
        "add",
        "10.79.20.1/24",
        "dev",
        "ksvl20",
    ]);
    sh(&["ip", "-n", a, "link", "set", "ksvl20", "up"]);
    for (ns, port) in [(OFFICE, "w1"), (HOST, "w2")] {
        plug_veth(a, "ksvl20", port, net.name(ns), "eth1");
        sh(&["ip", "-n", net.name(ns), "link", "set", "eth1", "up"]);
    }
    sh(&[
        "ip",
        "-n",
        net.name(OFFICE),
        "addr",
        "add",
        "10.79.20.2/24",
        "dev",
        "eth1",
    ]);
}

/// The host's NICs take `mac` and lose their addresses: a machine
/// powering on.
fn power_on(net: &Segment, mac: &str) {
    let ns = net.name(HOST);
    for dev in ["eth0", "eth1"] {
        sh(&["ip", "-n", ns, "addr", "flush", "dev", dev]);
        sh(&["ip", "-n", ns, "link", "set", dev, "address", mac]);
    }
}

/// The host's DHCP exchange with the office server on `dev`; the leased
/// address is configured there, and made the way to the appliance.
fn lease(net: &Segment, dev: &str, gateway: &str) -> String {
    let leased = net.dhcp_lease(HOST, dev);
    let ns = net.name(HOST);
    sh(&[
        "ip", "-n", ns, "route", "replace", "default", "via", gateway, "dev", dev,
    ]);
    leased
}

/// The installer: the kernel left the boot network's address behind and
/// took one on the VLAN (its `ip=ksboot.20:dhcp`).
fn installer_on_vlan(net: &Segment) -> String {
    sh(&["ip", "-n", net.name(HOST), "addr", "flush", "dev", "eth0"]);
    lease(net, "eth1", "10.79.20.1")
}

fn status_doc(net: &Segment) -> serde_json::Value {
    // The status document is rebuilt once a second.
    std::thread::sleep(Duration::from_millis(1100));
    serde_json::from_str(&net.get("/api/status")).unwrap_or_default()
}

fn host_row(net: &Segment, mac: &str) -> serde_json::Value {
    status_doc(net)["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["mac"] == mac).cloned())
        .unwrap_or_default()
}

fn post(net: &Segment, url: &str) -> String {
    let out = net
        .exec(HOST)
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
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq, busybox udhcpc; run by tests/run"]
fn a_boot_vlan_installer_takes_the_token_onto_its_vlan_and_a_forged_claim_still_alarms() {
    let bed = Bed::new();
    let mut net = Segment::up("bv", "10.79.0", &[Some(2), None, Some(66)], &bed);
    vlan_segment(&net);
    net.configure(&bed, "proxy");
    bed.edit(
        "profiles/kickstand.yaml",
        "interfaces: [ksbr0]",
        "interfaces: [ksbr0, ksvl20]",
    );
    bed.edit(
        "profiles/kickstand.yaml",
        "interface_vlans: {}",
        "interface_vlans: { ksvl20: 20 }",
    );
    bed.write(
        "profiles/hosts/tagged.yaml",
        &format!("groups:\n  tagged:\n    match: {{ hostname: [\"tagged*\"] }}\n    profile:\n      boot_vlan: 20\nhosts:\n  \"{MAC}\":\n    hostname: tagged01\n  \"{SPOOFED_MAC}\":\n    hostname: tagged02\n"),
    );
    net.serve(&bed.config());
    let office = net.dnsmasq(
        OFFICE,
        &[
            "--interface=eth1",
            "--dhcp-range=10.79.0.100,10.79.0.150,255.255.255.0,1h",
            "--dhcp-range=10.79.20.100,10.79.20.150,255.255.255.0,1h",
            "--dhcp-authoritative",
        ],
    );
    net.keep(office);

    // Firmware and iPXE: the boot network. The script moves the installer
    // onto VLAN 20.
    power_on(&net, MAC);
    let boot_address = lease(&net, "eth0", "10.79.0.1");
    assert!(boot_address.starts_with("10.79.0.1"), "{boot_address}");
    let (code, script) = net.curl(HOST, &net.url(&format!("/boot/{MAC}.ipxe")), &[]);
    assert_eq!(code, 200, "{script}");
    let token = token_in(&script).unwrap_or_else(|| panic!("no token:\n{script}"));
    assert!(
        script.contains(&format!(
            " ifname=ksboot:{MAC} vlan=ksboot.20:ksboot ip=ksboot.20:dhcp"
        )),
        "{script}"
    );

    // The installer's own exchange on the VLAN, then its kickstart and
    // callbacks from there.
    let install_address = installer_on_vlan(&net);
    assert!(
        install_address.starts_with("10.79.20.1"),
        "{install_address}"
    );
    let ks = net.url(&format!("/ks/{MAC}?token={token}"));
    let fetched = eventually(Duration::from_secs(10), || {
        let (code, body) = net.curl(HOST, &ks, &[]);
        (code == 200).then_some(body)
    })
    .unwrap_or_else(|| panic!("the kickstart was refused on the VLAN:\n{}", net.log()));
    assert!(fetched.contains("rootpw"), "{fetched}");
    for report in ["installing", "installed"] {
        let url = net.url(&format!("/api/hosts/{MAC}/{report}?token={token}"));
        assert_eq!(post(&net, &url), "200", "{report} from {install_address}");
    }
    let row = host_row(&net, MAC);
    assert_eq!(row["phase"], "installed", "{row}");
    let timeline = net.get(&format!("/api/hosts/{MAC}/timeline"));
    let events: serde_json::Value = serde_json::from_str(&timeline).unwrap_or_default();
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let from = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["detail"]["ip"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        from("kickstart-fetch"),
        std::slice::from_ref(&install_address),
        "{timeline}"
    );
    assert!(
        from("callback").iter().all(|ip| *ip == install_address) && from("callback").len() == 2,
        "{timeline}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "token-bound"
            && e["detail"]["ip"] == install_address.as_str()
            && e["detail"]["from"] == boot_address.as_str()),
        "{timeline}"
    );
    assert!(!net.log().contains("possible spoofing"), "{}", net.log());

    // A second host with boot_vlan, on its VLAN already: a REQUEST forged
    // on the boot network for its MAC is the alarm, as for any host.
    power_on(&net, SPOOFED_MAC);
    lease(&net, "eth0", "10.79.0.1");
    let (_, script) = net.curl(HOST, &net.url(&format!("/boot/{SPOOFED_MAC}.ipxe")), &[]);
    assert!(token_in(&script).is_some(), "{script}");
    let moved_to = installer_on_vlan(&net);
    net.forge_request(STRANGER_NS, SPOOFED_MAC, STRANGER, "10.79.0.2");
    let held = eventually(Duration::from_secs(10), || {
        let row = host_row(&net, SPOOFED_MAC);
        (row["phase"] == "failed").then_some(row)
    })
    .unwrap_or_else(|| panic!("the forged REQUEST raised no alarm:\n{}", net.log()));
    let status = status_doc(&net);
    let alarm = status["appliance"]["tokens_withheld"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["reason"] == "conflict").cloned())
        .unwrap_or_else(|| panic!("no spoofing warning: {status}"));
    assert_eq!(alarm["mac"], SPOOFED_MAC, "{held}");
    assert_eq!(alarm["addresses"], serde_json::json!([moved_to, STRANGER]));
    assert_eq!(host_row(&net, MAC)["phase"], "installed");
}
