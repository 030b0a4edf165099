//! Kickstand's ProxyDHCP next to a real office DHCP server (dnsmasq), on a
//! bridge inside network namespaces this test creates and always removes:
//!
//! ```text
//!  ns office: dnsmasq 10.77.0.2 ─┐
//!  ns appliance: ksbr0 10.77.0.1 ├─ Kickstand serve() bound to ksbr0:67/4011
//!  ns client: 10.77.0.50 ────────┘  broadcasts the captured DISCOVERs
//! ```
//!
//! The test binary re-runs itself inside a namespace (`KS_DHCP_ROLE`) for the
//! server and client roles, so no other binary is needed.

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{decode, fixture};
use dhcproto::v4::{DhcpOption, OptionCode};
use kickstand_dhcp::{Context, HostStatus, Mac, Sockets, View, bind_dhcp_socket, serve};
use tokio_util::sync::CancellationToken;

const TEST: &str = "office_dhcp_and_kickstand_both_answer_pxe_clients";
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
    fn new() -> Bed {
        let id = std::process::id();
        let names: Vec<String> = ["a", "o", "c"]
            .iter()
            .map(|n| format!("ks-dhcp-{n}-{id}"))
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

    fn role(&self, ns: &str, role: &str) -> Command {
        let me = std::env::current_exe().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(me).args([
            "--exact",
            TEST,
            "--include-ignored",
            "--nocapture",
        ]);
        cmd.env("KS_DHCP_ROLE", role);
        cmd
    }
}

/// Server role: Kickstand on ksbr0, every MAC known except ...:09 (udhcpc,
/// which must be ignored for not being PXE anyway).
fn run_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dhcp = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 67, Some("ksbr0")).unwrap();
        let boot = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 4011, Some("ksbr0")).unwrap();
        let view = View {
            context: Arc::new(Context::new(APPLIANCE, 8080)),
            hosts: Arc::new(|_: Mac| HostStatus::Netboot),
        };
        println!("KS-READY");
        serve(
            Sockets {
                dhcp,
                boot_server: Some(boot),
            },
            Arc::new(move || view.clone()),
            None,
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
    match std::env::var("KS_DHCP_ROLE").as_deref() {
        Ok("server") => return run_server(),
        Ok("client") => return run_client(),
        _ => {}
    }
    let mut bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("dnsmasq.leases");
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.names[1],
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
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is installed");
    bed.children.push(dnsmasq);
    let mut server = bed
        .role(&bed.names[0], "server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    bed.children.push(server);
    let mut line = String::new();
    while !line.contains("KS-READY") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the Kickstand server role exited before binding");
    }
    std::thread::sleep(Duration::from_millis(700)); // dnsmasq binding
    let client = bed.role(&bed.names[2], "client").output().unwrap();
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
