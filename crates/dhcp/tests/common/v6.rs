//! DHCPv6 message surgery for the v6 test binaries.

use std::net::Ipv6Addr;

/// The options of a DHCPv6 message (after its 4-byte header) or of a
/// relay message (after 34 bytes), in order.
pub fn options(message: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let header = if message[0] == 12 || message[0] == 13 {
        34
    } else {
        4
    };
    let mut out = Vec::new();
    let mut rest = &message[header..];
    while !rest.is_empty() {
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        out.push((code, rest[4..4 + len].to_vec()));
        rest = &rest[4 + len..];
    }
    out
}

pub fn option(message: &[u8], code: u16) -> Option<Vec<u8>> {
    options(message)
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| d)
}

fn put(out: &mut Vec<u8>, opts: &[(u16, Vec<u8>)]) {
    for (code, data) in opts {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
}

/// A client message of `kind` with `xid` and options.
pub fn message(kind: u8, xid: [u8; 3], opts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![kind, xid[0], xid[1], xid[2]];
    put(&mut out, opts);
    out
}

/// The same message with its type and options rewritten by `f`.
pub fn edit(message_: &[u8], kind: u8, f: impl FnOnce(&mut Vec<(u16, Vec<u8>)>)) -> Vec<u8> {
    let mut opts = options(message_);
    f(&mut opts);
    message(kind, [message_[1], message_[2], message_[3]], &opts)
}

pub fn set(opts: &mut Vec<(u16, Vec<u8>)>, code: u16, data: &[u8]) {
    opts.retain(|(c, _)| *c != code);
    opts.push((code, data.to_vec()));
}

pub fn remove(opts: &mut Vec<(u16, Vec<u8>)>, code: u16) {
    opts.retain(|(c, _)| *c != code);
}

/// A Relay-forward around `inner`, with `extra` options before the
/// Relay Message option.
pub fn relay_forward(
    hop_count: u8,
    link: Ipv6Addr,
    peer: Ipv6Addr,
    extra: &[(u16, Vec<u8>)],
    inner: &[u8],
) -> Vec<u8> {
    let mut out = vec![12, hop_count];
    out.extend_from_slice(&link.octets());
    out.extend_from_slice(&peer.octets());
    put(&mut out, extra);
    put(&mut out, &[(9, inner.to_vec())]);
    out
}

/// A vendor class option's data: enterprise number 343 and one class.
pub fn vendor_class(class: &str) -> Vec<u8> {
    let mut out = 343u32.to_be_bytes().to_vec();
    out.extend_from_slice(&(class.len() as u16).to_be_bytes());
    out.extend_from_slice(class.as_bytes());
    out
}

/// An IA Address option (5): the address, lifetimes of zero (what a
/// client sends in a Request or Renew).
pub fn iaaddr(address: Ipv6Addr) -> Vec<u8> {
    [&[0, 5, 0, 24][..], &address.octets(), &[0; 8]].concat()
}

/// An IA_NA's data (IAID, T1, T2, then its options) holding `addresses`.
pub fn ia_na(iaid: u8, addresses: &[Ipv6Addr]) -> Vec<u8> {
    let mut data = vec![0, 0, 0, iaid, 0, 0, 0, 0, 0, 0, 0, 0];
    for a in addresses {
        data.extend(iaaddr(*a));
    }
    data
}
