//! The thin DHCPv6 driver: receive what the sockets hold, take one
//! snapshot, decide the datagrams of profiled machines first, send.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lru::LruCache;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::proxy::HostLookup;
use crate::v6::decide::{self, Action, Clients, Context, Port, Reason, Source};
use crate::v6::wire::{self, Received, opt};
use crate::wire::Mac;

/// All DHCP relay agents and servers (RFC 8415 7.1): where clients send.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x1, 0x2);

/// What the driver asks of the daemon, as [`crate::Boot`] does for
/// DHCPv4: a [`BootView`] of the generation in force, taken once for the
/// datagrams read together.
pub trait Boot: Send + Sync + 'static {
    type View<'a>: BootView + Send
    where
        Self: 'a;

    fn view(&self) -> Self::View<'_>;

    /// Whether to answer now, as [`crate::Boot::answering`] says for
    /// DHCPv4: asked before deciding and again before each send.
    fn answering(&self) -> bool {
        true
    }
}

/// One generation as the DHCPv6 decision sees it; lookups answer from
/// memory.
pub trait BootView: HostLookup {
    fn context(&self) -> &Context;

    /// Whether `mac` has a host profile: its datagrams are decided first.
    fn profiled(&self, mac: Mac) -> bool;

    /// Every decision, once made: for the log, metrics, the machine's
    /// timeline and its build token. `mac` is the client's when the
    /// datagram gave it.
    fn decided(&self, mac: Option<Mac>, seen: &Seen<'_>, action: &Action) {
        let _ = (mac, seen, action);
    }
}

/// What the driver saw of a datagram besides the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Seen<'a> {
    pub from: SocketAddrV6,
    /// The addresses another server leased the client, as its Request,
    /// Renew, Rebind or Confirm names them ([`decide::leased`]): where
    /// the machine is, whose build token may go there.
    pub leased: &'a [Ipv6Addr],
}

/// A fixed context and host lookup: for tests and tools. Every MAC its
/// lookup answers for counts as profiled.
pub type View = crate::driver::View<Context>;

impl Boot for View {
    type View<'a> = View;

    fn view(&self) -> View {
        self.clone()
    }
}

impl BootView for View {
    fn context(&self) -> &Context {
        &self.context
    }

    fn profiled(&self, mac: Mac) -> bool {
        self.knows(mac)
    }
}

/// Already-bound sockets, see [`bind_dhcpv6_socket`].
#[derive(Debug)]
pub struct Sockets {
    /// UDP 547, joined to [`ALL_SERVERS`].
    pub server: UdpSocket,
    /// UDP 4011, where EDK2's PXE asks for its boot file after taking a
    /// proxy Advertise. Without it, OVMF gets an address from the office
    /// server and no boot file.
    pub boot_server: Option<UdpSocket>,
}

/// Which interfaces a socket hears [`ALL_SERVERS`] on.
#[derive(Debug, Clone, Copy)]
pub enum Join<'a> {
    /// None: port 4011, which firmware reaches by unicast, and tests.
    Nowhere,
    /// These interfaces, by name.
    Interfaces(&'a [&'a str]),
    /// Every interface that is up and multicast-capable, loopback aside.
    Everywhere,
}

/// Bind a DHCPv6 socket on `[::]:port`: IPv6 only (port 547 of IPv4 is
/// not DHCP), `SO_REUSEADDR` (a DHCPv6 server may share the host), a 1 MiB
/// receive buffer for bursts, and joined to ff02::1:2 as `join` says.
/// Unicast reaches it from any interface; a reply to a link-local address
/// leaves by the scope id the datagram came with.
///
/// Needs a tokio runtime; ports under 1024 need root or
/// `CAP_NET_BIND_SERVICE`.
pub fn bind_dhcpv6_socket(port: u16, join: Join<'_>) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_recv_buffer_size(1 << 20)?;
    socket.set_nonblocking(true)?;
    let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    socket.bind(&SocketAddr::V6(any).into())?;
    let names = match join {
        Join::Nowhere => Vec::new(),
        Join::Interfaces(names) => names.iter().map(|n| (*n).to_owned()).collect(),
        Join::Everywhere => multicast_interfaces()?,
    };
    for name in names {
        let index = interface_index(&name)?;
        socket
            .join_multicast_v6(&ALL_SERVERS, index)
            .map_err(|e| io::Error::new(e.kind(), format!("joining ff02::1:2 on {name}: {e}")))?;
    }
    UdpSocket::from_std(socket.into())
}

/// Bind the socket the appliance's DHCPv6 probe ([`crate::v6::Probe`])
/// is sent from and answered on: `[::]:546`, where servers send their
/// answers to clients (RFC 8415 7.2).
///
/// A DHCPv6 client of the host's own on 546 and this socket cannot tell
/// their answers apart: both come to the interface's address on 546. One
/// bound to its link-local address (systemd-networkd's) gets every answer
/// sent there, the probe's too; one bound to `[::]` with `SO_REUSEPORT`
/// shares them with this socket by a hash of the sender, so all of one
/// server's answers can go to the wrong one. So the probe does not start
/// beside one: `AddrInUse` when 546 is already bound. It binds with
/// `SO_REUSEADDR` and `SO_REUSEPORT` so that a client started later is
/// not locked out. It joins no multicast group: answers to the probe are
/// unicast to the address it was sent from, and nothing sent to a group
/// is for it. Multicast loopback is off so that the appliance's own
/// DHCPv6 answers, listening on this host, never receive the probe: they
/// would answer it as a PXE client's.
pub fn bind_probe_socket() -> io::Result<UdpSocket> {
    let any = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        decide::CLIENT_PORT,
        0,
        0,
    ));
    let udp6 = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_only_v6(true)?;
        Ok(socket)
    };
    // Without SO_REUSEADDR this fails while anything holds the port.
    udp6()?.bind(&any.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("UDP 546 is held by another DHCPv6 client on this host, whose answers the probe would take: {e}"),
        )
    })?;
    let socket = udp6()?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_multicast_loop_v6(false)?;
    socket.set_nonblocking(true)?;
    socket.bind(&any.into())?;
    UdpSocket::from_std(socket.into())
}

/// An interface's index, by name: the scope of a link-local address.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("no interface {name:?}: {e}")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{path}: {text:?} is not an index")))
}

/// The interfaces with `IFF_UP` and `IFF_MULTICAST` set and not
/// `IFF_LOOPBACK`, as sysfs lists them.
fn multicast_interfaces() -> io::Result<Vec<String>> {
    const UP: u32 = 0x1;
    const LOOPBACK: u32 = 0x8;
    const MULTICAST: u32 = 0x1000;
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))?;
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
            .map_err(|e| io::Error::other(format!("{name} flags {flags:?}: {e}")))?;
        if flags & (UP | MULTICAST | LOOPBACK) == UP | MULTICAST {
            names.push(name);
        }
    }
    Ok(names)
}

/// Serve until `shutdown` is cancelled.
pub async fn serve<B: Boot>(
    sockets: Sockets,
    boot: Arc<B>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut tasks = JoinSet::new();
    // Both ports: the Solicit on 547 teaches what the Request on 4011 needs.
    let clients = Arc::new(Mutex::new(Clients::new()));
    let mut spawn = |socket, port| {
        let worker = Worker {
            socket: Arc::new(socket),
            port,
            boot: boot.clone(),
            clients: clients.clone(),
            unplaced: LruCache::new(UNPLACED),
            delayed: JoinSet::new(),
        };
        tasks.spawn(worker.run(shutdown.clone()));
    };
    spawn(sockets.server, Port::Server);
    if let Some(socket) = sockets.boot_server {
        spawn(socket, Port::BootServer);
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(io::Error::other)??;
    }
    Ok(())
}

/// Datagrams read before any is decided, as in the DHCPv4 driver.
const BATCH: usize = 64;
/// Client DUIDs whose MAC could not be known that were logged at info:
/// each is logged once while it is remembered, the oldest forgotten first.
const UNPLACED: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");

/// How long the answer to a port-4011 Request waits. EDK2 starts
/// listening for it only after its Request has left (`UdpWrite`, then
/// `Udp6Read->Configure` and `UdpRead`, in `PxeBcRequestBootService`): an
/// answer sent at once can arrive before anyone listens and be lost, and
/// EDK2 never asks again. It waits up to 3 s (`PXEBC_UDP_TIMEOUT`).
const BOOT_SERVER_DELAY: Duration = Duration::from_millis(250);

struct Worker<B> {
    socket: Arc<UdpSocket>,
    port: Port,
    boot: Arc<B>,
    clients: Arc<Mutex<Clients>>,
    unplaced: LruCache<Vec<u8>, ()>,
    /// Delayed answers on their way ([`BOOT_SERVER_DELAY`]).
    delayed: JoinSet<()>,
}

impl<B: Boot> Worker<B> {
    async fn run(mut self, shutdown: CancellationToken) -> io::Result<()> {
        // One byte over the largest message read, so a longer one is seen
        // as too long rather than cut short.
        let mut buf = vec![0u8; wire::MAX_MESSAGE_LEN + 1];
        let mut batch: Vec<(Vec<u8>, SocketAddrV6)> = Vec::with_capacity(BATCH);
        loop {
            while self.delayed.try_join_next().is_some() {}
            let got = tokio::select! {
                () = shutdown.cancelled() => {
                    // Answers already decided still go out.
                    while self.delayed.join_next().await.is_some() {}
                    return Ok(());
                }
                got = self.socket.recv_from(&mut buf) => got,
            };
            match got {
                Ok((len, SocketAddr::V6(from))) => batch.push((buf[..len].to_vec(), from)),
                Ok(_) => continue,
                // ICMP errors from earlier sends surface here; keep serving.
                Err(e) => {
                    debug!(error = %e, "dhcpv6: receive failed");
                    continue;
                }
            }
            while batch.len() < BATCH {
                match self.socket.try_recv_from(&mut buf) {
                    Ok((len, SocketAddr::V6(from))) => batch.push((buf[..len].to_vec(), from)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "dhcpv6: receive failed");
                        break;
                    }
                }
            }
            self.answer(&mut batch).await;
        }
    }

    async fn answer(&mut self, batch: &mut Vec<(Vec<u8>, SocketAddrV6)>) {
        let boot = Arc::clone(&self.boot);
        if !boot.answering() {
            debug!(datagrams = batch.len(), "dhcpv6: standing by, not answered");
            batch.clear();
            return;
        }
        let view = boot.view();
        let clients = Arc::clone(&self.clients);
        // The lock is never held across an await: only while deciding.
        let lock = || clients.lock().unwrap_or_else(PoisonError::into_inner);
        // Stable: profiled machines first, each side in arrival order.
        {
            let known = lock();
            batch.sort_by_key(|(datagram, from)| {
                !peek_mac(datagram, *from, &known).is_some_and(|mac| view.profiled(mac))
            });
        }
        for (datagram, from) in batch.drain(..) {
            let source = Source {
                from,
                port: self.port,
            };
            let (action, mac) = {
                let mut known = lock();
                let action = decide::decide(&datagram, source, view.context(), &view, &known);
                let mac = match &action {
                    Action::Respond(reply) => {
                        known.learn(reply);
                        Some(reply.mac)
                    }
                    Action::Ignore(_) => peek_mac(&datagram, from, &known),
                };
                (action, mac)
            };
            let leased = decide::leased(&datagram, view.context());
            let seen = Seen {
                from,
                leased: &leased,
            };
            view.decided(mac, &seen, &action);
            match action {
                Action::Ignore(reason @ Reason::UnknownLinkLayer { .. }) => {
                    self.unplaced_once(&datagram, from, &reason);
                }
                Action::Ignore(reason) => debug!(%from, %reason, "dhcpv6: ignored"),
                Action::Respond(reply) => {
                    debug!(mac = %reply.mac, firmware = reply.firmware.name(),
                           url = %reply.boot_file_url, to = %reply.to, "dhcpv6: reply");
                    match self.port {
                        Port::Server => {
                            if boot.answering() {
                                send(&self.socket, reply).await;
                            }
                        }
                        // Delayed apart, so the datagrams behind it wait for none.
                        Port::BootServer => {
                            let (socket, boot) = (Arc::clone(&self.socket), Arc::clone(&boot));
                            self.delayed.spawn(async move {
                                tokio::time::sleep(BOOT_SERVER_DELAY).await;
                                if boot.answering() {
                                    send(&socket, reply).await;
                                }
                            });
                        }
                    }
                }
            }
        }
    }

    /// A boot client that cannot be placed is an operator's problem (its
    /// firmware sends a DUID-UUID, say, through no relay that adds its
    /// MAC): said at info once per client DUID, at debug after that.
    fn unplaced_once(&mut self, datagram: &[u8], from: SocketAddrV6, reason: &Reason) {
        let duid = Received::parse(datagram)
            .ok()
            .and_then(|r| r.message.options.get(opt::CLIENT_ID).map(<[u8]>::to_vec))
            .unwrap_or_default();
        if self.unplaced.put(duid, ()).is_none() {
            info!(%from, %reason, "dhcpv6: boot client not answered");
        } else {
            debug!(%from, %reason, "dhcpv6: ignored");
        }
    }
}

async fn send(socket: &UdpSocket, reply: decide::Reply) {
    if let Err(e) = socket.send_to(&reply.bytes, reply.to).await {
        warn!(to = %reply.to, error = %e, "dhcpv6: send failed");
    }
}

/// The client MAC a datagram gives, if it gives one, without the rest of
/// the decision: for ordering and for the timeline of an ignored packet.
fn peek_mac(datagram: &[u8], from: SocketAddrV6, clients: &Clients) -> Option<Mac> {
    decide::client_mac(&Received::parse(datagram).ok()?, from, clients)
}
