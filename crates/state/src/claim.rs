//! Which address a host's own DHCP exchange gave it, for the build under
//! way: the one address its build token is handed to.
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;

use crate::host::Host;

/// How long a claim stands with no token handed out on it: a machine
/// fetches its boot script within seconds of its DHCP exchange.
pub const CLAIM_TTL: Duration = Duration::from_secs(3600);

/// Claims held at most: the daemon claims only for profiled MACs, so this
/// is a backstop, never reached by a rack.
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
    /// A second address for one MAC in one build: a forged REQUEST or a
    /// spoofed MAC. The host is held (failed) and no address gets a token.
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
        now.duration_since(self.at).unwrap_or_default() < CLAIM_TTL
    }
}

/// The claims of hosts being built, and the network each was seen on (a
/// bound token's address stands before them).
#[derive(Debug, Default)]
pub(crate) struct Claims(HashMap<Mac, Claim>);

impl Claims {
    /// The address `host` (`None`: no record, so new) may be handed its
    /// token at: its bound address once it has one, else its claim.
    pub(crate) fn address(&self, mac: Mac, host: Option<&Host>, now: SystemTime) -> Option<IpAddr> {
        if let Some(h) = host
            && h.token_live(now)
            && let Some(bound) = h.token_ip
        {
            return Some(bound);
        }
        self.0.get(&mac).filter(|c| c.fresh(now)).map(|c| c.ip)
    }

    /// Notes `ip`, seen on `network`, for `mac` at `now`; what that means
    /// for the host.
    pub(crate) fn note(
        &mut self,
        mac: Mac,
        host: Option<&Host>,
        ip: IpAddr,
        network: Network,
        now: SystemTime,
    ) -> Claimed {
        if host.is_some_and(|h| !h.phase.is_build_mode()) {
            return Claimed::NotBuilding;
        }
        match self.address(mac, host, now) {
            None => {
                if self.0.len() >= MAX_CLAIMS {
                    self.0.retain(|_, c| c.fresh(now));
                }
                if self.0.len() < MAX_CLAIMS {
                    self.0.insert(
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
                if let Some(c) = self.0.get_mut(&mac) {
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
                    && self.0.get(&mac).is_none_or(|c| c.network == Network::Boot) =>
            {
                self.0.insert(
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
                self.0.remove(&mac);
                Claimed::Conflict { first, second: ip }
            }
        }
    }

    /// Ends `mac`'s claim: its build ended or was started over.
    pub(crate) fn end(&mut self, mac: Mac) {
        self.0.remove(&mac);
    }
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
            claims.note(mac(), None, ip("10.0.0.5"), Network::Boot, at(0)),
            Claimed::First
        );
        assert_eq!(
            claims.note(mac(), None, ip("10.0.0.5"), Network::Boot, at(5)),
            Claimed::Again
        );
        assert_eq!(claims.address(mac(), None, at(6)), Some(ip("10.0.0.5")));
        assert_eq!(
            claims.note(mac(), None, ip("10.0.0.99"), Network::Boot, at(7)),
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
        claims.note(mac(), None, ip("10.0.0.5"), Network::Boot, at(0));
        let later = at(CLAIM_TTL.as_secs() + 1);
        assert_eq!(claims.address(mac(), None, later), None);
        assert_eq!(
            claims.note(mac(), None, ip("10.0.0.6"), Network::Boot, later),
            Claimed::First
        );

        let mut host = Host::new(mac(), at(0), "a");
        host.token = Some(BuildToken::from_stored("t".into()));
        host.token_expires = Some(at(100_000));
        host.token_ip = Some(ip("10.0.0.6"));
        let mut claims = Claims::default();
        assert_eq!(
            claims.note(mac(), Some(&host), ip("10.0.0.7"), Network::Boot, at(10)),
            Claimed::Conflict {
                first: ip("10.0.0.6"),
                second: ip("10.0.0.7")
            },
            "the bound address counts as the build's claim"
        );
        host.phase = Phase::Installed;
        assert_eq!(
            claims.note(mac(), Some(&host), ip("10.0.0.8"), Network::Boot, at(10)),
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
                let got = claims.note(mac(), *host, *addr, *network, at(step as u64));
                assert_eq!(got, *want, "row {row}, step {step}");
            }
        }
    }
}
