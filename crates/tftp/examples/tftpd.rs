//! Standalone Kickstand TFTP server over one directory, for benchmarks and
//! manual testing: `tftpd --root DIR --listen 127.0.0.1:6969`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use kickstand_tftp::{Config, DirSource, Limits, serve_with};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Directory to serve.
    #[arg(long)]
    root: PathBuf,
    #[arg(long, default_value = "127.0.0.1:69")]
    listen: SocketAddr,
    /// Largest window granted to clients.
    #[arg(long, default_value_t = Limits::default().max_windowsize)]
    max_windowsize: u16,
    /// Runtime worker threads; 1 runs everything on the main thread.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind(args.listen).await?;
    let mut config = Config::default();
    config.limits.max_windowsize = args.max_windowsize;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let source = Arc::new(DirSource::new(args.root));
    serve_with(socket, source, config, shutdown).await?;
    Ok(())
}
