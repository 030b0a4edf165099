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
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::booting::{Booting, Discovering, Rogues};
use crate::front::HttpFront;
use crate::generation::{Generation, Ports};
use crate::installs::Installs;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::operator::Operator;
use crate::power::Power;
use crate::segment::{self, Duty, SegmentAddress};
use crate::syslog::InstallerLogs;
use crate::views::{Shared, Views};
use crate::{boot, booting6, client, commands, operator, probe6, reload, syslog, tls};

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
    let fds = raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, generation, fds))?;
    Ok(ExitCode::SUCCESS)
}

/// Descriptors kept for everything but plain HTTP connections: the state
/// database, TFTP transfers, DHCP and syslog sockets, upstream
/// connections, the operator's HTTPS connections.
const FD_HEADROOM: u64 = 1024;

/// The HTTPS listener's caps, within [`FD_HEADROOM`]: a few operators'
/// browsers and CLIs, not a rack's installers.
const HTTPS_CONNECTIONS: usize = 64;
const HTTPS_CONNECTIONS_PER_CLIENT: usize = 16;

/// Raises the soft limit on open files to the hard limit (a rack booting at
/// once opens many connections) and returns the limit in force.
fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            warn!(error = %e, soft, "could not raise the open-file limit");
            soft
        }
    }
}

/// The HTTP connection caps: the configured ones, or as many as `fds`
/// allows — each streaming client can hold a socket and a cache file.
fn http_limits(server: &kickstand_profiles::model::Server, fds: u64) -> kickstand_http::Limits {
    let fit = (fds.saturating_sub(FD_HEADROOM) / 2).max(64) as usize;
    let total = server.max_connections.unwrap_or(fit);
    if server.max_connections.is_some_and(|n| n > fit) {
        warn!(
            configured = total,
            open_file_limit = fds,
            "server.max_connections is above what the open-file limit allows; raise the limit (LimitNOFILE=)"
        );
    }
    kickstand_http::Limits::new(total, server.max_connections_per_client)
}

async fn serve(config: &Path, generation: Generation, fds: u64) -> anyhow::Result<()> {
    let appliance = generation.appliance().clone();
    let server = &appliance.server;

    let http_addr = SocketAddr::new(server.bind, server.http_port);
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    let https_addr = SocketAddr::new(server.bind, server.https_port);
    let https = TcpListener::bind(https_addr)
        .await
        .with_context(|| format!("binding HTTPS on {https_addr}"))?;
    let (syslog, syslog_tcp) = syslog::bind(SocketAddr::new(server.bind, server.syslog_port))?;
    // With port 0 the URLs in scripts and `inst.syslog=` must name the
    // ports the kernel chose.
    let ports = Ports {
        http: (server.http_port == 0).then_some(http.local_addr()?.port()),
        https: (server.https_port == 0).then_some(https.local_addr()?.port()),
        syslog: (server.syslog_port == 0).then_some(syslog.local_addr()?.port()),
    };
    let generation = if ports == Ports::default() {
        generation
    } else {
        generation
            .with_ports(ports)
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };

    let store = commands::open_store(&appliance).await?;
    let operator_token = operator::load_or_create(&appliance.state.operator_token_file)?;
    let identity = tls::load_or_create(&appliance)?;
    let fingerprint = identity.fingerprint();
    let certificate = identity.cert_file.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let duty = match &server.segment {
        None => Arc::new(Duty::alone()),
        Some(name) => {
            anyhow::ensure!(
                segment::may_hold_addresses(),
                "server.segment: the active appliance holds the segment's address, which takes CAP_NET_ADMIN (and AF_PACKET for its gratuitous ARP); on the appliance image add the drop-in README.md shows (\"Several appliances on one segment\")"
            );
            let election = store
                .election(name)
                .await
                .context("starting the segment's election")?;
            let address = SegmentAddress {
                // Validation made sure there is one.
                interface: server.interfaces.first().cloned().unwrap_or_default(),
                addresses: server.address.iter().collect(),
            };
            let (duty, keep) = segment::start(name, election, address, shutdown.clone());
            tasks.spawn(keep);
            duty
        }
    };
    let repo = RepoProxy::open(&generation.repo, generation.upstream.clone(), tasks.clone())
        .context("opening the repo cache")?;
    let mut metrics = Metrics::new();
    repo.register_metrics(&mut metrics.registry);
    metrics
        .registry
        .register_collector(Box::new(crate::metrics::StoreCollector(store.clone())));
    metrics
        .registry
        .register_collector(Box::new(crate::metrics::LogCollector));
    let connections = Arc::new(kickstand_http::ConnectionStats::default());
    connections.register_metrics(&mut metrics.registry);
    let log_counters = syslog::Counters {
        lines: metrics.installer_log_lines.clone(),
        dropped: metrics.installer_log_dropped.clone(),
    };
    let metrics = Arc::new(metrics);
    let live = Arc::new(Live::new(
        generation,
        repo.clone(),
        store.clone(),
        &metrics,
        config.to_path_buf(),
        ports,
    ));
    let logs = InstallerLogs::new(&appliance.state_dir);
    let (rogues, discovering) = (
        Arc::new(Rogues::default()),
        Arc::new(Discovering::default()),
    );
    let booting = Arc::new(Booting::new(
        live.clone(),
        store.clone(),
        repo.clone(),
        metrics.clone(),
        rogues.clone(),
        discovering.clone(),
        duty.clone(),
    ));
    let power = Arc::new(Power::new(store.clone()));
    let front = Arc::new(HttpFront {
        live: live.clone(),
        booting: booting.clone(),
        installs: Arc::new(Installs {
            store: store.clone(),
            repo: repo.clone(),
            metrics: metrics.clone(),
            discovering,
        }),
        views: Arc::new(Views {
            live: live.clone(),
            store: store.clone(),
            repo: repo.clone(),
            metrics: metrics.clone(),
            logs: logs.clone(),
            rogues,
            withholdings: booting.withholdings.clone(),
            power: power.clone(),
            duty,
            fingerprint,
            rack: Shared::default(),
            status_doc: Shared::default(),
            metrics_doc: Shared::default(),
        }),
        operator: Arc::new(Operator {
            live: live.clone(),
            store: store.clone(),
            repo,
            tasks: tasks.clone(),
            token: operator_token,
        }),
        power: power.clone(),
        metrics,
    });

    // For the CLI: where this daemon listens (the port, when it was 0).
    let address_files = [
        (client::address_file(&appliance), http.local_addr()?),
        (client::https_address_file(&appliance), https.local_addr()?),
    ];
    for (file, bound) in &address_files {
        let listening = SocketAddr::new(client::local(server.bind), bound.port());
        let written = std::fs::create_dir_all(&appliance.state_dir)
            .and_then(|()| std::fs::write(file, format!("{listening}\n")));
        if let Err(e) = written {
            warn!(file = %file.display(), error = %e, "cannot record a listening address for the CLI");
        }
    }
    info!(addr = %syslog.local_addr()?, "installer-log receiver listening (UDP and TCP)");
    let sink = syslog::Sink {
        store: store.clone(),
        logs,
        counters: log_counters,
    };
    let receiver = std::thread::Builder::new().name("syslog".into()).spawn({
        let (sink, shutdown) = (sink.clone(), shutdown.clone());
        move || syslog::receive(syslog, sink, shutdown)
    })?;
    let tcp_receiver = std::thread::Builder::new()
        .name("syslog-accept".into())
        .spawn({
            let shutdown = shutdown.clone();
            move || syslog::accept(syslog_tcp, sink, shutdown)
        })?;
    tasks.spawn(sweep(store.clone(), shutdown.clone()));
    tasks.spawn(power.poll(live.clone(), shutdown.clone()));

    info!(addr = %http.local_addr()?, base_url = %live.current().urls().base(), "http listening");
    let limits = http_limits(server, fds);
    info!(
        open_file_limit = fds,
        max_connections = limits.max_connections,
        max_per_client = limits.max_per_client,
        "http connection limits"
    );
    tasks.spawn(kickstand_http::serve_with(
        http,
        front.clone(),
        limits,
        connections.clone(),
        shutdown.clone(),
    ));
    info!(
        addr = %https.local_addr()?,
        url = %live.current().https_url(),
        %fingerprint,
        certificate = %certificate.display(),
        "https listening (the operator's channel)"
    );
    tasks.spawn(kickstand_http::serve_tls(
        https,
        acceptor,
        front,
        kickstand_http::Limits::new(HTTPS_CONNECTIONS, HTTPS_CONNECTIONS_PER_CLIENT),
        connections,
        shutdown.clone(),
    ));

    boot::check_loaders(&appliance);
    let tftp = boot::bind_tftp(&appliance).await?;
    let source: Arc<dyn kickstand_tftp::Source> = booting.clone();
    tasks.spawn(log_exit(
        "tftp",
        kickstand_tftp::serve(tftp, source, shutdown.clone()),
    ));

    // DHCPv4 needs an IPv4 address to name in its answers.
    if appliance.dhcp.mode != DhcpMode::Off && appliance.server.address.v4().is_some() {
        let sockets = boot::bind_dhcp(&appliance)?;
        let leases = boot::leases(&appliance)?;
        if let Some(socket) = boot::bind_solicitations(&appliance) {
            tasks.spawn(log_exit(
                "router advertisements",
                kickstand_dhcp::advertise::answer_solicitations(
                    socket,
                    booting.grants.clone(),
                    booting.clone(),
                    shutdown.clone(),
                ),
            ));
        }
        tasks.spawn(log_exit(
            "dhcp",
            kickstand_dhcp::serve(sockets, booting.clone(), leases, shutdown.clone()),
        ));
    }

    // DHCPv6 boot answers, where the appliance has an IPv6 address.
    if appliance.dhcp.mode != DhcpMode::Off && appliance.server.address.v6().is_some() {
        let (sockets, server_mac) = booting6::bind(&appliance)?;
        let dhcp6 = Arc::new(booting6::Dhcp6::new(booting.clone(), server_mac));
        tasks.spawn(log_exit(
            "dhcpv6",
            kickstand_dhcp::v6::serve(sockets, dhcp6, shutdown.clone()),
        ));
        // Not fatal, as DHCPv4's watching of UDP 68 is not.
        match probe6::bind(&appliance, server_mac) {
            Ok(prober) => {
                tasks.spawn(log_exit(
                    "dhcpv6 probe",
                    prober.run(booting.clone(), shutdown.clone()),
                ));
            }
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "cannot probe for other DHCPv6 servers: any that offer boot files go unnoticed"
                );
            }
        }
    }

    let (hup_tx, hup_rx) = mpsc::channel(1);
    let (watching_tx, watching) = tokio::sync::oneshot::channel();
    tasks.spawn({
        let (live, shutdown) = (live.clone(), shutdown.clone());
        async move {
            if let Err(e) = reload::watch(live, hup_rx, shutdown, watching_tx).await {
                error!(error = %e, "profile watcher stopped");
            }
        }
    });
    // Ready means an edit saved from now on is seen (a watcher that could
    // not start has said so, and SIGHUP still reloads).
    let _ = watching.await;

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
    if let Err(e) = store.close().await {
        warn!(error = %e, "could not write the last changes to the state database");
    }
    let _ = tokio::task::spawn_blocking(move || (receiver.join(), tcp_receiver.join())).await;
    for (file, _) in &address_files {
        let _ = std::fs::remove_file(file);
    }
    info!("stopped");
    Ok(())
}

/// How often overdue installs are failed, folded repeats summed up and
/// stale discovered machines forgotten (the writer prunes the timeline
/// by itself).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Fails installs that ran past `install_timeout` and does the store's
/// upkeep, until `shutdown`. All of it in memory: it never waits for disk.
async fn sweep(store: StateStore, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = SystemTime::now();
        for mac in store.fail_overdue(now) {
            warn!(%mac, "install timed out: the host is failed and held until an operator re-arms it");
        }
        store.tick(now);
    }
}
