//! Another DHCPv6 server handing out boot files is found by Kickstand's
//! probe (an Information-request that looks like EDK2's PXE): a warning
//! in the log once, on the status page and as a metric, with its address
//! and its boot file URL, forgotten once it has been quiet for
//! `dhcp.rogue_forget_after`. The office's DHCPv6 server, which answers
//! the probe without a boot file, is not one; nor is one that names the
//! shim on Kickstand (what GRUB over IPv6 needs of the office), nor
//! Kickstand, which has a profile for its own MAC and so would answer a
//! probe that reached its DHCPv6 front.
//!
//! ```text
//!  ns ks-r6-0: ksbr0 fd78::1 ── kickstand serve (IPv6 only, DHCPv6 boot
//!              52:54:00:00:78:01  answers and the probe, on ksbr0)
//!  ns ks-r6-1: eth0 fd78::2   ── radvd (M flag) and dnsmasq, the office's DHCPv6 server:
//!                                leases, no boot file
//!  ns ks-r6-2: eth0 fd78::9   ── dnsmasq, stateless, offers tftp://[fd78::9]/evil.efi
//!  ns ks-r6-3: eth0 fd78::3   ── dnsmasq, stateless, names the shim on Kickstand
//! ```

mod support;

use std::time::Duration;

use support::segment::{APPLIANCE, Segment, sh};
use support::{Bed, eventually};

const OFFICE: usize = 1;
const ROGUE: usize = 2;
const NAMES_OUR_SHIM: usize = 3;
/// The appliance's bridge, set so that a profile can name it.
const APPLIANCE_MAC: &str = "52:54:00:00:78:01";
/// The segment's /64 (ipv6_boot has fd77::, token_binding6 fd74::).
const PREFIX: &str = "fd78::";
const EVIL: &str = "tftp://[fd78::9]/evil.efi";
const OUR_SHIM: &str = "tftp://[fd78::1]/os/centos-stream-9/EFI/BOOT/BOOTX64.EFI";

/// The link-local address of member `ns`'s `eth0`, once it has one that
/// is no longer tentative: where its DHCPv6 server answers from.
fn link_local(net: &Segment, ns: usize) -> String {
    eventually(Duration::from_secs(10), || {
        let out = net
            .exec(ns)
            .args([
                "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| !l.contains("tentative"))?;
        let address = line
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)?;
        address.split('/').next().map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no link-local address on eth0 of {}", net.name(ns)))
}

/// An IPv6-only segment, Kickstand configured for it at fd78::1 (boot
/// answers over DHCPv6 only, other servers forgotten after 6 s of
/// quiet), the office's router and DHCPv6 server beside it; Kickstand not
/// started. `test` tells apart the namespaces of tests run by one process.
fn ipv6_segment(test: &str, bed: &Bed) -> Segment {
    let mut net = Segment::up(test, "10.82.0", &[Some(2), Some(9), Some(3)], bed);
    let a = net.name(APPLIANCE).to_owned();
    sh(&[
        "ip",
        "-n",
        &a,
        "link",
        "set",
        "ksbr0",
        "address",
        APPLIANCE_MAC,
    ]);
    net.ipv6_appliance(bed, PREFIX);
    net.ipv6_office(OFFICE, PREFIX, bed);
    for (ns, address) in [(ROGUE, "fd78::9/64"), (NAMES_OUR_SHIM, "fd78::3/64")] {
        // nodad: usable at once; the bed owns these addresses.
        let name = net.name(ns).to_owned();
        sh(&[
            "ip", "-n", &name, "addr", "add", address, "dev", "eth0", "nodad",
        ]);
    }
    bed.write(
        "profiles/hosts/appliance.yaml",
        &format!("hosts:\n  \"{APPLIANCE_MAC}\":\n    hostname: itself\n    os: centos-stream-9\n"),
    );
    bed.edit(
        "profiles/kickstand.yaml",
        "mode: proxy",
        "mode: proxy\n  rogue_forget_after: 6s",
    );
    net
}

/// Starts Kickstand, its probe's answers logged at debug.
fn serve(net: &mut Segment, bed: &Bed) {
    net.serve_under(
        &["env", "KICKSTAND_LOG=info,kickstand::probe6=debug"],
        &bed.config(),
    );
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq, promtool; run by .ci/run"]
fn a_dhcpv6_server_offering_boot_files_is_found_by_probing_and_forgotten_when_it_stops() {
    let bed = Bed::new();
    let mut net = ipv6_segment("r6", &bed);
    let names_our_shim = net.dnsmasq(
        NAMES_OUR_SHIM,
        &[
            "--dhcp-range=fd78::,static",
            &format!("--dhcp-option=option6:bootfile-url,{OUR_SHIM}"),
        ],
    );
    net.keep(names_our_shim);
    serve(&mut net, &bed);

    // Both answer the probe, and neither is a rogue: the office's has no
    // boot file, the other's is Kickstand's.
    for ns in [OFFICE, NAMES_OUR_SHIM] {
        let server = link_local(&net, ns);
        let answered = eventually(Duration::from_secs(30), || {
            net.log()
                .lines()
                .any(|l| l.contains("no other server's boot offer") && l.contains(&server))
                .then_some(())
        });
        assert!(
            answered.is_some(),
            "{server} never answered the probe:\n{}",
            net.log()
        );
    }
    assert_eq!(net.rogues(), Some(Vec::new()), "{}", net.log());

    let rogue = net.dnsmasq(
        ROGUE,
        &[
            "--dhcp-range=fd78::,static",
            &format!("--dhcp-option=option6:bootfile-url,{EVIL}"),
        ],
    );
    let server = link_local(&net, ROGUE);
    let found = eventually(Duration::from_secs(30), || {
        net.rogues().filter(|r| !r.is_empty())
    })
    .unwrap_or_else(|| panic!("the rogue DHCPv6 server went unnoticed:\n{}", net.log()));
    assert_eq!(
        found.len(),
        1,
        "only the rogue, not the offices, not Kickstand: {found:?}"
    );
    assert_eq!(found[0]["server"], server.as_str(), "{found:?}");
    assert_eq!(found[0]["offered"], EVIL, "{found:?}");
    assert_eq!(found[0]["client"], APPLIANCE_MAC, "{found:?}");
    let metrics = net.get("/metrics");
    let series = format!(r#"kickstand_rogue_dhcp_servers{{server="{server}",offered="{EVIL}"}} 1"#);
    assert!(
        metrics.lines().any(|l| l == series),
        "no {series}:\n{metrics}"
    );
    if let Some(complaints) = support::promtool_complaints(&metrics) {
        panic!("promtool check metrics:\n{complaints}\n{metrics}");
    }
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("kickstand_rogue_dhcp_servers{"))
            .count(),
        1,
        "{metrics}"
    );
    // Probes go on, every 2 s: still one warning, for one server.
    std::thread::sleep(Duration::from_secs(5));
    let logged = net.log();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("another server offers boot information"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logged}");
    assert!(warnings[0].contains(&server), "{logged}");
    // Kickstand's DHCPv6 front never heard its own probe: its own MAC,
    // which has a profile, was never answered.
    let timeline = net.get(&format!("/api/hosts/{APPLIANCE_MAC}/timeline"));
    assert!(!timeline.contains("dhcp-offer"), "{timeline}");
    assert!(!logged.contains("dhcpv6: answered"), "{logged}");

    // It stops: forgotten once it has been quiet for 6 s, while the office
    // goes on answering.
    let mut rogue = rogue;
    let _ = rogue.kill();
    let _ = rogue.wait();
    net.assert_rogues_forgotten(|| {});
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq; run by .ci/run"]
fn the_probe_leaves_udp_546_to_a_dhcpv6_client_of_the_appliance() {
    let bed = Bed::new();
    let mut net = ipv6_segment("r6c", &bed);
    // A DHCPv6 client of the appliance's OS, there before Kickstand, with
    // SO_REUSEADDR as systemd's binds.
    let client = net
        .exec(APPLIANCE)
        .args([
            "python3",
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('::', 546))\n\
             print('bound', flush=True)\n\
             time.sleep(120)\n",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut client = client;
    let mut bound = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.take().expect("stdout")),
        &mut bound,
    )
    .expect("the client's output");
    assert_eq!(bound.trim(), "bound");
    net.keep(client);
    serve(&mut net, &bed);

    let logged = net.log();
    assert!(
        logged.contains("cannot probe for other DHCPv6 servers")
            && logged.contains("UDP 546 is held by another DHCPv6 client"),
        "{logged}"
    );
    assert!(
        !logged.contains("probing for other DHCPv6 servers"),
        "{logged}"
    );
    // The rest serves as before.
    assert!(
        logged.contains("dhcpv6 listening on 547 and 4011"),
        "{logged}"
    );
}
