//! The commands besides `serve` and `cache`: `check` and `render` build the
//! generation `serve` would; `hosts`, `timeline` and `discovered` read the
//! host state store directly (so they work with the daemon stopped); the
//! state-changing ones (`rearm`, `adopt`) and `audit` go through the
//! running daemon over HTTPS with the operator token, so every change is
//! made — and recorded — in one place.

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use kickstand_profiles::Mac;
use kickstand_profiles::model::Appliance;
use kickstand_profiles::text::escaped;
use kickstand_render::{BootAction, UnknownAction};
use kickstand_state::{Backend, StateConfig, StateStore};

use crate::client::{self, Daemon};
use crate::generation::{BootDecision, Generation};
use crate::hosts::ago;
use crate::operator::AuditRow;
use crate::powering::Target;
use crate::tls;
use crate::views::{self, DiscoveredRow, HostRow, TimelineView};

/// Opens the host state store the appliance config names.
pub(crate) async fn open_store(appliance: &Appliance) -> anyhow::Result<StateStore> {
    let backend = match &appliance.state.postgres {
        Some(pg) => Backend::Postgres(pg.clone()),
        None => Backend::Sqlite {
            dir: appliance.state_dir.clone(),
        },
    };
    let name = appliance.state.appliance.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "kickstand".to_owned())
    });
    let mut config = StateConfig::new(backend, name);
    config.install_timeout = appliance.state.install_timeout;
    StateStore::open(config)
        .await
        .context("opening the host state store")
}

/// What a command that works beside the running daemon reads of the
/// config: the appliance settings, and the profile set when it loads. An
/// edit that breaks a profile file leaves the daemon serving its last good
/// set; these commands keep working then (they ask the daemon) and say so
/// first, so an operator fixing the edit over SSH is not blind.
pub(crate) struct CommandConfig {
    pub(crate) appliance: Appliance,
    /// `None` while the profile set does not load.
    pub(crate) generation: Option<Generation>,
}

impl CommandConfig {
    /// Loads what a command needs, or prints why it cannot run.
    pub(crate) fn load(config: &Path) -> Option<CommandConfig> {
        let broken = match Generation::load(config, crate::Ports::default(), 1) {
            Ok(generation) => {
                return Some(CommandConfig {
                    appliance: generation.appliance().clone(),
                    generation: Some(generation),
                });
            }
            Err(e) => e,
        };
        crate::report(&broken);
        let Ok(appliance) = kickstand_profiles::load_appliance(config) else {
            eprintln!(
                "kickstand: {} problem(s); nothing was changed",
                broken.0.len()
            );
            return None;
        };
        let serving = running_view::<serde_json::Value>(&appliance, "/api/status")
            .and_then(|status| status["profiles"]["generation"].as_u64());
        match serving {
            Some(n) => eprintln!(
                "kickstand: the profiles above are broken; the daemon is serving generation {n}, its last good set, and what follows is from it\n"
            ),
            None => eprintln!(
                "kickstand: the profiles above are broken and the daemon is not answering; what follows is from the state database\n"
            ),
        }
        Some(CommandConfig {
            appliance,
            generation: None,
        })
    }

    /// The profile set, for what only it can tell.
    fn profiles(&self) -> anyhow::Result<&Generation> {
        self.generation.as_ref().context(
            "the profiles do not load (above), and the daemon that serves the last good set is not answering",
        )
    }

    /// A MAC, or the hostname of a host profile (the running daemon's,
    /// while the profile files are broken).
    fn resolve(&self, who: &str) -> anyhow::Result<Mac> {
        if let Ok(mac) = who.parse::<Mac>() {
            return Ok(mac);
        }
        self.host_list()?
            .into_iter()
            .find(|(_, hostname, _)| hostname == who)
            .map(|(mac, ..)| mac)
            .with_context(|| format!("`{who}` is neither a MAC nor the hostname of a host profile"))
    }

    /// Every host profile's MAC, hostname and groups: the profile set's,
    /// or the running daemon's while the profile files are broken.
    fn host_list(&self) -> anyhow::Result<Vec<(Mac, String, Vec<String>)>> {
        Ok(match &self.generation {
            Some(generation) => generation
                .snapshot()
                .hosts
                .values()
                .map(|h| (h.mac, h.hostname.clone(), h.groups.clone()))
                .collect(),
            None => running_view::<Vec<HostRow>>(&self.appliance, "/api/hosts")
                .context("the profiles do not load (above), and the daemon is not answering")?
                .into_iter()
                .filter_map(|h| Some((h.mac.parse().ok()?, h.hostname, h.groups)))
                .collect(),
        })
    }

    /// The hosts `names` say — MACs, hostnames or groups (each member, by
    /// hostname) — each once, in the order named.
    pub(crate) fn resolve_hosts(&self, names: &[String]) -> anyhow::Result<Vec<Target>> {
        let hosts = self.host_list()?;
        let mut out: Vec<Target> = Vec::new();
        for name in names {
            let mac = name.parse::<Mac>().ok();
            let mut named: Vec<&(Mac, String, Vec<String>)> = hosts
                .iter()
                .filter(|(m, hostname, groups)| {
                    Some(*m) == mac || hostname == name || groups.contains(name)
                })
                .collect();
            if named.is_empty() {
                anyhow::bail!("`{name}` is not a MAC, hostname or group of a host profile");
            }
            named.sort_by(|a, b| a.1.cmp(&b.1));
            for (mac, hostname, _) in named {
                if !out.iter().any(|t| t.mac == *mac) {
                    out.push(Target {
                        mac: *mac,
                        hostname: hostname.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The exit status of a command that acted on several targets: failure if
/// any failed.
pub(crate) fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn check(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(generation) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let s = generation.snapshot();
    outln!(
        "ok: {} file(s), {} OS, {} host(s), {} template(s); every kickstart, iPXE script and GRUB config rendered",
        s.files.len(),
        s.oses.len(),
        s.hosts.len(),
        s.templates.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Which file `render` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendered {
    Kickstart,
    Ipxe,
    Grub,
}

/// What `mac` would be served. Tokens show as `<build-token>`: making a
/// real one is a change of state this command does not make.
pub(crate) fn render(
    config: &Path,
    mac: Mac,
    what: Rendered,
    ipv6: bool,
) -> anyhow::Result<ExitCode> {
    let Some(generation) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    // Each client is told the address of the family it came in on: the
    // appliance's own address of that family stands for such a client.
    let address = generation.appliance().server.address;
    let client = match address.v6() {
        Some(v6) if ipv6 => IpAddr::V6(v6),
        None if ipv6 => anyhow::bail!("--ipv6: server.address has no IPv6 address"),
        _ => address.primary(),
    };
    let site = generation.site.to(client);
    const TOKEN: &str = "<build-token>";
    let decision = || -> anyhow::Result<BootDecision> {
        let phase = runtime()?.block_on(async {
            let store = open_store(generation.appliance()).await?;
            anyhow::Ok(store.phase(mac))
        })?;
        Ok(generation.boot_for(mac, phase))
    };
    let out = match what {
        Rendered::Kickstart => site.kickstart(&mac, TOKEN),
        Rendered::Ipxe => match decision()? {
            BootDecision::Install => site.ipxe(&mac, BootAction::Install, TOKEN),
            BootDecision::LocalDisk => site.ipxe(&mac, BootAction::LocalDisk, ""),
            BootDecision::UnknownLocalBoot => site.unknown_ipxe(&mac, UnknownAction::LocalDisk),
            BootDecision::Discover => site.unknown_ipxe(&mac, UnknownAction::Discover),
            BootDecision::Ignore => site.ipxe(&mac, BootAction::Install, TOKEN),
        },
        // A machine without a profile never gets GRUB from ProxyDHCP; the
        // generic config it would read boots its disk.
        Rendered::Grub => match decision()? {
            BootDecision::Install => site.grub(&mac, BootAction::Install, TOKEN),
            BootDecision::LocalDisk => site.grub(&mac, BootAction::LocalDisk, ""),
            BootDecision::UnknownLocalBoot | BootDecision::Discover => site.grub_chain(),
            BootDecision::Ignore => site.grub(&mac, BootAction::Install, TOKEN),
        },
    };
    out!("{}", out.with_context(|| format!("rendering for {mac}"))?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn hosts(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    // The running daemon's memory is current; the database is a batch
    // behind it, and all there is with the daemon stopped.
    let rows: Vec<HostRow> = match running_view(&cli.appliance, "/api/hosts") {
        Some(rows) => rows,
        None => runtime()?.block_on(async {
            let generation = cli.profiles()?;
            let store = open_store(&cli.appliance).await?;
            anyhow::Ok(views::host_rows(generation, &store))
        })?,
    };
    outln!(
        "{:<17}  {:<16} {:<18} {:<10} {:<9} {:<14} {:<16} GROUPS",
        "MAC",
        "HOSTNAME",
        "OS",
        "PHASE",
        "POWER",
        "IN PHASE",
        "LAST EVENT"
    );
    for row in &rows {
        let in_phase = row.in_phase_secs.map_or_else(|| "-".to_owned(), ago);
        let last = row
            .last_event
            .as_ref()
            .map_or("-".to_owned(), |e| e.kind.clone());
        // As the daemon last polled the BMC: `-` without one.
        let power = row
            .power
            .as_ref()
            .map_or("-", |p| match (&p.state, &p.error) {
                (Some(state), _) => state.as_str(),
                (None, Some(_)) => "bmc-error",
                (None, None) => "unread",
            });
        outln!(
            "{}  {:<16} {:<18} {:<10} {power:<9} {in_phase:<14} {last:<16} {}",
            row.mac,
            row.hostname,
            row.os,
            row.phase.as_str(),
            row.groups.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn timeline(config: &Path, who: &str) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let mac = cli.resolve(who)?;
    let view: TimelineView =
        match running_view(&cli.appliance, &format!("/api/hosts/{mac}/timeline")) {
            Some(view) => view,
            None => runtime()?.block_on(async {
                let store = open_store(&cli.appliance).await?;
                let events = store.timeline(mac, 500).await?;
                let hostname = cli
                    .profiles()
                    .ok()
                    .and_then(|g| g.snapshot().host(&mac).map(|h| h.hostname.clone()));
                anyhow::Ok(TimelineView {
                    mac: mac.to_string(),
                    hostname,
                    events: events.iter().map(Into::into).collect(),
                    diagnosis: store.diagnose(mac, SystemTime::now()).to_string(),
                })
            })?,
        };
    outln!(
        "{} ({})",
        view.mac,
        view.hostname.as_deref().unwrap_or("no profile")
    );
    for e in &view.events {
        // A summary of repeats folded within a minute says how many.
        let kind = match e.detail.get("repeated").and_then(|n| n.as_u64()) {
            Some(n) => format!("{} ×{n}", e.kind),
            None => e.kind.clone(),
        };
        // A detail's strings came from the network; serde_json escapes
        // C0 controls but not DEL, C1 or bidi.
        outln!(
            "  {}  {:<18} {:<10} {}",
            e.time,
            kind,
            e.appliance,
            escaped(&e.detail.to_string())
        );
    }
    outln!("diagnosis: {}", escaped(&view.diagnosis));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn discovered(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    // The running daemon holds the list in memory (and writes it behind);
    // with the daemon stopped, the database has the last of it.
    let found: Vec<DiscoveredRow> = match running_view(&cli.appliance, "/api/discovered") {
        Some(rows) => rows,
        None => runtime()?.block_on(async {
            let store = open_store(&cli.appliance).await?;
            anyhow::Ok(
                store
                    .discovered()
                    .into_iter()
                    .map(DiscoveredRow::from)
                    .collect(),
            )
        })?,
    };
    outln!(
        "{:<17}  {:<22} {:<20} {:<16} {:<38} LAST SEEN",
        "MAC",
        "PRODUCT",
        "SERIAL",
        "IP",
        "UUID"
    );
    for d in &found {
        outln!(
            "{}  {:<22} {:<20} {:<16} {:<38} {}",
            d.mac,
            views::fact(&d.facts.product),
            views::fact(&d.facts.serial),
            d.ip.as_deref().unwrap_or("-"),
            views::fact(&d.facts.uuid),
            d.last_seen
        );
    }
    if let Some(d) = found.first() {
        outln!(
            "\nadopt one with: kickstand adopt {} --hostname <name> [--group <group>] [--os <os>]",
            d.mac
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn rearm(config: &Path, who: &[String]) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let daemon = Daemon::operator(&cli.appliance)?;
    let mut ok = true;
    for w in who {
        let mac = cli.resolve(w)?;
        let resp = daemon.post(&format!("/api/hosts/{mac}/rearm"), None)?;
        if resp.status().is_success() {
            outln!("{mac}: re-armed; its next network boot installs");
        } else {
            ok = false;
            eprintln!("kickstand: {mac}: {}", client::failure(resp));
        }
    }
    Ok(exit(ok))
}

/// A read-only view from the running daemon, when one answers: what it
/// holds in memory is newer than the database by up to one batch.
fn running_view<T: serde::de::DeserializeOwned>(appliance: &Appliance, path: &str) -> Option<T> {
    let mut resp = Daemon::new(appliance).get(path).ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// `kickstand discovered --forget <mac>…` or `--clear`, through the
/// running daemon (its memory holds the list).
pub(crate) fn forget_discovered(
    config: &Path,
    macs: &[Mac],
    clear: bool,
) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let daemon = Daemon::operator(&cli.appliance)?;
    let paths: Vec<String> = if clear {
        vec!["/api/discovered/clear".to_owned()]
    } else {
        macs.iter()
            .map(|mac| format!("/api/discovered/{mac}/forget"))
            .collect()
    };
    let mut ok = true;
    for path in paths {
        let mut resp = daemon.post(&path, None)?;
        if resp.status().is_success() {
            let answer: serde_json::Value =
                serde_json::from_str(&resp.body_mut().read_to_string()?)?;
            outln!("forgot {} discovered machine(s)", answer["forgotten"]);
        } else {
            ok = false;
            eprintln!("kickstand: {}", client::failure(resp));
        }
    }
    Ok(exit(ok))
}

pub(crate) fn adopt(
    config: &Path,
    mac: Mac,
    hostname: &str,
    group: Option<&str>,
    os: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let daemon = Daemon::operator(&cli.appliance)?;
    let body = serde_json::json!({"hostname": hostname, "group": group, "os": os});
    let mut resp = daemon.post(&format!("/api/discovered/{mac}/adopt"), Some(&body))?;
    if !resp.status().is_success() {
        eprintln!("kickstand: {}", client::failure(resp));
        return Ok(ExitCode::FAILURE);
    }
    let answer: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    outln!(
        "{mac} is now {hostname}: wrote {}; its next network boot installs",
        answer["file"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// `kickstand audit`: the operator actions the running daemon recorded.
pub(crate) fn audit(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(cli) = CommandConfig::load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut resp = Daemon::operator(&cli.appliance)?.get("/api/audit")?;
    if !resp.status().is_success() {
        eprintln!("kickstand: {}", client::failure(resp));
        return Ok(ExitCode::FAILURE);
    }
    let rows: Vec<AuditRow> = serde_json::from_str(&resp.body_mut().read_to_string()?)
        .context("the daemon's audit log")?;
    if rows.is_empty() {
        outln!("no operator actions recorded yet");
    }
    for r in &rows {
        outln!(
            "{}  {:<15}  token {:<8}  {:<12}  {:<17}  {}",
            r.time,
            r.peer,
            r.token_id.as_deref().unwrap_or("-"),
            r.action,
            if r.target.is_empty() { "-" } else { &r.target },
            escaped(&r.result)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kickstand fingerprint`: the HTTPS certificate's SHA-256 fingerprint.
pub(crate) fn fingerprint(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(generation) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let appliance = generation.appliance();
    let cert = tls::cert_file(appliance);
    let fingerprint = tls::fingerprint_of(&cert).with_context(|| {
        format!(
            "{} is made when `kickstand serve` first starts",
            cert.display()
        )
    })?;
    outln!("{fingerprint}");
    eprintln!(
        "SHA-256 of {}; the operator's channel is {}",
        cert.display(),
        generation.https_url()
    );
    Ok(ExitCode::SUCCESS)
}
