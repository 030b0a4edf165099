//! A host's build token goes only to the address its own DHCP exchange was
//! given, as a hostile LAN host would test it: a real exchange with the
//! office DHCP server (dnsmasq) from the host's MAC, a second address on
//! the segment that asks for the same boot script over HTTP and TFTP, a
//! token read off the wire replayed from there, and a forged REQUEST that
//! claims the MAC for another address.
//!
//! ```text
//!  ns ks-tb-a: ksbr0 10.78.0.1  ── kickstand serve (ProxyDHCP on ksbr0)
//!  ns ks-tb-o: 10.78.0.2        ── dnsmasq, the office DHCP server
//!  ns ks-tb-c: 52:54:00:00:00:02 ── the host: busybox udhcpc, then curl
//!  ns ks-tb-x: 10.78.0.66       ── the stranger: curl, curl tftp://, a forged REQUEST
//! ```
//!
//! The QEMU tests of `netboot.rs` install BIOS, UEFI and Secure Boot
//! machines through the same binding (Kickstand runs in proxy mode there).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Bed, eventually, token_in};

const MAC: &str = "52:54:00:00:00:02";
const STRANGER: &str = "10.78.0.66";

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and processes, removed even when an assertion fails.
struct Net {
    names: [String; 4],
    children: Vec<Child>,
}

impl Drop for Net {
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

const APPLIANCE: usize = 0;
const OFFICE: usize = 1;
const HOST: usize = 2;
const STRANGER_NS: usize = 3;

impl Net {
    fn up() -> Net {
        let id = std::process::id();
        let names = ["a", "o", "c", "x"].map(|n| format!("ks-tb-{n}-{id}"));
        let net = Net {
            names,
            children: Vec::new(),
        };
        let [a, o, c, x] = &net.names;
        for ns in [a, o, c, x] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", a, "link", "add", "ksbr0", "type", "bridge"]);
        sh(&["ip", "-n", a, "addr", "add", "10.78.0.1/24", "dev", "ksbr0"]);
        sh(&["ip", "-n", a, "link", "set", "ksbr0", "up"]);
        for (ns, port) in [(o, "vo"), (c, "vc"), (x, "vx")] {
            sh(&[
                "ip", "-n", a, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            sh(&["ip", "-n", a, "link", "set", port, "master", "ksbr0", "up"]);
        }
        sh(&["ip", "-n", c, "link", "set", "eth0", "address", MAC]);
        sh(&["ip", "-n", o, "addr", "add", "10.78.0.2/24", "dev", "eth0"]);
        sh(&[
            "ip",
            "-n",
            x,
            "addr",
            "add",
            &format!("{STRANGER}/24"),
            "dev",
            "eth0",
        ]);
        for ns in [o, c, x] {
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    fn exec(&self, ns: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[ns]]);
        cmd
    }

    /// `curl` from namespace `ns`: the status and the body.
    fn curl(&self, ns: usize, url: &str) -> (u16, String) {
        let out = self
            .exec(ns)
            .args(["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn get(&self, ns: usize, path: &str) -> (u16, String) {
        self.curl(ns, &format!("http://10.78.0.1:8080{path}"))
    }

    /// The status document, built after this call: one built before is
    /// shared for a second.
    fn status(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(1100));
        serde_json::from_str(&self.get(APPLIANCE, "/api/status").1).unwrap_or_default()
    }

    fn host(&self) -> serde_json::Value {
        self.status()["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["mac"] == MAC).cloned())
            .unwrap_or_default()
    }

    /// The host's own DHCP exchange with the office server: DISCOVER,
    /// OFFER, REQUEST (option 50, the office's server id), ACK. Returns
    /// the leased address, configured on the host's interface.
    fn lease(&self) -> String {
        let out = self
            .exec(HOST)
            .args([
                "busybox",
                "udhcpc",
                "-i",
                "eth0",
                "-f",
                "-q",
                "-n",
                "-t",
                "5",
                "-T",
                "2",
                "-s",
                "/bin/true",
            ])
            .output()
            .expect("udhcpc");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let leased = text
            .split("lease of ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no lease from the office server:\n{text}"))
            .to_owned();
        sh(&[
            "ip",
            "-n",
            &self.names[HOST],
            "addr",
            "add",
            &format!("{leased}/24"),
            "dev",
            "eth0",
        ]);
        leased
    }

    /// A REQUEST from the stranger with the host's MAC, taking the office
    /// server's offer for the stranger's own address: what anyone on the
    /// LAN can send.
    fn forge_request(&self) {
        let mac: Vec<String> = MAC.split(':').map(str::to_owned).collect();
        let script = format!(
            "import socket, struct, os\n\
             mac = bytes.fromhex('{mac}')\n\
             hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, 0x4b53, 0, 0x8000,\n\
                  bytes(4), bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))\n\
             opts = bytes([99, 130, 83, 99, 53, 1, 3, 50, 4]) + socket.inet_aton('{STRANGER}')\n\
             opts += bytes([54, 4]) + socket.inet_aton('10.78.0.2') + bytes([255])\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
             s.bind(('0.0.0.0', 68))\n\
             s.sendto(hdr + opts, ('255.255.255.255', 67))\n",
            mac = mac.concat(),
        );
        let status = self
            .exec(STRANGER_NS)
            .args(["python3", "-c", &script])
            .status()
            .expect("python3");
        assert!(status.success());
    }
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq, busybox udhcpc; run by .ci/run"]
fn the_build_token_goes_only_to_the_address_the_hosts_dhcp_exchange_gave_it() {
    let mut net = Net::up();
    let bed = Bed::new();
    let config = bed.config();
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace("address: 127.0.0.1", "address: 10.78.0.1")
        .replace("bind: 127.0.0.1", "bind: 0.0.0.0")
        .replace("interfaces: []", "interfaces: [ksbr0]")
        .replace("http_port: 0", "http_port: 8080")
        .replace("tftp_port: 0", "tftp_port: 6969")
        .replace("mode: off", "mode: proxy");
    std::fs::write(&config, text).expect("write config");
    bed.write(
        "profiles/hosts/client.yaml",
        &format!("hosts:\n  \"{MAC}\":\n    hostname: client02\n"),
    );
    let log = bed.path("kickstand.log");
    let daemon = net
        .exec(APPLIANCE)
        .arg(env!("CARGO_BIN_EXE_kickstand"))
        .args(["--config"])
        .arg(&config)
        .arg("serve")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).expect("log"))
        .stdout(Stdio::null())
        .spawn()
        .expect("kickstand serve in the namespace");
    net.children.push(daemon);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(30), || net
            .get(APPLIANCE, "/status")
            .1
            .contains("Kickstand")
            .then_some(()))
        .is_some(),
        "kickstand did not start:\n{}",
        read_log()
    );
    let office = net
        .exec(OFFICE)
        .args([
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.78.0.100,10.78.0.150,255.255.255.0,1h",
            "--dhcp-authoritative",
            "--leasefile-ro",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq");
    net.children.push(office);
    std::thread::sleep(Duration::from_millis(700));
    let script = format!("/boot/{MAC}.ipxe");

    // Before the host's exchange: nobody gets its token, and a fetch
    // moves nothing.
    let (code, body) = net.get(STRANGER_NS, &script);
    assert_eq!(code, 200, "{body}");
    assert!(token_in(&body).is_none(), "{body}");
    assert!(
        body.contains("no DHCP exchange of this machine was seen"),
        "{body}"
    );
    assert_eq!(
        net.host()["phase"],
        "new",
        "an anonymous fetch moves no phase"
    );

    // The host's own exchange with the office server.
    let leased = net.lease();
    assert!(leased.starts_with("10.78.0.1"), "{leased}");

    // The stranger asks again, over HTTP and over TFTP: no token, and its
    // console would say why.
    let (code, body) = net.get(STRANGER_NS, &script);
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
    );
    assert!(!grub.1.contains("token="), "{grub:?}");
    assert!(grub.1.contains("not this address"), "{grub:?}");
    let host = net.host();
    assert_ne!(host["phase"], "booting", "{host}");
    let status = net.status();
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
    let metrics = net.get(APPLIANCE, "/metrics").1;
    assert!(
        metrics.contains("kickstand_build_tokens_withheld_total{name=\"other-address\"}"),
        "{metrics}"
    );
    let timeline = net.get(APPLIANCE, &format!("/api/hosts/{MAC}/timeline")).1;
    assert!(timeline.contains("token-withheld"), "{timeline}");

    // The host itself gets its token; read off the wire and replayed from
    // the stranger's address, it opens nothing.
    let (code, body) = net.get(HOST, &script);
    assert_eq!(code, 200, "{body}");
    let token = token_in(&body).unwrap_or_else(|| panic!("no token for the host:\n{body}"));
    assert_eq!(net.host()["phase"], "booting");
    let ks = format!("/ks/{MAC}?token={token}");
    let (code, stolen) = net.get(STRANGER_NS, &ks);
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
    let (code, kickstart) = net.get(HOST, &ks);
    assert_eq!(code, 200, "{kickstart}");
    assert!(kickstart.contains("rootpw"), "{kickstart}");

    // A forged REQUEST claims the MAC for the stranger's address: the
    // alarm, both addresses, the host held and its token revoked.
    net.forge_request();
    let held = eventually(Duration::from_secs(10), || {
        let host = net.host();
        (host["phase"] == "failed").then_some(host)
    })
    .unwrap_or_else(|| panic!("the forged REQUEST raised no alarm:\n{}", read_log()));
    let status = net.status();
    let alarm = status["appliance"]["tokens_withheld"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["reason"] == "conflict").cloned())
        .unwrap_or_else(|| panic!("no spoofing warning: {status}"));
    assert_eq!(alarm["mac"], MAC);
    assert_eq!(alarm["addresses"], serde_json::json!([leased, STRANGER]));
    assert!(
        read_log().contains("two addresses claim one MAC: possible spoofing"),
        "{}",
        read_log()
    );
    let (code, _) = net.get(HOST, &ks);
    assert_eq!(code, 403, "the revoked token opens nothing: {held}");
    let (_, body) = net.get(HOST, &script);
    assert!(
        token_in(&body).is_none(),
        "a held host gets no install:\n{body}"
    );
}
