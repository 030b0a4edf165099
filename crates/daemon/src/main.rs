//! The `kickstand` binary: command line, config paths, socket binding, the
//! profile watcher, signals and shutdown. Protocol logic lives in the
//! library crates; this crate wires them together.
//!
//! A tour: `generation` builds everything one accepted profile set gives
//! (and `check` builds exactly that); `live` holds the generation in force,
//! swapped whole on reload, one reload at a time. Four parts answer, each
//! holding only what it needs and taking one generation per packet or
//! request: `booting` (ProxyDHCP's decisions, TFTP's files, boot scripts,
//! loaders and OS boot files), `installs` (kickstarts, callbacks, the repo
//! proxy, discovery reports), `views` (hosts, timelines, status page,
//! metrics) and `operator` (rearm, adopt, cache); `front` routes HTTP to
//! them, `hosts` is what they share. `reload` watches the profiles;
//! `serve` binds sockets, starts the services on one shutdown token and
//! drains them; `cache` is the operator protocol of `kickstand cache …`.

/// `print!` for a command's output that returns its error instead of
/// panicking as `print!` does when the reader went away (`kickstand hosts |
/// head -1`): the command then ends quietly ([`StdoutGone`]).
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!($($arg)*))
            .map_err($crate::StdoutGone)?
    };
}

/// `println!` as [`out!`] is `print!`.
macro_rules! outln {
    ($($arg:tt)*) => {
        out!("{}\n", format_args!($($arg)*))
    };
}

mod boot;
mod booting;
mod booting6;
mod cache;
mod client;
mod commands;
mod front;
mod generation;
mod hosts;
mod hosts_page;
mod installs;
mod live;
mod metrics;
mod operator;
mod power;
mod powering;
mod probe6;
mod reload;
mod segment;
mod serve;
mod syslog;
mod tls;
mod views;
mod wire_label;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: every DHCP answer, request
/// and event allocates a little (packets, JSON details, timeline entries)
/// on two or more threads at once, and glibc's malloc spent a sixth of the
/// daemon's time on a DHCP burst (free-list consolidation and arena locks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kickstand_profiles::Mac;

use crate::generation::{Generation, Ports};

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
    /// Validate the profiles and render every template for every host,
    /// exactly as `serve` would.
    Check,
    /// Print what a host would be served (build tokens shown as a placeholder).
    Render {
        mac: Mac,
        /// The kickstart (the default).
        #[arg(long, conflicts_with_all = ["ipxe", "grub"])]
        kickstart: bool,
        /// The iPXE boot script, as the host's install state makes it.
        #[arg(long, conflicts_with = "grub")]
        ipxe: bool,
        /// The GRUB config of the shim → GRUB chain, as the host's install
        /// state makes it.
        #[arg(long)]
        grub: bool,
        /// As a client that came in over IPv6 gets it (URLs on the
        /// appliance's IPv6 address); without it, over IPv4 where the
        /// appliance has IPv4.
        #[arg(long)]
        ipv6: bool,
    },
    /// List the hosts: OS, phase, time in phase, last event.
    Hosts,
    /// A host's timeline and where its journey stopped.
    Timeline {
        /// A MAC or a hostname.
        host: String,
    },
    /// Send installed or failed hosts back to the installer on their next
    /// network boot (needs the operator token; talks to the running daemon).
    Rearm {
        /// MACs or hostnames.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Then power cycle each through its BMC into a one-time network
        /// boot: the reinstall starts now.
        #[arg(long)]
        reboot: bool,
    },
    /// Read or change hosts' power through their BMCs (`bmc:` in their
    /// profiles): `kickstand power node07 rack1 cycle --pxe`. Needs the
    /// operator token; the running daemon makes the calls, and each lands
    /// in the audit log and on the host's timeline.
    Power {
        /// Hostnames, MACs or groups, then the action: status, on, off
        /// or cycle (`cycle` powers on a host that is off).
        #[arg(required = true, num_args = 2.., value_name = "HOST|GROUP… ACTION")]
        args: Vec<String>,
        /// Make the next boot, and only that one, a network boot (in the
        /// host's own firmware mode) before `on` or `cycle`.
        #[arg(long)]
        pxe: bool,
        /// Confirm `off` or `cycle` of an installed host (it may be
        /// running: its power is cut without a shutdown).
        #[arg(long)]
        yes: bool,
    },
    /// Reinstall hosts or whole groups through their BMCs: re-arm and power
    /// cycle each into a network boot, at most N at a time on their way to
    /// the installer (each next one when an earlier one is installing).
    /// Ctrl-C starts no more. Needs the operator token.
    Install {
        /// Groups, hostnames or MACs.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Hosts powering on and booting the installer at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
    },
    /// Machines without a profile that reported what they are
    /// (`dhcp.unknown: discover`); with `--forget` or `--clear`, drop them
    /// from the list (needs the operator token).
    Discovered {
        /// Forget these machines (MACs).
        #[arg(long, num_args = 1.., conflicts_with = "clear")]
        forget: Vec<Mac>,
        /// Forget every discovered machine.
        #[arg(long)]
        clear: bool,
    },
    /// Make a discovered machine a host: the running daemon writes a new
    /// profile file, if the profiles load with it, and puts it in force
    /// (needs the operator token).
    Adopt {
        mac: Mac,
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        os: Option<String>,
    },
    /// Operator actions, newest first: when, from which address, which
    /// token (an id, never the token), what, and how it ended (needs the
    /// operator token; asks the running daemon).
    Audit,
    /// The SHA-256 fingerprint of the HTTPS certificate: compare it with
    /// what a browser shows before you trust the page, or give it to a
    /// CLI elsewhere as KICKSTAND_FINGERPRINT.
    Fingerprint,
    /// Warm, inspect or verify the repo cache of the running daemon.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Holds a segment's address for `serve`, which starts it: removes it
    /// when `serve` stops renewing it or dies. Not for people.
    #[command(hide = true)]
    KeepAddress {
        #[arg(long)]
        interface: String,
        #[arg(long = "address", required = true)]
        addresses: Vec<std::net::IpAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _logging = init_logging();
    let config = &cli.config;
    let result = match &cli.command {
        Command::Serve => serve::run(config),
        Command::Check => commands::check(config),
        Command::Render {
            mac,
            ipxe,
            grub,
            ipv6,
            ..
        } => {
            let what = match (ipxe, grub) {
                (true, _) => commands::Rendered::Ipxe,
                (_, true) => commands::Rendered::Grub,
                _ => commands::Rendered::Kickstart,
            };
            commands::render(config, *mac, what, *ipv6)
        }
        Command::Hosts => commands::hosts(config),
        Command::Timeline { host } => commands::timeline(config, host),
        Command::Rearm {
            hosts,
            reboot: false,
        } => commands::rearm(config, hosts),
        Command::Rearm {
            hosts,
            reboot: true,
        } => powering::rearm_and_reboot(config, hosts),
        Command::Power { args, pxe, yes } => powering::power(config, args, *pxe, *yes),
        Command::Install { hosts, parallel } => {
            powering::install(config, hosts, usize::from(*parallel))
        }
        Command::Discovered { forget, clear } if *clear || !forget.is_empty() => {
            commands::forget_discovered(config, forget, *clear)
        }
        Command::Discovered { .. } => commands::discovered(config),
        Command::Adopt {
            mac,
            hostname,
            group,
            os,
        } => commands::adopt(config, *mac, hostname, group.as_deref(), os.as_deref()),
        Command::Audit => commands::audit(config),
        Command::Fingerprint => commands::fingerprint(config),
        Command::Cache(command) => cache::run(config, command),
        Command::KeepAddress {
            interface,
            addresses,
        } => {
            segment::keep_address(&segment::SegmentAddress {
                interface: interface.clone(),
                addresses: addresses.clone(),
            });
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        // Whoever read the output stopped (`| head`, `| grep -q`): as with
        // any Unix filter, nothing to say about it.
        Err(e) if e.downcast_ref::<StdoutGone>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kickstand: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writing a command's output failed: its reader went away, or standard
/// output was closed.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub(crate) struct StdoutGone(std::io::Error);

/// Log lines the logging thread could not keep up with and dropped,
/// shown in `/metrics`.
pub(crate) static LOG_DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Logs to stderr from a thread of its own. Every HTTP request is a log
/// line, and a rack fetches thousands of files a second: written by the
/// worker that served the request, each line was a write to stderr under
/// its lock, which the two workers fought over (a tenth of the time of a
/// small-file hit). The logging thread writes what has queued up through
/// a buffer, flushed whenever the queue is empty, so a quiet daemon's
/// lines appear at once and a busy one's go out in large writes; past
/// 128,000 queued lines new ones are dropped and counted rather than
/// stalling the daemon. The guard flushes what is left at exit.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KICKSTAND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let _ = LOG_DROPPED.set(writer.error_counter());
    // Colour only for a person at a terminal: journald and log files get
    // plain text that grep and the tests can read.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(escaped_fields())
        .init();
    guard
}

/// Log fields as the default formatter writes them (`name=value`, the
/// message bare), every value [escaped](kickstand_profiles::text::escaped):
/// many carry what the network sent (a TFTP client's error text, a path,
/// a fact), and a CR, LF, ESC or bidi override in one must not forge a
/// line, drive the terminal of whoever reads the log, or reorder it.
/// (The formatter's own guard escapes ESC and C1, not line breaks.)
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use kickstand_profiles::text::Escaping;
    use std::fmt::Write as _;
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() != "message" {
            write!(w, "{}=", field.name())?;
        }
        write!(Escaping(w), "{value:?}")
    })
    .delimited(" ")
}

/// Loads the profiles and builds their generation — exactly as `serve`
/// does — or prints every problem (with the offending lines) and returns
/// `None`.
fn load_or_report(config: &std::path::Path) -> Option<Generation> {
    match Generation::load(config, Ports::default(), 1) {
        Ok(generation) => Some(generation),
        Err(e) => {
            report(&e);
            eprintln!("kickstand: {} problem(s); nothing was changed", e.0.len());
            None
        }
    }
}

/// Prints every problem of a load, with the offending lines.
fn report(e: &kickstand_profiles::LoadError) {
    for d in &e.0 {
        eprintln!("{d}");
        if let Some(snippet) = &d.snippet {
            eprintln!("{snippet}");
        }
    }
}
