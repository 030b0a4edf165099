//! [`StateStore`]: the async API the daemon, the HTTP front and the
//! protocol modules use. Each call is one transaction: when it returns
//! `Ok`, what it wrote is committed (on disk for SQLite, on the server for
//! PostgreSQL), except the per-install byte and file counters of
//! [`StateStore::add_pulled`], which are batched in memory for a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kickstand_profiles::Mac;
use serde_json::json;

use crate::clock::{self, to_ms};
use crate::db::{Db, Lock, Row, Tx, Value, params};
use crate::diagnosis::{self, Diagnosis};
use crate::discovery::{Discovered, DiscoveryOutcome, Facts, MAX_FACTS_BYTES};
use crate::event::{Event, EventKind};
use crate::host::{Finished, Host, Outcome, Pulled};
use crate::phase::{Phase, Transition};
use crate::token::{BuildToken, TokenRejected};
use crate::{Backend, StateConfig, StateError, import, schema};

/// How long `add_pulled` counts may wait in memory before they are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Every this many writes, the whole timeline is pruned by age and total.
const PRUNE_EVERY: u64 = 1000;
/// Past installs kept per OS (only the newest is used; a few more say
/// what changed when an operator asks).
const INSTALLS_PER_OS: i64 = 10;

/// The host state store. Cheap to clone; every clone shares one database
/// connection.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("backend", &self.inner.config.backend)
            .field("appliance", &self.inner.config.appliance)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Db,
    config: StateConfig,
    pending: Mutex<Pending>,
    writes: AtomicU64,
}

struct Pending {
    pulled: HashMap<Mac, Pulled>,
    flushed: Instant,
}

/// What the last completed install of an OS pulled, and how long it took:
/// the expected total for the next one's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallSize {
    pub bytes: u64,
    pub files: u64,
    pub duration: Duration,
}

/// What a locked host's update writes besides the host row.
#[derive(Default)]
struct Change {
    save: bool,
    events: Vec<(EventKind, serde_json::Value)>,
    finished: Option<Finished>,
}

const HOST_COLUMNS: &str = "mac, phase, since, token, token_issued, token_expires, token_ip, \
     last_ip, install_started, install_ended, last_error, pulled_bytes, pulled_files, appliance";

const SAVE_HOST: &str = "INSERT INTO hosts (mac, phase, since, token, token_issued, \
     token_expires, token_ip, last_ip, install_started, install_ended, last_error, pulled_bytes, \
     pulled_files, appliance) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (mac) DO UPDATE SET phase = excluded.phase, since = excluded.since, \
     token = excluded.token, token_issued = excluded.token_issued, \
     token_expires = excluded.token_expires, token_ip = excluded.token_ip, \
     last_ip = excluded.last_ip, install_started = excluded.install_started, \
     install_ended = excluded.install_ended, last_error = excluded.last_error, \
     pulled_bytes = excluded.pulled_bytes, pulled_files = excluded.pulled_files, \
     appliance = excluded.appliance";

const EVENT_COLUMNS: &str = "id, time, mac, appliance, kind, detail";

fn time(ms: Option<i64>) -> Option<SystemTime> {
    ms.map(clock::from_ms)
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn host_from(r: &Row) -> Result<Host, StateError> {
    let mac = r
        .parsed::<Mac>(0)?
        .ok_or_else(|| StateError::Corrupt("host without a MAC".into()))?;
    let phase = r
        .text(1)?
        .parse::<Phase>()
        .map_err(|e| StateError::Corrupt(format!("host {mac}: {e}")))?;
    Ok(Host {
        mac,
        phase,
        since: clock::from_ms(r.int(2)?),
        token: r
            .opt_text(3)?
            .map(|t| BuildToken::from_stored(t.to_owned())),
        token_issued: time(r.opt_int(4)?),
        token_expires: time(r.opt_int(5)?),
        token_ip: r.parsed(6)?,
        last_ip: r.parsed(7)?,
        install_started: time(r.opt_int(8)?),
        install_ended: time(r.opt_int(9)?),
        last_error: r.opt_text(10)?.map(str::to_owned),
        pulled: Pulled {
            bytes: count(r.int(11)?),
            files: count(r.int(12)?),
        },
        appliance: r.text(13)?.to_owned(),
    })
}

fn host_params(h: &Host) -> Vec<Value> {
    let ms = |t: Option<SystemTime>| t.map(to_ms);
    params![
        h.mac.to_string(),
        h.phase.as_str(),
        to_ms(h.since),
        h.token.as_ref().map(|t| t.as_str().to_owned()),
        ms(h.token_issued),
        ms(h.token_expires),
        h.token_ip.map(|ip| ip.to_string()),
        h.last_ip.map(|ip| ip.to_string()),
        ms(h.install_started),
        ms(h.install_ended),
        h.last_error.clone(),
        h.pulled.bytes,
        h.pulled.files,
        h.appliance.clone(),
    ]
}

fn event_from(r: &Row) -> Result<Event, StateError> {
    let detail = r.text(5)?;
    Ok(Event {
        id: r.int(0)?,
        time: clock::from_ms(r.int(1)?),
        mac: r
            .parsed(2)?
            .ok_or_else(|| StateError::Corrupt("event without a MAC".into()))?,
        appliance: r.text(3)?.to_owned(),
        kind: EventKind::parse(r.text(4)?),
        detail: serde_json::from_str(detail)
            .map_err(|e| StateError::Corrupt(format!("event detail {detail:?}: {e}")))?,
    })
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

impl StateStore {
    /// Opens the store, creating and migrating the database as needed,
    /// importing an old `hosts.json` once, and pruning old events.
    pub async fn open(config: StateConfig) -> Result<StateStore, StateError> {
        let store = StateStore::open_at_version(config, schema::MIGRATIONS.len()).await?;
        if let Some(dir) = store.inner.config.import_dir.clone() {
            store.import_json(&dir, SystemTime::now()).await?;
        }
        store.prune(SystemTime::now()).await?;
        Ok(store)
    }

    /// Opens the store migrated only up to `version`, without importing:
    /// for tests that need a database as an older release left it.
    #[doc(hidden)]
    pub async fn open_at_version(
        config: StateConfig,
        version: usize,
    ) -> Result<StateStore, StateError> {
        let db = match &config.backend {
            Backend::Sqlite { dir } => {
                let path = dir.join("state.db");
                prepare_sqlite_file(dir, &path).await?;
                Db::open_sqlite(&path).await?
            }
            Backend::Postgres { url } => Db::open_postgres(url).await?,
        };
        schema::migrate(&db, version.min(schema::MIGRATIONS.len())).await?;
        Ok(StateStore {
            inner: Arc::new(Inner {
                db,
                config,
                pending: Mutex::new(Pending {
                    pulled: HashMap::new(),
                    flushed: Instant::now(),
                }),
                writes: AtomicU64::new(0),
            }),
        })
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<usize, StateError> {
        schema::version(&self.inner.db).await
    }

    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    // ---- hosts and the life cycle -------------------------------------

    /// The host's record; `None` for a MAC never named to the store (its
    /// phase is [`Phase::New`]).
    pub async fn host(&self, mac: Mac) -> Result<Option<Host>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let host = self.load(&mut tx, mac, false).await?;
        tx.commit().await?;
        Ok(host.map(|h| self.with_pending(h)))
    }

    /// Every host the store knows, by MAC.
    pub async fn hosts(&self) -> Result<Vec<Host>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let rows = tx
            .query(
                &format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY mac"),
                params![],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| host_from(r).map(|h| self.with_pending(h)))
            .collect()
    }

    /// The host that last came from `ip`, to put a request that carries no
    /// MAC (TFTP, the repo proxy) on a timeline.
    pub async fn host_by_ip(&self, ip: IpAddr) -> Result<Option<Mac>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let row = tx
            .query_opt(
                "SELECT mac FROM hosts WHERE last_ip = $1 ORDER BY since DESC LIMIT 1",
                params![ip_text(ip)],
            )
            .await?;
        tx.commit().await?;
        row.map(|r| r.parsed(0)).transpose().map(Option::flatten)
    }

    /// Applies `t` to the host (creating its record if it has none) and
    /// records the change, or the refusal, on its timeline. `ip`, when the
    /// caller knows it, becomes the host's last address.
    ///
    /// Call it only for MACs that have a profile: the hosts table is not
    /// bounded the way the discovered table is.
    pub async fn transition(
        &self,
        mac: Mac,
        t: Transition,
        ip: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<Outcome, StateError> {
        let timeout = self.inner.config.install_timeout;
        self.update_host(mac, now, |host| {
            if let Some(ip) = ip {
                host.last_ip = Some(ip);
            }
            let effects = host.apply(&t, now, timeout);
            Ok((
                effects.outcome,
                Change {
                    save: true,
                    events: effects.events,
                    finished: effects.finished,
                },
            ))
        })
        .await
    }

    /// The host's live build token, minted if it has none or its old one
    /// expired. `None` when the host is not in build mode (installed or
    /// failed), or when its install just ran past `install_timeout`, which
    /// fails it.
    pub async fn ensure_token(
        &self,
        mac: Mac,
        now: SystemTime,
    ) -> Result<Option<BuildToken>, StateError> {
        let timeout = self.inner.config.install_timeout;
        self.update_host(mac, now, |host| {
            if !host.phase.is_build_mode() {
                return Ok((None, Change::default()));
            }
            if host.overdue(now, timeout) {
                let effects = host.apply(&Transition::TimedOut, now, timeout);
                return Ok((
                    None,
                    Change {
                        save: true,
                        events: effects.events,
                        finished: None,
                    },
                ));
            }
            if host.token_live(now) {
                return Ok((host.token.clone(), Change::default()));
            }
            let token = BuildToken::mint()?;
            let expires = now + timeout;
            host.token = Some(token.clone());
            host.token_issued = Some(now);
            host.token_expires = Some(expires);
            host.token_ip = None;
            Ok((
                Some(token),
                Change {
                    save: true,
                    events: vec![(EventKind::TokenIssued, json!({"expires": to_ms(expires)}))],
                    finished: None,
                },
            ))
        })
        .await
    }

    /// Checks the build token a request to `mac`'s kickstart or callbacks
    /// presented from `peer`. The first accepted use binds the token to
    /// `peer`. Every refusal is a `token-rejected` event on `mac`'s
    /// timeline.
    pub async fn check_token(
        &self,
        mac: Mac,
        presented: Option<&str>,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<Result<(), TokenRejected>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let mut events = Vec::new();
        let verdict = match presented.filter(|t| !t.is_empty()) {
            None => Err(TokenRejected::Missing),
            Some(presented) => {
                let host = self.load(&mut tx, mac, true).await?;
                match host {
                    Some(mut h) if h.token.as_ref().is_some_and(|t| t.matches(presented)) => {
                        match h.token_ip {
                            _ if !h.token_live(now) => Err(TokenRejected::Expired),
                            Some(bound) if bound != peer => {
                                Err(TokenRejected::WrongAddress { bound })
                            }
                            bound => {
                                if bound.is_none() {
                                    h.token_ip = Some(peer);
                                    events.push((
                                        EventKind::TokenBound,
                                        json!({"ip": ip_text(peer)}),
                                    ));
                                }
                                if bound.is_none() || h.last_ip != Some(peer) {
                                    h.last_ip = Some(peer);
                                    h.appliance.clone_from(&self.inner.config.appliance);
                                    tx.execute(SAVE_HOST, host_params(&h)).await?;
                                }
                                Ok(())
                            }
                        }
                    }
                    _ => {
                        // An index lookup, not a constant-time compare: its
                        // timing could at most say whether some host has
                        // this exact 192-bit value, which no one can guess.
                        let owner = tx
                            .query_opt("SELECT mac FROM hosts WHERE token = $1", params![presented])
                            .await?
                            .map(|r| r.parsed::<Mac>(0))
                            .transpose()?
                            .flatten();
                        match owner {
                            Some(owner) if owner != mac => Err(TokenRejected::OtherHost { owner }),
                            _ => Err(TokenRejected::Wrong),
                        }
                    }
                }
            }
        };
        if let Err(reason) = verdict {
            let mut detail = json!({"ip": ip_text(peer), "reason": reason.name()});
            match reason {
                TokenRejected::WrongAddress { bound } => detail["bound"] = ip_text(bound).into(),
                TokenRejected::OtherHost { owner } => detail["owner"] = owner.to_string().into(),
                _ => {}
            }
            events.push((EventKind::TokenRejected, detail));
        }
        let wrote = !events.is_empty();
        for (kind, detail) in &events {
            self.insert_event(&mut tx, mac, kind, detail, now).await?;
        }
        if wrote {
            self.prune_host(&mut tx, mac, now).await?;
        }
        tx.commit().await?;
        if wrote {
            self.after_write(now).await;
        }
        Ok(verdict)
    }

    /// Fails every host whose install ran past `install_timeout`; returns
    /// them. The daemon calls it now and then; [`StateStore::ensure_token`]
    /// also fails an overdue host that boots again.
    pub async fn fail_overdue(&self, now: SystemTime) -> Result<Vec<Mac>, StateError> {
        let timeout = self.inner.config.install_timeout;
        let deadline = to_ms(now).saturating_sub(clock::duration_ms(timeout));
        let mut tx = self.inner.db.begin().await?;
        let rows = tx
            .query(
                "SELECT mac FROM hosts WHERE phase IN ('booting', 'installing') \
                 AND COALESCE(install_started, since) <= $1",
                params![deadline],
            )
            .await?;
        tx.commit().await?;
        let mut failed = Vec::new();
        for r in rows {
            let Some(mac) = r.parsed::<Mac>(0)? else {
                continue;
            };
            // Checked again under the row lock: the host may have moved on.
            let timed_out = self
                .update_host(mac, now, |host| {
                    if !host.overdue(now, timeout) {
                        return Ok((false, Change::default()));
                    }
                    let effects = host.apply(&Transition::TimedOut, now, timeout);
                    Ok((
                        true,
                        Change {
                            save: true,
                            events: effects.events,
                            finished: None,
                        },
                    ))
                })
                .await?;
            if timed_out {
                failed.push(mac);
            }
        }
        Ok(failed)
    }

    /// Adds to the bytes and files the host pulled during its current
    /// install. Kept in memory and written about once a second (and with
    /// the host's next transition), so the repo proxy can call it per file:
    /// a crash loses at most that second of progress counting, never a
    /// phase or an event.
    pub async fn add_pulled(&self, mac: Mac, bytes: u64, files: u64) -> Result<(), StateError> {
        let due = {
            let mut p = self.pending();
            p.pulled
                .entry(mac)
                .or_default()
                .add(Pulled { bytes, files });
            p.flushed.elapsed() >= FLUSH_EVERY
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the `add_pulled` counts waiting in memory (at shutdown).
    pub async fn flush(&self) -> Result<(), StateError> {
        let batch = {
            let mut p = self.pending();
            p.flushed = Instant::now();
            std::mem::take(&mut p.pulled)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let result = async {
            let mut tx = self.inner.db.begin().await?;
            for (mac, n) in &batch {
                tx.execute(
                    "UPDATE hosts SET pulled_bytes = pulled_bytes + $2, \
                     pulled_files = pulled_files + $3 WHERE mac = $1",
                    params![mac.to_string(), n.bytes, n.files],
                )
                .await?;
            }
            tx.commit().await
        }
        .await;
        if result.is_err() {
            let mut p = self.pending();
            for (mac, n) in batch {
                p.pulled.entry(mac).or_default().add(n);
            }
        }
        result
    }

    /// What the last completed install of `os` pulled; `None` before the
    /// first.
    pub async fn expected_install(&self, os: &str) -> Result<Option<InstallSize>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let row = tx
            .query_opt(
                "SELECT bytes, files, duration_ms FROM installs WHERE os = $1 \
                 ORDER BY id DESC LIMIT 1",
                params![os],
            )
            .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(InstallSize {
                bytes: count(r.int(0)?),
                files: count(r.int(1)?),
                duration: Duration::from_millis(count(r.int(2)?)),
            })
        })
        .transpose()
    }

    // ---- the timeline ---------------------------------------------------

    /// Records an event on `mac`'s timeline; returns its id. `detail` is
    /// a JSON object with the fields [`EventKind`] documents for `kind`.
    pub async fn record(
        &self,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
        now: SystemTime,
    ) -> Result<i64, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let id = self.insert_event(&mut tx, mac, &kind, &detail, now).await?;
        self.prune_host(&mut tx, mac, now).await?;
        tx.commit().await?;
        self.after_write(now).await;
        Ok(id)
    }

    /// The newest `limit` events of `mac`, oldest first.
    pub async fn timeline(&self, mac: Mac, limit: u64) -> Result<Vec<Event>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE mac = $1 ORDER BY id DESC LIMIT $2"
                ),
                params![mac.to_string(), limit],
            )
            .await?;
        tx.commit().await?;
        let mut events = rows.iter().map(event_from).collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    /// The newest event of every MAC that has one (for `kickstand hosts`).
    pub async fn last_events(&self) -> Result<Vec<Event>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id IN \
                     (SELECT max(id) FROM events GROUP BY mac) ORDER BY mac"
                ),
                params![],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(event_from).collect()
    }

    /// Where `mac`'s journey stopped, read from its record and timeline.
    pub async fn diagnose(&self, mac: Mac, now: SystemTime) -> Result<Diagnosis, StateError> {
        let host = self.host(mac).await?;
        let events = self
            .timeline(mac, self.inner.config.retention.per_host)
            .await?;
        Ok(diagnosis::diagnose(
            host.as_ref(),
            &events,
            now,
            self.inner.config.install_timeout,
        ))
    }

    /// Removes events past the retention's age and total; returns how many.
    /// Runs at open and every thousand writes; each write also prunes its
    /// own host's events.
    pub async fn prune(&self, now: SystemTime) -> Result<u64, StateError> {
        let retention = self.inner.config.retention;
        let oldest = to_ms(now).saturating_sub(clock::duration_ms(retention.max_age));
        let mut tx = self.inner.db.begin().await?;
        let mut removed = tx
            .execute("DELETE FROM events WHERE time < $1", params![oldest])
            .await?;
        removed += tx
            .execute(
                "DELETE FROM events WHERE id <= \
                 (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $1)",
                params![retention.total],
            )
            .await?;
        tx.commit().await?;
        Ok(removed)
    }

    // ---- discovered machines ---------------------------------------------

    /// Takes a discovery report from an unknown machine. At the table's
    /// bound a new MAC is refused while known ones are still updated.
    pub async fn report_discovered(
        &self,
        mac: Mac,
        ip: IpAddr,
        facts: &Facts,
        now: SystemTime,
    ) -> Result<DiscoveryOutcome, StateError> {
        let facts = serde_json::to_string(facts)
            .map_err(|e| StateError::Corrupt(format!("facts do not serialise: {e}")))?;
        if facts.len() > MAX_FACTS_BYTES {
            return Ok(DiscoveryOutcome::TooLarge {
                bytes: facts.len(),
                limit: MAX_FACTS_BYTES,
            });
        }
        let appliance = self.inner.config.appliance.clone();
        let bound = self.inner.config.max_discovered;
        let mut tx = self.inner.db.begin().await?;
        // Two appliances counting at once could both see room for one.
        tx.lock(Lock::Discovered).await?;
        let updated = tx
            .execute(
                "UPDATE discovered SET last_seen = $2, ip = $3, facts = $4, appliance = $5 \
                 WHERE mac = $1",
                params![
                    mac.to_string(),
                    to_ms(now),
                    ip_text(ip),
                    facts.clone(),
                    appliance.clone()
                ],
            )
            .await?;
        let outcome = if updated > 0 {
            DiscoveryOutcome::Updated
        } else {
            let held = tx
                .query_opt("SELECT count(*) FROM discovered", params![])
                .await?
                .map(|r| r.int(0))
                .transpose()?
                .unwrap_or(0);
            if usize::try_from(held).unwrap_or(usize::MAX) >= bound {
                DiscoveryOutcome::Full { bound }
            } else {
                tx.execute(
                    "INSERT INTO discovered (mac, first_seen, last_seen, ip, facts, appliance) \
                     VALUES ($1, $2, $2, $3, $4, $5)",
                    params![mac.to_string(), to_ms(now), ip_text(ip), facts, appliance],
                )
                .await?;
                DiscoveryOutcome::Added
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Every discovered machine, most recently seen first.
    pub async fn discovered(&self) -> Result<Vec<Discovered>, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let rows = tx
            .query(
                "SELECT mac, first_seen, last_seen, ip, facts, appliance FROM discovered \
                 ORDER BY last_seen DESC, mac",
                params![],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let facts = r.text(4)?;
                Ok(Discovered {
                    mac: r
                        .parsed(0)?
                        .ok_or_else(|| StateError::Corrupt("discovered without a MAC".into()))?,
                    first_seen: clock::from_ms(r.int(1)?),
                    last_seen: clock::from_ms(r.int(2)?),
                    ip: r.parsed(3)?,
                    facts: serde_json::from_str(facts)
                        .map_err(|e| StateError::Corrupt(format!("facts {facts:?}: {e}")))?,
                    appliance: r.text(5)?.to_owned(),
                })
            })
            .collect()
    }

    /// Removes a discovered machine (adopted, or not wanted); whether it was listed.
    pub async fn forget_discovered(&self, mac: Mac) -> Result<bool, StateError> {
        let mut tx = self.inner.db.begin().await?;
        let n = tx
            .execute(
                "DELETE FROM discovered WHERE mac = $1",
                params![mac.to_string()],
            )
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    // ---- internals ------------------------------------------------------

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Counters only: a panic mid-update leaves a usable map.
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_pending(&self, mut host: Host) -> Host {
        if let Some(n) = self.pending().pulled.get(&host.mac) {
            host.pulled.add(*n);
        }
        host
    }

    async fn load(
        &self,
        tx: &mut Tx<'_>,
        mac: Mac,
        for_update: bool,
    ) -> Result<Option<Host>, StateError> {
        let lock = if for_update {
            tx.dialect().for_update()
        } else {
            ""
        };
        let row = tx
            .query_opt(
                &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE mac = $1{lock}"),
                params![mac.to_string()],
            )
            .await?;
        row.as_ref().map(host_from).transpose()
    }

    /// Runs `f` on the host's record, created if missing and locked against
    /// other appliances, then writes what it changed, in one transaction.
    async fn update_host<R>(
        &self,
        mac: Mac,
        now: SystemTime,
        f: impl FnOnce(&mut Host) -> Result<(R, Change), StateError>,
    ) -> Result<R, StateError> {
        let pulled = self.pending().pulled.remove(&mac).unwrap_or_default();
        let result = self.update_host_with(mac, now, pulled, f).await;
        if result.is_err() && pulled != Pulled::default() {
            self.pending().pulled.entry(mac).or_default().add(pulled);
        }
        result
    }

    async fn update_host_with<R>(
        &self,
        mac: Mac,
        now: SystemTime,
        pulled: Pulled,
        f: impl FnOnce(&mut Host) -> Result<(R, Change), StateError>,
    ) -> Result<R, StateError> {
        let appliance = &self.inner.config.appliance;
        let mut tx = self.inner.db.begin().await?;
        // A row to lock first: two appliances naming a new host at once then
        // queue on it instead of both inserting.
        tx.execute(
            "INSERT INTO hosts (mac, phase, since, appliance) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (mac) DO NOTHING",
            params![
                mac.to_string(),
                Phase::New.as_str(),
                to_ms(now),
                appliance.clone()
            ],
        )
        .await?;
        let mut host = self
            .load(&mut tx, mac, true)
            .await?
            .unwrap_or_else(|| Host::new(mac, now, appliance));
        host.pulled.add(pulled);
        let (result, mut change) = f(&mut host)?;
        change.save |= pulled != Pulled::default();
        if change.save {
            host.appliance.clone_from(appliance);
            tx.execute(SAVE_HOST, host_params(&host)).await?;
        }
        for (kind, detail) in &change.events {
            self.insert_event(&mut tx, mac, kind, detail, now).await?;
        }
        if let Some(done) = &change.finished {
            tx.execute(
                "INSERT INTO installs (os, mac, ended, bytes, files, duration_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                params![
                    done.os.clone(),
                    mac.to_string(),
                    to_ms(now),
                    done.pulled.bytes,
                    done.pulled.files,
                    clock::duration_ms(done.duration)
                ],
            )
            .await?;
            tx.execute(
                "DELETE FROM installs WHERE os = $1 AND id <= \
                 (SELECT id FROM installs WHERE os = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                params![done.os.clone(), INSTALLS_PER_OS],
            )
            .await?;
        }
        let wrote = !change.events.is_empty();
        if wrote {
            self.prune_host(&mut tx, mac, now).await?;
        }
        tx.commit().await?;
        if wrote {
            self.after_write(now).await;
        }
        Ok(result)
    }

    async fn insert_event(
        &self,
        tx: &mut Tx<'_>,
        mac: Mac,
        kind: &EventKind,
        detail: &serde_json::Value,
        now: SystemTime,
    ) -> Result<i64, StateError> {
        let row = tx
            .query_opt(
                "INSERT INTO events (time, mac, appliance, kind, detail) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                params![
                    to_ms(now),
                    mac.to_string(),
                    self.inner.config.appliance.clone(),
                    kind.as_str(),
                    detail.to_string()
                ],
            )
            .await?;
        row.ok_or_else(|| StateError::Corrupt("an inserted event has no id".into()))?
            .int(0)
    }

    /// Keeps `mac`'s timeline within the per-host count and the age bound.
    async fn prune_host(
        &self,
        tx: &mut Tx<'_>,
        mac: Mac,
        now: SystemTime,
    ) -> Result<(), StateError> {
        let retention = self.inner.config.retention;
        let oldest = to_ms(now).saturating_sub(clock::duration_ms(retention.max_age));
        tx.execute(
            "DELETE FROM events WHERE mac = $1 AND (time < $2 OR id <= \
             (SELECT id FROM events WHERE mac = $1 ORDER BY id DESC LIMIT 1 OFFSET $3))",
            params![mac.to_string(), oldest, retention.per_host],
        )
        .await?;
        Ok(())
    }

    /// Every [`PRUNE_EVERY`] writes, the whole timeline is pruned. The write
    /// that triggers it has committed already, so a failure here is logged,
    /// not returned.
    async fn after_write(&self, now: SystemTime) {
        let n = self.inner.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = self.prune(now).await
        {
            tracing::warn!("pruning the timeline failed: {e}");
        }
    }

    async fn import_json(&self, dir: &std::path::Path, now: SystemTime) -> Result<(), StateError> {
        let path = dir.join(import::FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let hosts = import::parse(&path, &bytes)?;
        let appliance = self.inner.config.appliance.clone();
        let mut tx = self.inner.db.begin().await?;
        let mut added = 0;
        for h in &hosts {
            let since = to_ms(h.since);
            let started = (h.phase == Phase::Installing).then_some(since);
            let ended = (h.phase == Phase::Installed).then_some(since);
            let n = tx
                .execute(
                    "INSERT INTO hosts (mac, phase, since, install_started, install_ended, appliance) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (mac) DO NOTHING",
                    params![h.mac.to_string(), h.phase.as_str(), since, started, ended, appliance.clone()],
                )
                .await?;
            if n > 0 {
                added += 1;
                let detail = json!({"from": null, "to": h.phase, "transition": "import"});
                self.insert_event(&mut tx, h.mac, &EventKind::PhaseChange, &detail, now)
                    .await?;
            }
        }
        tx.commit().await?;
        let done = dir.join(import::DONE);
        tokio::fs::rename(&path, &done)
            .await
            .map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
        tracing::info!(
            "imported {added} of {} hosts from {}; renamed it {}",
            hosts.len(),
            path.display(),
            done.display()
        );
        Ok(())
    }
}

/// Creates the state directory (private: the database holds build tokens)
/// and the database file, readable by its owner only, before SQLite opens
/// it; SQLite gives its `-wal` and `-shm` files the same mode.
async fn prepare_sqlite_file(
    dir: &std::path::Path,
    path: &std::path::Path,
) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let (dir, path) = (dir.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StateError::Io {
                path: dir.clone(),
                source,
            })?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map(drop)
            .map_err(|source| StateError::Io { path, source })
    })
    .await
    .map_err(|e| StateError::Task(e.to_string()))?
}
