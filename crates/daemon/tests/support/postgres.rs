//! A PostgreSQL server of a test's own (Debian's, through
//! `tests/beds/postgres/pg.sh`), removed on drop.

// Each test binary uses what it needs of it.
#![allow(dead_code, unreachable_pub)]

use std::process::Command;

const PG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/beds/postgres/pg.sh"
);

/// A PostgreSQL server of the test's own, removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub url: String,
}

impl Postgres {
    fn run(action: &str) -> tempfile::TempDir {
        Postgres::run_with(&mut Command::new(PG), action, &[])
    }

    /// `pg.sh action DIR args…` run by `command` (pg.sh itself, or a
    /// wrapper that runs it).
    fn run_with(command: &mut Command, action: &str, args: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("kickstand-pg-")
            .tempdir()
            .expect("tempdir");
        let out = command
            .arg(action)
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run tests/beds/postgres/pg.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// On a Unix socket only.
    pub fn start() -> Postgres {
        let dir = Postgres::run("start");
        // As a URL, which is what `state.url` takes.
        let url = format!(
            "postgresql://kickstand@localhost/postgres?host={}",
            dir.path().display()
        );
        Postgres { dir, url }
    }

    /// Taking TCP only over TLS, with a password (`pg.sh start-tls`); the
    /// URL checks the certificate and the host name, and has no password.
    pub fn start_tls() -> Postgres {
        let dir = Postgres::run("start-tls");
        let port = std::fs::read_to_string(dir.path().join("port")).expect("pg.sh's port");
        let url = format!(
            "postgresql://kickstand@localhost:{}/postgres?sslmode=verify-full",
            port.trim()
        );
        Postgres { dir, url }
    }

    /// In network namespace `ns`, taking TCP at `address` (port 5432)
    /// from its subnet, without TLS or a password (`pg.sh start-on`): a
    /// database the test reaches over links it can cut.
    pub fn start_in(ns: &str, address: &str) -> Postgres {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, PG]);
        let dir = Postgres::run_with(&mut command, "start-on", &[address]);
        let url = format!("postgresql://kickstand@{address}:5432/postgres?sslmode=disable");
        Postgres { dir, url }
    }

    /// A streaming-replication standby of `primary`, a `start_tls` one
    /// (`pg.sh start-standby`): read-only until promoted, with the same
    /// CA, certificate and password, on a TCP port of its own.
    pub fn start_standby(primary: &Postgres) -> Postgres {
        let primary_dir = primary.dir.path().display().to_string();
        let dir = Postgres::run_with(&mut Command::new(PG), "start-standby", &[&primary_dir]);
        let mut standby = Postgres {
            dir,
            url: String::new(),
        };
        standby.url = format!(
            "postgresql://kickstand@localhost:{}/postgres?sslmode=verify-full",
            standby.port()
        );
        standby
    }

    pub fn file(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    /// The TCP port of a `start_tls` or `start_standby` server.
    pub fn port(&self) -> String {
        std::fs::read_to_string(self.file("port"))
            .expect("pg.sh's port")
            .trim()
            .to_owned()
    }

    /// `pg.sh ACTION DIR`: `kill`, `promote`, `stop`.
    pub fn ctl(&self, action: &str) {
        self.pg(&[action]);
    }

    /// Runs `sql` over the server's socket; the rows, one a line, columns
    /// separated by `|`.
    pub fn psql(&self, sql: &str) -> String {
        self.pg(&["psql", sql])
    }

    fn pg(&self, args: &[&str]) -> String {
        let (action, rest) = args.split_first().expect("an action");
        let out = Command::new(PG)
            .arg(action)
            .arg(self.dir.path())
            .args(rest)
            .output()
            .expect("run tests/beds/postgres/pg.sh");
        assert!(
            out.status.success(),
            "pg.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(PG).arg("kill").arg(self.dir.path()).output();
    }
}
