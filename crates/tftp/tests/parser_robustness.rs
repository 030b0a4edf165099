//! Many random and truncated datagrams through the parser, the path rules
//! and negotiation: nothing may panic. The cargo-fuzz target in `fuzz/`
//! does the same with coverage guidance.

use kickstand_tftp::normalize;
use kickstand_tftp::packet::{self, Packet};
use kickstand_tftp::protocol::{Limits, negotiate};

fn exercise(bytes: &[u8]) {
    if let Ok(Packet::Request(request)) = Packet::parse(bytes) {
        let _ = normalize(&request.filename);
        let negotiated = negotiate(&request.options, 1 << 20, &Limits::default());
        assert!(negotiated.blksize >= 8 && negotiated.windowsize >= 1);
        assert_eq!(
            Packet::parse(&packet::encode_request(&request)),
            Ok(Packet::Request(request))
        );
    }
    let _ = normalize(bytes);
}

#[test]
fn random_and_truncated_datagrams_do_not_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds: &[&[u8]] = &[
        b"\0\x01pxelinux.0\0octet\0blksize\x001468\0tsize\x000\0windowsize\x004\0",
        b"\0\x02up\0netascii\0",
        b"\0\x05\0\x08abort\0",
        b"\0\x06blksize\x00512\0",
        b"\0\x04\xff\xff",
        b"\0\x03\0\x01data",
    ];
    let alphabet = b"\0\x01\x02\x03\x04\x05\x06/.%\\:aAoctetblksizewindowsize0123456789";
    for seed in seeds {
        for cut in 0..=seed.len() {
            exercise(&seed[..cut]);
        }
    }
    for _ in 0..200_000 {
        let len = (next() % 80) as usize;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if next() % 2 == 0 && bytes.len() >= 2 {
            bytes[0] = 0;
            bytes[1] = (next() % 7) as u8;
        }
        exercise(&bytes);
        let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        exercise(&raw);
        // Mutate a valid request.
        let mut mutated = seeds[0].to_vec();
        let at = (next() as usize) % mutated.len();
        mutated[at] = next() as u8;
        mutated.truncate((next() as usize) % (mutated.len() + 1));
        exercise(&mutated);
    }
}
