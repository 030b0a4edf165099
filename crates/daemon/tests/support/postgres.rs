//! A PostgreSQL server of a test's own (Debian's, through
//! `tests/beds/postgres/pg.sh`), removed on drop.

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
        let dir = tempfile::Builder::new()
            .prefix("kickstand-pg-")
            .tempdir()
            .expect("tempdir");
        let out = Command::new(PG)
            .arg(action)
            .arg(dir.path())
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

    pub fn file(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(PG).arg("kill").arg(self.dir.path()).output();
    }
}
