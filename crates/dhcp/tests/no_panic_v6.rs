//! No datagram makes the DHCPv6 decision (or the reading of the addresses
//! a client was leased) panic, and none gets an answer it is not due:
//! truncations, bit flips, option soup, relay chains and noise over OVMF's
//! captured messages, on both ports.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};

use common::fixture;
use common::v6::{edit, ia_na, relay_forward, set};
use kickstand_dhcp::v6::{self, Action, Clients, Context, Port, Source};
use kickstand_dhcp::{HostBoot, HostStatus, Mac};

const FIXTURES: [&str; 6] = [
    "bios-ipxe-information-request",
    "ovmf-pxe-solicit",
    "ovmf-pxe-solicit-uuid",
    "ovmf-http-solicit",
    "ovmf-ip6-solicit",
    "ovmf-pxe-bootserver-request6",
];
const APPLIANCE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const OVMF_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x00, 0x06, 0x02]);
const OVMF_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe00, 0x602);

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Only OVMF has a profile: a mutation that changes the MAC a datagram
/// gives must not be answered.
fn hosts(mac: Mac) -> HostStatus {
    if mac == OVMF_MAC {
        HostStatus::Netboot(HostBoot::ipxe())
    } else {
        HostStatus::Unknown
    }
}

/// The options of a message we wrote (trusted framing), unwrapping
/// Relay-replies to the message inside.
fn inner_options(mut reply: &[u8]) -> Vec<(u16, &[u8])> {
    loop {
        let header = if reply[0] == 13 { 34 } else { 4 };
        let mut opts = Vec::new();
        let mut rest = &reply[header..];
        while !rest.is_empty() {
            let code = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            opts.push((code, &rest[4..4 + len]));
            rest = &rest[4 + len..];
        }
        match opts.iter().find(|(c, _)| reply[0] == 13 && *c == 9) {
            Some((_, inner)) => reply = inner,
            None => return opts,
        }
    }
}

/// Decides `datagram` as it would arrive from the client, a relay and on
/// port 4011; returns how many of them were answered.
fn feed(datagram: &[u8]) -> usize {
    let mut answered = 0;
    // The server's DUID-LL is the one the captured 4011 Request names.
    let ctx = Context::new(APPLIANCE, 8080, Mac([0xde, 0x16, 0xa7, 0xba, 0x23, 0x57]));
    let leased = v6::leased(datagram, &ctx);
    assert!(leased.len() <= v6::MAX_LEASED, "{leased:?}");
    assert!(
        leased
            .iter()
            .all(|a| !a.is_unicast_link_local() && !a.is_multicast() && !a.is_unspecified()),
        "{leased:?}"
    );
    for (ip, port, on) in [
        (OVMF_LINK_LOCAL, 546, Port::Server),
        (APPLIANCE, 547, Port::Server),
        (APPLIANCE, 4011, Port::BootServer),
    ] {
        let source = Source {
            from: SocketAddrV6::new(ip, port, 0, 2),
            port: on,
        };
        let Action::Respond(reply) = v6::decide(datagram, source, &ctx, &hosts, &Clients::new())
        else {
            continue;
        };
        assert_eq!(reply.mac, OVMF_MAC, "answered a MAC without a profile");
        let opts = inner_options(&reply.bytes);
        let codes: Vec<u16> = opts.iter().map(|(c, _)| *c).collect();
        assert!(
            !codes.iter().any(|c| [3, 4, 25].contains(c)),
            "an address of our own: {codes:?}"
        );
        assert!(codes.contains(&2) && codes.contains(&59), "{codes:?}");
        assert!(reply.bytes.len() < 2 * v6::MAX_MESSAGE_LEN);
        answered += 1;
    }
    answered
}

#[test]
fn every_truncation_of_every_fixture() {
    for name in FIXTURES {
        let m = fixture(name);
        for len in 0..=m.len() {
            let _ = feed(&m[..len]);
        }
    }
}

#[test]
fn random_mutations_of_fixtures_plain_and_relayed() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut answered = 0;
    for name in FIXTURES {
        let base = fixture(name);
        for _ in 0..4000 {
            let mut m = base.clone();
            for _ in 0..=rng.below(8) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                m.truncate(rng.below(m.len() + 1));
            }
            answered += feed(&m);
            let mut relayed = m;
            for hop in 0..rng.below(11) {
                relayed = relay_forward(hop as u8, APPLIANCE, OVMF_LINK_LOCAL, &[], &relayed);
            }
            answered += feed(&relayed);
        }
    }
    // The checks on replies above were exercised: many mutations leave
    // the boot client intact.
    assert!(answered > 1000, "{answered} answered");
}

/// OVMF's Request to the office server, three addresses in two IA_NAs:
/// every bit flip and cut of it, plain and relayed.
#[test]
fn random_mutations_of_a_request_with_addresses() {
    let address = |n| Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n);
    let request = edit(&fixture("ovmf-pxe-solicit"), 3, |o| {
        set(o, 2, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 2]);
        set(o, 3, &ia_na(1, &[address(0x1e2), address(0x1e3)]));
        o.push((3, ia_na(2, &[address(0x1e4)])));
    });
    let ctx = Context::new(APPLIANCE, 8080, OVMF_MAC);
    assert_eq!(v6::leased(&request, &ctx).len(), 3);
    let mut rng = Rng(0x5EED);
    let mut reported = 0;
    for len in 0..=request.len() {
        let _ = feed(&request[..len]);
    }
    for _ in 0..20_000 {
        let mut m = request.clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(m.len());
            m[i] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            m = relay_forward(0, APPLIANCE, OVMF_LINK_LOCAL, &[], &m);
        }
        let _ = feed(&m);
        reported += usize::from(!v6::leased(&m, &ctx).is_empty());
    }
    assert!(
        reported > 1000,
        "{reported} mutations still report addresses"
    );
}

#[test]
fn random_option_soup() {
    let mut rng = Rng(42);
    let codes = [1u16, 2, 3, 4, 5, 9, 15, 16, 18, 25, 59, 61, 79];
    for _ in 0..20_000 {
        let mut m = vec![[1, 3, 4, 5, 6, 11, 12][rng.below(7)], 0, 0, 1];
        if m[0] == 12 {
            m.extend((0..33).map(|_| rng.next() as u8));
        }
        for _ in 0..rng.below(10) {
            let code = if rng.below(4) == 0 {
                rng.next() as u16
            } else {
                codes[rng.below(codes.len())]
            };
            let len = rng.below(40);
            m.extend_from_slice(&code.to_be_bytes());
            let said = if rng.below(10) == 0 {
                rng.next() as u16
            } else {
                len as u16
            };
            m.extend_from_slice(&said.to_be_bytes());
            m.extend((0..len).map(|_| rng.next() as u8));
        }
        let _ = feed(&m);
    }
}

#[test]
fn pure_noise() {
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let len = rng.below(700);
        let m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = feed(&m);
    }
}

/// The probe's judge ([`v6::Probe`]) over every cut and bit flip of a
/// rogue server's Reply to it, and the Reply relayed: no panic, and a
/// rogue only where the Reply still names a server and a boot file.
#[test]
fn random_mutations_of_a_reply_to_the_probe() {
    let probe = v6::Probe::new(OVMF_MAC);
    let xid = [0x4b, 0x53, 0x36];
    let rogue = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
    let reply = common::v6::message(
        7,
        xid,
        &[
            (2, vec![0, 1, 0, 1, 0x2e, 0x1c, 0x3a, 1, 2, 0, 0, 0, 0, 9]),
            (1, vec![0, 3, 0, 1, 0x52, 0x54, 0, 0, 6, 2]),
            (59, b"tftp://[fd78::9]/evil.efi".to_vec()),
        ],
    );
    assert!(probe.judge(&reply, rogue, xid, APPLIANCE).is_some());
    for len in 0..reply.len() {
        assert_eq!(
            probe.judge(&reply[..len], rogue, xid, APPLIANCE),
            None,
            "cut at {len}"
        );
    }
    let relayed = relay_forward(0, APPLIANCE, OVMF_LINK_LOCAL, &[], &reply);
    assert_eq!(probe.judge(&relayed, rogue, xid, APPLIANCE), None);
    let mut rng = Rng(0x6E6);
    let mut found = 0;
    for _ in 0..20_000 {
        let mut m = reply.clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(m.len());
            m[i] = rng.next() as u8;
        }
        if let Some(offer) = probe.judge(&m, rogue, xid, APPLIANCE) {
            assert_eq!(offer.server, rogue, "{offer:?}");
            assert!(!offer.offered.is_empty(), "{offer:?}");
            found += 1;
        }
    }
    assert!(found > 1000, "{found} mutations still judged a rogue");
}
