//! Answering the IPv6 router solicitation of an iPXE that ProxyDHCP has
//! just answered (`dhcp.answer_router_solicitations`), so it stops waiting
//! for a router that is not there.
//!
//! iPXE's autoboot waits for every network configurator, IPv6's too: it
//! solicits a router and gives up only some 13 s later, before it even
//! asks for its boot script. Its IPv6 configurator is done at the first
//! solicited advertisement with the M and O flags clear
//! (`ipv6conf_rx_router_advertisement` in iPXE's `src/net/ndp.c`). The
//! advertisement sent here is that and nothing more: router lifetime 0
//! (not a default router), no prefix, no options — it configures nothing.
//!
//! Targeted: each ProxyDHCP answer to iPXE grants its MAC one
//! advertisement for [`GRANT_FOR`] ([`Grants`]; the daemon grants); a
//! solicitation is answered only when the MAC it comes from holds a grant,
//! which it uses up. An installed OS, an installer, a laptop or a stranger
//! soliciting a router gets nothing. Answers go to the solicitor's
//! link-local address alone (RFC 4861 6.2.6 allows it) and share one rate,
//! so a flood of forged solicitations costs a bounded number of packets.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::driver::Boot;
use crate::wire::Mac;

/// How long after its ProxyDHCP answer a machine's solicitation is
/// answered: iPXE solicits from the moment it opens the NIC and gives up
/// after about 13 s.
pub const GRANT_FOR: Duration = Duration::from_secs(30);
/// Grants held at most: a flood of DISCOVERs from forged MACs pushes the
/// oldest out instead of growing the table.
const GRANTS: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");
/// Advertisements sent, all machines together: a rack powering on at once
/// fits the burst.
const ANSWERS: kickstand_limit::Rate = kickstand_limit::Rate::per_second(20, 200);

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// NDP option: the sender's link-layer address (RFC 4861 4.6.1).
const SOURCE_LINK_LAYER: u8 = 1;
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The advertisement every granted solicitation gets: type 134, code 0,
/// current hop limit 0 (unspecified), M=0, O=0, router lifetime 0,
/// reachable time and retransmit timer 0 (unspecified), no options. The
/// checksum (bytes 2–3) is the kernel's to fill in. Written out by hand:
/// 16 bytes, nearly all zero, are not worth a dependency.
pub const ADVERTISEMENT: [u8; 16] = {
    let mut advertisement = [0; 16];
    advertisement[0] = ROUTER_ADVERTISEMENT;
    advertisement
};

/// What became of one router solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `mac` held a grant: it is sent [`ADVERTISEMENT`].
    Answer(Mac),
    Ignore(Ignored),
}

/// Why a solicitation was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    #[error("malformed router solicitation: {0}")]
    Malformed(&'static str),
    /// From the unspecified or a global address: an answer goes to a
    /// link-local one only, and without one the sender's MAC is unknown.
    #[error("not from a link-local address")]
    NotLinkLocal,
    /// No ProxyDHCP answer for this MAC in the last [`GRANT_FOR`], or its
    /// grant was used.
    #[error("{0} was not just answered by ProxyDHCP")]
    NotGranted(Mac),
    /// Over the shared rate of answers; the grant is kept for the next.
    #[error("{0} over the rate of router advertisements")]
    RateLimited(Mac),
}

impl Ignored {
    /// A short, stable name: a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Ignored::Malformed(_) => "malformed",
            Ignored::NotLinkLocal => "not-link-local",
            Ignored::NotGranted(_) => "not-granted",
            Ignored::RateLimited(_) => "rate-limited",
        }
    }
}

/// The MACs ProxyDHCP just answered, each good for one advertisement, and
/// the rate all advertisements share.
#[derive(Debug)]
pub struct Grants {
    inner: Mutex<Inner>,
    /// Origin of the times below.
    started: Instant,
}

#[derive(Debug)]
struct Inner {
    /// MAC → when its grant was made.
    granted: LruCache<Mac, Duration>,
    answers: kickstand_limit::Flow,
}

impl Default for Grants {
    fn default() -> Grants {
        Grants {
            inner: Mutex::new(Inner {
                granted: LruCache::new(GRANTS),
                answers: kickstand_limit::Flow::new(ANSWERS),
            }),
            started: Instant::now(),
        }
    }
}

impl Grants {
    /// ProxyDHCP answered `mac`: its next solicitation within
    /// [`GRANT_FOR`] is answered.
    pub fn grant(&self, mac: Mac) {
        self.grant_at(mac, self.started.elapsed());
    }

    fn grant_at(&self, mac: Mac, now: Duration) {
        self.lock().granted.put(mac, now);
    }

    /// Uses up `mac`'s grant if it holds one and the rate allows.
    fn take_at(&self, mac: Mac, now: Duration) -> Result<(), Ignored> {
        let mut inner = self.lock();
        let fresh = inner
            .granted
            .peek(&mac)
            .is_some_and(|at| now.saturating_sub(*at) < GRANT_FOR);
        if !fresh {
            return Err(Ignored::NotGranted(mac));
        }
        if !inner.answers.take(now) {
            return Err(Ignored::RateLimited(mac));
        }
        inner.granted.pop(&mac);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decides one solicitation, `packet` being its ICMPv6 message (type 133
/// and a hop limit of 255 checked by the socket's filter) from `source`.
pub fn decide(packet: &[u8], source: Ipv6Addr, grants: &Grants) -> Outcome {
    decide_at(packet, source, grants, grants.started.elapsed())
}

fn decide_at(packet: &[u8], source: Ipv6Addr, grants: &Grants, now: Duration) -> Outcome {
    let answer = solicitor(packet, source).and_then(|mac| {
        grants.take_at(mac, now)?;
        Ok(mac)
    });
    match answer {
        Ok(mac) => Outcome::Answer(mac),
        Err(why) => Outcome::Ignore(why),
    }
}

/// The MAC a solicitation comes from: its source link-layer address
/// option, else the EUI-64 in its link-local source address. Read
/// defensively: every option must be whole, and none may be empty (RFC
/// 4861 6.1.1).
fn solicitor(packet: &[u8], source: Ipv6Addr) -> Result<Mac, Ignored> {
    // Type, code, checksum, then four reserved bytes.
    let (header, mut options) = packet
        .split_at_checked(8)
        .ok_or(Ignored::Malformed("shorter than 8 bytes"))?;
    if header[0] != ROUTER_SOLICITATION || header[1] != 0 {
        return Err(Ignored::Malformed("not type 133 code 0"));
    }
    let mut link_layer = None;
    while let [kind, units, ..] = *options {
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return Err(Ignored::Malformed("an option of bad length"));
        }
        let (option, rest) = options.split_at(len);
        if kind == SOURCE_LINK_LAYER {
            // Ethernet's: two bytes of header and six of address.
            let [_, _, a, b, c, d, e, f] = *option else {
                return Err(Ignored::Malformed(
                    "a link-layer address that is not Ethernet",
                ));
            };
            link_layer = Some(Mac([a, b, c, d, e, f]));
        }
        options = rest;
    }
    if !options.is_empty() {
        return Err(Ignored::Malformed("a truncated option"));
    }
    if !source.is_unicast_link_local() {
        return Err(Ignored::NotLinkLocal);
    }
    link_layer
        .or_else(|| eui64_mac(source))
        .ok_or(Ignored::Malformed(
            "no link-layer address and no EUI-64 source",
        ))
}

/// The MAC an EUI-64 interface identifier was made from.
fn eui64_mac(address: Ipv6Addr) -> Option<Mac> {
    let o = address.octets();
    (o[11] == 0xff && o[12] == 0xfe).then(|| Mac([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
}

/// The socket router solicitations arrive on, see [`bind_solicitations`].
#[derive(Debug)]
pub struct Solicitations(UdpSocket);

/// A raw ICMPv6 socket on `interface` that receives the router
/// solicitations sent there and nothing else: joined to all-routers
/// (ff02::2) there, and a socket filter in the kernel keeps only type 133
/// with a hop limit of 255 (RFC 4861 6.1.1: anything less came through a
/// router), so other ICMPv6 never wakes the daemon. Sends with hop limit
/// 255; the kernel computes the checksum. Needs `CAP_NET_RAW`.
pub fn bind_solicitations(interface: &str) -> io::Result<Solicitations> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.attach_filter(&SOLICITATIONS_ONLY)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.join_multicast_v6(&ALL_ROUTERS, interface_index(interface)?)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_nonblocking(true)?;
    // Datagram calls (recvfrom, sendto) are all a raw socket needs, and
    // tokio's UDP socket makes them without `unsafe`; nothing here is UDP.
    // Replies go to the address received, whose port field is 0 as a raw
    // socket wants it.
    let datagrams: std::net::UdpSocket = socket.into();
    Ok(Solicitations(UdpSocket::from_std(datagrams)?))
}

/// Classic BPF over the ICMPv6 message, its IPv6 header reached at
/// `SKF_NET_OFF`: accept type 133 with hop limit 255, drop the rest.
const SOLICITATIONS_ONLY: [SockFilter; 6] = {
    const LOAD_BYTE: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const NETWORK_HEADER: u32 = (-0x10_0000_i32) as u32; // SKF_NET_OFF
    const HOP_LIMIT: u32 = NETWORK_HEADER + 7;
    [
        SockFilter::new(LOAD_BYTE, 0, 0, 0),
        SockFilter::new(JUMP_IF_EQUAL, 0, 3, ROUTER_SOLICITATION as u32),
        SockFilter::new(LOAD_BYTE, 0, 0, HOP_LIMIT),
        SockFilter::new(JUMP_IF_EQUAL, 0, 1, 255),
        SockFilter::new(RETURN, 0, 0, u32::MAX),
        SockFilter::new(RETURN, 0, 0, 0),
    ]
};

/// The kernel's index of `interface`, which joining a group on it needs
/// (the standard library has no `if_nametoindex`).
fn interface_index(interface: &str) -> io::Result<u32> {
    let path = format!("/sys/class/net/{interface}/ifindex");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{path} holds no interface index")))
}

/// Answers solicitations on `socket` until `shutdown`: every one decided
/// by [`decide`] against `grants`, and told to `boot` ([`Boot::solicited`]).
pub async fn answer_solicitations<B: Boot>(
    socket: Solicitations,
    grants: Arc<Grants>,
    boot: Arc<B>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let Solicitations(socket) = socket;
    // IPv6's minimum MTU: a solicitation (8 bytes and an option or two)
    // fits many times over; anything longer is read cut short.
    let mut buf = [0u8; 1280];
    loop {
        let (len, from) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(e) => { debug!(error = %e, "router solicitation: receive failed"); continue; }
            },
        };
        let SocketAddr::V6(from) = from else { continue };
        let outcome = decide(&buf[..len], *from.ip(), &grants);
        boot.solicited(*from.ip(), &outcome);
        if let Outcome::Answer(mac) = outcome
            && let Err(e) = socket.send_to(&ADVERTISEMENT, SocketAddr::V6(from)).await
        {
            warn!(%mac, to = %from, error = %e, "router advertisement: send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x01]);
    /// iPXE's link-local address on [`MAC`].
    const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3401);

    fn solicitation(options: &[u8]) -> Vec<u8> {
        let mut packet = vec![ROUTER_SOLICITATION, 0, 0xab, 0xcd, 0, 0, 0, 0];
        packet.extend_from_slice(options);
        packet
    }

    fn with_link_layer(mac: [u8; 6]) -> Vec<u8> {
        let mut option = vec![SOURCE_LINK_LAYER, 1];
        option.extend_from_slice(&mac);
        solicitation(&option)
    }

    fn granted(mac: Mac) -> Grants {
        let grants = Grants::default();
        grants.grant_at(mac, Duration::ZERO);
        grants
    }

    #[test]
    fn the_advertisement_configures_nothing() {
        assert_eq!(ADVERTISEMENT.len(), 16);
        assert_eq!(ADVERTISEMENT[0], 134, "type");
        assert_eq!(ADVERTISEMENT[5] & 0xc0, 0, "M and O clear");
        assert_eq!(&ADVERTISEMENT[6..8], [0, 0], "router lifetime 0");
    }

    #[test]
    fn the_solicitor_is_named_by_its_option_else_its_address() {
        let other = [0x52, 0x54, 0x00, 0x99, 0x99, 0x01];
        // What, the packet, its source, and who it is from.
        type Case = (&'static str, Vec<u8>, Ipv6Addr, Result<Mac, Ignored>);
        let table: &[Case] = &[
            ("option", with_link_layer(other), LINK_LOCAL, Ok(Mac(other))),
            ("EUI-64 source", solicitation(&[]), LINK_LOCAL, Ok(MAC)),
            (
                "unspecified source",
                solicitation(&[]),
                Ipv6Addr::UNSPECIFIED,
                Err(Ignored::NotLinkLocal),
            ),
            (
                "global source",
                with_link_layer(other),
                "2001:db8::1".parse().expect("address"),
                Err(Ignored::NotLinkLocal),
            ),
            (
                "privacy address, no option",
                solicitation(&[]),
                "fe80::1234:5678:9abc:def0".parse().expect("address"),
                Err(Ignored::Malformed(
                    "no link-layer address and no EUI-64 source",
                )),
            ),
            (
                "short",
                vec![ROUTER_SOLICITATION, 0, 0],
                LINK_LOCAL,
                Err(Ignored::Malformed("shorter than 8 bytes")),
            ),
            (
                "code 1",
                vec![ROUTER_SOLICITATION, 1, 0, 0, 0, 0, 0, 0],
                LINK_LOCAL,
                Err(Ignored::Malformed("not type 133 code 0")),
            ),
            (
                "an empty option",
                solicitation(&[SOURCE_LINK_LAYER, 0, 0, 0, 0, 0, 0, 0]),
                LINK_LOCAL,
                Err(Ignored::Malformed("an option of bad length")),
            ),
            (
                "an option past the end",
                solicitation(&[SOURCE_LINK_LAYER, 2, 1, 2, 3, 4, 5, 6]),
                LINK_LOCAL,
                Err(Ignored::Malformed("an option of bad length")),
            ),
            (
                "a 14-byte link-layer address",
                solicitation(&[
                    SOURCE_LINK_LAYER,
                    2,
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                    8,
                    9,
                    10,
                    11,
                    12,
                    13,
                    14,
                ]),
                LINK_LOCAL,
                Err(Ignored::Malformed(
                    "a link-layer address that is not Ethernet",
                )),
            ),
            (
                "a lone option byte",
                solicitation(&[SOURCE_LINK_LAYER]),
                LINK_LOCAL,
                Err(Ignored::Malformed("a truncated option")),
            ),
        ];
        for (what, packet, source, want) in table {
            assert_eq!(solicitor(packet, *source), *want, "{what}");
        }
    }

    #[test]
    fn a_grant_answers_one_solicitation_within_its_time() {
        let packet = solicitation(&[]);
        let grants = granted(MAC);
        let at = |s| Duration::from_secs(s);
        assert_eq!(
            decide_at(&packet, LINK_LOCAL, &grants, at(5)),
            Outcome::Answer(MAC)
        );
        assert_eq!(
            decide_at(&packet, LINK_LOCAL, &grants, at(6)),
            Outcome::Ignore(Ignored::NotGranted(MAC)),
            "used up"
        );
        let grants = granted(MAC);
        assert_eq!(
            decide_at(&packet, LINK_LOCAL, &grants, GRANT_FOR),
            Outcome::Ignore(Ignored::NotGranted(MAC)),
            "expired"
        );
        assert_eq!(
            decide_at(&packet, LINK_LOCAL, &Grants::default(), at(1)),
            Outcome::Ignore(Ignored::NotGranted(MAC)),
            "never granted"
        );
    }

    #[test]
    fn a_flood_is_held_to_the_rate_and_keeps_the_grants_it_could_not_answer() {
        let grants = Grants::default();
        let macs: Vec<Mac> = (0..=255u8).map(|i| Mac([2, 0, 0, 0, 1, i])).collect();
        for mac in &macs {
            grants.grant_at(*mac, Duration::ZERO);
        }
        let answered = macs
            .iter()
            .filter(|mac| grants.take_at(**mac, Duration::ZERO).is_ok())
            .count();
        assert!(answered < macs.len(), "{answered} answered at once");
        let late = macs[answered];
        assert_eq!(
            grants.take_at(late, Duration::ZERO),
            Err(Ignored::RateLimited(late))
        );
        assert_eq!(
            grants.take_at(late, Duration::from_secs(1)),
            Ok(()),
            "its grant waited"
        );
    }
}
