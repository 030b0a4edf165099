//! The repo proxy's configuration from the appliance config, and the
//! `kickstand cache …` commands, which talk to the running daemon so that
//! warming shares its cache, its coalescing and its upstream connections.

use std::io::BufRead as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kickstand_profiles::model::Appliance;
use kickstand_repo::{ProxyConfig, RepoConfig};

pub(crate) fn repo_config(appliance: &Appliance) -> RepoConfig {
    let mut config = RepoConfig::new(&appliance.cache.dir, appliance.cache.max_bytes);
    config.mirrors = appliance.mirrors.clone();
    config.extra_ca_pem = appliance.mirror_ca_file.clone();
    config.revalidate_after = appliance.cache.revalidate_after;
    config.proxy = appliance.proxy.as_ref().map(|p| {
        let proxy = ProxyConfig::new(&p.url);
        match (&p.username, &p.password) {
            (Some(user), Some(pass)) => proxy.with_credentials(user, pass),
            (Some(user), None) => proxy.with_credentials(user, ""),
            _ => proxy,
        }
    });
    config
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

pub(crate) fn run(config: &Path, command: CacheCommand) -> anyhow::Result<ExitCode> {
    let Some(site) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let appliance = &site.snapshot.appliance;
    let host = match appliance.server.bind {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other,
    };
    let base = format!(
        "http://{}",
        std::net::SocketAddr::new(host, appliance.server.http_port)
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let (method_post, path) = match &command {
        CacheCommand::Warm { target } => (true, format!("/api/cache/warm/{target}")),
        CacheCommand::Stats => (false, "/api/cache/stats".to_owned()),
        CacheCommand::Verify => (true, "/api/cache/verify".to_owned()),
    };
    let url = format!("{base}{path}");
    let mut resp = if method_post {
        agent.post(&url).send_empty()
    } else {
        agent.get(&url).call()
    }
    .with_context(|| {
        format!("cannot reach the running daemon at {base} (is `kickstand serve` running?)")
    })?;
    let ok = resp.status().is_success();
    // The daemon streams one line per step: `progress` lines drive a bar,
    // everything else is printed as it comes.
    let mut failed = !ok;
    let bar = indicatif::ProgressBar::hidden();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    for line in std::io::BufReader::new(resp.body_mut().as_reader()).lines() {
        let line = line.context("reading the daemon's answer")?;
        if let Some((done, total, rest)) = progress(&line) {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(rest.to_owned());
            if bar.is_hidden() && (done == total || done % 100 == 0) {
                println!("{done}/{total} {rest}");
            }
            continue;
        }
        failed |= line.starts_with("error:") || line.starts_with("FAILED");
        bar.suspend(|| println!("{line}"));
    }
    bar.finish_and_clear();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `progress <done>/<total> <outcome> <path>`
fn progress(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.strip_prefix("progress ")?;
    let (counts, rest) = rest.split_once(' ')?;
    let (done, total) = counts.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?, rest))
}
