//! `kickstand cache …`: the operator protocol between the CLI and the
//! running daemon (so warming shares the daemon's cache, its coalescing and
//! its upstream connections). The daemon streams [`CacheEvent`]s as JSON
//! lines; the CLI decodes the same type. A failure is a field of an event,
//! never a prefix of a text line.

use std::io::BufRead as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use futures_util::stream::BoxStream;
use kickstand_profiles::Snapshot;
use kickstand_repo::{RepoProxy, VerifyReport, WarmEvent, WarmOutcome, WarmReport, WarmTarget};
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::client::{self, Daemon};

/// One line of a cache operation's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum CacheEvent {
    /// A repository's warm starts.
    Warming {
        target: String,
    },
    /// One file done.
    File(WarmEvent),
    /// A repository's warm ended.
    Warmed {
        target: String,
        report: WarmReport,
    },
    /// `verify` found a cached file that fails its checksum, and removed it.
    Corrupt {
        key: String,
    },
    /// `verify` could not check a repository.
    Skipped {
        repo: String,
        why: String,
    },
    Verified {
        report: VerifyReport,
    },
    /// The operation (or one target of it) failed as a whole.
    Failed {
        target: Option<String>,
        message: String,
    },
}

/// What `cache warm <target>` covers: every repo of an OS, or one
/// `<mirror>/<path>`.
pub(crate) fn warm_targets(snapshot: &Snapshot, target: &str) -> Result<Vec<WarmTarget>, String> {
    if let Some(os) = snapshot.oses.get(target) {
        let mut targets = vec![WarmTarget::new(&os.mirror, &os.tree)];
        targets.extend(os.repos.iter().map(|r| WarmTarget::new(&r.mirror, &r.path)));
        return Ok(targets);
    }
    match target.split_once('/') {
        Some((mirror, path)) if snapshot.appliance.mirrors.contains_key(mirror) => {
            Ok(vec![WarmTarget::new(mirror, path)])
        }
        _ => Err(format!(
            "`{target}` is neither an OS nor <mirror>/<path> of a configured mirror"
        )),
    }
}

/// Runs `work` on the daemon's tracker (so shutdown waits for it) and
/// streams what it sends.
fn stream<F, Fut>(tasks: &TaskTracker, work: F) -> BoxStream<'static, CacheEvent>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<CacheEvent>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tasks.spawn(work(tx));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    }))
}

pub(crate) fn warm(
    repo: RepoProxy,
    targets: Vec<WarmTarget>,
    tasks: &TaskTracker,
) -> BoxStream<'static, CacheEvent> {
    stream(tasks, move |tx| async move {
        for t in targets {
            let name = format!("{}/{}", t.mirror, t.repo_path);
            let _ = tx.send(CacheEvent::Warming {
                target: name.clone(),
            });
            let progress = |ev: &WarmEvent| drop(tx.send(CacheEvent::File(ev.clone())));
            let event = match repo.warm(&t, progress).await {
                Ok(report) => CacheEvent::Warmed {
                    target: name,
                    report,
                },
                Err(e) => CacheEvent::Failed {
                    target: Some(name),
                    message: e.to_string(),
                },
            };
            let _ = tx.send(event);
        }
    })
}

pub(crate) fn verify(repo: RepoProxy, tasks: &TaskTracker) -> BoxStream<'static, CacheEvent> {
    stream(tasks, move |tx| async move {
        let events = match repo.verify().await {
            Ok(report) => report
                .corrupt
                .iter()
                .map(|key| CacheEvent::Corrupt { key: key.clone() })
                .chain(
                    report
                        .skipped
                        .iter()
                        .map(|(repo, why)| CacheEvent::Skipped {
                            repo: repo.clone(),
                            why: why.clone(),
                        }),
                )
                .chain([CacheEvent::Verified {
                    report: report.clone(),
                }])
                .collect(),
            Err(e) => vec![CacheEvent::Failed {
                target: None,
                message: e.to_string(),
            }],
        };
        for event in events {
            let _ = tx.send(event);
        }
    })
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CacheCommand {
    /// Download every package of an OS (all its repos) or of one repo
    /// (`<mirror>/<path>`) into the cache, so a rack can install with the
    /// mirror unreachable.
    Warm { target: String },
    /// Cache usage and counters of the running daemon.
    Stats,
    /// Check every cached package against the sha256 its repodata gives;
    /// corrupt files are dropped so they are fetched again.
    Verify,
}

pub(crate) fn run(config: &Path, command: &CacheCommand) -> anyhow::Result<ExitCode> {
    let Some(generation) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let appliance = generation.appliance();
    let mut resp = match command {
        CacheCommand::Stats => Daemon::new(appliance).get("/api/cache/stats")?,
        CacheCommand::Warm { target } => {
            Daemon::operator(appliance)?.post(&format!("/api/cache/warm/{target}"), None)?
        }
        CacheCommand::Verify => Daemon::operator(appliance)?.post("/api/cache/verify", None)?,
    };
    if !resp.status().is_success() {
        eprintln!("kickstand: {}", client::failure(resp));
        return Ok(ExitCode::FAILURE);
    }
    if let CacheCommand::Stats = command {
        print!("{}", resp.body_mut().read_to_string()?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut printer = Printer::new();
    for line in std::io::BufReader::new(resp.body_mut().as_reader()).lines() {
        let line = line.context("reading the daemon's answer")?;
        let event: CacheEvent = serde_json::from_str(&line)
            .with_context(|| format!("the daemon sent a line this CLI cannot read: {line}"))?;
        printer.show(&event);
    }
    Ok(if printer.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shows events: a progress bar on a terminal, plain lines otherwise.
struct Printer {
    bar: indicatif::ProgressBar,
    failed: bool,
}

impl Printer {
    fn new() -> Printer {
        let bar = indicatif::ProgressBar::hidden();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        Printer { bar, failed: false }
    }

    fn line(&self, text: String) {
        self.bar.suspend(|| println!("{text}"));
    }

    fn show(&mut self, event: &CacheEvent) {
        match event {
            CacheEvent::Warming { target } => self.line(format!("warming {target}")),
            CacheEvent::File(ev) => {
                self.bar.set_length(ev.total as u64);
                self.bar.set_position(ev.done as u64);
                self.bar.set_message(ev.path.clone());
                if let WarmOutcome::Failed(why) = &ev.outcome {
                    self.line(format!("FAILED {}: {why}", ev.path));
                } else if self.bar.is_hidden() && (ev.done == ev.total || ev.done % 100 == 0) {
                    self.line(format!("{}/{} {}", ev.done, ev.total, ev.path));
                }
            }
            CacheEvent::Warmed { target, report } => {
                self.failed |= !report.failed.is_empty();
                self.line(format!(
                    "done {target}: {} package(s), {} fetched ({} MiB), {} already cached, {} failed",
                    report.packages,
                    report.fetched,
                    report.fetched_bytes >> 20,
                    report.already_cached,
                    report.failed.len()
                ));
            }
            CacheEvent::Corrupt { key } => {
                self.failed = true;
                self.line(format!(
                    "FAILED {key}: sha256 mismatch; removed from the cache"
                ));
            }
            CacheEvent::Skipped { repo, why } => self.line(format!("skipped {repo}: {why}")),
            CacheEvent::Verified { report } => self.line(format!(
                "verified {} file(s) in {} repo(s): {} ok, {} corrupt",
                report.checked,
                report.repos,
                report.ok,
                report.corrupt.len()
            )),
            CacheEvent::Failed { target, message } => {
                self.failed = true;
                match target {
                    Some(t) => self.line(format!("error: {t}: {message}")),
                    None => self.line(format!("error: {message}")),
                }
            }
        }
    }

    /// Whether everything succeeded.
    fn finish(self) -> bool {
        self.bar.finish_and_clear();
        !self.failed
    }
}
