//! Reading a BOOTP/DHCP request off the wire.
//!
//! The fixed header goes through dhcproto; the options do not. dhcproto 0.15's
//! option decoder stops at the first option it cannot read and keeps what came
//! before (so a hostile option hides the ones after it), and some of its
//! arms `debug_assert!` on the option length or subtract from it unchecked,
//! which panics in debug builds. A strict type-length-value walk over the raw
//! bytes is small and cannot be fooled that way.

use std::net::Ipv4Addr;

use dhcproto::v4::{Decodable, Decoder, Message, Opcode};

/// Fixed BOOTP header (236 bytes) plus the DHCP magic cookie.
const HEADER_LEN: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

pub use kickstand_profiles::{BadMac, Mac};

/// Why a packet could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    #[error("{0} bytes is shorter than a DHCP header")]
    TooShort(usize),
    /// Only Ethernet (`htype` 1, `hlen` 6) is trusted: dhcproto 0.15 decodes
    /// an `hlen` over 16 and then panics slicing `chaddr`.
    #[error("hardware type {htype} with address length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no DHCP magic cookie")]
    NoMagicCookie,
    #[error("option {code} runs past the end of the packet")]
    TruncatedOption { code: u8 },
    #[error("option {code} has an invalid length {len}")]
    BadOptionLength { code: u8, len: usize },
}

/// DHCP message types (option 53) this crate acts on.
pub(crate) mod msg {
    pub(crate) const DISCOVER: u8 = 1;
    pub(crate) const REQUEST: u8 = 3;
    pub(crate) const DECLINE: u8 = 4;
    pub(crate) const RELEASE: u8 = 7;
    pub(crate) const INFORM: u8 = 8;
}

/// Option codes read from requests.
pub(crate) mod opt {
    pub(crate) const REQUESTED_ADDRESS: u8 = 50;
    pub(crate) const MESSAGE_TYPE: u8 = 53;
    pub(crate) const SERVER_ID: u8 = 54;
    pub(crate) const VENDOR_OPTIONS: u8 = 43;
    pub(crate) const VENDOR_CLASS: u8 = 60;
    pub(crate) const BOOTFILE: u8 = 67;
    pub(crate) const USER_CLASS: u8 = 77;
    pub(crate) const RELAY_AGENT: u8 = 82;
    pub(crate) const CLIENT_ARCH: u8 = 93;
    pub(crate) const CLIENT_UUID: u8 = 97;
    pub(crate) const IPXE_ENCAP: u8 = 175;
}

/// The client MAC of what looks like an Ethernet BOOTP packet, without
/// checking the rest: the driver looks the host up before the decision.
pub(crate) fn peek_mac(packet: &[u8]) -> Option<Mac> {
    if packet.len() < HEADER_LEN || packet[1] != 1 || packet[2] != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&packet[28..34]);
    Some(Mac(mac))
}

/// The requested address (option 50) of a packet that parses.
pub(crate) fn peek_requested(packet: &[u8]) -> Option<Ipv4Addr> {
    Request::parse(packet)
        .ok()?
        .address_option(opt::REQUESTED_ADDRESS)
        .ok()
        .flatten()
}

/// A request whose header and option framing have been checked.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) header: Message,
    pub(crate) mac: Mac,
    options: Vec<(u8, &'a [u8])>,
}

impl<'a> Request<'a> {
    pub(crate) fn parse(packet: &'a [u8]) -> Result<Self, Malformed> {
        if packet.len() < HEADER_LEN {
            return Err(Malformed::TooShort(packet.len()));
        }
        let (htype, hlen) = (packet[1], packet[2]);
        if htype != 1 || hlen != 6 {
            return Err(Malformed::NotEthernet { htype, hlen });
        }
        if packet[236..HEADER_LEN] != MAGIC_COOKIE {
            return Err(Malformed::NoMagicCookie);
        }
        // Only the fixed header is handed to dhcproto: with no bytes after the
        // cookie its option decoder has nothing to misread.
        let header = Message::decode(&mut Decoder::new(&packet[..HEADER_LEN]))
            .map_err(|_| Malformed::TooShort(packet.len()))?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&packet[28..34]);
        Ok(Request {
            header,
            mac: Mac(mac),
            options: walk_options(&packet[HEADER_LEN..])?,
        })
    }

    pub(crate) fn is_boot_request(&self) -> bool {
        self.header.opcode() == Opcode::BootRequest
    }

    /// The first occurrence of an option's data.
    pub(crate) fn option(&self, code: u8) -> Option<&'a [u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, data)| *data)
    }

    pub(crate) fn message_type(&self) -> Result<Option<u8>, Malformed> {
        self.fixed::<1>(opt::MESSAGE_TYPE).map(|o| o.map(|[t]| t))
    }

    pub(crate) fn address_option(&self, code: u8) -> Result<Option<Ipv4Addr>, Malformed> {
        self.fixed::<4>(code).map(|o| o.map(Ipv4Addr::from))
    }

    fn fixed<const N: usize>(&self, code: u8) -> Result<Option<[u8; N]>, Malformed> {
        self.option(code)
            .map(|data| {
                <[u8; N]>::try_from(data).map_err(|_| Malformed::BadOptionLength {
                    code,
                    len: data.len(),
                })
            })
            .transpose()
    }
}

fn walk_options(mut rest: &[u8]) -> Result<Vec<(u8, &[u8])>, Malformed> {
    const PAD: u8 = 0;
    const END: u8 = 255;
    let mut options = Vec::with_capacity(16);
    // A missing END is tolerated: some firmware ends with padding instead.
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            PAD => rest = tail,
            END => break,
            _ => {
                let (&len, tail) = tail
                    .split_first()
                    .ok_or(Malformed::TruncatedOption { code })?;
                let len = usize::from(len);
                if tail.len() < len {
                    return Err(Malformed::TruncatedOption { code });
                }
                let (data, tail) = tail.split_at(len);
                options.push((code, data));
                rest = tail;
            }
        }
    }
    Ok(options)
}
