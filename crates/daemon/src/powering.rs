//! The CLI's power commands: `power`, `rearm --reboot` and `install`. The
//! running daemon makes every BMC call (it holds the password files, the
//! timelines and the audit log), one host a request; the CLI picks the
//! hosts, asks for several at once, and for `install` paces the rack.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kickstand_profiles::Mac;
use kickstand_state::Phase;
use serde_json::json;

use crate::client::{self, Daemon};
use crate::commands::{CommandConfig, exit};

/// Hosts `power` asks the daemon about at once (the daemon bounds its BMC
/// calls by itself too).
const AT_ONCE: usize = 8;

/// One host named on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) mac: Mac,
    pub(crate) hostname: String,
}

/// `status`, `on`, `off` or `cycle`.
pub(crate) fn parse_verb(word: &str) -> anyhow::Result<&'static str> {
    ["status", "on", "off", "cycle"]
        .into_iter()
        .find(|v| *v == word)
        .with_context(|| format!("`{word}` is not one of status, on, off, cycle (the last word of `kickstand power <host|group>… <action>`)"))
}

/// `kickstand power <host|group>… <action> [--pxe] [--yes]`.
pub(crate) fn power(
    config: &Path,
    args: &[String],
    pxe: bool,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let Some((verb, who)) = args.split_last() else {
        anyhow::bail!("name the hosts or groups, then the action: kickstand power node07 cycle");
    };
    let verb = parse_verb(verb)?;
    for_each_host(config, who, |daemon, t| {
        power_one(daemon, t, verb, pxe, yes)
    })
}

/// `kickstand rearm <host>… --reboot`: each host re-armed, then power
/// cycled with a one-time network boot (the operator asked for the
/// reinstall: no `--yes` needed).
pub(crate) fn rearm_and_reboot(config: &Path, who: &[String]) -> anyhow::Result<ExitCode> {
    for_each_host(config, who, |daemon, t| {
        reinstall(daemon, t).map(|said| format!("re-armed; {said}"))
    })
}

/// `act` on every host `who` names, [`AT_ONCE`] at a time, through the
/// running daemon as the operator: a line for each, in the order named
/// (errors on stderr); fails if any did.
fn for_each_host(
    config: &Path,
    who: &[String],
    act: impl Fn(&Daemon, &Target) -> anyhow::Result<String> + Sync,
) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let targets = cli.resolve_hosts(who)?;
    let daemon = Daemon::operator(&cli.appliance)?;
    let results = in_parallel(&targets, |t| act(&daemon, t));
    let mut ok = true;
    for (t, result) in targets.iter().zip(results) {
        match result {
            Ok(said) => outln!("{:<20} {said}", t.hostname),
            Err(e) => {
                ok = false;
                eprintln!("kickstand: {}: {e:#}", t.hostname);
            }
        }
    }
    Ok(exit(ok))
}

/// How long `install` waits for a host it powered to reach `installing`
/// before it gives up on it and frees its place.
const STALL: Duration = Duration::from_secs(20 * 60);
/// How often `install` reads the hosts' phases.
const POLL: Duration = Duration::from_secs(2);

/// `kickstand install <group|host>… [--parallel N]`: re-arm and reboot the
/// hosts in order, at most `parallel` of them on their way to the
/// installer at once — a host holds its place from its power cycle until
/// it reaches `installing` (or fails, or stalls) — so a rack powers on
/// in waves that spare its circuit and the uplink. Ctrl-C starts no more
/// and ends the command; the hosts already powered install on.
pub(crate) fn install(config: &Path, who: &[String], parallel: usize) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let targets = cli.resolve_hosts(who)?;
    let daemon = Daemon::operator(&cli.appliance)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("catching Ctrl-C")?;
    }
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} installing  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut waiting = targets.iter();
    let mut starting: Vec<(&Target, Instant)> = Vec::new();
    let mut failed = BTreeSet::new();
    let mut started = 0usize;
    loop {
        // Places free up as hosts reach the installer.
        if !starting.is_empty() {
            let phases = phases(&daemon)?;
            starting.retain(|(t, since)| {
                let phase = phases.iter().find(|(mac, _)| *mac == t.mac).map(|(_, p)| *p);
                let gone = match phase {
                    Some(Phase::Installing | Phase::Installed) => {
                        say(&bar, format!("{:<20} installing", t.hostname));
                        bar.inc(1);
                        true
                    }
                    Some(Phase::Failed) => {
                        say(&bar, format!("{:<20} failed before installing (kickstand timeline {})", t.hostname, t.hostname));
                        failed.insert(t.mac);
                        true
                    }
                    _ if since.elapsed() > STALL => {
                        say(&bar, format!("{:<20} not installing {} min after its power cycle; its place goes to the next (kickstand timeline {})", t.hostname, STALL.as_secs() / 60, t.hostname));
                        failed.insert(t.mac);
                        true
                    }
                    _ => false,
                };
                !gone
            });
        }
        while starting.len() < parallel && !stop.load(Ordering::SeqCst) {
            let Some(t) = waiting.next() else { break };
            started += 1;
            match reinstall(&daemon, t) {
                Ok(said) => {
                    say(&bar, format!("{:<20} re-armed; {said}", t.hostname));
                    starting.push((t, Instant::now()));
                }
                Err(e) => {
                    say(&bar, format!("{:<20} not started: {e:#}", t.hostname));
                    failed.insert(t.mac);
                }
            }
        }
        let names: Vec<&str> = starting.iter().map(|(t, _)| t.hostname.as_str()).collect();
        bar.set_message(format!("powering on: {}", names.join(" ")));
        // After Ctrl-C the hosts already powered go on installing by
        // themselves: nothing is left to wait for.
        if stop.load(Ordering::SeqCst) || (starting.is_empty() && waiting.len() == 0) {
            break;
        }
        std::thread::sleep(POLL);
    }
    bar.finish_and_clear();
    let left = targets.len() - started;
    outln!(
        "{} of {} hosts on their way to the installer; {} failed{}",
        started - failed.len(),
        targets.len(),
        failed.len(),
        if left > 0 {
            format!("; {left} not started (Ctrl-C)")
        } else {
            String::new()
        }
    );
    Ok(exit(failed.is_empty() && left == 0))
}

/// One line of `install`'s progress: above the bar on a terminal, a plain
/// line on standard output otherwise (a log, a pipe), where the bar is
/// hidden and would swallow it. A reader gone away is no reason to stop
/// the rack's install halfway.
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    } else {
        bar.println(line);
    }
}

/// Re-arms one host, then power cycles it into a one-time network boot.
fn reinstall(daemon: &Daemon, t: &Target) -> anyhow::Result<String> {
    let resp = daemon.post(&format!("/api/hosts/{}/rearm", t.mac), None)?;
    if !resp.status().is_success() {
        return Err(client::failure(resp));
    }
    power_one(daemon, t, "cycle", true, true)
}

/// One power request; what the daemon did, in words.
fn power_one(
    daemon: &Daemon,
    t: &Target,
    verb: &str,
    pxe: bool,
    yes: bool,
) -> anyhow::Result<String> {
    let body = json!({"pxe": pxe, "yes": yes});
    let mut resp = daemon.post(&format!("/api/hosts/{}/power/{verb}", t.mac), Some(&body))?;
    if !resp.status().is_success() {
        return Err(client::failure(resp));
    }
    let answer: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)
        .context("the daemon's answer is not JSON")?;
    let next_boot = match answer["boot_mode"].as_str() {
        Some(mode) => format!(", next boot from the network ({mode})"),
        None => String::new(),
    };
    Ok(match verb {
        "status" => format!("power {}", answer["state"].as_str().unwrap_or("unknown")),
        "on" => format!("powered on{next_boot}"),
        "off" => "powered off".to_owned(),
        _ => format!("power cycled{next_boot}"),
    })
}

/// Every host's phase, from the running daemon.
fn phases(daemon: &Daemon) -> anyhow::Result<Vec<(Mac, Phase)>> {
    let mut resp = daemon.get("/api/hosts")?;
    if !resp.status().is_success() {
        return Err(client::failure(resp));
    }
    let rows: Vec<crate::views::HostRow> = serde_json::from_str(&resp.body_mut().read_to_string()?)
        .context("the daemon's host list is not what this CLI reads")?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.mac.parse().ok()?, r.phase)))
        .collect())
}

/// `f` for every target, [`AT_ONCE`] at a time, results in their order.
fn in_parallel<T: Send>(
    targets: &[Target],
    f: impl Fn(&Target) -> anyhow::Result<T> + Sync,
) -> Vec<anyhow::Result<T>> {
    let mut results = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(AT_ONCE) {
        std::thread::scope(|s| {
            let running: Vec<_> = chunk.iter().map(|t| s.spawn(|| f(t))).collect();
            for r in running {
                results.push(
                    r.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a request panicked"))),
                );
            }
        });
    }
    results
}
