//! Machines that PXE-booted without a profile and reported what iPXE knows
//! of them, so an operator can adopt them.
//!
//! The table is bounded ([`crate::StateConfig::max_discovered`], 1000 by
//! default): anyone on the LAN can send reports, so at the bound a report
//! from a new MAC is refused (and logged by the caller), while machines
//! already listed keep being updated. Forged reports can fill the list but
//! never grow the store, and never push out a machine already there.

use std::net::IpAddr;
use std::time::SystemTime;

use kickstand_profiles::Mac;
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

/// What became of a discovery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryOutcome {
    Added,
    Updated,
    /// The table holds `bound` machines and this MAC is not one of them.
    Full {
        bound: usize,
    },
    /// The facts are larger than any real machine's.
    TooLarge {
        bytes: usize,
        limit: usize,
    },
}

impl DiscoveryOutcome {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            DiscoveryOutcome::Added => "added",
            DiscoveryOutcome::Updated => "updated",
            DiscoveryOutcome::Full { .. } => "full",
            DiscoveryOutcome::TooLarge { .. } => "too-large",
        }
    }
}

/// A machine with a dozen NICs reports a few KiB; anything past this is
/// not iPXE talking.
pub(crate) const MAX_FACTS_BYTES: usize = 16 * 1024;
