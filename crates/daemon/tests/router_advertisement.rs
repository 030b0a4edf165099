//! `dhcp.answer_router_solicitations`, against a real router-discovery
//! client: `rdisc6` (Debian's ndisc6) on a PXE client's MAC is answered
//! once, and only after ProxyDHCP answered that MAC's iPXE, with an
//! advertisement that configures nothing; after an answer to the
//! firmware's own PXE, or with the setting off, never.
//!
//! ```text
//!  ns ks-ra-0: ksbr0 10.78.0.1 ── kickstand serve (ProxyDHCP on ksbr0)
//!  ns ks-ra-1: 10.78.0.50      ── on the MAC of a captured DISCOVER (OVMF's,
//!                                 then iPXE's): it, rdisc6, a forged solicitation
//! ```
//!
//! The netboot bed's QEMU tests run it with real iPXE and time the boots.

mod support;

use std::time::Duration;

use support::Bed;
use support::segment::{Discover, IPXE_DISCOVER, OVMF_DISCOVER, Segment, sh};

const CLIENT: usize = 1;

/// The segment with `kickstand serve` in proxy mode, both captured
/// clients profiled, and `answer_router_solicitations` as `on` says.
fn serve(test: &str, bed: &Bed, on: bool) -> Segment {
    serve_under(&[], test, bed, on)
}

/// [`serve`], the daemon started by `wrapper`.
fn serve_under(wrapper: &[&str], test: &str, bed: &Bed, on: bool) -> Segment {
    let mut net = Segment::up(test, "10.78.0", &[Some(50)], bed);
    net.configure(bed, "proxy");
    bed.edit(
        "profiles/kickstand.yaml",
        "answer_router_solicitations: false",
        &format!("answer_router_solicitations: {on}"),
    );
    let hosts: String = [OVMF_DISCOVER, IPXE_DISCOVER]
        .iter()
        .enumerate()
        .map(|(i, d)| format!("  \"{}\":\n    hostname: client{i}\n", d.mac))
        .collect();
    bed.write("profiles/hosts/clients.yaml", &format!("hosts:\n{hosts}"));
    net.serve_under(wrapper, &bed.config());
    net
}

/// The client takes `mac`, so its solicitations come from that machine.
/// Its kernel neither solicits routers itself (that would use a grant up
/// before `rdisc6` runs) nor holds its link-local address back for
/// duplicate detection.
fn client_on(net: &Segment, mac: &str) {
    let ns = net.name(CLIENT);
    sh(&["ip", "-n", ns, "link", "set", "eth0", "down"]);
    sh(&["ip", "-n", ns, "link", "set", "eth0", "address", mac]);
    for setting in ["accept_ra=0", "accept_dad=0"] {
        let key = format!("net.ipv6.conf.eth0.{setting}");
        let status = net
            .exec(CLIENT)
            .args(["sysctl", "-qw", &key])
            .status()
            .expect("sysctl");
        assert!(status.success(), "sysctl {key}");
    }
    sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
}

/// The client, on `discover`'s MAC, sends that DISCOVER; returns once
/// ProxyDHCP answered it.
fn answered(net: &Segment, discover: Discover) {
    client_on(net, discover.mac);
    net.discover(CLIENT, discover);
    let answered = support::eventually(Duration::from_secs(10), || {
        net.log()
            .lines()
            .any(|l| l.contains("dhcp: answered") && l.contains(discover.mac))
            .then_some(())
    });
    assert!(
        answered.is_some(),
        "no ProxyDHCP answer to {}:\n{}",
        discover.mac,
        net.log()
    );
}

/// What `rdisc6` printed of the one advertisement it got, or `None`.
fn solicit(net: &Segment) -> Option<String> {
    let out = net
        .exec(CLIENT)
        .args(["rdisc6", "-1", "-n", "-r", "2", "-w", "1000", "eth0"])
        .output()
        .expect("rdisc6 (apt-get install ndisc6)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    out.status.success().then_some(text)
}

/// `rdisc6`'s value for `field` (its lines read `Field : value`).
fn field<'a>(advertisement: &'a str, name: &str) -> &'a str {
    advertisement
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no `{name}` in:\n{advertisement}"))
}

/// A router solicitation with the client's MAC that came through a router
/// (hop limit 64, not 255): RFC 4861 has it dropped.
fn forged_through_a_router(net: &Segment) {
    let mac = IPXE_DISCOVER.mac.replace(':', "");
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 64)\n\
         rs = bytes([133, 0, 0, 0, 0, 0, 0, 0, 1, 1]) + bytes.fromhex('{mac}')\n\
         s.sendto(rs, ('ff02::2', 0, 0, socket.if_nametoindex('eth0')))\n"
    );
    net.python(CLIENT, &script, &[]);
}

/// The `kickstand_router_solicitations` sample for `labels`, or 0.
fn counted(net: &Segment, labels: &str) -> u64 {
    let series = format!("kickstand_router_solicitations_total{{{labels}}} ");
    net.get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "peer: needs root/netns, rdisc6 (ndisc6); run by tests/run"]
fn a_machine_just_answered_gets_one_advertisement_that_configures_nothing() {
    let bed = Bed::new();
    let net = serve("ra", &bed, true);
    assert!(
        net.log().contains("answering the router solicitations"),
        "{}",
        net.log()
    );

    client_on(&net, IPXE_DISCOVER.mac);
    assert_eq!(solicit(&net), None, "answered before any DHCP answer");
    answered(&net, OVMF_DISCOVER);
    assert_eq!(solicit(&net), None, "answered after the firmware's PXE");

    answered(&net, IPXE_DISCOVER);
    // Dropped by the socket's filter, so it does not use the grant up.
    forged_through_a_router(&net);
    let advertisement = solicit(&net)
        .unwrap_or_else(|| panic!("no advertisement after the DHCP answer:\n{}", net.log()));
    assert_eq!(
        field(&advertisement, "Router lifetime"),
        "0 (0x00000000) seconds"
    );
    assert_eq!(field(&advertisement, "Stateful address conf."), "No");
    assert_eq!(field(&advertisement, "Stateful other conf."), "No");
    assert!(
        !advertisement.contains("Prefix") && !advertisement.contains("Source link-layer"),
        "options in the advertisement:\n{advertisement}"
    );
    // From the appliance's link-local address, to the client's alone.
    assert!(
        advertisement
            .lines()
            .any(|l| l.trim().starts_with("from fe80::")),
        "{advertisement}"
    );
    assert!(
        net.log().contains("router solicitation answered"),
        "{}",
        net.log()
    );

    assert_eq!(solicit(&net), None, "a second advertisement for one answer");
    assert_eq!(counted(&net, "outcome=\"advertised\",reason=\"\""), 1);
    assert!(counted(&net, "outcome=\"ignore\",reason=\"not-granted\"") >= 3);
}

#[test]
#[ignore = "peer: needs root/netns, rdisc6 (ndisc6); run by tests/run"]
fn with_the_setting_off_no_solicitation_is_answered() {
    let bed = Bed::new();
    let net = serve("ro", &bed, false);
    answered(&net, IPXE_DISCOVER);
    assert_eq!(solicit(&net), None, "answered with the setting off");
    assert_eq!(counted(&net, "outcome=\"advertised\",reason=\"\""), 0);
}

/// A unit without `CAP_NET_RAW` (one an upgrade rewrote, say): the answers
/// only make iPXE start sooner, so the daemon starts all the same, answers
/// ProxyDHCP, and its log says why no solicitation is answered.
#[test]
#[ignore = "peer: needs root/netns, rdisc6 (ndisc6), setpriv; run by tests/run"]
fn without_cap_net_raw_proxydhcp_serves_and_the_log_says_why() {
    let bed = Bed::new();
    let without_raw = [
        "setpriv",
        "--bounding-set=-net_raw",
        "--inh-caps=-net_raw",
        "--",
    ];
    let net = serve_under(&without_raw, "rn", &bed, true);
    assert!(
        net.log()
            .contains("not answering router solicitations (dhcp.answer_router_solicitations): its raw ICMPv6 socket needs CAP_NET_RAW"),
        "{}",
        net.log()
    );
    answered(&net, IPXE_DISCOVER);
    assert_eq!(solicit(&net), None, "answered without a raw socket");
}
