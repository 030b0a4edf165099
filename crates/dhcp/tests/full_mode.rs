//! `mode: full`: addresses from a pool, persisted leases, DECLINE (from
//! the holder only, for a while).
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::{decode, edit, fixture, option, set};
use dhcproto::v4::MessageType;
use kickstand_dhcp::full::{self, LeaseError, LeaseState, Leases, Pool};
use kickstand_dhcp::{Action, Context, Destination, HostBoot, HostStatus, Mac, Mode, Port, Reason};

const US: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const NOW: u64 = 1_800_000_000;

fn pool(size: u8) -> Pool {
    Pool::new(
        Ipv4Addr::new(10, 77, 0, 100),
        Ipv4Addr::new(10, 77, 0, 99 + size),
        Ipv4Addr::new(255, 255, 255, 0),
        Some(US),
        vec![Ipv4Addr::new(10, 77, 0, 53)],
        3600,
    )
    .unwrap()
}

fn ctx() -> Context {
    let mut c = Context::new(US, 8080);
    c.mode = Mode::Full;
    c
}

fn hosts(_: Mac) -> HostStatus {
    HostStatus::Netboot(HostBoot::ipxe())
}

fn with_mac(p: &[u8], last: u8) -> Vec<u8> {
    let mut p = p.to_vec();
    p[33] = last;
    p
}

fn request(p: &[u8], addr: Ipv4Addr) -> Vec<u8> {
    edit(p, |o| {
        set(o, 53, &[3]);
        set(o, 50, &addr.octets());
        set(o, 54, &US.octets());
    })
}

fn msg(p: &[u8], kind: u8, addr: Ipv4Addr) -> Vec<u8> {
    edit(p, |o| {
        set(o, 53, &[kind]);
        set(o, 50, &addr.octets());
    })
}

fn run(p: &[u8], leases: &mut Leases, now: u64) -> Action {
    full::decide(p, &ctx(), &hosts, Port::Dhcp, leases, now)
}

/// (message type, yiaddr, boot file) of a reply.
fn answer(action: Action) -> (MessageType, Ipv4Addr, Option<String>) {
    let Action::Respond(r) = action else {
        panic!("expected a reply, got {action:?}")
    };
    assert!(r.bytes.len() >= 300);
    let m = decode(&r.bytes);
    (m.opts().msg_type().unwrap(), m.yiaddr(), r.boot_file)
}

fn open(path: &Path, size: u8) -> Leases {
    Leases::open(path, pool(size)).unwrap()
}

#[test]
fn offer_request_ack_with_and_without_boot_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut leases = open(&dir.path().join("leases.json"), 4);
    let plain = fixture("udhcpc-discover");
    let Action::Respond(r) = run(&plain, &mut leases, NOW) else {
        panic!()
    };
    assert_eq!(r.dest, Destination::Broadcast);
    let m = decode(&r.bytes);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 77, 0, 100));
    assert_eq!(option(&r.bytes, 1).unwrap(), [255, 255, 255, 0]);
    assert_eq!(option(&r.bytes, 3).unwrap(), US.octets());
    assert_eq!(option(&r.bytes, 6).unwrap(), [10, 77, 0, 53]);
    assert_eq!(option(&r.bytes, 51).unwrap(), 3600u32.to_be_bytes());
    assert_eq!(option(&r.bytes, 54).unwrap(), US.octets());
    assert_eq!(
        option(&r.bytes, 60),
        None,
        "no boot info for a non-PXE client"
    );
    assert_eq!(option(&r.bytes, 67), None);

    let pxe = fixture("ovmf-pxe-discover");
    let (kind, addr, file) = answer(run(&pxe, &mut leases, NOW));
    assert_eq!(
        (kind, addr, file.as_deref()),
        (
            MessageType::Offer,
            Ipv4Addr::new(10, 77, 0, 101),
            Some("ipxe.efi")
        )
    );
    let (kind, addr, file) = answer(run(&request(&pxe, addr), &mut leases, NOW + 1));
    assert_eq!(
        (kind, addr, file.as_deref()),
        (
            MessageType::Ack,
            Ipv4Addr::new(10, 77, 0, 101),
            Some("ipxe.efi")
        )
    );
    let bound: Vec<_> = leases
        .leases()
        .filter(|l| l.state == LeaseState::Bound)
        .map(|l| l.addr)
        .collect();
    assert_eq!(bound, [Ipv4Addr::new(10, 77, 0, 101)]);
    // The same client asking again gets the same address.
    assert_eq!(
        answer(run(&pxe, &mut leases, NOW + 2)).1,
        Ipv4Addr::new(10, 77, 0, 101)
    );
}

/// The address an ACK gives is where the machine is: the daemon hands
/// the host's build token only there. An OFFER gives nothing yet.
#[test]
fn only_an_ack_names_the_leased_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut leases = open(&dir.path().join("leases.json"), 4);
    let pxe = fixture("ovmf-pxe-discover");
    let Action::Respond(offer) = run(&pxe, &mut leases, NOW) else {
        panic!("no offer")
    };
    assert_eq!(offer.leased, None);
    let addr = decode(&offer.bytes).yiaddr();
    let Action::Respond(ack) = run(&request(&pxe, addr), &mut leases, NOW + 1) else {
        panic!("no ack")
    };
    assert_eq!(ack.leased, Some(addr));
}

#[test]
fn leases_survive_a_restart_and_are_never_given_to_another_mac() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    let client = fixture("udhcpc-discover");
    {
        let mut leases = open(&path, 2);
        let (_, addr, _) = answer(run(&client, &mut leases, NOW));
        answer(run(&request(&client, addr), &mut leases, NOW));
        leases.save().unwrap();
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["leases.json"],
        "the temp file was renamed, not left behind"
    );

    let mut leases = open(&path, 2);
    let taken = Ipv4Addr::new(10, 77, 0, 100);
    assert!(
        leases
            .leases()
            .any(|l| l.addr == taken && l.state == LeaseState::Bound)
    );
    let other = with_mac(&client, 0x10);
    // Asking for the taken address gets another one ...
    let ask = edit(&other, |o| set(o, 50, &taken.octets()));
    assert_eq!(
        answer(run(&ask, &mut leases, NOW + 5)).1,
        Ipv4Addr::new(10, 77, 0, 101)
    );
    // ... and REQUESTing it outright is refused.
    assert_eq!(
        answer(run(&request(&other, taken), &mut leases, NOW + 5)).0,
        MessageType::Nak
    );
    // A third MAC finds the pool full while both are held.
    let third = with_mac(&client, 0x11);
    assert_eq!(
        run(&third, &mut leases, NOW + 6),
        Action::Ignore(Reason::PoolExhausted)
    );
    // After the lease expires the address is free again.
    assert_eq!(answer(run(&third, &mut leases, NOW + 3600 + 100)).1, taken);
}

#[test]
fn a_strangers_declines_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    let client = fixture("udhcpc-discover");
    let held = Ipv4Addr::new(10, 77, 0, 100);
    {
        let mut leases = open(&path, 3);
        answer(run(&request(&client, held), &mut leases, NOW));
        // One stranger, eleven DECLINEs: every address of the pool, the
        // held one among them, some twice.
        let stranger = with_mac(&client, 0x66);
        for i in 0..11u8 {
            let addr = Ipv4Addr::new(10, 77, 0, 100 + i % 3);
            assert_eq!(
                run(&msg(&stranger, 4, addr), &mut leases, NOW),
                Action::Ignore(Reason::DeclineNotHeld(addr))
            );
        }
        leases.save().unwrap();
    }
    let mut leases = open(&path, 3);
    assert!((100..103).all(|i| !leases.is_declined(Ipv4Addr::new(10, 77, 0, i), NOW)));
    assert!(
        leases
            .leases()
            .any(|l| l.addr == held && l.state == LeaseState::Bound),
        "the holder keeps its lease"
    );
    assert_eq!(
        answer(run(&with_mac(&client, 0x20), &mut leases, NOW)).1,
        Ipv4Addr::new(10, 77, 0, 101)
    );
    assert_eq!(
        answer(run(&with_mac(&client, 0x21), &mut leases, NOW)).1,
        Ipv4Addr::new(10, 77, 0, 102)
    );
}

#[test]
fn the_holders_decline_takes_the_address_out_until_its_hold_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    let client = fixture("udhcpc-discover");
    let first = Ipv4Addr::new(10, 77, 0, 100);
    let back = NOW + full::DECLINE_HOLD_SECS;
    {
        let mut leases = open(&path, 3);
        answer(run(&request(&client, first), &mut leases, NOW));
        let decline = msg(&client, 4, first);
        assert_eq!(
            run(&decline, &mut leases, NOW),
            Action::Ignore(Reason::Declined(first))
        );
        assert!(leases.is_declined(first, NOW));
        assert!(leases.leases().all(|l| l.addr != first), "its lease went");
        leases.save().unwrap();
    }
    let mut leases = open(&path, 3);
    assert!(
        leases.is_declined(first, back - 1),
        "the decline and its time were persisted"
    );
    // The client that declined is given another address ...
    assert_eq!(
        answer(run(&client, &mut leases, NOW)).1,
        Ipv4Addr::new(10, 77, 0, 101)
    );
    // ... and nobody gets the declined one while its hold lasts ...
    assert_eq!(
        answer(run(
            &request(&with_mac(&client, 0x20), first),
            &mut leases,
            back - 1
        ))
        .0,
        MessageType::Nak
    );
    // ... after which it is offered again (here, to the first new client).
    assert!(!leases.is_declined(first, back));
    assert_eq!(
        answer(run(&with_mac(&client, 0x21), &mut leases, back)).1,
        first
    );
}

#[test]
fn a_lease_file_from_before_declines_expired_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    let bound = Ipv4Addr::new(10, 77, 0, 100);
    let declined = Ipv4Addr::new(10, 77, 0, 101);
    // As the previous version wrote it: declined addresses without a time.
    std::fs::write(
        &path,
        format!(
            r#"{{
  "leases": [
    {{ "mac": "52:54:00:aa:00:01", "addr": "{bound}", "expires": {}, "state": "bound" }}
  ],
  "declined": ["{declined}"]
}}
"#,
            NOW + 3600
        ),
    )
    .unwrap();
    let mut leases = open(&path, 3);
    assert!(
        leases
            .leases()
            .any(|l| l.addr == bound && l.state == LeaseState::Bound)
    );
    // When it was declined is unknown: its hold is over.
    assert!(!leases.is_declined(declined, NOW));
    let client = fixture("udhcpc-discover");
    assert_eq!(answer(run(&client, &mut leases, NOW)).1, declined);
    leases.save().unwrap();
    assert!(open(&path, 3).leases().any(|l| l.addr == declined));

    // The file written now keeps when an address was declined.
    let mut leases = open(&path, 3);
    answer(run(&request(&client, declined), &mut leases, NOW));
    run(&msg(&client, 4, declined), &mut leases, NOW);
    leases.save().unwrap();
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(
        saved.contains(&format!(r#""addr": "{declined}""#))
            && saved.contains(&format!(r#""at": {NOW}"#)),
        "{saved}"
    );
}

#[test]
fn release_frees_and_other_server_choice_drops_the_offer() {
    let dir = tempfile::tempdir().unwrap();
    let mut leases = open(&dir.path().join("l.json"), 1);
    let client = fixture("udhcpc-discover");
    let addr = Ipv4Addr::new(10, 77, 0, 100);
    answer(run(&request(&client, addr), &mut leases, NOW));
    let mut release = msg(&client, 7, addr);
    release[12..16].copy_from_slice(&addr.octets());
    assert_eq!(
        run(&release, &mut leases, NOW),
        Action::Ignore(Reason::Released(addr))
    );
    assert_eq!(leases.leases().count(), 0);

    let other = with_mac(&client, 0x30);
    answer(run(&other, &mut leases, NOW)); // offered .100
    let elsewhere = edit(&request(&other, addr), |o| set(o, 54, &[10, 77, 0, 2]));
    assert_eq!(
        run(&elsewhere, &mut leases, NOW),
        Action::Ignore(Reason::ForOtherServer(Ipv4Addr::new(10, 77, 0, 2)))
    );
    assert_eq!(leases.leases().count(), 0, "the held offer was freed");
}

#[test]
fn bad_pool_and_lease_file_are_errors() {
    let a = Ipv4Addr::new(10, 0, 0, 9);
    let b = Ipv4Addr::new(10, 0, 0, 1);
    let mask = Ipv4Addr::new(255, 0, 0, 0);
    assert!(matches!(
        Pool::new(a, b, mask, None, vec![], 3600),
        Err(LeaseError::EmptyPool { .. })
    ));
    assert!(matches!(
        Pool::new(b, Ipv4Addr::new(10, 2, 0, 0), mask, None, vec![], 3600),
        Err(LeaseError::PoolTooLarge(_))
    ));
    assert!(matches!(
        Pool::new(b, a, mask, None, vec![], 5),
        Err(LeaseError::LeaseTooShort)
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(
        Leases::open(&path, pool(2)),
        Err(LeaseError::Json { .. })
    ));
}

#[test]
fn proxy_context_and_port_4011_fall_back_to_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut leases = open(&dir.path().join("l.json"), 2);
    let pxe = fixture("ovmf-pxe-discover");
    let proxy_ctx = Context::new(US, 8080);
    let (_, yiaddr, _) = answer(full::decide(
        &pxe,
        &proxy_ctx,
        &hosts,
        Port::Dhcp,
        &mut leases,
        NOW,
    ));
    assert_eq!(yiaddr, Ipv4Addr::UNSPECIFIED);
    let req = request(&pxe, Ipv4Addr::new(10, 77, 0, 100));
    let (kind, yiaddr, _) = answer(full::decide(
        &req,
        &ctx(),
        &hosts,
        Port::BootServer,
        &mut leases,
        NOW,
    ));
    assert_eq!((kind, yiaddr), (MessageType::Ack, Ipv4Addr::UNSPECIFIED));
    assert_eq!(leases.leases().count(), 0);
}
