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
        .expect("mint")
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

/// Changes are applied in memory at once and written many per transaction:
/// a thousand hosts seen by DHCP cost a handful of commits, and every one
/// of them is on disk after the flush.
#[tokio::test]
async fn a_burst_of_changes_is_committed_in_a_few_transactions() {
    use kickstand_state::{Outcome, Phase, Transition};
    let bed = Bed::sqlite();
    let store = bed.open().await;
    store.flush().await.expect("the first prune");
    let before = store.stats();
    let now = std::time::SystemTime::now();
    for n in 0..1000u16 {
        let outcome = store
            .transition(suite::mac(n), Transition::SeenByDhcp, None, now)
            .value();
        assert_eq!(
            outcome,
            Outcome::Changed {
                from: Phase::New,
                to: Phase::Discovered
            }
        );
        assert_eq!(
            store.phase(suite::mac(n)),
            Phase::Discovered,
            "read back from memory at once"
        );
    }
    store.flush().await.expect("flush");
    let after = store.stats();
    let transactions = after.transactions - before.transactions;
    // The writer runs beside the loop on a thread of its own: how the
    // changes fall into batches depends on the scheduler, but while one
    // commit syncs the next changes gather, so a handful of commits carry
    // them all. Ten a transaction on average is a bound no timing breaks.
    assert!(
        (1..=100).contains(&transactions),
        "{transactions} transactions for 1000 changes"
    );
    assert_eq!(
        after.changes - before.changes,
        1001,
        "1000 changes and the flush"
    );
    store.close().await.expect("close");
    let store = bed.open().await;
    assert_eq!(store.hosts().len(), 1000);
    assert!(store.hosts().iter().all(|h| h.phase == Phase::Discovered));
}
