//! The daemon's live state: the generation in force (swapped whole on
//! every accepted reload), the outcome of the last reload, the host state
//! store and the repo proxy. ProxyDHCP, TFTP and HTTP each see it through
//! the narrow trait their crate defines ([`kickstand_dhcp::Boot`],
//! [`kickstand_tftp::Source`], [`kickstand_http::Front`], in `views`);
//! every packet and request takes one generation and keeps it to the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use kickstand_profiles::{LoadError, Mac};
use kickstand_repo::RepoProxy;
use kickstand_state::{Phase, StateStore};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::generation::{BootDecision, Generation};

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
}

#[derive(Debug)]
pub(crate) struct Live {
    generation: ArcSwap<Generation>,
    reload: Mutex<ReloadStatus>,
    pub(crate) states: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) counters: Counters,
    /// The daemon's tasks (cache operations among them): shutdown drains it.
    pub(crate) tasks: TaskTracker,
    /// Where the profiles are read from, and the HTTP port to write into
    /// URLs when the daemon bound port 0.
    config: PathBuf,
    http_port: Option<u16>,
}

/// What the daemon counts, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) boot_scripts: AtomicU64,
    pub(crate) kickstarts: AtomicU64,
    pub(crate) reports: AtomicU64,
    pub(crate) unknown_host_requests: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_rejected: AtomicU64,
}

impl Live {
    pub(crate) fn new(
        generation: Generation,
        states: StateStore,
        repo: RepoProxy,
        tasks: TaskTracker,
        config: &Path,
        http_port: Option<u16>,
    ) -> Live {
        Live {
            generation: ArcSwap::from_pointee(generation),
            reload: Mutex::default(),
            states,
            repo,
            tasks,
            counters: Counters::default(),
            config: config.to_path_buf(),
            http_port,
        }
    }

    /// The generation every new packet and request sees.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    pub(crate) fn config(&self) -> &Path {
        &self.config
    }

    pub(crate) fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What `mac`'s next network boot does, from the generation in force
    /// and the host's install state.
    pub(crate) fn boot_for(&self, generation: &Generation, mac: Mac) -> BootDecision {
        generation.boot_for(mac, self.phase(mac))
    }

    pub(crate) fn phase(&self, mac: Mac) -> Phase {
        self.states.get(&mac.to_string()).phase
    }

    /// Reads the profiles again and, if they are valid and change nothing
    /// that needs a restart, puts the new generation in force. Otherwise the
    /// current one stays and the errors are logged and kept for the status
    /// page. Blocking (reads files, renders every host).
    pub(crate) fn reload(&self, trigger: Trigger) {
        let current = self.current();
        let next =
            Generation::load(&self.config, self.http_port, current.id + 1).and_then(|next| {
                match current.restart_needed(&next) {
                    problems if problems.is_empty() => Ok(next),
                    problems => Err(LoadError(
                        problems
                            .into_iter()
                            .map(|p| kickstand_profiles::Diagnostic::whole_file(&self.config, p))
                            .collect(),
                    )),
                }
            });
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
                *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = ReloadStatus::Loaded;
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
                *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = ReloadStatus::Rejected {
                    errors: e.0.iter().map(ToString::to_string).collect(),
                };
                self.counters
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
