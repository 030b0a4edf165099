//! The shared backend: one PostgreSQL database that several appliances
//! use at once (one per rack segment), as MAAS's region controllers and
//! Foreman's smart proxies share theirs. Host rows are locked with
//! `SELECT … FOR UPDATE` while a transaction rewrites them, so two
//! appliances never lose each other's transitions.
//!
//! One connection per store, behind an async mutex. When the server goes
//! away (restarted, failed over), the next transaction reconnects; the
//! operation that hit the dead connection gets a [`StateError`], never a
//! panic, and the daemon keeps serving. A connection whose server turned
//! read-only under it (a primary demoted) is given up the same way, at
//! the first write it refuses, so the next one goes to the host that is
//! the primary now. Every connection, the listener's too, is made by the
//! store's one [`Connector`] (TLS, password, errors, several hosts).

use std::collections::HashMap;

use bytes::BytesMut;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

use super::connect::Connector;
use super::{Row, Value};
use crate::StateError;

#[derive(Debug)]
pub(crate) struct Db {
    connector: Arc<Connector>,
    conn: Arc<Mutex<Conn>>,
}

#[derive(Debug)]
struct Conn {
    client: Client,
    /// Prepared once per connection: most queries run many times.
    statements: HashMap<String, Statement>,
    /// A transaction was begun and neither committed nor rolled back (its
    /// caller gave up): roll it back before the next one.
    dirty: bool,
    /// The server refused a write as read-only: connect again, to the
    /// primary.
    read_only: bool,
}

pub(crate) struct Tx<'a> {
    /// `None` once committed.
    conn: Option<OwnedMutexGuard<Conn>>,
    db: std::marker::PhantomData<&'a Db>,
}

impl Drop for Tx<'_> {
    /// A transaction given up (an error, a dropped future) is rolled back
    /// right away: it may hold row locks that another appliance waits for.
    /// The guard goes with the rollback, so nothing else uses the
    /// connection before it is done.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                    conn.dirty = false;
                }
            });
        }
    }
}

/// Whether `e` says the server takes no writes (SQLSTATE 25006: a
/// standby, or a primary made read-only).
fn refuses_writes(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
}

fn error(source: tokio_postgres::Error) -> StateError {
    StateError::Database {
        backend: "PostgreSQL",
        source: Box::new(source),
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            // PostgreSQL's text cannot hold NUL, which a LAN host can put
            // in anything it reports: stored as U+2400 (␀), never a
            // failed write.
            Value::Text(t) if <&str as ToSql>::accepts(ty) && t.contains('\0') => {
                t.replace('\0', "\u{2400}").as_str().to_sql(ty, out)
            }
            Value::Text(t) if <&str as ToSql>::accepts(ty) => t.as_str().to_sql(ty, out),
            other => Err(format!("{other:?} cannot be a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, which knows which variant it holds.
        true
    }

    to_sql_checked!();
}

fn row(row: &tokio_postgres::Row) -> Result<Row, StateError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let v = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map_err(error)?.into()
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map_err(error)?
                .map(i64::from)
                .into()
        } else if <&str as tokio_postgres::types::FromSql>::accepts(ty) {
            row.try_get::<_, Option<String>>(i).map_err(error)?.into()
        } else {
            return Err(StateError::Corrupt(format!(
                "column {} has type {ty}, which this store never uses",
                column.name()
            )));
        };
        values.push(v);
    }
    Ok(Row(values))
}

async fn connect(connector: &Connector) -> Result<Conn, StateError> {
    let (client, connection) = connector.connect().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // The database's health says so once, for every connection.
            tracing::debug!("state database connection lost: {e}; reconnecting on next use");
        }
    });
    connector.reached(&client).await;
    Ok(Conn {
        client,
        statements: HashMap::new(),
        dirty: false,
        read_only: false,
    })
}

impl Db {
    pub(crate) async fn open(connector: Arc<Connector>) -> Result<Db, StateError> {
        let conn = connect(&connector).await?;
        Ok(Db {
            connector,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// What the store's listener connects with: the same as this.
    pub(crate) fn connector(&self) -> Arc<Connector> {
        self.connector.clone()
    }

    pub(crate) async fn begin(&self, write: bool) -> Result<Tx<'_>, StateError> {
        let begin = if write { "BEGIN" } else { "BEGIN READ ONLY" };
        let mut conn = self.conn.clone().lock_owned().await;
        if conn.client.is_closed() || conn.read_only {
            *conn = connect(&self.connector).await?;
        }
        if conn.dirty {
            if conn.client.batch_execute("ROLLBACK").await.is_err() {
                *conn = connect(&self.connector).await?;
            }
            conn.dirty = false;
        }
        if let Err(e) = conn.client.batch_execute(begin).await {
            // The server closed an idle connection (a restart) and the
            // client had not noticed yet: one fresh try.
            if !e.is_closed() && !conn.client.is_closed() {
                return Err(error(e));
            }
            *conn = connect(&self.connector).await?;
            conn.client.batch_execute(begin).await.map_err(error)?;
        }
        conn.dirty = true;
        Ok(Tx {
            conn: Some(conn),
            db: std::marker::PhantomData,
        })
    }
}

impl Tx<'_> {
    fn conn(&mut self) -> Result<&mut Conn, StateError> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| StateError::Task("transaction already ended".into()))
    }

    /// `e` as a [`StateError`]; a refused write marks the connection to
    /// be replaced.
    fn failed(&mut self, e: tokio_postgres::Error) -> StateError {
        if refuses_writes(&e)
            && let Some(conn) = self.conn.as_deref_mut()
        {
            conn.read_only = true;
        }
        error(e)
    }

    async fn statement(&mut self, sql: &str) -> Result<Statement, StateError> {
        let conn = self.conn()?;
        if let Some(s) = conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = conn.client.prepare(sql).await;
        let s = prepared.map_err(|e| self.failed(e))?;
        let conn = self.conn()?;
        conn.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(crate) async fn query(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StateError> {
        let stmt = self.statement(sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let rows = self.conn()?.client.query(&stmt, &refs).await;
        rows.map_err(|e| self.failed(e))?.iter().map(row).collect()
    }

    pub(crate) async fn execute(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<u64, StateError> {
        let stmt = self.statement(sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let changed = self.conn()?.client.execute(&stmt, &refs).await;
        changed.map_err(|e| self.failed(e))
    }

    pub(crate) async fn batch(&mut self, sql: &str) -> Result<(), StateError> {
        let done = self.conn()?.client.batch_execute(sql).await;
        done.map_err(|e| self.failed(e))
    }

    pub(crate) async fn commit(mut self) -> Result<(), StateError> {
        let committed = self.conn()?.client.batch_execute("COMMIT").await;
        committed.map_err(|e| self.failed(e))?;
        let conn = self.conn()?;
        conn.dirty = false;
        // Committed: nothing for `drop` to roll back.
        self.conn = None;
        Ok(())
    }
}

/// What the listener hears.
#[derive(Debug)]
pub(crate) enum Heard {
    /// A notification's payload.
    Payload(String),
    /// The channel was lost and is back: notifications may have been
    /// missed, so everything is to be read again.
    Resync,
}

/// Listens on `channel` on a connection of its own until `stop`, handing
/// every notification to `heard`; reconnects with a back-off when the
/// server goes away, and says [`Heard::Resync`] once listening again: what
/// changed while it was not was announced to no one here. `listening` is
/// told when it first listens (the caller loads what it needs after that,
/// so nothing falls between its load and the first `LISTEN`).
pub(crate) async fn listen(
    connector: Arc<Connector>,
    channel: &'static str,
    heard: impl Fn(Heard) + Send + 'static,
    listening: tokio::sync::oneshot::Sender<()>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut backoff = std::time::Duration::from_millis(200);
    let mut listening = Some(listening);
    let mut lost = false;
    loop {
        let session = async {
            let (client, mut connection) = connector.connect().await?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let pump = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            if tx.send(n.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::debug!("state change listener: {e}");
                            return;
                        }
                        None => return,
                    }
                }
            });
            client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .map_err(error)?;
            connector.reached(&client).await;
            Ok::<_, StateError>((client, rx, pump))
        };
        match session.await {
            Ok((client, mut rx, pump)) => {
                backoff = std::time::Duration::from_millis(200);
                if lost {
                    heard(Heard::Resync);
                }
                if let Some(tell) = listening.take() {
                    let _ = tell.send(());
                }
                loop {
                    tokio::select! {
                        () = stop.cancelled() => {
                            pump.abort();
                            return;
                        }
                        payload = rx.recv() => match payload {
                            Some(p) => heard(Heard::Payload(p)),
                            None => break,
                        },
                    }
                }
                drop(client);
                lost = true;
                // A lasting loss is the database's, which its health logs
                // once; a moment's costs a reload, nothing to act on.
                tracing::debug!("lost the state change channel; reconnecting");
            }
            Err(e) => {
                lost = true;
                if !e.is_unreachable() {
                    tracing::warn!(error = %e, "cannot listen for other appliances' changes; retrying");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(super::health::RETRY_AT_MOST);
    }
}
