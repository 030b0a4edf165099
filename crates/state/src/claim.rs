//! Which addresses a host's own DHCP exchanges gave it, for the build
//! under way: the addresses its build token is handed to.
//!
//! Anyone on the LAN can fetch any URL and forge any MAC, so a boot script
//! that carries the token may go only where the machine itself is. What
//! the appliance can see of that is the machine's DHCP exchange: ProxyDHCP
//! sees the REQUEST that takes the office server's offer (option 50 names
//! the address), full mode makes the lease itself. Where it sees nothing
//! (`dhcp.mode: off`) the first address to fetch the boot script stands in
//! for the exchange, a weaker rule (an attacker who is first wins) that
//! still raises the same alarm when the real machine comes second.
//!
//! A claim lives in memory only, bounded by the hosts in build mode (the
//! daemon names only profiled MACs). Once the token is handed out its
//! address is the host's `token_ip`, in the database; before that a claim
//! is good for [`CLAIM_TTL`], after which the machine's next exchange makes
//! a new one (a lease that moved while it sat powered off is not an
//! alarm).
//!
//! A host with `boot_vlan` is two machines to the network, by design: its
//! firmware and iPXE on the switch port's untagged network, its installer
//! on the VLAN, each with its own DHCP exchange. The daemon says which
//! network a claim was seen on ([`Network`]); the installer's address
//! supersedes the boot network's once per build, and the token moves with
//! it. Every other second address is the alarm, as for any host.
//!
//! # IPv6: a set of addresses
//! Over IPv6 one machine is several DHCPv6 clients: its firmware, its
//! loader and its installer each send a DUID of their own, and the office
//! server leases each its own address (or the installer takes a SLAAC
//! address). One address per build cannot hold, so an IPv6 claim is a set:
//! every address the machine's exchanges named in this build (a Request,
//! Renew, Rebind or Confirm the daemon saw with its MAC), each fresh for
//! [`CLAIM_TTL`] since it was last seen, at most [`MAX_V6_ADDRESSES`]; one
//! more is the alarm. The token goes to a member, or to the machine's
//! SLAAC address: its MAC's modified EUI-64 interface identifier under a
//! member's /64 (`slaac_address`). That is weaker than IPv4's rule: a
//! stranger who forges a Request with the MAC for its own address, while
//! the set has room, gets the token too, and the alarm comes only when
//! the set overflows. The set is in memory like every claim: after a
//! restart only the bound address (and the SLAAC address under it) stands
//! until the machine's next exchange is seen. Without a DHCP exchange
//! (`dhcp.mode: off`) the first fetch's address is the whole set, as over
//! IPv4.
//!
//! Over DHCP the families are claimed apart: an IPv6 lease is never the
//! second address of an IPv4 claim, nor the reverse (a dual-stack
//! installer asks both). An IPv4 peer is still handed the token only at
//! the bound address once there is one, whatever its family, as before.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;

use crate::host::Host;

/// How long a claim stands with no token handed out on it: a machine
/// fetches its boot script within seconds of its DHCP exchange.
pub const CLAIM_TTL: Duration = Duration::from_secs(3600);

/// IPv6 addresses one MAC may claim in one build: firmware, loader and
/// installer, each with a lease or two (a declined one, a renumbered
/// segment), with room to spare. The next one is the alarm.
pub const MAX_V6_ADDRESSES: usize = 8;

/// Claims held at most, per family: the daemon claims only for profiled
/// MACs, so this is a backstop, never reached by a rack.
const MAX_CLAIMS: usize = 100_000;

/// What noting an address for a host did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The host is not being built: its exchange binds nothing.
    NotBuilding,
    /// The host's first address in this build.
    First,
    /// The address it already has.
    Again,
    /// Another IPv6 address of the host in this build: its loader's or
    /// installer's own exchange. Its token goes there too.
    Added(Ipv6Addr),
    /// A second address for one MAC in one build (over IPv6, one past
    /// [`MAX_V6_ADDRESSES`]): a forged REQUEST or a spoofed MAC. The host
    /// is held (failed) and no address gets a token.
    Conflict { first: IpAddr, second: IpAddr },
    /// The installer's address on the host's install VLAN, superseding
    /// `from`, its boot network's: where its token goes from now on.
    Moved { from: IpAddr, to: IpAddr },
}

/// Which of a host's networks a DHCP exchange was seen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Where its firmware boots; a host without `boot_vlan` has no other.
    Boot,
    /// Its `boot_vlan`, on an interface the appliance knows to be that
    /// VLAN: where its installer takes an address of its own.
    InstallVlan,
}

/// How a host's address is learnt, by `dhcp.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// From its DHCP exchange (proxy and full mode).
    Dhcp,
    /// From the first fetch of its boot script (`dhcp.mode: off`).
    FirstFetch,
}

/// Why a boot script was served without the build token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Withheld {
    #[error("no DHCP exchange of this machine was seen")]
    NoExchange,
    #[error("the DHCP exchange of this machine gave it {claimed}, not this address")]
    OtherAddress { claimed: IpAddr },
    #[error("two addresses claim this MAC ({first}, {second}): possible spoofing")]
    Conflict { first: IpAddr, second: IpAddr },
}

impl Withheld {
    /// The name events and metrics carry.
    pub fn name(self) -> &'static str {
        match self {
            Withheld::NoExchange => "no-exchange",
            Withheld::OtherAddress { .. } => "other-address",
            Withheld::Conflict { .. } => "conflict",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Claim {
    ip: IpAddr,
    at: SystemTime,
    network: Network,
}

impl Claim {
    /// Whether it still stands at `now` (see [`CLAIM_TTL`]).
    fn fresh(&self, now: SystemTime) -> bool {
        stands(self.at, now)
    }
}

/// Whether an address last seen `at` still stands at `now`.
fn stands(at: SystemTime, now: SystemTime) -> bool {
    now.duration_since(at).unwrap_or_default() < CLAIM_TTL
}

/// The claims of hosts being built, and the network each IPv4 one was seen
/// on (a bound token's address stands before them).
#[derive(Debug, Default)]
pub(crate) struct Claims {
    v4: HashMap<Mac, Claim>,
    /// Each host's IPv6 set, in the order first seen, with when each
    /// address was last seen.
    v6: HashMap<Mac, Vec<(Ipv6Addr, SystemTime)>>,
}

impl Claims {
    /// The address `host` (`None`: no record, so new) may be handed its
    /// token at over IPv4: its bound address once it has one, else its
    /// IPv4 claim.
    fn address(&self, mac: Mac, host: Option<&Host>, now: SystemTime) -> Option<IpAddr> {
        bound(host, now).or_else(|| self.claim4(mac, now))
    }

    fn claim4(&self, mac: Mac, now: SystemTime) -> Option<IpAddr> {
        self.v4.get(&mac).filter(|c| c.fresh(now)).map(|c| c.ip)
    }

    /// The IPv6 addresses `host` may be handed its token at, the oldest
    /// first: its bound address if it is an IPv6 one, and its set.
    fn addresses6(&self, mac: Mac, host: Option<&Host>, now: SystemTime) -> Vec<Ipv6Addr> {
        let mut all: Vec<Ipv6Addr> = match bound(host, now) {
            Some(IpAddr::V6(bound)) => vec![bound],
            _ => Vec::new(),
        };
        let set = self.v6.get(&mac).into_iter().flatten();
        for (ip, _) in set.filter(|(_, at)| stands(*at, now)) {
            if !all.contains(ip) {
                all.push(*ip);
            }
        }
        all
    }

    /// Whether `peer` may be handed `mac`'s token, by the claims of its
    /// family: the one IPv4 address, or a member of the IPv6 set or the
    /// machine's SLAAC address under one.
    pub(crate) fn admits(
        &self,
        mac: Mac,
        host: Option<&Host>,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<(), Withheld> {
        match peer {
            IpAddr::V4(_) => match self.address(mac, host, now) {
                None => Err(Withheld::NoExchange),
                Some(claimed) if claimed != peer => Err(Withheld::OtherAddress { claimed }),
                Some(_) => Ok(()),
            },
            IpAddr::V6(peer) => {
                let claimed = self.addresses6(mac, host, now);
                let own = |ip: &Ipv6Addr| *ip == peer || slaac_address(mac, *ip) == peer;
                match claimed.first() {
                    None => Err(Withheld::NoExchange),
                    Some(_) if claimed.iter().any(own) => Ok(()),
                    Some(first) => Err(Withheld::OtherAddress {
                        claimed: IpAddr::V6(*first),
                    }),
                }
            }
        }
    }

    /// Notes `ip`, seen on `network` (learnt as `binding` says), for `mac`
    /// at `now`; what that means for the host.
    pub(crate) fn note(
        &mut self,
        mac: Mac,
        host: Option<&Host>,
        ip: IpAddr,
        network: Network,
        binding: Binding,
        now: SystemTime,
    ) -> Claimed {
        if host.is_some_and(|h| !h.phase.is_build_mode()) {
            return Claimed::NotBuilding;
        }
        match ip {
            IpAddr::V4(_) => self.note4(mac, host, ip, network, binding, now),
            IpAddr::V6(ip) => self.note6(mac, host, ip, binding, now),
        }
    }

    /// One address per build, the install VLAN's superseding the boot
    /// network's once. A token bound over IPv6 is no IPv4 claim, unless
    /// the binding is the first fetch's.
    fn note4(
        &mut self,
        mac: Mac,
        host: Option<&Host>,
        ip: IpAddr,
        network: Network,
        binding: Binding,
        now: SystemTime,
    ) -> Claimed {
        let first = match binding {
            Binding::Dhcp => bound(host, now)
                .filter(IpAddr::is_ipv4)
                .or_else(|| self.claim4(mac, now)),
            Binding::FirstFetch => self.address(mac, host, now),
        };
        match first {
            None => {
                if self.v4.len() >= MAX_CLAIMS {
                    self.v4.retain(|_, c| c.fresh(now));
                }
                if self.v4.len() < MAX_CLAIMS {
                    self.v4.insert(
                        mac,
                        Claim {
                            ip,
                            at: now,
                            network,
                        },
                    );
                }
                Claimed::First
            }
            Some(first) if first == ip => {
                if let Some(c) = self.v4.get_mut(&mac) {
                    c.at = now;
                }
                Claimed::Again
            }
            // Once: the address it supersedes must not be the VLAN's own.
            // (Kept in memory like every claim: after a restart the next
            // VLAN claim may move a bound token once more, and the real
            // installer's renewal then raises the alarm.)
            Some(first)
                if network == Network::InstallVlan
                    && self.v4.get(&mac).is_none_or(|c| c.network == Network::Boot) =>
            {
                self.v4.insert(
                    mac,
                    Claim {
                        ip,
                        at: now,
                        network,
                    },
                );
                Claimed::Moved {
                    from: first,
                    to: ip,
                }
            }
            Some(first) => {
                self.v4.remove(&mac);
                Claimed::Conflict { first, second: ip }
            }
        }
    }

    /// A set of up to [`MAX_V6_ADDRESSES`] per build; a first fetch's
    /// address (no exchange to see) stands alone, whatever its family. The
    /// install VLAN needs no move here: its address is one more member.
    fn note6(
        &mut self,
        mac: Mac,
        host: Option<&Host>,
        ip: Ipv6Addr,
        binding: Binding,
        now: SystemTime,
    ) -> Claimed {
        let claimed = self.addresses6(mac, host, now);
        let (room, bound4) = match binding {
            Binding::Dhcp => (MAX_V6_ADDRESSES, None),
            Binding::FirstFetch => (1, bound(host, now).filter(IpAddr::is_ipv4)),
        };
        if let Some(first) = bound4 {
            self.v6.remove(&mac);
            return Claimed::Conflict {
                first,
                second: IpAddr::V6(ip),
            };
        }
        let known = claimed.contains(&ip)
            || (binding == Binding::FirstFetch
                && self.admits(mac, host, IpAddr::V6(ip), now).is_ok());
        let outcome = match claimed.first() {
            _ if known => Claimed::Again,
            None => Claimed::First,
            Some(first) if claimed.len() >= room => {
                self.v6.remove(&mac);
                return Claimed::Conflict {
                    first: IpAddr::V6(*first),
                    second: IpAddr::V6(ip),
                };
            }
            Some(_) => Claimed::Added(ip),
        };
        if self.v6.len() >= MAX_CLAIMS && !self.v6.contains_key(&mac) {
            self.v6
                .retain(|_, set| set.iter().any(|(_, at)| stands(*at, now)));
        }
        if self.v6.len() < MAX_CLAIMS || self.v6.contains_key(&mac) {
            let set = self.v6.entry(mac).or_default();
            set.retain(|(_, at)| stands(*at, now));
            match set.iter_mut().find(|(seen, _)| *seen == ip) {
                Some(member) => member.1 = now,
                None => set.push((ip, now)),
            }
        }
        outcome
    }

    /// Ends `mac`'s claims: its build ended or was started over.
    pub(crate) fn end(&mut self, mac: Mac) {
        self.v4.remove(&mac);
        self.v6.remove(&mac);
    }
}

/// The address `host`'s live token is bound to.
fn bound(host: Option<&Host>, now: SystemTime) -> Option<IpAddr> {
    host.filter(|h| h.token_live(now)).and_then(|h| h.token_ip)
}

/// The address a machine with `mac` takes by SLAAC on `member`'s /64: the
/// modified EUI-64 interface identifier (RFC 4291 appendix A: `ff:fe` in
/// the middle, the universal/local bit flipped), as an installer does
/// where NetworkManager's initrd generator sets `addr-gen-mode=eui64`.
pub(crate) fn slaac_address(mac: Mac, member: Ipv6Addr) -> Ipv6Addr {
    let m = mac.0;
    let mut octets = member.octets();
    octets[8..].copy_from_slice(&[m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::Phase;
    use crate::token::BuildToken;

    fn mac() -> Mac {
        "52:54:00:00:00:01".parse().expect("mac")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn one_address_per_build_and_a_second_is_a_conflict() {
        let mut claims = Claims::default();
        assert_eq!(
            claims.note(
                mac(),
                None,
                ip("10.0.0.5"),
                Network::Boot,
                Binding::Dhcp,
                at(0)
            ),
            Claimed::First
        );
        assert_eq!(
            claims.note(
                mac(),
                None,
                ip("10.0.0.5"),
                Network::Boot,
                Binding::Dhcp,
                at(5)
            ),
            Claimed::Again
        );
        assert_eq!(claims.address(mac(), None, at(6)), Some(ip("10.0.0.5")));
        assert_eq!(
            claims.note(
                mac(),
                None,
                ip("10.0.0.99"),
                Network::Boot,
                Binding::Dhcp,
                at(7)
            ),
            Claimed::Conflict {
                first: ip("10.0.0.5"),
                second: ip("10.0.0.99")
            }
        );
        assert_eq!(
            claims.address(mac(), None, at(8)),
            None,
            "no address stands"
        );
    }

    #[test]
    fn an_unused_claim_lapses_and_a_bound_token_is_the_claim() {
        let mut claims = Claims::default();
        claims.note(
            mac(),
            None,
            ip("10.0.0.5"),
            Network::Boot,
            Binding::Dhcp,
            at(0),
        );
        let later = at(CLAIM_TTL.as_secs() + 1);
        assert_eq!(claims.address(mac(), None, later), None);
        assert_eq!(
            claims.note(
                mac(),
                None,
                ip("10.0.0.6"),
                Network::Boot,
                Binding::Dhcp,
                later
            ),
            Claimed::First
        );

        let mut host = Host::new(mac(), at(0), "a");
        host.token = Some(BuildToken::from_stored("t".into()));
        host.token_expires = Some(at(100_000));
        host.token_ip = Some(ip("10.0.0.6"));
        let mut claims = Claims::default();
        assert_eq!(
            claims.note(
                mac(),
                Some(&host),
                ip("10.0.0.7"),
                Network::Boot,
                Binding::Dhcp,
                at(10)
            ),
            Claimed::Conflict {
                first: ip("10.0.0.6"),
                second: ip("10.0.0.7")
            },
            "the bound address counts as the build's claim"
        );
        host.phase = Phase::Installed;
        assert_eq!(
            claims.note(
                mac(),
                Some(&host),
                ip("10.0.0.8"),
                Network::Boot,
                Binding::Dhcp,
                at(10)
            ),
            Claimed::NotBuilding
        );
    }

    /// A claim of an address on a network, and what it should do.
    type Step = (IpAddr, Network, Claimed);

    /// A host with `boot_vlan`: the installer's address on the VLAN takes
    /// over from the boot network's once, whether the token is bound yet
    /// or not; any other second address is the alarm.
    #[test]
    fn the_install_vlan_supersedes_the_boot_address_once() {
        use Network::{Boot, InstallVlan};
        let (boot, vlan) = (ip("10.0.0.5"), ip("10.0.20.5"));
        let moved = Claimed::Moved {
            from: boot,
            to: vlan,
        };
        let conflict = |first, second| Claimed::Conflict { first, second };
        let mut bound = Host::new(mac(), at(0), "a");
        bound.token = Some(BuildToken::from_stored("t".into()));
        bound.token_expires = Some(at(100_000));
        bound.token_ip = Some(boot);
        // (the host's record, steps: (address, network, outcome)).
        let table: [(Option<&Host>, &[Step]); 6] = [
            // The installer's exchange, then its renewal.
            (
                None,
                &[
                    (boot, Boot, Claimed::First),
                    (vlan, InstallVlan, moved),
                    (vlan, InstallVlan, Claimed::Again),
                ],
            ),
            // With the token bound at the boot address, as once iPXE has
            // fetched its script.
            (
                Some(&bound),
                &[(boot, Boot, Claimed::Again), (vlan, InstallVlan, moved)],
            ),
            // A second address on the boot network stays the alarm.
            (
                None,
                &[
                    (boot, Boot, Claimed::First),
                    (ip("10.0.0.66"), Boot, conflict(boot, ip("10.0.0.66"))),
                ],
            ),
            // Once moved, the boot network's address is a second claim.
            (
                None,
                &[
                    (boot, Boot, Claimed::First),
                    (vlan, InstallVlan, moved),
                    (boot, Boot, conflict(vlan, boot)),
                ],
            ),
            // Only once: a second VLAN address is the alarm.
            (
                None,
                &[
                    (boot, Boot, Claimed::First),
                    (vlan, InstallVlan, moved),
                    (
                        ip("10.0.20.66"),
                        InstallVlan,
                        conflict(vlan, ip("10.0.20.66")),
                    ),
                ],
            ),
            // A VLAN claim first (no boot exchange seen) is the only one.
            (
                None,
                &[
                    (vlan, InstallVlan, Claimed::First),
                    (
                        ip("10.0.20.66"),
                        InstallVlan,
                        conflict(vlan, ip("10.0.20.66")),
                    ),
                ],
            ),
        ];
        for (row, (host, steps)) in table.iter().enumerate() {
            let mut claims = Claims::default();
            for (step, (addr, network, want)) in steps.iter().enumerate() {
                let got = claims.note(
                    mac(),
                    *host,
                    *addr,
                    *network,
                    Binding::Dhcp,
                    at(step as u64),
                );
                assert_eq!(got, *want, "row {row}, step {step}");
            }
        }
    }

    /// An IPv6 claim is a set: firmware, loader and installer each take an
    /// address of their own. The ninth distinct one is the alarm; members
    /// lapse one by one; IPv4 keeps its rule beside it.
    #[test]
    fn ipv6_addresses_of_one_build_form_a_set_of_eight() {
        let v6 = |n: u16| IpAddr::V6(Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, n));
        let added = |n: u16| match v6(n) {
            IpAddr::V6(a) => Claimed::Added(a),
            IpAddr::V4(_) => unreachable!(),
        };
        let conflict = |first, second| Claimed::Conflict { first, second };
        let ttl = CLAIM_TTL.as_secs();
        // (address, seconds after the first, outcome).
        type Row = (IpAddr, u64, Claimed);
        let table: [&[Row]; 5] = [
            // First, again, seven more, the ninth distinct one.
            &[
                (v6(1), 0, Claimed::First),
                (v6(1), 1, Claimed::Again),
                (v6(2), 2, added(2)),
                (v6(3), 2, added(3)),
                (v6(4), 2, added(4)),
                (v6(5), 2, added(5)),
                (v6(6), 2, added(6)),
                (v6(7), 2, added(7)),
                (v6(8), 2, added(8)),
                (v6(2), 3, Claimed::Again),
                (v6(9), 4, conflict(v6(1), v6(9))),
                (v6(1), 5, Claimed::First),
            ],
            // IPv4 beside it keeps one address: an IPv6 one is no second.
            &[
                (ip("10.0.0.5"), 0, Claimed::First),
                (v6(1), 1, Claimed::First),
                (ip("10.0.0.5"), 2, Claimed::Again),
                (v6(2), 3, added(2)),
                (ip("10.0.0.6"), 4, conflict(ip("10.0.0.5"), ip("10.0.0.6"))),
            ],
            // A member not seen for CLAIM_TTL lapses; seeing it keeps it.
            &[
                (v6(1), 0, Claimed::First),
                (v6(2), ttl - 10, added(2)),
                (v6(3), ttl + 1, added(3)),
                (v6(1), ttl + 2, added(1)),
            ],
            // Once the whole set lapsed, the next exchange starts a new one.
            &[(v6(1), 0, Claimed::First), (v6(2), ttl, Claimed::First)],
            // Lapsed members do not count towards the eight.
            &[
                (v6(1), 0, Claimed::First),
                (v6(2), 1, added(2)),
                (v6(3), ttl + 1, Claimed::First),
                (v6(4), ttl + 1, added(4)),
                (v6(5), ttl + 1, added(5)),
                (v6(6), ttl + 1, added(6)),
                (v6(7), ttl + 1, added(7)),
                (v6(8), ttl + 1, added(8)),
                (v6(9), ttl + 1, added(9)),
                (v6(10), ttl + 1, added(10)),
                (v6(11), ttl + 1, conflict(v6(3), v6(11))),
            ],
        ];
        for (row, steps) in table.iter().enumerate() {
            let mut claims = Claims::default();
            for (step, (addr, secs, want)) in steps.iter().enumerate() {
                let got = claims.note(mac(), None, *addr, Network::Boot, Binding::Dhcp, at(*secs));
                assert_eq!(got, *want, "row {row}, step {step}");
            }
        }
    }

    /// After a restart only the bound address stands: it is a member, and
    /// the set grows from it. A first fetch's address stands alone, in
    /// either family; DHCP leases of the two families are claimed apart.
    #[test]
    fn a_bound_ipv6_address_is_a_member_and_a_first_fetch_stands_alone() {
        let (a, b) = (ip("fd70::a"), ip("fd70::b"));
        let mut host = Host::new(mac(), at(0), "a");
        host.token = Some(BuildToken::from_stored("t".into()));
        host.token_expires = Some(at(100_000));
        host.token_ip = Some(a);
        let mut claims = Claims::default();
        let note = |claims: &mut Claims, ip, binding| {
            claims.note(mac(), Some(&host), ip, Network::Boot, binding, at(1))
        };
        assert_eq!(note(&mut claims, a, Binding::Dhcp), Claimed::Again);
        assert_eq!(
            note(&mut claims, b, Binding::Dhcp),
            Claimed::Added("fd70::b".parse().expect("ip"))
        );

        let mut claims = Claims::default();
        let slaac = IpAddr::V6(slaac_address(mac(), "fd70::a".parse().expect("ip")));
        assert_eq!(note(&mut claims, a, Binding::FirstFetch), Claimed::Again);
        assert_eq!(
            note(&mut claims, slaac, Binding::FirstFetch),
            Claimed::Again
        );
        assert_eq!(
            note(&mut claims, b, Binding::FirstFetch),
            Claimed::Conflict {
                first: a,
                second: b
            }
        );

        // A lease of the other family is no second address; a first fetch
        // from the other family is.
        let v4 = ip("10.0.0.5");
        let mut claims = Claims::default();
        assert_eq!(note(&mut claims, v4, Binding::Dhcp), Claimed::First);
        assert_eq!(
            note(&mut claims, v4, Binding::FirstFetch),
            Claimed::Conflict {
                first: a,
                second: v4
            }
        );
        let mut bound4 = host.clone();
        bound4.token_ip = Some(v4);
        let note4 = |claims: &mut Claims, ip, binding| {
            claims.note(mac(), Some(&bound4), ip, Network::Boot, binding, at(1))
        };
        assert_eq!(note4(&mut claims, a, Binding::Dhcp), Claimed::First);
        assert_eq!(
            note4(&mut claims, b, Binding::FirstFetch),
            Claimed::Conflict {
                first: v4,
                second: b
            }
        );
    }

    /// The token goes to a member of the set, or to the machine's SLAAC
    /// address under a member's /64; nowhere else.
    #[test]
    fn a_member_or_the_slaac_address_under_its_prefix_is_admitted() {
        let mut claims = Claims::default();
        let admits = |claims: &Claims, peer: &str| claims.admits(mac(), None, ip(peer), at(2));
        assert_eq!(admits(&claims, "fd70::1e2"), Err(Withheld::NoExchange));
        claims.note(
            mac(),
            None,
            ip("fd70::1e2"),
            Network::Boot,
            Binding::Dhcp,
            at(0),
        );
        claims.note(
            mac(),
            None,
            ip("fd70::1a7"),
            Network::Boot,
            Binding::Dhcp,
            at(1),
        );
        claims.note(
            mac(),
            None,
            ip("10.0.0.5"),
            Network::Boot,
            Binding::Dhcp,
            at(1),
        );
        assert_eq!(
            slaac_address(mac(), "fd70::1e2".parse().expect("ip")),
            "fd70::5054:ff:fe00:1".parse::<Ipv6Addr>().expect("ip"),
            "52:54:00:00:00:01, RFC 4291 appendix A"
        );
        for ok in ["fd70::1e2", "fd70::1a7", "fd70::5054:ff:fe00:1", "10.0.0.5"] {
            assert_eq!(admits(&claims, ok), Ok(()), "{ok}");
        }
        let other = Err(Withheld::OtherAddress {
            claimed: ip("fd70::1e2"),
        });
        for refused in ["fd71::5054:ff:fe00:1", "fd70::5054:ff:fe00:2", "fd70::66"] {
            assert_eq!(admits(&claims, refused), other, "{refused}");
        }
        assert_eq!(
            admits(&claims, "10.0.0.6"),
            Err(Withheld::OtherAddress {
                claimed: ip("10.0.0.5")
            })
        );
        assert_eq!(
            claims.admits(mac(), None, ip("fd70::1e2"), at(CLAIM_TTL.as_secs() + 2)),
            Err(Withheld::NoExchange),
            "lapsed"
        );
    }
}
