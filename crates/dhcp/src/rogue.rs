//! Noticing other servers that offer boot information on the segment: the
//! "rogue" ProxyDHCP or DHCP server that takes machines away from Kickstand
//! when its offer arrives first. Passive: the driver listens on the client
//! port (68) for the OFFERs and ACKs every server broadcasts to PXE
//! clients, and this decides, purely, whether one is another server's boot
//! offer. Probing (sending DISCOVERs of our own) was not chosen: it would
//! make the office DHCP server hand out leases to a machine that does not
//! exist, and it only sees servers at the moment it probes. DHCPv6 is the
//! other way round ([`crate::v6::Probe`]): its answers are unicast, so
//! only probing sees them, and a probe there leases nothing.

use std::net::{IpAddr, Ipv4Addr};

use dhcproto::v4::Opcode;

use crate::wire::{Mac, Request, opt};

/// Another server's boot offer to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RogueOffer {
    /// Over DHCPv4 its server identifier (option 54), else `siaddr`; over
    /// DHCPv6 the address it answered the probe from.
    pub server: IpAddr,
    /// The boot file it offered, or what stood for one (`PXEClient` with
    /// a boot menu in option 43); over DHCPv6 its boot file URL.
    pub offered: String,
    /// The client it was offered to: over DHCPv6, the appliance's own
    /// interface, whose DUID the probe carried.
    pub client: Mac,
}

const OFFER: u8 = 2;
const ACK: u8 = 5;

/// Whether `packet` is a server's boot offer, from a server that is not
/// `ours`. An address-only offer (the office DHCP server doing its job) is
/// not one.
pub fn rogue_offer(packet: &[u8], ours: Ipv4Addr) -> Option<RogueOffer> {
    let reply = Request::parse(packet).ok()?;
    if reply.header.opcode() != Opcode::BootReply {
        return None;
    }
    if !matches!(reply.message_type().ok()??, OFFER | ACK) {
        return None;
    }
    let server = reply
        .address_option(opt::SERVER_ID)
        .ok()
        .flatten()
        .unwrap_or_else(|| reply.header.siaddr());
    if server == ours || server.is_unspecified() {
        return None;
    }
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .trim_end_matches('\0')
            .trim()
            .to_owned()
    };
    let file = reply
        .option(opt::BOOTFILE)
        .map(text)
        .filter(|f| !f.is_empty())
        .or_else(|| reply.header.fname().map(text).filter(|f| !f.is_empty()));
    let pxe = reply
        .option(opt::VENDOR_CLASS)
        .is_some_and(|c| c.starts_with(b"PXEClient") || c.starts_with(b"HTTPClient"));
    let offered = match (file, pxe) {
        (Some(file), _) => file,
        (None, true) => match reply
            .option(opt::VENDOR_OPTIONS)
            .map(menu)
            .unwrap_or_default()
        {
            items if items.is_empty() => "a PXE boot menu".to_owned(),
            items => format!("a PXE boot menu ({})", items.join(", ")),
        },
        (None, false) => return None,
    };
    Some(RogueOffer {
        server: IpAddr::V4(server),
        offered,
        client: reply.mac,
    })
}

/// The item descriptions of a PXE boot menu (option 43, sub-option 9:
/// type (2 bytes), length, text; repeated), as far as they parse.
fn menu(vendor: &[u8]) -> Vec<String> {
    const PXE_BOOT_MENU: u8 = 9;
    let mut items = Vec::new();
    let mut rest = vendor;
    while let [code, len, tail @ ..] = rest {
        let Some((data, after)) = tail.split_at_checked(usize::from(*len)) else {
            break;
        };
        if *code == PXE_BOOT_MENU {
            let mut entries = data;
            while let [_, _, n, more @ ..] = entries {
                let Some((text, next)) = more.split_at_checked(usize::from(*n)) else {
                    break;
                };
                items.push(String::from_utf8_lossy(text).into_owned());
                entries = next;
            }
        }
        rest = after;
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Encodable, Encoder, Message, MessageType};

    const US: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

    fn reply(
        kind: MessageType,
        server: Ipv4Addr,
        file: Option<&str>,
        class: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut m = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            server,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 0, 0, 5],
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        if let Some(f) = file {
            m.opts_mut()
                .insert(DhcpOption::BootfileName(f.as_bytes().to_vec()));
        }
        if let Some(c) = class {
            m.opts_mut().insert(DhcpOption::ClassIdentifier(c.to_vec()));
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).expect("encode");
        out
    }

    #[test]
    fn only_other_servers_boot_offers_count() {
        let offer = reply(
            MessageType::Offer,
            ROGUE,
            Some("evil.efi"),
            Some(b"PXEClient"),
        );
        assert_eq!(
            rogue_offer(&offer, US),
            Some(RogueOffer {
                server: IpAddr::V4(ROGUE),
                offered: "evil.efi".into(),
                client: Mac([0x52, 0x54, 0, 0, 0, 5]),
            })
        );
        let menu = reply(MessageType::Offer, ROGUE, None, Some(b"PXEClient"));
        assert_eq!(
            rogue_offer(&menu, US).map(|r| r.offered),
            Some("a PXE boot menu".into())
        );
        // Ours, an address-only offer, a NAK, a request: none.
        assert_eq!(
            rogue_offer(
                &reply(MessageType::Offer, US, Some("ipxe.efi"), Some(b"PXEClient")),
                US
            ),
            None
        );
        assert_eq!(
            rogue_offer(&reply(MessageType::Offer, ROGUE, None, None), US),
            None
        );
        assert_eq!(
            rogue_offer(&reply(MessageType::Nak, ROGUE, Some("x"), None), US),
            None
        );
        let mut request = offer.clone();
        request[0] = 1;
        assert_eq!(rogue_offer(&request, US), None);
        assert_eq!(rogue_offer(&offer[..100], US), None);
    }
}
