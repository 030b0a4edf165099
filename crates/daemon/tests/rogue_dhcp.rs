//! A second ProxyDHCP on the segment (dnsmasq, offering another boot file)
//! is noticed: a warning in the log once per server, on the status page
//! and as a metric, cleared when it has been quiet for
//! `dhcp.rogue_forget_after`. Kickstand never answers or fights it.
//!
//! ```text
//!  ns ks-rg-a: ksbr0 10.78.0.1 ── kickstand serve (ProxyDHCP on ksbr0)
//!  ns ks-rg-r: 10.78.0.9       ── dnsmasq, proxy mode, offers evil.efi
//!  ns ks-rg-c: 10.78.0.50      ── a PXE DISCOVER (OVMF's, captured) now and then
//! ```

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Bed, eventually};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dhcp/tests/fixtures/ovmf-pxe-discover.hex"
);

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
    names: [String; 3],
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

impl Net {
    fn up() -> Net {
        let id = std::process::id();
        let names = ["a", "r", "c"].map(|n| format!("ks-rg-{n}-{id}"));
        let net = Net {
            names,
            children: Vec::new(),
        };
        let [a, r, c] = &net.names;
        for ns in [a, r, c] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", a, "link", "add", "ksbr0", "type", "bridge"]);
        sh(&["ip", "-n", a, "addr", "add", "10.78.0.1/24", "dev", "ksbr0"]);
        sh(&["ip", "-n", a, "link", "set", "ksbr0", "up"]);
        for (ns, port, addr) in [(r, "vr", "10.78.0.9/24"), (c, "vc", "10.78.0.50/24")] {
            sh(&[
                "ip", "-n", a, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            sh(&["ip", "-n", a, "link", "set", port, "master", "ksbr0", "up"]);
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    fn exec(&self, ns: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[ns]]);
        cmd
    }

    /// What the appliance answers at `path`, from inside its namespace.
    fn get(&self, path: &str) -> String {
        let out = self
            .exec(0)
            .args([
                "curl",
                "-sS",
                "-m",
                "5",
                &format!("http://10.78.0.1:8080{path}"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// OVMF's captured DISCOVER, broadcast from the client namespace.
    fn discover(&self) {
        let hex: String = std::fs::read_to_string(FIXTURE)
            .expect("fixture")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        let script = format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
             s.bind(('0.0.0.0', 68))\n\
             p = bytearray.fromhex('{hex}')\n\
             p[10] |= 0x80\n\
             s.sendto(bytes(p), ('255.255.255.255', 67))\n"
        );
        let status = self
            .exec(2)
            .args(["python3", "-c", &script])
            .status()
            .expect("python3");
        assert!(status.success());
    }
}

#[test]
#[ignore = "peer: needs root/netns, dnsmasq; run by .ci/run"]
fn a_second_proxydhcp_is_warned_about_and_forgotten_when_it_stops() {
    let mut net = Net::up();
    let bed = Bed::new();
    let config = bed.config();
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace("address: 127.0.0.1", "address: 10.78.0.1")
        .replace("bind: 127.0.0.1", "bind: 0.0.0.0")
        .replace("interfaces: []", "interfaces: [ksbr0]")
        .replace("http_port: 0", "http_port: 8080")
        .replace("mode: off", "mode: proxy\n  rogue_forget_after: 3s");
    std::fs::write(&config, text).expect("write config");
    // The captured client has a profile: Kickstand answers it too.
    bed.write(
        "profiles/hosts/client.yaml",
        "hosts:\n  \"52:54:00:00:00:02\":\n    hostname: client02\n",
    );
    let log = bed.path("kickstand.log");
    let daemon = net
        .exec(0)
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
            .get("/status")
            .contains("Kickstand")
            .then_some(()))
        .is_some(),
        "kickstand did not start:\n{}",
        read_log()
    );
    assert!(read_log().contains("rogue_watch=true"), "{}", read_log());

    let rogue = net
        .exec(1)
        .args([
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.78.0.0,proxy,255.255.255.0",
            "--pxe-service=X86-64_EFI,evil-boot,evil.efi",
            "--leasefile-ro",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq");
    std::thread::sleep(Duration::from_millis(700));
    let status = eventually(Duration::from_secs(30), || {
        net.discover();
        let status: serde_json::Value = serde_json::from_str(&net.get("/api/status")).ok()?;
        let rogues = status["appliance"]["rogue_dhcp"].as_array()?.clone();
        (!rogues.is_empty()).then_some(rogues)
    })
    .unwrap_or_else(|| panic!("the second ProxyDHCP went unnoticed:\n{}", read_log()));
    assert_eq!(status[0]["server"], "10.78.0.9", "{status:?}");
    // dnsmasq offers its menu item by a boot server list (option 43).
    assert!(
        status[0]["offered"]
            .as_str()
            .is_some_and(|o| o.contains("PXE")),
        "{status:?}"
    );
    // Kickstand answered the same client, and never the rogue.
    let logged = read_log();
    // Its first answer to a machine in a while is logged at info.
    assert!(logged.contains("dhcp: answered"), "{logged}");
    let warnings = logged
        .lines()
        .filter(|l| l.contains("another server offers boot information"))
        .count();
    assert_eq!(
        warnings, 1,
        "warned once per server, not per offer:\n{logged}"
    );
    let metrics = net.get("/metrics");
    assert!(
        metrics.contains("kickstand_rogue_dhcp_servers{server=\"10.78.0.9\""),
        "{metrics}"
    );

    // It stops: the warning goes once it has been quiet for 3 s.
    let mut rogue = rogue;
    let _ = rogue.kill();
    let _ = rogue.wait();
    let cleared = eventually(Duration::from_secs(30), || {
        net.discover();
        let status: serde_json::Value = serde_json::from_str(&net.get("/api/status")).ok()?;
        status["appliance"]["rogue_dhcp"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
    assert!(
        cleared.is_some(),
        "the warning never cleared:\n{}",
        read_log()
    );
    assert!(
        !net.get("/metrics")
            .contains("kickstand_rogue_dhcp_servers{"),
        "the metric stayed"
    );
}
