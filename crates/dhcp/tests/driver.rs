//! The UDP driver with a real client on loopback: port-4011 unicast replies,
//! live snapshot changes, shutdown.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{decode, edit, fixture, set};
use kickstand_dhcp::{
    Boot, Context, HostBoot, HostStatus, Mac, Sockets, View, bind_dhcp_socket, serve,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const APPLIANCE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A snapshot in which only MACs ending in `known` have a profile.
fn view(loader: &str, known: u8) -> View {
    let mut context = Context::new(APPLIANCE, 8080);
    context.loaders.uefi_x64 = loader.into();
    let hosts = move |mac: Mac| {
        if mac.0[5] == known {
            HostStatus::Netboot(HostBoot::ipxe())
        } else {
            HostStatus::Unknown
        }
    };
    View {
        context: Arc::new(context),
        hosts: Arc::new(hosts),
    }
}

/// The port-4011 REQUEST OVMF (MAC 52:54:00:00:00:02) sends after a proxy
/// offer, with its own xid; xid 4 comes from MAC ...:04.
fn boot_request(xid: u32) -> Vec<u8> {
    let mut p = edit(&fixture("ovmf-pxe-discover"), |o| {
        set(o, 53, &[3]);
        set(o, 54, &APPLIANCE.octets());
    });
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    if xid == 4 {
        p[33] = 4;
    }
    p
}

/// A view the test swaps, as a reload swaps the daemon's generation.
struct Live(Mutex<View>);

impl Boot for Live {
    type View<'a> = View;

    fn view(&self) -> View {
        self.0.lock().unwrap().clone()
    }
}

async fn ask(client: &UdpSocket, to: SocketAddr, xid: u32) -> (u32, String) {
    ask_with(client, to, &boot_request(xid)).await
}

async fn ask_with(client: &UdpSocket, to: SocketAddr, packet: &[u8]) -> (u32, String) {
    client.send_to(packet, to).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    assert_eq!(from, to, "the reply comes from the boot server port");
    assert!(n >= 300);
    let m = decode(&buf[..n]);
    (
        m.xid(),
        String::from_utf8(m.fname().unwrap().to_vec())
            .unwrap()
            .trim_end_matches('\0')
            .to_owned(),
    )
}

#[tokio::test]
async fn boot_server_port_answers_the_sender_and_follows_reloads() {
    let dhcp = bind_dhcp_socket(Ipv4Addr::LOCALHOST, 0, None).unwrap();
    let boot = bind_dhcp_socket(Ipv4Addr::LOCALHOST, 0, None).unwrap();
    let boot_addr = boot.local_addr().unwrap();
    let current = Arc::new(Live(Mutex::new(view("ipxe.efi", 2))));
    let source = current.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        vec![Sockets {
            interface: None,
            dhcp,
            boot_server: Some(boot),
            client_port: None,
        }],
        source,
        None,
        shutdown.clone(),
    ));
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();

    assert_eq!(ask(&client, boot_addr, 1).await, (1, "ipxe.efi".to_owned()));
    *current.0.lock().unwrap() = view("snponly.efi", 2);
    assert_eq!(
        ask(&client, boot_addr, 2).await,
        (2, "snponly.efi".to_owned())
    );

    // A host whose profile went away is not answered. Packets on one socket
    // are handled in order, so the next reply being for xid 4 (another,
    // known host) proves xid 3 got none.
    *current.0.lock().unwrap() = view("ipxe.efi", 4);
    client.send_to(&boot_request(3), boot_addr).await.unwrap();
    client.send_to(&[0xde, 0xad], boot_addr).await.unwrap(); // garbage is survived too
    assert_eq!(ask(&client, boot_addr, 4).await, (4, "ipxe.efi".to_owned()));

    // A well-formed request longer than a 2,048-byte buffer is read whole
    // (the driver receives the largest datagram), not cut at option 60.
    let long = common::pad_to(&boot_request(4), 2081);
    assert_eq!(long.len(), 2081);
    assert_eq!(
        ask_with(&client, boot_addr, &long).await,
        (4, "ipxe.efi".to_owned())
    );

    shutdown.cancel();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("serve stops on cancel")
        .unwrap()
        .unwrap();
}

/// A view in which every machine is answered but only one has a profile.
#[derive(Clone)]
struct OneProfiled {
    view: View,
    profiled: Mac,
}

impl kickstand_dhcp::HostLookup for OneProfiled {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.view.hosts.lookup(mac)
    }
}

impl kickstand_dhcp::BootView for OneProfiled {
    fn context(&self) -> &Context {
        &self.view.context
    }

    fn profiled(&self, mac: Mac) -> bool {
        mac == self.profiled
    }
}

impl Boot for OneProfiled {
    type View<'a> = OneProfiled;

    fn view(&self) -> OneProfiled {
        self.clone()
    }
}

/// Packets queued behind a flood from strangers: the profiled machine's,
/// sent last, is decided and answered first.
#[tokio::test]
async fn a_profiled_machine_is_answered_before_the_strangers_queued_ahead_of_it() {
    let boot = bind_dhcp_socket(Ipv4Addr::LOCALHOST, 0, None).unwrap();
    let boot_addr = boot.local_addr().unwrap();
    let dhcp = bind_dhcp_socket(Ipv4Addr::LOCALHOST, 0, None).unwrap();
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let request = |xid: u32, last: u8| {
        let mut p = boot_request(xid);
        p[33] = last;
        p
    };
    // The server is not running yet: these wait in its socket's buffer.
    for xid in 100..140u32 {
        client
            .send_to(&request(xid, 0x40), boot_addr)
            .await
            .unwrap();
    }
    client.send_to(&request(7, 0x07), boot_addr).await.unwrap();
    let mut context = Context::new(APPLIANCE, 8080);
    context.loaders.uefi_x64 = "ipxe.efi".into();
    let everyone = |_: Mac| HostStatus::Netboot(HostBoot::ipxe());
    let source = Arc::new(OneProfiled {
        view: View {
            context: Arc::new(context),
            hosts: Arc::new(everyone),
        },
        profiled: Mac([0x52, 0x54, 0x00, 0x00, 0x00, 0x07]),
    });
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        vec![Sockets {
            interface: None,
            dhcp,
            boot_server: Some(boot),
            client_port: None,
        }],
        source,
        None,
        shutdown.clone(),
    ));
    let mut buf = [0u8; 1500];
    let mut order = Vec::new();
    while order.len() < 41 {
        let (n, _) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        order.push(decode(&buf[..n]).xid());
    }
    // The first packet read may be decided alone, before the batch behind
    // it is read; the profiled one comes before every other of its batch.
    let at = order.iter().position(|x| *x == 7).unwrap();
    assert!(
        at <= 1,
        "the profiled machine's reply came {at}th: {order:?}"
    );
    shutdown.cancel();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("serve stops on cancel")
        .unwrap()
        .unwrap();
}

/// A decided packet's sender port and the interface it arrived on.
type Arrival = (u16, Option<String>);

/// A view that notes the interface each decided packet arrived on.
#[derive(Clone)]
struct Arrivals {
    view: View,
    seen: Arc<Mutex<Vec<Arrival>>>,
}

impl kickstand_dhcp::HostLookup for Arrivals {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.view.hosts.lookup(mac)
    }
}

impl kickstand_dhcp::BootView for Arrivals {
    fn context(&self) -> &Context {
        &self.view.context
    }

    fn profiled(&self, _: Mac) -> bool {
        true
    }

    fn decided(&self, _: Option<Mac>, seen: &kickstand_dhcp::Seen<'_>, _: &kickstand_dhcp::Action) {
        self.seen
            .lock()
            .unwrap()
            .push((seen.from.port(), seen.interface.map(str::to_owned)));
    }
}

impl Boot for Arrivals {
    type View<'a> = Arrivals;

    fn view(&self) -> Arrivals {
        self.clone()
    }
}

/// Each interface's sockets are served, and a packet is reported with the
/// interface it arrived on: how the daemon tells a host's install VLAN
/// from its boot network.
#[tokio::test]
async fn each_interface_is_served_and_named_in_what_it_saw() {
    let mut sockets = Vec::new();
    let mut boot_ports = Vec::new();
    for name in ["ksbr0", "ksbr0.20"] {
        let boot = bind_dhcp_socket(Ipv4Addr::LOCALHOST, 0, None).unwrap();
        boot_ports.push((name, boot.local_addr().unwrap()));
        sockets.push(Sockets {
            interface: Some(name.to_owned()),
            dhcp: bind_dhcp_socket(Ipv4Addr::LOCALHOST, 0, None).unwrap(),
            boot_server: Some(boot),
            client_port: None,
        });
    }
    let source = Arc::new(Arrivals {
        view: view("ipxe.efi", 2),
        seen: Arc::default(),
    });
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(sockets, source.clone(), None, shutdown.clone()));

    let mut want = Vec::new();
    for (name, to) in boot_ports {
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        assert_eq!(ask(&client, to, 2).await, (2, "ipxe.efi".to_owned()));
        want.push((client.local_addr().unwrap().port(), Some(name.to_owned())));
    }
    assert_eq!(*source.seen.lock().unwrap(), want);

    shutdown.cancel();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("serve stops on cancel")
        .unwrap()
        .unwrap();
}
