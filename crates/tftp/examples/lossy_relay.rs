//! A seeded lossy UDP relay in front of a TFTP server, for benchmarks
//! under packet loss (the kernel here has no `netem`):
//! `lossy_relay --listen 127.0.0.1:17000 --server 127.0.0.1:69 --loss 0.05`.
//! Prints how many datagrams it relayed and dropped when interrupted.

use std::net::SocketAddr;

use clap::Parser;

#[path = "../tests/common/relay.rs"]
mod relay;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// The TFTP server's request port.
    #[arg(long)]
    server: SocketAddr,
    /// Share of datagrams dropped in each direction, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let loss = relay::Loss {
        to_server: args.loss,
        to_client: args.loss,
    };
    let relay = relay::Relay::start(args.listen, args.server, loss, args.seed).await?;
    tokio::signal::ctrl_c().await?;
    let [up, up_dropped, down, down_dropped] = relay.counts.snapshot();
    eprintln!(
        "to server: {up} datagrams, {up_dropped} dropped; to client: {down} datagrams, {down_dropped} dropped"
    );
    Ok(())
}
