//! `kickstand serve`: binds every socket, starts the services with one
//! shutdown token, reloads on SIGHUP and file changes, drains on
//! SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kickstand_profiles::model::DhcpMode;
use kickstand_repo::RepoProxy;
use kickstand_state::StateStore;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::boot;
use crate::generation::Generation;
use crate::live::Live;
use crate::reload;

/// How long downloads, warms and transfers may run on after SIGTERM.
const DRAIN: Duration = Duration::from_secs(15);

/// Runs a service to its end and logs how it ended.
async fn log_exit(name: &'static str, service: impl Future<Output = std::io::Result<()>>) {
    match service.await {
        Ok(()) => info!(service = name, "stopped"),
        Err(e) => error!(service = name, error = %e, "service failed"),
    }
}

pub(crate) fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(generation) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, generation))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: &Path, generation: Generation) -> anyhow::Result<()> {
    let appliance = generation.appliance().clone();
    let server = &appliance.server;

    let http_addr = SocketAddr::new(server.bind, server.http_port);
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    let http_port = http.local_addr()?.port();
    // With port 0 the URLs in scripts must name the port the kernel chose.
    let port_override = (server.http_port == 0).then_some(http_port);
    let generation = match port_override {
        Some(port) => generation
            .with_http_port(port)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        None => generation,
    };

    let states = StateStore::open(&appliance.state_dir)?;
    let tasks = TaskTracker::new();
    let repo = RepoProxy::open(&generation.repo, generation.upstream.clone(), tasks.clone())
        .context("opening the repo cache")?;
    let live = Arc::new(Live::new(
        generation,
        states,
        repo,
        tasks.clone(),
        config,
        port_override,
    ));
    let shutdown = CancellationToken::new();

    info!(addr = %http.local_addr()?, base_url = %live.current().urls().base(), "http listening");
    tasks.spawn(kickstand_http::serve(http, live.clone(), shutdown.clone()));

    boot::check_loaders(&appliance);
    let tftp = boot::bind_tftp(&appliance).await?;
    let source: Arc<dyn kickstand_tftp::Source> = live.clone();
    tasks.spawn(log_exit(
        "tftp",
        kickstand_tftp::serve(tftp, source, shutdown.clone()),
    ));

    if appliance.dhcp.mode != DhcpMode::Off {
        let sockets = boot::bind_dhcp(&appliance)?;
        let leases = boot::leases(&appliance)?;
        tasks.spawn(log_exit(
            "dhcp",
            kickstand_dhcp::serve(sockets, live.clone(), leases, shutdown.clone()),
        ));
    }

    let (hup_tx, hup_rx) = mpsc::channel(1);
    tasks.spawn({
        let (live, shutdown) = (live.clone(), shutdown.clone());
        async move {
            if let Err(e) = reload::watch(live, hup_rx, shutdown).await {
                error!(error = %e, "profile watcher stopped");
            }
        }
    });

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    info!("kickstand ready");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading profiles");
                let _ = hup_tx.try_send(());
            }
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); break; }
        }
    }
    shutdown.cancel();
    // Downloads and cache operations are on the tracker too: they get a
    // bounded time to finish (a download cut short is not committed).
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        warn!(
            left = tasks.len(),
            "tasks still running at the drain deadline; stopping anyway"
        );
    }
    info!("stopped");
    Ok(())
}
