//! ProxyDHCP for Kickstand: which PXE client gets which boot file, decided
//! as a pure function of (packet bytes, config snapshot), plus a thin tokio
//! UDP driver that owns nothing but the sockets it is handed.
//!
//! It owns: reading requests defensively (`wire`), the proxy policy and
//! reply encoding (`proxy`), the optional address server for an isolated rack
//! (`full`), the socket loop (`driver`), and the router advertisement that
//! ends iPXE's wait for an IPv6 router (`advertise`). It does not own: parsing the
//! config or profiles (the daemon builds a [`Context`] once per generation
//! and answers [`Boot`] for each packet), rendering boot scripts, or serving
//! files.
//!
//! Layout: [`decide`] is the whole proxy policy; [`full::decide`] adds leases;
//! [`serve`] runs them on sockets made by [`bind_dhcp_socket`];
//! [`advertise::answer_solicitations`] runs beside it when asked to.
//! [`v6`] is the same for DHCPv6: boot answers beside the office's DHCPv6
//! server, with its own context, decision and driver.

pub mod advertise;
mod driver;
pub mod full;
mod metrics;
mod proxy;
mod rogue;
pub mod v6;
mod wire;

pub use driver::{Boot, BootView, Seen, Sockets, View, bind_dhcp_socket, serve};
pub use metrics::Metrics;
pub use proxy::{
    Action, Context, Destination, Firmware, HostBoot, HostLookup, HostStatus, Loaders,
    MIN_REPLY_LEN, Mode, Port, Reason, Reply, decide,
};
pub use rogue::{RogueOffer, rogue_offer};
pub use wire::{BadMac, Mac, Malformed};
