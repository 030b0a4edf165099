//! Several appliances on one segment in network namespaces, for the
//! standby tests and the failover benchmark: each `kickstand serve` on one
//! bridge with its own address, a PXE client beside them, one PostgreSQL
//! behind a bridge of its own (so one appliance can be cut off from it).
//! Everything is removed on drop. Nothing leaves the machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::postgres::Postgres;
use super::segment::{OVMF_DISCOVER, plug_veth, request_script, sh};
use super::{Bed, eventually};

pub const NODE01: &str = "52:54:00:10:00:01";
/// The segment's own address, held by whichever appliance is active.
pub const SEGMENT_ADDRESS: &str = "10.79.0.5";
/// Its IPv6 address: the segment is dual-stack.
pub const SEGMENT_ADDRESS6: &str = "fd79::5";
/// The shared PostgreSQL, on its own network.
pub const DATABASE: &str = "10.80.0.1";
/// The PXE client's address (its lease from the office, as it were).
pub const CLIENT: &str = "10.79.0.50";
pub const WAIT: Duration = Duration::from_secs(40);

/// The bridges' namespace (the switch, and the database behind a second
/// bridge), the appliances' and the client's.
pub struct Rack {
    pub switch: String,
    pub client: String,
    pub appliances: Vec<Appliance>,
    pub pg: Option<Postgres>,
    /// The primary's streaming replica, in [`Rack::up_replicated`].
    pub replica: Option<Postgres>,
}

/// Where the appliances' database is.
enum Database {
    /// In the switch's namespace, behind a link per appliance.
    Cuttable,
    /// A primary and a streaming replica on this machine's Unix sockets.
    Replicated,
}

pub struct Appliance {
    pub name: String,
    pub ns: String,
    /// Its own address on the segment.
    pub own: String,
    pub bed: Bed,
    pub log: PathBuf,
    pub daemon: Option<Child>,
}

impl Drop for Rack {
    fn drop(&mut self) {
        for a in &mut self.appliances {
            a.kill();
        }
        self.pg.take();
        self.replica.take();
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

impl Rack {
    /// `n` appliances (`rack-a1`, `rack-a2`, …, at `.11`, `.12`, …) and a
    /// client at [`CLIENT`], on one bridge; one PostgreSQL for them all,
    /// at [`DATABASE`] behind a bridge of its own (each appliance's
    /// `db0`), so a test can cut one appliance off the database alone.
    pub fn up(tag: &str, n: usize) -> Rack {
        Rack::up_with(tag, n, Database::Cuttable)
    }

    /// [`Rack::up`] with the database a primary and its streaming
    /// replica (`pg.sh start-tls` and `start-standby`), which the
    /// appliances reach through their Unix sockets, the primary first
    /// (`target_session_attrs=read-write`): [`Rack::pg`] and
    /// [`Rack::replica`].
    pub fn up_replicated(tag: &str, n: usize) -> Rack {
        Rack::up_with(tag, n, Database::Replicated)
    }

    fn up_with(tag: &str, n: usize, database: Database) -> Rack {
        let id = std::process::id();
        let ns = |what: &str| format!("ks-{tag}-{what}-{id}");
        let mut rack = Rack {
            switch: ns("sw"),
            client: ns("client"),
            appliances: Vec::new(),
            pg: None,
            replica: None,
        };
        let sw = rack.switch.clone();
        sh(&["ip", "netns", "add", &sw]);
        sh(&["ip", "-n", &sw, "link", "set", "lo", "up"]);
        for bridge in ["br0", "db"] {
            sh(&["ip", "-n", &sw, "link", "add", bridge, "type", "bridge"]);
            sh(&["ip", "-n", &sw, "link", "set", bridge, "up"]);
        }
        let cidr = format!("{DATABASE}/24");
        sh(&["ip", "-n", &sw, "addr", "add", &cidr, "dev", "db"]);
        let (pg, url) = match database {
            Database::Cuttable => {
                let pg = Postgres::start_in(&sw, DATABASE);
                let url = pg.url.clone();
                (pg, url)
            }
            Database::Replicated => {
                let primary = Postgres::start_tls();
                let replica = Postgres::start_standby(&primary);
                let socket = |pg: &Postgres| pg.file("").display().to_string();
                let url = format!(
                    "postgresql://kickstand@/postgres?host={},{}&port={},{}&target_session_attrs=read-write",
                    socket(&primary),
                    socket(&replica),
                    primary.port(),
                    replica.port()
                );
                rack.replica = Some(replica);
                (primary, url)
            }
        };
        rack.plug(&rack.client.clone(), "c", CLIENT);
        for i in 1..=n {
            let appliance = Appliance {
                name: format!("rack-a{i}"),
                ns: ns(&format!("a{i}")),
                own: format!("10.79.0.{}", 10 + i),
                bed: Bed::new(),
                log: PathBuf::new(),
                daemon: None,
            };
            rack.plug(&appliance.ns, &format!("a{i}"), &appliance.own);
            rack.link(
                &appliance.ns,
                &format!("d{i}"),
                "db",
                "db0",
                &format!("10.80.0.{}", 10 + i),
            );
            rack.appliances.push(appliance);
        }
        for a in &mut rack.appliances {
            a.configure(&url);
        }
        rack.pg = Some(pg);
        rack
    }

    /// Cuts (or restores) appliance `i`'s link to the database: its
    /// packets to it and back go nowhere, without an error, as when a
    /// cable or a switch between them fails.
    pub fn database_link(&self, i: usize, up: bool) {
        let port = format!("d{}", i + 1);
        let state = if up { "up" } else { "down" };
        sh(&["ip", "-n", &self.switch, "link", "set", &port, state]);
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.switch.clone(), self.client.clone()];
        all.extend(self.appliances.iter().map(|a| a.ns.clone()));
        all
    }

    /// A new namespace with `eth0` at `address` on the segment's bridge.
    /// Its IPv6 address is `fd79::<the IPv4 address's last octet>`.
    pub fn plug(&self, ns: &str, port: &str, address: &str) {
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        self.link(ns, port, "br0", "eth0", address);
        let host = address.rsplit('.').next().expect("an IPv4 address");
        // nodad: usable at once; the bed owns these addresses.
        let cidr = format!("fd79::{host}/64");
        sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0", "nodad"]);
    }

    /// `ns`'s interface `dev` at `address`/24, on the switch's `bridge`
    /// through its port `port`.
    pub fn link(&self, ns: &str, port: &str, bridge: &str, dev: &str, address: &str) {
        plug_veth(&self.switch, bridge, port, ns, dev);
        let cidr = format!("{address}/24");
        sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    pub fn start_all(&mut self) {
        for a in &mut self.appliances {
            a.start();
        }
    }

    /// The one appliance that says it is active, once every one says
    /// what it is and exactly one is.
    pub fn active(&self) -> usize {
        let roles = eventually(WAIT, || {
            // One that does not answer (frozen, killed) says nothing; one
            // cut off from the database does not know (`unknown`).
            let roles: Vec<Option<String>> = self.appliances.iter().map(Appliance::role).collect();
            let settled = roles
                .iter()
                .flatten()
                .all(|r| ["active", "standby", "unknown"].contains(&r.as_str()));
            let active = roles.iter().flatten().filter(|r| *r == "active").count();
            (settled && active == 1).then_some(roles)
        });
        let roles = roles.unwrap_or_else(|| panic!("no single active appliance:\n{}", self.logs()));
        roles
            .iter()
            .position(|r| r.as_deref() == Some("active"))
            .expect("one active")
    }

    /// Broadcasts a PXE client's DISCOVER for [`NODE01`] from the client
    /// and collects answers for `listen`: each as (the address it came
    /// from, the server it names in siaddr). Started, not waited for.
    pub fn discover(&self, listen: Duration) -> Child {
        let script = "import socket, sys, time\n\
             p = bytearray.fromhex(sys.argv[1])\n\
             p[10] |= 0x80\n\
             p[28:34] = bytes.fromhex(sys.argv[2].replace(':', ''))\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
             s.bind(('0.0.0.0', 68))\n\
             s.sendto(bytes(p), ('255.255.255.255', 67))\n\
             s.settimeout(0.1)\n\
             end = time.time() + float(sys.argv[3])\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       data, (ip, port) = s.recvfrom(4096)\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   if port == 67 and data[0] == 2 and data[4:8] == p[4:8]:\n\
             \x20       print(ip, socket.inet_ntoa(data[20:24]), flush=True)\n";
        Command::new("ip")
            .args(["netns", "exec", &self.client, "python3", "-c", script])
            .arg(OVMF_DISCOVER.hex())
            .arg(NODE01)
            .arg(listen.as_secs_f64().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3")
    }

    /// OVMF's PXE Solicit (its DUID-LLT carrying [`NODE01`]'s MAC)
    /// multicast to the DHCPv6 servers from the client; the link-local
    /// address of each server that advertised in `listen`, a line each.
    pub fn solicit(&self, listen: Duration) -> Vec<String> {
        let fixture = format!(
            "{}/../dhcp/tests/fixtures/ovmf-pxe-solicit.hex",
            env!("CARGO_MANIFEST_DIR")
        );
        let hex: String = std::fs::read_to_string(fixture)
            .expect("fixture")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        let hex = hex.replacen("525400000602", &NODE01.replace(':', ""), 1);
        let script = "import socket, sys, time\n\
             m = bytes.fromhex(sys.argv[1])\n\
             s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
             s.bind(('::', 546))\n\
             s.sendto(m, ('ff02::1:2', 547, 0, socket.if_nametoindex('eth0')))\n\
             s.settimeout(0.1)\n\
             end = time.time() + float(sys.argv[2])\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       data, peer = s.recvfrom(4096)\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   if data[0] == 2 and data[1:4] == m[1:4]:\n\
             \x20       print(peer[0].split('%')[0], flush=True)\n";
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "python3", "-c", script])
            .arg(hex)
            .arg(listen.as_secs_f64().to_string())
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Who answered a [`Rack::discover`]: (from, siaddr) per answer.
    pub fn answers(child: Child) -> Vec<(String, String)> {
        let out = child.wait_with_output().expect("python3");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    /// Exactly one answer, from `appliance`, naming the segment's address.
    pub fn only_answer_is_from(&self, appliance: usize, answers: &[(String, String)]) {
        let own = &self.appliances[appliance].own;
        assert_eq!(
            answers,
            [(own.clone(), SEGMENT_ADDRESS.to_owned())],
            "one answer, from {} ({own}), naming the segment's address:\n{}",
            self.appliances[appliance].name,
            self.logs()
        );
    }

    /// The MAC the client's neighbour table has for `address`, if any.
    pub fn neighbour(&self, address: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.client, "neigh", "show", address, "dev", "eth0"])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }

    /// `curl`'s exit code for a TFTP read of `file` from `address`, asked
    /// from the client: 0 read, 68 the server said it has no such file,
    /// 28 no answer in 3 s.
    pub fn tftp(&self, address: &str, file: &str) -> Option<i32> {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "curl",
                "-sS",
                "-m",
                "3",
                "-o",
                "/dev/null",
            ])
            .arg(format!("tftp://{address}/{file}"))
            .status()
            .expect("curl")
            .code()
    }

    /// A shell command line run on the client, started, not waited for.
    pub fn run_on_client(&self, line: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.client, "sh", "-c", line])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh")
    }

    /// `curl` from the client: the status and the body.
    pub fn curl(&self, method: &str, url: &str) -> (u16, String) {
        curl(&self.client, method, url)
    }

    /// A REQUEST for [`CLIENT`] from [`NODE01`], taking the office's offer
    /// (as its firmware's own exchange would): ProxyDHCP learns where the
    /// machine is, the one address its build token goes to.
    pub fn request_lease(&self) {
        let script = request_script(NODE01, CLIENT, "10.79.0.1");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "python3", "-c", &script])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn logs(&self) -> String {
        self.appliances
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.name, a.log_text()))
            .collect()
    }
}

impl Appliance {
    pub fn configure(&mut self, url: &str) {
        let bed = &self.bed;
        for (from, to) in [
            (
                "address: 127.0.0.1",
                format!("address: [{SEGMENT_ADDRESS}, \"{SEGMENT_ADDRESS6}\"]"),
            ),
            ("bind: 127.0.0.1", "bind: \"::\"".to_owned()),
            (
                "interfaces: []",
                "interfaces: [eth0]\n  segment: rack-a".to_owned(),
            ),
            ("http_port: 0", "http_port: 8080".to_owned()),
            ("tftp_port: 0", "tftp_port: 69".to_owned()),
            ("mode: off", "mode: proxy".to_owned()),
        ] {
            bed.edit("profiles/kickstand.yaml", from, &to);
        }
        let config = bed.config();
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(&format!(
            "state:\n  url: \"{url}\"\n  appliance: {}\n",
            self.name
        ));
        std::fs::write(&config, text).expect("write config");
        self.log = bed.path("kickstand.log");
    }

    pub fn start(&mut self) {
        // A process group of its own, as at a terminal: Ctrl-C reaches
        // `serve` and its address keeper alike (`signal_group`).
        let daemon = Command::new("ip")
            .args(["netns", "exec", &self.ns, "setsid"])
            .arg(env!("CARGO_BIN_EXE_kickstand"))
            .arg("--config")
            .arg(self.bed.config())
            .arg("serve")
            .env("NO_COLOR", "1")
            .env("KICKSTAND_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log"))
            .spawn()
            .expect("kickstand serve");
        self.daemon = Some(daemon);
        let ready = eventually(WAIT, || {
            self.log_text().contains("kickstand ready").then_some(())
        });
        assert!(
            ready.is_some(),
            "{} did not start:\n{}",
            self.name,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What its status document says it is: `active`, `standby`, `unknown`.
    pub fn role(&self) -> Option<String> {
        self.daemon.as_ref()?;
        let (code, body) = self.get("/api/status");
        if code != 200 {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(doc["appliance"]["segment"]["role"].as_str()?.to_owned())
    }

    /// `path` asked of its own address, from its own namespace.
    pub fn get(&self, path: &str) -> (u16, String) {
        curl(&self.ns, "GET", &format!("http://{}:8080{path}", self.own))
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.daemon.as_ref().expect("running").id().to_string();
        sh(&["kill", &format!("-{signal}"), &pid]);
    }

    /// `signal` to its whole process group: `serve` and its keeper.
    pub fn signal_group(&self, signal: &str) {
        let pid = self.daemon.as_ref().expect("running").id();
        sh(&["kill", &format!("-{signal}"), "--", &format!("-{pid}")]);
    }

    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &d.id().to_string()])
                .status();
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// The status page's segment line, as Chromium shows it (the page
    /// loaded from its own address, in its namespace).
    pub fn segment_card(&self) -> String {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/beds/browser/segment_card.py"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", script])
            .arg(format!("http://{}:8080", self.own))
            .output()
            .expect("python3 (Playwright) and chromium");
        assert!(
            out.status.success(),
            "{}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Whether the segment's address is on its interface.
    /// Its link-local address on the segment.
    pub fn link_local(&self) -> String {
        let out = Command::new("ip")
            .args([
                "-n", &self.ns, "-6", "-br", "addr", "show", "dev", "eth0", "scope", "link",
            ])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cidr = text
            .split_whitespace()
            .nth(2)
            .expect("a link-local address");
        cidr.split('/').next().unwrap_or(cidr).to_owned()
    }

    /// Its MAC on the segment.
    pub fn mac(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-br", "link", "show", "dev", "eth0"])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().nth(2).expect("a MAC").to_owned()
    }

    pub fn holds_address(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-4", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {SEGMENT_ADDRESS}/32"))
    }
}

pub fn curl(ns: &str, method: &str, url: &str) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "-m", "5", "-X", method])
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

pub fn segment_url(path: &str) -> String {
    format!("http://{SEGMENT_ADDRESS}:8080{path}")
}
