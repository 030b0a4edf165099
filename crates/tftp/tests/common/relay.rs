//! A lossy UDP relay for TFTP, for the loss tests and the benchmark: the
//! kernel here has no `netem`, so datagrams are dropped in user space.
//!
//! TFTP changes ports mid-conversation: a client sends its request to port
//! 69 and the transfer goes on with the server's new port (its transfer
//! ID). So the relay keeps, per client, one socket facing the server, and
//! per server transfer ID one socket facing that client; the client sees a
//! new transfer ID for every transfer, as it would from the server itself.
//! Each datagram is dropped with a fixed probability per direction, drawn
//! from a generator seeded per client from the relay's seed and the
//! client's request, so a client sees the same losses on every run and
//! against every server.
//!
//! The handshake (request, OACK, and the ACK 0 that confirms it) is never
//! dropped: atftp aborts when an OACK is retransmitted ("unexpected OACK"),
//! whichever server sends it, so a lost ACK 0 would measure that client bug
//! rather than the server's recovery.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Drop probabilities, 0.0 ..= 1.0.
#[derive(Debug, Clone, Copy)]
pub struct Loss {
    /// Client to server: requests and ACKs.
    pub to_server: f64,
    /// Server to client: OACKs, DATA and ERRORs.
    pub to_client: f64,
}

/// Datagrams seen, per direction.
#[derive(Debug, Default)]
pub struct Counts {
    pub to_server: AtomicU64,
    pub to_server_dropped: AtomicU64,
    pub to_client: AtomicU64,
    pub to_client_dropped: AtomicU64,
}

impl Counts {
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.to_server.load(Ordering::Relaxed),
            self.to_server_dropped.load(Ordering::Relaxed),
            self.to_client.load(Ordering::Relaxed),
            self.to_client_dropped.load(Ordering::Relaxed),
        ]
    }
}

/// A running relay; dropping it stops every task.
#[derive(Debug)]
pub struct Relay {
    /// Where clients send their requests.
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    _tasks: JoinSet<()>,
}

/// xorshift64*: small, seeded, and good enough to pick drops.
#[derive(Debug)]
struct Dice(u64);

impl Dice {
    fn hits(&mut self, p: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[derive(Debug)]
struct Shared {
    server: SocketAddr,
    loss: Loss,
    seed: u64,
    counts: Arc<Counts>,
}

/// One client's dice, and whether its transfer is past the handshake.
#[derive(Debug)]
struct Session {
    to_server: Mutex<Dice>,
    to_client: Mutex<Dice>,
    data_seen: AtomicBool,
}

impl Session {
    fn new(seed: u64, request: &[u8]) -> Self {
        // FNV-1a of the request: the same file asked for gets the same dice.
        let hash = request.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let seed = seed ^ hash;
        Self {
            // Never zero: xorshift would stay at zero.
            to_server: Mutex::new(Dice(seed | 1)),
            to_client: Mutex::new(Dice((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)),
            data_seen: AtomicBool::new(false),
        }
    }

    fn handshake(&self, datagram: &[u8]) -> bool {
        match datagram {
            [0, 1 | 2 | 6, ..] => true,
            [0, 4, 0, 0] => !self.data_seen.load(Ordering::Relaxed),
            _ => false,
        }
    }
}

impl Shared {
    fn pass_to_server(&self, session: &Session, datagram: &[u8]) -> bool {
        self.counts.to_server.fetch_add(1, Ordering::Relaxed);
        let drop =
            !session.handshake(datagram) && lock(&session.to_server).hits(self.loss.to_server);
        if drop {
            self.counts
                .to_server_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        !drop
    }

    fn pass_to_client(&self, session: &Session, datagram: &[u8]) -> bool {
        self.counts.to_client.fetch_add(1, Ordering::Relaxed);
        if datagram.starts_with(&[0, 3]) {
            session.data_seen.store(true, Ordering::Relaxed);
        }
        let drop =
            !session.handshake(datagram) && lock(&session.to_client).hits(self.loss.to_client);
        if drop {
            self.counts
                .to_client_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        !drop
    }
}

fn lock(dice: &Mutex<Dice>) -> std::sync::MutexGuard<'_, Dice> {
    dice.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Relay {
    /// Listens on `listen` (port 0 for any) and relays to the TFTP server
    /// whose request port is `server`.
    pub async fn start(
        listen: SocketAddr,
        server: SocketAddr,
        loss: Loss,
        seed: u64,
    ) -> io::Result<Relay> {
        let front = UdpSocket::bind(listen).await?;
        let addr = front.local_addr()?;
        let counts = Arc::new(Counts::default());
        let shared = Arc::new(Shared {
            server,
            loss,
            seed,
            counts: counts.clone(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(requests(front, shared));
        Ok(Relay {
            addr,
            counts,
            _tasks: tasks,
        })
    }
}

/// Requests from clients: each client gets a socket towards the server.
async fn requests(front: UdpSocket, shared: Arc<Shared>) {
    let mut sessions: HashMap<SocketAddr, (Arc<UdpSocket>, Arc<Session>)> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let (back, session) = match sessions.get(&client) {
            Some(known) => known.clone(),
            None => {
                let Ok(back) = UdpSocket::bind(SocketAddr::new(shared.server.ip(), 0)).await else {
                    continue;
                };
                let back = Arc::new(back);
                let session = Arc::new(Session::new(shared.seed, &buf[..len]));
                sessions.insert(client, (back.clone(), session.clone()));
                tasks.spawn(from_server(
                    back.clone(),
                    client,
                    session.clone(),
                    shared.clone(),
                ));
                (back, session)
            }
        };
        if shared.pass_to_server(&session, &buf[..len]) {
            let _ = back.send_to(&buf[..len], shared.server).await;
        }
    }
}

/// Everything the server sends one client, from any of its transfer IDs:
/// each transfer ID gets its own socket facing the client.
async fn from_server(
    back: Arc<UdpSocket>,
    client: SocketAddr,
    session: Arc<Session>,
    shared: Arc<Shared>,
) {
    let mut faces: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, tid)) = back.recv_from(&mut buf).await else {
            // ICMP errors from an earlier send surface here; keep going.
            continue;
        };
        let face = match faces.get(&tid) {
            Some(face) => face.clone(),
            None => {
                let Ok(face) = UdpSocket::bind(SocketAddr::new(client.ip(), 0)).await else {
                    continue;
                };
                let face = Arc::new(face);
                faces.insert(tid, face.clone());
                tasks.spawn(from_client(
                    face.clone(),
                    back.clone(),
                    tid,
                    session.clone(),
                    shared.clone(),
                ));
                face
            }
        };
        if shared.pass_to_client(&session, &buf[..len]) {
            let _ = face.send_to(&buf[..len], client).await;
        }
    }
}

/// What a client sends to one server transfer ID.
async fn from_client(
    face: Arc<UdpSocket>,
    back: Arc<UdpSocket>,
    tid: SocketAddr,
    session: Arc<Session>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, _)) = face.recv_from(&mut buf).await else {
            continue;
        };
        if shared.pass_to_server(&session, &buf[..len]) {
            let _ = back.send_to(&buf[..len], tid).await;
        }
    }
}
