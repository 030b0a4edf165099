//! One rack segment in network namespaces, for the tests that need real
//! broadcasts: the appliance's namespace holds the bridge `ksbr0` at
//! `<subnet>.1` and runs `kickstand serve` on it; every other member has
//! one interface `eth0` on the bridge. Everything is removed on drop, even
//! when an assertion fails. Nothing leaves the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Bed, eventually};

/// The appliance's namespace is member 0.
pub const APPLIANCE: usize = 0;

/// A PXE client's DISCOVER captured from real firmware (a file of
/// `crates/dhcp/tests/fixtures/`), and the MAC it carries.
#[derive(Debug, Clone, Copy)]
pub struct Discover {
    pub fixture: &'static str,
    pub mac: &'static str,
}

/// OVMF's native PXE.
pub const OVMF_DISCOVER: Discover = Discover {
    fixture: "ovmf-pxe-discover.hex",
    mac: "52:54:00:00:00:02",
};
/// QEMU's iPXE option ROM under SeaBIOS: user class `iPXE`.
pub const IPXE_DISCOVER: Discover = Discover {
    fixture: "bios-ipxe-discover.hex",
    mac: "52:54:00:00:00:01",
};

impl Discover {
    /// The packet, as the hex digits of its fixture (comments dropped).
    pub fn hex(&self) -> String {
        let fixture = format!(
            "{}/../dhcp/tests/fixtures/{}",
            env!("CARGO_MANIFEST_DIR"),
            self.fixture
        );
        std::fs::read_to_string(fixture)
            .expect("fixture")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect()
    }
}

/// A Python script that broadcasts, from `eth0`, a REQUEST with `mac`
/// taking the offer of `server` (option 54) for `address` (option 50):
/// a machine's own exchange with the office, or a forged one.
pub fn request_script(mac: &str, address: &str, server: &str) -> String {
    format!(
        "import socket, struct\n\
         mac = bytes.fromhex('{mac}')\n\
         hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, 0x4b53, 0, 0x8000,\n\
              bytes(4), bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))\n\
         opts = bytes([99, 130, 83, 99, 53, 1, 3, 50, 4]) + socket.inet_aton('{address}')\n\
         opts += bytes([54, 4]) + socket.inet_aton('{server}') + bytes([255])\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
         s.bind(('0.0.0.0', 68))\n\
         s.sendto(hdr + opts, ('255.255.255.255', 67))\n",
        mac = mac.replace(':', ""),
    )
}

/// A veth pair plugged into `bridge` of namespace `switch` (its end there
/// named `port`, up) and into namespace `ns` as `dev` (left down: the
/// caller addresses it first).
pub fn plug_veth(switch: &str, bridge: &str, port: &str, ns: &str, dev: &str) {
    sh(&[
        "ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
    ]);
    sh(&[
        "ip", "-n", switch, "link", "set", port, "master", bridge, "up",
    ]);
}

pub fn sh(args: &[&str]) {
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

pub struct Segment {
    names: Vec<String>,
    /// `10.78.0`: the segment is its /24.
    subnet: String,
    children: Vec<Child>,
    daemon: Option<Child>,
    log: PathBuf,
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.stop();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Segment {
    /// The appliance and one member per entry of `members`: its address's
    /// last octet in `subnet`, or `None` for a member that gets its address
    /// by DHCP. `tag` tells apart the namespaces of tests run at once.
    pub fn up(tag: &str, subnet: &str, members: &[Option<u8>], bed: &Bed) -> Segment {
        let id = std::process::id();
        let names: Vec<String> = (0..=members.len())
            .map(|i| format!("ks-{tag}-{i}-{id}"))
            .collect();
        let segment = Segment {
            names,
            subnet: subnet.to_owned(),
            children: Vec::new(),
            daemon: None,
            log: bed.path("kickstand.log"),
        };
        for ns in &segment.names {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let a = &segment.names[APPLIANCE];
        sh(&["ip", "-n", a, "link", "add", "ksbr0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            a,
            "addr",
            "add",
            &format!("{subnet}.1/24"),
            "dev",
            "ksbr0",
        ]);
        sh(&["ip", "-n", a, "link", "set", "ksbr0", "up"]);
        for (i, host) in members.iter().enumerate() {
            let (ns, port) = (&segment.names[i + 1], format!("v{}", i + 1));
            plug_veth(a, "ksbr0", &port, ns, "eth0");
            if let Some(host) = host {
                let addr = format!("{subnet}.{host}/24");
                sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            }
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        segment
    }

    pub fn name(&self, ns: usize) -> &str {
        &self.names[ns]
    }

    /// A command run in member `ns`'s namespace.
    pub fn exec(&self, ns: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[ns]]);
        cmd
    }

    /// Runs a Python `script` with `args` in member `ns` (the tests' raw
    /// packets: forged DHCP, router solicitations); its standard output.
    /// Fails the test, with the script's standard error, if it fails.
    pub fn python(&self, ns: usize, script: &str, args: &[&str]) -> String {
        let out = self
            .exec(ns)
            .args(["python3", "-c", script])
            .args(args)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "python3 in {}: {}",
            self.names[ns],
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dnsmasq` as a DHCP server in member `ns` (DNS off, in the
    /// foreground, on its `eth0` only, no lease file), with `args` saying
    /// what it serves; it answers once it has bound.
    pub fn dnsmasq(&self, ns: usize, args: &[&str]) -> Child {
        let child = self
            .exec(ns)
            .args([
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--interface=eth0",
                "--bind-interfaces",
                "--leasefile-ro",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq");
        std::thread::sleep(Duration::from_millis(700));
        child
    }

    /// `discover`, broadcast from member `ns`.
    pub fn discover(&self, ns: usize, discover: Discover) {
        let hex = discover.hex();
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
        self.python(ns, &script, &[]);
    }

    /// A REQUEST broadcast from member `ns`'s `eth0` with `mac`, taking
    /// the offer of `server` (option 54) for `address` (option 50): what
    /// anyone on the LAN can send.
    pub fn forge_request(&self, ns: usize, mac: &str, address: &str, server: &str) {
        self.python(ns, &request_script(mac, address, server), &[]);
    }

    /// The office of an IPv6-only segment in member `ns`, at `<prefix>2`
    /// on its `eth0`: `radvd` as its router, advertising `<prefix>/64`
    /// with the M flag (addresses by DHCPv6 only), and `dnsmasq` as its
    /// DHCPv6 server, leasing `<prefix>100` to `<prefix>1ff`. `prefix` is
    /// a /64's first four groups and `::`, e.g. `fd77::`.
    pub fn ipv6_office(&mut self, ns: usize, prefix: &str, bed: &Bed) {
        let name = self.names[ns].clone();
        // nodad: usable at once; the bed owns these addresses.
        let address = format!("{prefix}2/64");
        sh(&[
            "ip", "-n", &name, "addr", "add", &address, "dev", "eth0", "nodad",
        ]);
        // radvd advertises only from a router.
        let forwarding = "net.ipv6.conf.all.forwarding=1";
        sh(&["ip", "netns", "exec", &name, "sysctl", "-qw", forwarding]);
        let config = bed.path("radvd.conf");
        std::fs::write(
            &config,
            format!(
                "interface eth0 {{\n  AdvSendAdvert on;\n  AdvManagedFlag on;\n  \
                 AdvOtherConfigFlag on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 4;\n  \
                 prefix {prefix}/64 {{\n    AdvOnLink on;\n    AdvAutonomous off;\n  }};\n}};\n"
            ),
        )
        .expect("write radvd.conf");
        let router = self
            .exec(ns)
            .args(["radvd", "--nodaemon", "--config"])
            .arg(&config)
            .arg("--pidfile")
            .arg(bed.path("radvd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("radvd");
        self.keep(router);
        let range = format!("--dhcp-range={prefix}100,{prefix}1ff,64,1h");
        let office = self.dnsmasq(ns, &[&range]);
        self.keep(office);
    }

    /// Keeps a peer (an office DHCP server, a rogue one) until the drop.
    pub fn keep(&mut self, child: Child) {
        self.children.push(child);
    }

    /// Sets up `bed`'s config for this segment: the appliance at `.1` on
    /// `ksbr0`, HTTP on 8080, and `dhcp` (the text after `mode: `).
    pub fn configure(&self, bed: &Bed, dhcp: &str) {
        let config = bed.config();
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text
            .replace("address: 127.0.0.1", &format!("address: {}.1", self.subnet))
            .replace("bind: 127.0.0.1", "bind: 0.0.0.0")
            .replace("interfaces: []", "interfaces: [ksbr0]")
            .replace("http_port: 0", "http_port: 8080")
            .replace("mode: off", &format!("mode: {dhcp}"));
        std::fs::write(&config, text).expect("write config");
    }

    /// Member `ns`'s own DHCP exchange with the office server on `dev`
    /// (busybox udhcpc: DISCOVER, OFFER, REQUEST with option 50 and the
    /// office's server id, ACK): the leased address, configured on `dev`
    /// as a /24.
    pub fn dhcp_lease(&self, ns: usize, dev: &str) -> String {
        let out = self
            .exec(ns)
            .args(["busybox", "udhcpc", "-i", dev, "-f", "-q", "-n"])
            .args(["-t", "5", "-T", "2", "-s", "/bin/true"])
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
            .unwrap_or_else(|| panic!("no lease from the office server on {dev}:\n{text}"))
            .to_owned();
        let cidr = format!("{leased}/24");
        sh(&["ip", "-n", self.name(ns), "addr", "add", &cidr, "dev", dev]);
        leased
    }

    /// Makes the appliance an IPv6-only one at `<prefix>1` (see
    /// [`Segment::ipv6_office`] for `prefix`): the address on `ksbr0`, and
    /// `bed`'s config naming it, bound to `::`, HTTP on 8080, DHCP `proxy`.
    pub fn ipv6_appliance(&self, bed: &Bed, prefix: &str) {
        // nodad: usable at once; the bed owns the address.
        let address = format!("{prefix}1");
        let name = self.name(APPLIANCE);
        let cidr = format!("{address}/64");
        sh(&[
            "ip", "-n", name, "addr", "add", &cidr, "dev", "ksbr0", "nodad",
        ]);
        for (from, to) in [
            ("address: 127.0.0.1", format!("address: \"{address}\"")),
            ("bind: 127.0.0.1", "bind: \"::\"".to_owned()),
            ("interfaces: []", "interfaces: [ksbr0]".to_owned()),
            ("http_port: 0", "http_port: 8080".to_owned()),
            ("mode: off", "mode: proxy".to_owned()),
        ] {
            bed.edit("profiles/kickstand.yaml", from, &to);
        }
    }

    /// Starts `kickstand serve` with `config` in the appliance's namespace
    /// and waits until it is ready (every socket bound, DHCP's too) and
    /// answers HTTP.
    pub fn serve(&mut self, config: &Path) {
        self.serve_under(&[], config);
    }

    /// [`Segment::serve`], the daemon started by `wrapper` (a command and
    /// its arguments, e.g. `setpriv` dropping a capability).
    pub fn serve_under(&mut self, wrapper: &[&str], config: &Path) {
        let daemon = self
            .exec(APPLIANCE)
            .args(wrapper)
            .arg(env!("CARGO_BIN_EXE_kickstand"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&self.log).expect("log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("kickstand serve in the namespace");
        self.daemon = Some(daemon);
        let up = eventually(Duration::from_secs(30), || {
            (self.log().contains("kickstand ready") && self.get("/status").contains("Kickstand"))
                .then_some(())
        });
        assert!(up.is_some(), "kickstand did not start:\n{}", self.log());
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `curl` of `url` from member `ns`: the status and the body.
    pub fn curl(&self, ns: usize, url: &str, extra: &[&str]) -> (u16, String) {
        let out = self
            .exec(ns)
            .args(["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The other boot servers the appliance lists (`/api/status`).
    pub fn rogues(&self) -> Option<Vec<serde_json::Value>> {
        let status: serde_json::Value = serde_json::from_str(&self.get("/api/status")).ok()?;
        status["appliance"]["rogue_dhcp"].as_array().cloned()
    }

    /// Waits until the appliance lists no other boot server (`poke` runs
    /// before each look: whatever makes it look again), and checks that
    /// the server's metric series went with it.
    pub fn assert_rogues_forgotten(&self, mut poke: impl FnMut()) {
        let cleared = eventually(Duration::from_secs(30), || {
            poke();
            self.rogues().filter(Vec::is_empty).map(|_| ())
        });
        assert!(
            cleared.is_some(),
            "the warning never cleared:\n{}",
            self.log()
        );
        assert!(
            !self
                .get("/metrics")
                .contains("kickstand_rogue_dhcp_servers{"),
            "the metric stayed"
        );
    }

    /// The appliance's HTTP URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}.1:8080{path}", self.subnet)
    }

    /// What the appliance answers at `path`, asked from its own namespace.
    pub fn get(&self, path: &str) -> String {
        self.curl(APPLIANCE, &self.url(path), &[]).1
    }
}
