//! One LAN host cannot take the HTTP front's file descriptors: connections
//! over the per-address cap are closed at once, another address is still
//! served, the daemon's descriptor count stays bounded, and the refusals
//! are counted and logged once. All on loopback (127.0.0.0/8 is one
//! interface, so 127.0.0.2 and .3 are other "hosts").

mod support;

use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{Bed, Daemon};

fn daemon_addr(d: &Daemon) -> SocketAddr {
    d.base
        .trim_start_matches("http://")
        .parse()
        .expect("daemon address")
}

/// A connection from `source` that sends nothing.
fn idle_connection(source: IpAddr, to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

/// How many of `conns` the daemon still holds open: a refused one reads
/// end-of-file (or a reset) at once.
fn still_open(conns: &mut [TcpStream]) -> usize {
    // Give the accept loop a moment to reach every connection.
    std::thread::sleep(Duration::from_millis(500));
    conns
        .iter_mut()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut b = [0u8; 1];
            match (&**c).read(&mut b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            }
        })
        .count()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count()
}

fn metric(d: &Daemon, name: &str) -> u64 {
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Waits until the daemon holds `want` connections besides the one asking.
fn wait_open(d: &Daemon, from: IpAddr, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = d.request_from(from, "GET", "/metrics");
        let open: Option<u64> = text.lines().find_map(|l| {
            l.strip_prefix("kickstand_http_connections_open")?
                .trim()
                .parse()
                .ok()
        });
        if open == Some(want + 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "open connections stay at {open:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_address_cannot_take_every_connection() {
    let bed = Bed::new();
    bed.edit(
        "profiles/kickstand.yaml",
        "syslog_port: 0",
        "syslog_port: 0\n  max_connections_per_client: 20\n  max_connections: 30",
    );
    let d = Daemon::start(&bed.config());
    let to = daemon_addr(&d);
    let baseline = fd_count(d.pid());
    let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
        Ipv4Addr::new(127, 0, 0, 1).into(),
        Ipv4Addr::new(127, 0, 0, 2).into(),
        Ipv4Addr::new(127, 0, 0, 3).into(),
    );

    // One host opens its cap and four times more.
    let mut from_a: Vec<TcpStream> = (0..100).map(|_| idle_connection(a, to)).collect();
    assert_eq!(still_open(&mut from_a), 20, "the per-address cap holds");
    let fds = fd_count(d.pid());
    assert!(
        fds <= baseline + 20 + 4,
        "the daemon holds {fds} descriptors (baseline {baseline}): refused connections must be closed"
    );

    // Another host is still served.
    let started = Instant::now();
    let (status, body) = d.request_from(b, "GET", "/status");
    eprintln!(
        "127.0.0.2 served in {:?} beside 100 connections from 127.0.0.1",
        started.elapsed()
    );
    assert_eq!(status, 200, "{body}");

    // The total cap: 20 from a, 10 more from b fill it; c is turned away
    // until a lets go.
    // Once the daemon has closed the /status connection.
    wait_open(&d, c, 20);
    let mut from_b: Vec<TcpStream> = (0..10).map(|_| idle_connection(b, to)).collect();
    assert_eq!(still_open(&mut from_b), 10);
    let mut from_c = vec![idle_connection(c, to)];
    assert_eq!(still_open(&mut from_c), 0, "the total cap holds");
    drop(from_a);
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = d.request_from(c, "GET", "/status");
    assert_eq!(status, 200, "served once places were freed");

    assert!(
        metric(
            &d,
            "kickstand_http_connections_refused_total{cap=\"per-client\"}"
        ) >= 80
    );
    assert!(
        metric(
            &d,
            "kickstand_http_connections_refused_total{cap=\"total\"}"
        ) >= 1
    );
    let log = d.log();
    assert_eq!(
        log.matches("too many connections from one address").count(),
        1,
        "logged once per address per minute, not per connection:\n{log}"
    );
}

/// A flood of the heavy views (status, metrics) from one address is paced:
/// past its share it waits its turn or is told 429 with a Retry-After, and
/// another address's boot script is served all the while.
#[test]
fn a_flood_of_views_from_one_address_is_paced() {
    const NODE01: &str = "52:54:00:10:00:01";
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let flooder = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    let host = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    let statuses = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..64 {
            let (daemon, statuses) = (&daemon, &statuses);
            s.spawn(move || {
                for _ in 0..3 {
                    let path = if i % 2 == 0 {
                        "/api/status"
                    } else {
                        "/metrics"
                    };
                    let (status, _) = daemon.request_from(flooder, "GET", path);
                    statuses.lock().expect("lock").push(status);
                }
            });
        }
        let (status, script) = daemon.request_from(host, "GET", &format!("/boot/{NODE01}.ipxe"));
        assert_eq!(status, 200, "another address's boot script: {script}");
    });
    let statuses = statuses.into_inner().expect("lock");
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        refused > 0,
        "192 views at once from one address were all served"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 40,
        "a burst's worth is served: {statuses:?}"
    );
    assert!(metric(&daemon, "kickstand_http_views_refused_total") >= refused as u64);
}
