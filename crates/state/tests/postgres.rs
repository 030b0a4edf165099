//! The state store's suite on PostgreSQL, against a real server from
//! Debian's `postgresql` package that each test starts in a temporary
//! directory (`initdb` + `pg_ctl`, as the unprivileged `postgres` user when
//! run as root, since initdb refuses root), listening only on a Unix socket
//! in that directory, and removes after. Without PostgreSQL installed the
//! tests fail: run `tests/setup-peers`.

mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use kickstand_state::{Backend, EventKind, StateError, Transition};
use suite::Bed;

suite!(pg_bed(), #[ignore = "peer: postgresql"]);

/// A PostgreSQL server of our own, stopped and removed on drop.
struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Who runs the server: `Some("postgres")` when the tests run as root.
    user: Option<&'static str>,
}

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run tests/setup-peers"
        ),
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// `id -u`/`id -g` of a user.
fn ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no user {user}: run tests/setup-peers"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

impl Server {
    fn start() -> Server {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("kickstand-pg-")
            .tempdir()
            .expect("tempdir");
        let user = is_root().then_some("postgres");
        if let Some(user) = user {
            let (uid, gid) = ids(user);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let server = Server { dir, bin, user };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-U",
                "kickstand",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.ctl("start");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start|stop`: the server listens on no TCP port, only on a
    /// socket in its own directory.
    fn ctl(&self, action: &str) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let socket_dir = self.dir.path().to_str().expect("utf-8").to_owned();
        let options = format!("-k {socket_dir} -c listen_addresses=''");
        let mut args = vec![
            action,
            "-D",
            data.to_str().expect("utf-8"),
            "-w",
            "-l",
            log.to_str().expect("utf-8"),
        ];
        if action == "start" {
            args.extend(["-o", &options]);
        } else {
            args.extend(["-m", "fast"]);
        }
        self.run("pg_ctl", &args);
    }

    fn url(&self) -> String {
        format!(
            "host={} port=5432 user=kickstand dbname=postgres",
            self.dir.path().display()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // Best effort: a panicking test still removes its server.
        let _ = cmd
            .args([
                "stop",
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
            ])
            .output();
    }
}

fn pg_bed() -> Bed {
    let started = Instant::now();
    let server = Server::start();
    eprintln!("postgresql started in {:?}", started.elapsed());
    let import = tempfile::tempdir().expect("tempdir");
    Bed {
        backend: Backend::Postgres { url: server.url() },
        dir: import.path().to_owned(),
        keep: vec![Box::new(import), Box::new(server)],
    }
}

fn server_of(bed: &Bed) -> &Server {
    bed.keep
        .iter()
        .find_map(|k| k.downcast_ref::<Server>())
        .expect("the bed's server")
}

/// A restarted server costs the operation in flight an error, never a
/// panic, and the store reconnects by itself.
#[tokio::test]
#[ignore = "peer: postgresql"]
async fn a_restarted_server_is_reconnected() {
    let bed = pg_bed();
    let store = bed.open().await;
    let (m, now) = (suite::mac(1), SystemTime::now());
    store
        .transition(m, Transition::BootFetched, None, now)
        .await
        .expect("boot");
    server_of(&bed).ctl("stop");
    let err = store
        .record(m, EventKind::DhcpOffer, serde_json::json!({}), now)
        .await
        .expect_err("no server, no write");
    assert!(matches!(err, StateError::Database { .. }), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    server_of(&bed).ctl("start");
    store
        .record(m, EventKind::DhcpOffer, serde_json::json!({}), now)
        .await
        .expect("written after the restart");
    let host = store.host(m).await.expect("host").expect("record");
    assert_eq!(host.phase, kickstand_state::Phase::Booting);
    assert_eq!(store.timeline(m, 10).await.expect("timeline").len(), 2);
}

/// A writer killed with SIGKILL mid-stream: every write PostgreSQL
/// acknowledged to it is there.
#[tokio::test]
#[ignore = "peer: postgresql"]
async fn kill_9_loses_no_acknowledged_write() {
    if let Ok(url) = std::env::var(suite::WRITER_ENV) {
        let config = kickstand_state::StateConfig::new(Backend::Postgres { url }, "writer");
        suite::writer(config).await;
        return;
    }
    let bed = pg_bed();
    let Backend::Postgres { url } = &bed.backend else {
        unreachable!("a PostgreSQL bed")
    };
    let (host, step) = suite::kill9(
        "kill_9_loses_no_acknowledged_write",
        bed.config("rack-a"),
        url,
        300,
    )
    .await;
    assert!(
        host >= 50,
        "killed mid-stream after host {host} step {step}"
    );
}
