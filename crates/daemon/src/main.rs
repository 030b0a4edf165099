//! The `kickstand` binary: command line, config paths, socket binding, the
//! profile watcher, signals and shutdown. Protocol logic lives in the
//! library crates; this crate wires them together.
//!
//! A tour: `generation` builds everything one accepted profile set gives
//! (and `check` builds exactly that); `live` holds the generation in force,
//! swapped whole on reload, with the host state store and the repo proxy;
//! `views` is the live state as ProxyDHCP, TFTP and HTTP each see it,
//! through their own crate's trait — nothing else touches the live state;
//! `reload` watches the profiles; `serve` binds sockets, starts the
//! services on one shutdown token and drains them; `cache` is the
//! operator protocol of `kickstand cache …`.

mod boot;
mod cache;
mod generation;
mod live;
mod reload;
mod serve;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kickstand_profiles::Mac;
use kickstand_render::BootAction;
use kickstand_state::{Phase, StateStore};

use crate::generation::{BootDecision, Generation};

/// Kickstand: netboot appliance (ProxyDHCP, TFTP, kickstarts, caching repo proxy).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The appliance config; every other *.yaml in its directory is a profile.
    #[arg(
        long,
        short,
        global = true,
        env = "KICKSTAND_CONFIG",
        default_value = "profiles/kickstand.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance: ProxyDHCP, TFTP and HTTP, reloading profiles live.
    Serve,
    /// Validate the profiles and render every template for every host.
    Check,
    /// Print what a host would be served.
    Render {
        mac: Mac,
        /// The kickstart (the default).
        #[arg(long, conflicts_with = "ipxe")]
        kickstart: bool,
        /// The iPXE boot script, as the host's install state makes it.
        #[arg(long)]
        ipxe: bool,
    },
    /// List the hosts with their OS and install state.
    Hosts,
    /// Warm, inspect or verify the repo cache of the running daemon.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve => serve::run(&cli.config),
        Command::Check => check(&cli.config),
        Command::Render { mac, ipxe, .. } => render(&cli.config, mac, ipxe),
        Command::Hosts => hosts(&cli.config),
        Command::Cache(command) => cache::run(&cli.config, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kickstand: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KICKSTAND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald and log files get
    // plain text that grep and the tests can read.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Loads the profiles and builds their generation — exactly as `serve`
/// does — or prints every problem (with the offending lines) and returns
/// `None`.
fn load_or_report(config: &std::path::Path) -> Option<Generation> {
    match Generation::load(config, None, 1) {
        Ok(generation) => Some(generation),
        Err(e) => {
            for d in &e.0 {
                eprintln!("{d}");
                if let Some(snippet) = &d.snippet {
                    eprintln!("{snippet}");
                }
            }
            eprintln!("kickstand: {} problem(s); nothing was changed", e.0.len());
            None
        }
    }
}

fn check(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(generation) = load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let s = generation.snapshot();
    println!(
        "ok: {} file(s), {} OS, {} host(s), {} template(s); every kickstart and boot script rendered",
        s.files.len(),
        s.oses.len(),
        s.hosts.len(),
        s.templates.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn render(config: &std::path::Path, mac: Mac, ipxe: bool) -> anyhow::Result<ExitCode> {
    let Some(generation) = load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let site = &generation.site;
    let out = if ipxe {
        let states = StateStore::open(&generation.appliance().state_dir)?;
        let phase = states.get(&mac.to_string()).phase;
        match generation.boot_for(mac, phase) {
            BootDecision::Install => site.ipxe(&mac, BootAction::Install),
            BootDecision::LocalDisk => site.ipxe(&mac, BootAction::LocalDisk),
            BootDecision::UnknownLocalBoot => site.unknown_ipxe(&mac),
            BootDecision::Ignore => site.ipxe(&mac, BootAction::Install),
        }
    } else {
        site.kickstart(&mac)
    };
    print!("{}", out.with_context(|| format!("rendering for {mac}"))?);
    Ok(ExitCode::SUCCESS)
}

fn hosts(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(generation) = load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let states = StateStore::open(&generation.appliance().state_dir)?;
    println!(
        "{:<17}  {:<16} {:<18} {:<10} GROUPS",
        "MAC", "HOSTNAME", "OS", "STATE"
    );
    for (mac, host) in &generation.snapshot().hosts {
        let phase = match states.get(&mac.to_string()).phase {
            Phase::New => "new",
            Phase::Installing => "installing",
            Phase::Installed => "installed",
        };
        println!(
            "{mac}  {:<16} {:<18} {phase:<10} {}",
            host.hostname,
            host.os,
            host.groups.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}
