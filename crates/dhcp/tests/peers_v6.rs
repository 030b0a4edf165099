//! The DHCPv6 driver on an IPv6-only segment with real peers, in network
//! namespaces the test creates and always removes:
//!
//! ```text
//!  ns office: radvd (fd77::/64), dnsmasq DHCPv6 fd77::100-1ff ──────────┐
//!  ns appliance: ksbr0 fd77::1 ─────────────────────────────────────────┤
//!    Kickstand v6::serve() on [::]:547 (ff02::1:2) and :4011            │
//!    TFTP read-request and HTTP request-line listeners on fd77::1       │
//!    QEMU (OVMF, or SeaBIOS with iPXE) on a tap in the bridge ──────────┘
//! ```
//!
//! On a managed segment (radvd's M flag) dnsmasq is the office's DHCPv6
//! server handing out addresses and Kickstand answers boot information
//! only; on a SLAAC segment there is no office DHCPv6 server. The test
//! binary re-runs itself inside the appliance namespace (`KS_DHCP6_ROLE`)
//! for the server role.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

use std::io::{BufRead, BufReader};
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use kickstand_dhcp::v6::{self, Join, Sockets, View};
use kickstand_dhcp::{HostBoot, HostStatus, Mac};
use tokio_util::sync::CancellationToken;

const APPLIANCE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const OVMF_MAC: &str = "52:54:00:00:06:02";
const IPXE_MAC: &str = "52:54:00:00:06:01";

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
    appliance: String,
    office: String,
    children: Vec<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.appliance, &self.office] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Bed {
    /// `tag` keeps the beds of tests running in parallel apart.
    fn new(tag: &str) -> Bed {
        let id = std::process::id();
        let bed = Bed {
            appliance: format!("ks-dhcp6{tag}-a-{id}"),
            office: format!("ks-dhcp6{tag}-o-{id}"),
            children: Vec::new(),
        };
        let (a, o) = (&bed.appliance, &bed.office);
        for ns in [a, o] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", a, "link", "add", "ksbr0", "type", "bridge"]);
        // nodad: the addresses are usable at once, and the bed owns them.
        sh(&[
            "ip",
            "-n",
            a,
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            "ksbr0",
            "nodad",
        ]);
        sh(&["ip", "-n", a, "link", "set", "ksbr0", "up"]);
        sh(&[
            "ip", "-n", a, "link", "add", "vo", "type", "veth", "peer", "name", "eth0", "netns", o,
        ]);
        sh(&["ip", "-n", a, "link", "set", "vo", "master", "ksbr0", "up"]);
        sh(&[
            "ip",
            "-n",
            o,
            "addr",
            "add",
            "fd77::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&["ip", "-n", o, "link", "set", "eth0", "up"]);
        // radvd refuses to advertise from a host that does not forward.
        sh(&[
            "ip",
            "netns",
            "exec",
            o,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        bed
    }

    fn in_office(&mut self, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.office])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push(child);
    }

    /// radvd as the office router of `segment`.
    fn office_router(&mut self, dir: &Path, segment: Segment) {
        let (managed, autonomous) = match segment {
            Segment::Managed => ("on", "off"),
            Segment::Slaac => ("off", "on"),
        };
        let conf = dir.join("radvd.conf");
        std::fs::write(
            &conf,
            format!(
                "interface eth0 {{\n  AdvSendAdvert on;\n  AdvManagedFlag {managed};\n  \
                 AdvOtherConfigFlag on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 4;\n  \
                 prefix fd77::/64 {{\n    AdvOnLink on;\n    AdvAutonomous {autonomous};\n  \
                 }};\n}};\n"
            ),
        )
        .unwrap();
        let pid = dir.join("radvd.pid");
        self.in_office(&[
            "radvd",
            "--nodaemon",
            "--config",
            conf.to_str().unwrap(),
            "--pidfile",
            pid.to_str().unwrap(),
        ]);
    }

    /// dnsmasq as the office DHCPv6 server: addresses only, no boot
    /// options, no router advertisements (radvd sends those).
    fn office_dhcp(&mut self, leases: &Path) {
        let leasefile = format!("--dhcp-leasefile={}", leases.display());
        self.in_office(&[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=fd77::100,fd77::1ff,64,1h",
            &leasefile,
        ]);
    }

    /// Kickstand in the appliance namespace; its stdout lines arrive on the
    /// returned channel once it has bound its sockets.
    fn kickstand(&mut self, test: &str) -> mpsc::Receiver<String> {
        let me = std::env::current_exe().unwrap();
        let mut server = Command::new("ip")
            .args(["netns", "exec", &self.appliance])
            .arg(me)
            .args(["--exact", test, "--include-ignored", "--nocapture"])
            .env("KS_DHCP6_ROLE", "server")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
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
        while rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the Kickstand server role binds")
            != "KS-READY"
        {}
        rx
    }

    /// A QEMU machine with `mac` on a tap in the bridge, booting from the
    /// network with the firmware `firmware` sets up.
    fn machine(&mut self, dir: &Path, mac: &str, firmware: &Firmware) {
        let a = self.appliance.clone();
        sh(&["ip", "-n", &a, "tuntap", "add", "ksvm6", "mode", "tap"]);
        sh(&[
            "ip", "-n", &a, "link", "set", "ksvm6", "master", "ksbr0", "up",
        ]);
        let qemu = Command::new("ip")
            .args(["netns", "exec", &a, "qemu-system-x86_64"])
            .args(["-machine", "accel=tcg", "-m", "256", "-display", "none"])
            .args(["-monitor", "none", "-serial", "null", "-no-reboot"])
            .args(["-boot", "n"])
            .args(firmware.args(dir))
            .args(["-netdev", "tap,id=n0,ifname=ksvm6,script=no,downscript=no"])
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac={mac}{}",
                firmware.rom()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 is installed");
        self.children.push(qemu);
    }
}

/// How the office router tells hosts to get addresses.
#[derive(Debug, Clone, Copy)]
enum Segment {
    /// M flag: addresses from the office DHCPv6 server (dnsmasq).
    Managed,
    /// SLAAC, with the O flag: DHCPv6 for other information only.
    Slaac,
}

/// What the machine boots from the network with.
#[derive(Debug)]
enum Firmware {
    /// OVMF's own UEFI network stack, with more QEMU arguments.
    Ovmf(Vec<&'static str>),
    /// SeaBIOS and the NIC's iPXE option ROM (Debian's ipxe-qemu).
    BiosIpxe,
}

impl Firmware {
    fn args(&self, dir: &Path) -> Vec<String> {
        match self {
            Firmware::Ovmf(more) => {
                let vars = dir.join("OVMF_VARS.fd");
                std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("ovmf is installed");
                let code = "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd";
                let mut args = vec!["-drive".to_owned(), code.to_owned(), "-drive".to_owned()];
                args.push(format!("if=pflash,format=raw,file={}", vars.display()));
                args.extend(more.iter().map(|a| (*a).to_owned()));
                args
            }
            Firmware::BiosIpxe => Vec::new(),
        }
    }

    /// OVMF boots with its own driver, not the iPXE ROM.
    fn rom(&self) -> &'static str {
        match self {
            Firmware::Ovmf(_) => ",romfile=",
            Firmware::BiosIpxe => "",
        }
    }
}

/// Server role: Kickstand's DHCPv6 driver on ksbr0, every MAC profiled.
/// Prints `SEEN <hex>` for every datagram multicast to ff02::1:2 (a second
/// socket on port 547 hears the multicast too), `REPLY <mac> <url>` and
/// `IGNORE <reason>` for each decision, `TFTP <file> <source>` for each
/// TFTP read request and `HTTP <source> <request line>` for each HTTP
/// connection.
fn run_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let spy = v6::bind_dhcpv6_socket(547, Join::Interfaces(&["ksbr0"])).unwrap();
        // Every interface: ksbr0 and the bridge port; the tap comes later
        // and, as a bridge port, is heard through ksbr0.
        let server = v6::bind_dhcpv6_socket(547, Join::Everywhere).unwrap();
        let boot_server = v6::bind_dhcpv6_socket(4011, Join::Nowhere).unwrap();
        let mac = std::fs::read_to_string("/sys/class/net/ksbr0/address").unwrap();
        let context = v6::Context::new(APPLIANCE, 8080, mac.trim().parse().unwrap());
        let view = Printing(View {
            context: Arc::new(context),
            hosts: Arc::new(|_: Mac| HostStatus::Netboot(HostBoot::ipxe())),
        });
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, _)) = spy.recv_from(&mut buf).await {
                let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
                println!("SEEN {hex}");
            }
        });
        let tftp = tokio::net::UdpSocket::bind((APPLIANCE, 69)).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = tftp.recv_from(&mut buf).await {
                let file = buf[2..n].split(|&b| b == 0).next().unwrap_or_default();
                println!("TFTP {} {}", String::from_utf8_lossy(file), from.ip());
            }
        });
        let http = tokio::net::TcpListener::bind((APPLIANCE, 8080))
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Ok((conn, from)) = http.accept().await {
                let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(conn));
                if let Ok(Some(line)) = lines.next_line().await {
                    println!("HTTP {} {line}", from.ip());
                }
            }
        });
        println!("KS-READY");
        let sockets = Sockets {
            server,
            boot_server: Some(boot_server),
        };
        v6::serve(sockets, Arc::new(view), CancellationToken::new())
            .await
            .unwrap();
    });
}

/// The fixed view, printing each decision.
#[derive(Debug, Clone)]
struct Printing(View);

impl v6::Boot for Printing {
    type View<'a> = Printing;

    fn view(&self) -> Printing {
        self.clone()
    }
}

impl kickstand_dhcp::HostLookup for Printing {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.0.hosts.lookup(mac)
    }
}

impl v6::BootView for Printing {
    fn context(&self) -> &v6::Context {
        &self.0.context
    }

    fn profiled(&self, _: Mac) -> bool {
        true
    }

    fn decided(&self, _: Option<Mac>, seen: &v6::Seen<'_>, action: &v6::Action) {
        let from = seen.from;
        match action {
            v6::Action::Respond(r) => println!("REPLY {} {} {from}", r.mac, r.boot_file_url),
            v6::Action::Ignore(reason) => println!("IGNORE {} {from}", reason.name()),
        }
    }
}

/// The options of a DHCPv6 client message, as (code, data).
fn options(message: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = &message[4..];
    while rest.len() >= 4 {
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        out.push((code, rest[4..4 + len].to_vec()));
        rest = &rest[4 + len..];
    }
    out
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// What one OVMF boot showed: the line it was waited for by, every line
/// before it, and the dnsmasq lease file then.
struct Boot {
    found: String,
    lines: Vec<String>,
    leases: String,
}

/// OVMF's fw_cfg knobs: IPv4 PXE off makes PXEv6 the first boot option
/// it tries; both off leave UEFI HTTP boot (IPv4, which no one answers,
/// then IPv6).
const IPV4_PXE_OFF: [&str; 2] = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"];
/// A system UUID for the VM (SMBIOS type 1).
const SYSTEM_UUID: &str = "12345678-9abc-def0-1234-56789abcdef0";
const IPV6_PXE_OFF: [&str; 2] = ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"];

/// Brings `segment` up (with dnsmasq handing out addresses when it is
/// managed), boots a machine with `mac` and `firmware`, and waits for a
/// server line starting with `want`.
fn boot_machine(
    test: &str,
    tag: &str,
    segment: Segment,
    (mac, firmware): (&str, Firmware),
    want: &str,
    within: Duration,
) -> Boot {
    let mut bed = Bed::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("dnsmasq.leases");
    bed.office_router(dir.path(), segment);
    if let Segment::Managed = segment {
        bed.office_dhcp(&leases);
    }
    let seen = bed.kickstand(test);
    let started = Instant::now();
    bed.machine(dir.path(), mac, &firmware);
    let mut lines = Vec::new();
    let found = loop {
        let left = (started + within).saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.starts_with(want) => break line,
            Ok(line) => lines.push(line),
            Err(_) => panic!("no {want:?} within {within:?}; saw {lines:#?}"),
        }
    };
    println!("OVMF: {found:?} after {:?}", started.elapsed());
    for line in &lines {
        println!("{line}");
    }
    let leases = std::fs::read_to_string(&leases).unwrap_or_default();
    // The firmware and the server go before the reader of the server's
    // output, which it would otherwise write into a closed pipe.
    drop(bed);
    Boot {
        found,
        lines,
        leases,
    }
}

impl Boot {
    /// The options of the first Solicit with a vendor class (a boot
    /// client's) multicast to ff02::1:2.
    fn boot_solicit(&self) -> Vec<(u16, Vec<u8>)> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("SEEN "))
            .map(unhex)
            .filter(|m| m[0] == 1)
            .map(|m| options(&m))
            .find(|opts| opts.iter().any(|(code, _)| *code == 16))
            .expect("a boot client's Solicit reached ff02::1:2")
    }

    fn replies(&self) -> Vec<&String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("REPLY "))
            .collect()
    }

    /// `source` is in dnsmasq's range and its lease file: the office
    /// server's lease stands.
    fn assert_leased_by_office(&self, source: &str) {
        let source: Ipv6Addr = source.parse().unwrap();
        let s = source.segments();
        assert!(
            s[..4] == [0xfd77, 0, 0, 0] && (0x100..=0x1ff).contains(&s[7]),
            "{source} is not in dnsmasq's range"
        );
        assert!(
            self.leases.contains(&source.to_string()),
            "dnsmasq's lease file lists {source}: {}",
            self.leases
        );
    }
}

fn option_of(opts: &[(u16, Vec<u8>)], code: u16) -> Option<Vec<u8>> {
    opts.iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| d.clone())
}

fn role() -> bool {
    let server = std::env::var("KS_DHCP6_ROLE").as_deref() == Ok("server");
    if server {
        run_server();
    }
    server
}

/// OVMF's own UEFI PXE over IPv6 takes Kickstand's proxy Advertise beside
/// dnsmasq's address: it asks port 4011 for the boot file and then reads
/// `ipxe.efi` over TFTP from the appliance, from the address dnsmasq
/// leased it. The VM has a system UUID, as every libvirt or real machine
/// does, so EDK2 sends a DUID-UUID: its MAC comes from its EUI-64
/// link-local address.
#[test]
#[ignore = "peer: needs root/netns, radvd, dnsmasq, qemu-system-x86, ovmf; run by .ci/run"]
fn ovmf_pxe_over_ipv6_takes_the_boot_answer_beside_the_office_lease() {
    const TEST: &str = "ovmf_pxe_over_ipv6_takes_the_boot_answer_beside_the_office_lease";
    if role() {
        return;
    }
    let firmware = Firmware::Ovmf([&IPV4_PXE_OFF[..], &["-uuid", SYSTEM_UUID]].concat());
    let machine = (OVMF_MAC, firmware);
    let boot = boot_machine(
        TEST,
        "p",
        Segment::Managed,
        machine,
        "TFTP ",
        Duration::from_secs(240),
    );

    // What OVMF sent: first a plain Solicit of its IPv6 stack (the M flag
    // asks for an address), then PXE's, with a PXEClient vendor class and
    // arch 7.
    let solicit = boot.boot_solicit();
    let duid = option_of(&solicit, 1).expect("a client identifier");
    assert_eq!(duid[..2], [0, 4], "DUID-UUID");
    assert_eq!(
        duid[2..6],
        [0x78, 0x56, 0x34, 0x12],
        "EDK2's GUID byte order"
    );
    assert_eq!(option_of(&solicit, 61), Some(vec![0, 7]), "EFI x64");
    let class = option_of(&solicit, 16).expect("a vendor class");
    assert_eq!(class[..4], 343u32.to_be_bytes(), "EDK2's enterprise number");
    assert!(class[6..].starts_with(b"PXEClient:Arch:00007"), "{class:?}");

    // OVMF's IPv6 stack, asking for an address alone, is no boot client:
    // it got nothing from Kickstand.
    assert!(
        boot.lines.iter().any(|l| l.starts_with("IGNORE not-pxe ")),
        "the plain Solicit ignored"
    );

    // Kickstand answered the Solicit and the Request to port 4011 alike.
    let url = "tftp://[fd77::1]/ipxe.efi";
    let replies = boot.replies();
    assert!(
        replies.iter().all(|l| l.contains(OVMF_MAC)),
        "answered as its EUI-64 address's MAC: {replies:?}"
    );
    assert!(
        replies
            .iter()
            .any(|l| l.contains(url) && !l.ends_with(":4011")),
        "an Advertise on 547 in {replies:?}"
    );
    assert!(
        replies
            .iter()
            .any(|l| l.contains(url) && l.ends_with(":4011")),
        "a Reply on 4011 in {replies:?}"
    );

    // The file in option 59, from the address dnsmasq leased.
    let [_, file, source] = boot.found.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{}", boot.found)
    };
    assert_eq!(file, "ipxe.efi");
    boot.assert_leased_by_office(source);
}

/// OVMF's UEFI HTTP boot over IPv6 (both PXE stacks off; HTTPv4 times out
/// first, no one answering DHCPv4) takes the `HTTPClient` answer and
/// fetches the loader from the appliance's HTTP port, from the address
/// dnsmasq leased it.
#[test]
#[ignore = "peer: needs root/netns, radvd, dnsmasq, qemu-system-x86, ovmf; run by .ci/run"]
fn ovmf_http_boot_over_ipv6_fetches_the_loader_named_in_option_59() {
    const TEST: &str = "ovmf_http_boot_over_ipv6_fetches_the_loader_named_in_option_59";
    if role() {
        return;
    }
    let machine = (
        OVMF_MAC,
        Firmware::Ovmf([IPV4_PXE_OFF, IPV6_PXE_OFF].concat()),
    );
    let boot = boot_machine(
        TEST,
        "h",
        Segment::Managed,
        machine,
        "HTTP ",
        Duration::from_secs(400),
    );
    let solicit = boot.boot_solicit();
    let class = option_of(&solicit, 16).expect("a vendor class");
    println!(
        "HTTP boot's vendor class {:?}",
        String::from_utf8_lossy(&class[6..])
    );
    println!("HTTP boot's option 61 {:?}", option_of(&solicit, 61));
    assert!(class[6..].starts_with(b"HTTPClient"), "{class:?}");
    // No system UUID: EDK2 falls back to a DUID-LLT of its MAC.
    let duid = option_of(&solicit, 1).expect("a client identifier");
    assert_eq!(duid[..4], [0, 1, 0, 1], "DUID-LLT of Ethernet");
    let url = "http://[fd77::1]:8080/boot/ipxe.efi";
    assert!(
        boot.replies().iter().any(|l| l.contains(url)),
        "an answer with {url} in {:?}",
        boot.replies()
    );
    let [_, source, method, path, ..] = boot.found.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{}", boot.found)
    };
    // EDK2 asks for the size first.
    assert!(["HEAD", "GET"].contains(&method), "{}", boot.found);
    assert_eq!(path, "/boot/ipxe.efi");
    boot.assert_leased_by_office(source);
}

/// SeaBIOS and Debian's iPXE ROM on a SLAAC segment whose router sets the
/// O flag: iPXE sends an Information-request, takes Kickstand's Reply and
/// fetches its boot script over HTTP from its SLAAC address. (With the M
/// flag iPXE ignores an Advertise that offers no address, so it never
/// sees Kickstand's answer: README, "IPv6".)
#[test]
#[ignore = "peer: needs root/netns, radvd, qemu-system-x86, ipxe-qemu; run by .ci/run"]
fn bios_ipxe_on_a_slaac_segment_fetches_its_boot_script_over_ipv6() {
    const TEST: &str = "bios_ipxe_on_a_slaac_segment_fetches_its_boot_script_over_ipv6";
    if role() {
        return;
    }
    let machine = (IPXE_MAC, Firmware::BiosIpxe);
    let boot = boot_machine(
        TEST,
        "i",
        Segment::Slaac,
        machine,
        "HTTP ",
        Duration::from_secs(150),
    );
    // iPXE percent-encodes the colons of the URL it was given.
    let [
        _,
        source,
        "GET",
        "/boot/52%3A54%3A00%3A00%3A06%3A01.ipxe",
        ..,
    ] = boot.found.split(' ').collect::<Vec<_>>()[..]
    else {
        panic!("{}", boot.found)
    };
    assert_eq!(
        source, "fd77::5054:ff:fe00:601",
        "its SLAAC (EUI-64) address"
    );
    let replies = boot.replies();
    assert!(
        replies.iter().any(|l| l.contains("52:54:00:00:06:01.ipxe")),
        "{replies:?}"
    );
}
