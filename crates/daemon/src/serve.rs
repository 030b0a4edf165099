//! `kickstand serve`: binds every socket, starts the services with one
//! shutdown token, reloads on SIGHUP and file changes, drains on
//! SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kickstand_http::App;
use kickstand_profiles::model::DhcpMode;
use kickstand_repo::RepoProxy;
use kickstand_state::StateStore;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::{boot, cache, reload};

/// Runs a service to its end and logs how it ended.
async fn log_exit(name: &'static str, service: impl Future<Output = std::io::Result<()>>) {
    match service.await {
        Ok(()) => info!(service = name, "stopped"),
        Err(e) => error!(service = name, error = %e, "service failed"),
    }
}

pub(crate) fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(site) = crate::load_or_report(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, site))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: &Path, site: kickstand_render::Site) -> anyhow::Result<()> {
    let appliance = site.snapshot.appliance.clone();
    let server = &appliance.server;

    let http_addr = SocketAddr::new(server.bind, server.http_port);
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    let http_port = http.local_addr()?.port();
    // With port 0 the URLs in scripts must name the port the kernel chose.
    let port_override = (server.http_port == 0).then_some(http_port);
    let site = match port_override {
        // Re-render the snapshot already read; the files are not read again.
        Some(port) => {
            let mut snapshot = site.snapshot;
            snapshot.appliance.server.http_port = port;
            kickstand_render::Site::new(snapshot).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => site,
    };

    let states = StateStore::open(&appliance.state_dir)?;
    let repo =
        RepoProxy::open(&cache::repo_config(&appliance)).context("opening the repo cache")?;
    let app = Arc::new(App::new(site, states, Some(repo)));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    info!(addr = %http.local_addr()?, base_url = %app.site().snapshot.appliance.base_url(), "http listening");
    tasks.spawn(kickstand_http::serve(http, app.clone(), shutdown.clone()));

    boot::check_loaders(&appliance);
    let tftp = boot::bind_tftp(&appliance).await?;
    let files = Arc::new(boot::TftpFiles::new(app.clone()));
    tasks.spawn(log_exit(
        "tftp",
        kickstand_tftp::serve(tftp, files, shutdown.clone()),
    ));

    if appliance.dhcp.mode != DhcpMode::Off {
        let sockets = boot::bind_dhcp(&appliance)?;
        let leases = boot::leases(&appliance)?;
        let view = Arc::new(boot::dhcp_view(app.clone()));
        tasks.spawn(log_exit(
            "dhcp",
            kickstand_dhcp::serve(sockets, view, leases, shutdown.clone()),
        ));
    }

    let (hup_tx, hup_rx) = mpsc::channel(1);
    tasks.spawn({
        let (app, config, shutdown) = (app.clone(), config.to_path_buf(), shutdown.clone());
        async move {
            if let Err(e) = reload::watch(app, config, port_override, hup_rx, shutdown).await {
                error!(error = %e, "profile watcher stopped");
            }
        }
    });
    tasks.close();

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
    tasks.wait().await;
    info!("stopped");
    Ok(())
}
