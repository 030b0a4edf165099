//! A host's build token over IPv6 goes only to the addresses its own
//! DHCPv6 exchanges were given (and its SLAAC address under them), with
//! real peers: the office's router and DHCPv6 server, and ISC `dhclient
//! -6` with the host's MAC taking a lease from it, in network namespaces
//! the test creates and always removes.
//!
//! ```text
//!  ns ks-tb6-0: ksbr0 fd74::1    ── kickstand serve (IPv6-only: address
//!                                   fd74::1, bind ::, DHCPv6 in proxy mode)
//!  ns ks-tb6-1: eth0 fd74::2     ── radvd (M flag) and dnsmasq, the office
//!                                   DHCPv6 server
//!  ns ks-tb6-2: 52:54:00:00:07:02 ── the host: dhclient -6, then curl from
//!                                   its lease, its SLAAC address and fd74::66
//!  ns ks-tb6-3: fd74::77         ── a stranger forging Requests with the MAC
//! ```

mod support;

use std::net::Ipv6Addr;
use std::process::Stdio;
use std::time::Duration;

use support::segment::{Segment, sh};
use support::{Bed, eventually, token_in};

const MAC: &str = "52:54:00:00:07:02";
/// The host's SLAAC address under the office's /64: modified EUI-64 of `MAC`.
const SLAAC: &str = "fd74::5054:ff:fe00:702";
/// A second address of the host's namespace that no exchange gave it.
const OTHER: &str = "fd74::66";
const STRANGER: &str = "fd74::77";
const OFFICE: usize = 1;
const HOST: usize = 2;
const STRANGER_NS: usize = 3;

/// `path` on the appliance over IPv6, from member `ns`'s address `from`.
fn get_from(net: &Segment, ns: usize, from: &str, path: &str) -> (u16, String) {
    let url = format!("http://[fd74::1]:8080{path}");
    net.curl(ns, &url, &["--interface", from])
}

fn add_address(net: &Segment, ns: usize, address: &str) {
    let address = format!("{address}/64");
    sh(&[
        "ip",
        "-n",
        net.name(ns),
        "addr",
        "add",
        &address,
        "dev",
        "eth0",
        "nodad",
    ]);
}

/// The host's own exchange: `dhclient -6` (Solicit, Advertise, Request,
/// Reply with the office server) on an interface with `MAC`, in the
/// foreground until the drop. Returns the leased address, configured on
/// the interface (its script is `/bin/true`: the test owns the address).
fn lease(net: &mut Segment, bed: &Bed) -> Ipv6Addr {
    let host = net.name(HOST).to_owned();
    // Down while it changes: its link-local address is formed from it.
    for args in [
        &["link", "set", "eth0", "down"][..],
        &["link", "set", "eth0", "address", MAC],
        &["link", "set", "eth0", "up"],
    ] {
        sh(&[&["ip", "-n", host.as_str()][..], args].concat());
    }
    // dhclient binds its link-local address, usable once DAD is done.
    let ready = eventually(Duration::from_secs(10), || {
        let out = net
            .exec(HOST)
            .args(["ip", "-6", "addr", "show", "dev", "eth0", "scope", "link"])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("fe80::") && !text.contains("tentative")).then_some(())
    });
    assert!(
        ready.is_some(),
        "the host's link-local address never came up"
    );
    let leases = bed.path("dhclient6.leases");
    let client = net
        .exec(HOST)
        .args(["dhclient", "-6", "-d", "-v", "-sf", "/bin/true", "-lf"])
        .arg(&leases)
        .arg("-pf")
        .arg(bed.path("dhclient6.pid"))
        .arg("eth0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(bed.path("dhclient6.log")).expect("log"))
        .spawn()
        .expect("dhclient");
    net.keep(client);
    let leased = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&leases).unwrap_or_default();
        text.split("iaaddr ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
    })
    .unwrap_or_else(|| {
        let log = std::fs::read_to_string(bed.path("dhclient6.log")).unwrap_or_default();
        panic!("no DHCPv6 lease from the office server:\n{log}")
    });
    add_address(net, HOST, &leased.to_string());
    leased
}

/// A Request to the office server with the MAC's DUID-LL, taking
/// `addresses` (one IA_NA), sent to ff02::1:2 from member `ns`: what
/// anyone on the LAN can send.
fn forge_request(net: &Segment, ns: usize, addresses: &[Ipv6Addr]) {
    let script = "import socket, struct, sys\n\
        mac = bytes.fromhex(sys.argv[1])\n\
        def opt(code, data): return struct.pack('!HH', code, len(data)) + data\n\
        ia = struct.pack('!III', 1, 0, 0) + b''.join(opt(5, socket.inet_pton(socket.AF_INET6, a) + bytes(8)) for a in sys.argv[2:])\n\
        m = bytes([3, 0x4b, 0x53, 0x36]) + opt(1, bytes([0, 3, 0, 1]) + mac)\n\
        m += opt(2, bytes([0, 3, 0, 1, 2, 0, 0, 0, 0, 2])) + opt(3, ia)\n\
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
        s.bind(('::', 546))\n\
        s.sendto(m, ('ff02::1:2', 547, 0, socket.if_nametoindex('eth0')))\n";
    let mac = MAC.replace(':', "");
    let addresses: Vec<String> = addresses.iter().map(Ipv6Addr::to_string).collect();
    let args: Vec<&str> = std::iter::once(mac.as_str())
        .chain(addresses.iter().map(String::as_str))
        .collect();
    net.python(ns, script, &args);
}

fn status_doc(net: &Segment) -> serde_json::Value {
    // One built less than a second ago is shared.
    std::thread::sleep(Duration::from_millis(1100));
    serde_json::from_str(&net.get("/api/status")).unwrap_or_default()
}

#[test]
#[ignore = "peer: needs root/netns, radvd, dnsmasq, isc-dhcp-client; run by .ci/run"]
fn the_build_token_goes_only_to_the_addresses_the_hosts_dhcpv6_exchange_gave_it() {
    let bed = Bed::new();
    let mut net = Segment::up("tb6", "10.74.0", &[Some(2), None, None], &bed);
    net.ipv6_appliance(&bed, "fd74::");
    net.ipv6_office(OFFICE, "fd74::", &bed);
    add_address(&net, STRANGER_NS, STRANGER);
    bed.write(
        "profiles/hosts/client.yaml",
        &format!("hosts:\n  \"{MAC}\":\n    hostname: client72\n"),
    );
    net.serve(&bed.config());
    let script = format!("/boot/{MAC}.ipxe");

    // Before the host's exchange nobody gets its token.
    let (code, body) = get_from(&net, STRANGER_NS, STRANGER, &script);
    assert_eq!(code, 200, "{body}");
    assert!(token_in(&body).is_none(), "{body}");
    assert!(
        body.contains("no DHCP exchange of this machine was seen"),
        "{body}"
    );

    let leased = lease(&mut net, &bed);
    let leased_text = leased.to_string();
    assert_eq!(leased.segments()[..4], [0xfd74, 0, 0, 0], "{leased}");
    add_address(&net, HOST, OTHER);
    add_address(&net, HOST, SLAAC);

    // From its lease, the script carries the token (the Request that took
    // the lease reached Kickstand a moment before the lease file).
    let token = eventually(Duration::from_secs(10), || {
        token_in(&get_from(&net, HOST, &leased_text, &script).1)
    })
    .unwrap_or_else(|| panic!("no token at the leased address:\n{}", net.log()));
    let ks = format!("/ks/{MAC}?token={token}");

    // From another address of the same machine's namespace: withheld, and
    // the console and the timeline say why.
    let (code, body) = get_from(&net, HOST, OTHER, &script);
    assert_eq!(code, 200, "{body}");
    assert!(token_in(&body).is_none(), "{body}");
    assert!(
        body.contains(&format!("gave it {leased}, not this address")),
        "{body}"
    );
    let timeline = net.get(&format!("/api/hosts/{MAC}/timeline"));
    let events: serde_json::Value = serde_json::from_str(&timeline).expect("json");
    let withheld = events["events"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["kind"] == "token-withheld" && e["detail"]["ip"] == OTHER)
        })
        .unwrap_or_else(|| panic!("no token-withheld from {OTHER} in {timeline}"));
    assert_eq!(withheld["detail"]["reason"], "other-address", "{withheld}");
    assert_eq!(withheld["detail"]["claimed"], leased_text, "{withheld}");

    // The kickstart: from the lease and from the machine's SLAAC address
    // under its /64 (an installer with addr-gen-mode eui64), not from
    // anywhere else.
    for from in [leased_text.as_str(), SLAAC] {
        let (code, kickstart) = get_from(&net, HOST, from, &ks);
        assert_eq!(code, 200, "from {from}: {kickstart}");
        assert!(kickstart.contains("rootpw"), "{kickstart}");
    }
    for (ns, from) in [(HOST, OTHER), (STRANGER_NS, STRANGER)] {
        let (code, body) = get_from(&net, ns, from, &ks);
        assert_eq!(code, 403, "from {from}: {body}");
    }

    // Forged Requests that claim the MAC for eight more addresses: the
    // ninth address of one build is the alarm, with both addresses.
    let forged: Vec<Ipv6Addr> = (0..8u16)
        .map(|n| Ipv6Addr::new(0xfd74, 0, 0, 0, 0, 0, 0x66, n))
        .collect();
    for four in forged.chunks(4) {
        forge_request(&net, STRANGER_NS, four);
    }
    let ninth = forged[7].to_string();
    let alarm = eventually(Duration::from_secs(10), || {
        status_doc(&net)["appliance"]["tokens_withheld"]
            .as_array()
            .and_then(|w| w.iter().find(|w| w["reason"] == "conflict").cloned())
    })
    .unwrap_or_else(|| panic!("the forged Requests raised no alarm:\n{}", net.log()));
    assert_eq!(alarm["mac"], MAC, "{alarm}");
    assert_eq!(
        alarm["addresses"],
        serde_json::json!([leased_text, ninth]),
        "{alarm}"
    );
    let page = net.get("/status");
    assert!(
        page.contains(&format!(
            "two addresses claim {MAC}: possible spoofing ({leased}, {ninth})"
        )),
        "{page}"
    );
    let (code, _) = get_from(&net, HOST, &leased_text, &ks);
    assert_eq!(code, 403, "the revoked token opens nothing");
}
