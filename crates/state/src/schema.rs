//! The schema, as numbered migrations run at open. Migration N is applied
//! once, in its own transaction together with the row in `schema_version`
//! that says so: a crash mid-migration leaves the previous version whole.
//! On PostgreSQL an advisory lock keeps two appliances that start at once
//! from both applying it.
//!
//! The SQL is portable: integers are `BIGINT` (times are milliseconds since
//! the epoch), text is `TEXT` (JSON too), and `{serial}` stands for the one
//! column type the two dialects spell differently.

use crate::StateError;
use crate::clock;
use crate::db::{Db, Lock, params};

/// Every migration, oldest first. Append; never edit one that has shipped.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the host life cycle and its timeline.
    "CREATE TABLE hosts (
        mac TEXT PRIMARY KEY,
        phase TEXT NOT NULL,
        since BIGINT NOT NULL,
        token TEXT,
        token_issued BIGINT,
        token_expires BIGINT,
        token_ip TEXT,
        last_ip TEXT,
        install_started BIGINT,
        install_ended BIGINT,
        last_error TEXT,
        pulled_bytes BIGINT NOT NULL DEFAULT 0,
        pulled_files BIGINT NOT NULL DEFAULT 0,
        appliance TEXT NOT NULL
    );
    CREATE UNIQUE INDEX hosts_token ON hosts (token);
    CREATE INDEX hosts_last_ip ON hosts (last_ip);
    CREATE TABLE events (
        id {serial},
        time BIGINT NOT NULL,
        mac TEXT NOT NULL,
        appliance TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_mac ON events (mac, id);
    CREATE INDEX events_time ON events (time)",
    // 2: discovered machines and install history (for progress).
    "CREATE TABLE discovered (
        mac TEXT PRIMARY KEY,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        ip TEXT,
        facts TEXT NOT NULL,
        appliance TEXT NOT NULL
    );
    CREATE TABLE installs (
        id {serial},
        os TEXT NOT NULL,
        mac TEXT NOT NULL,
        ended BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        files BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL
    );
    CREATE INDEX installs_os ON installs (os, id)",
    // 3: events by class, each kept within its own bound (noise never
    // pushes out a life-cycle event).
    "ALTER TABLE events ADD COLUMN class BIGINT NOT NULL DEFAULT 1;
    UPDATE events SET class = 0 WHERE kind IN
        ('phase-change', 'token-issued', 'token-bound', 'boot-script', 'callback', 'installer-log');
    UPDATE events SET class = 2 WHERE kind IN
        ('token-rejected', 'dhcp-ignored', 'transition-refused');
    CREATE INDEX events_mac_class ON events (mac, class, id);
    CREATE INDEX events_class ON events (class, id)",
    // 4: the operator's audit log.
    "CREATE TABLE audit (
        id {serial},
        time BIGINT NOT NULL,
        appliance TEXT NOT NULL,
        peer TEXT NOT NULL,
        token_id TEXT,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        error TEXT
    )",
    // 5: which appliance answers each segment ([`crate::election`]).
    "CREATE TABLE segments (
        segment TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        appliance TEXT NOT NULL,
        term BIGINT NOT NULL,
        since BIGINT NOT NULL,
        expires BIGINT NOT NULL
    )",
];

/// Brings the database to `target` (normally `MIGRATIONS.len()`).
pub(crate) async fn migrate(db: &Db, target: usize) -> Result<(), StateError> {
    let known = MIGRATIONS.len();
    loop {
        let mut tx = db.begin().await?;
        tx.lock(Lock::Migrations).await?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version BIGINT PRIMARY KEY,
                applied BIGINT NOT NULL
            )",
            params![],
        )
        .await?;
        let current = tx
            .query_opt("SELECT max(version) FROM schema_version", params![])
            .await?
            .map(|r| r.opt_int(0))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        let current = usize::try_from(current).unwrap_or(usize::MAX);
        if current > known {
            return Err(StateError::NewerSchema {
                found: current,
                known,
            });
        }
        if current >= target {
            return tx.commit().await;
        }
        let sql = MIGRATIONS[current].replace("{serial}", tx.dialect().serial());
        tx.batch(&sql).await?;
        let version = i64::try_from(current + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES ($1, $2)",
            params![version, clock::to_ms(std::time::SystemTime::now())],
        )
        .await?;
        tx.commit().await?;
        tracing::info!("state database upgraded to schema version {version}");
    }
}

/// The version the database is at.
pub(crate) async fn version(db: &Db) -> Result<usize, StateError> {
    let mut tx = db.begin().await?;
    let v = tx
        .query_opt("SELECT max(version) FROM schema_version", params![])
        .await?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0);
    tx.commit().await?;
    Ok(usize::try_from(v).unwrap_or(0))
}
