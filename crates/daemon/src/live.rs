//! The daemon's live state: the generation in force (swapped whole on
//! every accepted reload), the outcome of the last reload, the host state
//! store, the repo proxy and the operator token. ProxyDHCP, TFTP and HTTP
//! each see it through the narrow trait their crate defines
//! ([`kickstand_dhcp::Boot`], [`kickstand_tftp::Source`],
//! [`kickstand_http::Front`], in `views`); every packet and request takes
//! one generation and keeps it to the end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use kickstand_profiles::{LoadError, Mac};
use kickstand_repo::RepoProxy;
use kickstand_state::{EventKind, Phase, StateStore};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::generation::{BootDecision, Generation, Ports};
use crate::syslog::{self, InstallerLogs};

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
/// Bounds on the small in-memory tables below: a flood of forged MACs
/// empties them rather than growing them.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug)]
pub(crate) struct Live {
    generation: ArcSwap<Generation>,
    reload: Mutex<ReloadStatus>,
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) counters: Counters,
    pub(crate) syslog: Arc<syslog::Counters>,
    /// What the HTTP connection caps did.
    pub(crate) connections: Arc<kickstand_http::ConnectionStats>,
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
    unanswered: Mutex<HashMap<Mac, Instant>>,
    /// Machines sent the discovery script: from where, and when.
    discovering: Mutex<HashMap<Mac, (IpAddr, Instant)>>,
}

/// What the daemon counts, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) boot_scripts: AtomicU64,
    pub(crate) kickstarts: AtomicU64,
    pub(crate) reports: AtomicU64,
    pub(crate) unknown_host_requests: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) token_rejections: AtomicU64,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_rejected: AtomicU64,
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
}

impl Live {
    pub(crate) fn new(generation: Generation, parts: Parts) -> Live {
        let logs = InstallerLogs::new(&generation.appliance().state_dir);
        Live {
            generation: ArcSwap::from_pointee(generation),
            reload: Mutex::default(),
            store: parts.store,
            repo: parts.repo,
            counters: Counters::default(),
            syslog: Arc::default(),
            connections: Arc::default(),
            logs,
            tasks: parts.tasks,
            operator_token: parts.operator_token,
            config: parts.config,
            ports: parts.ports,
            unanswered: Mutex::default(),
            discovering: Mutex::default(),
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

    /// The host's phase, or why it cannot be known.
    pub(crate) async fn phase(&self, mac: Mac) -> Result<Phase, kickstand_state::StateError> {
        Ok(self.store.host(mac).await?.map_or(Phase::New, |h| h.phase))
    }

    /// What `mac`'s next network boot does, from the generation in force
    /// and the host's install state. When the state cannot be read the
    /// machine is not answered: answering could send an installed host
    /// back to the installer.
    pub(crate) async fn boot_for(&self, generation: &Generation, mac: Mac) -> BootDecision {
        if generation.snapshot().host(&mac).is_none() {
            return generation.boot_for(mac, Phase::New);
        }
        match self.phase(mac).await {
            Ok(phase) => generation.boot_for(mac, phase),
            Err(e) => {
                error!(%mac, error = %e, "host state unreadable: not answering the machine (it may be installed)");
                BootDecision::Ignore
            }
        }
    }

    /// Writes an event before the request that caused it is answered: what
    /// a client was told happened is on the timeline, even if the daemon is
    /// killed the next moment.
    pub(crate) async fn record_now(
        &self,
        mac: Mac,
        kind: EventKind,
        detail: serde_json::Value,
    ) -> Result<(), kickstand_http::ApiError> {
        self.store
            .record(mac, kind, detail, SystemTime::now())
            .await
            .map(drop)
            .map_err(crate::hosts::state_error)
    }

    /// Writes an event without holding up the packet that caused it (a
    /// DHCP or TFTP hook, which cannot wait); failures are logged.
    pub(crate) fn record(&self, mac: Mac, kind: EventKind, detail: serde_json::Value) {
        let store = self.store.clone();
        self.tasks.spawn(async move {
            if let Err(e) = store.record(mac, kind, detail, SystemTime::now()).await {
                warn!(%mac, error = %e, "could not record an event");
            }
        });
    }

    /// Whether an unanswered PXE client should be logged now: once per MAC
    /// per [`QUIET_FOR`].
    pub(crate) fn first_unanswered_in_a_while(&self, mac: Mac) -> bool {
        let mut seen = lock(&self.unanswered);
        if seen.len() > MAX_REMEMBERED {
            seen.clear();
        }
        match seen.get(&mac) {
            Some(at) if at.elapsed() < QUIET_FOR => false,
            _ => {
                seen.insert(mac, Instant::now());
                true
            }
        }
    }

    /// Notes that `mac` was sent the discovery script from `ip`.
    pub(crate) fn discovering(&self, mac: Mac, ip: IpAddr) {
        let mut map = lock(&self.discovering);
        if map.len() > MAX_REMEMBERED {
            map.clear();
        }
        map.insert(mac, (ip, Instant::now()));
    }

    /// Whether a discovery report for `mac` from `ip` follows a discovery
    /// script that machine fetched from there.
    pub(crate) fn may_report(&self, mac: Mac, ip: IpAddr) -> bool {
        lock(&self.discovering)
            .get(&mac)
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
                self.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
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
                self.counters
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is one assignment or insert.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
