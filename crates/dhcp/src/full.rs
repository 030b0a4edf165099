//! `mode: full`: a small address server for an isolated rack that has no
//! office DHCP server. Leases live in memory and in one JSON file, written
//! by temp file + rename so a crash leaves the old or the new file, never
//! half of one. The boot half of each answer is the proxy's.
//!
//! A DECLINE (the client found the address in use) is taken only from the
//! MAC the table gave that address to, and keeps it out of the pool for
//! [`DECLINE_HOLD_SECS`]: a stranger's DECLINEs cannot empty the pool, and
//! a conflict that was real costs the pool an address for a while, not
//! for good.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use dhcproto::v4::{DhcpOption, MessageType};
use serde::{Deserialize, Serialize};

use crate::proxy::{self, Action, Context, Grant, HostLookup, Mode, Port, Reason, Reply};
use crate::wire::{Mac, Request, msg, opt};

/// How long an offered address is held for the client's REQUEST.
const OFFER_HOLD_SECS: u64 = 60;

/// How long a declined address stays out of the pool. RFC 2131 (4.3.3)
/// has the server mark it unavailable and leaves its reuse to the server;
/// dnsmasq keeps a declined address out for ten minutes
/// (`DECLINE_BACKOFF`) and gives that client another. Long enough that the
/// client that found the conflict is offered another address, not the
/// same one back; short enough that a conflict that has gone (a machine
/// switched off, a static address corrected) does not shrink a small pool
/// for good. An address still in conflict is declined again by the next
/// client it is given to.
pub const DECLINE_HOLD_SECS: u64 = 600;

/// The address pool from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: u32,
}

/// A pool or lease file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("pool start {start} is after its end {end}")]
    EmptyPool { start: Ipv4Addr, end: Ipv4Addr },
    #[error("pool of {0} addresses is larger than 65536")]
    PoolTooLarge(u64),
    #[error("lease time must be at least 60 seconds")]
    LeaseTooShort,
    #[error("lease file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("lease file {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Pool {
    pub fn new(
        start: Ipv4Addr,
        end: Ipv4Addr,
        netmask: Ipv4Addr,
        router: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
        lease_secs: u32,
    ) -> Result<Self, LeaseError> {
        let (s, e) = (u32::from(start), u32::from(end));
        if s > e {
            return Err(LeaseError::EmptyPool { start, end });
        }
        let size = u64::from(e - s) + 1;
        if size > 65536 {
            return Err(LeaseError::PoolTooLarge(size));
        }
        if lease_secs < 60 {
            return Err(LeaseError::LeaseTooShort);
        }
        Ok(Pool {
            start,
            end,
            netmask,
            router,
            dns,
            lease_secs,
        })
    }

    fn contains(&self, addr: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&addr)
    }

    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.start)..=u32::from(self.end)).map(Ipv4Addr::from)
    }
}

/// One address given to one MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    pub mac: Mac,
    pub addr: Ipv4Addr,
    /// Unix seconds.
    pub expires: u64,
    pub state: LeaseState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LeaseState {
    Offered,
    Bound,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    leases: Vec<Lease>,
    /// Addresses a client DECLINEd: something else answered there.
    declined: Vec<Declined>,
}

/// One declined address in the lease file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Declined {
    /// When it was declined (Unix seconds), so its hold outlasts a restart.
    At { addr: Ipv4Addr, at: u64 },
    /// The address alone, as files written before declines expired list
    /// it. When is unknown, so its hold is taken as over: such entries are
    /// what a stranger's DECLINEs used to leave, and an address still in
    /// conflict is declined again by the next client given it.
    Undated(Ipv4Addr),
}

impl Declined {
    fn entry(self) -> (Ipv4Addr, u64) {
        match self {
            Declined::At { addr, at } => (addr, at),
            Declined::Undated(addr) => (addr, 0),
        }
    }
}

/// The lease table and the file it persists to.
#[derive(Debug)]
pub struct Leases {
    pool: Pool,
    path: PathBuf,
    by_addr: BTreeMap<Ipv4Addr, Lease>,
    /// Declined addresses and when (Unix seconds); at most the pool's
    /// addresses, since only a lease's holder can decline it.
    declined: BTreeMap<Ipv4Addr, u64>,
    dirty: bool,
}

/// Why a REQUEST was refused with a NAK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    OutsidePool,
    Taken,
    Declined,
}

impl Leases {
    /// Load the table from `path`, or start empty when it does not exist.
    pub fn open(path: impl Into<PathBuf>, pool: Pool) -> Result<Self, LeaseError> {
        let path = path.into();
        let file: LeaseFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| LeaseError::Json {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => LeaseFile::default(),
            Err(source) => return Err(LeaseError::Io { path, source }),
        };
        let by_addr = file.leases.into_iter().map(|l| (l.addr, l)).collect();
        Ok(Leases {
            pool,
            path,
            by_addr,
            declined: file.declined.into_iter().map(Declined::entry).collect(),
            dirty: false,
        })
    }

    /// Write the table if it changed since the last save.
    pub fn save(&mut self) -> Result<(), LeaseError> {
        if !self.dirty {
            return Ok(());
        }
        let file = LeaseFile {
            leases: self.by_addr.values().cloned().collect(),
            declined: self
                .declined
                .iter()
                .map(|(&addr, &at)| Declined::At { addr, at })
                .collect(),
        };
        write_atomic(&self.path, &file).map_err(|source| LeaseError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.dirty = false;
        Ok(())
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.by_addr.values()
    }

    /// Whether `addr` is out of the pool at `now` (Unix seconds) because
    /// its holder declined it.
    pub fn is_declined(&self, addr: Ipv4Addr, now: u64) -> bool {
        self.declined
            .get(&addr)
            .is_some_and(|&at| still_held(at, now))
    }

    fn usable_by(&self, mac: Mac, addr: Ipv4Addr, now: u64) -> Result<(), Refusal> {
        if !self.pool.contains(addr) {
            return Err(Refusal::OutsidePool);
        }
        if self.is_declined(addr, now) {
            return Err(Refusal::Declined);
        }
        match self.by_addr.get(&addr) {
            Some(l) if l.mac != mac && l.expires > now => Err(Refusal::Taken),
            _ => Ok(()),
        }
    }

    /// The client's current address, the one it asks for, or the first free one.
    fn offer(&mut self, mac: Mac, requested: Option<Ipv4Addr>, now: u64) -> Option<Ipv4Addr> {
        let own = self.by_addr.values().find(|l| l.mac == mac).map(|l| l.addr);
        let addr = own
            .into_iter()
            .chain(requested)
            .chain(self.pool.addresses())
            .find(|&a| self.usable_by(mac, a, now).is_ok())?;
        if self
            .by_addr
            .get(&addr)
            .is_none_or(|l| l.state == LeaseState::Offered || l.mac != mac)
        {
            self.put(Lease {
                mac,
                addr,
                expires: now + OFFER_HOLD_SECS,
                state: LeaseState::Offered,
            });
        }
        Some(addr)
    }

    fn bind(&mut self, mac: Mac, addr: Ipv4Addr, now: u64) -> Result<(), Refusal> {
        self.usable_by(mac, addr, now)?;
        let expires = now + u64::from(self.pool.lease_secs);
        self.put(Lease {
            mac,
            addr,
            expires,
            state: LeaseState::Bound,
        });
        Ok(())
    }

    fn put(&mut self, lease: Lease) {
        // One address per MAC: moving drops the old one.
        self.by_addr
            .retain(|a, l| l.mac != lease.mac || *a == lease.addr);
        self.by_addr.insert(lease.addr, lease);
        self.dirty = true;
    }

    fn forget(&mut self, mac: Mac, addr: Option<Ipv4Addr>) {
        let before = self.by_addr.len();
        self.by_addr
            .retain(|a, l| l.mac != mac || addr.is_some_and(|x| x != *a));
        self.dirty |= before != self.by_addr.len();
    }

    /// Whether the table gave `addr` to `mac`: the only client whose
    /// DECLINE of it counts.
    fn holds(&self, mac: Mac, addr: Ipv4Addr) -> bool {
        self.by_addr.get(&addr).is_some_and(|l| l.mac == mac)
    }

    /// Takes `addr` from its holder `mac` and out of the pool from `now`;
    /// holds that are over are dropped.
    fn decline(&mut self, mac: Mac, addr: Ipv4Addr, now: u64) {
        self.forget(mac, Some(addr));
        self.declined.retain(|_, &mut at| still_held(at, now));
        if self.pool.contains(addr) {
            self.declined.insert(addr, now);
        }
        self.dirty = true;
    }

    fn grant(&self, yiaddr: Ipv4Addr, with_lease_time: bool) -> Grant {
        let p = &self.pool;
        let mut options = vec![DhcpOption::SubnetMask(p.netmask)];
        options.extend(p.router.map(|r| DhcpOption::Router(vec![r])));
        if !p.dns.is_empty() {
            options.push(DhcpOption::DomainNameServer(p.dns.clone()));
        }
        if with_lease_time {
            options.push(DhcpOption::AddressLeaseTime(p.lease_secs));
            options.push(DhcpOption::Renewal(p.lease_secs / 2));
            options.push(DhcpOption::Rebinding(p.lease_secs / 8 * 7));
        }
        Grant { yiaddr, options }
    }
}

/// Whether an address declined at `at` is still out of the pool at `now`.
fn still_held(at: u64, now: u64) -> bool {
    now < at.saturating_add(DECLINE_HOLD_SECS)
}

fn write_atomic(path: &Path, file: &LeaseFile) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, file)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Decide what full mode does with one packet, updating `leases` in memory
/// (the caller persists them with [`Leases::save`] before sending).
/// Port-4011 requests are the proxy's.
pub fn decide<H: HostLookup + ?Sized>(
    packet: &[u8],
    ctx: &Context,
    hosts: &H,
    arrived_on: Port,
    leases: &mut Leases,
    now: u64,
) -> Action {
    if ctx.mode != Mode::Full || arrived_on == Port::BootServer {
        return proxy::decide(packet, ctx, hosts, arrived_on);
    }
    match full(packet, ctx, hosts, leases, now) {
        Ok(reply) => Action::Respond(reply),
        Err(reason) => Action::Ignore(reason),
    }
}

fn full<H: HostLookup + ?Sized>(
    packet: &[u8],
    ctx: &Context,
    hosts: &H,
    leases: &mut Leases,
    now: u64,
) -> Result<Reply, Reason> {
    let req = Request::parse(packet)?;
    if !req.is_boot_request() {
        return Err(Reason::NotBootRequest);
    }
    let mac = req.mac;
    let requested = req.address_option(opt::REQUESTED_ADDRESS)?;
    let ciaddr = Some(req.header.ciaddr()).filter(|a| !a.is_unspecified());
    let mut leased = None;
    let (kind, grant) = match req.message_type()?.ok_or(Reason::NotDhcp)? {
        msg::DISCOVER => {
            let addr = leases
                .offer(mac, requested, now)
                .ok_or(Reason::PoolExhausted)?;
            (MessageType::Offer, Some(leases.grant(addr, true)))
        }
        msg::REQUEST => {
            match req.address_option(opt::SERVER_ID)? {
                Some(id) if id != ctx.address => {
                    // The client chose another server's offer: free ours.
                    leases.forget(mac, None);
                    return Err(Reason::ForOtherServer(id));
                }
                _ => {}
            }
            let addr = requested.or(ciaddr).ok_or(Reason::NoServerId)?;
            match leases.bind(mac, addr, now) {
                Ok(()) => {
                    leased = Some(addr);
                    (MessageType::Ack, Some(leases.grant(addr, true)))
                }
                Err(_) => (MessageType::Nak, None),
            }
        }
        msg::DECLINE => {
            let addr = requested.ok_or(Reason::UnhandledMessageType(msg::DECLINE))?;
            if !leases.holds(mac, addr) {
                return Err(Reason::DeclineNotHeld(addr));
            }
            leases.decline(mac, addr, now);
            return Err(Reason::Declined(addr));
        }
        msg::RELEASE => {
            let addr = ciaddr.ok_or(Reason::UnhandledMessageType(msg::RELEASE))?;
            leases.forget(mac, Some(addr));
            return Err(Reason::Released(addr));
        }
        msg::INFORM => (
            MessageType::Ack,
            Some(leases.grant(Ipv4Addr::UNSPECIFIED, false)),
        ),
        other => return Err(Reason::UnhandledMessageType(other)),
    };
    // Address clients get an address even without a profile; only the boot
    // half depends on the profile, exactly as in proxy mode.
    let plan = match kind {
        MessageType::Nak => None,
        _ => proxy::boot_plan(&req, ctx, hosts).ok(),
    };
    let dest = match kind {
        // RFC 2131 4.3.2: a NAK without a relay is broadcast.
        MessageType::Nak if req.header.giaddr().is_unspecified() => proxy::Destination::Broadcast,
        _ => proxy::destination(&req, Port::Dhcp),
    };
    let bytes = proxy::encode(&req, ctx, kind, plan.as_ref(), grant.as_ref())?;
    Ok(Reply {
        bytes,
        dest,
        mac,
        firmware: plan.as_ref().map(|p| p.firmware),
        client_arch: proxy::reported_arch(&req),
        boot_file: plan.map(|p| p.file),
        leased,
    })
}
