//! The daemon's live state: the generation in force (swapped whole on
//! every accepted reload), the outcome of the last reload, the host state
//! store, the repo proxy and the operator token. ProxyDHCP, TFTP and HTTP
//! each see it through the narrow trait their crate defines
//! ([`kickstand_dhcp::Boot`], [`kickstand_tftp::Source`],
//! [`kickstand_http::Front`], in `views`); every packet and request takes
//! one generation and keeps it to the end.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use kickstand_profiles::{LoadError, Mac};
use kickstand_repo::RepoProxy;
use kickstand_state::{EventKind, Phase, StateStore};
use lru::LruCache;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::generation::{BootDecision, Generation, Ports};
use crate::metrics::{Metrics, RogueLabels};
use crate::syslog::InstallerLogs;

/// The outcome of the last profile reload, shown on the status page.
#[derive(Debug, Clone, Default)]
pub(crate) enum ReloadStatus {
    #[default]
    Loaded,
    /// The last edit was rejected; the previous generation is still in force.
    Rejected { errors: Vec<String> },
}

/// Why the profiles are being reloaded, for the log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    FileChange,
    Signal,
    /// An operator adopted a discovered machine.
    Adopt,
}

/// A PXE client that was not answered is logged at `info` once per this
/// long, not once per packet.
const QUIET_FOR: Duration = Duration::from_secs(300);
/// A discovery report is taken only from the address that fetched the
/// discovery script within this long.
const DISCOVERY_WINDOW: Duration = Duration::from_secs(600);
/// Bound on the small in-memory tables below: a flood of forged MACs
/// pushes the least recently seen out rather than growing them.
const REMEMBERED: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");
/// Answers to PXE clients without a profile: a rack of new machines
/// powering on at once fits the burst; a flood of forged MACs is shed.
const STRANGER_ANSWERS: kickstand_limit::Rate = kickstand_limit::Rate::per_second(50, 500);
/// Log lines about unanswered PXE clients.
const UNANSWERED_LOG: kickstand_limit::Rate = kickstand_limit::Rate::per_second(2, 20);
/// Other DHCP servers remembered (and shown as metric series) at most; a
/// flood of forged offers from made-up servers is counted beyond it.
const MAX_ROGUES: usize = 32;
/// Boot file names other servers offer are kept to this many characters:
/// they are label values, and anything can be in them.
const MAX_OFFERED: usize = 64;

#[derive(Debug)]
pub(crate) struct Live {
    generation: ArcSwap<Generation>,
    reload: Mutex<ReloadStatus>,
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) metrics: Metrics,
    pub(crate) logs: InstallerLogs,
    /// The daemon's tasks (cache operations and event writes among them):
    /// shutdown drains it.
    pub(crate) tasks: TaskTracker,
    operator_token: String,
    /// Where the profiles are read from, and the ports to write into URLs
    /// when the daemon bound port 0.
    config: PathBuf,
    ports: Ports,
    /// PXE clients not answered, and when that was last logged.
    unanswered: Mutex<LruCache<Mac, Instant>>,
    /// Machines sent the discovery script: from where, and when.
    discovering: Mutex<LruCache<Mac, (IpAddr, Instant)>>,
    /// The last status document, shared by every viewer for a moment.
    pub(crate) status_doc: Shared,
    /// The last metrics exposition, shared by scrapes that overlap.
    pub(crate) metrics_doc: Shared,
    /// Other servers seen offering boot information.
    pub(crate) rogues: Rogues,
    /// Answers to PXE clients without a profile (`unknown: local-boot` or
    /// `discover`), all of them together.
    strangers: Mutex<kickstand_limit::Flow>,
    /// Log lines about unanswered clients, and how many were not logged.
    unanswered_log: Mutex<(kickstand_limit::Flow, u64)>,
    /// Monotonic origin of the rate limits above.
    started: Instant,
}

/// A document built from memory and shared by every reader who asks
/// while it is fresh: readers that arrive while it is being rebuilt wait
/// for that one rebuild instead of each making their own.
#[derive(Debug, Default)]
pub(crate) struct Shared(tokio::sync::Mutex<Option<(Instant, bytes::Bytes)>>);

impl Shared {
    /// The document, rebuilt by `build` unless one built no more than
    /// `max_age` before this call is there (a zero age: one built after
    /// this call began, by a reader ahead of it).
    pub(crate) async fn get<E>(
        &self,
        max_age: Duration,
        build: impl FnOnce() -> Result<bytes::Bytes, E>,
    ) -> Result<bytes::Bytes, E> {
        let asked = Instant::now();
        let mut doc = self.0.lock().await;
        if let Some((built, bytes)) = doc.as_ref()
            && *built + max_age >= asked
        {
            return Ok(bytes.clone());
        }
        let bytes = build()?;
        *doc = Some((Instant::now(), bytes.clone()));
        Ok(bytes)
    }
}

/// Other servers that offered boot information to PXE clients on this
/// segment, until they have been quiet for `dhcp.rogue_forget_after`.
#[derive(Debug, Default)]
pub(crate) struct Rogues {
    seen: Mutex<HashMap<Ipv4Addr, Rogue>>,
}

#[derive(Debug, Clone)]
struct Rogue {
    offered: String,
    client: Mac,
    last_seen: SystemTime,
    at: Instant,
}

impl Rogues {
    /// Records an offer and keeps its metric series: whether the server is
    /// new (to be logged). Past [`MAX_ROGUES`] servers a new one is only
    /// counted; a server's series follows what it offers now, so no
    /// sequence of offers grows the metrics.
    pub(crate) fn note(&self, offer: &kickstand_dhcp::RogueOffer, metrics: &Metrics) -> bool {
        let mut seen = lock(&self.seen);
        let previous = seen.get(&offer.server).map(|r| r.offered.clone());
        if previous.is_none() && seen.len() >= MAX_ROGUES {
            metrics.rogue_unlisted.inc();
            return false;
        }
        let offered: String = offer.offered.chars().take(MAX_OFFERED).collect();
        if let Some(old) = previous.as_ref().filter(|old| **old != offered) {
            metrics.rogue_dhcp.remove(&RogueLabels {
                server: offer.server.to_string(),
                offered: old.clone(),
            });
        }
        metrics
            .rogue_dhcp
            .get_or_create(&RogueLabels {
                server: offer.server.to_string(),
                offered: offered.clone(),
            })
            .set(1);
        seen.insert(
            offer.server,
            Rogue {
                offered,
                client: offer.client,
                last_seen: SystemTime::now(),
                at: Instant::now(),
            },
        );
        previous.is_none()
    }

    /// The servers seen within `forget_after`, each with what it offered;
    /// the quiet ones are forgotten (and their metric removed).
    pub(crate) fn list(&self, forget_after: Duration, metrics: &Metrics) -> Vec<serde_json::Value> {
        let mut seen = lock(&self.seen);
        seen.retain(|server, r| {
            let keep = r.at.elapsed() < forget_after;
            if !keep {
                info!(%server, "the other DHCP server offering boot files has gone quiet");
                metrics.rogue_dhcp.remove(&RogueLabels {
                    server: server.to_string(),
                    offered: r.offered.clone(),
                });
            }
            keep
        });
        seen.iter()
            .map(|(server, r)| {
                serde_json::json!({
                    "server": server.to_string(),
                    "offered": r.offered,
                    "client": r.client.to_string(),
                    "last_seen": humantime::format_rfc3339_seconds(r.last_seen).to_string(),
                })
            })
            .collect()
    }
}

/// Everything [`Live::new`] needs besides the generation.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) tasks: TaskTracker,
    pub(crate) operator_token: String,
    pub(crate) config: PathBuf,
    pub(crate) ports: Ports,
    pub(crate) metrics: Metrics,
}

impl Live {
    pub(crate) fn new(generation: Generation, parts: Parts) -> Live {
        let logs = InstallerLogs::new(&generation.appliance().state_dir);
        Live {
            generation: ArcSwap::from_pointee(generation),
            reload: Mutex::default(),
            store: parts.store,
            repo: parts.repo,
            metrics: parts.metrics,
            logs,
            tasks: parts.tasks,
            operator_token: parts.operator_token,
            config: parts.config,
            ports: parts.ports,
            unanswered: Mutex::new(LruCache::new(REMEMBERED)),
            discovering: Mutex::new(LruCache::new(REMEMBERED)),
            status_doc: Shared::default(),
            metrics_doc: Shared::default(),
            rogues: Rogues::default(),
            strangers: Mutex::new(kickstand_limit::Flow::new(STRANGER_ANSWERS)),
            unanswered_log: Mutex::new((kickstand_limit::Flow::new(UNANSWERED_LOG), 0)),
            started: Instant::now(),
        }
    }

    /// Whether a PXE client without a profile may be answered now.
    pub(crate) fn answer_stranger(&self) -> bool {
        let now = self.started.elapsed();
        let answered = lock(&self.strangers).take(now);
        if !answered {
            self.metrics.strangers_shed.inc();
        }
        answered
    }

    /// Whether an unanswered client may be logged now: `Some(n)` with the
    /// number of others not logged since the last line.
    pub(crate) fn may_log_unanswered(&self) -> Option<u64> {
        let now = self.started.elapsed();
        let mut log = lock(&self.unanswered_log);
        if log.0.take(now) {
            Some(std::mem::take(&mut log.1))
        } else {
            log.1 += 1;
            None
        }
    }

    /// The generation every new packet and request sees.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    pub(crate) fn config(&self) -> &Path {
        &self.config
    }

    pub(crate) fn operator_token(&self) -> &str {
        &self.operator_token
    }

    pub(crate) fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload).clone()
    }

    /// What `mac`'s next network boot does, from the generation in force
    /// and the host's install state (in memory: no reply waits on a disk).
    pub(crate) fn boot_for(&self, generation: &Generation, mac: Mac) -> BootDecision {
        let phase = if generation.snapshot().host(&mac).is_some() {
            self.store.phase(mac)
        } else {
            Phase::New
        };
        generation.boot_for(mac, phase)
    }

    /// Records an event on the timeline of `mac`: a host's when it has a
    /// profile in `generation`, a stranger's (rate-limited, not kept in
    /// memory) otherwise. Never waits for the disk.
    pub(crate) fn record(
        &self,
        generation: &Generation,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
    ) {
        let now = SystemTime::now();
        let written = if generation.snapshot().host(&mac).is_some() {
            self.store.record(mac, kind, detail, now)
        } else {
            self.store.record_stranger(mac, kind, detail, now)
        };
        written.value();
    }

    /// Whether an unanswered PXE client should be logged now: once per MAC
    /// per [`QUIET_FOR`].
    pub(crate) fn first_unanswered_in_a_while(&self, mac: Mac) -> bool {
        let mut seen = lock(&self.unanswered);
        match seen.get(&mac) {
            Some(at) if at.elapsed() < QUIET_FOR => false,
            _ => {
                seen.put(mac, Instant::now());
                true
            }
        }
    }

    /// Notes that `mac` was sent the discovery script from `ip`.
    pub(crate) fn discovering(&self, mac: Mac, ip: IpAddr) {
        lock(&self.discovering).put(mac, (ip, Instant::now()));
    }

    /// Whether a discovery report for `mac` from `ip` follows a discovery
    /// script that machine fetched from there.
    pub(crate) fn may_report(&self, mac: Mac, ip: IpAddr) -> bool {
        lock(&self.discovering)
            .peek(&mac)
            .is_some_and(|(from, at)| *from == ip && at.elapsed() < DISCOVERY_WINDOW)
    }

    /// Reads the profiles again and, if they are valid and change nothing
    /// that needs a restart, puts the new generation in force. Otherwise the
    /// current one stays and the errors are logged and kept for the status
    /// page. Blocking (reads files, renders every host).
    pub(crate) fn reload(&self, trigger: Trigger) {
        let current = self.current();
        let next =
            Generation::load(&self.config, self.ports, current.id + 1).and_then(
                |next| match current.restart_needed(&next) {
                    problems if problems.is_empty() => Ok(next),
                    problems => Err(LoadError(
                        problems
                            .into_iter()
                            .map(|p| kickstand_profiles::Diagnostic::whole_file(&self.config, p))
                            .collect(),
                    )),
                },
            );
        match next {
            Ok(next) => {
                self.repo.reconfigure(&next.repo, next.upstream.clone());
                let s = next.snapshot();
                info!(
                    ?trigger,
                    generation = next.id,
                    hosts = s.hosts.len(),
                    oses = s.oses.len(),
                    files = s.files.len(),
                    "profiles reloaded"
                );
                self.generation.store(Arc::new(next));
                *lock(&self.reload) = ReloadStatus::Loaded;
                Metrics::named(&self.metrics.reloads, "ok");
            }
            Err(e) => {
                for d in &e.0 {
                    error!(?trigger, "{d}");
                }
                error!(
                    ?trigger,
                    problems = e.0.len(),
                    "profile reload rejected; the last good profiles stay in force"
                );
                *lock(&self.reload) = ReloadStatus::Rejected {
                    errors: e.0.iter().map(ToString::to_string).collect(),
                };
                Metrics::named(&self.metrics.reloads, "rejected");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is one assignment or insert.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
