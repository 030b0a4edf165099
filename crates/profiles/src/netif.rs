//! The machine's own IPv4 addresses, for `server.address: auto`. Read by
//! [`crate::load`] only when the config says `auto`: the interfaces'
//! addresses (getifaddrs through `if-addrs`), and the address the kernel
//! sends from by the default route (a UDP socket connected off-link, which
//! sends nothing: the one route lookup a sandbox without `/proc/net` and
//! without raw netlink allows). Resolved by validation, which stays pure
//! and is tested here with tables.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// An address off every office network (TEST-NET-1, RFC 5737): only the
/// default route leads there.
const OFF_LINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// What `auto` is resolved against: the addresses the interfaces have
/// now, and the one the default route sends from.
#[derive(Debug)]
pub(crate) struct Interfaces {
    /// Each IPv4 address with its interface, in the kernel's order (an
    /// interface's primary address first).
    addresses: Vec<(String, Ipv4Addr)>,
    /// The source address of the default route; `None`: there is none.
    default_route: Option<Ipv4Addr>,
}

impl Interfaces {
    pub(crate) fn read() -> Result<Interfaces, String> {
        let addresses = if_addrs::get_if_addrs()
            .map_err(|e| format!("cannot list the interfaces' addresses: {e}"))?
            .into_iter()
            .filter_map(|i| match i.addr {
                if_addrs::IfAddr::V4(v4) if usable(v4.ip) => Some((i.name, v4.ip)),
                _ => None,
            })
            .collect();
        Ok(Interfaces {
            addresses,
            default_route: default_route_source().filter(|&a| usable(a)),
        })
    }

    /// The address `auto` stands for: that of the first interface in
    /// `configured` (`server.interfaces`), where ProxyDHCP answers; with
    /// none configured, that of the interface the default route leaves by,
    /// the one the office network reaches the appliance on.
    pub(crate) fn resolve(&self, configured: &[String]) -> Result<Ipv4Addr, String> {
        let Some(name) = configured.first() else {
            return self.default_route.ok_or_else(|| {
                "auto: there is no default route (with an IPv4 address) to find the \
                 interface by; name it in server.interfaces"
                    .to_owned()
            });
        };
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, address)| address)
            .ok_or_else(|| format!("auto: {name} has no IPv4 address yet"))
    }
}

/// Link-local addresses (169.254/16) do not count: a host has one while
/// DHCP has given it none, and no server on the office network could reach
/// it there.
fn usable(address: Ipv4Addr) -> bool {
    !address.is_link_local() && !address.is_unspecified()
}

/// The address the kernel would send from to an off-link destination:
/// the default route's source. Connecting a UDP socket only looks the
/// route up; no packet leaves.
fn default_route_source() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((OFF_LINK, 9)).ok()?;
    match socket.local_addr().ok()? {
        SocketAddr::V4(local) => Some(*local.ip()),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interfaces(addresses: &[(&str, [u8; 4])], default_route: Option<[u8; 4]>) -> Interfaces {
        Interfaces {
            addresses: addresses
                .iter()
                .map(|&(n, a)| (n.to_owned(), Ipv4Addr::from(a)))
                .collect(),
            default_route: default_route.map(Ipv4Addr::from),
        }
    }

    #[test]
    fn auto_is_the_configured_interface_s_first_address() {
        let here = interfaces(
            &[
                ("lo", [127, 0, 0, 1]),
                ("eth0", [10, 78, 0, 10]),
                ("eth1", [192, 168, 7, 2]),
                ("eth1", [192, 168, 7, 3]),
            ],
            Some([10, 78, 0, 10]),
        );
        let named = |n: &str| here.resolve(&[n.to_owned(), "eth0".to_owned()]);
        assert_eq!(named("eth1"), Ok(Ipv4Addr::new(192, 168, 7, 2)));
        assert_eq!(
            named("eth2"),
            Err("auto: eth2 has no IPv4 address yet".to_owned())
        );
    }

    #[test]
    fn auto_without_interfaces_is_the_default_route_s_address() {
        let here = interfaces(&[("eth0", [10, 78, 0, 10])], Some([10, 78, 0, 10]));
        assert_eq!(here.resolve(&[]), Ok(Ipv4Addr::new(10, 78, 0, 10)));
        let no_route = interfaces(&[("eth0", [10, 78, 0, 10])], None);
        let e = no_route.resolve(&[]).expect_err("no default route");
        assert!(
            e.contains("no default route") && e.contains("server.interfaces"),
            "{e}"
        );
    }

    #[test]
    fn link_local_and_unspecified_addresses_do_not_count() {
        assert!(usable(Ipv4Addr::new(10, 78, 0, 10)));
        assert!(!usable(Ipv4Addr::new(169, 254, 3, 4)));
        assert!(!usable(Ipv4Addr::UNSPECIFIED));
    }

    /// This machine's own interfaces read (the test cannot know what they
    /// hold; the netns test in the daemon's tests does).
    #[test]
    fn this_machine_s_interfaces_read() {
        let here = Interfaces::read().expect("getifaddrs");
        assert!(here.addresses.iter().all(|&(_, a)| usable(a)));
    }
}
