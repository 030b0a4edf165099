//! End-to-end tests of Kickstand's caching repo proxy against real peers:
//! nginx as the mirror, squid as the office proxy (Basic auth on, no caching
//! of its own, so every upstream fetch shows in nginx's access log), and
//! `dnf --installroot` as the installer's package stage. The bed lives in
//! `tests/beds/mirror/` (`start.sh`, `stop.sh`, `dnf-install.sh`); every test
//! starts its own bed and its own `kickstand serve` on free loopback ports,
//! so the tests can run in parallel.
//!
//! Only the Rust standard library is used: the HTTP client below is a few
//! lines of HTTP/1.1 over `TcpStream` (hostile requests must go out byte for
//! byte anyway) and digests come from coreutils' `sha256sum`.
//!
//! Set `KS_KEEP_BED=1` to keep a test's work directory for a post-mortem.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The install tree under every mirror's base URL.
const OS: &str = "9-stream/BaseOS/x86_64/os";
/// The OS's second repository (xz repodata with comps, updateinfo, modules).
const APPSTREAM: &str = "9-stream/AppStream/x86_64/os";
const PROXY_USER: &str = "kick";
const PROXY_PASSWORD: &str = "secret";

fn bed_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/beds/mirror")
}

// ---------------------------------------------------------------------------
// The bed: nginx + squid started by start.sh under a per-test work directory.

struct Bed {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Bed {
    fn start(name: &str) -> Bed {
        let dir = PathBuf::from(format!("/tmp/ks-mirror-{name}-{}", std::process::id()));
        if dir.exists() {
            let _ = Command::new(bed_scripts().join("stop.sh"))
                .arg(&dir)
                .status();
            fs::remove_dir_all(&dir).expect("remove stale bed dir");
        }
        fs::create_dir_all(&dir).expect("create bed dir");
        let out = Command::new(bed_scripts().join("start.sh"))
            .arg(&dir)
            .env("KS_SQUID_AUTH", format!("{PROXY_USER}:{PROXY_PASSWORD}"))
            .env("KS_MIRROR_SLOW_RATE", "1m")
            .output()
            .expect("run tests/beds/mirror/start.sh");
        // Made before the assert so that a failed start still runs stop.sh.
        let mut bed = Bed {
            dir,
            env: HashMap::new(),
        };
        assert!(
            out.status.success(),
            "start.sh failed (missing peer?): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = fs::read_to_string(bed.dir.join("env")).expect("start.sh writes WORKDIR/env");
        bed.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        bed
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from bed env"))
    }

    fn port(&self, key: &str) -> u16 {
        self.var(key).parse().expect("port number in bed env")
    }

    /// The mirror's copy of `rel` (relative to the install tree).
    fn mirror_file(&self, rel: &str) -> PathBuf {
        Path::new(self.var("KS_MIRROR_ROOT")).join(OS).join(rel)
    }

    fn packages(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.mirror_file("Packages"))
            .expect("mirror Packages dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".rpm"))
            .collect();
        names.sort();
        names
    }

    /// nginx access log lines: (server port, method, request URI, status).
    fn nginx_log(&self) -> Vec<(u16, String, String, u16)> {
        let text = fs::read_to_string(self.var("KS_NGINX_ACCESS_LOG")).expect("nginx access log");
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                Some((
                    f.first()?.parse().ok()?,
                    f.get(1)?.to_string(),
                    f.get(2)?.to_string(),
                    f.get(3)?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// How many times nginx sent a body for a URI ending in `suffix`.
    fn upstream_fetches(&self, suffix: &str) -> usize {
        self.nginx_log()
            .iter()
            .filter(|(_, method, uri, status)| {
                method == "GET" && uri.ends_with(suffix) && (200..300).contains(status)
            })
            .count()
    }

    fn squid_log(&self) -> String {
        fs::read_to_string(self.var("KS_SQUID_ACCESS_LOG")).expect("squid access log")
    }

    fn nginx_log_len(&self) -> usize {
        self.nginx_log().len()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new(bed_scripts().join("stop.sh"))
            .arg(&self.dir)
            .status();
        if std::env::var_os("KS_KEEP_BED").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Kickstand itself: a config under the bed dir, `kickstand serve`, a log file.

struct Kickstand {
    child: Child,
    port: u16,
    home: PathBuf,
}

impl Kickstand {
    /// Starts `kickstand serve` with its config, cache and state under
    /// `bed/ks`. Calling it again on the same bed reuses the cache (a restart).
    fn start(bed: &Bed) -> Kickstand {
        Self::start_with(bed, appliance_config)
    }

    /// Every port is the kernel's choice (port 0), read back from the log:
    /// a port found free and then bound by the daemon may be taken in
    /// between by a test running beside it.
    fn start_with(bed: &Bed, config: fn(&Bed) -> String) -> Kickstand {
        Self::start_at(bed.dir.join("ks"), &config(bed))
    }

    /// `kickstand serve` with `config` and everything else under `home`:
    /// several appliances on one bed (a parent and its children) each have
    /// their own.
    fn start_at(home: PathBuf, config: &str) -> Kickstand {
        for sub in ["etc", "tftp", "templates", "var/cache", "var/state"] {
            fs::create_dir_all(home.join(sub)).expect("create kickstand dirs");
        }
        let config_file = home.join("etc/kickstand.yaml");
        fs::write(&config_file, config).expect("write kickstand.yaml");
        let config = config_file;
        let logged_before = fs::metadata(home.join("kickstand.log")).map_or(0, |m| m.len());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("kickstand.log"))
            .expect("open kickstand.log");
        let child = Command::new(env!("CARGO_BIN_EXE_kickstand"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn kickstand");
        let mut ks = Kickstand {
            child,
            port: 0,
            home,
        };
        ks.wait_ready(logged_before);
        ks
    }

    /// Waits for this run's HTTP listener (its log after `logged_before`
    /// bytes) and for it to answer.
    fn wait_ready(&mut self, logged_before: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "kickstand exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if self.port == 0 {
                self.port = self.http_port_logged(logged_before).unwrap_or(0);
            }
            if self.port != 0 && get(self.port, "/status").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kickstand never answered on port {}:\n{}",
                self.port,
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.home.join("kickstand.log")).unwrap_or_default()
    }

    /// The port of `http listening addr=…` in the log after `skip` bytes.
    fn http_port_logged(&self, skip: u64) -> Option<u16> {
        let log = self.log();
        let line = log
            .get(usize::try_from(skip).ok()?..)?
            .lines()
            .find(|l| l.contains("http listening"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse().ok()
    }

    fn repo_url(&self, mirror: &str) -> String {
        format!("http://127.0.0.1:{}/repo/{mirror}/{OS}/", self.port)
    }

    /// GET `/repo/<mirror>/<OS>/<rel>` and insist on a whole 200 response.
    fn fetch(&self, mirror: &str, rel: &str) -> Vec<u8> {
        let path = format!("/repo/{mirror}/{OS}/{rel}");
        match get(self.port, &path) {
            Ok(r) if r.status == 200 => r.body,
            Ok(r) => panic!(
                "GET {path}: status {}: {}\n{}",
                r.status,
                String::from_utf8_lossy(&r.body),
                self.log()
            ),
            Err(e) => panic!("GET {path}: {e}\n{}", self.log()),
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

impl Drop for Kickstand {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- kickstand log ---\n{}", self.log());
        }
        self.kill9();
    }
}

/// An OS definition `bed9` (the BaseOS tree plus AppStream, on mirror
/// `centos`) beside the appliance config, with the two templates every OS
/// names; no hosts, so nothing is rendered.
fn write_os_profile(bed: &Bed) {
    write_os_profile_at(&bed.dir.join("ks"));
}

/// [`write_os_profile`] for the appliance whose home is `home`.
fn write_os_profile_at(home: &Path) {
    for sub in ["etc", "templates"] {
        fs::create_dir_all(home.join(sub)).expect("create kickstand dirs");
    }
    fs::write(
        home.join("etc/os.yaml"),
        format!(
            "os:\n  bed9:\n    mirror: centos\n    tree: {OS}\n    repos:\n      - name: AppStream\n        path: {APPSTREAM}\n    kickstart: bed.ks.j2\n"
        ),
    )
    .expect("write os.yaml");
    fs::write(home.join("templates/bed.ks.j2"), "text\n").expect("write template");
    fs::write(home.join("templates/boot.ipxe.j2"), "#!ipxe\n").expect("write template");
}

/// `kickstand cache …` against the running daemon (as an operator would,
/// not on a terminal): its exit status and what it printed.
fn cache_cli(ks: &Kickstand, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kickstand"))
        .arg("--config")
        .arg(ks.home.join("etc/kickstand.yaml"))
        .arg("cache")
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run kickstand cache");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn appliance_config(bed: &Bed) -> String {
    format!(
        r#"# Written by crates/daemon/tests/mirror.rs
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: 0
  https_port: 0
  tftp_port: 0
  syslog_port: 0
dhcp:
  mode: "off"
tftp:
  root: ../tftp
proxy:
  url: {proxy}
  username: {PROXY_USER}
  password: {PROXY_PASSWORD}
mirrors:
  centos: [{http}]
  slow: [{slow}]
  secure: [{https}]
mirror_ca_file: {ca}
cache:
  dir: ../var/cache
  max_size: 1GiB
  # Short, so the respin test sees the new image within seconds.
  revalidate_after: 2s
paths:
  templates: ../templates
  state: ../var/state
"#,
        proxy = bed.var("KS_PROXY_URL"),
        ca = bed.var("KS_CA_PEM"),
        http = bed.var("KS_MIRROR_HTTP_URL"),
        slow = bed.var("KS_MIRROR_SLOW_URL"),
        https = bed.var("KS_MIRROR_HTTPS_URL"),
    )
}

/// The same appliance on an IPv6-only office network: its own address, the
/// office proxy and the mirrors are all IPv6 (the bed's `::1` side).
fn ipv6_appliance_config(bed: &Bed) -> String {
    let mut text = appliance_config(bed);
    let v4_address = "  address: 127.0.0.1\n  bind: 127.0.0.1\n";
    assert!(text.contains(v4_address), "{text}");
    text = text.replacen(v4_address, "  address: \"::1\"\n  bind: \"::\"\n", 1);
    for (v4, v6) in [
        (bed.var("KS_PROXY_URL"), bed.var("KS_PROXY_URL6")),
        (
            bed.var("KS_MIRROR_HTTP_URL"),
            bed.var("KS_MIRROR_HTTP_URL6"),
        ),
        (
            bed.var("KS_MIRROR_HTTPS_URL"),
            bed.var("KS_MIRROR_HTTPS_URL6"),
        ),
    ] {
        assert!(text.contains(v4), "{v4} not in the config");
        // Quoted: `[` opens a list in YAML.
        text = text.replacen(v4, &format!("{v6:?}"), 1);
    }
    text
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection, raw bytes out.

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn get(port: u16, path: &str) -> io::Result<Response> {
    raw_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` verbatim and reads one response: up to Content-Length,
/// the last chunk, or EOF (so keep-alive replies to raw requests end too).
/// A body shorter than its Content-Length (or a chunked body without its
/// last chunk) is an error: that is exactly what a client must never accept.
fn raw_request(port: u16, request: &str) -> io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(request.as_bytes())?;
    // No half-close after the request: hyper takes a read EOF for a client
    // that has gone away and drops the response.
    // A CONNECT reply has no body to wait for: a tunnel stays open.
    let no_body = request.starts_with("HEAD") || request.starts_with("CONNECT");
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if message_complete(&raw, no_body) {
            break;
        }
    }
    parse_response(&raw, no_body)
}

fn message_complete(raw: &[u8], no_body: bool) -> bool {
    match parse_response(raw, no_body) {
        Ok(r) => {
            no_body
                || r.header("content-length").is_some()
                || r.header("transfer-encoding").is_some()
        }
        Err(_) => false,
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8], no_body: bool) -> io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(format!("no complete header block in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if no_body {
        return Ok(r);
    }
    let rest = &raw[end + 4..];
    if r.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        r.body = dechunk(rest)?;
    } else if let Some(len) = r.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        if rest.len() != len {
            return Err(bad(format!(
                "body is {} bytes, content-length {len}",
                rest.len()
            )));
        }
        r.body = rest.to_vec();
    } else {
        r.body = rest.to_vec();
    }
    Ok(r)
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(format!("bad chunk size {size_hex:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Digests and dnf.

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().expect("sha256sum stdin");
    let data = bytes.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum output");
    writer
        .join()
        .expect("sha256sum writer")
        .expect("write to sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn sha256_file(path: &Path) -> String {
    sha256(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// `dnf install` into `root` from `baseurl` only; extra environment for
/// dnf-install.sh (proxy, CA) in `env`.
fn dnf_install(root: &Path, baseurl: &str, packages: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(bed_scripts().join("dnf-install.sh"))
        .arg(root)
        .arg(baseurl)
        .args(packages)
        .envs(env.iter().copied())
        .output()
        .expect("run dnf-install.sh");
    assert!(
        out.status.success(),
        "dnf install {packages:?} from {baseurl} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_installed(root: &Path) {
    let hello = fs::read_to_string(root.join("usr/share/ks-hello/hello.txt"))
        .expect("ks-hello file installed");
    assert_eq!(hello, "hello from ks-hello\n");
    let lib = fs::read_to_string(root.join("usr/share/ks-lib/VERSION"))
        .expect("ks-lib (dependency) installed");
    assert_eq!(lib, "ks-lib 1.0\n");
}

/// Every regular file under `dir`, with its contents.
fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.is_file() {
                let bytes =
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Replaces `path` the way a mirror sync does (new inode, rename over), with
/// a later mtime so validators (ETag, Last-Modified) change too.
fn respin(path: &Path) -> String {
    let mut fresh = vec![0u8; fs::metadata(path).expect("stat old file").len() as usize];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut fresh))
        .expect("read /dev/urandom");
    let tmp = path.with_extension("respin");
    let f = fs::File::create(&tmp).expect("create respin file");
    (&f).write_all(&fresh).expect("write respin file");
    f.set_modified(SystemTime::now() + Duration::from_secs(120))
        .expect("set mtime");
    drop(f);
    fs::rename(&tmp, path).expect("rename respin file");
    sha256(&fresh)
}

// ---------------------------------------------------------------------------
// The bed on its own: proves the peers work before blaming Kickstand.

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn bed_serves_dnf_straight_through_squid() {
    let bed = Bed::start("bed");
    let proxy = bed.var("KS_PROXY_URL").to_owned();
    let auth = [
        ("KS_DNF_PROXY", proxy.as_str()),
        ("KS_DNF_PROXY_USER", PROXY_USER),
        ("KS_DNF_PROXY_PASSWORD", PROXY_PASSWORD),
    ];
    let root = bed.dir.join("root-http");
    dnf_install(
        &root,
        &format!("{}{OS}/", bed.var("KS_MIRROR_HTTP_URL")),
        &["ks-hello"],
        &auth,
    );
    assert_installed(&root);

    let root = bed.dir.join("root-https");
    let mut with_ca = auth.to_vec();
    with_ca.push(("KS_DNF_SSLCACERT", bed.var("KS_CA_PEM")));
    dnf_install(
        &root,
        &format!("{}{OS}/", bed.var("KS_MIRROR_HTTPS_URL")),
        &["ks-hello"],
        &with_ca,
    );
    assert_installed(&root);

    let squid = bed.squid_log();
    let http_port = bed.var("KS_MIRROR_HTTP_PORT");
    let https_port = bed.var("KS_MIRROR_HTTPS_PORT");
    assert!(
        squid.contains(&format!(
            "GET http://127.0.0.1:{http_port}/centos/{OS}/Packages/ks-hello"
        )),
        "{squid}"
    );
    assert!(
        squid.contains(&format!("CONNECT 127.0.0.1:{https_port} 200")),
        "{squid}"
    );
    assert_eq!(bed.upstream_fetches("/Packages/ks-lib-1.0-1.noarch.rpm"), 2);

    // The office proxy refuses what Kickstand must never rely on.
    let squid_port = bed.port("KS_SQUID_PORT");
    let target = format!("http://127.0.0.1:{http_port}/centos/{OS}/.treeinfo");
    let no_auth = raw_request(
        squid_port,
        &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    )
    .expect("squid answers");
    assert_eq!(no_auth.status, 407, "squid must demand proxy credentials");
    let origin_form = raw_request(
        squid_port,
        "GET /centos/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .expect("squid answers");
    assert!(
        origin_form.status >= 400,
        "squid must refuse origin-form, got {}",
        origin_form.status
    );
}

// ---------------------------------------------------------------------------
// Kickstand through the bed.

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn dnf_installs_through_repo_proxy() {
    let bed = Bed::start("dnf");
    let ks = Kickstand::start(&bed);
    let root = bed.dir.join("root");
    dnf_install(&root, &ks.repo_url("centos"), &["ks-hello"], &[]);
    assert_installed(&root);

    // It went Kickstand -> squid (authenticated) -> nginx.
    let squid = bed.squid_log();
    let line = format!(
        "GET {}{OS}/Packages/ks-hello-1.0-1.noarch.rpm 200",
        bed.var("KS_MIRROR_HTTP_URL")
    );
    assert!(squid.contains(&line), "squid log lacks {line:?}:\n{squid}");
    assert_eq!(
        bed.upstream_fetches("/Packages/ks-hello-1.0-1.noarch.rpm"),
        1
    );
    assert_eq!(bed.upstream_fetches("/Packages/ks-lib-1.0-1.noarch.rpm"), 1);
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn parallel_dnf_clients_fetch_each_package_once() {
    let bed = Bed::start("parallel");
    let ks = Kickstand::start(&bed);
    let baseurl = ks.repo_url("centos");
    let roots: Vec<PathBuf> = (0..4).map(|i| bed.dir.join(format!("root{i}"))).collect();
    thread::scope(|s| {
        for root in &roots {
            let baseurl = &baseurl;
            s.spawn(move || dnf_install(root, baseurl, &["ks-hello", "ks-payload"], &[]));
        }
    });
    for root in &roots {
        assert_installed(root);
        let blob = root.join("usr/share/ks-payload/blob.bin");
        assert_eq!(
            fs::metadata(&blob).expect("payload installed").len(),
            4 << 20
        );
    }
    let fetches: BTreeMap<String, usize> = bed
        .packages()
        .into_iter()
        .map(|p| (p.clone(), bed.upstream_fetches(&format!("/Packages/{p}"))))
        .collect();
    assert!(
        fetches.values().all(|&n| n == 1),
        "each package must be fetched upstream exactly once, got {fetches:?}"
    );
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn cached_files_match_mirror_sha256() {
    let bed = Bed::start("sha");
    let ks = Kickstand::start(&bed);
    let mut files: Vec<String> = [
        "repodata/repomd.xml",
        ".treeinfo",
        "images/pxeboot/vmlinuz",
        "images/pxeboot/initrd.img",
        "images/install.img",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.extend(bed.packages().into_iter().map(|p| format!("Packages/{p}")));
    for rel in &files {
        let want = sha256_file(&bed.mirror_file(rel));
        let miss = ks.fetch("centos", rel);
        assert_eq!(
            sha256(&miss),
            want,
            "{rel}: first (miss) response differs from the mirror"
        );
        let hit = ks.fetch("centos", rel);
        assert_eq!(
            sha256(&hit),
            want,
            "{rel}: second (cached) response differs from the mirror"
        );
    }
    for p in bed.packages() {
        assert_eq!(
            bed.upstream_fetches(&format!("/Packages/{p}")),
            1,
            "{p} is immutable: one upstream fetch"
        );
    }
    // On disk: every file is held whole in some cache file (the body may
    // follow a header of the cache's own, so match it as a suffix).
    let cached = read_tree(&ks.home.join("var/cache"));
    for rel in &files {
        let bytes = fs::read(bed.mirror_file(rel)).expect("read mirror file");
        assert!(
            cached.iter().any(|(_, c)| c.ends_with(&bytes)),
            "{rel}: no file under the cache dir holds it whole ({} cache files)",
            cached.len()
        );
    }
    // Cached again after a restart: the cache is on disk, not in memory.
    drop(ks);
    let ks = Kickstand::start(&bed);
    for p in bed.packages() {
        let rel = format!("Packages/{p}");
        assert_eq!(
            sha256(&ks.fetch("centos", &rel)),
            sha256_file(&bed.mirror_file(&rel))
        );
        assert_eq!(
            bed.upstream_fetches(&format!("/Packages/{p}")),
            1,
            "{p} refetched after restart"
        );
    }
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn hostile_requests_are_refused_and_never_reach_the_proxy() {
    let bed = Bed::start("hostile");
    let ks = Kickstand::start(&bed);
    let mirror_port = bed.var("KS_MIRROR_HTTP_PORT");
    let https_port = bed.var("KS_MIRROR_HTTPS_PORT");
    let squid_before = bed.squid_log();
    let nginx_before = bed.nginx_log_len();
    let host = format!("127.0.0.1:{}", ks.port);
    let requests = [
        format!("GET /repo/centos/../../etc/passwd HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/centos/../../../../../../etc/passwd HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/centos/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/centos/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!(
            "GET /repo/centos/9-stream/..%2f..%2f..%2f..%2fetc/passwd HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ),
        format!("GET /repo/centos/..\\..\\etc\\passwd HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/centos/%00/etc/passwd HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/%2e%2e/centos/{OS}/.treeinfo HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/nosuchmirror/{OS}/.treeinfo HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /repo/centos@127.0.0.1:{mirror_port}/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        "GET http://other-host/ HTTP/1.1\r\nHost: other-host\r\n\r\n".to_owned(),
        format!(
            "GET http://127.0.0.1:{mirror_port}/centos/{OS}/.treeinfo HTTP/1.1\r\nHost: 127.0.0.1:{mirror_port}\r\n\r\n"
        ),
        format!("CONNECT 127.0.0.1:{https_port} HTTP/1.1\r\nHost: 127.0.0.1:{https_port}\r\n\r\n"),
        "CONNECT other-host:443 HTTP/1.1\r\nHost: other-host:443\r\n\r\n".to_owned(),
    ];
    for req in &requests {
        let first_line = req.lines().next().unwrap_or_default();
        match raw_request(ks.port, req) {
            Ok(r) => {
                assert!(
                    r.status >= 400,
                    "{first_line:?} must be refused, got {} {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
                assert!(
                    !String::from_utf8_lossy(&r.body).contains("root:"),
                    "{first_line:?} leaked /etc/passwd"
                );
            }
            // A closed connection is a refusal too, as long as the daemon lives.
            Err(e) => eprintln!("{first_line:?}: connection ended without a response ({e})"),
        }
    }
    assert_eq!(
        bed.squid_log(),
        squid_before,
        "hostile requests reached the office proxy"
    );
    assert_eq!(
        bed.nginx_log_len(),
        nginx_before,
        "hostile requests reached the mirror"
    );
    // Still serving.
    let treeinfo = ks.fetch("centos", ".treeinfo");
    assert_eq!(
        sha256(&treeinfo),
        sha256_file(&bed.mirror_file(".treeinfo"))
    );
}

/// A mirror page with script, as a hostile or tampered plain-HTTP mirror
/// could serve it.
const HOSTILE_PAGE: &str = "<html><script>fetch('/api/discovered/clear', {method: 'POST', \
     headers: {Authorization: 'Bearer ' + localStorage.token}})</script></html>\n";

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn mirror_bytes_are_never_a_page_of_the_appliance() {
    let bed = Bed::start("nosniff");
    fs::write(bed.mirror_file("evil.html"), HOSTILE_PAGE).expect("write the page");
    age(&bed.mirror_file("evil.html"));
    write_os_profile(&bed);
    let ks = Kickstand::start(&bed);
    let host = format!("127.0.0.1:{}", ks.port);
    let page = format!("/repo/centos/{OS}/evil.html");
    let request = |head: &str, extra: &str| {
        raw_request(
            ks.port,
            &format!("{head} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
        )
        .unwrap_or_else(|e| panic!("{head}: {e}"))
    };
    let assert_never_a_page = |what: &str, r: &Response| {
        assert_eq!(
            (
                r.header("x-content-type-options"),
                r.header("content-security-policy")
            ),
            (Some("nosniff"), Some("sandbox")),
            "{what}: {} {:?}",
            r.status,
            r.headers
        );
    };

    let miss = request(&format!("GET {page}"), "");
    assert_eq!(
        (miss.status, miss.header("x-kickstand-cache")),
        (200, Some("miss"))
    );
    assert_eq!(miss.body, HOSTILE_PAGE.as_bytes());
    assert!(
        miss.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "the mirror's type passes through: {:?}",
        miss.headers
    );
    assert_never_a_page("miss", &miss);
    // From the cache (checked with the mirror first: not a package file).
    let hit = request(&format!("GET {page}"), "");
    assert_eq!(hit.status, 200);
    assert!(
        matches!(hit.header("x-kickstand-cache"), Some("hit" | "revalidated")),
        "{:?}",
        hit.headers
    );
    assert_never_a_page("hit", &hit);
    let head = request(&format!("HEAD {page}"), "");
    assert_never_a_page("HEAD", &head);
    let range = request(&format!("GET {page}"), "Range: bytes=0-5\r\n");
    assert_eq!(range.status, 206);
    assert_never_a_page("Range", &range);
    let validator = match (hit.header("etag"), hit.header("last-modified")) {
        (Some(etag), _) => format!("If-None-Match: {etag}\r\n"),
        (None, Some(date)) => format!("If-Modified-Since: {date}\r\n"),
        (None, None) => panic!("no validator on the hit: {:?}", hit.headers),
    };
    let not_modified = request(&format!("HEAD {page}"), &validator);
    assert_eq!(not_modified.status, 304);
    assert_never_a_page("304", &not_modified);
    for path in [
        format!("/repo/centos/{OS}/no-such.html"),
        "/repo/nosuchmirror/x.html".to_owned(),
        "/os/bed9/no-such.html".to_owned(),
        "/os/bed9".to_owned(),
    ] {
        let error = request(&format!("GET {path}"), "");
        assert!(error.status >= 400, "{path}: {}", error.status);
        assert_never_a_page(&path, &error);
    }
    let refused = request(&format!("POST {page}"), "Content-Length: 0\r\n");
    assert_eq!(refused.status, 405);
    assert_never_a_page("POST", &refused);
    // The status page runs its own script: no sandbox there.
    let status_page = request("GET /", "");
    assert_eq!(status_page.header("content-security-policy"), None);
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn mirror_respin_serves_old_or_new_never_a_mix() {
    let bed = Bed::start("respin");
    let ks = Kickstand::start(&bed);
    let image = bed.mirror_file("images/install.img");
    let old = sha256_file(&image);
    let port = ks.port;
    let path = format!("/repo/slow/{OS}/images/install.img");
    let download =
        |path: String| thread::spawn(move || get(port, &path).map(|r| (r.status, sha256(&r.body))));

    // 4 MiB at nginx's 1 MiB/s: the swap lands in the middle of the first fetch.
    let mut clients: Vec<_> = (0..3).map(|_| download(path.clone())).collect();
    thread::sleep(Duration::from_millis(1200));
    let new = respin(&image);
    thread::sleep(Duration::from_millis(300));
    clients.extend((0..3).map(|_| download(path.clone())));
    let mut results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    results.extend(
        (0..2)
            .map(|_| download(path.clone()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| c.join().expect("client thread")),
    );

    for (i, r) in results.iter().enumerate() {
        let (status, sum) = r
            .as_ref()
            .unwrap_or_else(|e| panic!("client {i}: {e}\n{}", ks.log()));
        assert_eq!(*status, 200, "client {i}");
        assert!(
            sum == &old || sum == &new,
            "client {i} got a mix of old and new install.img ({sum})"
        );
    }
    let tally = |want: &str| {
        results
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|(_, s)| s == want))
            .count()
    };
    eprintln!(
        "respin: {} clients got the old image, {} the new one",
        tally(&old),
        tally(&new)
    );
    // install.img is revalidated with the mirror, so the new one shows up
    // once `cache.revalidate_after` (2 s in this bed) has passed.
    // Clients keep arriving in overlapping waves meanwhile, so some read the
    // old cached copy while the new one streams in and is committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waves = 0;
    loop {
        let wave: Vec<_> = (0..3)
            .map(|_| {
                let c = download(path.clone());
                thread::sleep(Duration::from_millis(700));
                c
            })
            .collect();
        let sums: Vec<String> = wave
            .into_iter()
            .map(|c| {
                let (status, sum) = c
                    .join()
                    .expect("client thread")
                    .unwrap_or_else(|e| panic!("late client: {e}\n{}", ks.log()));
                assert_eq!(status, 200, "late client");
                sum
            })
            .collect();
        waves += 1;
        assert!(
            sums.iter().all(|s| *s == old || *s == new),
            "a late client got a mix of old and new install.img"
        );
        if sums.last() == Some(&new) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "install.img never revalidated after the respin; results: {results:?}"
        );
    }
    eprintln!("respin: the new image arrived after {waves} waves of 3 late clients");
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn kill_during_download_leaves_no_partial_file() {
    let bed = Bed::start("kill9");
    let mut ks = Kickstand::start(&bed);
    let want = sha256_file(&bed.mirror_file("images/install.img"));
    let port = ks.port;
    let path = format!("/repo/slow/{OS}/images/install.img");
    let client = thread::spawn(move || get(port, &path));
    thread::sleep(Duration::from_millis(1200));
    ks.kill9();
    let cut = client.join().expect("client thread");
    assert!(
        cut.is_err() || cut.as_ref().is_ok_and(|r| r.status != 200),
        "download survived kill -9: {cut:?}"
    );
    drop(ks);

    let ks = Kickstand::start(&bed);
    let body = ks.fetch("slow", "images/install.img");
    assert_eq!(
        body.len(),
        4 << 20,
        "restarted daemon served a partial file"
    );
    assert_eq!(sha256(&body), want);
    assert!(bed.upstream_fetches("/slow/centos/9-stream/BaseOS/x86_64/os/images/install.img") >= 2);
    assert_eq!(sha256(&ks.fetch("slow", "images/install.img")), want);
}

/// An IPv6-only office: dnf reaches Kickstand, Kickstand the office proxy,
/// and the proxy the mirror, each over IPv6 (http, and https through a
/// CONNECT tunnel).
#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn an_ipv6_only_appliance_reaches_proxy_and_mirrors_over_ipv6() {
    let bed = Bed::start("ipv6");
    let ks = Kickstand::start_with(&bed, ipv6_appliance_config);
    let root = bed.dir.join("root");
    let baseurl = format!("http://[::1]:{}/repo/centos/{OS}/", ks.port);
    dnf_install(&root, &baseurl, &["ks-hello"], &[]);
    assert_installed(&root);
    assert_eq!(
        sha256(&ks.fetch("secure", "repodata/repomd.xml")),
        sha256_file(&bed.mirror_file("repodata/repomd.xml"))
    );
    drop(ks); // squid logs a tunnel when it closes

    let package = "/Packages/ks-hello-1.0-1.noarch.rpm";
    let line = format!(
        "::1 GET {}{OS}{package} 200",
        bed.var("KS_MIRROR_HTTP_URL6")
    );
    let https = format!("::1 CONNECT [::1]:{} 200", bed.port("KS_MIRROR_HTTPS_PORT"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bed.squid_log().contains(&https) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    let squid = bed.squid_log();
    for want in [&line, &https] {
        assert!(
            squid.contains(want.as_str()),
            "squid log lacks {want:?}:\n{squid}"
        );
    }
    // squid reached nginx over IPv6 too, once per file.
    let nginx = fs::read_to_string(bed.var("KS_NGINX_ACCESS_LOG")).expect("nginx log");
    let fetched: Vec<&str> = nginx.lines().filter(|l| l.contains(package)).collect();
    assert_eq!(fetched.len(), 1, "{nginx}");
    assert!(fetched[0].ends_with("\t::1"), "{nginx}");
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn https_mirror_through_squid_connect() {
    let bed = Bed::start("https");
    let ks = Kickstand::start(&bed);
    for rel in [
        ".treeinfo",
        "repodata/repomd.xml",
        "Packages/ks-hello-1.0-1.noarch.rpm",
    ] {
        assert_eq!(
            sha256(&ks.fetch("secure", rel)),
            sha256_file(&bed.mirror_file(rel)),
            "{rel}"
        );
    }
    let root = bed.dir.join("root");
    dnf_install(&root, &ks.repo_url("secure"), &["ks-hello"], &[]);
    assert_installed(&root);

    let https_port = bed.port("KS_MIRROR_HTTPS_PORT");
    // squid logs a tunnel when it closes, and Kickstand keeps its tunnels
    // for reuse: stop Kickstand, then look.
    drop(ks);
    let connect = format!("CONNECT 127.0.0.1:{https_port} 200");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bed.squid_log().contains(&connect) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    let squid = bed.squid_log();
    assert!(
        squid.contains(&connect),
        "no CONNECT tunnel in squid log:\n{squid}"
    );
    assert!(
        !squid.contains(&format!("GET http://127.0.0.1:{https_port}")),
        "an https mirror must be reached through CONNECT, not a plain GET:\n{squid}"
    );
    let served_by_https = bed
        .nginx_log()
        .iter()
        .filter(|(p, ..)| *p == https_port)
        .count();
    assert!(
        served_by_https > 0,
        "the https server block never saw a request"
    );
    assert_eq!(
        bed.upstream_fetches("/Packages/ks-hello-1.0-1.noarch.rpm"),
        1
    );
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn after_warm_a_rack_installs_with_mirror_and_proxy_gone() {
    let bed = Bed::start("offline");
    write_os_profile(&bed);
    let ks = Kickstand::start(&bed);
    let (ok, out) = cache_cli(&ks, &["warm", "bed9"]);
    assert!(ok, "cache warm failed:\n{out}\n{}", ks.log());
    // Plain lines off a terminal: the plan and the end of each target.
    for want in [
        format!("done centos/{OS}:"),
        format!("done centos/{APPSTREAM}:"),
        "file(s)".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} missing from:\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");

    // The mirror and the office proxy both go away.
    let squid_port = bed.port("KS_SQUID_PORT");
    let out = Command::new(bed_scripts().join("stop.sh"))
        .arg(&bed.dir)
        .output()
        .expect("stop.sh");
    assert!(out.status.success(), "stop.sh: {out:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", squid_port)).is_err(),
        "squid still answers"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", bed.port("KS_MIRROR_HTTP_PORT"))).is_err(),
        "nginx still answers"
    );

    // dnf installs every package of both repositories through the appliance.
    let root = bed.dir.join("root");
    let appstream = format!(
        "appstream=http://127.0.0.1:{}/repo/centos/{APPSTREAM}/",
        ks.port
    );
    dnf_install(
        &root,
        &ks.repo_url("centos"),
        &["ks-hello", "ks-payload", "ks-app"],
        &[("KS_DNF_EXTRA_REPOS", appstream.as_str())],
    );
    assert_installed(&root);
    assert_eq!(
        fs::read_to_string(root.join("usr/share/ks-app/VERSION")).expect("ks-app installed"),
        "ks-app 1.0\n"
    );
    assert_eq!(
        fs::metadata(root.join("usr/share/ks-payload/blob.bin"))
            .expect("payload installed")
            .len(),
        4 << 20
    );

    // What a netboot needs before dnf: the tree and its images.
    for rel in [
        ".treeinfo",
        "images/pxeboot/vmlinuz",
        "images/pxeboot/initrd.img",
        "images/install.img",
    ] {
        assert_eq!(
            sha256(&ks.fetch("centos", rel)),
            sha256_file(&bed.mirror_file(rel)),
            "{rel} served with the mirror gone"
        );
    }
    // Every record of AppStream's repomd.xml, whatever dnf chose to read.
    let repodata = Path::new(bed.var("KS_MIRROR_ROOT"))
        .join(APPSTREAM)
        .join("repodata");
    let repomd = fs::read_to_string(repodata.join("repomd.xml")).expect("repomd.xml");
    let records: Vec<&str> = repomd
        .split("<location href=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .collect();
    assert!(records.len() >= 7, "{records:?}");
    for href in records {
        let path = format!("/repo/centos/{APPSTREAM}/{href}");
        let r = get(ks.port, &path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "{path} with the mirror gone");
        let on_mirror = fs::read(
            Path::new(bed.var("KS_MIRROR_ROOT"))
                .join(APPSTREAM)
                .join(href),
        )
        .expect("mirror record");
        assert_eq!(sha256(&r.body), sha256(&on_mirror), "{href}");
    }
    // A second warm with the mirror gone: nothing to fetch, and it says so.
    let (_, out) = cache_cli(&ks, &["warm", "bed9"]);
    assert!(out.contains("0 fetched"), "{out}");
}

// ---------------------------------------------------------------------------
// Mirrors are not atomic: files rewritten in place, respins, syncs half done.

/// Rewrites `path` in place as `cp` over a served file does: the first
/// `first` bytes of `new`, a pause of `pause`, then the rest. Returns the
/// writer thread.
fn rewrite_in_place(
    path: &Path,
    new: Vec<u8>,
    first: usize,
    pause: Duration,
) -> thread::JoinHandle<()> {
    let path = path.to_path_buf();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("open mirror file for rewriting");
    f.write_all(&new[..first]).expect("write first part");
    f.flush().expect("flush");
    thread::spawn(move || {
        thread::sleep(pause);
        f.write_all(&new[first..]).expect("write the rest");
    })
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut v))
        .expect("read /dev/urandom");
    v
}

/// Dates `path` back an hour (a mirror file that is not being written).
fn age(path: &Path) {
    let f = fs::File::options()
        .write(true)
        .open(path)
        .expect("open to date back");
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .expect("set mtime");
}

/// A `.treeinfo` checksum line for `rel` set to `sum`, written by rename.
fn set_treeinfo_sum(bed: &Bed, rel: &str, sum: &str) {
    let path = bed.mirror_file(".treeinfo");
    let text = fs::read_to_string(&path).expect("read .treeinfo");
    let out: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{rel} = sha256:")) {
                format!("{rel} = sha256:{sum}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let tmp = path.with_extension("new");
    fs::write(&tmp, out).expect("write .treeinfo");
    age(&tmp);
    fs::rename(&tmp, &path).expect("rename .treeinfo");
}

/// The mirror's kernel `rel` and its `.treeinfo` checksum replaced by
/// rename, as an rsync of a respin does; the new kernel. The files are
/// dated in the past and the proxy's revalidation window let pass.
fn respin_kernel(bed: &Bed, rel: &str) -> Vec<u8> {
    let new = random_bytes(128 << 10);
    let tmp = bed.mirror_file("images/pxeboot/vmlinuz.new");
    fs::write(&tmp, &new).expect("write new kernel");
    age(&tmp);
    fs::rename(&tmp, bed.mirror_file(rel)).expect("rename kernel");
    set_treeinfo_sum(bed, rel, &sha256(&new));
    thread::sleep(Duration::from_millis(2500));
    new
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn a_file_without_checksum_rewritten_in_place_is_served_but_never_cached_torn() {
    let bed = Bed::start("inplace");
    let ks = Kickstand::start(&bed);
    let rel = "images/extra.img";
    let path = bed.mirror_file(rel);
    let old = random_bytes(2 << 20);
    fs::write(&path, &old).expect("write extra.img");
    age(&path);
    assert_eq!(sha256(&ks.fetch("centos", rel)), sha256(&old));

    // Rewritten in place, slowly: nginx sends the size of the moment.
    let new = random_bytes(4 << 20);
    let writer = rewrite_in_place(&path, new.clone(), 3 << 20, Duration::from_secs(4));
    thread::sleep(Duration::from_millis(2500)); // past revalidate_after (2 s)
    let torn = ks.fetch("centos", rel);
    assert_eq!(torn.len(), 3 << 20, "the mirror sent its torn prefix");
    writer.join().expect("writer");
    // It was served, not committed: every later client gets the whole file.
    for i in 0..3 {
        let got = ks.fetch("centos", rel);
        assert_eq!(sha256(&got), sha256(&new), "client {i} after the rewrite");
    }
    let cached = read_tree(&ks.home.join("var/cache/objects"));
    assert!(
        !cached.iter().any(|(_, c)| c.ends_with(&torn)),
        "the torn prefix was committed"
    );
    assert!(
        ks.log().contains("may still be being written"),
        "the log says why it was not cached:\n{}",
        ks.log()
    );
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn an_image_rewritten_in_place_fails_its_checksum_and_is_not_committed() {
    let bed = Bed::start("inplace-sum");
    let ks = Kickstand::start(&bed);
    let rel = "images/pxeboot/initrd.img";
    ks.fetch("centos", ".treeinfo"); // the cache learns the images' checksums
    assert_eq!(
        sha256(&ks.fetch("centos", rel)),
        sha256_file(&bed.mirror_file(rel))
    );
    // A respin: .treeinfo names the new image; the image itself is still
    // being copied in place when a client asks.
    let new = random_bytes(3 << 20);
    set_treeinfo_sum(&bed, rel, &sha256(&new));
    let writer = rewrite_in_place(
        &bed.mirror_file(rel),
        new.clone(),
        1 << 20,
        Duration::from_secs(4),
    );
    thread::sleep(Duration::from_millis(2500));
    let during = get(ks.port, &format!("/repo/centos/{OS}/{rel}"));
    assert!(
        !matches!(&during, Ok(r) if r.status == 200),
        "a torn image must not be served as complete: {:?}",
        during.map(|r| (r.status, r.body.len()))
    );
    writer.join().expect("writer");
    let after = ks.fetch("centos", rel);
    assert_eq!(sha256(&after), sha256(&new), "the whole new image");
    let again = get(ks.port, &format!("/repo/centos/{OS}/{rel}")).expect("GET");
    assert_eq!(sha256(&again.body), sha256(&new));
    assert_eq!(
        again.header("x-kickstand-cache"),
        Some("hit"),
        "verified against .treeinfo, so committed though just written"
    );
    assert!(ks.log().contains("sha256 mismatch"), "{}", ks.log());
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn an_image_respun_by_rename_is_checked_against_the_new_treeinfo() {
    let bed = Bed::start("rename-sum");
    let ks = Kickstand::start(&bed);
    let rel = "images/pxeboot/vmlinuz";
    ks.fetch("centos", ".treeinfo");
    ks.fetch("centos", rel);
    // Image and .treeinfo both replaced by rename (an rsync of a respin).
    let new = respin_kernel(&bed, rel);
    // The cached .treeinfo still names the old kernel: the proxy reads
    // .treeinfo again before it decides the new kernel is corrupt.
    assert_eq!(sha256(&ks.fetch("centos", rel)), sha256(&new));
    let hit = get(ks.port, &format!("/repo/centos/{OS}/{rel}")).expect("GET");
    assert_eq!(hit.header("x-kickstand-cache"), Some("hit"));
    assert_eq!(sha256(&hit.body), sha256(&new));
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn a_file_changed_during_its_download_is_not_committed() {
    let bed = Bed::start("changed");
    let ks = Kickstand::start(&bed);
    // install.img from the 1 MiB/s path: a 4 s download.
    let rel = "images/install.img";
    let path = bed.mirror_file(rel);
    let port = ks.port;
    let client = thread::spawn(move || get(port, &format!("/repo/slow/{OS}/{rel}")));
    thread::sleep(Duration::from_millis(1500));
    // Same size, new bytes, in place: nginx keeps sending from the file.
    let new = random_bytes(4 << 20);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open install.img");
    f.write_all(&new).expect("overwrite");
    drop(f);
    let first = client.join().expect("client").expect("response");
    assert_eq!(first.status, 200);
    let log = ks.log();
    assert!(
        log.contains("changed on the mirror during the download"),
        "the HEAD after the download saw the change:\n{log}"
    );
    let before = bed.upstream_fetches("/slow/centos/9-stream/BaseOS/x86_64/os/images/install.img");
    let second = get(port, &format!("/repo/slow/{OS}/{rel}")).expect("GET");
    assert_eq!(second.status, 200);
    assert_eq!(
        bed.upstream_fetches("/slow/centos/9-stream/BaseOS/x86_64/os/images/install.img"),
        before + 1,
        "not committed, so fetched again"
    );
    assert_eq!(sha256(&second.body), sha256(&new));
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn a_new_repomd_naming_metadata_the_mirror_lacks_is_not_handed_out() {
    let bed = Bed::start("generation");
    let ks = Kickstand::start(&bed);
    let repodata = bed.mirror_file("repodata");
    let old_repomd = ks.fetch("centos", "repodata/repomd.xml");
    assert_eq!(
        sha256(&old_repomd),
        sha256_file(&repodata.join("repomd.xml"))
    );
    // A mirror sync half done: the new repomd.xml is in place, the primary
    // it names is not there yet.
    let text = String::from_utf8(old_repomd.clone()).expect("utf-8");
    let primary_href = text
        .split("<data type=\"primary\">")
        .nth(1)
        .and_then(|r| r.split("<location href=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("primary href")
        .to_string();
    let primary = fs::read(bed.mirror_file(&primary_href)).expect("primary");
    let old_sum = primary_href
        .trim_start_matches("repodata/")
        .split('-')
        .next()
        .expect("sum")
        .to_string();
    // The "new" primary: the same packages, gzip member appended (a new
    // file, a new checksum, still valid gzip).
    let mut new_primary = primary.clone();
    new_primary.extend_from_slice(&primary);
    let new_sum = sha256(&new_primary);
    let new_href = format!("repodata/{new_sum}-primary.xml.gz");
    // The checksum and the name (which carries it) both change.
    let new_repomd = text.replace(&old_sum, &new_sum);
    assert!(new_repomd.contains(&new_href), "{new_repomd}");
    let tmp = repodata.join("repomd.xml.new");
    fs::write(&tmp, &new_repomd).expect("write repomd");
    age(&tmp);
    fs::rename(&tmp, repodata.join("repomd.xml")).expect("rename repomd");
    thread::sleep(Duration::from_millis(2500));
    for _ in 0..3 {
        let got = ks.fetch("centos", "repodata/repomd.xml");
        assert_eq!(
            got, old_repomd,
            "while the mirror lacks the new primary, clients keep the old repomd.xml"
        );
        thread::sleep(Duration::from_millis(300));
    }
    // The sync finishes: the new repomd.xml comes through, with its primary.
    let p = bed.mirror_file(&new_href);
    fs::write(&p, &new_primary).expect("write new primary");
    age(&p);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = ks.fetch("centos", "repodata/repomd.xml");
        if got == new_repomd.as_bytes() {
            break;
        }
        assert_eq!(got, old_repomd, "old or new, nothing else");
        assert!(Instant::now() < deadline, "the new repomd.xml never came");
        thread::sleep(Duration::from_millis(300));
    }
    // Its primary is in the cache already: served with the mirror gone.
    let _ = Command::new(bed_scripts().join("stop.sh"))
        .arg(&bed.dir)
        .status();
    assert_eq!(sha256(&ks.fetch("centos", &new_href)), new_sum);
}

/// POST with an empty body; the status.
fn post(port: u16, path: &str) -> u16 {
    raw_request(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .map(|r| r.status)
    .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn warm_like_a_completed_install_fetches_what_it_pulled() {
    let bed = Bed::start("like");
    write_os_profile(&bed);
    let home = bed.dir.join("ks");
    // The shipped templates (the boot script carries the build token) and
    // one host of OS bed9.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    for entry in fs::read_dir(&shipped).expect("templates") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), home.join("templates").join(entry.file_name()))
            .expect("copy template");
    }
    let os_yaml = fs::read_to_string(home.join("etc/os.yaml")).expect("os.yaml");
    fs::write(
        home.join("etc/os.yaml"),
        os_yaml.replace("kickstart: bed.ks.j2", "kickstart: centos-stream-9.ks.j2"),
    )
    .expect("os.yaml");
    let mac = "52:54:00:aa:00:01";
    fs::write(
        home.join("etc/hosts.yaml"),
        format!("hosts:\n  \"{mac}\":\n    hostname: rack01\n    os: bed9\n    disk:\n      layout: lvm\n    timezone: UTC\n"),
    )
    .expect("hosts.yaml");
    let ks = Kickstand::start(&bed);

    // One install, as the machine makes it: boot script, kernel and
    // initrd, kickstart, %pre, packages, %post.
    let script = get(ks.port, &format!("/boot/{mac}.ipxe")).expect("boot script");
    assert_eq!(script.status, 200);
    let text = String::from_utf8_lossy(&script.body).to_string();
    let at = text
        .find("?token=")
        .expect("a build token in the boot script")
        + 7;
    let token: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    ks.fetch("centos", "images/pxeboot/vmlinuz");
    ks.fetch("centos", "images/pxeboot/initrd.img");
    assert_eq!(
        get(ks.port, &format!("/ks/{mac}?token={token}"))
            .expect("ks")
            .status,
        200
    );
    assert_eq!(
        post(
            ks.port,
            &format!("/api/hosts/{mac}/installing?token={token}")
        ),
        200
    );
    ks.fetch("centos", ".treeinfo");
    ks.fetch("centos", "images/install.img");
    dnf_install(
        &bed.dir.join("root1"),
        &ks.repo_url("centos"),
        &["ks-hello"],
        &[],
    );
    assert_eq!(
        post(
            ks.port,
            &format!("/api/hosts/{mac}/installed?token={token}")
        ),
        200
    );
    let list = fs::read_to_string(home.join(format!("var/cache/learned/bed9/{mac}.list")))
        .unwrap_or_else(|e| panic!("the install's file list: {e}\n{}", ks.log()));
    assert!(
        list.contains("Packages/ks-hello-1.0-1.noarch.rpm"),
        "{list}"
    );
    assert!(list.contains("images/pxeboot/initrd.img"), "{list}");
    assert!(!list.contains("ks-payload"), "only what was pulled: {list}");

    // The cache is lost; the list is not. Warm like rack01, then take the
    // mirror and the office proxy away.
    drop(ks);
    fs::remove_dir_all(home.join("var/cache/objects")).expect("wipe the cache");
    let ks = Kickstand::start(&bed);
    let (ok, out) = cache_cli(&ks, &["warm", "bed9", "--like", "rack01"]);
    assert!(ok, "warm --like failed:\n{out}\n{}", ks.log());
    assert!(out.contains("done bed9 like"), "{out}");
    let _ = Command::new(bed_scripts().join("stop.sh"))
        .arg(&bed.dir)
        .status();
    dnf_install(
        &bed.dir.join("root2"),
        &ks.repo_url("centos"),
        &["ks-hello"],
        &[],
    );
    assert_installed(&bed.dir.join("root2"));
    for rel in [
        ".treeinfo",
        "images/pxeboot/vmlinuz",
        "images/pxeboot/initrd.img",
        "images/install.img",
    ] {
        assert_eq!(
            ks.fetch("centos", rel).len() as u64,
            fs::metadata(bed.mirror_file(rel)).expect("stat").len()
        );
    }
    // What that install never pulled was not fetched.
    let payload = get(
        ks.port,
        &format!("/repo/centos/{OS}/Packages/ks-payload-1.0-1.noarch.rpm"),
    )
    .expect("GET");
    assert_ne!(
        payload.status, 200,
        "ks-payload was not part of rack01's install"
    );
    // An unknown host is a clear error.
    let (ok, out) = cache_cli(&ks, &["warm", "bed9", "--like", "nosuchhost"]);
    assert!(!ok && out.contains("nosuchhost"), "{out}");
}

// ---------------------------------------------------------------------------
// Chained caches: a parent appliance (the site cache) fetches from the
// mirror through squid; its children name it `kickstand://…/centos` and
// reach it directly. Three `kickstand serve` on loopback, each with its own
// kernel-chosen port: the repo route is plain HTTP with no broadcast, so
// namespaces would add nothing a test observes, and ports keep the tests
// parallel like the rest of this file. That a child bypasses the office
// proxy is read from squid's log, which names every URL it was asked for.

/// A child of the appliance whose HTTP front is on `parent_port`: the bed's
/// appliance config (the office proxy included, as every appliance of a
/// site has it) with mirror `centos` served by the parent, and mirror
/// `other`, which the parent does not have.
fn child_config(bed: &Bed, parent_port: u16) -> String {
    let text = appliance_config(bed);
    let direct = format!("  centos: [{}]\n", bed.var("KS_MIRROR_HTTP_URL"));
    assert!(text.contains(&direct), "{text}");
    text.replacen(
        &direct,
        &format!(
            "  centos: [\"kickstand://127.0.0.1:{parent_port}/centos\"]\n  other: [\"kickstand://127.0.0.1:{parent_port}/other\"]\n"
        ),
        1,
    )
}

/// Starts the parent (`bed/parent`) with the bed's appliance config.
fn start_parent(bed: &Bed) -> Kickstand {
    Kickstand::start_at(bed.dir.join("parent"), &appliance_config(bed))
}

/// Starts child `name` (`bed/<name>`) of `parent`, the OS `bed9` defined.
fn start_child(bed: &Bed, parent: &Kickstand, name: &str) -> Kickstand {
    let home = bed.dir.join(name);
    write_os_profile_at(&home);
    Kickstand::start_at(home, &child_config(bed, parent.port))
}

/// The sum of a counter family on `/metrics` (every label set), or of one
/// series when `family` carries its labels.
fn metric(ks: &Kickstand, family: &str) -> f64 {
    let r = get(ks.port, "/metrics").expect("GET /metrics");
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every URI nginx sent a body for, with how many times it did.
fn mirror_downloads(bed: &Bed) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, method, uri, status) in bed.nginx_log() {
        if method == "GET" && (200..300).contains(&status) {
            *counts.entry(uri).or_insert(0) += 1;
        }
    }
    counts
}

fn assert_payload_installed(root: &Path) {
    let blob = root.join("usr/share/ks-payload/blob.bin");
    assert_eq!(
        fs::metadata(&blob).expect("payload installed").len(),
        4 << 20
    );
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn two_racks_behind_a_site_cache_cost_the_mirror_one_download_per_file() {
    let bed = Bed::start("chain");
    let mut parent = start_parent(&bed);
    let children = [
        start_child(&bed, &parent, "child-a"),
        start_child(&bed, &parent, "child-b"),
    ];

    // Two racks of four installers, all at once.
    let installs: Vec<(PathBuf, String)> = (0..8)
        .map(|i| {
            (
                bed.dir.join(format!("root{i}")),
                children[i % 2].repo_url("centos"),
            )
        })
        .collect();
    thread::scope(|s| {
        for (root, baseurl) in &installs {
            s.spawn(move || dnf_install(root, baseurl, &["ks-hello", "ks-payload"], &[]));
        }
    });
    for (root, _) in &installs {
        assert_installed(root);
        assert_payload_installed(root);
    }
    let downloads = mirror_downloads(&bed);
    for p in bed.packages() {
        if p.starts_with("ks-hello") || p.starts_with("ks-lib") || p.starts_with("ks-payload") {
            assert!(
                downloads
                    .keys()
                    .any(|uri| uri.ends_with(&format!("/Packages/{p}"))),
                "{p} never reached the mirror: {downloads:?}"
            );
        }
    }
    assert!(
        downloads.values().all(|&n| n == 1),
        "each file must leave the mirror once in total: {downloads:?}"
    );
    // Both children fetched through the parent, which went through squid;
    // the children never asked squid for anything.
    for child in &children {
        assert!(metric(child, "kickstand_cache_downloads_total") >= 3.0);
    }
    let squid = bed.squid_log();
    assert!(squid.contains("/Packages/ks-payload-"), "{squid}");
    assert!(
        !squid.contains("/repo/"),
        "a child went through squid:\n{squid}"
    );

    // The parent forwards only to its own mirrors: a name it lacks is
    // refused there and reaches neither squid nor nginx.
    let (squid_before, nginx_before) = (bed.squid_log().len(), bed.nginx_log_len());
    let r = get(
        children[0].port,
        &format!("/repo/other/{OS}/repodata/repomd.xml"),
    )
    .expect("GET through the parent");
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        parent.log().contains(r#"error=unknown mirror "other""#),
        "{}",
        parent.log()
    );
    assert_eq!(bed.squid_log().len(), squid_before);
    assert_eq!(bed.nginx_log_len(), nginx_before);

    // The parent goes away: each rack installs again from its own cache.
    parent.kill9();
    assert!(TcpStream::connect(("127.0.0.1", parent.port)).is_err());
    for (i, child) in children.iter().enumerate() {
        let root = bed.dir.join(format!("offline{i}"));
        dnf_install(
            &root,
            &child.repo_url("centos"),
            &["ks-hello", "ks-payload"],
            &[],
        );
        assert_installed(&root);
        assert_payload_installed(&root);
    }
}

/// The object file in `home`'s cache whose body is `body`.
fn cached_object(home: &Path, body: &[u8]) -> Option<PathBuf> {
    read_tree(&home.join("var/cache/objects"))
        .into_iter()
        .find(|(_, bytes)| bytes.ends_with(body))
        .map(|(path, _)| path)
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn a_child_refuses_a_file_its_parent_serves_damaged() {
    let bed = Bed::start("chain-damaged");
    let parent = start_parent(&bed);
    let first = start_child(&bed, &parent, "child-a");
    dnf_install(
        &bed.dir.join("root-a"),
        &first.repo_url("centos"),
        &["ks-hello", "ks-payload"],
        &[],
    );

    // The payload rots on the parent's disk after the parent checked it
    // (at its commit): the parent serves what its disk now holds.
    let rel = bed
        .packages()
        .into_iter()
        .find(|p| p.starts_with("ks-payload"))
        .map(|p| format!("Packages/{p}"))
        .expect("payload package");
    let good = fs::read(bed.mirror_file(&rel)).expect("payload on the mirror");
    let object = cached_object(&parent.home, &good).expect("payload cached on the parent");
    let mut rotted = fs::read(&object).expect("read object");
    let at = rotted.len() - 1000;
    rotted[at] ^= 0xff;
    fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .and_then(|mut f| f.write_all(&rotted))
        .expect("rot the object in place");
    let bad_body = &rotted[rotted.len() - good.len()..];

    // A second child learns the checksums from the repodata (through the
    // parent) and then asks for the payload: it is never handed whole.
    let second = start_child(&bed, &parent, "child-b");
    dnf_install(
        &bed.dir.join("root-b"),
        &second.repo_url("centos"),
        &["ks-hello"],
        &[],
    );
    for _ in 0..2 {
        match get(second.port, &format!("/repo/centos/{OS}/{rel}")) {
            Ok(r) => assert!(
                r.status != 200,
                "the damaged payload was served whole ({} bytes)",
                r.body.len()
            ),
            Err(e) => assert!(e.to_string().contains("body is"), "{e}"),
        }
    }
    assert_eq!(
        metric(
            &second,
            r#"kickstand_cache_upstream_failures_total{kind="checksum"}"#
        ),
        2.0
    );
    assert!(
        cached_object(&second.home, bad_body).is_none(),
        "the child committed the damaged payload"
    );
    assert!(cached_object(&second.home, &good).is_none());
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn cache_warm_on_a_child_warms_its_parent_too() {
    let bed = Bed::start("chain-warm");
    let parent = start_parent(&bed);
    let first = start_child(&bed, &parent, "child-a");
    let (ok, out) = cache_cli(&first, &["warm", "bed9"]);
    assert!(ok, "cache warm failed:\n{out}\n{}", first.log());
    assert!(!out.contains("FAILED"), "{out}");
    let after_first = mirror_downloads(&bed);
    assert!(
        after_first
            .keys()
            .any(|u| u.contains("/Packages/ks-payload-"))
            && after_first.keys().any(|u| u.contains("/AppStream/")),
        "{after_first:?}"
    );
    assert!(after_first.values().all(|&n| n == 1), "{after_first:?}");
    assert!(!bed.squid_log().contains("/repo/"));

    // The parent now holds the OS: a second rack warms from it alone.
    let second = start_child(&bed, &parent, "child-b");
    let (ok, out) = cache_cli(&second, &["warm", "bed9"]);
    assert!(ok, "cache warm failed:\n{out}\n{}", second.log());
    assert_eq!(mirror_downloads(&bed), after_first, "{out}");
    assert!(
        metric(&second, "kickstand_cache_downloads_total") >= after_first.len() as f64,
        "{out}"
    );
}

#[test]
#[ignore = "peer: needs nginx, squid, dnf; run by .ci/run"]
fn a_child_revalidates_through_its_parent_and_follows_a_respin() {
    let bed = Bed::start("chain-respin");
    let parent = start_parent(&bed);
    let child = start_child(&bed, &parent, "child-a");
    let rel = "images/pxeboot/vmlinuz";
    let path = format!("/repo/centos/{OS}/{rel}");
    child.fetch("centos", ".treeinfo");
    let old = child.fetch("centos", rel);

    // Past `revalidate_after` (2 s) the child asks again with the
    // validators the parent passed on from the mirror; the parent, having
    // asked the mirror in turn, answers 304 and no body moves.
    thread::sleep(Duration::from_millis(2500));
    let again = get(child.port, &path).expect("GET");
    assert_eq!(again.header("x-kickstand-cache"), Some("revalidated"));
    assert_eq!(again.body, old);
    let answered = format!("path=\"{path}\" query_len=0 status=304");
    assert!(parent.log().contains(&answered), "{}", parent.log());

    // A respin (image and .treeinfo replaced by rename) reaches the child
    // at its next revalidation, checked against the new .treeinfo.
    let new = respin_kernel(&bed, rel);
    assert_eq!(sha256(&child.fetch("centos", rel)), sha256(&new));
    let hit = get(child.port, &path).expect("GET");
    assert_eq!(hit.header("x-kickstand-cache"), Some("hit"));
    assert_eq!(sha256(&hit.body), sha256(&new));
    assert_eq!(mirror_downloads(&bed)[&format!("/centos/{OS}/{rel}")], 2);
}
