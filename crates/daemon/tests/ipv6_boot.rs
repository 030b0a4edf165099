//! `kickstand serve` on an IPv6-only segment with real peers, in network
//! namespaces the test creates and always removes:
//!
//! ```text
//!  ns ks-v6b-0: ksbr0 fd77::1 ── kickstand serve (address fd77::1, DHCPv6
//!               + tap ksvm6       boot answers, TFTP on [::]:69), QEMU OVMF
//!  ns ks-v6b-1: eth0 fd77::2  ── radvd (M flag: addresses by DHCPv6) and
//!                                dnsmasq, the office DHCPv6 server
//! ```
//!
//! OVMF's own PXE over IPv6 (IPv4 PXE switched off, as on an IPv6-only
//! rack) takes its address from dnsmasq and its boot file from Kickstand:
//! the DHCPv6 answer names `tftp://[fd77::1]/ipxe.efi`, and Kickstand's
//! TFTP sends it over IPv6. (The host says `boot_loader: ipxe`: `auto`
//! gives UEFI PXE over IPv6 the OS's shim and GRUB, which an install over
//! IPv6 needs and the netboot bed proves, `crates/daemon/tests/netboot.rs`;
//! this bed has no mirror to fetch them from.)

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::segment::{APPLIANCE, Segment, sh};
use support::{Bed, eventually};

const MAC: &str = "52:54:00:00:06:02";
const OFFICE: usize = 1;

/// The segment, the office's router and DHCPv6 server, and Kickstand
/// configured for an IPv6-only rack with a profile for `MAC`.
fn ipv6_rack(bed: &Bed) -> Segment {
    let mut net = Segment::up("v6b", "10.79.0", &[Some(2)], bed);
    net.ipv6_appliance(bed, "fd77::");
    net.ipv6_office(OFFICE, "fd77::", bed);

    let tftp = bed.path("var/tftp");
    std::fs::create_dir_all(&tftp).expect("tftp root");
    std::fs::copy("/usr/lib/ipxe/ipxe.efi", tftp.join("ipxe.efi")).expect("Debian's ipxe");
    bed.write(
        "profiles/hosts/v6.yaml",
        &format!(
            "hosts:\n  \"{MAC}\":\n    hostname: v6node\n    os: centos-stream-9\n    boot_loader: ipxe\n"
        ),
    );
    bed.edit("profiles/kickstand.yaml", "tftp_port: 0", "tftp_port: 69");
    net.serve(&bed.config());
    net
}

#[test]
#[ignore = "peer: needs root/netns, radvd, dnsmasq, qemu-system-x86, ovmf; run by .ci/run"]
fn ovmf_loads_ipxe_from_kickstand_over_ipv6_beside_the_office_dhcpv6_server() {
    let bed = Bed::new();
    let mut net = ipv6_rack(&bed);
    let a = net.name(APPLIANCE).to_owned();
    sh(&["ip", "-n", &a, "tuntap", "add", "ksvm6", "mode", "tap"]);
    sh(&[
        "ip", "-n", &a, "link", "set", "ksvm6", "master", "ksbr0", "up",
    ]);
    let vars = bed.path("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("ovmf is installed");
    let qemu = net
        .exec(APPLIANCE)
        .arg("qemu-system-x86_64")
        .args(["-machine", "accel=tcg", "-m", "256", "-display", "none"])
        .args([
            "-monitor",
            "none",
            "-serial",
            "null",
            "-no-reboot",
            "-boot",
            "n",
        ])
        .args([
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        // An IPv6-only rack: the firmware's IPv4 PXE is off.
        .args(["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"])
        .args(["-uuid", "12345678-9abc-def0-1234-56789abcdef0"])
        .args(["-netdev", "tap,id=n0,ifname=ksvm6,script=no,downscript=no"])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={MAC},romfile="),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    net.keep(qemu);

    // The whole loader, over TFTP, to the address the office leased it.
    let sent = eventually(Duration::from_secs(240), || {
        net.log()
            .lines()
            .find(|l| l.contains("file=\"ipxe.efi\"") && l.contains(" sent bytes="))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("ipxe.efi never sent over TFTP:\n{}", net.log()));
    let peer = sent
        .split("peer=[")
        .nth(1)
        .and_then(|p| p.split(']').next())
        .and_then(|p| p.parse::<std::net::Ipv6Addr>().ok())
        .unwrap_or_else(|| panic!("no IPv6 peer in {sent}"));
    let s = peer.segments();
    assert!(
        s[..4] == [0xfd77, 0, 0, 0] && (0x100..=0x1ff).contains(&s[7]),
        "{peer} is not from the office's DHCPv6 range: {sent}"
    );
    let log = net.log();
    assert!(
        log.lines().any(|l| l.contains("dhcpv6: answered")
            && l.contains(MAC)
            && l.contains("tftp://[fd77::1]/ipxe.efi")),
        "{log}"
    );
    // On the host's timeline: the offer, as IPv6.
    let timeline = net.get(&format!("/api/hosts/{MAC}/timeline"));
    let events: serde_json::Value = serde_json::from_str(&timeline).expect("json");
    let offer = events["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "dhcp-offer"))
        .unwrap_or_else(|| panic!("no dhcp-offer in {timeline}"));
    assert_eq!(offer["detail"]["family"], "ipv6", "{offer}");
    assert_eq!(
        offer["detail"]["boot_file"], "tftp://[fd77::1]/ipxe.efi",
        "{offer}"
    );
}
