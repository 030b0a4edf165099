//! Shared harness for the end-to-end tests: a private copy of the shipped
//! profiles and templates, and the real `kickstand` binary driven over HTTP.

#![allow(dead_code, unreachable_pub)]

pub mod bmc;
pub mod postgres;
pub mod rack;
pub mod segment;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn kickstand() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kickstand"))
}

/// A copy of `profiles/` and `templates/` in a temp dir, with the HTTP port
/// set to 0 (the daemon reports the port it got) and TFTP/DHCP off.
pub struct Bed {
    pub dir: tempfile::TempDir,
}

impl Bed {
    pub fn new() -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["profiles", "templates"] {
            copy_tree(&repo_root().join(sub), &dir.path().join(sub));
        }
        let bed = Bed { dir };
        bed.edit("profiles/kickstand.yaml", "http_port: 8080", "http_port: 0");
        bed.edit(
            "profiles/kickstand.yaml",
            "https_port: 8443",
            "https_port: 0",
        );
        bed.edit("profiles/kickstand.yaml", "tftp_port: 6969", "tftp_port: 0");
        bed.edit(
            "profiles/kickstand.yaml",
            "syslog_port: 5514",
            "syslog_port: 0",
        );
        bed
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("profiles/kickstand.yaml")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Replaces `from` with `to` in a file, in place.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.path(rel);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(path, text.replacen(from, to, 1)).expect("write");
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A running `kickstand serve`, its log captured; stopped with SIGTERM on drop.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    pub base: String,
    /// `https://…`: the operator's channel.
    pub https_base: String,
    /// The HTTPS certificate's SHA-256, as the daemon logged it.
    pub fingerprint: String,
    agent: ureq::Agent,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_with(kickstand().arg("--config").arg(config).arg("serve"))
    }

    pub fn start_with(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .env("KICKSTAND_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kickstand");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[kickstand] {line}");
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut daemon = Daemon {
            child,
            log,
            base: String::new(),
            https_base: String::new(),
            fingerprint: String::new(),
            agent,
        };
        let line = daemon.wait_for_log("http listening", Duration::from_secs(30));
        let line = line.unwrap_or_else(|| panic!("kickstand did not start:\n{}", daemon.log()));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line}"));
        daemon.base = format!("http://{addr}");
        let line = daemon
            .wait_for_log("https listening", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no HTTPS listener:\n{}", daemon.log()));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_owned()
        };
        daemon.https_base = format!("https://{}", field("addr="));
        daemon.fingerprint = field("fingerprint=");
        // Ready: its profile directories are watched, so an edit a test
        // makes from now on is seen.
        daemon
            .wait_for_log("kickstand ready", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("kickstand never got ready:\n{}", daemon.log()));
        daemon
    }

    /// The TFTP server's address, from its startup log line.
    pub fn tftp_addr(&self) -> String {
        let line = self
            .wait_for_log("tftp listening", Duration::from_secs(10))
            .expect("tftp started");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("addr=")
            .to_owned()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Waits for a log line containing `needle` that appeared after `skip`
    /// bytes of log; returns the line.
    pub fn wait_for_log_after(
        &self,
        skip: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log
                .get(skip..)
                .unwrap_or("")
                .lines()
                .find(|l| l.contains(needle))
            {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_log_after(0, needle, timeout)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        self.post_as(path, None, "")
    }

    /// A POST with `Authorization: Bearer <bearer>` and a body.
    pub fn post_as(&self, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.header("Authorization", &format!("Bearer {b}"));
        }
        let mut resp = req.send(body).expect("POST");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// A POST with a body of any bytes, as a broken installer may send.
    pub fn post_bytes(&self, path: &str, body: &[u8]) -> (u16, String) {
        let mut resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .send(body)
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// A request sent from another loopback address (`127.0.0.2`, say): a
    /// second machine, as far as the daemon can tell.
    pub fn request_from(
        &self,
        source: std::net::IpAddr,
        method: &str,
        path: &str,
    ) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let addr: std::net::SocketAddr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("daemon address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&std::net::SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket.connect(&addr.into()).expect("connect");
        let mut stream: std::net::TcpStream = socket.into();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: kickstand\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read");
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }

    /// A request over HTTPS to the certificate the daemon logged (and no
    /// other), with `Authorization: Bearer <bearer>` when given.
    pub fn https(&self, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
        tls::request(&self.https_base, &self.fingerprint, method, path, bearer)
    }

    /// An operator action over HTTPS with the operator token.
    pub fn operator_post(&self, bed: &Bed, path: &str, body: &str) -> (u16, String) {
        let token = self.operator_token(bed);
        tls::request_with(
            &self.https_base,
            &self.fingerprint,
            "POST",
            path,
            Some(&token),
            body,
        )
    }

    /// The operator token the daemon made in its state directory.
    pub fn operator_token(&self, bed: &Bed) -> String {
        let path = bed.path("var/state/operator.token");
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(&path).ok()
        })
        .expect("the daemon makes its operator token at start")
        .trim()
        .to_owned()
    }

    /// A host's kickstart, as the host fetches it: its install script
    /// first, for the build token. A failing script fetch answers instead.
    pub fn kickstart(&self, mac: &str) -> (u16, String) {
        let (status, script) = self.get(&format!("/boot/{mac}.ipxe"));
        match token_in(&script) {
            Some(token) if status == 200 => self.get(&format!("/ks/{mac}?token={token}")),
            _ => (status, script),
        }
    }

    /// The build token in a host's install script (`inst.ks=…?token=…`).
    pub fn build_token(&self, mac: &str) -> String {
        let (status, script) = self.get(&format!("/boot/{mac}.ipxe"));
        assert_eq!(status, 200, "{script}");
        token_in(&script).unwrap_or_else(|| panic!("no build token in:\n{script}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGTERM and wait; returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTPS client for the tests: rustls, pinned to a fingerprint.
pub mod tls {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;

    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    /// `AB:CD:…` of a DER certificate.
    pub fn fingerprint(der: &[u8]) -> String {
        kickstand_pin::Fingerprint::of(&CertificateDer::from(der)).to_string()
    }

    pub fn request(
        base: &str,
        pin: &str,
        method: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> (u16, String) {
        request_with(base, pin, method, path, bearer, "")
    }

    /// One request on a connection of its own (`Connection: close`).
    pub fn request_with(
        base: &str,
        pin: &str,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let pin = pin.parse().expect("a fingerprint");
        let config = kickstand_pin::client_config(Some(pin));
        let addr = base.trim_start_matches("https://");
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("kickstand").expect("name"),
        )
        .expect("TLS client");
        let tcp = std::net::TcpStream::connect(addr).expect("connect to the HTTPS listener");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
        write!(
            tls,
            "{method} {path} HTTP/1.1\r\nHost: kickstand\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write over TLS");
        let mut raw = Vec::new();
        if let Err(e) = tls.read_to_end(&mut raw) {
            // A peer that closes without close_notify: what came is the answer.
            assert!(!raw.is_empty(), "read over TLS: {e}");
        }
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes. Waiting is not a
/// speed assertion: the timeout only bounds a hung test.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool check metrics` on `metrics`: its complaints, if any.
pub fn promtool_complaints(metrics: &str) -> Option<String> {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), metrics.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool ends");
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The build token a script or kickstart carries.
pub fn token_in(text: &str) -> Option<String> {
    let at = text.find("?token=")? + "?token=".len();
    Some(
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect(),
    )
}
