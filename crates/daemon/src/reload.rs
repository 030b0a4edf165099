//! Keeping the generation current: the profile and template directories
//! are watched (directories, not files: editors save by rename), changes
//! are debounced, and every change or SIGHUP makes [`Live::reload`] build a
//! whole new generation. A valid one replaces the running one atomically;
//! an invalid one is logged and shown on the status page while the last
//! good one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::live::{Live, Trigger};

/// Editors write a file in several steps (temp file, rename, chmod); wait
/// for this much quiet before reloading so one save is one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the profile and template directories until `shutdown`, and
/// reloads on change or on a message from `signals` (SIGHUP). `watching`
/// is told once the directories are watched: the daemon says it is ready
/// only then, so no edit made after that is missed.
pub(crate) async fn watch(
    live: Arc<Live>,
    mut signals: mpsc::Receiver<()>,
    shutdown: CancellationToken,
    watching: tokio::sync::oneshot::Sender<()>,
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
    rewatch(&mut watcher, &mut watched, &live);
    let _ = watching.send(());

    loop {
        let trigger = tokio::select! {
            Some(()) = changes.recv() => Trigger::FileChange,
            Some(()) = signals.recv() => Trigger::Signal,
            () = shutdown.cancelled() => return Ok(()),
        };
        // Debounce: keep swallowing events until the tree is quiet.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
        let live2 = live.clone();
        // Loading reads files and renders every host: keep it off the
        // async workers.
        tokio::task::spawn_blocking(move || live2.reload(trigger)).await?;
        rewatch(&mut watcher, &mut watched, &live);
    }
}

/// Watches the config's directory and the current templates directory;
/// follows the templates directory if a reload moved it.
fn rewatch(watcher: &mut impl Watcher, watched: &mut Vec<PathBuf>, live: &Live) {
    let profiles = live
        .config()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let wanted = vec![profiles, live.current().appliance().templates_dir.clone()];
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
