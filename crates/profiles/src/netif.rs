//! The machine's own IPv4 addresses, for `server.address: auto`. Read by
//! [`crate::load`] only when the config says `auto` (getifaddrs through
//! `if-addrs`, and the kernel's routing table); resolved by validation,
//! which stays pure and is tested here with tables.

use std::net::Ipv4Addr;

/// The kernel's IPv4 routing table, as `route -n` reads it.
const ROUTES: &str = "/proc/net/route";
/// `RTF_UP` in a route's flags: the route is usable.
const RTF_UP: u32 = 0x1;

/// What `auto` is resolved against: the addresses the interfaces have
/// now, and which interface carries the default route.
#[derive(Debug)]
pub(crate) struct Interfaces {
    /// Each IPv4 address with its interface, in the kernel's order (an
    /// interface's primary address first). Link-local addresses
    /// (169.254/16) are left out: a host has one while DHCP has given it
    /// none, and no server on the office network could reach it there.
    addresses: Vec<(String, Ipv4Addr)>,
    /// The interface of the default route the kernel uses (the lowest
    /// metric).
    default_route: Option<String>,
}

impl Interfaces {
    pub(crate) fn read() -> Result<Interfaces, String> {
        let addresses = if_addrs::get_if_addrs()
            .map_err(|e| format!("cannot list the interfaces' addresses: {e}"))?
            .into_iter()
            .filter_map(|i| match i.addr {
                if_addrs::IfAddr::V4(v4) if !v4.ip.is_link_local() => Some((i.name, v4.ip)),
                _ => None,
            })
            .collect();
        let routes =
            std::fs::read_to_string(ROUTES).map_err(|e| format!("cannot read {ROUTES}: {e}"))?;
        Ok(Interfaces {
            addresses,
            default_route: default_route(&routes),
        })
    }

    /// The address `auto` stands for: that of the first interface in
    /// `configured` (`server.interfaces`), where ProxyDHCP answers; with
    /// none configured, that of the interface the default route leaves by,
    /// the one the office network reaches the appliance on.
    pub(crate) fn resolve(&self, configured: &[String]) -> Result<Ipv4Addr, String> {
        let (name, which) = match configured.first() {
            Some(name) => (name.as_str(), ""),
            None => (
                self.default_route.as_deref().ok_or(
                    "auto: there is no default route to find the interface by; \
                     name it in server.interfaces",
                )?,
                " (the default route's interface)",
            ),
        };
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, address)| address)
            .ok_or_else(|| format!("auto: {name}{which} has no IPv4 address yet"))
    }
}

/// The interface of the usable default route with the lowest metric in
/// `/proc/net/route`'s text.
fn default_route(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(default_route_entry)
        .min_by_key(|&(metric, _)| metric)
        .map(|(_, iface)| iface.to_owned())
}

/// `(metric, interface)` of a table line that is a usable default route:
/// destination and mask 0, `RTF_UP` among the flags (all three in hex);
/// the metric is decimal.
fn default_route_entry(line: &str) -> Option<(u32, &str)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let hex = |i: usize| u32::from_str_radix(fields.get(i)?, 16).ok();
    let (destination, flags, mask) = (hex(1)?, hex(3)?, hex(7)?);
    if destination != 0 || mask != 0 || flags & RTF_UP == 0 {
        return None;
    }
    Some((fields.get(6)?.parse().ok()?, fields.first()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    fn interfaces(addresses: &[(&str, [u8; 4])], default_route: Option<&str>) -> Interfaces {
        Interfaces {
            addresses: addresses
                .iter()
                .map(|&(n, a)| (n.to_owned(), Ipv4Addr::from(a)))
                .collect(),
            default_route: default_route.map(str::to_owned),
        }
    }

    #[test]
    fn the_default_route_is_the_usable_one_with_the_lowest_metric() {
        let table = format!(
            "{HEADER}\
             wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth1\t00000000\t0101A8C0\t0002\t0\t0\t10\t00000000\t0\t0\t0\n\
             eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t01004E0A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        // eth1's is down (no RTF_UP); eth0's /24 is not a default route.
        assert_eq!(default_route(&table).as_deref(), Some("eth0"));
        let none = format!("{HEADER}eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(default_route(&none), None);
        assert_eq!(default_route(""), None);
        assert_eq!(default_route(&format!("{HEADER}garbage line\n")), None);
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
            Some("eth0"),
        );
        let named = |n: &str| here.resolve(&[n.to_owned(), "eth0".to_owned()]);
        assert_eq!(named("eth1"), Ok(Ipv4Addr::new(192, 168, 7, 2)));
        assert_eq!(here.resolve(&[]), Ok(Ipv4Addr::new(10, 78, 0, 10)));
        assert_eq!(
            named("eth2"),
            Err("auto: eth2 has no IPv4 address yet".to_owned())
        );
    }

    #[test]
    fn auto_without_interfaces_needs_a_default_route_with_an_address() {
        let no_route = interfaces(&[("eth0", [10, 78, 0, 10])], None);
        let e = no_route.resolve(&[]).expect_err("no default route");
        assert!(
            e.contains("no default route") && e.contains("server.interfaces"),
            "{e}"
        );
        let no_address = interfaces(&[("eth0", [10, 78, 0, 10])], Some("wwan0"));
        assert_eq!(
            no_address.resolve(&[]),
            Err("auto: wwan0 (the default route's interface) has no IPv4 address yet".to_owned())
        );
    }

    /// This machine's own table reads (the test cannot know what it holds).
    #[test]
    fn this_machine_s_interfaces_read() {
        let here = Interfaces::read().expect("getifaddrs and /proc/net/route");
        assert!(here.addresses.iter().all(|(_, a)| !a.is_link_local()));
    }
}
