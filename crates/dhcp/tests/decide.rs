//! The ProxyDHCP decision over captured firmware packets and hostile variants.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error

mod common;

use std::net::Ipv4Addr;

use common::{decode, edit, fixture, option, remove, set};
use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use kickstand_dhcp::{
    Action, Context, Destination, Firmware, HostBoot, HostStatus, Mac, Malformed, Mode, Port,
    Reason, decide,
};
use kickstand_profiles::model::{Arch, BootLoader, UefiLocalBoot};

const APPLIANCE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const OFFICE_DHCP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

fn ctx() -> Context {
    Context::new(APPLIANCE, 8080)
}

/// Every MAC has a profile except 52:54:00:00:00:ff.
fn hosts(mac: Mac) -> HostStatus {
    if mac.0[5] == 0xff {
        HostStatus::Unknown
    } else {
        HostStatus::Netboot(HostBoot::ipxe())
    }
}

fn bios() -> Vec<u8> {
    fixture("bios-ipxe-discover")
}
fn ovmf() -> Vec<u8> {
    fixture("ovmf-pxe-discover")
}
fn http() -> Vec<u8> {
    fixture("ovmf-http-discover")
}
fn with_arch(p: &[u8], arch: u16) -> Vec<u8> {
    edit(p, |o| set(o, 93, &arch.to_be_bytes()))
}
/// A firmware PXE ROM that is not iPXE: the iPXE capture minus its iPXE marks.
fn native_bios() -> Vec<u8> {
    edit(&bios(), |o| {
        remove(o, 77);
        remove(o, 175);
    })
}
/// The port-4011 REQUEST a PXE client sends the boot server after a proxy
/// offer, derived from its captured REQUEST to the office server: it now
/// holds the address (ciaddr) and names the appliance as server. (Neither
/// OVMF nor iPXE sent one in the QEMU bed: with PXE_DISCOVERY_CONTROL = 8
/// both used the proxy offer's boot file directly.)
fn boot_server_request(discover: &[u8]) -> Vec<u8> {
    let captured = if discover[33] == 1 {
        fixture("bios-ipxe-request")
    } else {
        fixture("ovmf-pxe-request")
    };
    let mut r = edit(&captured, |o| {
        remove(o, 50);
        set(o, 54, &APPLIANCE.octets());
    });
    r[28..34].copy_from_slice(&discover[28..34]);
    r[12..16].copy_from_slice(&[10, 77, 0, 50]);
    r
}
fn with_giaddr(p: &[u8], relay: [u8; 4]) -> Vec<u8> {
    let mut r = edit(p, |o| set(o, 82, &[1, 4, b'p', b'o', b'r', b't']));
    r[24..28].copy_from_slice(&relay);
    r
}

struct Expect {
    kind: MessageType,
    file: String,
    class: &'static [u8],
    firmware: Firmware,
    dest: Destination,
}

fn offer(file: &str, firmware: Firmware) -> Expect {
    Expect {
        kind: MessageType::Offer,
        file: file.into(),
        class: b"PXEClient",
        firmware,
        dest: Destination::Broadcast,
    }
}

fn script(mac: &str) -> String {
    format!("http://10.77.0.1:8080/boot/{mac}.ipxe")
}

/// A NUL-terminated header field.
fn cstr(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or_default()
}

fn check_reply(name: &str, packet: &[u8], action: Action, want: Expect) {
    let Action::Respond(reply) = action else {
        panic!("{name}: expected a reply, got {action:?}")
    };
    assert_eq!(reply.dest, want.dest, "{name}: destination");
    assert_eq!(reply.firmware, Some(want.firmware), "{name}: firmware");
    assert!(
        reply.bytes.len() >= 300,
        "{name}: {} bytes is under the BOOTP minimum",
        reply.bytes.len()
    );
    let m = decode(&reply.bytes);
    assert_eq!(reply.bytes[0], 2, "{name}: BOOTREPLY");
    assert_eq!(
        m.xid(),
        u32::from_be_bytes(packet[4..8].try_into().unwrap()),
        "{name}: xid"
    );
    assert_eq!(reply.bytes[10..12], packet[10..12], "{name}: flags echoed");
    assert_eq!(m.chaddr(), &packet[28..34], "{name}: chaddr");
    assert_eq!(
        m.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "{name}: proxy never assigns an address"
    );
    assert_eq!(m.siaddr(), APPLIANCE, "{name}: siaddr");
    assert_eq!(reply.bytes[24..28], packet[24..28], "{name}: giaddr echoed");
    assert_eq!(m.opts().msg_type(), Some(want.kind), "{name}: message type");
    assert_eq!(
        m.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(APPLIANCE)),
        "{name}: option 54"
    );
    assert_eq!(
        m.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(want.class.to_vec())),
        "{name}: option 60"
    );
    let file = want.file.as_bytes();
    assert_eq!(cstr(&reply.bytes[108..236]), file, "{name}: file field");
    assert_eq!(
        m.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(file.to_vec()))
    );
    let vendor = m.opts().get(OptionCode::VendorExtensions);
    // BIOS and iPXE: discovery control 8, use this file. UEFI: no 43, as
    // Pixiecore answers EFI clients: HP DL380 Gen9 firmware ignores a proxy
    // offer that bypasses boot server discovery (danderson/netboot#43) and
    // every UEFI firmware asks port 4011 without it.
    if matches!(want.firmware, Firmware::Bios | Firmware::Ipxe) {
        assert_eq!(
            vendor,
            Some(&DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec())),
            "{name}: 43"
        );
    } else {
        assert_eq!(vendor, None, "{name}: UEFI gets no option 43");
    }
    if want.class == b"PXEClient" {
        assert_eq!(cstr(&reply.bytes[44..108]), b"10.77.0.1", "{name}: sname");
        assert_eq!(
            option(&reply.bytes, 66).as_deref(),
            Some(&b"10.77.0.1"[..]),
            "{name}: 66"
        );
    } else {
        assert_eq!(
            cstr(&reply.bytes[44..108]),
            b"",
            "{name}: no sname for HTTP boot"
        );
    }
    match option(packet, 97) {
        Some(uuid) if uuid.len() == 17 && uuid[0] == 0 => {
            assert_eq!(option(&reply.bytes, 97), Some(uuid), "{name}: 97 echoed")
        }
        _ => assert_eq!(
            option(&reply.bytes, 97),
            None,
            "{name}: no 97 invented or a broken one echoed"
        ),
    }
    assert_eq!(
        option(&reply.bytes, 82),
        option(packet, 82),
        "{name}: relay info echoed"
    );
    let codes: Vec<u8> = common::options(&reply.bytes)
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(codes.first(), Some(&53), "{name}: message type first");
    if option(packet, 82).is_some() {
        assert_eq!(codes.last(), Some(&82), "{name}: relay info last");
    }
}

#[test]
fn captured_firmware_gets_the_right_boot_file() {
    let ipxe_mac1 = script("52:54:00:00:00:01");
    let mut snponly = ctx();
    snponly.loaders.uefi_x64 = "snponly.efi".into();
    let cases: Vec<(&str, Vec<u8>, Port, Context, Expect)> = vec![
        (
            "iPXE (BIOS) gets its script",
            bios(),
            Port::Dhcp,
            ctx(),
            offer(&ipxe_mac1, Firmware::Ipxe),
        ),
        (
            "iPXE (UEFI) gets its script",
            fixture("uefi-ipxe-discover"),
            Port::Dhcp,
            ctx(),
            offer(&script("52:54:00:00:00:03"), Firmware::Ipxe),
        ),
        (
            "BIOS PXE ROM",
            native_bios(),
            Port::Dhcp,
            ctx(),
            offer("undionly.kpxe", Firmware::Bios),
        ),
        (
            "OVMF UEFI PXE",
            ovmf(),
            Port::Dhcp,
            ctx(),
            offer("ipxe.efi", Firmware::UefiX64),
        ),
        (
            "OVMF, snponly configured",
            ovmf(),
            Port::Dhcp,
            snponly,
            offer("snponly.efi", Firmware::UefiX64),
        ),
        (
            "arch 9 is x64 too",
            with_arch(&ovmf(), 9),
            Port::Dhcp,
            ctx(),
            offer("ipxe.efi", Firmware::UefiX64),
        ),
        (
            "ARM64 UEFI",
            with_arch(&ovmf(), 11),
            Port::Dhcp,
            ctx(),
            offer("ipxe-arm64.efi", Firmware::UefiArm64),
        ),
        (
            "OVMF UEFI HTTP boot",
            http(),
            Port::Dhcp,
            ctx(),
            Expect {
                class: b"HTTPClient",
                ..offer("http://10.77.0.1:8080/boot/ipxe.efi", Firmware::UefiHttpX64)
            },
        ),
        (
            "ARM64 HTTP boot",
            with_arch(&http(), 19),
            Port::Dhcp,
            ctx(),
            Expect {
                class: b"HTTPClient",
                ..offer(
                    "http://10.77.0.1:8080/boot/ipxe-arm64.efi",
                    Firmware::UefiHttpArm64,
                )
            },
        ),
        (
            "no option 93: arch from the vendor class",
            edit(&ovmf(), |o| remove(o, 93)),
            Port::Dhcp,
            ctx(),
            offer("ipxe.efi", Firmware::UefiX64),
        ),
        (
            "option 175 alone marks iPXE",
            edit(&bios(), |o| remove(o, 77)),
            Port::Dhcp,
            ctx(),
            offer(&ipxe_mac1, Firmware::Ipxe),
        ),
        (
            "relayed: unicast to giaddr:67, option 82 echoed",
            with_giaddr(&ovmf(), [10, 9, 0, 1]),
            Port::Dhcp,
            ctx(),
            Expect {
                dest: Destination::Relay(Ipv4Addr::new(10, 9, 0, 1)),
                ..offer("ipxe.efi", Firmware::UefiX64)
            },
        ),
        (
            "port 4011 REQUEST from UEFI: ACK to the sender",
            boot_server_request(&ovmf()),
            Port::BootServer,
            ctx(),
            Expect {
                kind: MessageType::Ack,
                dest: Destination::Sender,
                ..offer("ipxe.efi", Firmware::UefiX64)
            },
        ),
        (
            "port 4011 REQUEST from iPXE",
            boot_server_request(&bios()),
            Port::BootServer,
            ctx(),
            Expect {
                kind: MessageType::Ack,
                dest: Destination::Sender,
                ..offer(&ipxe_mac1, Firmware::Ipxe)
            },
        ),
        (
            "port 67 REQUEST naming us as server",
            boot_server_request(&ovmf()),
            Port::Dhcp,
            ctx(),
            Expect {
                kind: MessageType::Ack,
                dest: Destination::Client(Ipv4Addr::new(10, 77, 0, 50)),
                ..offer("ipxe.efi", Firmware::UefiX64)
            },
        ),
        (
            // dhcproto would read 2 bytes for option 57 and lose the framing.
            "a bad option length does not hide the options after it",
            edit(&ovmf(), |o| o.insert(0, (57, vec![5]))),
            Port::Dhcp,
            ctx(),
            offer("ipxe.efi", Firmware::UefiX64),
        ),
        (
            // dhcproto 0.15 panics on this in debug builds (`len - 3`).
            "a 1-byte client FQDN option",
            edit(&ovmf(), |o| o.insert(0, (81, vec![1]))),
            Port::Dhcp,
            ctx(),
            offer("ipxe.efi", Firmware::UefiX64),
        ),
    ];
    for (name, packet, port, ctx, want) in cases {
        let action = decide(&packet, &ctx, &hosts, port);
        check_reply(name, &packet, action, want);
    }
}

#[test]
fn everyone_else_is_ignored_with_a_reason() {
    let mut hlen17 = ovmf();
    hlen17[2] = 17;
    let mut token_ring = ovmf();
    token_ring[1] = 6;
    let mut bootreply = ovmf();
    bootreply[0] = 2;
    let mut no_cookie = ovmf();
    no_cookie[236] = 0;
    let ovmf_len = ovmf().len();
    let unknown = {
        let mut p = ovmf();
        p[33] = 0xff;
        p
    };
    let mut off = ctx();
    off.mode = Mode::Off;
    let cases: Vec<(&str, Vec<u8>, Port, Context, Reason)> = vec![
        (
            "busybox udhcpc",
            fixture("udhcpc-discover"),
            Port::Dhcp,
            ctx(),
            Reason::NotPxe("udhcp 1.35.0".into()),
        ),
        (
            "no vendor class",
            edit(&ovmf(), |o| remove(o, 60)),
            Port::Dhcp,
            ctx(),
            Reason::NotPxe(String::new()),
        ),
        (
            "no profile",
            unknown.clone(),
            Port::Dhcp,
            ctx(),
            Reason::UnknownHost("52:54:00:00:00:ff".parse().unwrap()),
        ),
        (
            "hlen 17",
            hlen17,
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::NotEthernet { htype: 1, hlen: 17 }),
        ),
        (
            "htype 6",
            token_ring,
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::NotEthernet { htype: 6, hlen: 6 }),
        ),
        (
            "BOOTREPLY",
            bootreply,
            Port::Dhcp,
            ctx(),
            Reason::NotBootRequest,
        ),
        (
            "no magic cookie",
            no_cookie,
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::NoMagicCookie),
        ),
        (
            "header only",
            ovmf()[..100].to_vec(),
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::TooShort(100)),
        ),
        (
            "cut inside option 60",
            ovmf()[..ovmf_len - 10].to_vec(),
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::TruncatedOption { code: 60 }),
        ),
        (
            "cut after an option code",
            {
                let mut p = ovmf()[..240].to_vec();
                p.extend([53, 1, 1, 60]);
                p
            },
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::TruncatedOption { code: 60 }),
        ),
        (
            "plain BOOTP",
            edit(&ovmf(), |o| remove(o, 53)),
            Port::Dhcp,
            ctx(),
            Reason::NotDhcp,
        ),
        (
            "message type of 2 bytes",
            edit(&ovmf(), |o| set(o, 53, &[1, 1])),
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::BadOptionLength { code: 53, len: 2 }),
        ),
        (
            "odd option 93",
            edit(&native_bios(), |o| set(o, 93, &[0])),
            Port::Dhcp,
            ctx(),
            Reason::Malformed(Malformed::BadOptionLength { code: 93, len: 1 }),
        ),
        (
            "no arch anywhere",
            edit(&ovmf(), |o| {
                remove(o, 93);
                set(o, 60, b"PXEClient");
            }),
            Port::Dhcp,
            ctx(),
            Reason::MissingArch,
        ),
        (
            "IA32 UEFI",
            with_arch(&ovmf(), 6),
            Port::Dhcp,
            ctx(),
            Reason::UnsupportedArch(6),
        ),
        (
            "captured UEFI REQUEST for the office server",
            fixture("ovmf-pxe-request"),
            Port::Dhcp,
            ctx(),
            Reason::ForOtherServer(OFFICE_DHCP),
        ),
        (
            "captured iPXE REQUEST for the office server",
            fixture("bios-ipxe-request"),
            Port::Dhcp,
            ctx(),
            Reason::ForOtherServer(OFFICE_DHCP),
        ),
        (
            "renewing REQUEST without server id",
            edit(&boot_server_request(&ovmf()), |o| remove(o, 54)),
            Port::Dhcp,
            ctx(),
            Reason::NoServerId,
        ),
        (
            "RELEASE",
            edit(&ovmf(), |o| set(o, 53, &[7])),
            Port::Dhcp,
            ctx(),
            Reason::UnhandledMessageType(7),
        ),
        (
            "DISCOVER on 4011",
            ovmf(),
            Port::BootServer,
            ctx(),
            Reason::UnhandledMessageType(1),
        ),
        (
            "no profile on 4011",
            boot_server_request(&unknown),
            Port::BootServer,
            ctx(),
            Reason::UnknownHost("52:54:00:00:00:ff".parse().unwrap()),
        ),
        ("mode off", ovmf(), Port::Dhcp, off, Reason::Disabled),
    ];
    for (name, packet, port, ctx, want) in cases {
        assert_eq!(
            decide(&packet, &ctx, &hosts, port),
            Action::Ignore(want),
            "{name}"
        );
    }
}

/// The traps this crate works around are real in the pinned dhcproto.
#[test]
#[cfg(debug_assertions)]
fn dhcproto_option_decoder_panics_where_decide_does_not() {
    use dhcproto::v4::{Decodable, Decoder, Message};
    let hostile = edit(&ovmf(), |o| o.insert(0, (81, vec![1])));
    let outcome =
        std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(&hostile)).map(|_| ()));
    assert!(
        outcome.is_err(),
        "dhcproto was fixed: the workaround in wire.rs can be revisited"
    );
    assert!(matches!(
        decide(&hostile, &ctx(), &hosts, Port::Dhcp),
        Action::Respond(_)
    ));
}

#[test]
fn captured_firmware_options_are_pinned_and_97_is_not_invented() {
    // What the captured firmware really sends, pinned so a recapture that
    // changes it is noticed.
    assert_eq!(
        option(&bios(), 60).unwrap(),
        b"PXEClient:Arch:00000:UNDI:002001"
    );
    assert_eq!(option(&bios(), 77).unwrap(), b"iPXE");
    assert_eq!(option(&bios(), 93).unwrap(), [0, 0]);
    assert!(option(&bios(), 175).is_some());
    assert_eq!(
        option(&ovmf(), 60).unwrap(),
        b"PXEClient:Arch:00007:UNDI:003000"
    );
    assert_eq!(option(&ovmf(), 93).unwrap(), [0, 7]);
    assert_eq!(
        option(&http(), 60).unwrap(),
        b"HTTPClient:Arch:00016:UNDI:003000"
    );
    let uefi_ipxe = fixture("uefi-ipxe-discover");
    assert_eq!(
        option(&uefi_ipxe, 60).unwrap(),
        b"PXEClient:Arch:00007:UNDI:003010"
    );
    assert_eq!(option(&uefi_ipxe, 77).unwrap(), b"iPXE");
    assert_eq!(option(&http(), 93).unwrap(), [0, 16]);
    let no_uuid = edit(&ovmf(), |o| remove(o, 97));
    check_reply(
        "no 97",
        &no_uuid,
        decide(&no_uuid, &ctx(), &hosts, Port::Dhcp),
        offer("ipxe.efi", Firmware::UefiX64),
    );
}

const SHIM_X64: &str = "os/c9/EFI/BOOT/BOOTX64.EFI";
const SHIM_AA64: &str = "os/c9-arm/EFI/BOOT/BOOTAA64.EFI";

fn profiled(loader: BootLoader, arch: Arch) -> HostBoot {
    let shim = if arch == Arch::X86_64 {
        SHIM_X64
    } else {
        SHIM_AA64
    };
    HostBoot::profiled(loader, arch, shim.into())
}

fn arm64() -> Vec<u8> {
    fixture("aavmf-pxe-discover")
}

/// Which chain each firmware is started on, per the host's `boot_loader`:
/// iPXE by default on BIOS and UEFI x64, the OS's shim → GRUB on ARM64 and
/// for `grub` hosts (Secure Boot), BIOS always on iPXE.
#[test]
fn the_boot_chain_follows_the_profile_and_the_firmware() {
    use BootLoader::{Auto, Grub, Ipxe};
    let shim_url = format!("http://10.77.0.1:8080/{SHIM_X64}");
    let http = |file: &str, firmware| Expect {
        class: b"HTTPClient",
        ..offer(file, firmware)
    };
    let ack = |file: &str, firmware| Expect {
        kind: MessageType::Ack,
        dest: Destination::Sender,
        ..offer(file, firmware)
    };
    let x64 = Arch::X86_64;
    let aa64 = Arch::Aarch64;
    let cases: Vec<(&str, Vec<u8>, Port, HostBoot, Expect)> = vec![
        (
            "auto, BIOS",
            native_bios(),
            Port::Dhcp,
            profiled(Auto, x64),
            offer("undionly.kpxe", Firmware::Bios),
        ),
        (
            "auto, OVMF",
            ovmf(),
            Port::Dhcp,
            profiled(Auto, x64),
            offer("ipxe.efi", Firmware::UefiX64),
        ),
        (
            "auto, OVMF HTTP boot",
            http_discover(),
            Port::Dhcp,
            profiled(Auto, x64),
            http("http://10.77.0.1:8080/boot/ipxe.efi", Firmware::UefiHttpX64),
        ),
        (
            "grub, BIOS stays on iPXE",
            native_bios(),
            Port::Dhcp,
            profiled(Grub, x64),
            offer("undionly.kpxe", Firmware::Bios),
        ),
        (
            "grub, OVMF gets the shim",
            ovmf(),
            Port::Dhcp,
            profiled(Grub, x64),
            offer(SHIM_X64, Firmware::UefiX64),
        ),
        (
            "grub, OVMF's port-4011 REQUEST",
            boot_server_request(&ovmf()),
            Port::BootServer,
            profiled(Grub, x64),
            ack(SHIM_X64, Firmware::UefiX64),
        ),
        (
            "grub, HTTP boot gets the shim's URL",
            http_discover(),
            Port::Dhcp,
            profiled(Grub, x64),
            http(&shim_url, Firmware::UefiHttpX64),
        ),
        (
            "grub, iPXE already running keeps its script",
            bios(),
            Port::Dhcp,
            profiled(Grub, x64),
            offer(&script("52:54:00:00:00:01"), Firmware::Ipxe),
        ),
        (
            "auto, AAVMF gets the arm64 shim",
            arm64(),
            Port::Dhcp,
            profiled(Auto, aa64),
            offer(SHIM_AA64, Firmware::UefiArm64),
        ),
        (
            "ipxe, AAVMF gets the operator's arm64 iPXE",
            arm64(),
            Port::Dhcp,
            profiled(Ipxe, aa64),
            offer("ipxe-arm64.efi", Firmware::UefiArm64),
        ),
        (
            "auto, arm64 HTTP boot",
            with_arch(&http_discover(), 19),
            Port::Dhcp,
            profiled(Auto, aa64),
            http(
                &format!("http://10.77.0.1:8080/{SHIM_AA64}"),
                Firmware::UefiHttpArm64,
            ),
        ),
    ];
    for (name, packet, port, boot, want) in cases {
        let lookup = move |_: Mac| HostStatus::Netboot(boot.clone());
        check_reply(name, &packet, decide(&packet, &ctx(), &lookup, port), want);
    }
}

fn http_discover() -> Vec<u8> {
    http()
}

/// A profile for one architecture never boots on another: an x86_64
/// installer on an ARM64 machine cannot start, so the machine is left
/// alone and the reason names both.
#[test]
fn a_profile_for_another_architecture_is_not_answered() {
    for (packet, profile, firmware) in [
        (arm64(), Arch::X86_64, "aarch64"),
        (ovmf(), Arch::Aarch64, "x86_64"),
        (native_bios(), Arch::Aarch64, "x86_64"),
    ] {
        let mac = Mac(packet[28..34].try_into().unwrap());
        let lookup = move |_: Mac| HostStatus::Netboot(profiled(BootLoader::Auto, profile));
        assert_eq!(
            decide(&packet, &ctx(), &lookup, Port::Dhcp),
            Action::Ignore(Reason::WrongArch {
                mac,
                profile: profile.as_str(),
                firmware,
            })
        );
    }
}

/// An installed host. BIOS firmware is not answered: it moves on to its
/// disk at once. UEFI firmware gets the loader the host installs with —
/// iPXE, whose script chains the tree's GRUB, or the shim → GRUB chain —
/// and GRUB's config chainloads the disk (left unanswered, OVMF tries
/// PXEv6 and HTTP boot for ~270 s first; iPXE's `exit` hangs or opens the
/// setup menu — the netboot bed's findings). iPXE, if that is what asks,
/// gets its script.
#[test]
fn installed_hosts_reach_their_disk_by_the_fastest_way_their_firmware_has() {
    let installed = |_: Mac| HostStatus::LocalDisk(profiled(BootLoader::Ipxe, Arch::X86_64));
    let mac = Mac(native_bios()[28..34].try_into().unwrap());
    assert_eq!(
        decide(&native_bios(), &ctx(), &installed, Port::Dhcp),
        Action::Ignore(Reason::Installed(mac)),
    );
    check_reply(
        "installed, OVMF, iPXE host",
        &ovmf(),
        decide(&ovmf(), &ctx(), &installed, Port::Dhcp),
        offer("ipxe.efi", Firmware::UefiX64),
    );
    let grub = |_: Mac| HostStatus::LocalDisk(profiled(BootLoader::Grub, Arch::X86_64));
    check_reply(
        "installed, OVMF, GRUB host",
        &ovmf(),
        decide(&ovmf(), &ctx(), &grub, Port::Dhcp),
        offer(SHIM_X64, Firmware::UefiX64),
    );
    // `dhcp.uefi_local_boot: grub`: every installed UEFI host takes the
    // shim → GRUB chain; an iPXE host still installs through iPXE.
    let mut shim_to_disk = ctx();
    shim_to_disk.uefi_local_boot = UefiLocalBoot::Grub;
    check_reply(
        "installed, OVMF, iPXE host, uefi_local_boot: grub",
        &ovmf(),
        decide(&ovmf(), &shim_to_disk, &installed, Port::Dhcp),
        offer(SHIM_X64, Firmware::UefiX64),
    );
    let installing = |_: Mac| HostStatus::Netboot(profiled(BootLoader::Ipxe, Arch::X86_64));
    check_reply(
        "installing, OVMF, iPXE host, uefi_local_boot: grub",
        &ovmf(),
        decide(&ovmf(), &shim_to_disk, &installing, Port::Dhcp),
        offer("ipxe.efi", Firmware::UefiX64),
    );
    check_reply(
        "installed, HTTP boot",
        &http(),
        decide(&http(), &ctx(), &grub, Port::Dhcp),
        Expect {
            class: b"HTTPClient",
            ..offer(
                &format!("http://10.77.0.1:8080/{SHIM_X64}"),
                Firmware::UefiHttpX64,
            )
        },
    );
    // Without a shim to chain (no profile behind it), UEFI is left alone too.
    let bare = |_: Mac| HostStatus::LocalDisk(HostBoot::ipxe());
    let mac = Mac(ovmf()[28..34].try_into().unwrap());
    assert_eq!(
        decide(&ovmf(), &ctx(), &bare, Port::Dhcp),
        Action::Ignore(Reason::Installed(mac)),
    );
    let Action::Respond(reply) = decide(&bios(), &ctx(), &installed, Port::Dhcp) else {
        panic!("iPXE of an installed host is answered");
    };
    assert_eq!(reply.firmware, Some(Firmware::Ipxe));
    assert!(
        reply
            .boot_file
            .as_deref()
            .is_some_and(|f| f.ends_with(".ipxe")),
        "{:?}",
        reply.boot_file
    );
}

/// Option 97 that is not RFC 4578's 17 bytes (type 0, then the GUID) is
/// not echoed, and the client is answered anyway; so is one that sends
/// none (danderson/pixiecore#21, Intel ROMs).
#[test]
fn a_broken_or_missing_client_guid_is_answered_without_one() {
    for (name, packet) in [
        ("16 bytes", edit(&ovmf(), |o| set(o, 97, &[1; 16]))),
        ("type 1", edit(&ovmf(), |o| set(o, 97, &[1; 17]))),
        ("empty", edit(&ovmf(), |o| set(o, 97, &[]))),
        ("absent", edit(&ovmf(), |o| remove(o, 97))),
    ] {
        check_reply(
            name,
            &packet,
            decide(&packet, &ctx(), &hosts, Port::Dhcp),
            offer("ipxe.efi", Firmware::UefiX64),
        );
    }
}

/// A well-formed DISCOVER longer than a 2,048-byte buffer (vendor options,
/// long user classes: 2,081 bytes in the issue) is decided like any other.
#[test]
fn a_2081_byte_discover_is_read_whole() {
    let packet = common::pad_to(&ovmf(), 2081);
    assert_eq!(packet.len(), 2081);
    check_reply(
        "2,081 bytes",
        &packet,
        decide(&packet, &ctx(), &hosts, Port::Dhcp),
        offer("ipxe.efi", Firmware::UefiX64),
    );
}

/// The port-4011 REQUESTs real firmware sent (the netboot bed's captures,
/// answered by a ProxyDHCP whose offer had no boot file) each get an ACK
/// back to where they came from, with the file their offer would carry.
#[test]
fn captured_port_4011_requests_get_an_ack_with_the_boot_file() {
    let ack = |file: &str, firmware| Expect {
        kind: MessageType::Ack,
        dest: Destination::Sender,
        ..offer(file, firmware)
    };
    let cases = [
        (
            "OVMF, 4011 → 4011, no option 54",
            fixture("ovmf-pxe-bootserver-request"),
            ack("ipxe.efi", Firmware::UefiX64),
        ),
        (
            "AAVMF, 4011 → 4011",
            fixture("aavmf-pxe-bootserver-request"),
            ack(SHIM_AA64, Firmware::UefiArm64),
        ),
        (
            "ipxe.efi, 68 → 4011 with option 54",
            fixture("ipxe-bootserver-request"),
            ack(&script("52:54:00:12:36:02"), Firmware::Ipxe),
        ),
        (
            "BIOS iPXE boot server discovery, option 43 item 0x8005",
            fixture("bios-ipxe-bootserver-request"),
            ack(&script("52:54:00:12:36:04"), Firmware::Ipxe),
        ),
    ];
    for (name, packet, want) in cases {
        let arch = if option(&packet, 93) == Some(vec![0, 11]) {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        let lookup = move |_: Mac| HostStatus::Netboot(profiled(BootLoader::Auto, arch));
        check_reply(
            name,
            &packet,
            decide(&packet, &ctx(), &lookup, Port::BootServer),
            want,
        );
    }
}
