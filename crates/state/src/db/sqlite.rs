//! The embedded backend: one SQLite file in write-ahead-log mode with
//! `synchronous = FULL`, so a commit is on disk when it returns and a
//! `kill -9` (or a power cut) loses nothing that was acknowledged.
//!
//! rusqlite is synchronous. A connection opened for async callers runs
//! each statement on tokio's blocking pool, taking the connection with it
//! (an owned mutex guard moves into the blocking task and back), so they
//! never block a runtime thread. The writer's connection is opened
//! *inline*: the writer runs on a thread of its own, so its statements run
//! right there — a batch of a thousand inserts is a thousand calls into
//! SQLite, not a thousand round trips through the blocking pool (which
//! cost more in context switches than the inserts themselves). The one
//! writing connection is also the one writer SQLite allows: the mutex
//! orders transactions in this process, `BEGIN IMMEDIATE` and a busy
//! timeout order them against any other process opening the file.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Row, Value};
use crate::StateError;

#[derive(Debug)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    /// Statements run on the calling thread (a thread of the caller's own,
    /// never a runtime worker), not on the blocking pool.
    inline: bool,
}

pub(crate) struct Tx {
    /// `None` only while a statement runs on the blocking pool, or after a
    /// statement's task was lost (then every later call fails).
    conn: Option<OwnedMutexGuard<Connection>>,
    inline: bool,
}

fn error(source: rusqlite::Error) -> StateError {
    StateError::Database {
        backend: "SQLite",
        source: Box::new(source),
    }
}

/// rusqlite speaks `?1`, PostgreSQL `$1`: the store's SQL is written with
/// `$`, which appears nowhere else in it.
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Int(v) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*v)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

fn value(v: ValueRef<'_>) -> Result<Value, StateError> {
    match v {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(i) => Ok(Value::Int(i)),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|t| Value::Text(t.to_owned()))
            .map_err(|e| StateError::Corrupt(format!("text column is not UTF-8: {e}"))),
        ValueRef::Real(_) | ValueRef::Blob(_) => Err(StateError::Corrupt(
            "a real or blob column, which this store never writes".into(),
        )),
    }
}

impl Db {
    pub(crate) async fn open(path: &Path, inline: bool) -> Result<Db, StateError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StateError> {
            let conn = Connection::open(&path).map_err(error)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(error)?;
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(error)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StateError::Corrupt(format!(
                    "{} refused write-ahead logging (journal mode {mode})",
                    path.display()
                )));
            }
            // WAL's default (NORMAL) survives a killed process but may lose
            // the last commits to a power cut; an appliance is a box someone
            // unplugs.
            conn.execute_batch("PRAGMA synchronous = FULL")
                .map_err(error)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StateError::Task(e.to_string()))??;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            inline,
        })
    }

    /// `write`: `BEGIN IMMEDIATE`, the write lock taken at once (so two
    /// writers queue rather than fail mid-transaction); otherwise a
    /// deferred `BEGIN`, which reads the last commit without any lock.
    pub(crate) async fn begin(&self, write: bool) -> Result<Tx, StateError> {
        let mut tx = Tx {
            conn: Some(self.conn.clone().lock_owned().await),
            inline: self.inline,
        };
        tx.run(move |conn| {
            // A caller that gave up mid-transaction (its future dropped)
            // left it open: it was never acknowledged, so roll it back.
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK").map_err(error)?;
            }
            conn.execute_batch(if write { "BEGIN IMMEDIATE" } else { "BEGIN" })
                .map_err(error)
        })
        .await?;
        Ok(tx)
    }
}

impl Drop for Tx {
    /// A transaction given up (an error, a dropped future) is rolled back
    /// right away, so SQLite's write lock is not held for a second store
    /// on the same file. The guard goes with the rollback.
    fn drop(&mut self) {
        if self.inline {
            if let Some(conn) = self.conn.take()
                && !conn.is_autocommit()
            {
                // Failing here leaves it to the next `begin`.
                let _ = conn.execute_batch("ROLLBACK");
            }
            return;
        }
        if let Some(conn) = self.conn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || {
                if !conn.is_autocommit() {
                    // Failing here leaves it to the next `begin`.
                    let _ = conn.execute_batch("ROLLBACK");
                }
            });
        }
    }
}

impl Tx {
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        if self.inline {
            let conn = self
                .conn
                .as_deref_mut()
                .ok_or_else(|| StateError::Task("the SQLite connection was lost".into()))?;
            return f(conn);
        }
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| StateError::Task("the SQLite connection was lost".into()))?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut conn);
            (conn, result)
        })
        .await
        .map_err(|e| StateError::Task(e.to_string()))?;
        self.conn = Some(conn);
        result
    }

    pub(crate) async fn query(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StateError> {
        let sql = numbered(sql);
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(error)?;
            let columns = stmt.column_count();
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params.iter()))
                .map_err(error)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(error)? {
                let mut values = Vec::with_capacity(columns);
                for i in 0..columns {
                    values.push(value(row.get_ref(i).map_err(error)?)?);
                }
                out.push(Row(values));
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn execute(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<u64, StateError> {
        let sql = numbered(sql);
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(error)?;
            let changed = stmt
                .execute(rusqlite::params_from_iter(params.iter()))
                .map_err(error)?;
            Ok(u64::try_from(changed).unwrap_or(u64::MAX))
        })
        .await
    }

    pub(crate) async fn batch(&mut self, sql: &str) -> Result<(), StateError> {
        let sql = sql.to_owned();
        self.run(move |conn| conn.execute_batch(&sql).map_err(error))
            .await
    }

    pub(crate) async fn commit(mut self) -> Result<(), StateError> {
        self.run(|conn| conn.execute_batch("COMMIT").map_err(error))
            .await?;
        // Committed: release the connection without a rollback.
        drop(self.conn.take());
        Ok(())
    }
}
