//! The state store's suite on PostgreSQL, against a real server from
//! Debian's `postgresql` package that each test starts in a temporary
//! directory (`initdb` + `pg_ctl`, as the unprivileged `postgres` user when
//! run as root, since initdb refuses root), listening only on a Unix socket
//! in that directory, and removes after. Without PostgreSQL installed the
//! tests fail: run `tests/setup-peers`.

mod suite;

use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime};

use kickstand_state::{Backend, EventKind, StateError, Transition};
use suite::Bed;

suite!(pg_bed(), #[ignore = "peer: postgresql"]);

/// Two appliances on one PostgreSQL: each one's changes are in force at
/// the other within moments (LISTEN/NOTIFY), and both timelines are one.
#[tokio::test]
#[ignore = "peer: postgresql"]
async fn two_appliances_share_hosts_and_timelines() {
    suite::two_appliances_share_hosts_and_timelines(&pg_bed()).await;
}

/// Two appliances writing the same hosts at once lose nothing, and do not
/// record one host's first sighting twice.
#[tokio::test]
#[ignore = "peer: postgresql"]
async fn concurrent_writers_lose_nothing() {
    suite::concurrent_writers_lose_nothing(&pg_bed()).await;
}

/// A PostgreSQL server of our own (`tests/beds/postgres/pg.sh`), stopped
/// and removed on drop.
struct Server {
    dir: tempfile::TempDir,
    url: String,
}

const PG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/beds/postgres/pg.sh"
);

fn pg(action: &str, dir: &Path) -> String {
    let out = Command::new(PG)
        .arg(action)
        .arg(dir)
        .output()
        .expect("run tests/beds/postgres/pg.sh (needs bash)");
    assert!(
        out.status.success(),
        "pg.sh {action} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("kickstand-pg-")
            .tempdir()
            .expect("tempdir");
        let url = pg("start", dir.path());
        Server { dir, url }
    }

    /// `pg_ctl start|stop`.
    fn ctl(&self, action: &str) {
        pg(action, self.dir.path());
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort: a panicking test still removes its server.
        let _ = Command::new(PG).arg("kill").arg(self.dir.path()).output();
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

/// A restarted server costs the waiter of a write an error, never a panic;
/// the change itself stays in memory, is written once the server is back
/// (the store reconnects by itself), and nothing else waited meanwhile.
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
    assert!(matches!(err, StateError::Write(_)), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    // reads and changes go on from memory meanwhile
    let outcome = store
        .transition(m, Transition::KickstartFetched, None, now)
        .value();
    assert!(matches!(outcome, kickstand_state::Outcome::Changed { .. }));
    assert_eq!(store.phase(m), kickstand_state::Phase::Installing);
    server_of(&bed).ctl("start");
    store
        .record(m, EventKind::DhcpOffer, serde_json::json!({}), now)
        .await
        .expect("written after the restart");
    let host = store.host(m).expect("record");
    assert_eq!(host.phase, kickstand_state::Phase::Installing);
    let kinds: Vec<String> = store
        .timeline(m, 10)
        .await
        .expect("timeline")
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(
        kinds,
        ["phase-change", "dhcp-offer", "phase-change", "dhcp-offer"],
        "what failed to commit was kept and written after the restart"
    );
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
