//! The DHCPv6 boot decision over OVMF's captured messages and variants:
//! what is answered, how, and what is not.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use common::fixture;
use common::v6::{
    edit, ia_na, iaaddr, message, option, options, relay_forward, remove, set, vendor_class,
};
use dhcproto::v6::{Decodable, Decoder, Message, MessageType};
use kickstand_dhcp::v6::{
    self, Action, Clients, Context, MAX_RELAY_DEPTH, Malformed, Port, Reason, Source,
};
use kickstand_dhcp::{Firmware, HostBoot, HostStatus, Mac, Mode};
use kickstand_profiles::model::{Arch, BootLoader};

const APPLIANCE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The bridge's MAC in the capture: the 4011 Request names its DUID-LL.
const SERVER_MAC: Mac = Mac([0xde, 0x16, 0xa7, 0xba, 0x23, 0x57]);
const OVMF_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x00, 0x06, 0x02]);
/// OVMF's link-local address, EUI-64 of its MAC, on interface 2.
const OVMF_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe00, 0x602);
const OVMF_LEASED: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x1e2);
const UNKNOWN_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x00, 0x06, 0xff]);
const PXE_URL: &str = "tftp://[fd77::1]/ipxe.efi";

fn ctx() -> Context {
    Context::new(APPLIANCE, 8080, SERVER_MAC)
}

/// Every MAC has a profile except [`UNKNOWN_MAC`].
fn hosts(mac: Mac) -> HostStatus {
    if mac == UNKNOWN_MAC {
        HostStatus::Unknown
    } else {
        HostStatus::Netboot(HostBoot::ipxe())
    }
}

fn solicit() -> Vec<u8> {
    fixture("ovmf-pxe-solicit")
}

fn from_client() -> Source {
    from(OVMF_LINK_LOCAL, 546, Port::Server)
}

fn from(ip: Ipv6Addr, port: u16, on: Port) -> Source {
    Source {
        from: SocketAddrV6::new(ip, port, 0, if ip.is_unicast_link_local() { 2 } else { 0 }),
        port: on,
    }
}

fn decide(datagram: &[u8], source: Source) -> Action {
    v6::decide(datagram, source, &ctx(), &hosts, &Clients::new())
}

fn answered(datagram: &[u8], source: Source) -> v6::Reply {
    match decide(datagram, source) {
        Action::Respond(reply) => reply,
        Action::Ignore(reason) => panic!("ignored: {reason}"),
    }
}

fn ignored(datagram: &[u8], source: Source) -> Reason {
    match decide(datagram, source) {
        Action::Ignore(reason) => reason,
        Action::Respond(reply) => panic!("answered: {reply:?}"),
    }
}

/// Our reply through dhcproto's decoder too: well-formed to a reader that
/// is not ours.
fn decoded(reply: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(reply)).unwrap()
}

fn duid_ll(mac: Mac) -> Vec<u8> {
    [&[0, 3, 0, 1][..], &mac.0].concat()
}

/// A DUID-UUID: the MAC is not in it.
const DUID_UUID: [u8; 18] = [0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

#[test]
fn ovmf_pxe_solicit_gets_a_proxy_advertise_with_the_tftp_url_and_no_address() {
    let s = solicit();
    let reply = answered(&s, from_client());
    assert_eq!(reply.mac, OVMF_MAC);
    assert_eq!(reply.firmware, Firmware::UefiX64);
    assert_eq!(reply.boot_file_url, PXE_URL);
    assert_eq!(
        reply.to,
        SocketAddr::V6(SocketAddrV6::new(OVMF_LINK_LOCAL, 546, 0, 2)),
        "to the client's link-local address on its interface, port 546"
    );
    let r = &reply.bytes;
    assert_eq!(r[0], 2, "Advertise");
    assert_eq!(r[1..4], s[1..4], "transaction id");
    assert_eq!(
        option(r, 2),
        Some(duid_ll(SERVER_MAC)),
        "server id: DUID-LL"
    );
    assert_eq!(option(r, 1), option(&s, 1), "client id echoed");
    assert_eq!(option(r, 16), Some(vendor_class("PXEClient")));
    assert_eq!(option(r, 59), Some(PXE_URL.as_bytes().to_vec()));
    let codes: Vec<u16> = options(r).iter().map(|(c, _)| *c).collect();
    assert_eq!(
        codes,
        [2, 1, 16, 59],
        "no IA_NA, IA_TA, IA_PD, nothing else"
    );
    assert_eq!(decoded(r).msg_type(), MessageType::Advertise);
}

#[test]
fn edk2s_request_to_port_4011_gets_a_reply_at_its_new_address() {
    let request = fixture("ovmf-pxe-bootserver-request6");
    let reply = answered(&request, from(OVMF_LEASED, 4011, Port::BootServer));
    assert_eq!(reply.to, "[fd77::1e2]:4011".parse::<SocketAddr>().unwrap());
    assert_eq!(reply.bytes[0], 7, "Reply");
    assert_eq!(reply.bytes[1..4], request[1..4]);
    assert_eq!(option(&reply.bytes, 59), Some(PXE_URL.as_bytes().to_vec()));
    assert_eq!(decoded(&reply.bytes).msg_type(), MessageType::Reply);
}

#[test]
fn requests_for_another_server_or_none_are_the_office_servers() {
    let to_office = fixture("ovmf-pxe-bootserver-request6");
    let other = Context::new(APPLIANCE, 8080, Mac([2, 0, 0, 0, 0, 1]));
    for port in [Port::Server, Port::BootServer] {
        let action = v6::decide(
            &to_office,
            from(OVMF_LEASED, 4011, port),
            &other,
            &hosts,
            &Clients::new(),
        );
        assert_eq!(action, Action::Ignore(Reason::ForOtherServer), "{port:?}");
    }
    let anonymous = edit(&solicit(), 3, |_| {});
    assert_eq!(ignored(&anonymous, from_client()), Reason::NoServerId);
}

#[test]
fn ovmfs_own_ipv6_solicit_is_no_boot_client() {
    let plain = fixture("ovmf-ip6-solicit");
    assert!(matches!(
        ignored(&plain, from_client()),
        Reason::NotBootClient(_)
    ));
    for class in ["", "MSFT 5.0", "PXEClien"] {
        let s = edit(&solicit(), 1, |o| set(o, 16, &vendor_class(class)));
        let reason = ignored(&s, from_client());
        assert!(
            matches!(reason, Reason::NotBootClient(_)),
            "{class:?}: {reason}"
        );
        assert_eq!(reason.name(), "not-pxe");
    }
}

#[test]
fn http_boot_gets_an_http_url_and_the_httpclient_class() {
    let reply = answered(&fixture("ovmf-http-solicit"), from_client());
    assert_eq!(reply.mac, OVMF_MAC);
    assert_eq!(reply.firmware, Firmware::UefiHttpX64);
    assert_eq!(reply.boot_file_url, "http://[fd77::1]:8080/boot/ipxe.efi");
    assert_eq!(option(&reply.bytes, 16), Some(vendor_class("HTTPClient")));
    // An HTTPClient class with PXE's architecture is HTTP boot too.
    let s = edit(&solicit(), 1, |o| {
        set(o, 16, &vendor_class("HTTPClient:Arch:00007:UNDI:003000"))
    });
    assert_eq!(answered(&s, from_client()).firmware, Firmware::UefiHttpX64);
}

/// `boot_loader: auto` over IPv6: UEFI PXE gets the OS's shim → GRUB (iPXE
/// would ask DHCPv6 again and take the office's answer, with no script);
/// `ipxe` still gets iPXE, and HTTP boot keeps its iPXE URL.
#[test]
fn auto_gives_uefi_pxe_over_ipv6_the_shim_and_grub() {
    let shim = "os/centos-stream-9/EFI/BOOT/BOOTX64.EFI";
    let url = |datagram: &[u8], loader| {
        let hosts = move |_: Mac| {
            HostStatus::Netboot(HostBoot::profiled(loader, Arch::X86_64, shim.into()))
        };
        match v6::decide(datagram, from_client(), &ctx(), &hosts, &Clients::new()) {
            Action::Respond(reply) => reply.boot_file_url,
            Action::Ignore(reason) => panic!("ignored: {reason}"),
        }
    };
    let pxe = solicit();
    let http = fixture("ovmf-http-solicit");
    let shim_url = format!("tftp://[fd77::1]/{shim}");
    assert_eq!(url(&pxe, BootLoader::Auto), shim_url);
    assert_eq!(url(&pxe, BootLoader::Grub), shim_url);
    assert_eq!(url(&pxe, BootLoader::Ipxe), PXE_URL);
    assert_eq!(
        url(&http, BootLoader::Auto),
        "http://[fd77::1]:8080/boot/ipxe.efi"
    );
}

#[test]
fn ipxe_gets_its_boot_script_and_arm64_its_loader() {
    let ipxe = edit(&solicit(), 1, |o| set(o, 15, b"\x00\x04iPXE"));
    let reply = answered(&ipxe, from_client());
    assert_eq!(reply.firmware, Firmware::Ipxe);
    assert_eq!(
        reply.boot_file_url,
        "http://[fd77::1]:8080/boot/52:54:00:00:06:02.ipxe"
    );
    // A dual-stack appliance sends iPXE its script over DHCPv4 only, where
    // its build token is bound; firmware is answered as before.
    let mut dual_stack = ctx();
    dual_stack.scripts = false;
    let decide =
        |packet: &[u8]| v6::decide(packet, from_client(), &dual_stack, &hosts, &Clients::new());
    assert_eq!(decide(&ipxe), Action::Ignore(Reason::ScriptOverIpv4));
    assert!(matches!(decide(&solicit()), Action::Respond(_)));
    let arm = edit(&solicit(), 1, |o| set(o, 61, &[0, 11]));
    assert_eq!(
        answered(&arm, from_client()).boot_file_url,
        "tftp://[fd77::1]/ipxe-arm64.efi"
    );
    // Without option 61, the vendor class's Arch field decides.
    let class_only = edit(&solicit(), 1, |o| {
        remove(o, 61);
        set(o, 16, &vendor_class("PXEClient:Arch:00011:UNDI:003000"));
    });
    assert_eq!(
        answered(&class_only, from_client()).firmware,
        Firmware::UefiArm64
    );
}

#[test]
fn the_mac_comes_from_the_duid_or_the_eui64_source_else_it_is_not_answered() {
    let uuid = edit(&solicit(), 1, |o| set(o, 1, &DUID_UUID));
    assert_eq!(
        answered(&uuid, from_client()).mac,
        OVMF_MAC,
        "EUI-64 source"
    );
    let opaque = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1234, 0x5678, 0x9abc, 0xdef0);
    let reason = ignored(&uuid, from(opaque, 546, Port::Server));
    assert_eq!(reason, Reason::UnknownLinkLayer { duid_type: Some(4) });
    assert_eq!(reason.name(), "unknown-link-layer");
    // DUID-LL names the MAC whatever the source address.
    let ll = edit(&solicit(), 1, |o| {
        set(o, 1, &duid_ll(Mac([2, 0, 0, 0, 0, 9])))
    });
    let reply = answered(&ll, from(opaque, 546, Port::Server));
    assert_eq!(reply.mac, Mac([2, 0, 0, 0, 0, 9]));
    // A DUID-LL of another hardware type gives none.
    let token_ring = edit(&solicit(), 1, |o| {
        set(o, 1, &[0, 3, 0, 6, 1, 2, 3, 4, 5, 6])
    });
    assert!(matches!(
        ignored(&token_ring, from(opaque, 546, Port::Server)),
        Reason::UnknownLinkLayer { .. }
    ));
}

/// With a system UUID, EDK2 sends a DUID-UUID; its Request to port 4011
/// comes from its new global address. Only the answer to its Solicit (from
/// its EUI-64 link-local address) tells whose it is.
#[test]
fn edk2_with_a_duid_uuid_is_placed_by_its_solicit_for_its_4011_request() {
    let solicit = fixture("ovmf-pxe-solicit-uuid");
    let duid = option(&solicit, 1).unwrap();
    assert_eq!(duid[..2], [0, 4]);
    let request = edit(&fixture("ovmf-pxe-bootserver-request6"), 3, |o| {
        set(o, 1, &duid)
    });
    let at_4011 = from(OVMF_LEASED, 4011, Port::BootServer);
    let mut clients = Clients::new();
    let before = v6::decide(&request, at_4011, &ctx(), &hosts, &clients);
    assert_eq!(
        before,
        Action::Ignore(Reason::UnknownLinkLayer { duid_type: Some(4) })
    );
    let Action::Respond(advertise) = v6::decide(&solicit, from_client(), &ctx(), &hosts, &clients)
    else {
        panic!("the Solicit is placed by its EUI-64 source")
    };
    clients.learn(&advertise);
    let Action::Respond(reply) = v6::decide(&request, at_4011, &ctx(), &hosts, &clients) else {
        panic!("the Request is placed by the Solicit's answer")
    };
    assert_eq!(reply.mac, OVMF_MAC);
    assert_eq!(reply.bytes[0], 7);
    assert_eq!(option(&reply.bytes, 59), Some(PXE_URL.as_bytes().to_vec()));
}

/// Debian's iPXE (BIOS) on a SLAAC segment sends an Information-request
/// with a DUID-UUID of a zero UUID: placed by its EUI-64 address, given
/// its script, and its DUID, shared by every such machine, not learnt.
#[test]
fn ipxe_gets_its_boot_script_by_its_eui64_address_and_its_zero_uuid_is_not_learnt() {
    let request = fixture("bios-ipxe-information-request");
    let ipxe_link_local = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe00, 0x601);
    let reply = answered(&request, from(ipxe_link_local, 546, Port::Server));
    assert_eq!(reply.firmware, Firmware::Ipxe);
    assert_eq!(reply.bytes[0], 7, "Reply");
    assert_eq!(
        reply.boot_file_url,
        "http://[fd77::1]:8080/boot/52:54:00:00:06:01.ipxe"
    );
    let mut clients = Clients::new();
    clients.learn(&reply);
    let opaque = from(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7),
        546,
        Port::Server,
    );
    let other = v6::decide(&request, opaque, &ctx(), &hosts, &clients);
    assert_eq!(
        other,
        Action::Ignore(Reason::UnknownLinkLayer { duid_type: Some(4) }),
        "another machine with the same zero DUID is not taken for this one"
    );
}

#[test]
fn unknown_and_installed_machines_are_not_answered() {
    let mut s = solicit();
    let duid = option(&s, 1).unwrap();
    let unknown = [&duid[..8], &UNKNOWN_MAC.0].concat();
    s = edit(&s, 1, |o| set(o, 1, &unknown));
    let opaque = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7);
    let reason = ignored(&s, from(opaque, 546, Port::Server));
    assert_eq!(reason.name(), "no-profile");
    let installed = |_: Mac| HostStatus::LocalDisk(HostBoot::ipxe());
    let action = v6::decide(
        &solicit(),
        from_client(),
        &ctx(),
        &installed,
        &Clients::new(),
    );
    let Action::Ignore(reason) = action else {
        panic!("{action:?}")
    };
    assert_eq!(reason.name(), "installed");
}

#[test]
fn a_relayed_solicit_is_answered_through_its_relays() {
    let inner = edit(&solicit(), 1, |o| set(o, 1, &DUID_UUID));
    let link = Ipv6Addr::new(0xfd77, 0, 0, 5, 0, 0, 0, 0);
    let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x42);
    let first = relay_forward(
        0,
        link,
        peer,
        &[
            (18, b"port7".to_vec()),
            (79, vec![0, 1, 2, 0, 0, 0, 0, 0x79]),
        ],
        &inner,
    );
    let second = relay_forward(1, Ipv6Addr::UNSPECIFIED, link, &[], &first);
    let relay = Ipv6Addr::new(0xfd77, 0, 0, 9, 0, 0, 0, 1);
    let reply = answered(&second, from(relay, 547, Port::Server));
    assert_eq!(reply.mac, Mac([2, 0, 0, 0, 0, 0x79]), "from option 79");
    assert_eq!(reply.to, SocketAddr::from((relay, 547)));
    let outer = &reply.bytes;
    assert_eq!(
        outer[..2],
        [13, 1],
        "Relay-reply, the outer relay's hop count"
    );
    assert_eq!(outer[2..18], [0; 16]);
    assert_eq!(outer[18..34], link.octets());
    let middle = option(outer, 9).unwrap();
    assert_eq!(middle[..2], [13, 0]);
    assert_eq!(middle[18..34], peer.octets());
    assert_eq!(option(&middle, 18), Some(b"port7".to_vec()), "interface id");
    let advertise = option(&middle, 9).unwrap();
    assert_eq!(advertise[0], 2);
    assert_eq!(option(&advertise, 59), Some(PXE_URL.as_bytes().to_vec()));
    assert_eq!(option(&advertise, 1), Some(DUID_UUID.to_vec()));
}

#[test]
fn relays_nest_up_to_the_hop_limit_and_no_further() {
    let mut datagram = solicit();
    for hop in 0..MAX_RELAY_DEPTH {
        datagram = relay_forward(hop as u8, APPLIANCE, APPLIANCE, &[], &datagram);
    }
    let reply = answered(&datagram, from(APPLIANCE, 547, Port::Server));
    assert_eq!(reply.mac, OVMF_MAC);
    let deeper = relay_forward(8, APPLIANCE, APPLIANCE, &[], &datagram);
    assert_eq!(
        ignored(&deeper, from(APPLIANCE, 547, Port::Server)),
        Reason::Malformed(Malformed::RelayTooDeep)
    );
    let empty = relay_forward(0, APPLIANCE, APPLIANCE, &[], &[])[..34].to_vec();
    assert_eq!(
        ignored(&empty, from(APPLIANCE, 547, Port::Server)),
        Reason::Malformed(Malformed::NoRelayMessage)
    );
}

#[test]
fn servers_messages_sent_to_us_are_not_answered() {
    let s = solicit();
    for kind in [2, 7, 5, 6, 8, 9, 10, 13] {
        let m = edit(&s, kind, |_| {});
        assert_eq!(
            ignored(&m, from_client()),
            Reason::UnhandledMessageType(kind),
            "type {kind}"
        );
    }
    // A Solicit to port 4011 is no PXE exchange.
    assert_eq!(
        ignored(&s, from(OVMF_LEASED, 4011, Port::BootServer)),
        Reason::UnhandledMessageType(1)
    );
}

#[test]
fn malformed_and_oversized_datagrams_are_named() {
    let s = solicit();
    let cases: Vec<(Vec<u8>, Malformed)> = vec![
        (vec![1, 2, 3], Malformed::TooShort(3)),
        (
            s[..s.len() - 1].to_vec(),
            Malformed::TruncatedOption { code: 16 },
        ),
        (s[..6].to_vec(), Malformed::TruncatedOption { code: 1 }),
        (
            [&s[..], &[0, 59, 0xff, 0xff, b'x']].concat(),
            Malformed::TruncatedOption { code: 59 },
        ),
        (
            [&s[..], &vec![0; 4096]].concat(),
            Malformed::TooLong(s.len() + 4096),
        ),
    ];
    for (datagram, want) in cases {
        assert_eq!(
            ignored(&datagram, from_client()),
            Reason::Malformed(want.clone()),
            "{want}"
        );
    }
}

#[test]
fn information_requests_are_answered_solicits_need_a_client_id_and_off_is_off() {
    let info = edit(&solicit(), 11, |o| remove(o, 3));
    let reply = answered(&info, from_client());
    assert_eq!(reply.bytes[0], 7);
    let anonymous_info = edit(&info, 11, |o| remove(o, 1));
    assert_eq!(
        option(&answered(&anonymous_info, from_client()).bytes, 1),
        None
    );
    let anonymous = edit(&solicit(), 1, |o| remove(o, 1));
    assert_eq!(ignored(&anonymous, from_client()), Reason::NoClientId);
    let mut off = ctx();
    off.mode = Mode::Off;
    let action = v6::decide(&solicit(), from_client(), &off, &hosts, &Clients::new());
    assert_eq!(action, Action::Ignore(Reason::Disabled));
    let built = message(1, [0, 0, 1], &[(1, DUID_UUID.to_vec())]);
    assert!(matches!(
        ignored(&built, from_client()),
        Reason::NotBootClient(_)
    ));
}

#[test]
fn decisions_are_counted_by_outcome_reason_and_firmware() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = kickstand_dhcp::Metrics::register(&mut registry);
    metrics.observe_v6(&decide(&solicit(), from_client()));
    metrics.observe_v6(&decide(&fixture("ovmf-ip6-solicit"), from_client()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        r#"kickstand_dhcpv6_decisions_total{outcome="reply",reason="",firmware="uefi-x64"} 1"#,
        r#"kickstand_dhcpv6_decisions_total{outcome="ignore",reason="not-pxe",firmware=""} 1"#,
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
}

#[test]
fn the_context_of_the_shipped_config_is_its_dhcp_settings_on_the_ipv6_address() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../profiles/kickstand.yaml");
    let appliance = kickstand_profiles::load_appliance(config.as_ref()).unwrap();
    let ctx = Context::from_appliance(&appliance, APPLIANCE, SERVER_MAC);
    assert_eq!(ctx.mode, Mode::Off, "the shipped config has DHCP off");
    assert_eq!(ctx.urls.base(), "http://[fd77::1]:8080");
    assert_eq!(ctx.loaders.uefi_x64, "ipxe.efi");
    assert_eq!(ctx.server_id, duid_ll(SERVER_MAC));
}

/// The office server's DUID-LL.
const OFFICE_ID: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 2];

/// OVMF taking the office server's Advertise: its Solicit turned into a
/// Request (type 3) naming that server, with `ia` as its IA_NA.
fn request_to_office(ia: &[u8]) -> Vec<u8> {
    edit(&solicit(), 3, |o| {
        set(o, 2, &OFFICE_ID);
        set(o, 3, ia);
    })
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The addresses a client takes from the office server are read from its
/// own messages, as DHCPv4's option 50 is: a Request to that server (not
/// answered), a Renew, a Rebind, a Confirm; IA_NA and IA_TA alike.
#[test]
fn leased_addresses_are_read_from_what_the_client_sends_the_office_server() {
    let request = request_to_office(&ia_na(1, &[OVMF_LEASED]));
    let at = from_client();
    assert_eq!(ignored(&request, at), Reason::ForOtherServer);
    assert_eq!(v6::leased(&request, &ctx()), [OVMF_LEASED]);
    assert_eq!(v6::MAX_LEASED, 4);
    for kind in [5, 6, 4] {
        let m = edit(&request, kind, |_| {});
        assert_eq!(v6::leased(&m, &ctx()), [OVMF_LEASED], "type {kind}");
    }
    // An IA_TA (IAID alone before its options), a second IA_NA, and
    // relayed: every address, once, in order.
    let ta = [&[0, 0, 0, 9][..], &iaaddr(v6("fd77::2e2"))].concat();
    let two = edit(&request, 3, |o| {
        o.push((3, ia_na(2, &[v6("fd77::3e2"), OVMF_LEASED])));
        o.push((4, ta));
    });
    let relayed = relay_forward(0, APPLIANCE, OVMF_LINK_LOCAL, &[], &two);
    for m in [&two, &relayed] {
        assert_eq!(
            v6::leased(m, &ctx()),
            [OVMF_LEASED, v6("fd77::3e2"), v6("fd77::2e2")]
        );
    }
    // At most four; no link-local, multicast or unspecified address.
    let many: Vec<Ipv6Addr> = (1..=9)
        .map(|n| Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n))
        .collect();
    let many = request_to_office(&ia_na(1, &many));
    assert_eq!(v6::leased(&many, &ctx()).len(), 4);
    let odd = request_to_office(&ia_na(
        1,
        &[
            OVMF_LINK_LOCAL,
            Ipv6Addr::UNSPECIFIED,
            v6("ff02::1:2"),
            Ipv6Addr::LOCALHOST,
        ],
    ));
    assert!(v6::leased(&odd, &ctx()).is_empty());
}

/// What names no lease of another server gives no address: a Solicit's
/// hints, a Release or Decline, a Request to this server (it leases no
/// IPv6 address), and IAs that are not well formed.
#[test]
fn hints_releases_requests_to_us_and_malformed_ias_give_no_address() {
    let ia = ia_na(1, &[OVMF_LEASED]);
    let request = request_to_office(&ia);
    let hint = edit(&solicit(), 1, |o| set(o, 3, &ia));
    let release = edit(&request, 8, |_| {});
    let decline = edit(&request, 9, |_| {});
    let to_us = edit(&request, 3, |o| set(o, 2, &duid_ll(SERVER_MAC)));
    let mut cut = ia.clone();
    cut.truncate(ia.len() - 1);
    let inner_too_long = {
        let mut ia = ia.clone();
        ia[15] = 200;
        ia
    };
    let short_iaaddr = [&ia[..12], &[0, 5, 0, 8], &[0xfd, 0x77, 0, 0, 0, 0, 0, 0]].concat();
    let header_only = ia[..8].to_vec();
    let mut cases = vec![hint, release, decline, to_us];
    for bad in [cut, inner_too_long, short_iaaddr, header_only] {
        cases.push(request_to_office(&bad));
    }
    cases.push(request[..request.len() - 3].to_vec());
    for (i, m) in cases.iter().enumerate() {
        assert!(v6::leased(m, &ctx()).is_empty(), "case {i}");
    }
}
