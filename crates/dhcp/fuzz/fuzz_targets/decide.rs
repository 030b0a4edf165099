//! No packet makes the proxy or full-mode decision panic, and a proxy reply
//! never carries an address.
#![no_main]

use std::net::Ipv4Addr;

use kickstand_dhcp::full::{self, Leases, Pool};
use kickstand_dhcp::{Action, Context, HostBoot, HostStatus, Mac, Mode, Port, decide};
use libfuzzer_sys::fuzz_target;

fn known(mac: Mac) -> HostStatus {
    if mac.0[5] & 1 == 0 { HostStatus::Netboot(HostBoot::ipxe()) } else { HostStatus::Unknown }
}

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new(Ipv4Addr::new(10, 77, 0, 1), 8080);
    for port in [Port::Dhcp, Port::BootServer] {
        if let Action::Respond(reply) = decide(data, &ctx, &known, port) {
            assert!(reply.bytes.len() >= 300);
            assert_eq!(reply.bytes[16..20], [0, 0, 0, 0]);
        }
    }
    let pool = Pool::new(
        Ipv4Addr::new(10, 77, 0, 100),
        Ipv4Addr::new(10, 77, 0, 101),
        Ipv4Addr::new(255, 255, 255, 0),
        None,
        vec![],
        600,
    )
    .expect("valid pool");
    // Never saved: the path is only used by `save`.
    let mut leases = Leases::open("/nonexistent/kickstand-fuzz-leases.json", pool).expect("no file is empty");
    let mut full_ctx = ctx.clone();
    full_ctx.mode = Mode::Full;
    let _ = full::decide(data, &full_ctx, &known, Port::Dhcp, &mut leases, 1_000);
});
