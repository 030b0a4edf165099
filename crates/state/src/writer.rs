//! The one writer: every change the store makes in memory is queued here
//! and written to the database by one task, many changes per transaction
//! (group commit). While one transaction commits (an fsync, or a round
//! trip to PostgreSQL), the next changes gather in the queue and go in the
//! next one, so a burst of a thousand DHCP answers costs a few commits,
//! not a thousand, and no reply waits for any of them. A caller that must
//! know its change is durable (a callback that moves a host's phase) waits
//! on [`Written`] for the commit that carried it.
//!
//! Host changes are replayed as ops ([`crate::op`]) on the row, read under
//! its lock, rather than written over it: with a shared PostgreSQL another
//! appliance's change to the same host stands. Rows are locked in MAC
//! order in every transaction, so two appliances' batches cannot deadlock.
//! After each commit the writer tells the other appliances which hosts it
//! changed (`NOTIFY`), and reloads the hosts they said they changed.
//!
//! When the database fails, the batch stays queued and is tried again with
//! a back-off (the daemon keeps answering from memory); a change the
//! database refuses outright is dropped with an error in the log, never
//! retried forever in front of the others. The queue is bounded: past
//! [`MAX_QUEUED`] changes, activity and noise events are shed (counted);
//! life-cycle changes never are.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kickstand_profiles::Mac;
use lru::LruCache;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::book::Book;
use crate::clock::{self, to_ms};
use crate::db::{Db, Tx, params};
use crate::discovery;
use crate::event::{Class, EventKind};
use crate::host::{Host, Pulled};
use crate::op::{self, HostOp};
use crate::{OperatorAction, StateConfig, StateError, rows};

/// Changes in one transaction at most.
const MAX_BATCH: usize = 4096;
/// Changes waiting at most before activity and noise events are shed.
pub(crate) const MAX_QUEUED: usize = 100_000;
/// Pulled-byte counts wait at most this long in memory.
const IDLE: Duration = Duration::from_secs(1);
/// The whole timeline is pruned by age and total this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Past installs kept per OS (only the newest is used; a few more say
/// what changed when an operator asks).
const INSTALLS_PER_OS: i64 = 10;
/// Hosts whose event counts the writer remembers (to prune a timeline
/// only when it is over its bound).
const COUNTED: usize = 8192;
/// The channel appliances sharing a PostgreSQL announce changes on.
pub(crate) const CHANNEL: &str = "kickstand_state";
/// A NOTIFY payload must stay under 8000 bytes: MACs per notification.
const MACS_PER_NOTIFY: usize = 300;

/// One change, or one reload, in the queue.
#[derive(Debug)]
pub(crate) enum Job {
    Host {
        mac: Mac,
        op: HostOp,
        now: SystemTime,
    },
    Event {
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
        time: SystemTime,
    },
    Discovered(discovery::Change),
    ClearDiscovered,
    /// An operator action for the audit log, stamped `time`.
    Audit {
        action: OperatorAction,
        time: SystemTime,
    },
    /// Prune the whole timeline by age and totals; the count removed.
    Prune {
        now: SystemTime,
        reply: Option<oneshot::Sender<u64>>,
    },
    /// Nothing: a batch boundary, for a caller that waits for everything
    /// queued before it (and the pulled counts) to be written.
    Barrier,
    /// Read these hosts again: another appliance changed them.
    Reload(Vec<Mac>),
    ReloadDiscovered,
    /// Read everything again (the notification channel was lost).
    ReloadAll,
}

impl Job {
    fn mac(&self) -> Option<Mac> {
        match self {
            Job::Host { mac, .. } | Job::Event { mac, .. } => Some(*mac),
            _ => None,
        }
    }

    /// Whether the job may be shed when the queue is full.
    fn sheddable(&self) -> bool {
        match self {
            Job::Event { kind, .. } => kind.class() != Class::LifeCycle,
            // Anyone can be refused at will; what an operator did is kept.
            Job::Audit { action, .. } => action.error.is_some(),
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    job: Job,
}

/// How far the writer got: every change up to `committed` is durable;
/// `failed` are recent ranges whose commit failed (their waiters got the
/// error; the changes were retried, or dropped when refused).
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    committed: u64,
    failed: VecDeque<Failed>,
    stopped: bool,
}

#[derive(Debug, Clone)]
struct Failed {
    from: u64,
    to: u64,
    why: Arc<str>,
    /// Kept and retried (the database was unreachable), or dropped.
    kept: bool,
}

impl Progress {
    fn outcome(&self, seq: u64) -> Option<Result<(), StateError>> {
        if let Some(f) = self.failed.iter().find(|f| (f.from..=f.to).contains(&seq)) {
            let why = f.why.to_string();
            return Some(Err(if f.kept {
                StateError::Write(why)
            } else {
                StateError::Refused(why)
            }));
        }
        if self.committed >= seq {
            return Some(Ok(()));
        }
        self.stopped
            .then(|| Err(StateError::Task("the state writer stopped".into())))
    }
}

/// What the writer did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub(crate) transactions: AtomicU64,
    pub(crate) changes: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) dropped_changes: AtomicU64,
    pub(crate) shed_events: AtomicU64,
    pub(crate) queued: AtomicU64,
    /// Changes taken from the queue whose commit failed for a reason that
    /// may pass, held for the next try.
    pub(crate) kept: AtomicU64,
}

#[derive(Debug, Default)]
struct Waiting {
    jobs: Vec<Queued>,
    pulled: HashMap<Mac, Pulled>,
    next_seq: u64,
}

/// The queue between the store (which applies every change in memory
/// first) and the writer.
#[derive(Debug)]
pub(crate) struct Queue {
    waiting: Mutex<Waiting>,
    wake: Notify,
    progress: watch::Sender<Progress>,
    pub(crate) stats: Arc<WriterStats>,
}

impl Queue {
    pub(crate) fn new() -> Arc<Queue> {
        Arc::new(Queue {
            waiting: Mutex::default(),
            wake: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
            stats: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Pushes and takes are whole; a panic cannot leave it torn.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`: its sequence number, or `None` when it was shed.
    pub(crate) fn push(&self, job: Job) -> Option<u64> {
        let mut w = self.lock();
        if w.jobs.len() >= MAX_QUEUED && job.sheddable() {
            self.stats.shed_events.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.next_seq += 1;
        let seq = w.next_seq;
        w.jobs.push(Queued { seq, job });
        self.stats
            .queued
            .store(w.jobs.len() as u64, Ordering::Relaxed);
        drop(w);
        self.wake.notify_one();
        Some(seq)
    }

    /// Adds pulled counts, written with the next batch (at most [`IDLE`]
    /// later): the repo proxy counts every file, and a write per file
    /// would be a write per request.
    pub(crate) fn push_pulled(&self, mac: Mac, n: Pulled) {
        self.lock().pulled.entry(mac).or_default().add(n);
    }

    /// A handle on a change with sequence `seq`. `After::Queued` (a call
    /// that changed nothing) waits, if awaited, for everything queued
    /// before it is awaited: what it answered rests on those changes.
    pub(crate) fn written<T>(self: &Arc<Self>, value: T, seq: After) -> Written<T> {
        Written {
            value,
            seq,
            queue: self.clone(),
        }
    }

    fn take(&self) -> (Vec<Queued>, HashMap<Mac, Pulled>) {
        let mut w = self.lock();
        let n = w.jobs.len().min(MAX_BATCH);
        let jobs: Vec<Queued> = w.jobs.drain(..n).collect();
        let pulled = std::mem::take(&mut w.pulled);
        self.stats
            .queued
            .store(w.jobs.len() as u64, Ordering::Relaxed);
        (jobs, pulled)
    }

    fn committed(&self, through: u64) {
        self.progress
            .send_modify(|p| p.committed = p.committed.max(through));
    }

    fn failed(&self, from: u64, to: u64, why: &StateError, kept: bool) {
        self.progress.send_modify(|p| {
            if p.failed.len() >= 64 {
                p.failed.pop_front();
            }
            p.failed.push_back(Failed {
                from,
                to,
                why: why.to_string().into(),
                kept,
            });
        });
    }

    fn stopped(&self) {
        self.progress.send_modify(|p| p.stopped = true);
    }
}

/// A change applied in memory, and its way to the disk. Its value is what
/// the change did; `.await` it (or call [`Written::durable`]) to wait until
/// it is committed, or take [`Written::value`] to answer at once.
#[must_use = "a change is in memory at once; await it to know it is on disk, or take .value()"]
#[derive(Debug)]
pub struct Written<T> {
    value: T,
    seq: After,
    queue: Arc<Queue>,
}

/// What a [`Written`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Nothing.
    Nothing,
    /// The change queued with this sequence number.
    Change(u64),
    /// Everything queued so far: the call changed nothing itself.
    Queued,
}

impl<T> Written<T> {
    /// What the change did, without waiting for the disk.
    pub fn value(self) -> T {
        self.value
    }

    /// What the change did, once it is committed.
    pub async fn durable(self) -> Result<T, StateError> {
        settled(&self.queue, self.seq).await?;
        Ok(self.value)
    }

    /// What the change did, once it is committed, or once `wait` is over
    /// or the database is found unreachable, whichever is first: then the
    /// change stays in memory and queued, and is written when the
    /// database is back ([`Durability::Kept`]). A change the database
    /// refused is an error, as with [`Written::durable`].
    pub async fn durable_within(self, wait: Duration) -> Result<(T, Durability), StateError> {
        match tokio::time::timeout(wait, settled(&self.queue, self.seq)).await {
            Ok(Ok(())) => Ok((self.value, Durability::Written)),
            Ok(Err(StateError::Write(_))) | Err(_) => Ok((self.value, Durability::Kept)),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// Whether a change waited for is on disk yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed.
    Written,
    /// In memory and queued: the database could not take it in time, and
    /// the writer writes it once it can.
    Kept,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Written => "written",
            Durability::Kept => "kept",
        }
    }
}

/// Waits until the change `seq` stands for is committed or failed.
async fn settled(queue: &Queue, seq: After) -> Result<(), StateError> {
    let seq = match seq {
        After::Nothing => return Ok(()),
        After::Change(seq) => seq,
        After::Queued => match queue.lock().next_seq {
            0 => return Ok(()),
            seq => seq,
        },
    };
    let stopped = || StateError::Task("the state writer stopped".into());
    let mut progress = queue.progress.subscribe();
    let outcome = progress
        .wait_for(|p| p.outcome(seq).is_some())
        .await
        .map_err(|_| stopped())?
        .outcome(seq);
    outcome.unwrap_or_else(|| Err(stopped()))
}

impl<T: Send + 'static> IntoFuture for Written<T> {
    type Output = Result<T, StateError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.durable())
    }
}

/// The writer task's state.
pub(crate) struct Writer {
    pub(crate) db: Arc<Db>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) book: Arc<Mutex<Book>>,
    pub(crate) discovered: Arc<Mutex<discovery::Table>>,
    pub(crate) config: StateConfig,
    /// Names this process in notifications, so it ignores its own.
    pub(crate) instance: String,
    pub(crate) counts: LruCache<Mac, [u64; 3]>,
    pub(crate) pruned: Instant,
}

/// What one committed batch touched.
#[derive(Debug, Default)]
struct Touched {
    macs: Vec<Mac>,
    discovered: bool,
}

impl Writer {
    pub(crate) fn new(
        db: Db,
        queue: Arc<Queue>,
        book: Arc<Mutex<Book>>,
        discovered: Arc<Mutex<discovery::Table>>,
        config: StateConfig,
        instance: String,
    ) -> Writer {
        Writer {
            db: Arc::new(db),
            queue,
            book,
            discovered,
            config,
            instance,
            counts: LruCache::new(NonZeroUsize::new(COUNTED).unwrap_or(NonZeroUsize::MIN)),
            pruned: Instant::now(),
        }
    }

    /// Writes until `shutdown`, then writes what is queued and stops.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut retry: Vec<Queued> = Vec::new();
        let mut retry_pulled: HashMap<Mac, Pulled> = HashMap::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let closing = shutdown.is_cancelled();
            let (jobs, pulled) = self.queue.take();
            let mut batch = std::mem::take(&mut retry);
            batch.extend(jobs);
            if batch.len() > MAX_QUEUED {
                // The database has been away a while and the changes kept
                // for it pile up: activity and noise go first, as they do
                // from a full queue; life-cycle changes are all kept.
                let before = batch.len();
                batch.retain(|q| !q.job.sheddable());
                let shed = (before - batch.len()) as u64;
                self.queue
                    .stats
                    .shed_events
                    .fetch_add(shed, Ordering::Relaxed);
            }
            let mut counts = std::mem::take(&mut retry_pulled);
            for (mac, n) in pulled {
                counts.entry(mac).or_default().add(n);
            }
            if self.pruned.elapsed() >= PRUNE_EVERY {
                self.pruned = Instant::now();
                batch.push(Queued {
                    seq: 0,
                    job: Job::Prune {
                        now: SystemTime::now(),
                        reply: None,
                    },
                });
            }
            if batch.is_empty() && counts.is_empty() {
                if closing {
                    break;
                }
                tokio::select! {
                    () = self.queue.wake.notified() => {}
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(IDLE) => {}
                }
                continue;
            }
            match self.commit(&mut batch, &counts).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if let Some(connector) = self.db.connector() {
                        connector.health.reached(None);
                    }
                    self.queue.stats.kept.store(0, Ordering::Relaxed);
                    self.queue.committed(seq_range(&batch).1);
                }
                Err(e) if e.is_transient() => {
                    self.queue
                        .stats
                        .failed_commits
                        .fetch_add(1, Ordering::Relaxed);
                    let (from, to) = seq_range(&batch);
                    self.queue.failed(from, to, &e, true);
                    self.unavailable(&e, batch.len(), backoff);
                    if closing {
                        error!(
                            changes = batch.len(),
                            "stopping with changes the state database did not take"
                        );
                        break;
                    }
                    self.queue
                        .stats
                        .kept
                        .store(batch.len() as u64, Ordering::Relaxed);
                    retry = batch;
                    retry_pulled = counts;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(crate::db::health::RETRY_AT_MOST);
                }
                Err(e) => {
                    self.queue
                        .stats
                        .failed_commits
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, changes = batch.len(), "a batch failed: writing its hosts one by one");
                    self.one_by_one(batch, counts).await;
                }
            }
        }
        self.queue.stopped();
    }

    /// Says a commit failed for a reason that may pass: a database that
    /// cannot be reached in its health (one line in the log for the whole
    /// outage); a collision with another appliance's transaction, or
    /// SQLite's full or failing disk, at every try.
    fn unavailable(&self, e: &StateError, changes: usize, retry_in: Duration) {
        match self.db.connector() {
            Some(connector) if e.is_unreachable() => connector.health.lost(e),
            _ => {
                warn!(error = %e, changes, ?retry_in, "state database unavailable: changes kept in memory and retried");
            }
        }
    }

    /// After a batch failed for something other than the connection:
    /// each host's changes in a transaction of their own, so one change
    /// the database refuses costs only itself.
    async fn one_by_one(&mut self, batch: Vec<Queued>, counts: HashMap<Mac, Pulled>) {
        // Progress moves past the batch only once every group of it is
        // written or failed: a waiter must not read a later group's commit
        // as its own.
        let through = seq_range(&batch).1;
        let mut groups: BTreeMap<Option<Mac>, Vec<Queued>> = BTreeMap::new();
        for q in batch {
            groups.entry(q.job.mac()).or_default().push(q);
        }
        for (mac, mut group) in groups {
            let pulled: HashMap<Mac, Pulled> = mac
                .and_then(|m| counts.get(&m).map(|n| (m, *n)))
                .into_iter()
                .collect();
            if let Err(e) = self.commit(&mut group, &pulled).await {
                self.queue
                    .stats
                    .dropped_changes
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                error!(error = %e, host = ?mac, changes = group.len(), "the state database refused a change: dropped (the daemon's memory keeps it until restart)");
                for q in &group {
                    if q.seq > 0 {
                        self.queue.failed(q.seq, q.seq, &e, false);
                    }
                }
            }
        }
        self.queue.committed(through);
    }

    /// Writes one batch in one transaction, then reloads what other
    /// appliances changed. Prune replies are sent once committed; the
    /// caller moves the progress waiters watch.
    async fn commit(
        &mut self,
        batch: &mut [Queued],
        pulled: &HashMap<Mac, Pulled>,
    ) -> Result<(), StateError> {
        let mut groups: BTreeMap<Mac, Vec<&Queued>> = BTreeMap::new();
        let mut rest = Vec::new();
        for q in batch.iter() {
            match q.job.mac() {
                Some(mac) => groups.entry(mac).or_default().push(q),
                None => rest.push(q),
            }
        }
        for mac in pulled.keys() {
            groups.entry(*mac).or_default();
        }
        let db = self.db.clone();
        let mut tx = db.begin().await?;
        let mut touched = Touched::default();
        let mut pruned = 0;
        // In MAC order: every appliance locks host rows in the same order.
        for (mac, group) in &groups {
            self.write_host(&mut tx, *mac, group, pulled.get(mac))
                .await?;
            touched.macs.push(*mac);
        }
        for q in &rest {
            match &q.job {
                Job::Discovered(discovery::Change::Upsert(d)) => {
                    tx.execute(rows::UPSERT_DISCOVERED, rows::discovered_params(d)?)
                        .await?;
                    touched.discovered = true;
                }
                Job::Discovered(discovery::Change::Delete(mac)) => {
                    tx.execute(
                        "DELETE FROM discovered WHERE mac = $1",
                        params![mac.to_string()],
                    )
                    .await?;
                    touched.discovered = true;
                }
                Job::ClearDiscovered => {
                    tx.execute("DELETE FROM discovered", params![]).await?;
                    touched.discovered = true;
                }
                Job::Audit { action, time } => {
                    tx.execute(
                        "INSERT INTO audit (time, appliance, peer, token_id, action, target, error) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        params![
                            to_ms(*time),
                            self.config.appliance.clone(),
                            action.peer.to_string(),
                            action.token_id.clone(),
                            action.action.clone(),
                            action.target.clone(),
                            action.error.clone()
                        ],
                    )
                    .await?;
                }
                Job::Prune { now, .. } => pruned += self.prune(&mut tx, *now).await?,
                _ => {}
            }
        }
        self.announce(&mut tx, &touched).await?;
        tx.commit().await?;

        let stats = &self.queue.stats;
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats
            .changes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let last = batch.iter().map(|q| q.seq).max().unwrap_or(0);
        lock(&self.book).committed(touched.macs.iter().copied(), last);
        for q in batch.iter_mut() {
            if let Job::Prune { reply, .. } = &mut q.job
                && let Some(reply) = reply.take()
            {
                let _ = reply.send(pruned);
            }
        }
        let reloads: Vec<&Job> = batch
            .iter()
            .map(|q| &q.job)
            .filter(|j| matches!(j, Job::Reload(_) | Job::ReloadDiscovered | Job::ReloadAll))
            .collect();
        if !reloads.is_empty() {
            let all = reloads.iter().any(|j| matches!(j, Job::ReloadAll));
            let macs: Vec<Mac> = reloads
                .iter()
                .flat_map(|j| match j {
                    Job::Reload(m) => m.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let discovered = all || reloads.iter().any(|j| matches!(j, Job::ReloadDiscovered));
            if let Err(e) = self.reload(all, &macs, discovered, last).await {
                warn!(error = %e, "could not read what another appliance changed; it is read again at the next change");
            }
        }
        Ok(())
    }

    async fn write_host(
        &mut self,
        tx: &mut Tx<'_>,
        mac: Mac,
        group: &[&Queued],
        pulled: Option<&Pulled>,
    ) -> Result<(), StateError> {
        let appliance = self.config.appliance.clone();
        let timeout = self.config.install_timeout;
        let changes_host =
            pulled.is_some() || group.iter().any(|q| matches!(q.job, Job::Host { .. }));
        let mut row: Option<Host> = None;
        if changes_host {
            let first = group
                .iter()
                .find_map(|q| match &q.job {
                    Job::Host { now, .. } => Some(*now),
                    _ => None,
                })
                .unwrap_or_else(SystemTime::now);
            // A row to lock first: two appliances naming a new host at
            // once then queue on it instead of both inserting.
            tx.execute(
                "INSERT INTO hosts (mac, phase, since, appliance) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (mac) DO NOTHING",
                params![
                    mac.to_string(),
                    crate::Phase::New.as_str(),
                    to_ms(first),
                    appliance.clone()
                ],
            )
            .await?;
            row = Some(
                rows::host(tx, mac, true)
                    .await?
                    .unwrap_or_else(|| Host::new(mac, first, &appliance)),
            );
        }
        let mut save = false;
        let mut inserted = [0u64; 3];
        for q in group {
            match &q.job {
                Job::Host { op, now, .. } => {
                    let Some(host) = row.as_mut() else { continue };
                    let applied = op::apply(host, op, *now, timeout);
                    save |= applied.save;
                    for (kind, detail) in &applied.effects.events {
                        self.insert_event(tx, mac, kind, detail, *now).await?;
                        inserted[kind.class().index()] += 1;
                    }
                    if let Some(done) = &applied.effects.finished {
                        self.insert_install(tx, mac, done, *now).await?;
                    }
                }
                Job::Event {
                    kind, detail, time, ..
                } => {
                    self.insert_event(tx, mac, kind, detail, *time).await?;
                    inserted[kind.class().index()] += 1;
                }
                _ => {}
            }
        }
        if let (Some(host), Some(n)) = (row.as_mut(), pulled) {
            save |= op::apply(host, &HostOp::Pulled(*n), SystemTime::now(), timeout).save;
        }
        if save && let Some(host) = row.as_mut() {
            host.appliance.clone_from(&appliance);
            tx.execute(rows::SAVE_HOST, rows::host_params(host)).await?;
        }
        if inserted.iter().any(|n| *n > 0) {
            self.prune_host(tx, mac, inserted).await?;
        }
        Ok(())
    }

    async fn insert_event(
        &self,
        tx: &mut Tx<'_>,
        mac: Mac,
        kind: &EventKind,
        detail: &serde_json::Value,
        time: SystemTime,
    ) -> Result<(), StateError> {
        tx.execute(
            "INSERT INTO events (time, mac, appliance, kind, detail, class) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                to_ms(time),
                mac.to_string(),
                self.config.appliance.clone(),
                kind.as_str(),
                detail.to_string(),
                kind.class().code()
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_install(
        &self,
        tx: &mut Tx<'_>,
        mac: Mac,
        done: &crate::host::Finished,
        now: SystemTime,
    ) -> Result<(), StateError> {
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
        Ok(())
    }

    /// Keeps each class of `mac`'s timeline within its bound, deleting only
    /// once a class is past it by a sixteenth (not on every insert).
    async fn prune_host(
        &mut self,
        tx: &mut Tx<'_>,
        mac: Mac,
        inserted: [u64; 3],
    ) -> Result<(), StateError> {
        let counts = match self.counts.get_mut(&mac) {
            Some(c) => c,
            None => {
                let c = rows::class_counts(tx, mac).await?;
                self.counts.put(mac, [0; 3]);
                let slot = self.counts.get_mut(&mac).ok_or_else(|| {
                    StateError::Task("the event counts lost a host just counted".into())
                })?;
                // The inserts of this batch are in the count already.
                *slot = c;
                for (n, i) in slot.iter_mut().zip(inserted) {
                    *n = n.saturating_sub(i);
                }
                slot
            }
        };
        let mut over = Vec::new();
        for class in Class::ALL {
            let n = &mut counts[class.index()];
            *n += inserted[class.index()];
            let bound = self.config.retention.per_class(class);
            if *n > bound + bound / 16 {
                over.push((class, bound));
                *n = bound;
            }
        }
        for (class, bound) in over {
            tx.execute(
                "DELETE FROM events WHERE mac = $1 AND class = $2 AND id <= \
                 (SELECT id FROM events WHERE mac = $1 AND class = $2 \
                  ORDER BY id DESC LIMIT 1 OFFSET $3)",
                params![mac.to_string(), class.code(), bound],
            )
            .await?;
        }
        Ok(())
    }

    /// Removes events past the retention's age and totals: noise within
    /// its own total, so no flood of it pushes out a life-cycle event.
    async fn prune(&mut self, tx: &mut Tx<'_>, now: SystemTime) -> Result<u64, StateError> {
        let retention = self.config.retention;
        let oldest = to_ms(now).saturating_sub(clock::duration_ms(retention.max_age));
        let mut removed = tx
            .execute("DELETE FROM events WHERE time < $1", params![oldest])
            .await?;
        for (op, total) in [("<>", retention.total), ("=", retention.noise_total)] {
            removed += tx
                .execute(
                    &format!(
                        "DELETE FROM events WHERE class {op} $1 AND id <= \
                         (SELECT id FROM events WHERE class {op} $1 \
                          ORDER BY id DESC LIMIT 1 OFFSET $2)"
                    ),
                    params![Class::Noise.code(), total],
                )
                .await?;
        }
        if removed > 0 {
            self.counts.clear();
        }
        tx.execute(
            "DELETE FROM audit WHERE id <= \
             (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET $1)",
            params![crate::AUDIT_KEPT],
        )
        .await?;
        Ok(removed)
    }

    /// Tells the other appliances on a shared database what changed.
    async fn announce(&self, tx: &mut Tx<'_>, touched: &Touched) -> Result<(), StateError> {
        if !self.db.shared() {
            return Ok(());
        }
        for chunk in touched.macs.chunks(MACS_PER_NOTIFY) {
            let macs: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            tx.notify(CHANNEL, &format!("{} h {}", self.instance, macs.join(",")))
                .await?;
        }
        if touched.discovered {
            tx.notify(CHANNEL, &format!("{} d", self.instance)).await?;
        }
        Ok(())
    }

    /// Reads again what another appliance changed, and replays over it
    /// what this one applied since (`committed` is what it has written).
    async fn reload(
        &mut self,
        all: bool,
        macs: &[Mac],
        discovered: bool,
        committed: u64,
    ) -> Result<(), StateError> {
        let timeout = self.config.install_timeout;
        let appliance = self.config.appliance.clone();
        let db = self.db.clone();
        let mut tx = db.begin_read().await?;
        let macs: Vec<Mac> = if all {
            rows::hosts(&mut tx).await?.iter().map(|h| h.mac).collect()
        } else {
            macs.to_vec()
        };
        let mut loaded = Vec::with_capacity(macs.len());
        for mac in macs {
            let row = rows::host(&mut tx, mac, false).await?;
            let events = rows::tails(&mut tx, mac).await?;
            loaded.push((mac, row, events));
        }
        let installs = rows::installs(&mut tx).await?;
        let table = if discovered {
            Some(rows::discovered(&mut tx).await?)
        } else {
            None
        };
        tx.commit().await?;
        // Under the book's lock, then the queue's, as every change takes
        // them: what was applied in memory and is still queued (pulled
        // counts, discovered changes) is put back over what was read.
        let mut book = lock(&self.book);
        let pulled = self.queue.lock().pulled.clone();
        for (mac, row, events) in loaded {
            book.reload(mac, row, events, committed, timeout, &appliance);
            if let Some(n) = pulled.get(&mac) {
                book.add_pulled(mac, *n);
            }
        }
        book.installs = installs.into_iter().collect();
        drop(book);
        if let Some(mut rows) = table {
            rows.truncate(self.config.discovery.max);
            let mut discovered = lock(&self.discovered);
            let queued: Vec<discovery::Change> = self
                .queue
                .lock()
                .jobs
                .iter()
                .filter_map(|q| match &q.job {
                    Job::Discovered(change) => Some(change.clone()),
                    Job::ClearDiscovered => Some(discovery::Change::Clear),
                    _ => None,
                })
                .collect();
            discovered.replace(rows);
            for change in queued {
                discovered.apply(change);
            }
        }
        Ok(())
    }
}

fn seq_range(batch: &[Queued]) -> (u64, u64) {
    let seqs = batch.iter().map(|q| q.seq).filter(|s| *s > 0);
    let (mut from, mut to) = (u64::MAX, 0);
    for s in seqs {
        from = from.min(s);
        to = to.max(s);
    }
    (from.min(to), to)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is whole before it unlocks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses a notification `"<instance> h <mac>,<mac>…"` or
/// `"<instance> d"`: the jobs to queue, or nothing for this process's own.
pub(crate) fn notification(instance: &str, payload: &str) -> Option<Job> {
    let mut parts = payload.splitn(3, ' ');
    let from = parts.next()?;
    if from == instance {
        return None;
    }
    match (parts.next()?, parts.next()) {
        ("h", Some(macs)) => {
            let macs: Vec<Mac> = macs.split(',').filter_map(|m| m.parse().ok()).collect();
            (!macs.is_empty()).then_some(Job::Reload(macs))
        }
        ("d", _) => Some(Job::ReloadDiscovered),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_from_others_become_reloads_and_our_own_are_ignored() {
        let m = "52:54:00:00:00:01";
        assert!(matches!(
            notification("me", &format!("other h {m},{m}")),
            Some(Job::Reload(macs)) if macs.len() == 2
        ));
        assert!(notification("me", &format!("me h {m}")).is_none());
        assert!(matches!(
            notification("me", "other d"),
            Some(Job::ReloadDiscovered)
        ));
        assert!(notification("me", "other h nonsense").is_none());
        assert!(notification("me", "garbage").is_none());
    }

    #[test]
    fn a_waiter_learns_of_its_commit_or_its_failure() {
        let mut p = Progress::default();
        assert!(p.outcome(3).is_none());
        p.committed = 3;
        assert!(matches!(p.outcome(3), Some(Ok(()))));
        assert!(p.outcome(4).is_none());
        let failed = |from, to, kept| Failed {
            from,
            to,
            why: "disk gone".into(),
            kept,
        };
        p.failed.push_back(failed(4, 9, true));
        assert!(matches!(p.outcome(5), Some(Err(StateError::Write(_)))));
        p.failed.push_back(failed(12, 12, false));
        assert!(matches!(p.outcome(12), Some(Err(StateError::Refused(_)))));
        p.stopped = true;
        assert!(matches!(p.outcome(10), Some(Err(StateError::Task(_)))));
    }
}
