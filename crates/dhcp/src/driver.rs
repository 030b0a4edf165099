//! The thin UDP driver: receive, take one snapshot, decide, send.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::full::Leases;
use crate::proxy::{self, Action, Context, HostLookup, HostStatus, Mode, Port};
use crate::rogue::RogueOffer;
use crate::wire::{self, Mac};

/// What the driver asks of the daemon, once per packet: the context of the
/// generation in force, and how to treat the machine that sent it (from its
/// profile and its install state, which may live in a database — hence
/// async). The decision itself stays the pure [`proxy::decide`].
pub trait Boot: Send + Sync + 'static {
    fn context(&self) -> Arc<Context>;
    fn host(&self, mac: Mac) -> impl Future<Output = HostStatus> + Send;

    /// Every decision, once made: for the log, metrics and the machine's
    /// timeline. `mac` is the packet's client address when it had one.
    fn decided(&self, mac: Option<Mac>, seen: &Seen, action: &Action) {
        let _ = (mac, seen, action);
    }

    /// Another server offered boot information to a client.
    fn rogue(&self, offer: &RogueOffer) {
        let _ = offer;
    }
}

/// What the driver saw of a packet besides the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Seen {
    pub from: SocketAddr,
    /// The address a REQUEST asked for (option 50): where the machine will
    /// be once the office DHCP server has acknowledged it.
    pub requested: Option<Ipv4Addr>,
}

/// A fixed context and host lookup: for tests, benchmarks and tools.
#[derive(Clone)]
pub struct View {
    pub context: Arc<Context>,
    pub hosts: Arc<dyn HostLookup>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Boot for View {
    fn context(&self) -> Arc<Context> {
        self.context.clone()
    }

    async fn host(&self, mac: Mac) -> HostStatus {
        self.hosts.lookup(mac)
    }
}

/// Already-bound sockets, see [`bind_dhcp_socket`].
#[derive(Debug)]
pub struct Sockets {
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

/// Serve until `shutdown` is cancelled. `leases` is the pool for
/// `mode: full`; without it a full-mode context is answered as proxy.
pub async fn serve<B: Boot>(
    sockets: Sockets,
    boot: Arc<B>,
    leases: Option<Leases>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let leases = leases.map(|l| Arc::new(Mutex::new(l)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut spawn = |socket: UdpSocket, port| {
        let worker = Worker {
            socket,
            port,
            boot: boot.clone(),
            leases: leases.clone(),
        };
        tasks.spawn(worker.run(shutdown.clone()));
    };
    spawn(sockets.dhcp, Port::Dhcp);
    if let Some(socket) = sockets.boot_server {
        spawn(socket, Port::BootServer);
    }
    if let Some(socket) = sockets.client_port {
        tasks.spawn(listen_for_rogues(socket, boot.clone(), shutdown.clone()));
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
        let ours = boot.context().address;
        if let Some(offer) = crate::rogue::rogue_offer(&buf[..len], ours) {
            boot.rogue(&offer);
        }
    }
}

struct Worker<B> {
    socket: UdpSocket,
    port: Port,
    boot: Arc<B>,
    leases: Option<Arc<Mutex<Leases>>>,
}

/// A UDP datagram can carry up to this much; a smaller buffer would cut a
/// large (but valid) DISCOVER short and misread it as malformed.
const MAX_DATAGRAM: usize = 65_536;

impl<B: Boot> Worker<B> {
    async fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (len, from) = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    // ICMP errors from earlier sends surface here; keep serving.
                    Err(e) => { debug!(error = %e, "dhcp: receive failed"); continue; }
                },
            };
            let (mac, action) = self.decide(&buf[..len]).await;
            let seen = Seen {
                from,
                requested: wire::peek_requested(&buf[..len]),
            };
            self.boot.decided(mac, &seen, &action);
            match action {
                Action::Ignore(reason) => debug!(%from, %reason, "dhcp: ignored"),
                Action::Respond(reply) => {
                    let to = reply.dest.resolve(from);
                    info!(mac = %reply.mac, firmware = ?reply.firmware,
                          boot_file = reply.boot_file.as_deref().unwrap_or("-"), %to, "dhcp: reply");
                    if let Err(e) = self.socket.send_to(&reply.bytes, to).await {
                        warn!(%to, error = %e, "dhcp: send failed");
                    }
                }
            }
        }
    }

    async fn decide(&self, packet: &[u8]) -> (Option<Mac>, Action) {
        let ctx = self.boot.context();
        // The host's status is looked up before the pure decision, which
        // sees it through a lookup that knows this one machine.
        let mac = wire::peek_mac(packet);
        let status = match mac {
            Some(mac) => Some((mac, self.boot.host(mac).await)),
            None => None,
        };
        let known = move |mac: Mac| match &status {
            Some((m, s)) if *m == mac => s.clone(),
            _ => HostStatus::Unknown,
        };
        let (ctx, hosts): (&Context, &dyn HostLookup) = (&ctx, &known);
        let action = match (&self.leases, ctx.mode) {
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
        };
        (mac, action)
    }
}
