//! Load generator and server for `tests/beds/dhcp/bench.sh`.
//!
//! `dhcp_bench serve IFACE ADDR`: Kickstand ProxyDHCP on IFACE:67 (every MAC known).
//! `dhcp_bench burst IFACE COUNT [WINDOW]`: broadcast COUNT DISCOVERs (the
//! captured OVMF one, each with its own MAC and xid), at most WINDOW
//! unanswered at a time (0: all at once), and print replies/s and latency.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kickstand_dhcp::{Context, HostBoot, HostStatus, Mac, Sockets, View, bind_dhcp_socket, serve};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const DISCOVER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ovmf-pxe-discover.hex"
));

fn discover() -> Vec<u8> {
    let hex: String = DISCOVER
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("fixture hex"))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", iface, addr] => {
            let dhcp = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 67, Some(iface))?;
            let view = View {
                context: Arc::new(Context::new(addr.parse()?, 8080)),
                hosts: Arc::new(|_: Mac| HostStatus::Netboot(HostBoot::ipxe())),
            };
            println!("READY");
            serve(
                Sockets {
                    dhcp,
                    boot_server: None,
                    client_port: None,
                },
                Arc::new(view),
                None,
                CancellationToken::new(),
            )
            .await?;
            Ok(())
        }
        ["burst", iface, count, ref rest @ ..] => {
            burst(
                iface,
                count.parse()?,
                rest.first().map_or(Ok(0), |w| w.parse())?,
            )
            .await
        }
        _ => Err("usage: dhcp_bench serve IFACE ADDR | burst IFACE COUNT [WINDOW]".into()),
    }
}

async fn burst(iface: &str, count: u32, window: usize) -> Result<(), Box<dyn std::error::Error>> {
    let sock = Arc::new(bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 68, Some(iface))?);
    let base = discover();
    let permits = Arc::new(Semaphore::new(if window == 0 {
        Semaphore::MAX_PERMITS
    } else {
        window
    }));
    let sent_at = Arc::new(std::sync::Mutex::new(HashMap::<u32, Instant>::new()));
    let start = Instant::now();
    let sender = {
        let (sock, permits, sent_at) = (sock.clone(), permits.clone(), sent_at.clone());
        tokio::spawn(async move {
            for i in 0..count {
                // Unanswered packets give their permit back after a while.
                if let Ok(p) = tokio::time::timeout(Duration::from_secs(1), permits.acquire()).await
                {
                    p.expect("semaphore open").forget();
                }
                let mut p = base.clone();
                let xid = 0x4b53_0000 | i;
                p[4..8].copy_from_slice(&xid.to_be_bytes());
                p[30..34].copy_from_slice(&i.to_be_bytes()); // distinct MAC 52:54:ii:ii:ii:ii
                p[10] |= 0x80;
                sent_at.lock().expect("lock").insert(xid, Instant::now());
                sock.send_to(&p, (Ipv4Addr::BROADCAST, 67))
                    .await
                    .expect("send");
            }
        })
    };
    let mut latencies = Vec::with_capacity(count as usize);
    let mut last = start;
    let mut buf = [0u8; 1500];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if n >= 8 => {
                let xid = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                if let Some(t) = sent_at.lock().expect("lock").remove(&xid) {
                    last = Instant::now();
                    latencies.push(last - t);
                    permits.add_permits(1);
                }
                if latencies.len() == count as usize {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break, // two quiet seconds: the rest were dropped
        }
    }
    sender.await?;
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    let secs = (last - start).as_secs_f64();
    println!(
        "sent={count} window={} replies={} elapsed_ms={:.1} replies_per_s={:.0} p50_us={} p99_us={} max_us={}",
        if window == 0 {
            "all".to_string()
        } else {
            window.to_string()
        },
        latencies.len(),
        secs * 1e3,
        latencies.len() as f64 / secs.max(1e-9),
        pct(0.50).as_micros(),
        pct(0.99).as_micros(),
        latencies.last().copied().unwrap_or_default().as_micros(),
    );
    Ok(())
}
