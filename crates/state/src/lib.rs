//! Host state: the life cycle of every host (new → booting → installing →
//! installed, failed, re-armed), its build token, the timeline of what each
//! module saw of it and why its journey stopped, the machines discovered
//! without a profile, and the sizes of past installs for progress bars.
//! It knows nothing of protocols, rendering or profiles: callers tell it
//! what happened and ask it what is true.
//!
//! # Memory first, the database behind
//! Every reply path (a DHCP packet, a TFTP read, a boot script, a repo
//! request) reads host state, so no read waits for a disk: the store holds
//! every host record, the newest events of each timeline and the
//! discovered machines in memory, loaded at open. A change is applied in
//! memory at once and queued for one writer that commits many changes per
//! transaction (group commit). The caller gets a [`Written`]: the change's
//! result now, and, awaited, the commit that carries it — a callback that
//! moves a host's phase is acknowledged only once it is durable; a DHCP
//! answer never waits.
//!
//! Nothing a stranger sends grows it: host records exist only for MACs
//! the daemon names (profiled ones), repeats of one event kind for one MAC
//! are folded into a summary per minute, events about strangers are
//! written within a shared rate, the discovered table is bounded, and each
//! class of a timeline ([`Class`]) is pruned within its own bound, so
//! noise never pushes out a life-cycle event.
//!
//! # Layout
//! - [`phase`]: the life cycle as a pure function, [`next`].
//! - [`host`]: a host's record and what a transition does to it.
//! - `op`: every change to a host as data, applied in memory and replayed
//!   on the database row.
//! - [`token`]: build tokens and why one is refused.
//! - [`event`]: timeline event kinds, their classes and detail fields.
//! - [`diagnosis`]: a timeline read as one operator sentence.
//! - [`discovery`]: discovered machines, a bounded table.
//! - `book`, `limit`: the hosts in memory; repeat folding and rate limits.
//! - `store`: [`StateStore`], the API; `writer`: the one writer.
//! - `db`, `rows`, `schema`, `import`: the two backends behind one SQL
//!   surface, the rows, versioned migrations, the old JSON file's import.
//!
//! # Backends
//! SQLite (embedded, the default: `state.db` in the state directory, WAL,
//! `synchronous = FULL`) or PostgreSQL, which several appliances share so a
//! host installed through rack A's appliance boots its disk on rack B's.
//! With PostgreSQL each appliance announces the hosts it changed after
//! every commit (`NOTIFY`) and reads again what the others announced, so a
//! change made elsewhere is in force here within moments. Both run the same
//! migrations and the same queries; the test suite runs against both.
//!
//! # Why rusqlite and tokio-postgres, not sqlx
//! The store makes about twenty queries. sqlx's compile-time checked
//! macros need a live database or prepared offline data (`cargo sqlx
//! prepare`) at build time, for each backend; without them sqlx is an
//! untyped query API like these two, plus a pool, a runtime layer and its
//! `Any` driver's lowest-common-denominator types, in a larger dependency
//! tree (its SQLite driver links the same C library, so nothing is saved
//! there). rusqlite with its bundled SQLite needs no system library and
//! runs on tokio's blocking pool; tokio-postgres is async already. Behind a
//! common transaction type (`db::Tx`, integers and text only) each backend
//! is about a hundred and fifty lines, and every query is written once.
//!
//! # Reaching PostgreSQL
//! Over TLS by default on a TCP host (rustls, as libpq's `sslmode` says),
//! with the password from a file if one is given; `db::connect` says how and
//! why. A password, from the URL or the file, is never in a log line, an
//! error or `Debug` output.

pub mod audit;
mod book;
pub mod claim;
mod clock;
mod db;
pub mod diagnosis;
pub mod discovery;
pub mod election;
pub mod event;
pub mod host;
mod import;
mod limit;
mod op;
pub mod phase;
mod rows;
mod schema;
mod store;
pub mod token;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use audit::{AUDIT_KEPT, AuditEntry, OperatorAction};
pub use claim::{Binding, Claimed, Network, Withheld};
pub use clock::{Span, Stamp};
pub use db::health::DatabaseState;
pub use diagnosis::{Diagnosis, diagnose};
pub use discovery::{Discovered, DiscoveryLimits, DiscoveryOutcome, Evicted, Facts, Nic};
pub use election::{Election, Round};
pub use event::{Class, Event, EventKind};
pub use host::{Host, Outcome, Pulled};
pub use kickstand_profiles::Mac;
pub use kickstand_profiles::model::{Postgres, SslMode};
pub use phase::{Phase, Refused, Transition, next};
pub use store::{InstallSize, StateStore, StoreStats};
pub use token::{BuildToken, TokenRejected};
pub use writer::{Durability, Written};

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `dir/state.db`, created with `dir` if missing.
    Sqlite { dir: PathBuf },
    /// A shared PostgreSQL database: a `postgres://` URL or `host=… user=…`
    /// pairs, with the CA and password files beside it. Its `Debug` leaves
    /// the password out.
    Postgres(Postgres),
}

impl Backend {
    /// PostgreSQL at `url` (a URL or libpq `key=value` pairs, `sslmode` and
    /// `sslrootcert` included), with no password file.
    pub fn postgres(url: &str) -> Result<Backend, String> {
        url.parse().map(Backend::Postgres)
    }
}

/// Reads what opening a store on `pg` would read — the settings, the CA
/// file, the password file — and connects to nothing: what `kickstand
/// check` runs, so it refuses what `serve` would.
pub fn check_postgres(pg: &Postgres) -> Result<(), StateError> {
    db::connect::Connector::new(pg).map(drop)
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: Backend,
    /// This appliance's name, written on every event and host change: with
    /// a shared database, which rack's appliance saw what.
    pub appliance: String,
    /// How long an install may run (from its loader or kickstart fetch)
    /// before the host is failed, and how long a build token lives.
    pub install_timeout: Duration,
    pub retention: Retention,
    /// The bounds of the discovered-machines table.
    pub discovery: DiscoveryLimits,
    /// Where a `hosts.json` from the old JSON store may wait to be
    /// imported (the SQLite directory by default; `None` for none).
    pub import_dir: Option<PathBuf>,
}

/// How much timeline the store keeps, so it never grows without limit.
/// Noise has bounds of its own: no amount of it pushes out a life-cycle
/// or activity event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Life-cycle events kept per host (the newest), and activity events.
    pub per_host: u64,
    /// Noise events kept per host.
    pub noise_per_host: u64,
    /// Events older than this are removed.
    pub max_age: Duration,
    /// Life-cycle and activity events kept in all.
    pub total: u64,
    /// Noise events kept in all: a flood of requests from forged MACs is
    /// bounded too, not only each MAC's share of it.
    pub noise_total: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            per_host: 1000,
            noise_per_host: 100,
            max_age: Duration::from_secs(30 * 24 * 3600),
            total: 1_000_000,
            noise_total: 100_000,
        }
    }
}

impl Retention {
    /// The per-host bound of `class`.
    pub fn per_class(&self, class: Class) -> u64 {
        match class {
            Class::Noise => self.noise_per_host,
            Class::LifeCycle | Class::Activity => self.per_host,
        }
    }
}

impl StateConfig {
    pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

    /// The defaults for `backend`, as appliance `appliance`.
    pub fn new(backend: Backend, appliance: impl Into<String>) -> StateConfig {
        let import_dir = match &backend {
            Backend::Sqlite { dir } => Some(dir.clone()),
            Backend::Postgres { .. } => None,
        };
        StateConfig {
            backend,
            appliance: appliance.into(),
            install_timeout: StateConfig::DEFAULT_INSTALL_TIMEOUT,
            retention: Retention::default(),
            discovery: DiscoveryLimits::default(),
            import_dir,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state database ({backend}): {source}")]
    Database {
        backend: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database holds something this version cannot read: {0}")]
    Corrupt(String),
    #[error("{path} cannot be imported: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error(
        "the state database is at schema version {found}, newer than this version knows ({known}): upgrade Kickstand"
    )]
    NewerSchema { found: usize, known: usize },
    /// Connecting failed: where, with which `sslmode`, and what to do
    /// when that is known; never who with which password.
    #[error(
        "cannot connect to the state database (PostgreSQL at {target}, sslmode={sslmode}): {reason}{}",
        .hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
    )]
    Connect {
        target: String,
        sslmode: &'static str,
        /// The whole chain of `source`, which on its own says only
        /// "db error" or "error performing TLS handshake".
        reason: String,
        source: tokio_postgres::Error,
        hint: Option<String>,
    },
    #[error("the PostgreSQL connection settings: {0}")]
    Settings(String),
    #[error("the PostgreSQL password file {0}")]
    Password(#[source] kickstand_profiles::SecretError),
    #[error("the PostgreSQL CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("state database worker failed: {0}")]
    Task(String),
    #[error("the change is kept in memory but could not be written yet: {0}")]
    Write(String),
    #[error("the state database refused the change (kept in memory until restart): {0}")]
    Refused(String),
    #[error("no random numbers for a build token: {0}")]
    Random(String),
}

impl StateError {
    /// Whether trying again later may work: the database went away or is
    /// busy, rather than refusing this change.
    pub fn is_transient(&self) -> bool {
        match self {
            // No code: it never reached the server (down, unreachable),
            // or the handshake failed, which an operator may fix meanwhile.
            StateError::Connect { source, .. } => source.code().is_none_or(|c| {
                c.code().starts_with("08")
                    || *c == tokio_postgres::error::SqlState::ADMIN_SHUTDOWN
                    || *c == tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW
            }),
            StateError::Database { source, .. } => {
                if let Some(e) = source.downcast_ref::<tokio_postgres::Error>() {
                    return e.is_closed()
                        || e.code().is_none()
                        || e.code().is_some_and(|c| {
                            c.code().starts_with("08")
                                || *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                                || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                                || *c == tokio_postgres::error::SqlState::ADMIN_SHUTDOWN
                                || *c == tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW
                                // A standby, or a primary demoted: the
                                // connection is replaced, by one to the
                                // primary once there is one.
                                || *c == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
                        });
                }
                if let Some(rusqlite::Error::SqliteFailure(e, _)) =
                    source.downcast_ref::<rusqlite::Error>()
                {
                    use rusqlite::ErrorCode::*;
                    return matches!(
                        e.code,
                        DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen
                    );
                }
                false
            }
            StateError::Io { .. } => true,
            _ => false,
        }
    }

    /// Whether it says the database cannot be reached or written now
    /// (down, unreachable, read-only): transient, and not a collision
    /// with another transaction (a deadlock, a serialization failure),
    /// which says nothing of the database's health.
    pub(crate) fn is_unreachable(&self) -> bool {
        let collided = match self {
            StateError::Database { source, .. } => source
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(|e| e.code())
                .is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                        || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                }),
            _ => false,
        };
        self.is_transient() && !collided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a password reaches the store — in the URL, as a URL
    /// parameter, as a `password=` pair, in a file — stays out of `Debug`
    /// output and out of the error a failed connect gives.
    #[tokio::test]
    async fn a_postgres_password_stays_out_of_debug_output_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-from-file\n").expect("write");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        // Port 1 on loopback: refused at once, no server needed.
        for url in [
            "postgres://kick:s3cret@127.0.0.1:1/state",
            "postgresql://kick@127.0.0.1:1/state?password=s3cret&sslmode=disable",
            "host=127.0.0.1 port=1 user=kick password=s3cret dbname=state sslmode=disable",
            "host=127.0.0.1 port=1 user=kick password='s3cret with spaces'",
        ] {
            let mut pg: Postgres = url.parse().expect("parses");
            pg.password_file = Some(file.clone());
            let config = StateConfig::new(Backend::Postgres(pg.clone()), "rack-a");
            let shown = format!("{config:?} {}", pg.redacted());
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("127.0.0.1"), "{shown}");
            let connector = db::connect::Connector::new(&pg).expect("settings");
            assert!(!format!("{connector:?}").contains("s3cret"));
            let err = StateStore::open(config).await.expect_err("nothing listens");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("127.0.0.1:1"), "names the host: {text}");
            assert!(text.contains("sslmode="), "names the sslmode: {text}");
            assert!(err.is_transient(), "{err}");
        }
    }

    #[test]
    fn a_password_file_others_may_read_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pg.password");
        std::fs::write(&file, "s3cret\n").expect("write");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        let mut pg: Postgres = "postgres://kick@db/state".parse().expect("parses");
        pg.password_file = Some(file);
        let err = check_postgres(&pg).expect_err("readable by others");
        let text = err.to_string();
        assert!(
            text.contains("pg.password is readable by group or others"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
