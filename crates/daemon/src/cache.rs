//! `kickstand cache …`: the operator protocol between the CLI and the
//! running daemon (so warming shares the daemon's cache, its coalescing and
//! its upstream connections). The daemon streams [`CacheEvent`]s as JSON
//! lines; the CLI decodes the same type. A failure is a field of an event,
//! never a prefix of a text line.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use futures_util::stream::BoxStream;
use kickstand_profiles::Snapshot;
use kickstand_repo::{
    RepoProxy, VerifyReport, WarmEvent, WarmOutcome, WarmProgress, WarmReport, WarmTarget,
};
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
    /// What a warm will fetch (bytes as far as the metadata tells).
    Planned {
        target: String,
        files: usize,
        bytes: u64,
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

/// What `cache warm <target>` covers.
#[derive(Debug)]
pub(crate) enum WarmPlan {
    /// Every repo of an OS (its tree with `.treeinfo` and images), or one
    /// `<mirror>/<path>` repo.
    Targets(Vec<WarmTarget>),
    /// What the last completed install of `os` by `client` pulled.
    Like { os: String, client: String },
}

/// The path segment after an OS name that asks for `--like <host>`:
/// `/api/cache/warm/<os>/like/<host>`. An OS name never holds a `/`, so
/// this cannot be mistaken for a `<mirror>/<path>` target of that OS.
const LIKE: &str = "/like/";

/// Reads a warm target: an OS, `<os>/like/<host>` (a MAC or hostname of a
/// host profile), or `<mirror>/<path>`.
/// A stream of cache events as the JSON lines the CLI reads.
pub(crate) fn lines(stream: BoxStream<'static, CacheEvent>) -> kickstand_http::Reply {
    use futures_util::StreamExt as _;
    kickstand_http::Reply::JsonLines(
        stream
            .map(|event| serde_json::to_value(event).unwrap_or_default())
            .boxed(),
    )
}

pub(crate) fn warm_plan(snapshot: &Snapshot, target: &str) -> Result<WarmPlan, String> {
    if let Some((os, who)) = target.split_once(LIKE)
        && snapshot.oses.contains_key(os)
    {
        let mac = who
            .parse::<kickstand_profiles::Mac>()
            .ok()
            .or_else(|| {
                snapshot
                    .hosts
                    .values()
                    .find(|h| h.hostname == who)
                    .map(|h| h.mac)
            })
            .ok_or_else(|| {
                format!("`{who}` is neither a MAC nor the hostname of a host profile")
            })?;
        return Ok(WarmPlan::Like {
            os: os.to_string(),
            client: mac.to_string(),
        });
    }
    if let Some(os) = snapshot.oses.get(target) {
        let mut targets = vec![WarmTarget::tree(&os.mirror, &os.tree)];
        targets.extend(os.repos.iter().map(|r| WarmTarget::new(&r.mirror, &r.path)));
        return Ok(WarmPlan::Targets(targets));
    }
    match target.split_once('/') {
        Some((mirror, path)) if snapshot.appliance.mirrors.contains_key(mirror) => {
            Ok(WarmPlan::Targets(vec![WarmTarget::new(mirror, path)]))
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
    plan: WarmPlan,
    tasks: &TaskTracker,
) -> BoxStream<'static, CacheEvent> {
    stream(tasks, move |tx| async move {
        let send = |event| drop(tx.send(event));
        let progress = |target: &str| {
            let target = target.to_string();
            let tx = tx.clone();
            move |p: WarmProgress| {
                let event = match p {
                    WarmProgress::Planned { files, bytes } => CacheEvent::Planned {
                        target: target.clone(),
                        files,
                        bytes,
                    },
                    WarmProgress::File(ev) => CacheEvent::File(ev),
                    _ => return,
                };
                let _ = tx.send(event);
            }
        };
        match plan {
            WarmPlan::Targets(targets) => {
                for t in targets {
                    let name = format!("{}/{}", t.mirror, t.repo_path);
                    send(CacheEvent::Warming {
                        target: name.clone(),
                    });
                    send(match repo.warm(&t, progress(&name)).await {
                        Ok(report) => CacheEvent::Warmed {
                            target: name,
                            report,
                        },
                        Err(e) => CacheEvent::Failed {
                            target: Some(name),
                            message: e.to_string(),
                        },
                    });
                }
            }
            WarmPlan::Like { os, client } => {
                let name = format!("{os} like {client}");
                send(CacheEvent::Warming {
                    target: name.clone(),
                });
                let result = match repo.learned_install(&os, &client) {
                    Ok(files) => repo.warm_files(&files, 4, progress(&name)).await,
                    Err(e) => Err(e),
                };
                send(match result {
                    Ok(report) => CacheEvent::Warmed {
                        target: name,
                        report,
                    },
                    Err(e) => CacheEvent::Failed {
                        target: Some(name),
                        message: e.to_string(),
                    },
                });
            }
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
    /// Download an OS (every repo it names: all repodata, every package,
    /// and its tree's `.treeinfo` and images) or one repo
    /// (`<mirror>/<path>`) into the cache, each file checked against its
    /// metadata's checksum, so a rack can install with the mirror and the
    /// office proxy unreachable.
    Warm {
        target: String,
        /// Only what the last completed install of the OS by this host (a
        /// MAC or hostname) pulled through the appliance: enough for a rack
        /// of the same install, without all of AppStream.
        #[arg(long, value_name = "HOST")]
        like: Option<String>,
    },
    /// Cache usage and counters of the running daemon.
    Stats,
    /// Check every cached package against the sha256 its repodata gives;
    /// corrupt files are dropped so they are fetched again.
    Verify,
}

pub(crate) fn run(config: &Path, command: &CacheCommand) -> anyhow::Result<ExitCode> {
    let Some(cli) = crate::commands::CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let appliance = &cli.appliance;
    let mut resp = match command {
        CacheCommand::Stats => Daemon::new(appliance).get("/api/cache/stats")?,
        CacheCommand::Warm { target, like } => {
            let path = match like {
                Some(host) => format!("/api/cache/warm/{target}{LIKE}{host}"),
                None => format!("/api/cache/warm/{target}"),
            };
            Daemon::operator(appliance)?.post(&path, None)?
        }
        CacheCommand::Verify => Daemon::operator(appliance)?.post("/api/cache/verify", None)?,
    };
    if !resp.status().is_success() {
        eprintln!("kickstand: {}", client::failure(resp));
        return Ok(ExitCode::FAILURE);
    }
    if let CacheCommand::Stats = command {
        out!("{}", resp.body_mut().read_to_string()?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut printer = Printer::new();
    for line in std::io::BufReader::new(resp.body_mut().as_reader()).lines() {
        let line = line.context("reading the daemon's answer")?;
        let event: CacheEvent = serde_json::from_str(&line)
            .with_context(|| format!("the daemon sent a line this CLI cannot read: {line}"))?;
        printer.show(&event);
        if let Some(e) = printer.gone.take() {
            return Err(crate::StdoutGone(e).into());
        }
    }
    Ok(if printer.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shows events: a progress bar on a terminal (files, bytes, rate, ETA),
/// plain lines otherwise.
struct Printer {
    bar: indicatif::ProgressBar,
    failed: bool,
    /// Why standard output could not be written.
    gone: Option<std::io::Error>,
}

impl Printer {
    fn new() -> Printer {
        let bar = indicatif::ProgressBar::hidden();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            let style = indicatif::ProgressStyle::with_template(
                "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
        }
        Printer {
            bar,
            failed: false,
            gone: None,
        }
    }

    /// Prints a line, unless an earlier one could not be: then the
    /// reader is gone and [`Printer::gone`] says so.
    fn line(&mut self, text: String) {
        if self.gone.is_none() {
            let written = self
                .bar
                .suspend(|| writeln!(std::io::stdout().lock(), "{text}"));
            self.gone = written.err();
        }
    }

    fn show(&mut self, event: &CacheEvent) {
        match event {
            CacheEvent::Warming { target } => self.line(format!("warming {target}")),
            CacheEvent::Planned {
                target,
                files,
                bytes,
            } => {
                self.bar.reset();
                self.bar.set_length(*bytes);
                self.line(format!(
                    "{target}: {files} file(s), {} MiB or more",
                    bytes >> 20
                ));
            }
            CacheEvent::File(ev) => {
                // Images have no size in the metadata: the total grows.
                if ev.bytes_done > self.bar.length().unwrap_or(0) {
                    self.bar.set_length(ev.bytes_done);
                }
                self.bar.set_position(ev.bytes_done);
                self.bar
                    .set_message(format!("{}/{} files", ev.done, ev.total));
                if let WarmOutcome::Failed(why) = &ev.outcome {
                    self.line(format!("FAILED {}: {why}", ev.path));
                } else if self.bar.is_hidden() && (ev.done == ev.total || ev.done % 100 == 0) {
                    self.line(format!(
                        "{}/{} files, {} MiB: {}",
                        ev.done,
                        ev.total,
                        ev.bytes_done >> 20,
                        ev.path
                    ));
                }
            }
            CacheEvent::Warmed { target, report } => {
                self.failed |= !report.failed.is_empty();
                self.line(format!(
                    "done {target}: {} file(s) ({} package(s)), {} fetched ({} MiB), {} already cached, {} failed",
                    report.files,
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
