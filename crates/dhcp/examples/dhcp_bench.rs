//! Load generator and server for `tests/beds/dhcp/bench.sh`.
//!
//! `dhcp_bench serve IFACE ADDR`: the bare crate's ProxyDHCP on IFACE:67
//! (every MAC known, no daemon, no state): an upper bound, not Kickstand.
//! `dhcp_bench burst IFACE COUNT [WINDOW]`: broadcast COUNT DISCOVERs (the
//! captured OVMF one, each with its own MAC and xid), at most WINDOW
//! unanswered at a time (0: all at once), and print replies/s and latency.
//! DISCOVER i comes from MAC 52:54:00:00:00:00 + i (i in chaddr bytes 2..6).
//! `dhcp_bench burst6 IFACE COUNT [WINDOW]`: the same with the captured OVMF
//! PXE Solicit, multicast to ff02::1:2 on IFACE from port 546; Solicit i
//! carries a DUID-LLT of MAC 52:54:00:00:00:00 + i.
//! `dhcp_bench flood IFACE RATE SECONDS PROBE_MAC [PROBE_EVERY_MS] [TAIL_S]`:
//! broadcast RATE DISCOVERs a second for SECONDS, each from its own MAC
//! 02:00:00:00:00:00 + i (locally administered, so never a profiled host),
//! while PROBE_MAC sends one DISCOVER every PROBE_EVERY_MS (2000), the first
//! half an interval in, until TAIL_S (4) seconds after the flood; prints
//! each probe's reply latency or `unanswered` (no reply by 5 s after the
//! last probe), then a summary line.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kickstand_dhcp::{
    Context, HostBoot, HostStatus, Mac, Sockets, View, bind_dhcp_socket, serve, v6,
};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const DISCOVER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ovmf-pxe-discover.hex"
));
const SOLICIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ovmf-pxe-solicit.hex"
));

fn discover() -> Vec<u8> {
    fixture(DISCOVER)
}

fn fixture(text: &str) -> Vec<u8> {
    let hex: String = text
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
                vec![Sockets {
                    interface: None,
                    dhcp,
                    boot_server: None,
                    client_port: None,
                }],
                Arc::new(view),
                None,
                CancellationToken::new(),
            )
            .await?;
            Ok(())
        }
        ["burst", iface, count, ref rest @ ..] => {
            burst(
                dhcpv4_requests(iface)?,
                count.parse()?,
                rest.first().map_or(Ok(0), |w| w.parse())?,
            )
            .await
        }
        ["burst6", iface, count, ref rest @ ..] => {
            burst(
                dhcpv6_requests(iface)?,
                count.parse()?,
                rest.first().map_or(Ok(0), |w| w.parse())?,
            )
            .await
        }
        ["flood", iface, rate, seconds, probe, ref rest @ ..] => flood(
            iface,
            rate.parse()?,
            seconds.parse()?,
            parse_mac(probe)?,
            rest.first().map_or(Ok(2000), |v| v.parse())?,
            rest.get(1).map_or(Ok(4), |v| v.parse())?,
        ),
        _ => Err(
            "usage: dhcp_bench serve IFACE ADDR | burst IFACE COUNT [WINDOW] \
                  | burst6 IFACE COUNT [WINDOW] \
                  | flood IFACE RATE SECONDS PROBE_MAC [PROBE_EVERY_MS] [TAIL_S]"
                .into(),
        ),
    }
}

/// One family's side of a burst: the client socket, where requests go,
/// request i with the transaction id its reply carries, and the
/// transaction id of a reply (`None`: not a reply).
struct Requests {
    sock: UdpSocket,
    to: SocketAddr,
    request: Box<dyn Fn(u32) -> (u32, Vec<u8>) + Send>,
    reply_id: fn(&[u8]) -> Option<u32>,
}

/// DISCOVER i: broadcast from port 68, MAC 52:54:00:00:00:00 + i.
fn dhcpv4_requests(iface: &str) -> std::io::Result<Requests> {
    let base = discover();
    Ok(Requests {
        sock: bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 68, Some(iface))?,
        to: (Ipv4Addr::BROADCAST, 67).into(),
        request: Box::new(move |i| {
            let mut p = base.clone();
            let xid = 0x4b53_0000 | i;
            p[4..8].copy_from_slice(&xid.to_be_bytes());
            p[30..34].copy_from_slice(&i.to_be_bytes()); // distinct MAC 52:54:ii:ii:ii:ii
            p[10] |= 0x80;
            (xid, p)
        }),
        reply_id: |b| (b.len() >= 8).then(|| u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
    })
}

/// Solicit i: multicast to ff02::1:2 on `iface` from port 546 (so from
/// its link-local address, where the answer comes back), with a DUID-LLT
/// of MAC 52:54:00:00:00:00 + i.
fn dhcpv6_requests(iface: &str) -> std::io::Result<Requests> {
    let base = fixture(SOLICIT);
    let index = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    Ok(Requests {
        sock: v6::bind_dhcpv6_socket(v6::CLIENT_PORT, v6::Join::Nowhere)?,
        to: SocketAddrV6::new(v6::ALL_SERVERS, 547, 0, index).into(),
        request: Box::new(move |i| {
            let mut p = base.clone();
            // A 24-bit transaction id after the message type; i < 2^16.
            let xid = 0x4b_0000 | i;
            p[1..4].copy_from_slice(&xid.to_be_bytes()[1..]);
            // Option 1 (at 4) holds the DUID-LLT: type, hardware type,
            // time, then the MAC at 16..22.
            p[18..22].copy_from_slice(&i.to_be_bytes()); // MAC 52:54:ii:ii:ii:ii
            (xid, p)
        }),
        // Advertise or Reply; our own multicast Solicits do not come back.
        reply_id: |b| {
            (b.len() >= 4 && matches!(b[0], 2 | 7))
                .then(|| u32::from_be_bytes([0, b[1], b[2], b[3]]))
        },
    })
}

async fn burst(
    requests: Requests,
    count: u32,
    window: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let Requests {
        sock,
        to,
        request,
        reply_id,
    } = requests;
    let sock = Arc::new(sock);
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
                let (xid, p) = request(i);
                sent_at.lock().expect("lock").insert(xid, Instant::now());
                sock.send_to(&p, to).await.expect("send");
            }
        })
    };
    let mut latencies = Vec::with_capacity(count as usize);
    let mut last = start;
    let mut buf = [0u8; 1500];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let Some(xid) = reply_id(&buf[..n]) else {
                    continue;
                };
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

fn parse_mac(text: &str) -> Result<[u8; 6], Box<dyn std::error::Error>> {
    let bytes = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<Vec<u8>, _>>()?;
    bytes
        .try_into()
        .map_err(|_| format!("not a MAC: {text}").into())
}

/// xids of flood packets have the top bit set; probes' never do.
const FLOOD_XID: u32 = 0x8000_0000;
const PROBE_XID: u32 = 0x5052_0000;

/// The flood, the probe and the receiver each get a thread of their own, so
/// the probe's latency is not the generator's own queueing.
fn flood(
    iface: &str,
    rate: u64,
    seconds: u64,
    probe_mac: [u8; 6],
    probe_every_ms: u64,
    tail_s: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let sock = bind_dhcp_socket(Ipv4Addr::UNSPECIFIED, 68, Some(iface))?.into_std()?;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let base = discover();
    let packet = move |xid: u32, mac: [u8; 6]| {
        let mut p = base.clone();
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[28..34].copy_from_slice(&mac);
        p[10] |= 0x80;
        p
    };
    let start = Instant::now();
    let flood_for = Duration::from_secs(seconds);
    let probe_until = flood_for + Duration::from_secs(tail_s);
    // Long enough for a late reply to the last probe to count.
    let listen_until = probe_until + Duration::from_secs(5);
    let done = Arc::new(AtomicBool::new(false));
    let flood_replies = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(std::sync::Mutex::new(
        Vec::<(Duration, Option<Duration>)>::new(),
    ));

    let receiver = {
        let (sock, done, flood_replies, probes) = (
            sock.try_clone()?,
            done.clone(),
            flood_replies.clone(),
            probes.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while start.elapsed() < listen_until && !done.load(Ordering::Relaxed) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue; // the read timeout
                };
                let at = start.elapsed();
                if n < 8 || buf[0] != 2 {
                    continue; // not a BOOTREPLY (our own broadcasts come back)
                }
                let xid = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                if xid & FLOOD_XID != 0 {
                    flood_replies.fetch_add(1, Ordering::Relaxed);
                } else if let Some(n) = xid.checked_sub(PROBE_XID) {
                    let mut probes = probes.lock().expect("lock");
                    if let Some((sent, got @ None)) = probes.get_mut(n as usize) {
                        *got = Some(at - *sent);
                    }
                }
            }
        })
    };
    let prober = {
        let (sock, probes, packet) = (sock.try_clone()?, probes.clone(), packet.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let every = Duration::from_millis(probe_every_ms.max(1));
            let mut next = every / 2;
            let mut n = 0;
            while next < probe_until {
                std::thread::sleep(next.saturating_sub(start.elapsed()));
                let p = packet(PROBE_XID + n, probe_mac);
                probes.lock().expect("lock").push((start.elapsed(), None));
                sock.send_to(&p, (Ipv4Addr::BROADCAST, 67))?;
                n += 1;
                next += every;
            }
            Ok(())
        })
    };
    // The flood, on this thread: keeps up with RATE by the clock, in
    // small batches.
    let (mut sent, mut errors) = (0u64, 0u64);
    while start.elapsed() < flood_for {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(rate * seconds) {
            let mut mac = [0x02, 0, 0, 0, 0, 0];
            mac[2..6].copy_from_slice(&(sent as u32).to_be_bytes());
            let p = packet(FLOOD_XID | sent as u32, mac);
            if sock.send_to(&p, (Ipv4Addr::BROADCAST, 67)).is_err() {
                errors += 1;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let flood_secs = start.elapsed().as_secs_f64();
    prober.join().map_err(|_| "probe thread panicked")??;
    // Stop listening once every probe is answered, or at the deadline.
    while start.elapsed() < listen_until {
        if probes
            .lock()
            .expect("lock")
            .iter()
            .all(|(_, got)| got.is_some())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    receiver.join().map_err(|_| "receiver thread panicked")?;

    let probes = probes.lock().expect("lock").clone();
    for (n, (sent_at, got)) in probes.iter().enumerate() {
        let phase = if *sent_at < flood_for {
            "flood"
        } else {
            "after"
        };
        match got {
            Some(l) => println!(
                "probe n={} at_s={:.1} during={phase} latency_ms={:.1}",
                n + 1,
                sent_at.as_secs_f64(),
                l.as_secs_f64() * 1e3
            ),
            None => println!(
                "probe n={} at_s={:.1} during={phase} unanswered",
                n + 1,
                sent_at.as_secs_f64()
            ),
        }
    }
    println!(
        "flood rate={rate} seconds={seconds} sent={sent} send_errors={errors} sent_per_s={:.0} flood_replies={} probes={} answered={}",
        sent as f64 / flood_secs,
        flood_replies.load(Ordering::Relaxed),
        probes.len(),
        probes.iter().filter(|(_, got)| got.is_some()).count(),
    );
    Ok(())
}
