//! Machines that PXE-booted without a profile and reported what iPXE knows
//! of them, so an operator can adopt them.
//!
//! Anyone on the LAN can send reports, so the table is bounded three ways
//! ([`DiscoveryLimits`]): at most `max` machines, the least recently seen
//! pushed out by a new one (forged reports cannot keep a real machine out,
//! as a table that refuses when full would); at most `per_address`
//! machines reported from one source address, that address's least
//! recently seen pushed out by its next (one forger churns only its own
//! slots); and machines not seen for `expire_after` are forgotten. An
//! operator can forget one machine or clear the list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kickstand_profiles::{Mac, text};
use serde::{Deserialize, Serialize};

/// What iPXE's discovery script reports (its `${uuid}`, `${serial}`, …
/// settings); a field iPXE did not know is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    pub uuid: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub asset: Option<String>,
    /// `pcbios` or `efi`.
    pub platform: Option<String>,
    /// `i386`, `x86_64`, `arm64`.
    pub buildarch: Option<String>,
    /// MiB, as iPXE reports it.
    pub memsize: Option<String>,
    pub nics: Vec<Nic>,
}

impl Facts {
    /// The facts as they are kept: a stranger wrote them, so every value
    /// loses its control and bidi characters (see
    /// [`kickstand_profiles::text`]) and is cut to 256 characters; a value
    /// left empty is dropped.
    pub fn cleaned(&self) -> Facts {
        let keep = |v: &Option<String>| {
            v.as_deref()
                .map(|v| text::cleaned(v, MAX_FACT_CHARS))
                .filter(|v| !v.is_empty())
        };
        Facts {
            uuid: keep(&self.uuid),
            serial: keep(&self.serial),
            manufacturer: keep(&self.manufacturer),
            product: keep(&self.product),
            asset: keep(&self.asset),
            platform: keep(&self.platform),
            buildarch: keep(&self.buildarch),
            memsize: keep(&self.memsize),
            nics: self
                .nics
                .iter()
                .map(|n| Nic {
                    name: keep(&n.name),
                    mac: keep(&n.mac),
                    chip: keep(&n.chip),
                    bus: keep(&n.bus),
                })
                .collect(),
        }
    }
}

/// One network interface as iPXE sees it (`${netX/mac}`, `${netX/chip}`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    pub name: Option<String>,
    pub mac: Option<String>,
    pub chip: Option<String>,
    pub bus: Option<String>,
}

/// A discovered machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub mac: Mac,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub ip: Option<IpAddr>,
    pub facts: Facts,
    /// The appliance that took its last report.
    pub appliance: String,
}

/// How many discovered machines the store keeps, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLimits {
    /// Machines in all.
    pub max: usize,
    /// Machines reported from one source address.
    pub per_address: usize,
    /// A machine not seen for this long is forgotten.
    pub expire_after: Duration,
}

impl Default for DiscoveryLimits {
    fn default() -> DiscoveryLimits {
        DiscoveryLimits {
            max: 1000,
            per_address: 4,
            expire_after: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What became of a discovery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryOutcome {
    Added,
    Updated,
    /// Added, pushing out the least recently seen machine (`evicted`)
    /// because the table, or the reporting address's share of it, was full.
    AddedEvicting {
        evicted: Mac,
        why: Evicted,
    },
    /// The facts are larger than any real machine's.
    TooLarge {
        bytes: usize,
        limit: usize,
    },
}

/// Why a discovered machine was pushed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// The table held [`DiscoveryLimits::max`] machines.
    Full,
    /// The reporting address held [`DiscoveryLimits::per_address`].
    AddressBudget,
}

impl DiscoveryOutcome {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            DiscoveryOutcome::Added => "added",
            DiscoveryOutcome::Updated => "updated",
            DiscoveryOutcome::AddedEvicting {
                why: Evicted::Full, ..
            } => "added-evicting-oldest",
            DiscoveryOutcome::AddedEvicting {
                why: Evicted::AddressBudget,
                ..
            } => "added-evicting-same-address",
            DiscoveryOutcome::TooLarge { .. } => "too-large",
        }
    }
}

/// The table in memory; the store writes each change to the database.
#[derive(Debug, Default)]
pub(crate) struct Table {
    machines: HashMap<Mac, Discovered>,
}

/// A change to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Upsert(Box<Discovered>),
    Delete(Mac),
    /// Only replayed over a reload; the writer writes `ClearDiscovered`.
    Clear,
}

impl Table {
    pub(crate) fn replace(&mut self, rows: Vec<Discovered>) {
        self.machines = rows.into_iter().map(|d| (d.mac, d)).collect();
    }

    /// Takes a report (facts already size-checked): the outcome and the
    /// changes to write.
    pub(crate) fn report(
        &mut self,
        limits: &DiscoveryLimits,
        report: Discovered,
        changes: &mut Vec<Change>,
    ) -> DiscoveryOutcome {
        let mac = report.mac;
        if let Some(known) = self.machines.get_mut(&mac) {
            known.last_seen = report.last_seen;
            known.ip = report.ip;
            known.facts = report.facts;
            known.appliance = report.appliance;
            changes.push(Change::Upsert(Box::new(known.clone())));
            return DiscoveryOutcome::Updated;
        }
        let oldest = |it: &mut dyn Iterator<Item = &Discovered>| {
            it.min_by_key(|d| (d.last_seen, d.mac)).map(|d| d.mac)
        };
        let same_address: Vec<&Discovered> = self
            .machines
            .values()
            .filter(|d| report.ip.is_some() && d.ip == report.ip)
            .collect();
        let evict = if same_address.len() >= limits.per_address.max(1) {
            oldest(&mut same_address.into_iter()).map(|m| (m, Evicted::AddressBudget))
        } else if self.machines.len() >= limits.max.max(1) {
            oldest(&mut self.machines.values()).map(|m| (m, Evicted::Full))
        } else {
            None
        };
        if let Some((evicted, _)) = evict {
            self.machines.remove(&evicted);
            changes.push(Change::Delete(evicted));
        }
        changes.push(Change::Upsert(Box::new(report.clone())));
        self.machines.insert(mac, report);
        match evict {
            Some((evicted, why)) => DiscoveryOutcome::AddedEvicting { evicted, why },
            None => DiscoveryOutcome::Added,
        }
    }

    /// Forgets machines not seen for `expire_after` by `now`.
    pub(crate) fn expire(&mut self, limits: &DiscoveryLimits, now: SystemTime) -> Vec<Mac> {
        let old: Vec<Mac> = self
            .machines
            .values()
            .filter(|d| crate::clock::elapsed(d.last_seen, now) >= limits.expire_after)
            .map(|d| d.mac)
            .collect();
        for mac in &old {
            self.machines.remove(mac);
        }
        old
    }

    /// Replays a change not yet written over the database's copy.
    pub(crate) fn apply(&mut self, change: Change) {
        match change {
            Change::Upsert(d) => {
                self.machines.insert(d.mac, *d);
            }
            Change::Delete(mac) => {
                self.machines.remove(&mac);
            }
            Change::Clear => self.machines.clear(),
        }
    }

    pub(crate) fn forget(&mut self, mac: Mac) -> bool {
        self.machines.remove(&mac).is_some()
    }

    pub(crate) fn clear(&mut self) -> usize {
        let n = self.machines.len();
        self.machines.clear();
        n
    }

    pub(crate) fn get(&self, mac: Mac) -> Option<&Discovered> {
        self.machines.get(&mac)
    }

    pub(crate) fn len(&self) -> usize {
        self.machines.len()
    }

    /// Most recently seen first.
    pub(crate) fn list(&self) -> Vec<Discovered> {
        let mut all: Vec<Discovered> = self.machines.values().cloned().collect();
        all.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.mac.cmp(&b.mac)));
        all
    }
}

/// A machine with a dozen NICs reports a few KiB; anything past this is
/// not iPXE talking.
pub(crate) const MAX_FACTS_BYTES: usize = 16 * 1024;

/// The longest fact kept: SMBIOS strings are at most 255 bytes, a UUID 36.
pub(crate) const MAX_FACT_CHARS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn machine(n: u8, ip: &str, seen: u64) -> Discovered {
        Discovered {
            mac: format!("52:54:00:aa:00:{n:02x}").parse().expect("mac"),
            first_seen: at(seen),
            last_seen: at(seen),
            ip: Some(ip.parse().expect("ip")),
            facts: Facts::default(),
            appliance: "a".into(),
        }
    }

    #[test]
    fn the_least_recently_seen_makes_room_and_one_address_churns_only_its_own() {
        let limits = DiscoveryLimits {
            max: 3,
            per_address: 2,
            expire_after: Duration::from_secs(100),
        };
        let mut t = Table::default();
        let mut changes = Vec::new();
        let outcomes: Vec<&str> = [
            machine(1, "10.0.0.1", 1),
            machine(2, "10.0.0.2", 2),
            machine(3, "10.0.0.3", 3),
            machine(4, "10.0.0.4", 4),
            machine(5, "10.0.0.4", 5),
            machine(6, "10.0.0.4", 6),
            machine(4, "10.0.0.9", 7),
        ]
        .into_iter()
        .map(|m| t.report(&limits, m, &mut changes).name())
        .collect();
        assert_eq!(
            outcomes,
            [
                "added",
                "added",
                "added",
                "added-evicting-oldest",
                "added-evicting-oldest",
                "added-evicting-same-address",
                "added-evicting-oldest"
            ]
        );
        let left: Vec<u8> = t.list().iter().map(|d| d.mac.octets()[5]).collect();
        assert_eq!(left, [4, 6, 5]);
        assert!(changes.contains(&Change::Delete(machine(1, "10.0.0.1", 0).mac)));
        assert_eq!(
            t.expire(&limits, at(105)),
            vec![machine(5, "10.0.0.4", 0).mac]
        );
        assert!(t.forget(machine(6, "10.0.0.4", 0).mac));
        assert_eq!(t.clear(), 1);
    }

    #[test]
    fn facts_are_kept_without_hazards_and_bounded() {
        let reported = Facts {
            product: Some("Server\ngroups:\n  zz:\u{202e}".into()),
            serial: Some("\u{1b}[31m\u{7}".into()),
            asset: Some("x".repeat(10_000)),
            nics: vec![Nic {
                mac: Some("52:54:00:aa:00:01\r".into()),
                ..Nic::default()
            }],
            ..Facts::default()
        };
        let kept = reported.cleaned();
        assert_eq!(kept.product.as_deref(), Some("Servergroups:  zz:"));
        assert_eq!(kept.serial.as_deref(), Some("[31m"));
        assert_eq!(kept.asset.map(|a| a.len()), Some(MAX_FACT_CHARS));
        assert_eq!(kept.nics[0].mac.as_deref(), Some("52:54:00:aa:00:01"));
        let only_hazards = Facts {
            serial: Some("\u{7}".into()),
            ..Facts::default()
        };
        assert_eq!(only_hazards.cleaned().serial, None);
    }
}
