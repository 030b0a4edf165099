//! The state store's suite on the embedded SQLite backend (no root, no
//! server), plus what only SQLite has: the file on disk.

mod suite;

use kickstand_state::{Backend, StateConfig};
use suite::Bed;

suite!(Bed::sqlite());

/// A writer killed with SIGKILL mid-stream loses nothing it acknowledged.
#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(suite::WRITER_ENV) {
        let config = StateConfig::new(Backend::Sqlite { dir: dir.into() }, "writer");
        suite::writer(config).await;
        return;
    }
    let bed = Bed::sqlite();
    let spec = bed.dir.to_str().expect("utf-8 temp dir").to_owned();
    let (host, step) = suite::kill9(
        "kill_9_loses_no_acknowledged_write",
        bed.config("rack-a"),
        &spec,
        300,
    )
    .await;
    assert!(
        host >= 50,
        "killed mid-stream after host {host} step {step}"
    );
}

/// The database holds build tokens: only its owner may read it.
#[tokio::test]
async fn the_database_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let bed = Bed::sqlite();
    let store = bed.open().await;
    store
        .ensure_token(suite::mac(1), std::time::SystemTime::now())
        .await
        .expect("ensure");
    let mode = |p: &str| {
        std::fs::metadata(bed.dir.join(p))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("state.db"), 0o600);
    assert_eq!(mode("state.db-wal"), 0o600);
}
