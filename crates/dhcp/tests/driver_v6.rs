//! The DHCPv6 driver with a real client on loopback: EDK2's port-4011
//! Request and a relayed Solicit answered to their sender, strangers and
//! garbage not, profiled machines first, the addresses a client takes from
//! another server reported with its MAC, shutdown.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::fixture;
use common::v6::{edit, ia_na, option, relay_forward, set};
use kickstand_dhcp::v6::{self, Context, Join, Sockets, View};
use kickstand_dhcp::{HostBoot, HostLookup, HostStatus, Mac};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const APPLIANCE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The server the captured 4011 Request names (its DUID-LL).
const SERVER_MAC: Mac = Mac([0xde, 0x16, 0xa7, 0xba, 0x23, 0x57]);

fn context() -> Arc<Context> {
    Arc::new(Context::new(APPLIANCE, 8080, SERVER_MAC))
}

/// OVMF's Request to port 4011, from the machine whose MAC ends in `last`
/// (its DUID-LLT carries the MAC), with transaction id `xid`.
fn boot_request(last: u8, xid: u8) -> Vec<u8> {
    let captured = fixture("ovmf-pxe-bootserver-request6");
    let mut duid = option(&captured, 1).unwrap();
    *duid.last_mut().unwrap() = last;
    let mut m = edit(&captured, 3, |o| set(o, 1, &duid));
    m[3] = xid;
    m
}

async fn reply_to(client: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let (n, _) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    buf[..n].to_vec()
}

fn local(socket: &UdpSocket) -> SocketAddr {
    (Ipv6Addr::LOCALHOST, socket.local_addr().unwrap().port()).into()
}

#[tokio::test]
async fn requests_and_relays_are_answered_to_their_sender_strangers_not() {
    let server = v6::bind_dhcpv6_socket(0, Join::Nowhere).unwrap();
    let boot_server = v6::bind_dhcpv6_socket(0, Join::Nowhere).unwrap();
    let (server_addr, boot_addr) = (local(&server), local(&boot_server));
    let only_02 = |mac: Mac| match mac.0[5] {
        0x02 => HostStatus::Netboot(HostBoot::ipxe()),
        _ => HostStatus::Unknown,
    };
    let view = View {
        context: context(),
        hosts: Arc::new(only_02),
    };
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(v6::serve(
        Sockets {
            server,
            boot_server: Some(boot_server),
        },
        Arc::new(view),
        shutdown.clone(),
    ));
    let client = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();

    // Datagrams on one socket are decided in order, so a reply for xid 3
    // first proves the stranger (xid 1) and the garbage got none.
    client
        .send_to(&boot_request(0x40, 1), boot_addr)
        .await
        .unwrap();
    client.send_to(&[0xde, 0xad], boot_addr).await.unwrap();
    client
        .send_to(&boot_request(0x02, 3), boot_addr)
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let reply = reply_to(&client).await;
    // EDK2 listens only once its Request has left: the answer waits.
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert_eq!(reply[0], 7, "Reply");
    assert_eq!(reply[3], 3, "to xid 3: no answer to the stranger");
    assert_eq!(
        option(&reply, 59),
        Some(b"tftp://[fd77::1]/ipxe.efi".to_vec())
    );

    // A relay gets a Relay-reply at the address and port it sent from.
    let solicit = fixture("ovmf-pxe-solicit");
    let relayed = relay_forward(0, APPLIANCE, Ipv6Addr::LOCALHOST, &[], &solicit);
    client.send_to(&relayed, server_addr).await.unwrap();
    let reply = reply_to(&client).await;
    assert_eq!(reply[0], 13, "Relay-reply");
    assert_eq!(
        option(&option(&reply, 9).unwrap(), 59).unwrap()[..7],
        *b"tftp://"
    );

    shutdown.cancel();
    timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve stops on cancel")
        .unwrap()
        .unwrap();
}

/// Every machine is answered, only one has a profile.
#[derive(Debug, Clone)]
struct OneProfiled(View, Mac);

impl HostLookup for OneProfiled {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.0.hosts.lookup(mac)
    }
}

impl v6::BootView for OneProfiled {
    fn context(&self) -> &Context {
        &self.0.context
    }

    fn profiled(&self, mac: Mac) -> bool {
        mac == self.1
    }
}

impl v6::Boot for OneProfiled {
    type View<'a> = OneProfiled;

    fn view(&self) -> OneProfiled {
        self.clone()
    }
}

/// A relayed Solicit from the machine whose MAC ends in `last` (option
/// 79), with transaction id `xid`.
fn relayed_solicit(last: u8, xid: u8) -> Vec<u8> {
    let mut solicit = fixture("ovmf-pxe-solicit");
    solicit[3] = xid;
    let mac = vec![0, 1, 0x52, 0x54, 0, 0, 6, last];
    relay_forward(0, APPLIANCE, Ipv6Addr::LOCALHOST, &[(79, mac)], &solicit)
}

/// Solicits queued behind a flood from strangers: the profiled machine's,
/// sent last, is answered first.
#[tokio::test]
async fn a_profiled_machine_is_answered_before_the_strangers_queued_ahead_of_it() {
    let server = v6::bind_dhcpv6_socket(0, Join::Nowhere).unwrap();
    let server_addr = local(&server);
    let client = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
    // The server is not running yet: these wait in its socket's buffer.
    for xid in 100..140 {
        client
            .send_to(&relayed_solicit(0x40, xid), server_addr)
            .await
            .unwrap();
    }
    client
        .send_to(&relayed_solicit(0x07, 7), server_addr)
        .await
        .unwrap();
    let everyone = |_: Mac| HostStatus::Netboot(HostBoot::ipxe());
    let profiled = Mac([0x52, 0x54, 0x00, 0x00, 0x06, 0x07]);
    let view = View {
        context: context(),
        hosts: Arc::new(everyone),
    };
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(v6::serve(
        Sockets {
            server,
            boot_server: None,
        },
        Arc::new(OneProfiled(view, profiled)),
        shutdown.clone(),
    ));
    let mut order = Vec::new();
    while order.len() < 41 {
        let relay_reply = reply_to(&client).await;
        order.push(option(&relay_reply, 9).unwrap()[3]);
    }
    // The first datagram read may be decided alone, before the batch
    // behind it is read; the profiled one comes before every other of its
    // batch.
    let at = order.iter().position(|x| *x == 7).unwrap();
    assert!(
        at <= 1,
        "the profiled machine's reply came {at}th: {order:?}"
    );
    shutdown.cancel();
    timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve stops on cancel")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn joining_on_a_missing_interface_names_it() {
    let err = v6::bind_dhcpv6_socket(0, Join::Interfaces(&["ks-missing0"])).unwrap_err();
    assert!(err.to_string().contains("ks-missing0"), "{err}");
}

/// The log as a `tracing` subscriber writes it, at info and above.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A boot client whose MAC cannot be known is said at info once per DUID,
/// however often it asks.
#[tokio::test]
async fn a_boot_client_without_a_known_mac_is_logged_once() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = v6::bind_dhcpv6_socket(0, Join::Nowhere).unwrap();
    let server_addr = local(&server);
    let everyone = |_: Mac| HostStatus::Netboot(HostBoot::ipxe());
    let view = View {
        context: context(),
        hosts: Arc::new(everyone),
    };
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(v6::serve(
        Sockets {
            server,
            boot_server: None,
        },
        Arc::new(view),
        shutdown.clone(),
    ));
    let client = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
    // A DUID-UUID from ::1, which is no EUI-64 address: twice from one
    // client, once from another.
    let uuid = fixture("ovmf-pxe-solicit-uuid");
    let mut other = option(&uuid, 1).unwrap();
    other[17] ^= 1;
    let other = edit(&uuid, 1, |o| set(o, 1, &other));
    for solicit in [&uuid, &uuid, &other] {
        client.send_to(solicit, server_addr).await.unwrap();
    }
    // Datagrams on one socket are decided in order: the answer to this
    // relayed one comes after the three were.
    let relayed = relay_forward(
        0,
        APPLIANCE,
        Ipv6Addr::LOCALHOST,
        &[],
        &fixture("ovmf-pxe-solicit"),
    );
    client.send_to(&relayed, server_addr).await.unwrap();
    assert_eq!(reply_to(&client).await[0], 13);
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("boot client not answered"))
        .collect();
    assert_eq!(said.len(), 2, "once per client:\n{text}");
    assert!(
        said[0].contains("INFO") && said[0].contains("DUID (type 4)"),
        "{text}"
    );
}

/// What the driver reported of one datagram: the client's MAC and the
/// addresses another server leased it.
type Report = (Option<Mac>, Vec<Ipv6Addr>);

/// Every decision's [`Report`], in the order made.
#[derive(Clone)]
struct Recording(View, Arc<std::sync::Mutex<Vec<Report>>>);

impl HostLookup for Recording {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.0.hosts.lookup(mac)
    }
}

impl v6::BootView for Recording {
    fn context(&self) -> &Context {
        &self.0.context
    }

    fn profiled(&self, _: Mac) -> bool {
        true
    }

    fn decided(&self, mac: Option<Mac>, seen: &v6::Seen<'_>, _: &v6::Action) {
        self.1.lock().unwrap().push((mac, seen.leased.to_vec()));
    }
}

impl v6::Boot for Recording {
    type View<'a> = Recording;

    fn view(&self) -> Recording {
        self.clone()
    }
}

/// A Request to the office server is not answered, but its addresses and
/// the MAC of its DUID reach the view; a client whose MAC cannot be known
/// is reported without one, and garbage with nothing.
#[tokio::test]
async fn a_request_to_another_server_reports_its_addresses_and_mac() {
    let server = v6::bind_dhcpv6_socket(0, Join::Nowhere).unwrap();
    let server_addr = local(&server);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let view = View {
        context: context(),
        hosts: Arc::new(|_: Mac| HostStatus::Netboot(HostBoot::ipxe())),
    };
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(v6::serve(
        Sockets {
            server,
            boot_server: None,
        },
        Arc::new(Recording(view, seen.clone())),
        shutdown.clone(),
    ));
    let client = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
    let leased: [Ipv6Addr; 2] = ["fd77::1e2".parse().unwrap(), "fd77::1e3".parse().unwrap()];
    // OVMF's Solicit turned into its Request to the office server.
    let office = [0, 3, 0, 1, 2, 0, 0, 0, 0, 2];
    let request = edit(&fixture("ovmf-pxe-solicit"), 3, |o| {
        set(o, 2, &office);
        set(o, 3, &ia_na(1, &leased));
    });
    let uuid = option(&fixture("ovmf-pxe-solicit-uuid"), 1).unwrap();
    let anonymous = edit(&request, 5, |o| set(o, 1, &uuid));
    for datagram in [&request, &anonymous, &vec![3, 0, 0]] {
        client.send_to(datagram, server_addr).await.unwrap();
    }
    // Read before this one or with it: once it is answered and the
    // driver has finished its batch and stopped, all were decided
    // (profiled machines first, so not in arrival order).
    let relayed = relay_forward(
        0,
        APPLIANCE,
        Ipv6Addr::LOCALHOST,
        &[],
        &fixture("ovmf-pxe-solicit"),
    );
    client.send_to(&relayed, server_addr).await.unwrap();
    assert_eq!(reply_to(&client).await[0], 13);
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    let ovmf = Mac([0x52, 0x54, 0x00, 0x00, 0x06, 0x02]);
    let seen = seen.lock().unwrap().clone();
    for want in [
        (Some(ovmf), leased.to_vec()),
        (None, leased.to_vec()),
        (None, Vec::new()),
        (Some(ovmf), Vec::new()),
    ] {
        assert!(seen.contains(&want), "{want:?} in {seen:?}");
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}
