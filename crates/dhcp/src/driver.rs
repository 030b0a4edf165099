//! The thin UDP driver: receive what the socket holds, take one snapshot,
//! decide the packets of profiled machines first, send.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::advertise;
use crate::full::Leases;
use crate::proxy::{self, Action, Context, HostLookup, HostStatus, Mode, Port};
use crate::rogue::RogueOffer;
use crate::wire::{self, Mac};

/// What the driver asks of the daemon: a [`BootView`] of the generation
/// in force, taken once for the packets read together, so every packet is
/// decided with one context and one set of host states (never a context
/// of one generation and a host of the next). The decision itself stays
/// the pure [`proxy::decide`].
pub trait Boot: Send + Sync + 'static {
    type View<'a>: BootView + Send
    where
        Self: 'a;

    fn view(&self) -> Self::View<'_>;

    /// Whether to answer now: an appliance standing by for its segment
    /// decides nothing (and so records nothing) and sends nothing. Asked
    /// for every batch and again before each send, so one that stopped
    /// mid-batch (frozen, then woken past its lease) sends no more.
    fn answering(&self) -> bool {
        true
    }

    /// Another server offered boot information to a client.
    fn rogue(&self, offer: &RogueOffer) {
        let _ = offer;
    }

    /// A router solicitation from `from` was decided
    /// ([`crate::advertise`]): for the log and metrics.
    fn solicited(&self, from: Ipv6Addr, outcome: &advertise::Outcome) {
        let _ = (from, outcome);
    }
}

/// One generation as the decision sees it. Its host lookups answer from
/// memory: nothing on the reply path waits for a disk.
pub trait BootView: HostLookup {
    fn context(&self) -> &Context;

    /// Whether `mac` has a host profile: its packets are decided before
    /// any stranger's, so a flood of forged MACs never queues a rack's
    /// machines behind it.
    fn profiled(&self, mac: Mac) -> bool;

    /// Every decision, once made: for the log, metrics and the machine's
    /// timeline. `mac` is the packet's client address when it had one.
    fn decided(&self, mac: Option<Mac>, seen: &Seen<'_>, action: &Action) {
        let _ = (mac, seen, action);
    }
}

/// What the driver saw of a packet besides the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Seen<'a> {
    pub from: SocketAddr,
    /// The address a REQUEST asked for (option 50): where the machine will
    /// be once the office DHCP server has acknowledged it.
    pub requested: Option<Ipv4Addr>,
    /// The interface it arrived on ([`Sockets::interface`]): which of the
    /// rack's networks the machine is on (its boot network or its
    /// installer's VLAN).
    pub interface: Option<&'a str>,
}

/// A fixed context and host lookup: for tests, benchmarks and tools. Every
/// MAC its lookup answers for counts as profiled. `C` is the family's
/// context: [`Context`] for DHCPv4, [`crate::v6::Context`] for DHCPv6.
#[derive(Clone)]
pub struct View<C = Context> {
    pub context: Arc<C>,
    pub hosts: Arc<dyn HostLookup>,
}

impl<C: std::fmt::Debug> std::fmt::Debug for View<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync> HostLookup for View<C> {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.hosts.lookup(mac)
    }
}

impl<C> View<C> {
    /// Whether `mac` is one its lookup answers for.
    pub(crate) fn knows(&self, mac: Mac) -> bool {
        self.hosts.lookup(mac) != HostStatus::Unknown
    }
}

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

/// Already-bound sockets of one interface (or of all, unnamed), see
/// [`bind_dhcp_socket`].
#[derive(Debug)]
pub struct Sockets {
    /// The interface they are bound to; `None`: every interface.
    pub interface: Option<String>,
    /// UDP 67, with `SO_BROADCAST`.
    pub dhcp: UdpSocket,
    /// UDP 4011, for clients that ask the boot server directly.
    pub boot_server: Option<UdpSocket>,
    /// UDP 68, the client port: only listened on, to notice other servers'
    /// boot offers ([`crate::rogue_offer`]).
    pub client_port: Option<UdpSocket>,
}

/// Bind a DHCP socket the way the daemon needs it: `SO_REUSEADDR` (another
/// DHCP server may share the host), `SO_BROADCAST` (replies go to
/// 255.255.255.255), `SO_BINDTODEVICE` when an interface is named (so a
/// broadcast leaves through that interface and packets from others are not
/// seen), and a receive buffer of up to 1 MiB for bursts.
///
/// `addr` should be 0.0.0.0 for port 67: on Linux a socket bound to a unicast
/// address never receives the broadcast DISCOVERs; pick the interface
/// instead. Needs a tokio runtime; ports 67 and 4011 need root or
/// `CAP_NET_BIND_SERVICE`, an interface `CAP_NET_RAW`.
pub fn bind_dhcp_socket(
    addr: Ipv4Addr,
    port: u16,
    interface: Option<&str>,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    // A rack powering on at once is a burst; the kernel caps this at rmem_max.
    socket.set_recv_buffer_size(1 << 20)?;
    if let Some(name) = interface {
        socket.bind_device(Some(name.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(addr, port)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Serve every interface's `sockets` until `shutdown` is cancelled.
/// `leases` is the pool for `mode: full`, shared by them; without it a
/// full-mode context is answered as proxy.
pub async fn serve<B: Boot>(
    sockets: Vec<Sockets>,
    boot: Arc<B>,
    leases: Option<Leases>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let leases = leases.map(|l| Arc::new(Mutex::new(l)));
    let mut tasks = tokio::task::JoinSet::new();
    for interface in sockets {
        let name: Option<Arc<str>> = interface.interface.map(Into::into);
        let mut spawn = |socket: UdpSocket, port| {
            let worker = Worker {
                socket,
                port,
                interface: name.clone(),
                boot: boot.clone(),
                leases: leases.clone(),
            };
            tasks.spawn(worker.run(shutdown.clone()));
        };
        spawn(interface.dhcp, Port::Dhcp);
        if let Some(socket) = interface.boot_server {
            spawn(socket, Port::BootServer);
        }
        if let Some(socket) = interface.client_port {
            tasks.spawn(listen_for_rogues(socket, boot.clone(), shutdown.clone()));
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(io::Error::other)??;
    }
    Ok(())
}

/// Reads the client port and reports other servers' boot offers.
async fn listen_for_rogues<B: Boot>(
    socket: UdpSocket,
    boot: Arc<B>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            got = socket.recv_from(&mut buf) => match got {
                Ok((len, _)) => len,
                Err(e) => { debug!(error = %e, "dhcp: client-port receive failed"); continue; }
            },
        };
        let ours = boot.view().context().address;
        if let Some(offer) = crate::rogue::rogue_offer(&buf[..len], ours) {
            boot.rogue(&offer);
        }
    }
}

struct Worker<B> {
    socket: UdpSocket,
    port: Port,
    interface: Option<Arc<str>>,
    boot: Arc<B>,
    leases: Option<Arc<Mutex<Leases>>>,
}

/// A UDP datagram can carry up to this much; a smaller buffer would cut a
/// large (but valid) DISCOVER short and misread it as malformed.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams read from the socket before any is decided: what a flood has
/// queued in front of a profiled machine's packet is read past, and that
/// packet is decided first.
const BATCH: usize = 64;

impl<B: Boot> Worker<B> {
    async fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut batch: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
        loop {
            let (len, from) = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    // ICMP errors from earlier sends surface here; keep serving.
                    Err(e) => { debug!(error = %e, "dhcp: receive failed"); continue; }
                },
            };
            batch.push((buf[..len].to_vec(), from));
            while batch.len() < BATCH {
                match self.socket.try_recv_from(&mut buf) {
                    Ok((len, from)) => batch.push((buf[..len].to_vec(), from)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "dhcp: receive failed");
                        break;
                    }
                }
            }
            if !self.boot.answering() {
                debug!(datagrams = batch.len(), "dhcp: standing by, not answered");
                batch.clear();
                continue;
            }
            let view = self.boot.view();
            // Stable: profiled machines first, each side in arrival order.
            batch.sort_by_key(|(packet, _)| {
                !wire::peek_mac(packet).is_some_and(|mac| view.profiled(mac))
            });
            for (packet, from) in batch.drain(..) {
                let action = self.decide(&view, &packet);
                let mac = wire::peek_mac(&packet);
                let seen = Seen {
                    from,
                    requested: wire::peek_requested(&packet),
                    interface: self.interface.as_deref(),
                };
                view.decided(mac, &seen, &action);
                match action {
                    Action::Ignore(reason) => debug!(%from, %reason, "dhcp: ignored"),
                    Action::Respond(reply) if !self.boot.answering() => {
                        debug!(mac = %reply.mac, "dhcp: stopped answering before the reply went out");
                    }
                    Action::Respond(reply) => {
                        let to = reply.dest.resolve(from);
                        // Every reply at debug: at a rack's power-on these
                        // are thousands a second. The daemon logs a
                        // machine's first answer in a while at info
                        // ([`BootView::decided`]).
                        debug!(mac = %reply.mac, firmware = ?reply.firmware,
                              boot_file = reply.boot_file.as_deref().unwrap_or("-"), %to, "dhcp: reply");
                        if let Err(e) = self.socket.send_to(&reply.bytes, to).await {
                            warn!(%to, error = %e, "dhcp: send failed");
                        }
                    }
                }
            }
        }
    }

    fn decide(&self, view: &B::View<'_>, packet: &[u8]) -> Action {
        let ctx = view.context();
        let hosts: &dyn HostLookup = view;
        match (&self.leases, ctx.mode) {
            (Some(leases), Mode::Full) => {
                let mut leases = leases.lock().unwrap_or_else(PoisonError::into_inner);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let action = crate::full::decide(packet, ctx, hosts, self.port, &mut leases, now);
                // A lease answered but not on disk would be handed out twice
                // after a crash; the write is small and rare.
                if let Err(e) = leases.save() {
                    warn!(error = %e, "dhcp: could not persist leases");
                }
                action
            }
            _ => proxy::decide(packet, ctx, hosts, self.port),
        }
    }
}
