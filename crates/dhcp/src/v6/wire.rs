//! Reading a DHCPv6 message off the wire (RFC 8415), relayed or not.
//!
//! A strict walk over the raw bytes, for the reason [`crate::wire`] gives
//! for DHCPv4: every option length is checked against what is left, a
//! Relay-forward is unwrapped to a fixed depth, and nothing is decoded that
//! the decision does not read.

use std::net::Ipv6Addr;

use crate::wire::Mac;

/// Message types (RFC 8415 7.3) this module reads or writes.
pub(crate) mod msg {
    pub(crate) const SOLICIT: u8 = 1;
    pub(crate) const ADVERTISE: u8 = 2;
    pub(crate) const REQUEST: u8 = 3;
    pub(crate) const CONFIRM: u8 = 4;
    pub(crate) const RENEW: u8 = 5;
    pub(crate) const REBIND: u8 = 6;
    pub(crate) const REPLY: u8 = 7;
    pub(crate) const INFORMATION_REQUEST: u8 = 11;
    pub(crate) const RELAY_FORW: u8 = 12;
    pub(crate) const RELAY_REPL: u8 = 13;
}

/// Option codes (RFC 8415 21, RFC 5970, RFC 6939).
pub(crate) mod opt {
    pub(crate) const CLIENT_ID: u16 = 1;
    pub(crate) const SERVER_ID: u16 = 2;
    pub(crate) const IA_NA: u16 = 3;
    pub(crate) const IA_TA: u16 = 4;
    pub(crate) const IAADDR: u16 = 5;
    pub(crate) const ORO: u16 = 6;
    pub(crate) const ELAPSED_TIME: u16 = 8;
    pub(crate) const RELAY_MSG: u16 = 9;
    pub(crate) const USER_CLASS: u16 = 15;
    pub(crate) const VENDOR_CLASS: u16 = 16;
    pub(crate) const INTERFACE_ID: u16 = 18;
    pub(crate) const BOOTFILE_URL: u16 = 59;
    pub(crate) const BOOTFILE_PARAM: u16 = 60;
    pub(crate) const CLIENT_ARCH_TYPE: u16 = 61;
    pub(crate) const CLIENT_LINKLAYER_ADDR: u16 = 79;
}

/// Relay-forwards nested deeper than this are dropped: RFC 8415's
/// HOP_COUNT_LIMIT, which relays enforce on the way in too.
pub const MAX_RELAY_DEPTH: usize = 8;

/// A datagram larger than this is not a DHCPv6 message a boot client
/// sends; nothing legitimate comes near it (an IPv6 minimum MTU of 1280
/// holds a whole Solicit), and a relay chain adds a few hundred bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Link-layer type of Ethernet (RFC 826 `ar$hrd`), in DUIDs and option 79.
const ETHERNET: u16 = 1;

/// Why a datagram could not be read as DHCPv6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    #[error("{0} bytes is shorter than a DHCPv6 header")]
    TooShort(usize),
    #[error("{0} bytes is larger than any DHCPv6 boot request")]
    TooLong(usize),
    #[error("option {code} runs past the end of the message")]
    TruncatedOption { code: u16 },
    #[error("Relay-forward without a Relay Message option")]
    NoRelayMessage,
    #[error("Relay-forwards nested deeper than {MAX_RELAY_DEPTH}")]
    RelayTooDeep,
}

/// A relay agent's wrapping of the message (RFC 8415 9), outermost first
/// in [`Received::relays`].
#[derive(Debug, Clone)]
pub(crate) struct Relay<'a> {
    pub(crate) hop_count: u8,
    pub(crate) link: [u8; 16],
    pub(crate) peer: Ipv6Addr,
    pub(crate) options: Options<'a>,
}

/// A client's (or another server's) message: what the relays carried.
#[derive(Debug, Clone)]
pub(crate) struct Message<'a> {
    pub(crate) kind: u8,
    pub(crate) xid: [u8; 3],
    pub(crate) options: Options<'a>,
}

/// One datagram: the relays it came through and the message inside.
#[derive(Debug, Clone)]
pub(crate) struct Received<'a> {
    pub(crate) relays: Vec<Relay<'a>>,
    pub(crate) message: Message<'a>,
}

/// Options in the order they came, each framing-checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Options<'a> {
    fn walk(mut rest: &'a [u8]) -> Result<Self, Malformed> {
        let mut options = Vec::with_capacity(12);
        while !rest.is_empty() {
            let code = rest.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            let len = rest
                .get(2..4)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            let (Some(code), Some(len)) = (code, len) else {
                let code = code.unwrap_or_default();
                return Err(Malformed::TruncatedOption { code });
            };
            let data = rest
                .get(4..4 + len)
                .ok_or(Malformed::TruncatedOption { code })?;
            options.push((code, data));
            rest = &rest[4 + len..];
        }
        Ok(Options(options))
    }

    /// The first occurrence of an option's data.
    pub(crate) fn get(&self, code: u16) -> Option<&'a [u8]> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
    }

    /// Every occurrence of an option's data, in order.
    pub(crate) fn all(&self, code: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0
            .iter()
            .filter(move |(c, _)| *c == code)
            .map(|(_, d)| *d)
    }
}

/// The addresses of the IA Address options (RFC 8415 21.6) inside the
/// IA_NA and IA_TA options of `options`, in order. An IA whose own
/// options are not well framed gives none; an IA Address shorter than an
/// address is skipped.
pub(crate) fn ia_addresses(options: &Options<'_>) -> Vec<Ipv6Addr> {
    // IAID, T1 and T2 come before an IA_NA's options (21.4); the IAID
    // alone before an IA_TA's (21.5).
    let na = options.all(opt::IA_NA).filter_map(|ia| ia.get(12..));
    let ta = options.all(opt::IA_TA).filter_map(|ia| ia.get(4..));
    let mut addresses = Vec::new();
    for inner in na.chain(ta).filter_map(|o| Options::walk(o).ok()) {
        let found = inner.all(opt::IAADDR).filter_map(|a| a.get(..16));
        addresses.extend(found.filter_map(|a| <[u8; 16]>::try_from(a).ok().map(Ipv6Addr::from)));
    }
    addresses
}

impl<'a> Received<'a> {
    pub(crate) fn parse(datagram: &'a [u8]) -> Result<Self, Malformed> {
        if datagram.len() > MAX_MESSAGE_LEN {
            return Err(Malformed::TooLong(datagram.len()));
        }
        let mut relays = Vec::new();
        let mut rest = datagram;
        loop {
            match rest.first() {
                // A Relay-reply is a server's and is read as a message,
                // then ignored for its type.
                Some(&msg::RELAY_FORW) => {
                    if relays.len() == MAX_RELAY_DEPTH {
                        return Err(Malformed::RelayTooDeep);
                    }
                    let relay = Relay::parse(rest)?;
                    rest = relay
                        .options
                        .get(opt::RELAY_MSG)
                        .ok_or(Malformed::NoRelayMessage)?;
                    relays.push(relay);
                }
                _ => {
                    let message = Message::parse(rest)?;
                    return Ok(Received { relays, message });
                }
            }
        }
    }

    /// The relay closest to the client, the one on its link.
    pub(crate) fn first_relay(&self) -> Option<&Relay<'a>> {
        self.relays.last()
    }
}

impl<'a> Relay<'a> {
    /// Type, hop count, link address, peer address (RFC 8415 9).
    const HEADER: usize = 34;

    fn parse(bytes: &'a [u8]) -> Result<Self, Malformed> {
        if bytes.len() < Self::HEADER {
            return Err(Malformed::TooShort(bytes.len()));
        }
        let mut link = [0; 16];
        link.copy_from_slice(&bytes[2..18]);
        let mut peer = [0; 16];
        peer.copy_from_slice(&bytes[18..34]);
        Ok(Relay {
            hop_count: bytes[1],
            link,
            peer: Ipv6Addr::from(peer),
            options: Options::walk(&bytes[Self::HEADER..])?,
        })
    }
}

impl<'a> Message<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, Malformed> {
        if bytes.len() < 4 {
            return Err(Malformed::TooShort(bytes.len()));
        }
        Ok(Message {
            kind: bytes[0],
            xid: [bytes[1], bytes[2], bytes[3]],
            options: Options::walk(&bytes[4..])?,
        })
    }
}

/// The Ethernet address inside a DUID-LLT (type 1) or DUID-LL (type 3).
pub(crate) fn duid_mac(duid: &[u8]) -> Option<Mac> {
    let address = match duid {
        [0, 1, 0, 1, _, _, _, _, address @ ..] | [0, 3, 0, 1, address @ ..] => address,
        _ => return None,
    };
    <[u8; 6]>::try_from(address).ok().map(Mac)
}

/// A DUID-UUID (type 4) whose UUID is all zeros: no machine's own.
pub(crate) fn is_zero_uuid(duid: &[u8]) -> bool {
    matches!(duid, [0, 4, uuid @ ..] if uuid.len() == 16 && uuid.iter().all(|&b| b == 0))
}

/// The DUID type (RFC 8415 11.1), for the log line of a client that could
/// not be placed.
pub(crate) fn duid_type(duid: &[u8]) -> Option<u16> {
    duid.get(..2).map(|t| u16::from_be_bytes([t[0], t[1]]))
}

/// A relay's Client Link-Layer Address option (RFC 6939): type, address.
pub(crate) fn link_layer_option(data: &[u8]) -> Option<Mac> {
    match data {
        [hi, lo, address @ ..] if u16::from_be_bytes([*hi, *lo]) == ETHERNET => {
            <[u8; 6]>::try_from(address).ok().map(Mac)
        }
        _ => None,
    }
}

/// The MAC a link-local address was formed from by modified EUI-64
/// (RFC 4291 appendix A: `ff:fe` in the middle, the universal/local bit
/// flipped). A privacy or stable-opaque address (RFC 7217) gives none.
pub(crate) fn eui64_mac(address: Ipv6Addr) -> Option<Mac> {
    let o = address.octets();
    let link_local = o[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
    (link_local && o[11] == 0xff && o[12] == 0xfe)
        .then(|| Mac([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
}

/// The DUID-LL (type 3) of an Ethernet interface: the server identifier
/// the appliance answers with.
pub(crate) fn duid_ll(mac: Mac) -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac.0);
    duid
}

/// Writing one message: type, transaction id, options in the order added.
#[derive(Debug)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn message(kind: u8, xid: [u8; 3]) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(kind);
        bytes.extend_from_slice(&xid);
        Writer(bytes)
    }

    /// A Relay-reply around `inner`, for `relay` (RFC 8415 19.3): its hop
    /// count, link and peer addresses, and its Interface-ID, echoed.
    pub(crate) fn relay_reply(relay: &Relay<'_>, inner: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(inner.len() + 64);
        bytes.extend_from_slice(&[msg::RELAY_REPL, relay.hop_count]);
        bytes.extend_from_slice(&relay.link);
        bytes.extend_from_slice(&relay.peer.octets());
        let mut w = Writer(bytes);
        if let Some(id) = relay.options.get(opt::INTERFACE_ID) {
            w.option(opt::INTERFACE_ID, &[id]);
        }
        w.option(opt::RELAY_MSG, &[inner]);
        w
    }

    /// An option whose data is `parts`, concatenated. Every option written
    /// here is well under 64 KiB: a DUID, a URL, a class string, or a
    /// message already bounded by [`MAX_MESSAGE_LEN`].
    pub(crate) fn option(&mut self, code: u16, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u16::try_from(len).expect("an option under 64 KiB");
        self.0.extend_from_slice(&code.to_be_bytes());
        self.0.extend_from_slice(&len.to_be_bytes());
        for part in parts {
            self.0.extend_from_slice(part);
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}
