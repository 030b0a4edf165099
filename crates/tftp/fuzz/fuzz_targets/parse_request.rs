//! Any datagram through the request parser, path normalisation and option
//! negotiation: none may panic, and a parsed request must re-encode to
//! itself.
#![no_main]

use kickstand_tftp::packet::{self, Packet};
use kickstand_tftp::protocol::{Limits, negotiate};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kickstand_tftp::normalize(data);
    if let Ok(Packet::Request(request)) = Packet::parse(data) {
        let _ = kickstand_tftp::normalize(&request.filename);
        let negotiated = negotiate(&request.options, u64::from(data.len() as u32) << 20, &Limits::default());
        assert!(negotiated.blksize >= 8 && negotiated.windowsize >= 1);
        let encoded = packet::encode_request(&request);
        assert_eq!(Packet::parse(&encoded), Ok(Packet::Request(request)));
    }
});
