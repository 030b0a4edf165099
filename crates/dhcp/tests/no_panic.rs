//! No input makes the decision panic: truncations, bit flips and noise over
//! the captured fixtures, through both proxy and full mode.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::Ipv4Addr;

use common::fixture;
use kickstand_dhcp::full::{self, Leases, Pool};
use kickstand_dhcp::{Action, Context, HostBoot, HostStatus, Mac, Mode, Port, decide};

const FIXTURES: [&str; 7] = [
    "bios-ipxe-discover",
    "bios-ipxe-request",
    "ovmf-pxe-discover",
    "ovmf-pxe-request",
    "ovmf-http-discover",
    "uefi-ipxe-discover",
    "udhcpc-discover",
];

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

fn everyone(_: Mac) -> HostStatus {
    HostStatus::Netboot(HostBoot::ipxe())
}

struct Harness {
    ctx: Context,
    full_ctx: Context,
    leases: Leases,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(
            Ipv4Addr::new(10, 77, 0, 100),
            Ipv4Addr::new(10, 77, 0, 103),
            Ipv4Addr::new(255, 255, 255, 0),
            Some(Ipv4Addr::new(10, 77, 0, 1)),
            vec![Ipv4Addr::new(10, 77, 0, 1)],
            3600,
        )
        .unwrap();
        let leases = Leases::open(dir.path().join("leases.json"), pool).unwrap();
        let ctx = Context::new(Ipv4Addr::new(10, 77, 0, 1), 8080);
        let mut full_ctx = ctx.clone();
        full_ctx.mode = Mode::Full;
        Harness {
            ctx,
            full_ctx,
            leases,
            _dir: dir,
        }
    }

    fn feed(&mut self, packet: &[u8]) {
        for port in [Port::Dhcp, Port::BootServer] {
            if let Action::Respond(r) = decide(packet, &self.ctx, &everyone, port) {
                assert!(r.bytes.len() >= 300);
                assert_eq!(r.bytes[16..20], [0, 0, 0, 0], "proxy reply with yiaddr set");
            }
            let _ = full::decide(
                packet,
                &self.full_ctx,
                &everyone,
                port,
                &mut self.leases,
                1_000_000,
            );
        }
    }
}

#[test]
fn every_truncation_of_every_fixture() {
    let mut h = Harness::new();
    for name in FIXTURES {
        let p = fixture(name);
        for len in 0..=p.len() {
            h.feed(&p[..len]);
        }
    }
}

#[test]
fn random_mutations_of_fixtures() {
    let mut h = Harness::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for name in FIXTURES {
        let base = fixture(name);
        for _ in 0..4000 {
            let mut p = base.clone();
            for _ in 0..=rng.below(8) {
                let i = rng.below(p.len());
                // Bias towards the options area, where the framing lives.
                let i = if rng.below(2) == 0 {
                    240 + i % (p.len() - 240)
                } else {
                    i
                };
                p[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                p.truncate(rng.below(p.len() + 1));
            }
            h.feed(&p);
        }
    }
}

#[test]
fn random_option_soup() {
    let mut h = Harness::new();
    let mut rng = Rng(42);
    let base = fixture("ovmf-pxe-discover");
    for _ in 0..20_000 {
        let mut p = base[..240].to_vec();
        p[2] = if rng.below(8) == 0 {
            rng.next() as u8
        } else {
            6
        };
        for _ in 0..rng.below(12) {
            let code = rng.next() as u8;
            let len = rng.below(20);
            p.push(code);
            p.push(if rng.below(10) == 0 {
                rng.next() as u8
            } else {
                len as u8
            });
            p.extend((0..len).map(|_| rng.next() as u8));
        }
        h.feed(&p);
    }
}

#[test]
fn pure_noise() {
    let mut h = Harness::new();
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let len = rng.below(700);
        let p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        h.feed(&p);
    }
}
