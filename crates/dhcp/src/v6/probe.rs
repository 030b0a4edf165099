//! Finding other DHCPv6 servers that hand out boot files: the IPv6 side of
//! [`crate::rogue_offer`].
//!
//! Watching, as over DHCPv4, cannot work: a DHCPv6 server answers a
//! client by unicast to the client's link-local address, so the appliance
//! never sees another server's answer to a machine. So it asks itself,
//! as a PXE client would: an Information-request (RFC 8415 18.2.6) with
//! EDK2's vendor class and client architecture, asking for the boot file
//! URL (option 59) and its parameters (60). An Information-request
//! carries no IA: no server leases anything for it, so the probe costs
//! the office's DHCPv6 server nothing but an answer. A Reply to it that
//! names a boot file, from a server that is not this one, is a rogue boot
//! server; the office server doing its job answers without one, or names
//! a file on this appliance.
//!
//! Pure: [`Probe::message`] builds the datagram, [`Probe::judge`] reads an
//! answer. The daemon sends and receives.

use std::net::{IpAddr, Ipv6Addr};

use crate::rogue::RogueOffer;
use crate::v6::decide::PXE_ENTERPRISE;
use crate::v6::wire::{self, Received, Writer, msg, opt};
use crate::wire::Mac;

/// What the probe says it is: EDK2's PXE on x64 UEFI (RFC 5970 3.4: the
/// class data follows the enterprise number as a length-prefixed string).
const VENDOR_CLASS: &[u8] = b"PXEClient:Arch:00007:UNDI:003016";
/// Client architecture (option 61): x64 UEFI, as the class says.
const EFI_X64: u16 = 7;

/// The appliance asking, as a PXE client, who offers boot files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The appliance's interface whose DUID-LL the probe carries.
    mac: Mac,
    /// That DUID-LL: the probe's Client Identifier and also the Server
    /// Identifier the appliance's own DHCPv6 answers carry (a device has
    /// one DUID, RFC 8415 11), so an answer naming it is ours.
    duid: Vec<u8>,
}

impl Probe {
    /// The probe of the appliance whose DHCPv6 server identifier is the
    /// DUID-LL of `mac` ([`crate::v6::Context::new`]).
    pub fn new(mac: Mac) -> Probe {
        Probe {
            mac,
            duid: wire::duid_ll(mac),
        }
    }

    /// The Information-request with transaction id `xid`: Client ID,
    /// Elapsed Time (RFC 8415 18.2.6 requires it), Option Request for 59
    /// and 60, vendor class and client architecture. No IA, and no
    /// Server ID: every server on the link may answer.
    pub fn message(&self, xid: [u8; 3]) -> Vec<u8> {
        let mut w = Writer::message(msg::INFORMATION_REQUEST, xid);
        w.option(opt::CLIENT_ID, &[&self.duid]);
        w.option(opt::ELAPSED_TIME, &[&0u16.to_be_bytes()]);
        w.option(
            opt::ORO,
            &[
                &opt::BOOTFILE_URL.to_be_bytes(),
                &opt::BOOTFILE_PARAM.to_be_bytes(),
            ],
        );
        let class_len = (VENDOR_CLASS.len() as u16).to_be_bytes();
        w.option(
            opt::VENDOR_CLASS,
            &[&PXE_ENTERPRISE, &class_len, VENDOR_CLASS],
        );
        w.option(opt::CLIENT_ARCH_TYPE, &[&EFI_X64.to_be_bytes()]);
        w.into_bytes()
    }

    /// Whether `datagram`, from `from`, is another server's boot answer to
    /// the probe sent with `xid`: a Reply with that transaction id, for our
    /// Client ID if it names one, with a Server ID that is not ours and a
    /// boot file URL that is not on `appliance`, the appliance's IPv6
    /// address (an office server that names Kickstand's shim, as GRUB over
    /// IPv6 needs, sends machines to Kickstand, not away from it). The
    /// server is known by the address it answered from. Anything else,
    /// malformed included, is `None`.
    pub fn judge(
        &self,
        datagram: &[u8],
        from: Ipv6Addr,
        xid: [u8; 3],
        appliance: Ipv6Addr,
    ) -> Option<RogueOffer> {
        let received = Received::parse(datagram).ok()?;
        let reply = &received.message;
        if !received.relays.is_empty() || reply.kind != msg::REPLY || reply.xid != xid {
            return None;
        }
        if reply
            .options
            .get(opt::CLIENT_ID)
            .is_some_and(|id| id != self.duid)
        {
            return None;
        }
        let server = reply.options.get(opt::SERVER_ID)?;
        if server.is_empty() || server == self.duid {
            return None;
        }
        let url = reply.options.get(opt::BOOTFILE_URL)?;
        let offered = String::from_utf8_lossy(url).trim().to_owned();
        if offered.is_empty() || url_host(&offered) == Some(appliance) {
            return None;
        }
        Some(RogueOffer {
            server: IpAddr::V6(from),
            offered,
            client: self.mac,
        })
    }
}

/// The IPv6 address a URL names as its host (`scheme://[address]:port/…`,
/// RFC 3986 3.2.2), if it names one.
fn url_host(url: &str) -> Option<Ipv6Addr> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    host.strip_prefix('[')?.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Mac = Mac([0x52, 0x54, 0, 0, 0x78, 1]);
    const XID: [u8; 3] = [0x4b, 0x53, 0x36];
    const ROGUE: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
    const APPLIANCE: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 1);
    const ROGUE_DUID: &[u8] = &[0, 1, 0, 1, 0x2e, 0x1c, 0x3a, 0x01, 2, 0, 0, 0, 0, 9];

    /// The options of a message, framing trusted (we wrote it).
    fn options(message: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut rest = &message[4..];
        let mut found = Vec::new();
        while let [a, b, c, d, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*c, *d]));
            found.push((u16::from_be_bytes([*a, *b]), tail[..len].to_vec()));
            rest = &tail[len..];
        }
        found
    }

    fn reply(kind: u8, xid: [u8; 3], opts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut w = Writer::message(kind, xid);
        for (code, data) in opts {
            w.option(*code, &[data]);
        }
        w.into_bytes()
    }

    fn boot_reply(server: &[u8], url: &[u8]) -> Vec<u8> {
        let us = wire::duid_ll(US);
        reply(
            msg::REPLY,
            XID,
            &[
                (opt::SERVER_ID, server),
                (opt::CLIENT_ID, &us),
                (opt::BOOTFILE_URL, url),
            ],
        )
    }

    #[test]
    fn the_probe_is_a_pxe_information_request_that_asks_for_the_boot_file() {
        let probe = Probe::new(US).message(XID);
        assert_eq!(probe[..4], [msg::INFORMATION_REQUEST, 0x4b, 0x53, 0x36]);
        let mut class = 343u32.to_be_bytes().to_vec();
        class.extend_from_slice(&[0, 32]);
        class.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003016");
        assert_eq!(
            options(&probe),
            [
                (opt::CLIENT_ID, vec![0, 3, 0, 1, 0x52, 0x54, 0, 0, 0x78, 1]),
                (opt::ELAPSED_TIME, vec![0, 0]),
                (opt::ORO, vec![0, 59, 0, 60]),
                (opt::VENDOR_CLASS, class),
                (opt::CLIENT_ARCH_TYPE, vec![0, 7]),
            ]
        );
        // No IA_NA (3), IA_TA (4) or IA_PD (25): nothing to lease.
        assert!(options(&probe).iter().all(|(c, _)| ![3, 4, 25].contains(c)));
    }

    #[test]
    fn another_servers_boot_file_is_a_rogue() {
        let url = b"tftp://[fd78::9]/evil.efi";
        assert_eq!(
            Probe::new(US).judge(&boot_reply(ROGUE_DUID, url), ROGUE, XID, APPLIANCE),
            Some(RogueOffer {
                server: IpAddr::V6(ROGUE),
                offered: "tftp://[fd78::9]/evil.efi".into(),
                client: US,
            })
        );
    }

    #[test]
    fn a_url_names_its_ipv6_host() {
        assert_eq!(url_host("tftp://[fd78::1]/ipxe.efi"), Some(APPLIANCE));
        assert_eq!(url_host("http://user@[fd78::1]:8080/x"), Some(APPLIANCE));
        assert_eq!(url_host("http://10.0.0.1/x"), None);
        assert_eq!(url_host("tftp://[fd78::1%25eth0]/x"), None);
        assert_eq!(url_host("evil.efi"), None);
    }

    #[test]
    fn ours_the_office_and_other_answers_are_not() {
        let probe = Probe::new(US);
        let url: &[u8] = b"tftp://[fd78::9]/evil.efi";
        let us = wire::duid_ll(US);
        let other_client = wire::duid_ll(Mac([2, 0, 0, 0, 0, 1]));
        let not_rogues: [(&str, Vec<u8>); 11] = [
            (
                "the office naming our shim",
                boot_reply(ROGUE_DUID, b"tftp://[fd78::1]/os/el9/EFI/BOOT/BOOTX64.EFI"),
            ),
            (
                "the office naming our HTTP boot",
                boot_reply(ROGUE_DUID, b"http://[fd78::1]:8080/boot/ipxe.efi"),
            ),
            ("our own answer", boot_reply(&us, url)),
            (
                "the office's: no boot file",
                reply(
                    msg::REPLY,
                    XID,
                    &[(opt::SERVER_ID, ROGUE_DUID), (opt::CLIENT_ID, &us)],
                ),
            ),
            ("an empty boot file", boot_reply(ROGUE_DUID, b"  ")),
            (
                "no server id",
                reply(msg::REPLY, XID, &[(opt::BOOTFILE_URL, url)]),
            ),
            (
                "another transaction",
                reply(
                    msg::REPLY,
                    [0, 0, 1],
                    &[(opt::SERVER_ID, ROGUE_DUID), (opt::BOOTFILE_URL, url)],
                ),
            ),
            (
                "an Advertise",
                reply(
                    msg::ADVERTISE,
                    XID,
                    &[(opt::SERVER_ID, ROGUE_DUID), (opt::BOOTFILE_URL, url)],
                ),
            ),
            (
                "for another client",
                reply(
                    msg::REPLY,
                    XID,
                    &[
                        (opt::SERVER_ID, ROGUE_DUID),
                        (opt::CLIENT_ID, &other_client),
                        (opt::BOOTFILE_URL, url),
                    ],
                ),
            ),
            ("truncated", boot_reply(ROGUE_DUID, url)[..20].to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, datagram) in not_rogues {
            assert_eq!(
                probe.judge(&datagram, ROGUE, XID, APPLIANCE),
                None,
                "{what}"
            );
        }
    }
}
