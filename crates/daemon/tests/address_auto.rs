//! `server.address: auto` against the real daemon in a network namespace:
//! an interface without an address is a config error like any other
//! (`file:line:col`, `check` fails); with one, the address it resolves
//! (here the default route's interface's) is the next server ProxyDHCP
//! offers, and a reload follows a new address.
//!
//! ```text
//!  ns ks-au-0: ksbr0 10.81.0.1, default route on ksbr0; bridge ks-empty, no address
//!              ── kickstand serve, address: auto
//!  ns ks-au-1: 10.81.0.50 ── a PXE DISCOVER (OVMF's, captured)
//! ```

mod support;

use std::time::Duration;

use support::segment::{APPLIANCE, OVMF_DISCOVER, Segment, sh};
use support::{Bed, eventually};

/// The PXE client: OVMF's captured DISCOVER is from this MAC.
const MAC: &str = OVMF_DISCOVER.mac;
const CLIENT: usize = 1;

fn host_profile(hostname: &str) -> String {
    format!("hosts:\n  \"{MAC}\":\n    hostname: {hostname}\n")
}

/// `kickstand check` in the appliance's namespace: whether it passed, and
/// what it said on stderr.
fn check(net: &Segment, bed: &Bed) -> (bool, String) {
    let out = net
        .exec(APPLIANCE)
        .arg(env!("CARGO_BIN_EXE_kickstand"))
        .arg("--config")
        .arg(bed.config())
        .arg("check")
        .output()
        .expect("kickstand check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The next server (siaddr) of the ProxyDHCP offer to OVMF's captured
/// DISCOVER, broadcast from the client; empty if none came within 2 s.
fn next_server_offered(net: &Segment) -> String {
    let hex = OVMF_DISCOVER.hex();
    let script = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
         s.bind(('0.0.0.0', 68))\n\
         s.settimeout(0.2)\n\
         p = bytearray.fromhex('{hex}')\n\
         p[10] |= 0x80\n\
         s.sendto(bytes(p), ('255.255.255.255', 67))\n\
         deadline = time.time() + 2\n\
         while time.time() < deadline:\n\
         \x20   try:\n\
         \x20       r, _ = s.recvfrom(2048)\n\
         \x20   except socket.timeout:\n\
         \x20       continue\n\
         \x20   if len(r) > 240 and r[0] == 2 and r[4:8] == p[4:8]:\n\
         \x20       print(socket.inet_ntoa(r[20:24]))\n\
         \x20       break\n"
    );
    net.python(CLIENT, &script, &[]).trim().to_owned()
}

#[test]
#[ignore = "peer: needs root/netns; run by .ci/run"]
fn auto_sends_machines_to_the_interface_s_address_and_follows_it_at_reload() {
    let bed = Bed::new();
    let mut net = Segment::up("au", "10.81.0", &[Some(50)], &bed);
    net.configure(&bed, "proxy");
    bed.edit(
        "profiles/kickstand.yaml",
        "address: 10.81.0.1",
        "address: auto",
    );
    bed.write("profiles/hosts/client.yaml", &host_profile("client02"));
    let appliance = net.name(APPLIANCE).to_owned();
    sh(&[
        "ip", "-n", &appliance, "link", "add", "ks-empty", "type", "bridge",
    ]);
    sh(&["ip", "-n", &appliance, "link", "set", "ks-empty", "up"]);

    // No address yet: refused where it is written, as every config error.
    bed.edit(
        "profiles/kickstand.yaml",
        "interfaces: [ksbr0]",
        "interfaces: [ks-empty]",
    );
    let (ok, said) = check(&net, &bed);
    let config = std::fs::read_to_string(bed.config()).expect("config");
    let line = 1 + config
        .lines()
        .position(|l| l == "  address: auto")
        .expect("the address line");
    let want = format!(
        "{}:{line}:12: server.address auto: ks-empty has no IPv4 address yet",
        bed.config().display()
    );
    assert!(!ok && said.contains(&want), "wanted {want:?} in:\n{said}");
    // No interface named and no default route: nothing to take it from.
    bed.edit(
        "profiles/kickstand.yaml",
        "interfaces: [ks-empty]",
        "interfaces: []",
    );
    let (ok, said) = check(&net, &bed);
    assert!(
        !ok && said.contains("server.address auto: there is no default route"),
        "{said}"
    );

    // The default route's interface's address is the one servers get.
    sh(&[
        "ip", "-n", &appliance, "route", "add", "default", "dev", "ksbr0",
    ]);
    net.serve(&bed.config());
    assert_eq!(next_server_offered(&net), "10.81.0.1", "{}", net.log());
    assert!(
        net.get("/status")
            .contains("serving at   http://10.81.0.1:8080\n"),
        "{}",
        net.get("/status")
    );

    // The office DHCP gave the appliance another address: the next reload
    // (here an edit of a profile) sends servers there.
    sh(&["ip", "-n", &appliance, "addr", "flush", "dev", "ksbr0"]);
    sh(&[
        "ip",
        "-n",
        &appliance,
        "addr",
        "add",
        "10.81.0.2/24",
        "dev",
        "ksbr0",
    ]);
    sh(&[
        "ip", "-n", &appliance, "route", "replace", "default", "dev", "ksbr0",
    ]);
    bed.write("profiles/hosts/client.yaml", &host_profile("client02b"));
    let reloaded = eventually(Duration::from_secs(20), || {
        let hosts = net.curl(CLIENT, "http://10.81.0.2:8080/api/hosts", &[]).1;
        hosts.contains("client02b").then_some(())
    });
    assert!(
        reloaded.is_some(),
        "the edit was not reloaded:\n{}",
        net.log()
    );
    assert_eq!(next_server_offered(&net), "10.81.0.2", "{}", net.log());
}
