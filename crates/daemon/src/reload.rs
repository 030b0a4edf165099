//! Loading the site and keeping it current: the profile and template
//! directories are watched (directories, not files: editors save by
//! rename), changes are debounced, and every reload builds a whole new
//! site. A valid one replaces the running one atomically; an invalid one is
//! logged and shown on the status page while the last good one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kickstand_http::App;
use kickstand_profiles::{LoadError, load};
use kickstand_render::Site;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Editors write a file in several steps (temp file, rename, chmod); wait
/// for this much quiet before reloading so one save is one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Loads and validates everything, renders every host. `http_port` replaces
/// the configured port when the daemon bound port 0, so rendered URLs name
/// the port actually in use.
pub(crate) fn load_site(config: &Path, http_port: Option<u16>) -> Result<Site, LoadError> {
    let mut snapshot = load(config)?;
    if let Some(port) = http_port {
        snapshot.appliance.server.http_port = port;
    }
    Site::new(snapshot)
}

/// Why the profiles are being reloaded, for the log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    FileChange,
    Signal,
}

pub(crate) fn reload(app: &App, config: &Path, http_port: Option<u16>, trigger: Trigger) {
    match load_site(config, http_port) {
        Ok(site) => {
            let old = app.site();
            if old.snapshot.appliance.server != site.snapshot.appliance.server {
                warn!(
                    "the server section changed; addresses and ports take effect at the next restart"
                );
            }
            // The repo proxy takes the new mirrors first: if it refuses them,
            // the whole new site is refused, so DHCP, scripts and the cache
            // never disagree about which profiles are in force.
            if let Some(repo) = app.repo()
                && let Err(e) =
                    repo.reconfigure(&crate::cache::repo_config(&site.snapshot.appliance))
            {
                error!(?trigger, error = %e, "profile reload rejected: mirrors or proxy unusable; the last good profiles stay in force");
                app.reject(vec![format!("{}: {e}", config.display())]);
                return;
            }
            let s = &site.snapshot;
            info!(
                ?trigger,
                hosts = s.hosts.len(),
                oses = s.oses.len(),
                files = s.files.len(),
                "profiles reloaded"
            );
            app.install(site);
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
            app.reject(e.0.iter().map(ToString::to_string).collect());
        }
    }
}

/// Watches the profile and template directories until `shutdown`, and
/// reloads on change or on a message from `signals` (SIGHUP).
pub(crate) async fn watch(
    app: Arc<App>,
    config: PathBuf,
    http_port: Option<u16>,
    mut signals: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, mut changes) = mpsc::channel::<()>(64);
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            // A full channel already holds a pending reload; dropping is fine.
            Ok(_) => drop(tx.try_send(())),
            Err(e) => warn!(error = %e, "file watcher error"),
        })?;
    let mut watched = Vec::new();
    rewatch(&mut watcher, &mut watched, &config, &app);

    loop {
        let trigger = tokio::select! {
            Some(()) = changes.recv() => Trigger::FileChange,
            Some(()) = signals.recv() => Trigger::Signal,
            () = shutdown.cancelled() => return Ok(()),
        };
        // Debounce: keep swallowing events until the tree is quiet.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
        let app2 = app.clone();
        let config2 = config.clone();
        // Loading reads files and renders every host: keep it off the
        // async workers.
        tokio::task::spawn_blocking(move || reload(&app2, &config2, http_port, trigger)).await?;
        rewatch(&mut watcher, &mut watched, &config, &app);
    }
}

/// Watches the config's directory and the current templates directory;
/// follows the templates directory if a reload moved it.
fn rewatch(watcher: &mut impl Watcher, watched: &mut Vec<PathBuf>, config: &Path, app: &App) {
    let profiles = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let wanted = vec![
        profiles,
        app.site().snapshot.appliance.templates_dir.clone(),
    ];
    if *watched == wanted {
        return;
    }
    for dir in watched.drain(..) {
        let _ = watcher.unwatch(&dir);
    }
    for dir in &wanted {
        match watcher.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => info!(dir = %dir.display(), "watching for changes"),
            Err(e) => warn!(dir = %dir.display(), error = %e, "cannot watch; SIGHUP still reloads"),
        }
    }
    *watched = wanted;
}
