//! Kickstand's DHCP driver against real peers, on a bridge inside network
//! namespaces each test creates and always removes:
//!
//! ```text
//!  ns office: dnsmasq 10.77.0.2 ─┐
//!  ns appliance: ksbr0 10.77.0.1 ├─ Kickstand serve() bound to ksbr0:67/4011,
//!                  (+ QEMU taps) │  QEMU firmware on taps in the bridge
//!  ns client: 10.77.0.50 ────────┘  captured DISCOVERs, or busybox udhcpc
//! ```
//!
//! The proxy next to dnsmasq (the office server), real OVMF and iPXE firmware
//! taking its offer, and `mode: full` serving udhcpc. The test binary re-runs
//! itself inside a namespace (`KS_DHCP_ROLE`) for the server and client
//! roles, so no other binary is needed.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{decode, fixture};
use dhcproto::v4::{DhcpOption, OptionCode};
use kickstand_dhcp::full::{Leases, Pool};
use kickstand_dhcp::{
    Context, HostBoot, HostStatus, Mac, Mode, Sockets, View, bind_dhcp_socket, serve,
};
use tokio_util::sync::CancellationToken;

const APPLIANCE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const OFFICE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const FIXTURES: [&str; 3] = ["ovmf-pxe-discover", "bios-ipxe-discover", "udhcpc-discover"];

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and processes that go away even when an assertion fails.
struct Bed {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Bed {
    /// `tag` keeps the beds of tests running in parallel apart.
    fn new(tag: &str) -> Bed {
        let id = std::process::id();
        let names: Vec<String> = ["a", "o", "c"]
            .iter()
            .map(|n| format!("ks-dhcp{tag}-{n}-{id}"))
            .collect();
        let bed = Bed {
            names,
            children: Vec::new(),
        };
        let [a, o, c] = [&bed.names[0], &bed.names[1], &bed.names[2]];
        for ns in [a, o, c] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", a, "link", "add", "ksbr0", "type", "bridge"]);
        sh(&["ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", "ksbr0"]);
        sh(&["ip", "-n", a, "link", "set", "ksbr0", "up"]);
        for (ns, port, addr) in [(o, "vo", "10.77.0.2/24"), (c, "vc", "10.77.0.50/24")] {
            sh(&[
                "ip", "-n", a, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            sh(&["ip", "-n", a, "link", "set", port, "master", "ksbr0", "up"]);
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        bed
    }

    /// This test binary again, inside `ns`, running `test` as `role`.
    fn role(&self, ns: &str, test: &str, role: &str) -> Command {
        let me = std::env::current_exe().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(me).args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
        ]);
        cmd.env("KS_DHCP_ROLE", role);
        cmd
    }

    /// dnsmasq in the office namespace: addresses only, no boot options.
    fn office_dhcp(&mut self, dir: &Path) {
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.names[1],
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
            ])
            .args([
                "--user=root",
                "--interface=eth0",
                "--bind-interfaces",
                "--no-ping",
            ])
            .arg("--dhcp-range=10.77.0.100,10.77.0.200,255.255.255.0,1h")
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.join("dnsmasq.leases").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed");
        self.children.push(dnsmasq);
    }

    /// Kickstand in the appliance namespace; its stdout lines arrive on the
    /// returned channel once it has bound its sockets.
    fn kickstand(&mut self, test: &str, role: &str) -> mpsc::Receiver<String> {
        let cmd = self.role(&self.names[0], test, role);
        self.spawn_kickstand(cmd)
    }

    fn spawn_kickstand(&mut self, mut cmd: Command) -> mpsc::Receiver<String> {
        let mut server = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out = BufReader::new(server.stdout.take().unwrap());
        self.children.push(server);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The test harness of the child prints its own lines first.
        while rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the Kickstand server role binds")
            != "KS-READY"
        {}
        std::thread::sleep(Duration::from_millis(700)); // dnsmasq binding
        rx
    }
}

/// Runs the role this process was started for, if any.
fn run_role() -> bool {
    match std::env::var("KS_DHCP_ROLE").as_deref() {
        Ok("server") => run_server(false, false),
        Ok("server+watch") => run_server(true, false),
        Ok("server+full") => run_server(false, true),
        Ok("client") => run_client(),
        _ => return false,
    }
    true
}

/// Server role: Kickstand on ksbr0, every MAC known. With `watch`, it also
/// prints the first line of each TFTP read request (`TFTP <file>`) and HTTP
/// connection (`HTTP GET <path> ...`), which is how a test sees what
/// firmware did with the offer.
///
/// With `full`, it runs `mode: full` over the lease file in `KS_DHCP_LEASES`.
fn run_server(watch: bool, full: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dhcp = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 67, Some("ksbr0")).unwrap();
        let boot = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 4011, Some("ksbr0")).unwrap();
        let mut context = Context::new(APPLIANCE, 8080);
        let leases = full.then(|| {
            context.mode = Mode::Full;
            let path = std::env::var("KS_DHCP_LEASES").unwrap();
            Leases::open(path, office_pool()).unwrap()
        });
        let view = View {
            context: Arc::new(context),
            hosts: Arc::new(|_: Mac| HostStatus::Netboot(HostBoot::ipxe())),
        };
        if watch {
            let tftp = tokio::net::UdpSocket::bind((APPLIANCE, 69)).await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, _)) = tftp.recv_from(&mut buf).await {
                    let file = buf[2..n].split(|&b| b == 0).next().unwrap_or_default();
                    println!("TFTP {}", String::from_utf8_lossy(file));
                }
            });
            let http = tokio::net::TcpListener::bind((APPLIANCE, 8080))
                .await
                .unwrap();
            tokio::spawn(async move {
                while let Ok((conn, _)) = http.accept().await {
                    let mut lines =
                        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(conn));
                    if let Ok(Some(line)) = lines.next_line().await {
                        println!("HTTP {line}");
                    }
                }
            });
        }
        println!("KS-READY");
        serve(
            vec![Sockets {
                interface: None,
                dhcp,
                boot_server: Some(boot),
                client_port: None,
            }],
            Arc::new(view),
            leases,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    });
}

/// Client role: broadcast each fixture (broadcast flag set, so the office
/// server does not unicast to an address the client does not hold), print
/// every reply as `xid server yiaddr class file`.
fn run_client() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sock = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 68, Some("eth0")).unwrap();
        for name in FIXTURES {
            let mut p = fixture(name);
            p[10] |= 0x80;
            sock.send_to(&p, (Ipv4Addr::BROADCAST, 67)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut buf = [0u8; 1500];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        {
            let m = decode(&buf[..n]);
            let server = match m.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(ip)) => ip.to_string(),
                _ => "-".into(),
            };
            let class = match m.opts().get(OptionCode::ClassIdentifier) {
                Some(DhcpOption::ClassIdentifier(c)) => String::from_utf8_lossy(c).into_owned(),
                _ => "-".into(),
            };
            let file = m
                .fname()
                .map(|f| String::from_utf8_lossy(f).trim_end_matches('\0').to_owned());
            println!(
                "REPLY {:08x} {server} {} {class} {}",
                m.xid(),
                m.yiaddr(),
                file.unwrap_or("-".into())
            );
        }
    });
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq; run by .ci/run"]
fn office_dhcp_and_kickstand_both_answer_pxe_clients() {
    const TEST: &str = "office_dhcp_and_kickstand_both_answer_pxe_clients";
    if run_role() {
        return;
    }
    let mut bed = Bed::new("p");
    let dir = tempfile::tempdir().unwrap();
    bed.office_dhcp(dir.path());
    let _server = bed.kickstand(TEST, "server");
    let client = bed.role(&bed.names[2], TEST, "client").output().unwrap();
    let stdout = String::from_utf8_lossy(&client.stdout);
    let replies: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("REPLY "))
        .map(|l| l.split(' ').collect())
        .collect();
    println!("{replies:?}");
    let xid = |name: &str| {
        format!(
            "{:08x}",
            u32::from_be_bytes(fixture(name)[4..8].try_into().unwrap())
        )
    };
    let office = OFFICE.to_string();
    let us = APPLIANCE.to_string();
    for (name, boot_file) in [
        ("ovmf-pxe-discover", Some("ipxe.efi")),
        (
            "bios-ipxe-discover",
            Some("http://10.77.0.1:8080/boot/52:54:00:00:00:01.ipxe"),
        ),
        ("udhcpc-discover", None),
    ] {
        let for_it: Vec<_> = replies.iter().filter(|r| r[0] == xid(name)).collect();
        let from_office: Vec<_> = for_it.iter().filter(|r| r[1] == office).collect();
        assert_eq!(
            from_office.len(),
            1,
            "{name}: one address offer from dnsmasq in {for_it:?}"
        );
        let offered: Ipv4Addr = from_office[0][2].parse().unwrap();
        assert!(
            offered.octets()[..3] == [10, 77, 0] && offered.octets()[3] >= 100,
            "{name}: dnsmasq offered {offered}"
        );
        let ours: Vec<_> = for_it.iter().filter(|r| r[1] == us).collect();
        match boot_file {
            Some(file) => {
                assert_eq!(ours.len(), 1, "{name}: one proxy offer in {for_it:?}");
                assert_eq!(
                    ours[0][2..],
                    ["0.0.0.0", "PXEClient", file],
                    "{name}: proxy offer"
                );
            }
            None => assert!(ours.is_empty(), "{name}: a non-PXE client got {ours:?}"),
        }
    }
}

/// Real firmware in QEMU accepts the proxy offer next to the office server's
/// address offer: OVMF's own UEFI PXE asks TFTP for the UEFI loader, and
/// iPXE in SeaBIOS (user class iPXE) asks HTTP for its boot script.
#[test]
#[ignore = "peer: needs root/netns, dnsmasq, qemu-system-x86, ovmf, ipxe-qemu; run by .ci/run"]
fn firmware_in_qemu_follows_the_proxy_offer() {
    const TEST: &str = "firmware_in_qemu_follows_the_proxy_offer";
    if run_role() {
        return;
    }
    let mut bed = Bed::new("q");
    let dir = tempfile::tempdir().unwrap();
    bed.office_dhcp(dir.path());
    let seen = bed.kickstand(TEST, "server+watch");
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("ovmf is installed");
    let ovmf = [
        "-drive".to_owned(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".to_owned(),
        "-drive".to_owned(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ];
    let cases: [(&str, &str, &[String], &str, &str); 2] = [
        (
            "ksovmf",
            "52:54:00:00:00:02",
            &ovmf,
            ",romfile=",
            "TFTP ipxe.efi",
        ),
        // iPXE percent-encodes the colons of the URL it was given.
        (
            "ksbios",
            "52:54:00:00:00:01",
            &[],
            "",
            "HTTP GET /boot/52%3A54%3A00%3A00%3A00%3A01.ipxe ",
        ),
    ];
    for (tap, mac, firmware, rom, want) in cases {
        let a = bed.names[0].clone();
        sh(&["ip", "-n", &a, "tuntap", "add", tap, "mode", "tap"]);
        sh(&["ip", "-n", &a, "link", "set", tap, "master", "ksbr0", "up"]);
        let qemu = Command::new("ip")
            .args([
                "netns",
                "exec",
                &a,
                "qemu-system-x86_64",
                "-machine",
                "accel=tcg",
                "-m",
                "256",
            ])
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "null",
                "-no-reboot",
                "-boot",
                "n",
            ])
            .args(firmware)
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={mac}{rom}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 is installed");
        bed.children.push(qemu);
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match seen.recv_timeout(left) {
                Ok(line) if line.starts_with(want) => break,
                Ok(line) => lines.push(line),
                Err(_) => panic!("{tap}: no {want:?} within 150 s; saw {lines:?}"),
            }
        }
        let mut qemu = bed.children.pop().unwrap();
        let _ = qemu.kill();
        let _ = qemu.wait();
    }
}

fn office_pool() -> Pool {
    let net = |last| Ipv4Addr::new(10, 77, 0, last);
    Pool::new(
        net(100),
        net(109),
        Ipv4Addr::new(255, 255, 255, 0),
        Some(APPLIANCE),
        vec![APPLIANCE],
        600,
    )
    .unwrap()
}

/// busybox udhcpc in the client namespace with `mac`; its script prints
/// what it was given. Returns the lines of the `bound` event.
fn udhcpc(bed: &Bed, dir: &Path, mac: &str) -> String {
    let c = &bed.names[2];
    sh(&["ip", "-n", c, "link", "set", "eth0", "address", mac]);
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$1 $ip $subnet $router $dns $lease\"\n",
    )
    .unwrap();
    sh(&["chmod", "+x", script.to_str().unwrap()]);
    let out = Command::new("ip")
        .args([
            "netns", "exec", c, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "4",
            "-T", "2", "-s",
        ])
        .arg(&script)
        .output()
        .expect("busybox is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find(|l| l.starts_with("bound "))
        .unwrap_or_else(|| panic!("udhcpc got no lease: {stdout}"))
        .to_owned()
}

/// `mode: full` hands a real DHCP client an address, persists it, and after
/// a restart gives a second client a different one.
#[test]
#[ignore = "peer: needs root/netns, busybox (udhcpc); run by .ci/run"]
fn full_mode_leases_an_address_to_a_real_client_and_keeps_it_across_restarts() {
    const TEST: &str = "full_mode_leases_an_address_to_a_real_client_and_keeps_it_across_restarts";
    if run_role() {
        return;
    }
    let mut bed = Bed::new("f");
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("leases.json");
    let start = |bed: &mut Bed| {
        let mut cmd = bed.role(&bed.names[0], TEST, "server+full");
        cmd.env("KS_DHCP_LEASES", &leases);
        bed.spawn_kickstand(cmd)
    };
    let _server = start(&mut bed);
    let first = udhcpc(&bed, dir.path(), "52:54:00:aa:00:01");
    assert_eq!(
        first,
        "bound 10.77.0.100 255.255.255.0 10.77.0.1 10.77.0.1 600"
    );
    let saved = std::fs::read_to_string(&leases).unwrap();
    assert!(
        saved.contains("\"52:54:00:aa:00:01\"") && saved.contains("\"10.77.0.100\""),
        "{saved}"
    );
    assert!(saved.contains("\"bound\""), "{saved}");

    // Restart: the lease file is all that is left of the first server.
    let mut old = bed.children.pop().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    let _server = start(&mut bed);
    let second = udhcpc(&bed, dir.path(), "52:54:00:aa:00:02");
    assert_eq!(
        second,
        "bound 10.77.0.101 255.255.255.0 10.77.0.1 10.77.0.1 600"
    );
    let again = udhcpc(&bed, dir.path(), "52:54:00:aa:00:01");
    assert_eq!(again, first, "a returning client keeps its address");
}
