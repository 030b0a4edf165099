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

    pub fn file(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(PG).arg("kill").arg(self.dir.path()).output();
    }
}
