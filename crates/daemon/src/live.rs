//! The generation in force and how it is replaced: swapped whole on every
//! accepted reload, one reload at a time. Every packet and request takes
//! one generation at its start ([`Live::current`]) and passes it down, so
//! it sees one profile set from start to end; the parts of the daemon that
//! answer (booting, installs, views, operator) each hold this and only
//! what else they need.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use kickstand_profiles::{Draft, LoadError};
use kickstand_repo::RepoProxy;
use kickstand_state::StateStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::{error, info};

use crate::generation::{Generation, Ports};
use crate::metrics::{Metrics, Named};

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

#[derive(Debug)]
pub(crate) struct Live {
    generation: ArcSwap<Generation>,
    reload: Mutex<ReloadStatus>,
    /// Held for a whole reload: the watcher, SIGHUP and an adoption may
    /// ask at once, and two reloads building generations side by side
    /// could put the older in force last.
    reloading: Mutex<()>,
    /// Reconfigured with each accepted generation.
    repo: RepoProxy,
    /// Its discovered machines that a generation gives a profile are
    /// forgotten as it comes in force.
    store: StateStore,
    reloads: Family<Named, Counter>,
    /// Where the profiles are read from, and the ports to write into URLs
    /// when the daemon bound port 0.
    config: PathBuf,
    ports: Ports,
}

impl Live {
    pub(crate) fn new(
        generation: Generation,
        repo: RepoProxy,
        store: StateStore,
        metrics: &Metrics,
        config: PathBuf,
        ports: Ports,
    ) -> Live {
        forget_profiled_discoveries(&store, &generation);
        Live {
            generation: ArcSwap::from_pointee(generation),
            reload: Mutex::default(),
            reloading: Mutex::default(),
            repo,
            store,
            reloads: metrics.reloads.clone(),
            config,
            ports,
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
        lock(&self.reload).clone()
    }

    /// Reads the profiles again and, if they are valid and change nothing
    /// that needs a restart, puts the new generation in force. Otherwise the
    /// current one stays and the errors are logged and kept for the status
    /// page. Blocking (reads files, renders every host); one at a time.
    pub(crate) fn reload(&self, trigger: Trigger) -> ReloadStatus {
        let _one_at_a_time = lock(&self.reloading);
        let status = match self.next(None) {
            Ok(next) => {
                self.put_in_force(next, trigger);
                ReloadStatus::Loaded
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
                Metrics::named(&self.reloads, "rejected");
                ReloadStatus::Rejected {
                    errors: e.0.iter().map(ToString::to_string).collect(),
                }
            }
        };
        *lock(&self.reload) = status.clone();
        status
    }

    /// Writes a new profile file and puts the profile set with it in force
    /// — only if that set is valid: it is checked as a reload would check
    /// it (the same load, the same generation) before the file exists, so
    /// a file that would break the set is never written. Written aside and
    /// renamed into place, so the watcher never reads half of it; an
    /// existing file is never replaced. Blocking, like [`Live::reload`],
    /// and one at a time with it.
    pub(crate) fn add_profile(&self, path: &Path, text: &str) -> Result<(), NotAdded> {
        let _one_at_a_time = lock(&self.reloading);
        let next = self
            .next(Some(Draft { path, text }))
            .map_err(NotAdded::Invalid)?;
        write_new(path, text).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => NotAdded::Exists,
            _ => NotAdded::Write(e),
        })?;
        self.put_in_force(next, Trigger::Adopt);
        *lock(&self.reload) = ReloadStatus::Loaded;
        Ok(())
    }

    /// The generation the profiles on disk (with `draft` among them) make,
    /// unless they are invalid or change what only a restart applies.
    fn next(&self, draft: Option<Draft<'_>>) -> Result<Generation, LoadError> {
        let current = self.current();
        let next = Generation::load_with(&self.config, draft, self.ports, current.id + 1)?;
        match current.restart_needed(&next) {
            problems if problems.is_empty() => Ok(next),
            problems => Err(LoadError(
                problems
                    .into_iter()
                    .map(|p| kickstand_profiles::Diagnostic::whole_file(&self.config, p))
                    .collect(),
            )),
        }
    }

    fn put_in_force(&self, next: Generation, trigger: Trigger) {
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
        forget_profiled_discoveries(&self.store, &next);
        self.generation.store(Arc::new(next));
        Metrics::named(&self.reloads, "ok");
    }
}

/// A discovered machine that `generation` has a profile for (written by
/// hand, or adopted) is a host now: it leaves the discovered list, where an
/// adopt hint would offer to profile it twice.
fn forget_profiled_discoveries(store: &StateStore, generation: &Generation) {
    let snapshot = generation.snapshot();
    let forgotten = store
        .forget_discovered_profiled(|mac| snapshot.host(&mac).is_some())
        .value();
    for mac in forgotten {
        info!(%mac, "a discovered machine has a profile now; no longer listed as discovered");
    }
}

/// Why [`Live::add_profile`] wrote nothing.
#[derive(Debug)]
pub(crate) enum NotAdded {
    /// The profile set would not load with the file: every problem.
    Invalid(LoadError),
    /// A file is at its path already.
    Exists,
    Write(std::io::Error),
}

fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".adopt").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is whole before it unlocks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
