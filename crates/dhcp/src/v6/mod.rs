//! DHCPv6 boot answers: the IPv6 counterpart of ProxyDHCP, beside the
//! office's DHCPv6 server.
//!
//! A network-boot client (vendor class option 16 `PXEClient` or
//! `HTTPClient`) that sends a Solicit, a Request naming this server, or an
//! Information-request gets an Advertise or Reply with its boot file URL
//! (option 59) and nothing else: no IA_NA, IA_TA or IA_PD, so the address
//! comes from the office server and its lease stands. The boot file is the
//! one DHCPv4 would choose, by the same policy, as a URL on the
//! appliance's IPv6 address:
//!
//! | client | option 59 |
//! |---|---|
//! | UEFI PXE (arch 7, 9, 11) | `tftp://[addr]/ipxe.efi` (or the arm64 loader, or the OS's shim) |
//! | UEFI HTTP (arch 16, 19, or `HTTPClient`) | `http://[addr]:port/boot/ipxe.efi`, vendor class echoed as `HTTPClient` |
//! | iPXE (user class `iPXE`) | its boot script, `http://[addr]:port/boot/<mac>.ipxe` |
//!
//! EDK2 (OVMF, most servers' UEFI) takes an Advertise with a `PXEClient`
//! vendor class, option 59 and no address as a proxy offer: it takes its
//! address from the office server, then unicasts a Request carrying our
//! server identifier to `[addr]:4011` and boots the file named in our
//! Reply (`PxeBcRequestBootService` in `NetworkPkg/UefiPxeBcDxe`). So
//! [`serve`] answers on port 4011 too, a quarter second late: EDK2 only
//! starts listening once its Request has left.
//!
//! iPXE ignores an Advertise without an address (`dhcpv6_rx` records the
//! IA address of the Advertise it takes), so on a segment whose router
//! sets the M flag it takes the office server's and never this answer; on
//! a SLAAC segment with the O flag it sends an Information-request and
//! takes the first Reply.
//!
//! Host profiles are keyed by MAC, so a client is answered only when its
//! MAC is known: from a relay's Client Link-Layer Address option (79), its
//! DUID-LL or DUID-LLT of Ethernet, or a link-local source address formed
//! by EUI-64. EDK2 sends a DUID-UUID whenever the machine has a system
//! UUID, and its port-4011 Request comes from its new global address; the
//! MAC its Solicit gave is remembered by DUID ([`Clients`]) for it. A
//! client with a DUID-UUID or DUID-EN and none of the others is not
//! answered ([`Reason::UnknownLinkLayer`], logged once per client).
//! Unknown MACs and installed BIOS hosts are not answered, as over DHCPv4.
//! Relayed Solicits (up to [`MAX_RELAY_DEPTH`] relays) are answered with
//! Relay-replies through the same relays.
//!
//! The Requests, Renews, Rebinds and Confirms clients send the office
//! server are not answered, but read: the addresses in their IA_NA and
//! IA_TA ([`leased`]) go to the daemon with the client's MAC
//! ([`Seen::leased`]), where the machine's build token may go.
//!
//! Layout: [`wire`](self) reads datagrams defensively, [`decide`] is the
//! whole policy, [`serve`] runs it on sockets from [`bind_dhcpv6_socket`].
//! [`Probe`] asks, as a PXE client, which other servers offer boot files.

mod decide;
mod driver;
mod probe;
mod wire;

pub use decide::{
    Action, CLIENT_PORT, Clients, Context, MAX_LEASED, Port, Reason, Reply, Source, decide, leased,
};
pub use driver::{
    ALL_SERVERS, Boot, BootView, Join, Seen, Sockets, View, bind_dhcpv6_socket, bind_probe_socket,
    interface_index, serve,
};
pub use probe::Probe;
pub use wire::{MAX_MESSAGE_LEN, MAX_RELAY_DEPTH, Malformed};
