//! Fixture loading and packet surgery shared by the test binaries.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use dhcproto::v4::{Decodable, Decoder, Message};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture file: hex bytes, whitespace ignored, `#` starts a comment line.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The options of a well-formed packet, in order.
pub fn options(packet: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 240;
    while i < packet.len() {
        match packet[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = packet[i + 1] as usize;
                out.push((code, packet[i + 2..i + 2 + len].to_vec()));
                i += 2 + len;
            }
        }
    }
    out
}

pub fn option(packet: &[u8], code: u8) -> Option<Vec<u8>> {
    options(packet)
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| d)
}

/// The same header with the options rewritten by `f`.
pub fn edit(packet: &[u8], f: impl FnOnce(&mut Vec<(u8, Vec<u8>)>)) -> Vec<u8> {
    let mut opts = options(packet);
    f(&mut opts);
    let mut out = packet[..240].to_vec();
    for (code, data) in opts {
        out.push(code);
        out.push(data.len() as u8);
        out.extend(data);
    }
    out.push(255);
    out
}

pub fn set(opts: &mut Vec<(u8, Vec<u8>)>, code: u8, data: &[u8]) {
    opts.retain(|(c, _)| *c != code);
    opts.push((code, data.to_vec()));
}

pub fn remove(opts: &mut Vec<(u8, Vec<u8>)>, code: u8) {
    opts.retain(|(c, _)| *c != code);
}

/// `packet` padded to `len` bytes with site-specific options (224–254)
/// placed first, so a reader that stops early never sees the vendor class.
pub fn pad_to(packet: &[u8], len: usize) -> Vec<u8> {
    let mut left = len - packet.len();
    edit(packet, |o| {
        let mut code = 224;
        let mut at = 0;
        while left > 0 {
            // 2 header bytes per option, at most 255 of data; never leave 1.
            let mut n = left.min(257) - 2;
            if left - (n + 2) == 1 {
                n -= 1;
            }
            o.insert(at, (code, vec![b'x'; n]));
            left -= n + 2;
            code += 1;
            at += 1;
        }
    })
}

/// Decode one of our own replies (trusted bytes) for field assertions.
pub fn decode(reply: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(reply)).expect("reply decodes")
}

/// A DHCP packet with `mac`, `xid` and the given options, built by hand.
pub fn packet(mac: [u8; 6], xid: u32, opts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    for (code, data) in opts {
        p.push(*code);
        p.push(data.len() as u8);
        p.extend_from_slice(data);
    }
    p.push(255);
    p
}

pub mod v6;
