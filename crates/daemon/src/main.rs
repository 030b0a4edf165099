//! The `kickstand` binary: command line, config paths, socket binding, the
//! profile watcher, signals and shutdown. Protocol logic lives in the
//! library crates; this crate only wires them together.

mod boot;
mod cache;
mod reload;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kickstand_profiles::Mac;
use kickstand_render::Site;
use kickstand_state::{Phase, StateStore};

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

/// Loads the site or prints every problem (with the offending lines) and
/// returns `None`.
fn load_or_report(config: &std::path::Path) -> Option<Site> {
    match reload::load_site(config, None) {
        Ok(site) => Some(site),
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
    let Some(site) = load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let s = &site.snapshot;
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
    let Some(site) = load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let out = if ipxe {
        let states = StateStore::open(&site.snapshot.appliance.state_dir)?;
        site.ipxe(&mac, states.get(&mac.to_string()).phase.into())
    } else {
        site.kickstart(&mac)
    };
    print!("{}", out.with_context(|| format!("rendering for {mac}"))?);
    Ok(ExitCode::SUCCESS)
}

fn hosts(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(site) = load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let states = StateStore::open(&site.snapshot.appliance.state_dir)?;
    println!(
        "{:<17}  {:<16} {:<18} {:<10} GROUPS",
        "MAC", "HOSTNAME", "OS", "STATE"
    );
    for (mac, host) in &site.snapshot.hosts {
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
