//! [`StateStore`]: the API the daemon and the protocol fronts use. Every
//! read is answered from memory ([`crate::book`], the discovered table);
//! every change is applied there at once and queued for the one writer
//! ([`crate::writer`]), which commits many changes per transaction. What a
//! change returns is a [`Written`]: its result now, and the commit that
//! makes it durable for the callers that must wait for it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEntry, OperatorAction};
use crate::book::Book;
use crate::claim::{Binding, Claimed, Network, Withheld};
use crate::db::connect::Connector;
use crate::db::{Db, params};
use crate::diagnosis::{self, Diagnosis};
use crate::discovery::{self, Discovered, DiscoveryOutcome, Facts, MAX_FACTS_BYTES};
use crate::election::Election;
use crate::event::{Event, EventKind};
use crate::host::{Host, Outcome, Pulled};
use crate::limit::{Folded, Limiter, Verdict};
use crate::op::{self, HostOp, TokenNeed};
use crate::phase::{Phase, Transition};
use crate::token::{BuildToken, TokenRejected};
use crate::writer::{self, After, Job, Queue, Writer, WriterStats, Written, lock};
use crate::{Backend, StateConfig, StateError, import, rows, schema};

/// Events about MACs without a host record written per second, and at
/// once: what strangers can make the store write.
const STRANGER_RATE: u32 = 20;
const STRANGER_BURST: u32 = 200;

/// How long `open` waits for the listener for other appliances' changes.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// The host state store. Cheap to clone; every clone shares the memory,
/// the queue and the writer.
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
    config: StateConfig,
    /// Several appliances share the database: keep what is not committed
    /// yet, to replay it over another appliance's change.
    shared: bool,
    book: Arc<Mutex<Book>>,
    discovered: Arc<Mutex<discovery::Table>>,
    limiter: Mutex<Limiter>,
    strangers: Mutex<kickstand_limit::Flow>,
    strangers_refused: AtomicU64,
    queue: Arc<Queue>,
    /// A connection of its own for timelines, so reading one never waits
    /// behind the writer's transaction.
    reader: Db,
    stop: CancellationToken,
    /// Said when the writer has written what was queued and stopped.
    writer: Mutex<Option<oneshot::Receiver<()>>>,
    folded: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer writes what is queued, then stops.
        self.stop.cancel();
    }
}

/// What the last completed install of an OS pulled, and how long it took:
/// the expected total for the next one's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallSize {
    pub bytes: u64,
    pub files: u64,
    pub duration: Duration,
}

/// What the store did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Transactions the writer committed.
    pub transactions: u64,
    /// Changes they carried.
    pub changes: u64,
    /// Changes waiting now.
    pub queued: u64,
    /// Changes whose commit failed for a reason that may pass (the
    /// database unreachable), held by the writer for its next try.
    pub kept: u64,
    /// Commits that failed (retried, or split).
    pub failed_commits: u64,
    /// Changes the database refused (dropped; kept in memory).
    pub dropped_changes: u64,
    /// Activity and noise events shed because the queue was full.
    pub shed_events: u64,
    /// Repeats folded into summaries.
    pub folded_events: u64,
    /// Events about strangers not written (over their rate).
    pub stranger_events_refused: u64,
    /// Hosts and discovered machines held in memory.
    pub hosts: u64,
    pub discovered: u64,
}

impl StateStore {
    /// Opens the store, creating and migrating the database as needed and
    /// importing an old `hosts.json` once; loads every host and the
    /// discovered machines into memory; starts the writer (and, with
    /// PostgreSQL, the listener for other appliances' changes).
    pub async fn open(config: StateConfig) -> Result<StateStore, StateError> {
        let (db, reader) = connect(&config).await?;
        schema::migrate(&db, schema::MIGRATIONS.len()).await?;
        if let Some(dir) = config.import_dir.clone() {
            import::import(&db, &dir, &config.appliance, SystemTime::now()).await?;
        }
        let store = StateStore::start(config, db, reader).await?;
        // The first prune runs with the first batch.
        store.push(Job::Prune {
            now: SystemTime::now(),
            reply: None,
        });
        Ok(store)
    }

    /// Makes a database as an older release left it: migrated to `version`,
    /// then `statements` run in one transaction. For upgrade tests.
    #[doc(hidden)]
    pub async fn make_old(
        config: &StateConfig,
        version: usize,
        statements: &[&str],
    ) -> Result<(), StateError> {
        let (db, _) = connect(config).await?;
        schema::migrate(&db, version.min(schema::MIGRATIONS.len())).await?;
        let mut tx = db.begin().await?;
        for sql in statements {
            tx.execute(sql, params![]).await?;
        }
        tx.commit().await
    }

    async fn start(config: StateConfig, db: Db, reader: Db) -> Result<StateStore, StateError> {
        let shared = db.shared();
        let queue = Queue::new();
        let stop = CancellationToken::new();
        let instance = instance_id()?;
        if let Some(connector) = db.connector() {
            let (tell, listening) = oneshot::channel();
            tokio::spawn(crate::db::postgres::listen(
                connector,
                writer::CHANNEL,
                listened(queue.clone(), instance.clone()),
                tell,
                stop.clone(),
            ));
            // Listening before loading: a change another appliance makes
            // from here on is heard (the load may see it too; reading it
            // again costs nothing). A listener the server refuses is
            // retried behind, and what it missed is read again once it
            // listens; the store opens without it rather than not at all.
            if tokio::time::timeout(LISTEN_WAIT, listening).await.is_err() {
                tracing::warn!(
                    "not yet listening for other appliances' changes; they reach this one once it is"
                );
                queue.push(Job::ReloadAll);
            }
        }
        let (book, table) = load(&reader, &config).await?;
        let book = Arc::new(Mutex::new(book));
        let discovered = Arc::new(Mutex::new(table));
        let writer = Writer::new(
            db,
            queue.clone(),
            book.clone(),
            discovered.clone(),
            config.clone(),
            instance,
        );
        // A thread of its own, with a runtime of its own: the writer's SQLite
        // statements run right there, and nothing it does waits behind (or
        // holds up) the daemon's workers.
        let (done_tx, done) = oneshot::channel();
        let writer_stop = stop.clone();
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer.run(writer_stop)),
                    Err(e) => tracing::error!(error = %e, "the state writer cannot start"),
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| StateError::Task(format!("cannot start the state writer: {e}")))?;
        Ok(StateStore {
            inner: Arc::new(Inner {
                config,
                shared,
                book,
                discovered,
                limiter: Mutex::default(),
                strangers: Mutex::new(kickstand_limit::Flow::new(
                    kickstand_limit::Rate::per_second(STRANGER_RATE, STRANGER_BURST),
                )),
                strangers_refused: AtomicU64::new(0),
                queue,
                reader,
                stop,
                writer: Mutex::new(Some(done)),
                folded: AtomicU64::new(0),
            }),
        })
    }

    /// This appliance's side of `segment`'s election
    /// ([`crate::election`]), on a connection of its own. PostgreSQL only:
    /// an SQLite file is one appliance's, and so is its segment.
    pub async fn election(&self, segment: &str) -> Result<Election, StateError> {
        let connector = self.inner.reader.connector().ok_or_else(|| {
            StateError::Settings(
                "a segment's election needs the PostgreSQL the appliances share (state.url)".into(),
            )
        })?;
        let appliance = &self.inner.config.appliance;
        let holder = format!("{appliance}/{}", instance_id()?);
        let db = Db::open_postgres(connector).await?;
        Ok(Election::new(db, segment, holder, appliance))
    }

    /// Writes everything queued and stops the writer (at shutdown).
    pub async fn close(&self) -> Result<(), StateError> {
        let flushed = self.flush().await;
        self.inner.stop.cancel();
        let handle = lock(&self.inner.writer).take();
        if let Some(handle) = handle {
            handle.await.map_err(|e| StateError::Task(e.to_string()))?;
        }
        flushed
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<usize, StateError> {
        schema::version(&self.inner.reader).await
    }

    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> StoreStats {
        let w: &WriterStats = &self.inner.queue.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            transactions: get(&w.transactions),
            changes: get(&w.changes),
            queued: get(&w.queued),
            kept: get(&w.kept),
            failed_commits: get(&w.failed_commits),
            dropped_changes: get(&w.dropped_changes),
            shed_events: get(&w.shed_events),
            folded_events: get(&self.inner.folded),
            stranger_events_refused: get(&self.inner.strangers_refused),
            hosts: lock(&self.inner.book).hosts().count() as u64,
            discovered: lock(&self.inner.discovered).len() as u64,
        }
    }

    /// Whether the shared database is reached now, and since when; `None`
    /// for SQLite, a file of the appliance's own.
    pub fn database(&self) -> Option<crate::DatabaseState> {
        self.inner.reader.connector().map(|c| c.health.get())
    }

    fn push(&self, job: Job) -> Option<u64> {
        self.inner.queue.push(job)
    }

    /// A change's handle. A call that changed nothing (`seq` is `None`)
    /// still waits, when awaited, for what was queued before it: what it
    /// answered rests on those changes (a callback that finds the host
    /// already `installing` must not be acknowledged before the kickstart
    /// fetch that made it so is on disk).
    fn written<T>(&self, value: T, seq: Option<u64>) -> Written<T> {
        let after = seq.map_or(After::Queued, After::Change);
        self.inner.queue.written(value, after)
    }

    // ---- hosts and the life cycle -------------------------------------

    /// The host's record; `None` for a MAC never named to the store (its
    /// phase is [`Phase::New`]).
    pub fn host(&self, mac: Mac) -> Option<Host> {
        lock(&self.inner.book).host(mac).cloned()
    }

    /// The host's phase ([`Phase::New`] when it has no record).
    pub fn phase(&self, mac: Mac) -> Phase {
        lock(&self.inner.book)
            .host(mac)
            .map_or(Phase::New, |h| h.phase)
    }

    /// Every host the store knows, by MAC.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = lock(&self.inner.book).hosts().cloned().collect();
        hosts.sort_by_key(|h| h.mac);
        hosts
    }

    /// The host that last came from `ip`, to put a request that carries no
    /// MAC (TFTP, the repo proxy) on a timeline.
    pub fn host_by_ip(&self, ip: IpAddr) -> Option<Mac> {
        lock(&self.inner.book).by_ip(ip)
    }

    /// Applies `op` to `mac` and queues it when it changed anything. A
    /// refused transition is not queued as a change: its event is a noise
    /// event like any other refusal, rate-limited.
    fn change(&self, mac: Mac, op: HostOp, now: SystemTime) -> (op::Applied, Option<u64>) {
        let config = &self.inner.config;
        let mut book = lock(&self.inner.book);
        let known = book.known(mac);
        let applied = book.apply(
            mac,
            &op,
            now,
            config.install_timeout,
            &config.appliance,
            None,
        );
        if let Some(done) = &applied.effects.finished {
            book.installs.insert(
                done.os.clone(),
                InstallSize {
                    bytes: done.pulled.bytes,
                    files: done.pulled.files,
                    duration: done.duration,
                },
            );
        }
        if let Outcome::Refused { .. } = applied.effects.outcome {
            drop(book);
            let mut seq = None;
            for (kind, detail) in &applied.effects.events {
                seq = self.event(mac, kind.clone(), detail.clone(), now).max(seq);
            }
            return (applied, seq);
        }
        let wanted = !known || applied.save || !applied.effects.events.is_empty();
        if !wanted {
            return (applied, None);
        }
        let seq = self.push(Job::Host {
            mac,
            op: op.clone(),
            now,
        });
        if let Some(seq) = seq {
            if self.inner.shared {
                book.keep(mac, seq, op, now);
            }
            book.push_effects(mac, seq, &applied.effects, now, &config.appliance);
        }
        (applied, seq)
    }

    /// Applies `t` to the host (creating its record if it has none) and
    /// records the change, or the refusal, on its timeline. `ip`, when the
    /// caller knows it, becomes the host's last address.
    ///
    /// Call it only for MACs that have a profile: host records are kept
    /// in memory, bounded by the profiles, not by what the LAN sends.
    pub fn transition(
        &self,
        mac: Mac,
        t: Transition,
        ip: Option<IpAddr>,
        now: SystemTime,
    ) -> Written<Outcome> {
        let (applied, seq) = self.change(mac, HostOp::Transition { t, ip }, now);
        self.written(applied.effects.outcome, seq)
    }

    /// The host's live build token, minted if it has none or its old one
    /// expired. `None` when the host is not in build mode (installed or
    /// failed), or when its install just ran past `install_timeout`, which
    /// fails it. Await it before handing the token out: a token the disk
    /// never saw would be refused after a restart.
    pub fn ensure_token(
        &self,
        mac: Mac,
        now: SystemTime,
    ) -> Result<Written<Option<BuildToken>>, StateError> {
        let (token, seq) = self.token_now(mac, now)?;
        Ok(self.written_by(token, seq))
    }

    /// `value`, durable once change `seq` commits; at once when no change
    /// was made (a live token was committed before its minter handed it
    /// out).
    fn written_by<T>(&self, value: T, seq: Option<u64>) -> Written<T> {
        match seq {
            Some(seq) => self.inner.queue.written(value, After::Change(seq)),
            None => self.inner.queue.written(value, After::Nothing),
        }
    }

    /// The host's live token (minted if need be), and the change that
    /// made it, if one did.
    fn token_now(
        &self,
        mac: Mac,
        now: SystemTime,
    ) -> Result<(Option<BuildToken>, Option<u64>), StateError> {
        let timeout = self.inner.config.install_timeout;
        let need = op::token_need(lock(&self.inner.book).host(mac), now, timeout);
        Ok(match need {
            TokenNeed::NotBuilding => (None, None),
            TokenNeed::Live(token) => (Some(token), None),
            TokenNeed::Overdue => {
                let (_, seq) = self.change(
                    mac,
                    HostOp::Transition {
                        t: Transition::TimedOut,
                        ip: None,
                    },
                    now,
                );
                (None, seq)
            }
            TokenNeed::Mint => {
                let token = BuildToken::mint()?;
                let (_, seq) = self.change(
                    mac,
                    HostOp::Mint {
                        token: token.clone(),
                        expires: now + timeout,
                    },
                    now,
                );
                // Another request minted one a moment ago: that one stands.
                let live = lock(&self.inner.book)
                    .host(mac)
                    .and_then(|h| h.token.clone())
                    .unwrap_or(token);
                (Some(live), seq)
            }
        })
    }

    /// Notes that `mac`'s own DHCP exchange gave it `ip` (a REQUEST that
    /// takes an office server's offer, or a lease made here). The first
    /// address of a build becomes the host's address (requests from there
    /// are put down to it); a second one holds the host: its token is
    /// revoked, it fails with "two addresses claim …", and only an
    /// operator's rearm starts a new build. Over IPv6 the build's addresses
    /// are a set, and only one past [`crate::claim::MAX_V6_ADDRESSES`]
    /// holds it (see [`crate::claim`]).
    pub fn claim(&self, mac: Mac, ip: IpAddr, network: Network, now: SystemTime) -> Claimed {
        self.note_claim(mac, ip, network, Binding::Dhcp, now)
    }

    fn note_claim(
        &self,
        mac: Mac,
        ip: IpAddr,
        network: Network,
        binding: Binding,
        now: SystemTime,
    ) -> Claimed {
        let claimed = lock(&self.inner.book).claim(mac, ip, network, binding, now);
        match claimed {
            Claimed::First => {
                self.change(mac, HostOp::Seen { ip }, now);
            }
            Claimed::Moved { to, .. } => {
                self.change(mac, HostOp::Move { ip: to }, now);
            }
            Claimed::Conflict { first, second } => {
                self.change(
                    mac,
                    HostOp::Transition {
                        t: Transition::AddressConflict { first, second },
                        ip: None,
                    },
                    now,
                );
            }
            Claimed::Again | Claimed::Added(_) | Claimed::NotBuilding => {}
        }
        claimed
    }

    /// Drops `mac`'s claim that no token was handed out on: its lease was
    /// given back (a DECLINE from the holder), and the next one stands.
    pub fn release_claim(&self, mac: Mac) {
        lock(&self.inner.book).end_claim(mac);
    }

    /// The build token for a boot script or GRUB config that `peer` asked
    /// for `mac`: handed out only when `peer` is the address the host's own
    /// exchange gave it (`binding` says how that is learnt; over IPv6, one
    /// of the build's set or the machine's SLAAC address under one), and
    /// then bound to `peer` if it is the first, so its kickstart and
    /// callbacks are taken from there (or, over IPv6, the set) only.
    /// `Ok(Err(why))` when it is withheld; `Ok(Ok(None))` when the host is
    /// not in build mode. Await the token before handing it out, as with
    /// [`StateStore::ensure_token`].
    pub fn hand_token(
        &self,
        mac: Mac,
        peer: IpAddr,
        binding: Binding,
        now: SystemTime,
    ) -> Result<Result<Written<Option<BuildToken>>, Withheld>, StateError> {
        if binding == Binding::FirstFetch
            && let Claimed::Conflict { first, second } =
                self.note_claim(mac, peer, Network::Boot, binding, now)
        {
            return Ok(Err(Withheld::Conflict { first, second }));
        }
        let (admitted, building) = lock(&self.inner.book).admits(mac, peer, now);
        match admitted {
            Err(Withheld::NoExchange) if !building => {}
            Err(why) => return Ok(Err(why)),
            Ok(()) => {}
        }
        let (token, minted) = self.token_now(mac, now)?;
        let Some(token) = token else {
            return Ok(Ok(self.written_by(None, minted)));
        };
        let (_, bound) = self.change(
            mac,
            HostOp::Bind {
                token: token.clone(),
                ip: peer,
            },
            now,
        );
        Ok(Ok(self.written_by(Some(token), bound.max(minted))))
    }

    /// Checks the build token a request to `mac`'s kickstart or callbacks
    /// presented from `peer`. The first accepted use binds the token to
    /// `peer`; after that an IPv6 `peer` that the build's IPv6 claims admit
    /// (its installer's own address) is accepted too. Every refusal is a
    /// `token-rejected` event on `mac`'s timeline (repeats folded).
    pub fn check_token(
        &self,
        mac: Mac,
        presented: Option<&str>,
        peer: IpAddr,
        now: SystemTime,
    ) -> Written<Result<(), TokenRejected>> {
        let (verdict, then) = {
            let book = lock(&self.inner.book);
            judge(&book, mac, presented.filter(|t| !t.is_empty()), peer, now)
        };
        let seq = match (then, &verdict) {
            (Then::Bind(token), _) => self.change(mac, HostOp::Bind { token, ip: peer }, now).1,
            (Then::Seen, _) => self.change(mac, HostOp::Seen { ip: peer }, now).1,
            (Then::Nothing, Err(reason)) => {
                let mut detail =
                    serde_json::json!({"ip": rows::ip_text(peer), "reason": reason.name()});
                match reason {
                    TokenRejected::WrongAddress { bound } => {
                        detail["bound"] = rows::ip_text(*bound).into();
                    }
                    TokenRejected::OtherHost { owner } => {
                        detail["owner"] = owner.to_string().into();
                    }
                    _ => {}
                }
                self.event(mac, EventKind::TokenRejected, detail, now)
            }
            (Then::Nothing, Ok(())) => None,
        };
        self.written(verdict, seq)
    }

    /// Fails every host whose install ran past `install_timeout`; returns
    /// them. The daemon calls it now and then; [`StateStore::ensure_token`]
    /// also fails an overdue host that boots again.
    pub fn fail_overdue(&self, now: SystemTime) -> Vec<Mac> {
        let timeout = self.inner.config.install_timeout;
        let overdue: Vec<Mac> = lock(&self.inner.book)
            .hosts()
            .filter(|h| h.overdue(now, timeout))
            .map(|h| h.mac)
            .collect();
        for mac in &overdue {
            let _ = self.transition(*mac, Transition::TimedOut, None, now);
        }
        overdue
    }

    /// Adds to the bytes and files the host pulled during its current
    /// install: in memory at once, on disk with the writer's next batch
    /// (within a second), so the repo proxy can call it per file. A crash
    /// loses at most that second of counting, never a phase or an event.
    pub fn add_pulled(&self, mac: Mac, bytes: u64, files: u64) {
        let n = Pulled { bytes, files };
        let config = &self.inner.config;
        let mut book = lock(&self.inner.book);
        if !book.known(mac) {
            return;
        }
        let _ = book.apply(
            mac,
            &HostOp::Pulled(n),
            SystemTime::now(),
            config.install_timeout,
            &config.appliance,
            None,
        );
        // Queued under the book's lock: a reload (which takes both) either
        // sees it queued or comes before it.
        self.inner.queue.push_pulled(mac, n);
    }

    /// Every change made so far, once it is on disk.
    pub fn flush(&self) -> Written<()> {
        let seq = self.push(Job::Barrier);
        self.written((), seq)
    }

    /// What the last completed install of `os` pulled; `None` before the
    /// first.
    pub fn expected_install(&self, os: &str) -> Option<InstallSize> {
        lock(&self.inner.book).installs.get(os).copied()
    }

    // ---- the timeline ---------------------------------------------------

    /// Queues an event about a host (the book knows it), folding repeats.
    fn event(
        &self,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
        now: SystemTime,
    ) -> Option<u64> {
        let mut due = Vec::new();
        let verdict = if kind.limited() {
            lock(&self.inner.limiter).admit(mac, &kind, &detail, now, &mut due)
        } else {
            Verdict::Write
        };
        let mut seq = self.write_folded(due);
        match verdict {
            Verdict::Write => seq = self.write_event(mac, kind, detail, now).max(seq),
            Verdict::Fold => {
                self.inner.folded.fetch_add(1, Ordering::Relaxed);
            }
        }
        seq
    }

    fn write_event(
        &self,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
        time: SystemTime,
    ) -> Option<u64> {
        let appliance = &self.inner.config.appliance;
        let mut book = lock(&self.inner.book);
        let host = book.known(mac);
        let seq = self.push(Job::Event {
            mac,
            kind: kind.clone(),
            detail: detail.clone(),
            time,
        })?;
        if host {
            book.push_event(mac, seq, kind, detail, time, appliance);
        }
        Some(seq)
    }

    fn write_folded(&self, due: Vec<Folded>) -> Option<u64> {
        due.into_iter()
            .filter_map(|f| self.write_event(f.mac, f.kind, f.detail, f.time))
            .max()
    }

    /// Records an event on `mac`'s timeline. `detail` is a JSON object with
    /// the fields [`EventKind`] documents for `kind`. Repeats of a kind the
    /// LAN can cause at will ([`EventKind::limited`]) past a few a minute
    /// are folded into one event at the end of the minute.
    ///
    /// For MACs with a profile: the host gets a record. A MAC without one
    /// goes to [`StateStore::record_stranger`].
    pub fn record(
        &self,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
        now: SystemTime,
    ) -> Written<()> {
        if !lock(&self.inner.book).known(mac) {
            let _ = self.change(mac, HostOp::Touch, now);
        }
        let seq = self.event(mac, kind, detail, now);
        self.written((), seq)
    }

    /// Records an event about a MAC without a profile: written to the
    /// timeline (an operator may ask why it was not answered) within a
    /// rate every stranger shares, never kept in memory.
    pub fn record_stranger(
        &self,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
        now: SystemTime,
    ) -> Written<()> {
        let mut due = Vec::new();
        let verdict = lock(&self.inner.limiter).admit(mac, &kind, &detail, now, &mut due);
        let mut seq = self.write_folded(due);
        if verdict == Verdict::Write {
            let since_epoch = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            if lock(&self.inner.strangers).take(since_epoch) {
                seq = self.write_event(mac, kind, detail, now).max(seq);
            } else {
                self.inner.strangers_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.written((), seq)
    }

    /// Periodic upkeep: writes the summaries of folded repeats whose minute
    /// is over, and forgets discovered machines not seen for too long.
    pub fn tick(&self, now: SystemTime) {
        let due = lock(&self.inner.limiter).due(now);
        let _ = self.write_folded(due);
        let limits = self.inner.config.discovery;
        let expired = lock(&self.inner.discovered).expire(&limits, now);
        for mac in expired {
            self.push(Job::Discovered(discovery::Change::Delete(mac)));
        }
    }

    /// The newest `limit` events of `mac`, oldest first, from the database
    /// (after everything queued so far is written).
    pub async fn timeline(&self, mac: Mac, limit: u64) -> Result<Vec<Event>, StateError> {
        self.flush().await?;
        let mut tx = self.inner.reader.begin_read().await?;
        let events = rows::timeline(&mut tx, mac, limit).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// The newest events of `mac` held in memory (what the diagnosis reads).
    pub fn recent(&self, mac: Mac) -> Vec<Event> {
        lock(&self.inner.book).events(mac)
    }

    /// The newest event of every host (for `kickstand hosts`).
    pub fn last_events(&self) -> Vec<Event> {
        let mut events = lock(&self.inner.book).last_events();
        events.sort_by_key(|e| e.mac);
        events
    }

    /// Where `mac`'s journey stopped, read from its record and the newest
    /// events in memory.
    pub fn diagnose(&self, mac: Mac, now: SystemTime) -> Diagnosis {
        let (host, events) = {
            let book = lock(&self.inner.book);
            (book.host(mac).cloned(), book.events(mac))
        };
        diagnosis::diagnose(
            host.as_ref(),
            &events,
            now,
            self.inner.config.install_timeout,
        )
    }

    /// Removes events past the retention's age and totals; returns how many.
    /// The writer runs it every minute by itself.
    pub async fn prune(&self, now: SystemTime) -> Result<u64, StateError> {
        let (tx, rx) = oneshot::channel();
        let seq = self.push(Job::Prune {
            now,
            reply: Some(tx),
        });
        self.written((), seq).await?;
        rx.await
            .map_err(|_| StateError::Task("the prune was not answered".into()))
    }

    // ---- the operator's audit log ----------------------------------------

    /// Records an operator action in the audit log. A refused one may be
    /// shed under a flood (anyone can cause those); a done one is not.
    pub fn record_audit(&self, action: OperatorAction, now: SystemTime) -> Written<()> {
        let seq = self.push(Job::Audit { action, time: now });
        self.written((), seq)
    }

    /// The newest `limit` audit rows, newest first, from the database
    /// (after everything queued so far is written).
    pub async fn audit(&self, limit: u64) -> Result<Vec<AuditEntry>, StateError> {
        self.flush().await?;
        let mut tx = self.inner.reader.begin_read().await?;
        let entries = rows::audit(&mut tx, limit).await?;
        tx.commit().await?;
        Ok(entries)
    }

    // ---- discovered machines ---------------------------------------------

    /// Takes a discovery report from a machine without a profile; its
    /// facts are kept [cleaned](Facts::cleaned).
    pub fn report_discovered(
        &self,
        mac: Mac,
        ip: IpAddr,
        facts: &Facts,
        now: SystemTime,
    ) -> Written<DiscoveryOutcome> {
        let bytes = serde_json::to_string(facts).map_or(usize::MAX, |s| s.len());
        if bytes > MAX_FACTS_BYTES {
            let outcome = DiscoveryOutcome::TooLarge {
                bytes,
                limit: MAX_FACTS_BYTES,
            };
            return self.written(outcome, None);
        }
        let facts = facts.cleaned();
        let limits = self.inner.config.discovery;
        let mut changes = Vec::new();
        let mut table = lock(&self.inner.discovered);
        let first_seen = table.get(mac).map_or(now, |d| d.first_seen);
        let outcome = table.report(
            &limits,
            Discovered {
                mac,
                first_seen,
                last_seen: now,
                ip: Some(ip),
                facts,
                appliance: self.inner.config.appliance.clone(),
            },
            &mut changes,
        );
        let seq = changes
            .into_iter()
            .filter_map(|c| self.push(Job::Discovered(c)))
            .max();
        drop(table);
        self.written(outcome, seq)
    }

    /// Every discovered machine, most recently seen first.
    pub fn discovered(&self) -> Vec<Discovered> {
        lock(&self.inner.discovered).list()
    }

    /// Removes a discovered machine (adopted, or not wanted); whether it was listed.
    pub fn forget_discovered(&self, mac: Mac) -> Written<bool> {
        let mut table = lock(&self.inner.discovered);
        let listed = table.forget(mac);
        let seq = self.push(Job::Discovered(discovery::Change::Delete(mac)));
        drop(table);
        self.written(listed, seq)
    }

    /// Forgets the discovered machines that have a host profile now
    /// (`profiled`): given one by hand or adopted, they are hosts, no longer
    /// strangers to adopt. The MACs forgotten.
    pub fn forget_discovered_profiled(&self, profiled: impl Fn(Mac) -> bool) -> Written<Vec<Mac>> {
        let mut table = lock(&self.inner.discovered);
        let macs: Vec<Mac> = table
            .list()
            .into_iter()
            .map(|d| d.mac)
            .filter(|mac| profiled(*mac))
            .collect();
        let seq = macs
            .iter()
            .filter_map(|mac| {
                table.forget(*mac);
                self.push(Job::Discovered(discovery::Change::Delete(*mac)))
            })
            .max();
        drop(table);
        self.written(macs, seq)
    }

    /// Forgets every discovered machine; how many there were.
    pub fn clear_discovered(&self) -> Written<usize> {
        let mut table = lock(&self.inner.discovered);
        let n = table.clear();
        let seq = self.push(Job::ClearDiscovered);
        drop(table);
        self.written(n, seq)
    }
}

/// What a token check does besides its verdict.
enum Then {
    Nothing,
    /// The token's first use: bind it to the address.
    Bind(BuildToken),
    /// A use from its bound address, which the host last came from.
    Seen,
}

/// The verdict on a token `presented` for `mac` from `peer` at `now`.
fn judge(
    book: &Book,
    mac: Mac,
    presented: Option<&str>,
    peer: IpAddr,
    now: SystemTime,
) -> (Result<(), TokenRejected>, Then) {
    let Some(presented) = presented else {
        return (Err(TokenRejected::Missing), Then::Nothing);
    };
    let host = book.host(mac);
    let own = host.and_then(|h| h.token.as_ref().filter(|t| t.matches(presented)));
    let (Some(h), Some(token)) = (host, own) else {
        // A map lookup, not a constant-time compare: its timing could at
        // most say whether some host has this exact 192-bit value, which
        // no one can guess.
        return match book.by_token(presented) {
            Some(owner) if owner != mac => (Err(TokenRejected::OtherHost { owner }), Then::Nothing),
            _ => (Err(TokenRejected::Wrong), Then::Nothing),
        };
    };
    match h.token_ip {
        _ if !h.token_live(now) => (Err(TokenRejected::Expired), Then::Nothing),
        // Over IPv6 the installer's own exchange gave it another address
        // than the loader's the token was bound at; claims are in memory
        // only, so after a restart the bound address alone stands.
        Some(bound)
            if bound != peer && (peer.is_ipv4() || book.admits(mac, peer, now).0.is_err()) =>
        {
            (Err(TokenRejected::WrongAddress { bound }), Then::Nothing)
        }
        None => (Ok(()), Then::Bind(token.clone())),
        Some(_) if h.last_ip != Some(peer) => (Ok(()), Then::Seen),
        Some(_) => (Ok(()), Then::Nothing),
    }
}

/// A random name for this process in notifications.
fn instance_id() -> Result<String, StateError> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| StateError::Random(e.to_string()))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the PostgreSQL listener hands over: a change another appliance
/// made becomes a reload in the writer's queue; a lost channel, a reload
/// of everything.
fn listened(
    queue: Arc<Queue>,
    instance: String,
) -> impl Fn(crate::db::postgres::Heard) + Send + 'static {
    move |heard| {
        let job = match heard {
            crate::db::postgres::Heard::Payload(p) => writer::notification(&instance, &p),
            crate::db::postgres::Heard::Resync => Some(Job::ReloadAll),
        };
        if let Some(job) = job {
            queue.push(job);
        }
    }
}

/// Opens the writer's connection and the reader's.
async fn connect(config: &StateConfig) -> Result<(Db, Db), StateError> {
    Ok(match &config.backend {
        Backend::Sqlite { dir } => {
            let path = dir.join("state.db");
            prepare_sqlite_file(dir, &path).await?;
            (
                Db::open_sqlite_inline(&path).await?,
                Db::open_sqlite(&path).await?,
            )
        }
        Backend::Postgres(pg) => {
            // One for the writer, the reader and the listener alike.
            let connector = Arc::new(Connector::new(pg)?);
            (
                Db::open_postgres(connector.clone()).await?,
                Db::open_postgres(connector).await?,
            )
        }
    })
}

/// Everything the book and the discovered table start with.
async fn load(db: &Db, config: &StateConfig) -> Result<(Book, discovery::Table), StateError> {
    let mut tx = db.begin_read().await?;
    let mut book = Book::with_first_id(rows::max_event_id(&mut tx).await?);
    for host in rows::hosts(&mut tx).await? {
        let mac = host.mac;
        let events = rows::tails(&mut tx, mac).await?;
        book.load(Some(host), mac, events);
    }
    book.installs = rows::installs(&mut tx).await?.into_iter().collect();
    let mut machines = rows::discovered(&mut tx).await?;
    machines.truncate(config.discovery.max);
    tx.commit().await?;
    let mut table = discovery::Table::default();
    table.replace(machines);
    Ok((book, table))
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
